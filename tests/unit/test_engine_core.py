"""The engine's work per record (``hub.streams.core.Engine``) with plain dicts as tables, no broker.

The crash test proves the whole on real Kafka; these pin the pieces it stands on: how a
proposal finds its order, and that a record decided again (after a crash) emits exactly what it emitted.
"""

from __future__ import annotations

import json

import pytest

from hub.domain.order import OrderState
from hub.events import OrderRef
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec
from hub.settings import PROJECT_DIR
from hub.streams.core import (
    Engine, Inbound, TopicNames, order_id_for_reference, stored_state,
)
from tests.domain_helpers import RULES, creation, proposal, ref
from tests.unit.test_state_encoding import first_form, text_form

CODEC = AvroCodec(SchemaStore.load(PROJECT_DIR / "schemas"))
TOPICS = TopicNames.load()
AT_MS = 1_764_668_400_000  # 2025-12-02T09:40:00Z


@pytest.fixture
def engine() -> Engine:
    return Engine(CODEC, RULES, TOPICS)


def inbound(prop, offset: int, *, topic: str = TOPICS.by_order, key: str | None = None, partition: int = 2) -> Inbound:
    return Inbound(topic, partition, offset, AT_MS + offset, (key or prop.order_ref.key).encode(),
                   CODEC.encode("change_proposal", prop.to_avro()))


def test_resolve_forwards_by_order_id_by_reference_or_by_a_linked_reference(engine: Engine) -> None:
    crm, erp = ref("CRM", "Opportunity", "OPP-1"), ref("ERP", "A_SalesOrder", "4711")
    by_id = creation("c-1", order_id="O-7")
    by_ref = by_id.model_copy(update={"order_ref": OrderRef(external=crm)})
    by_erp = by_id.model_copy(update={"order_ref": OrderRef(external=erp)})
    references = {erp.key.encode(): b"O-7"}
    for prop, expected in ((by_id, "O-7"), (by_ref, order_id_for_reference(crm.key)), (by_erp, "O-7")):
        record = inbound(prop, 5, topic=TOPICS.proposals)
        (out,) = engine.resolve(record, references)
        assert (out.topic, out.key, out.value) == (TOPICS.by_order, expected.encode(), record.value)


def test_resolve_refuses_a_proposal_naming_no_order_and_dead_letters_garbage(engine: Engine) -> None:
    for named in (OrderRef(), OrderRef(order_id="  ")):
        nameless = creation("c-2").model_copy(update={"order_ref": named})
        out, answer = engine.resolve(inbound(nameless, 1, topic=TOPICS.proposals, key="k"), {})
        assert out.topic == TOPICS.rejections and CODEC.decode(out.value).value["reason"] == "UNKNOWN_ORDER"
        assert answer.topic == TOPICS.answers
        assert {k: CODEC.decode(answer.value).value[k] for k in ("event_id", "outcome", "order_id")} == \
            {"event_id": "c-2", "outcome": "REJECTED", "order_id": None}
    garbage = Inbound(TOPICS.proposals, 0, 9, AT_MS, b"k", b"\x00\x00\x00\x00\x01nope")
    (dead,) = engine.resolve(garbage, {})
    headers = dict(dead.headers)
    assert dead.topic == TOPICS.dead_letters and dead.value == garbage.value
    assert headers["__orderhub.errors.offset"] == b"9" and headers["__orderhub.errors.stage"] == b"resolve"


def test_a_crash_replay_decides_again_byte_for_byte_with_every_output_keyed_as_before(engine: Engine) -> None:
    """The runtime resumes with the state as of the last commit and reads the records after it again:
    deciding them again gives the same outputs, byte for byte (changes, state, answers, reference links
    keyed by their reference), and the same table value."""
    crm = ref("CRM", "Opportunity", "OPP-2")
    order = order_id_for_reference(crm.key)
    create = creation("c-3").model_copy(update={"order_ref": OrderRef(external=crm)})
    attach = proposal("u-1", {"customer.name": "ACME AG"}, base=1, system="ERP",
                      refs=[ref("ERP", "A_SalesOrder", "4712")], order_id=order)
    release = proposal("u-1b", {"status": "CONFIRMED"}, base=2, system="ERP", order_id=order)
    table: dict[bytes, bytes] = {}
    engine.decide(inbound(create, 0, key=order), table)
    committed = dict(table)  # the last checkpoint: the creation is committed, what follows is not
    first = [engine.decide(inbound(p, i, key=order), table) for i, p in ((1, attach), (2, release))]
    after = dict(table)
    links = [(o.key, o.value) for o in first[0] if o.topic == TOPICS.ref_links]
    assert links == [(b"ERP/A_SalesOrder/4712", order.encode())]
    replayed = [engine.decide(inbound(p, i, key=order), committed) for i, p in ((1, attach), (2, release))]
    assert [[(o.topic, o.key, o.value) for o in out] for out in replayed] == \
        [[(o.topic, o.key, o.value) for o in out] for out in first]
    assert committed == after


def answers_in(outputs) -> list[dict]:
    """The answers among ``outputs``, decoded."""
    return [CODEC.decode(o.value).value for o in outputs if o.topic == TOPICS.answers]


def test_a_resent_event_id_is_answered_duplicate_and_re_publishes_nothing(engine: Engine) -> None:
    """A sender's retry arrives as another record with the same event id: it gets a DUPLICATE answer
    with the version it made, under its own record id, and no change or state record; the table is
    not written."""
    steps = [creation("c-8", order_id="O-8"), proposal("u-8", {"customer.name": "Q"}, base=1, order_id="O-8")]
    table = RecordingTable()
    for i, p in enumerate(steps):
        engine.decide(inbound(p, 30 + i), table)
    table.writes.clear()
    retry = engine.decide(inbound(steps[1], 35), table)
    assert [o.topic for o in retry] == [TOPICS.answers] and table.writes == []
    (answer,) = answers_in(retry)
    assert (answer["outcome"], answer["made_version"], answer["first_outcome"], answer["version"]) == \
        ("DUPLICATE", 2, "APPLIED", None)
    assert answer["record_id"] == "u-8:duplicate@2:35"


def test_a_proposal_that_changes_nothing_makes_no_version_and_publishes_only_its_answer(engine: Engine) -> None:
    """An echo of values the order already has is UNCHANGED: no change, no state record, the answer
    names the version it confirmed."""
    table: dict[bytes, bytes] = {}
    engine.decide(inbound(creation("c-9", order_id="O-9"), 40), table)
    echo = engine.decide(inbound(proposal("e-9", {"customer.name": "ACME GmbH"}, base=1, order_id="O-9"), 41),
                         table)
    assert [o.topic for o in echo] == [TOPICS.answers]
    (answer,) = answers_in(echo)
    assert (answer["outcome"], answer["version"], answer["made_version"]) == ("UNCHANGED", 1, None)


def test_the_first_order_to_claim_a_reference_keeps_it(engine: Engine) -> None:
    """A link to a second order is refused to the dead letters, naming both; the same link again is a no-op."""
    references: dict[bytes, bytes] = {}
    link = Inbound(TOPICS.ref_links, 0, 1, AT_MS, b"ERP/A_SalesOrder/4711", b"O-1")
    assert engine.link_reference(link, references) == [] and references == {link.key: b"O-1"}
    assert engine.link_reference(link, references) == []
    stolen = Inbound(TOPICS.ref_links, 0, 2, AT_MS, b"ERP/A_SalesOrder/4711", b"O-2")
    (dead,) = engine.link_reference(stolen, references)
    assert references == {link.key: b"O-1"}
    headers = dict(dead.headers)
    assert dead.topic == TOPICS.dead_letters and (dead.key, dead.value) == (stolen.key, b"O-2")
    assert headers["__orderhub.errors.exception.class.name"] == b"hub.errors.ReferenceTaken"
    assert headers["__orderhub.errors.exception.message"] == (
        b"ERP/A_SalesOrder/4711 belongs to order O-1; not re-linked to order O-2")


class RecordingTable(dict):
    """A dict that remembers every write, as the runtime's state sends each one to its changelog."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[bytes, bytes]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes.append((key, value))
        super().__setitem__(key, value)


def test_a_re_decided_creation_gets_the_same_order_number(engine: Engine) -> None:
    """A crash can lose a creation's table write after its change went out; deciding it again from
    scratch must give the same number, so the number comes from the record's place, not a counter."""
    create = creation("c-7", order_id="O-7")
    first = engine.decide(inbound(create, 4711), {})
    again = engine.decide(inbound(create, 4711), {})  # the table write was lost
    change = [o for o in first if o.topic == TOPICS.changes]
    assert change == [o for o in again if o.topic == TOPICS.changes]
    assert CODEC.decode(change[0].value).value["order_number"] == "ORD-2025-02-004711"


def test_a_table_value_the_faust_engine_wrote_is_read_and_decided_on(engine: Engine) -> None:
    """Values of the faust-based engine (one JSON object: the state in its first form and a replay
    buffer) still read as the order's state; the next write is the state alone, compact."""
    steps = [creation("c-10", order_id="O-10"), proposal("u-10", {"customer.name": "W"}, base=1, order_id="O-10")]
    table: dict[bytes, bytes] = {}
    for i, p in enumerate(steps):
        engine.decide(inbound(p, 50 + i), table)
    decided = [(p.event_id, kind, made) for p, kind, made in zip(steps, ("created", "applied"), (1, 2))]
    table[b"O-10"] = json.dumps({"state": first_form(stored_state(table[b"O-10"]), decided),
                                 "replay": [["u-10", 51, 2, []]]}, separators=(",", ":")).encode()
    assert stored_state(table[b"O-10"]).has_seen("c-10")
    later = engine.decide(inbound(proposal("u-11", {"customer.name": "V"}, base=2, order_id="O-10"), 52), table)
    assert [a["version"] for a in answers_in(later)] == [3]
    assert table[b"O-10"] == stored_state(table[b"O-10"]).to_table()  # the current form, not JSON
    assert stored_state(table[b"O-10"]).has_seen("u-10")


def test_a_json_table_value_this_engine_wrote_before_is_read_and_decided_on(engine: Engine) -> None:
    """A value in the JSON form the engine wrote before MessagePack (fields by path, decided ids as text)
    reads as the order's state: a resent id is still a duplicate, the next proposal makes the next version,
    and the value is stored in the current form."""
    steps = [creation("c-11", order_id="O-11"), proposal("u-11", {"customer.name": "W"}, base=1, order_id="O-11")]
    table: dict[bytes, bytes] = {}
    for i, p in enumerate(steps):
        engine.decide(inbound(p, 60 + i), table)
    state = stored_state(table[b"O-11"])
    table[b"O-11"] = json.dumps(text_form(state, [("c-11", "created", 1), ("u-11", "applied", 2)])).encode()
    assert stored_state(table[b"O-11"]) == state
    (answer,) = answers_in(engine.decide(inbound(steps[1], 70), table))
    assert (answer["outcome"], answer["made_version"], answer["first_outcome"]) == ("DUPLICATE", 2, "APPLIED")
    later = engine.decide(inbound(proposal("u-12", {"customer.name": "V"}, base=2, order_id="O-11"), 71), table)
    assert [a["version"] for a in answers_in(later)] == [3]
    assert table[b"O-11"] == stored_state(table[b"O-11"]).to_table()


def test_the_creation_starts_the_flows_correlation_id_and_every_record_about_the_order_carries_it(
        engine: Engine) -> None:
    """hub.correlation rules 1-2: the creating record's header (else its event id) is the order's
    correlation id, kept in its state; a later proposal sent without it gets it on every output, its
    routed hop keeps the header it came with, and a resent event id is answered with it."""
    from hub import correlation

    table: dict[bytes, bytes] = {}
    started = Inbound(TOPICS.by_order, 2, 0, AT_MS, b"O-9", CODEC.encode("change_proposal", creation(
        "crm-evt-1", order_id="O-9").to_avro()), correlation.header("crm:OPP-9"))
    for out in engine.decide(started, table):
        assert correlation.of(out.headers) == "crm:OPP-9", out.topic
    assert stored_state(table[b"O-9"]).correlation_id == "crm:OPP-9"
    later = inbound(proposal("erp-1", {"customer.name": "ACME AG"}, base=1, system="ERP", order_id="O-9"), 1)
    outputs = engine.decide(later, table)
    assert {out.topic for out in outputs} >= {TOPICS.changes, TOPICS.state, TOPICS.answers}
    assert all(correlation.of(out.headers) == "crm:OPP-9" for out in outputs)
    (again,) = engine.decide(inbound(proposal("erp-1", {"customer.name": "ACME AG"}, base=1, system="ERP",
                                              order_id="O-9"), 2), table)
    assert again.topic == TOPICS.answers and correlation.of(again.headers) == "crm:OPP-9"
    routed = Inbound(TOPICS.proposals, 0, 3, AT_MS, b"k", later.value, correlation.header("crm:OPP-9"))
    (forwarded,) = engine.resolve(routed, {})
    assert correlation.of(forwarded.headers) == "crm:OPP-9"
    # no header: the creating proposal's event id starts the flow
    table = {}
    engine.decide(inbound(creation("crm-evt-2", order_id="O-10"), 4), table)
    assert stored_state(table[b"O-10"]).correlation_id == "crm-evt-2"
