"""The order state's table form and the snapshot built straight from the state.

The engine reads and writes the whole state once per proposal and publishes a snapshot for
each accepted one, so both skip the slow general paths: the state is stored compactly
(``OrderState.to_table``) and the snapshot record is built without the pydantic model
(``OrderState.snapshot_record``). These pin that nothing observable changes: the same state
back, the forms deployments wrote before still read, and the snapshot's bytes exactly those of
the model's.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import base64
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import fastavro
import orjson
import pytest

from hub.domain.decide import DecisionKind, decide
from hub.domain.fields import DELETE_PATH, HEADER_FIELDS, LINE_FIELDS, canonical_json, load_json
from hub.domain.order import (
    KIND_CODES, SEEN_LIMIT, TABLE_LINE_PATHS, TABLE_PATHS, DecidedIds, FieldState, OrderState, StoredFields,
    event_digest, value_text,
)
from hub.events import ChangeProposal, ExternalRef
from hub.sdk.store import ConnectorStore
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec
from hub.settings import PROJECT_DIR
from tests.domain_helpers import RULES, OrderNumbers, creation, proposal, run

CODEC = AvroCodec(SchemaStore.load(PROJECT_DIR / "schemas"))
START_MS = 1_780_000_000_000


def workload_module() -> ModuleType:
    """bench/workload.py, imported from its file (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_workload", PROJECT_DIR / "bench" / "workload.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def realistic_order(decisions: int, *, persist: bool = False) -> tuple[OrderState, list[tuple[str, str, int | None]]]:
    """One order after ``decisions`` proposals of the engine benchmark's workload (a CRM creation, then
    connector updates: mostly current, some stale, a few refused), folded through ``decide``; with
    ``persist``, through the table form before every decision. Also (event id, kind, made version)."""
    work = workload_module().build_workload(decisions, 1, CODEC, RULES, start_ms=START_MS)
    state, seen = None, []
    for item in work.proposals:
        prop = ChangeProposal.from_avro(CODEC.decode(item.value).value)
        if persist and state is not None:
            state = OrderState.from_table(state.to_table())
        at = dt.datetime.fromtimestamp(item.timestamp_ms / 1000, dt.timezone.utc)
        decision = decide(state, prop, order_id=item.order_id, rules=RULES, at=at, next_order_number=OrderNumbers())
        state = decision.state
        seen.append((prop.event_id, decision.kind.value, state.version if decision.accepted else None))
    return state, seen


def first_form(state: OrderState, decided: list[tuple[str, str | None, int | None]]) -> dict:
    """The state as deployments first stored it: values as JSON text, writers per field, full event ids."""
    return {
        "id": state.order_id, "v": state.version, "no": state.order_number,
        "c": state.created_at, "u": state.updated_at,
        "f": {p: [s.value, s.version, s.system, s.actor, [list(e) for e in s.earlier]]
              for p, s in state.fields.items()},
        "x": [[r.system, r.object_type, r.external_id, r.external_number] for r in state.external_refs],
        "s": [event_id if kind is None else [event_id, kind, made] for event_id, kind, made in decided],
    }


def text_form(state: OrderState, decided: list[tuple[str, str | None, int | None]]) -> dict:
    """The state as deployments stored it next, in JSON: fields by path, decided ids as one text."""
    ids = "".join(f" {base64.b64encode(event_digest(event_id)).decode()}{'?' if kind is None else KIND_CODES[kind]}"
                  f"{'' if made is None else made}" for event_id, kind, made in decided)
    by_path = {TABLE_PATHS[key] if isinstance(key, int) and key < 100 else
               f"lines.{key // 100}.{TABLE_LINE_PATHS[key % 100]}" if isinstance(key, int) else key: entry
               for key, entry in state.to_dict()["f"].items()}
    return state.to_dict() | {"f": by_path, "d": ids}


# --- canonical text -------------------------------------------------------------------------


def test_value_text_spells_every_string_as_canonical_json() -> None:
    """orjson, which turns table values back into text, spells every character (surrogates aside) as json does."""
    for start in range(0, 0x110000, 512):
        text = "".join(chr(c) for c in range(start, start + 512) if not 0xD800 <= c <= 0xDFFF) + '"\\/'
        assert value_text(text) == canonical_json(text), hex(start)


@pytest.mark.parametrize("value", [0, -32768, 32767, True, False, [], ["QA", "ünï"], "12.50",
                                   [{"key": None, "text": "deburr"}, {"text": "7", "key": "ph"}]])
def test_value_text_spells_the_other_kinds_as_canonical_json(value: object) -> None:
    """Numbers, flags, lists and objects (keys sorted) read back from the table get their canonical spelling."""
    assert value_text(value) == canonical_json(value)


def test_canonical_json_spells_a_lone_surrogate_in_escapes() -> None:
    """orjson refuses a lone surrogate; canonical_json then spells the text in ASCII escapes, which any
    encoding can carry, and which reads back as the same text."""
    for value in ("a\ud800", ["QA", "\udfff \u00e4"], {"key": None, "text": "zinc \ud83d"}):
        text = canonical_json(value)
        assert text == json.dumps(value, sort_keys=True, separators=(",", ":")) and text.isascii()
        assert load_json(text) == value
    assert canonical_json(["\u00e4", "\U0001F600"]) == '["\u00e4","\U0001F600"]'  # otherwise as they are


# --- the table form -------------------------------------------------------------------------


def busy_state() -> tuple[OrderState, list[tuple[str, str | None, int | None]]]:
    """An order with history, a cleared field, refs, two lines, several writers; and how each id was decided."""
    props = [
        creation("c", {"lines.2.material.id": "MAT-2", "lines.2.quantity": "2", "lines.2.unit": "KGM"}),
        proposal("net", {"amounts.net": "-100.5", "currency": "eur", "lines.10.unit_price": "20"}, base=1, system="ERP",
                 refs=[("ERP", "A_SalesOrder", "4711", "SO 4711")]),
        proposal("po", {"customer_po_number": "PO-1", "contact": "Jane"}, base=2, system="HUB", role="sales"),
        proposal("po-crm", {"customer_po_number": "PO-2", "contact": None}, base=2, actor_id="ünï"),
        proposal("bad", {"amounts.net": "1"}, base=4),
        proposal("hold", {"on_hold": True, "hold_reasons": ["QA"], "planned_start": "2026-04-01T08:00:00.1234+02:00"},
                 base=4, system="MES"),
    ]
    state, decisions = run(props)
    return state, [(p.event_id, d.kind.value, d.state.version if d.accepted else None)
                   for p, d in zip(props, decisions)]


def test_the_table_form_is_compact_and_reads_back_equal() -> None:
    """Values are JSON values, paths are numbers, each writer is stored once, ids are digests: read
    back, the state is equal."""
    state, _ = busy_state()
    stored = state.to_dict()
    writers = [tuple(w) for w in stored["w"]]
    assert sorted(writers) == sorted({(s.system, s.actor) for s in state.fields.values()})
    f = stored["f"]
    assert sorted(f) == sorted([TABLE_PATHS.index(p) for p in state.fields if not p.startswith("lines.")]
                               + [2 * 100 + TABLE_LINE_PATHS.index(p) for p in ("material.id", "quantity", "unit")]
                               + [10 * 100 + TABLE_LINE_PATHS.index(p) for p in ("material.id", "quantity", "unit",
                                                                                 "unit_price")])
    by_path = text_form(state, [])["f"]
    assert all(writers[entry[2]] == (state.fields[p].system, state.fields[p].actor) for p, entry in by_path.items())
    assert by_path["amounts.net"][:2] == ["-100.50", 2] and by_path["amounts.net"][3:] == []
    assert by_path["customer_po_number"][:2] == ["PO-2", 4] and by_path["customer_po_number"][3:] == [3, "PO-1"]
    assert by_path["contact"][:2] == [None, 4] and by_path["contact"][3:] == [3, "Jane"]
    assert by_path["on_hold"][0] is True and by_path["instructions"][0] == [{"key": "coating", "text": "zinc"}]
    assert by_path["lines.10.unit_price"][0] == "20.0000"
    assert len(stored["d"]) == 6 * 17 and len(state.decided) == 6
    again = OrderState.from_table(state.to_table())
    assert isinstance(again.fields, StoredFields)
    assert again == state and again.to_dict() == stored
    assert again.fields["customer_po_number"] == state.fields["customer_po_number"]
    assert again.fields["customer_po_number"].earlier == ((3, '"PO-1"'),)


def test_a_path_without_a_number_is_stored_as_it_is() -> None:
    """An approval level's path (levels are configured, not numbered) keeps its name in the table."""
    state = OrderState(order_id="O-a", version=2, fields={
        "approvals.sales": FieldState('{"comment":null,"decision":"approved"}', 2, "HUB", "maria"),
        "lines.999999.scrap_quantity": FieldState('"1.000"', 1, "MES", "m")})
    assert sorted(state.to_dict()["f"], key=str) == [99999900 + TABLE_LINE_PATHS.index("scrap_quantity"),
                                                      "approvals.sales"]
    assert OrderState.from_table(state.to_table()) == state


def test_a_value_written_by_this_version_reads_back_the_same_forever() -> None:
    """The stored numbers (field paths, kind codes, the dedup entry's layout) are pinned by a value
    written once: if it no longer reads as this state, stored tables would not either."""
    state = OrderState(
        order_id="O-1", version=2, order_number="ORD-1", created_at="2026-12-05T08:00:00.000Z",
        updated_at="2026-12-05T09:00:00.000Z",
        fields={"customer.id": FieldState('"C-1"', 1, "CRM", "crm"),
                "status": FieldState('"CONFIRMED"', 2, "ERP", "erp", ((1, '"DRAFT"'),)),
                "lines.10.quantity": FieldState('"5.000"', 1, "CRM", "crm")},
        external_refs=(ExternalRef(system="CRM", object_type="Opportunity", external_id="OPP-1"),),
        decided=DecidedIds.of([("e-1", "created", 1), ("e-2", "applied", 2), ("e-3", "rejected", None)]),
        correlation_id="crm:OPP-1")
    written = bytes.fromhex(WRITTEN_2026_12)
    assert OrderState.from_table(written) == state
    assert state.to_table() == written


WRITTEN_2026_12 = (  # MessagePack: the state in the test above, as this version wrote it
    "8aa26964a34f2d31a17602a26e6fa54f52442d31a163b8323032362d31322d30355430383a30303a30302e3030305aa1"
    "75b8323032362d31322d30355430393a30303a30302e3030305aa1779292a343524da363726d92a3455250a3657270a1"
    "66830093a3432d3101001595a9434f4e4649524d4544020101a54452414654cd03ea93a5352e3030300100a1789194a3"
    "43524dab4f70706f7274756e697479a54f50502d31c0a164c433869d0d88a8723e1776ce1e5a6300000001914d82228e"
    "290e4c7b5894c7610000000236ec773cbc1b8499b277e09f7800000000a16ba963726d3a4f50502d31"
)


def test_a_state_read_from_the_table_decides_and_stores_as_one_kept_in_memory() -> None:
    """Folding realistic proposals with every state stored and read back in between gives the same states,
    and the same table forms, as folding them in memory."""
    plain, _ = realistic_order(60)
    stored, _ = realistic_order(60, persist=True)
    assert stored == plain
    assert stored.to_dict() == plain.to_dict()


def test_the_first_table_form_is_still_read() -> None:
    """A value deployments wrote before (values as text, writers per field, full ids, plain ids of the
    oldest states) reads as the same state, and is stored in the compact form next."""
    state, decided = busy_state()
    decided = [("before-answers", None, None), *decided]
    first = json.loads(json.dumps(first_form(state, decided)))
    read = OrderState.from_dict(first)
    assert read.fields == state.fields and read.external_refs == state.external_refs
    assert read.decided == DecidedIds.of(decided)
    assert read.decided.get("before-answers").kind is None and read.decided.get("po").made_version == 3
    assert read.to_dict()["f"] == state.to_dict()["f"]


def test_the_json_table_form_is_still_read() -> None:
    """The JSON value deployments wrote next (fields by path, decided ids as text) reads as the same
    state, with every id still answered as it was decided."""
    state, decided = busy_state()
    read = OrderState.from_dict(json.loads(json.dumps(text_form(state, decided))))
    assert read == state and read.to_dict() == state.to_dict()
    assert read.decided.get("po").made_version == 3 and read.decided.get("bad").kind == "rejected"


# --- the dedup evidence ---------------------------------------------------------------------


def test_decided_ids_answer_how_each_id_was_decided() -> None:
    """An id remembered with its kind and version is found again; an unknown id is not; digests are short."""
    decided = DecidedIds().remember("e-1", "created", 1).remember("e-2", "rejected").remember("e-3", None)
    assert (decided.get("e-1").kind, decided.get("e-1").made_version) == ("created", 1)
    assert (decided.get("e-2").kind, decided.get("e-2").made_version) == ("rejected", None)
    assert (decided.get("e-3").kind, decided.get("e-3").made_version) == (None, None)
    assert decided.get("e-4") is None and "e-4" not in decided and "e-2" in decided and len(decided) == 3
    assert decided == DecidedIds.of([("e-1", "created", 1), ("e-2", "rejected", None), ("e-3", None, None)])
    assert len(event_digest("e-1")) == 12 and len(decided.entries) == 3 * 17


def test_a_digest_found_across_two_entries_is_not_an_id() -> None:
    """Only a digest where an entry starts stands for an id: the same bytes straddling two entries do not."""
    digest = event_digest("wanted")
    straddling = DecidedIds(b"\x01" * 5 + digest)  # one 17-byte entry whose bytes hold the digest at 5
    assert "wanted" not in straddling and straddling.get("wanted") is None
    both = straddling.remember("wanted", "applied", 7)
    assert both.get("wanted").made_version == 7 and len(both) == 2


def test_decided_ids_forget_the_oldest_past_the_limit() -> None:
    """Past SEEN_LIMIT ids, the oldest is forgotten (and would be decided again)."""
    decided = DecidedIds.of((f"e-{i}", "applied", i + 1) for i in range(SEEN_LIMIT))
    more = decided.remember("last", "applied", SEEN_LIMIT + 1)
    assert len(more) == SEEN_LIMIT and "e-0" not in more and "e-1" in more and more.get("last").made_version == 2001


def test_every_decision_kind_has_its_own_code() -> None:
    """The one-character codes stored for the kinds are distinct, and cover every kind."""
    assert set(KIND_CODES) == {kind.value for kind in DecisionKind}
    assert len(set(KIND_CODES.values())) == len(KIND_CODES) and all(len(c.encode()) == 1 for c in KIND_CODES.values())


def test_every_canonical_field_has_a_table_number() -> None:
    """A new canonical field is appended to TABLE_PATHS or TABLE_LINE_PATHS; each stays below 100 long."""
    assert set(HEADER_FIELDS) | {DELETE_PATH} <= set(TABLE_PATHS)
    assert set(LINE_FIELDS) <= set(TABLE_LINE_PATHS)
    assert len(set(TABLE_PATHS)) == len(TABLE_PATHS) < 100 and len(set(TABLE_LINE_PATHS)) == len(TABLE_LINE_PATHS) < 100


# --- the size of an order's state -----------------------------------------------------------


def test_an_order_with_40_decisions_keeps_a_state_under_2_kb() -> None:
    """After 40 realistic decisions the state's table value is under 2 kB, its history (three earlier
    values on most of ~28 fields) and the dedup evidence of all 40 included: half the first form, and
    a third less than the same state in JSON."""
    state, decided = realistic_order(40)
    compact = len(state.to_table())
    first = len(json.dumps(first_form(state, decided), separators=(",", ":")).encode())
    as_json = len(orjson.dumps(text_form(state, decided)))
    assert compact <= 2048 and compact <= 0.55 * first and compact <= 0.75 * as_json, (compact, first, as_json)
    # with the event ids connectors send (UUIDs), the digests save more
    uuids = [(f"{i:08x}-6539-5cbd-88e9-13a2487ad2b8", kind, made) for i, (_, kind, made) in enumerate(decided)]
    assert len(json.dumps(first_form(state, uuids), separators=(",", ":")).encode()) - first > 900


# --- the snapshot built straight from the state ---------------------------------------------


def snapshot_states() -> list[OrderState]:
    """States whose snapshots cover every kind of value: decimals (negative, zero, 18 digits), dates,
    timestamps, lines, refs with and without numbers, cleared fields, instructions without keys, and
    a state made outside ``decide`` (timestamps with offsets and microseconds, approvals)."""
    busy, _ = busy_state()
    states = [busy, realistic_order(40)[0], realistic_order(12)[0]]
    state, decisions = run([
        creation("s-1", {"amounts.crm_expected": "9999999999999999.99", "lines.20.material.id": "M-20",
                         "lines.20.quantity": "0.001", "lines.20.unit": "KGM", "lines.20.raw_unit": "kg",
                         "lines.20.material.revision": "B", "instructions": ["plain text"],
                         "customer.name": "Ä & \"Co\"", "requested_delivery": "1969-12-31"}),
        proposal("s-2", {"amounts.net": "0", "amounts.tax": "-0.00", "amounts.gross": "-12.01", "plant": "P1",
                         "lines.20.unit_price": "0.0001", "lines.20.confirmed_date": "2027-01-02",
                         "lines.20.confirmed_quantity": "0", "lines.10.confirmed_quantity": "123456789012345.678",
                         "promised_delivery": "2026-12-24", "credit_status": "OK", "terms": "NET30", "priority": -5},
                 base=1, system="ERP", refs=[("ERP", "A_SalesOrder", "1"), ("ERP", "Billing", "2", "B-2")]),
        proposal("s-3", {"actual_start": "1969-12-31T23:59:59.999Z", "planned_end": "2026-12-01T08:00:00.5+00:00",
                         "lines.20.good_quantity": "5", "lines.20.scrap_quantity": "0.5", "on_hold": False,
                         "hold_reasons": []}, base=2, system="MES"),
        proposal("s-4", {"customer.name": None, "sales_owner": "Rep", "contact": "C", "customer_po_number": "PO"},
                 base=3),
    ])
    assert all(d.accepted for d in decisions), [d.rejection for d in decisions]
    states.append(state)
    states.append(OrderState(
        order_id="O-x", version=3, order_number=None, created_at="2026-03-02T09:30:00.123456+00:00",
        updated_at="2026-03-02T10:30:00+01:00",
        fields={"customer.id": FieldState('"C-1"', 1, "HUB", "kit"),
                "status": FieldState('"RELEASED"', 3, "HUB", "kit"),
                "lines.1.material.id": FieldState('"M"', 1, "HUB", "kit"),
                "lines.1.quantity": FieldState('"1.000"', 1, "HUB", "kit"),
                "lines.1.unit": FieldState('"C62"', 1, "HUB", "kit"),
                "amounts.net": FieldState(None, 2, "HUB", "kit", ((1, '"1.00"'),)),
                # approvals (order_snapshot v2): sorted by level, a comment or none
                "approvals.sales": FieldState('{"comment":"ok \u00e4","decision":"approved"}', 2, "HUB", "maria"),
                "approvals.finance": FieldState('{"comment":"too high","decision":"refused"}', 3, "HUB", "fin")},
        external_refs=(ExternalRef(system="CRM", object_type="Opportunity", external_id="1"),)))
    return states


def model_bytes(state: OrderState) -> bytes:
    """The snapshot as published before: the pydantic model, dumped, quantised by the codec, written by
    fastavro trying each union branch."""
    plan = CODEC._plan("order_snapshot", None, None)
    out = io.BytesIO()
    out.write(plan.header)
    fastavro.schemaless_writer(out, plan.schema, plan.quantise(state.to_snapshot().to_avro()))
    return out.getvalue()


@pytest.mark.parametrize("index", range(5))
def test_the_snapshot_record_encodes_to_the_bytes_of_the_snapshot_model(index: int) -> None:
    """For varied states, the record built from the state equals the model's dump and encodes, without
    the quantiser and with union branches named, to exactly the bytes the model path wrote."""
    state = snapshot_states()[index]
    record = state.snapshot_record()
    assert record == state.to_snapshot().to_avro()
    published = CODEC.encode("order_snapshot", record, quantised=True)
    assert published == model_bytes(state) == CODEC.encode("order_snapshot", state.to_snapshot().to_avro())
    assert CODEC.decode(published).value["version"] == state.version


def test_the_snapshot_record_reads_a_state_from_the_table_form_alike() -> None:
    """A state read back from the table (values as JSON values) gives the same snapshot bytes."""
    for state in snapshot_states():
        again = OrderState.from_table(state.to_table())
        assert CODEC.encode("order_snapshot", again.snapshot_record(), quantised=True) == model_bytes(state)


def test_the_connector_store_reads_snapshots_back_as_the_model_dumps_them(tmp_path: Path) -> None:
    """What a connector's store keeps of the hub's snapshots reads back, for varied snapshots, as the
    model's own JSON dump (which ``emit`` compares outside values with, without building the model),
    and as the model, by order id and by every external reference, in one ``known`` read."""
    store = ConnectorStore(tmp_path / "store.db")
    try:
        snapshots = [snap.model_copy(update={"order_id": f"O-{i}", "external_refs": [
            ref.model_copy(update={"external_id": f"{ref.external_id}-{i}"}) for ref in snap.external_refs]})
            for i, snap in enumerate(state.to_snapshot() for state in snapshot_states())]
        store.remember(snapshots, {})
        refs = [ref.key for snap in snapshots for ref in snap.external_refs]
        known = store.known([snap.order_id for snap in snapshots] + ["nobody"], refs + ["CRM/Opportunity/none"])
        for snap in snapshots:
            assert known.order(snap.order_id) == snap.model_dump(mode="json")
            assert known.snapshot(snap.order_id) == snap == store.snapshot(snap.order_id)
            for ref in snap.external_refs:
                assert known.order(None, ref.key) is known.order(snap.order_id)  # parsed once per order
                assert store.snapshot_for(ref) == snap
        assert known.order("nobody") is None and known.order(None, "CRM/Opportunity/none") is None
        assert len(refs) >= 3
    finally:
        store.close()
