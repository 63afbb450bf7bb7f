"""The connector benchmark's workload (bench/connectors.py): what the SDK measures must be proposals
the hub accepts, or the bench would time the sending of refusals."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

from hub.domain.decide import decide
from hub.domain.order import OrderState
from hub.domain.rules import Rules
from hub.events import ChangeProposal, ProposalIntent
from hub.settings import PROJECT_DIR, Settings
from hub.streams.core import order_id_for_reference


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """bench/connectors.py, imported from its file (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_connectors", PROJECT_DIR / "bench" / "connectors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


async def test_every_emitted_change_is_a_proposal_the_hub_accepts_in_emit_order(bench: ModuleType,
                                                                                tmp_path: Path) -> None:
    """Every change of the workload, emitted into an offline runtime's outbox, is stored once as a
    proposal (with one cursor per handover), and folding them through decide in outbox order creates
    each order once and accepts every update."""
    settings = Settings(state_dir=tmp_path)
    workload = bench.build_changes(600, 40, batch=50)
    runtime = bench.Bench(settings, workload, tmp_path).new_runtime(settings, "test")
    try:
        for handover in workload.handovers:
            await runtime.emit(handover.changes, handover.cursor)
        records = runtime.store.pending(limit=10_000)
    finally:
        runtime.store.close()
    assert Counter(r.role for r in records) == {"proposals": 600, "connector_cursors": 12}

    rules = Rules.load(settings.ownership_file)
    states: dict[str, OrderState] = {}
    kinds: Counter = Counter()
    numbers = iter(range(1, 10_000))
    for record in (r for r in records if r.role == "proposals"):
        proposal = ChangeProposal.from_avro(runtime.codec.decode(record.value, "change_proposal").value)
        order_id = order_id_for_reference(proposal.order_ref.external.key)
        decision = decide(states.get(order_id), proposal, order_id=order_id, rules=rules,
                          at=dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc),
                          next_order_number=lambda: f"ORD-{next(numbers):06d}")
        assert decision.accepted, (proposal.intent, decision.kind, decision.rejection)
        assert record.key == proposal.order_ref.key
        states[order_id] = decision.state
        kinds[(proposal.intent, decision.kind.value)] += 1
    assert kinds[(ProposalIntent.CREATE, "created")] == 40
    assert sum(kinds.values()) == 600


def test_the_workload_is_the_same_on_every_run(bench: ModuleType) -> None:
    """Building the workload twice with the same arguments gives the same changes and cursors, so runs compare."""
    first, second = bench.build_changes(300, 20, batch=40), bench.build_changes(300, 20, batch=40)
    assert [(c.event_id, c.values) for c in first.changes] == [(c.event_id, c.values) for c in second.changes]
    assert [h.cursor for h in first.handovers] == [h.cursor for h in second.handovers]
    assert len({c.event_id for c in first.changes}) == 300
