"""What a connector instance proposes when an outside object is read again (``hub.sdk.runtime``,
``Connector`` rule 4): only what changed in the outside system since it last read the object, so the
hub's own edit of a field the outside system never takes back is not undone by the next read."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

from hub.domain.decide import Decision, decide
from hub.events import Actor, ChangeProposal, ExternalRef, FieldChange, OrderRef
from hub.sdk import Connector, ConnectorRuntime, OutsideChange
from hub.sdk.contract import AT
from hub.settings import Settings
from tests.integration.kafka_helpers import eventually

REF = ExternalRef(system="EDI", object_type="EdiOrder", external_id="K-1")
PICTURE = {"customer.id": "C-100", "requested_delivery": "2026-12-20",
           "instructions": [{"key": None, "text": "deburr all edges"}],
           "lines.10.material.id": "MAT-1", "lines.10.quantity": "5", "lines.10.unit": "C62"}


class Edi(Connector):
    kind = "edi-test"
    system = "EDI"

    async def poll(self, cursor: dict) -> None:  # a source: the runtime stores what it reads
        return None


def read(revision: int, **changed: object) -> OutsideChange:
    """The outside document as read at ``revision`` (its whole picture every time)."""
    return OutsideChange(ref=REF, event_id=f"edi:K-1:{revision}", values={**PICTURE, **changed}, create=True,
                         actor=Actor(id="edi", role="connector"), occurred_at=AT)


def proposals(runtime: ConnectorRuntime) -> list[ChangeProposal]:
    return [ChangeProposal.from_avro(runtime.codec.decode(p.value).value) for p in runtime.store.pending()]


def runtime_of(settings: Settings, instance: str) -> ConnectorRuntime:
    return ConnectorRuntime(Edi(Edi.Config()), instance=instance, settings=settings)


async def created_through(runtime: ConnectorRuntime, settings: Settings) -> tuple[ChangeProposal, Decision]:
    """The document's first read, proposed by ``runtime``, and the hub's decision on it (order O-1)."""
    await runtime.emit([read(1)])
    (creation,) = proposals(runtime)
    return creation, decide(None, creation, order_id="O-1", rules=settings.rules(), at=AT,
                            next_order_number=lambda: "ORD-2026-00-000001")


async def test_reading_an_object_again_proposes_only_what_changed_outside(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    rules = settings.rules()
    runtime = runtime_of(settings, "edi-1")
    creation, created = await created_through(runtime, settings)
    runtime.store.remember([created.snapshot], {})
    runtime.store.answered([(creation.event_id, 1)])
    runtime.store.sent(10**9)
    # a planner changes the instructions in the hub; the outside system never takes them back
    edit = ChangeProposal(event_id="hub-edit", order_ref=OrderRef(order_id="O-1"), base_version=1, source_system="HUB",
                          actor=Actor(id="pia", role="planner"), occurred_at=AT + dt.timedelta(minutes=1),
                          changes=[FieldChange(field="instructions",
                                               value=json.dumps([{"key": None, "text": "deburr, no burrs > 0.1 mm"}]))])
    edited = decide(created.state, edit, order_id="O-1", rules=rules, at=AT + dt.timedelta(minutes=1),
                    next_order_number=lambda: "unused")
    assert edited.snapshot.version == 2
    runtime.store.remember([edited.snapshot], {})

    # the document is read again (a new revision, the same values): nothing to propose
    await runtime.emit([read(2)])
    assert proposals(runtime) == [] and runtime.counts["suppressed"] == 1
    # its quantity changes outside: only the quantity is proposed, the hub's instructions stand
    await runtime.emit([read(3, **{"lines.10.quantity": "7"})])
    (change,) = proposals(runtime)
    assert [(c.field, c.value) for c in change.changes] == [("lines.10.quantity", '"7"')]
    decided = decide(edited.state, change, order_id="O-1", rules=rules, at=AT + dt.timedelta(minutes=2),
                     next_order_number=lambda: "unused")
    assert decided.snapshot.instructions[0].text == "deburr, no burrs > 0.1 mm"
    assert decided.snapshot.lines[0].quantity == Decimal("7")

    # what the instance read survives a restart (it is stored with the outbox)
    runtime.store.close()
    restarted = runtime_of(settings, "edi-1")
    assert restarted.store.seen([REF.key])[REF.key]["lines.10.quantity"] == '"7"'
    restarted.store.close()


async def test_an_instance_that_never_read_the_object_proposes_what_differs_from_the_hub(tmp_path: Path) -> None:
    """The limit: another instance (a failover, a new store) has not read the object yet, so it cannot
    tell an outside change from a hub edit; it proposes every value that differs from the hub's."""
    settings = Settings(state_dir=tmp_path)
    _, created = await created_through(runtime_of(settings, "edi-1"), settings)
    fresh = runtime_of(settings, "edi-2")
    moved = created.snapshot.model_copy(update={"version": 2, "requested_delivery": dt.date(2026, 12, 22)})
    fresh.store.remember([moved], {})
    await fresh.emit([read(2)])
    (proposal,) = proposals(fresh)
    assert [c.field for c in proposal.changes] == ["requested_delivery"]
    # against the hub's latest version, with the outside value: the hub's own edit would be undone
    assert proposal.base_version == 2 and proposal.changes[0].value == '"2026-12-20"'


async def test_a_change_no_proposal_can_carry_is_a_dead_letter_and_the_batch_goes_on(tmp_path: Path) -> None:
    """Connector rule 6: a change the Avro proposal cannot carry (an actor id holding a lone surrogate,
    which UTF-8 cannot encode) is a dead letter naming why; the other changes of the batch are proposed,
    and the object counts as not read: read again, fixed, it is proposed whole. A value with a lone
    surrogate is spelt in escapes (``canonical_json``), proposed, and the hub refuses it naming the field."""
    runtime = runtime_of(Settings(state_dir=tmp_path), "edi-1")

    def proposed() -> list[ChangeProposal]:
        return [ChangeProposal.from_avro(runtime.codec.decode(r.value).value) for r in runtime.store.pending()
                if r.role == "proposals"]

    odd = dataclasses.replace(read(1), actor=Actor(id="edi \ud800", role="connector"))
    k2 = OutsideChange(ref=REF.model_copy(update={"external_id": "K-2"}), event_id="edi:K-2:1",
                       values={**PICTURE, "customer.name": "ACME \udfff"}, create=True,
                       actor=Actor(id="edi", role="connector"), occurred_at=AT)
    await runtime.emit([odd, k2])
    pending = runtime.store.pending()
    assert [r.role for r in pending] == ["dead_letters", "proposals"]
    headers = dict(pending[0].headers)
    assert b"surrogates not allowed" in headers["__orderhub.errors.exception.message"]
    assert json.loads(pending[0].value)["ref"] == REF.key and pending[0].key == REF.key
    (sent,) = proposed()
    assert dict((c.field, c.value) for c in sent.changes)["customer.name"] == '"ACME \\udfff"'
    refused = decide(None, sent, order_id="O-2", rules=runtime.settings.rules(), at=AT,
                     next_order_number=lambda: "ORD-2026-00-000002")
    assert [e.field for e in refused.rejection.errors] == ["customer.name"]
    assert runtime.counts["proposed"] == 1 and runtime.counts["dead_letters"] == 1
    await runtime.emit([read(2)])
    assert [p.order_ref.external.external_id for p in proposed()] == ["K-2", "K-1"]
    assert dict((c.field, c.value) for c in proposed()[1].changes)["customer.id"] == '"C-100"'


async def test_while_kafka_is_away_the_outbox_gauges_say_what_waits(tmp_path: Path) -> None:
    """The drain counts the outbox for its gauges (at most once a second) even when it cannot send."""
    from prometheus_client import CollectorRegistry

    from hub.observability import metrics

    registry = CollectorRegistry()
    metrics.register("connectors", registry)
    settings = Settings(state_dir=tmp_path, bootstrap_servers="127.0.0.1:1")  # nothing listens there
    runtime = runtime_of(settings, "edi-offline")
    await runtime.emit([read(1), read(2, **{"lines.10.quantity": "7"})])
    running = asyncio.create_task(runtime.run())
    try:
        async def two_waiting() -> bool:
            assert not running.done(), running
            return registry.get_sample_value("orderhub_connector_outbox_depth", {"connector": "edi-offline"}) == 2
        await eventually(two_waiting, 30, "the outbox depth saying 2")
        assert registry.get_sample_value("orderhub_connector_outbox_oldest_age_seconds",
                                         {"connector": "edi-offline"}) >= 0
    finally:
        runtime.stop()
        await asyncio.wait_for(running, 30)
