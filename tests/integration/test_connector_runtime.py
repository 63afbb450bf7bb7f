"""A connector built on the SDK, run by ``ConnectorRuntime`` against real Kafka and a real engine
worker: outside orders become hub orders, echoes make no proposal, released orders reach the
outside system once, and two instances share the source lease."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from hub.client import HubClient
from hub.events import Actor, ChangeProposal, ExternalRef, FieldChange, OrderRef
from hub.sdk import ConnectorRuntime
from hub.sdk.scaffold import new_connector
from hub.settings import Settings
from tests.integration.kafka_helpers import poll_until

pytestmark = pytest.mark.integration


@pytest.fixture
def acme(tmp_path: Path):
    """The generated skeleton connector's package, importable for this test."""
    new_connector("acme", tmp_path / "orderhub-acme")
    sys.path.insert(0, str(tmp_path / "orderhub-acme"))
    import orderhub_acme
    yield orderhub_acme
    sys.path.remove(str(tmp_path / "orderhub-acme"))
    for name in [m for m in sys.modules if m.startswith("orderhub_acme")]:
        del sys.modules[name]


def drop(inbox: Path, key: str, quantity: int = 5, revision: int = 1) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    document = {"id": key, "revision": revision, "customer": "C-100", "due": "2026-12-20",
                "requirements": "deburr all edges", "lines": [{"material": "MAT-1", "qty": quantity, "unit": "C62"}]}
    (inbox / f"{key}-{revision}.json").write_text(json.dumps(document))


async def step(client: HubClient, order_id: str, base: int, status: str, system: str, role: str) -> int:
    proposal = ChangeProposal(event_id=f"{order_id}-{status}", order_ref=OrderRef(order_id=order_id),
                              base_version=base, source_system=system, actor=Actor(id="t", role=role),
                              occurred_at="2026-12-03T10:00:00Z",
                              changes=[FieldChange(field="status", value=json.dumps(status))])
    decided = await client.propose(proposal, timeout_s=60)
    assert decided.accepted, decided.answer
    return decided.answer.version


async def test_outside_orders_flow_in_echoes_stay_out_and_releases_flow_out_once(
        hub_settings: Settings, start_worker, acme, tmp_path: Path) -> None:
    """A dropped document becomes an order (version 1); the same values under a new revision propose
    nothing; the release reaches the outbox folder once; a restarted instance resumes at its cursor."""
    start_worker(hub_settings).wait_ready()
    peer = tmp_path / "acme"
    config = acme.AcmeConfig(inbox=peer / "inbox", outbox=peer / "outbox", poll_interval_s=0.2)
    runtime = ConnectorRuntime(acme.AcmeConnector(config), instance="acme-1", settings=hub_settings)
    running = asyncio.create_task(runtime.run())
    ref = ExternalRef(system="EDI", object_type="AcmeOrder", external_id="K-1")
    try:
        drop(peer / "inbox", "K-1")
        await poll_until(lambda: runtime.store.snapshot_for(ref) is not None, 90,
                         lambda: f"the order in the hub's state ({runtime.counts}, {runtime.store.waiting()} waiting)")
        order = runtime.store.snapshot_for(ref)
        assert order.version == 1 and order.lines[0].material.id == "MAT-1"
        # once the hub has answered the instance's own proposal, the same values again are an echo
        await poll_until(lambda: runtime.store.settled(ref.key, order.version), 30, "the hub's answer")
        drop(peer / "inbox", "K-1", revision=2)
        await poll_until(lambda: runtime.counts["suppressed"] >= 1, 30, "the echo to be suppressed")
        async with HubClient(hub_settings) as client:
            version = 1
            for status, system, role in (("CONFIRMED", "ERP", "connector"), ("APPROVED", "ERP", "connector"),
                                         ("RELEASED", "HUB", "planner")):
                version = await step(client, order.order_id, version, status, system, role)
        await poll_until(lambda: (peer / "outbox" / f"{order.order_id}.json").exists(), 60, "the release written")
        assert json.loads((peer / "outbox" / f"{order.order_id}.json").read_text())["version"] == 4
        assert runtime.store.snapshot(order.order_id).version == 4  # the echo made no version
        await poll_until(lambda: runtime.store.waiting() == 0, 30, "the outbox drained")
        cursor = runtime.store.cursor()
        assert cursor["after"][1] == "K-1-2.json"
    finally:
        runtime.stop()
        await running
    again = ConnectorRuntime(acme.AcmeConnector(config), instance="acme-1", settings=hub_settings)
    assert again.store.cursor() == cursor and list(peer.joinpath("outbox").glob("*.json")) == \
        [peer / "outbox" / f"{order.order_id}.json"]
    again.store.close()


async def test_one_instance_at_a_time_polls_and_the_other_takes_over(
        hub_settings: Settings, start_worker, acme, tmp_path: Path) -> None:
    """Two instances of one connector: only the lease holder polls; when it stops, the other takes
    over from the cursor it published and the next document still flows."""
    start_worker(hub_settings).wait_ready()
    peer = tmp_path / "acme"
    config = acme.AcmeConfig(inbox=peer / "inbox", outbox=peer / "outbox", poll_interval_s=0.2)
    runtimes = [ConnectorRuntime(acme.AcmeConnector(config), instance="acme-shared", settings=hub_settings,
                                 store_path=tmp_path / f"instance-{n}.db") for n in (1, 2)]
    tasks = [asyncio.create_task(r.run()) for r in runtimes]
    try:
        await poll_until(lambda: sum(r.leader.is_set() for r in runtimes) == 1, 60, "one lease holder")
        leader = next(r for r in runtimes if r.leader.is_set())
        other = next(r for r in runtimes if r is not leader)
        drop(peer / "inbox", "L-1")
        ref1 = ExternalRef(system="EDI", object_type="AcmeOrder", external_id="L-1")
        await poll_until(lambda: leader.store.snapshot_for(ref1) is not None, 90, "L-1 in the hub")
        assert other.counts["proposed"] == 0
        await poll_until(lambda: leader.store.waiting() == 0, 30, "the leader's outbox drained")
        leader.stop()
        await tasks[runtimes.index(leader)]
        await poll_until(lambda: other.leader.is_set(), 60, "the other instance to take the lease")
        drop(peer / "inbox", "L-2")
        ref2 = ExternalRef(system="EDI", object_type="AcmeOrder", external_id="L-2")
        await poll_until(lambda: other.store.snapshot_for(ref2) is not None, 90, "L-2 in the hub")
        assert other.counts["proposed"] == 1, "the successor resumed after L-1, not from the start"
    finally:
        for r in runtimes:
            r.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
