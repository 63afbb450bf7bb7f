"""Every decision path of the engine, end to end through real Kafka topics and a real worker."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any, Iterator

import pytest

from hub.errors import UndecodableRecord
from hub.events import ChangeProposal, ExternalRef, OrderRef
from hub.propose import propose_file
from hub.readmodel import OrderNotFound, ReadModel
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec
from hub.settings import PROJECT_DIR, Settings
from hub.streams.core import TopicNames, order_id_for_reference
from tests.domain_helpers import creation, proposal, ref
from tests.services import namespaced_settings
from tests.integration.kafka_helpers import TopicReader, WorkerProcess, delete_namespace_topics, poll_until, produce

pytestmark = pytest.mark.integration

CODEC = AvroCodec(SchemaStore.load(Settings().schemas_dir))


@pytest.fixture(scope="module")
def engine(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One namespace and one running worker, shared by the tests of this module (each uses its own orders)."""
    folder = tmp_path_factory.mktemp("engine")
    settings = namespaced_settings(kafka_settings, folder)
    worker = WorkerProcess(settings, folder / "worker.log").start()
    try:
        worker.wait_ready()
        yield settings
    finally:
        worker.stop()
        asyncio.run(delete_namespace_topics(settings, settings.topic_namespace))


def topics_of(settings: Settings) -> TopicNames:
    return TopicNames.of(settings)


def by_reference(prop: ChangeProposal, reference: ExternalRef) -> ChangeProposal:
    """The same proposal, naming its order by an external reference instead of the hub id."""
    return prop.model_copy(update={"order_ref": OrderRef(external=reference)})


async def send(settings: Settings, *proposals: ChangeProposal | bytes, key: bytes | None = None) -> None:
    """Produce proposals (or raw bytes) to the proposals topic, keyed as connectors key them."""
    records = []
    now_ms = int(time.time() * 1000)
    for item in proposals:
        if isinstance(item, bytes):
            records.append((key, item, now_ms))
            continue
        records.append((item.order_ref.key.encode(), CODEC.encode("change_proposal", item.to_avro()), now_ms))
    await produce(settings, topics_of(settings).proposals, records)


def decoded(records: list, schema: str) -> list[dict[str, Any]]:
    """Decode, and dedup by record id as every consumer must; copies of a record must be identical."""
    if schema == "order_snapshot":  # latest-state records have no record id: keep them all
        return [CODEC.decode(r.value, schema).value for r in records]
    by_id: dict[str, bytes] = {}
    for r in records:
        value = CODEC.decode(r.value, schema).value
        assert by_id.setdefault(value["record_id"], r.value) == r.value, f"{value['record_id']} re-emitted differently"
    return [CODEC.decode(v, schema).value for v in by_id.values()]


async def outcomes(settings: Settings, event_ids: set[str], timeout: float = 60,
                   **expected: set[str]) -> dict[str, list[dict]]:
    """Read the output topics until every event id has an outcome, and every ``schema=ids`` record
    named in ``expected`` (e.g. ``order_conflict={...}``) is there; return decoded records by schema."""
    names = topics_of(settings)
    schemas = {names.changes: "order_change", names.conflicts: "order_conflict",
               names.rejections: "order_rejection", names.releases: "order_release",
               names.state: "order_snapshot"}
    topic_of = {schema: topic for topic, schema in schemas.items()}

    def event_ids_in(records: dict[str, list], *topics: str) -> set[str]:
        return {CODEC.decode(r.value).value["event_id"] for t in topics for r in records[t]}

    def finished(records: dict[str, list]) -> set[str]:
        # a conflict that made a version (resolved) is finished when its change is read too: the
        # two records are on different topics and may be read in either order
        conflicts = [CODEC.decode(r.value).value for r in records[names.conflicts]]
        return (event_ids_in(records, names.changes, names.rejections)
                | {c["event_id"] for c in conflicts if c["resulting_version"] is None})

    def decided(records: dict[str, list]) -> bool:
        return event_ids <= finished(records) and all(
            wanted <= event_ids_in(records, topic_of[schema]) for schema, wanted in expected.items())

    records = await TopicReader(settings, list(schemas)).until(decided, timeout)
    return {schemas[topic]: decoded(batch, schemas[topic]) for topic, batch in records.items()}


async def snapshot_at(settings: Settings, order_id: str, version: int) -> dict[str, Any]:
    """Read the state topic until the snapshot of this order at this version is there."""
    state = topics_of(settings).state

    def at_version(records: dict[str, list]) -> list[dict[str, Any]]:
        return [s for s in decoded(records[state], "order_snapshot")
                if s["order_id"] == order_id and s["version"] == version]

    records = await TopicReader(settings, [state]).until(lambda r: bool(at_version(r)), 30)
    return at_version(records)[-1]


def unique_ref(system: str = "CRM", object_type: str = "Opportunity") -> ExternalRef:
    return ref(system, object_type, f"{object_type[:3].upper()}-{uuid.uuid4().hex[:10]}")


def ids(prefix: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{prefix}-{tag}-{i}" for i in range(n)]


async def test_creation_by_reference_assigns_one_order_and_number(engine: Settings) -> None:
    """A creation by external reference makes one order with one number, also when redelivered and raced."""
    crm = unique_ref()
    first, racing = ids("create", 2)
    create = by_reference(creation(first, refs=[crm]), crm)
    # another CRM user: a writer superseding its own value would not be a conflict
    race = by_reference(creation(racing, {"customer.name": "ACME AG"}, refs=[crm], actor_id="ben"), crm)
    await send(engine, create, create, race)  # the first one twice: a redelivery
    out = await outcomes(engine, {first, racing})

    order_id = order_id_for_reference(crm.key)
    changes = [c for c in out["order_change"] if c["order_id"] == order_id]
    # the racing creation is merged as an update from version 0: CRM owns customer.name, so its value wins
    assert [(c["event_id"], c["version"], c["outcome"]) for c in changes] == [(first, 1, "CREATED"), (racing, 2, "RESOLVED")]
    assert len({c["order_number"] for c in changes}) == 1
    assert changes[0]["order_number"].startswith(f"ORD-{dt.date.today().year}-")
    snapshot = await snapshot_at(engine, order_id, 2)
    assert snapshot["external_refs"][0]["external_id"] == crm.external_id


async def test_applied_merged_resolved_and_kept_by_owner(engine: Settings) -> None:
    """An update on the current version applies, a stale one merges, and an overlap goes to the field's owner either way."""
    order = f"O-{uuid.uuid4().hex[:10]}"
    create, net, name, crm_qty, erp_qty, crm_again = ids("e", 6)
    await send(engine,
               creation(create, order_id=order),                                                     # v1
               proposal(net, {"amounts.net": Decimal("100")}, base=1, system="ERP", order_id=order),   # v2 applied
               proposal(name, {"customer.name": "ACME"}, base=1, system="CRM", order_id=order),        # v3 merged
               proposal(crm_qty, {"lines.10.quantity": Decimal("7")}, base=3, system="CRM", order_id=order),  # v4
               proposal(erp_qty, {"lines.10.quantity": Decimal("8")}, base=3, system="ERP", order_id=order),  # v5 owner wins
               proposal(crm_again, {"lines.10.quantity": Decimal("9")}, base=4, system="CRM", order_id=order))  # kept
    out = await outcomes(engine, {create, net, name, crm_qty, erp_qty, crm_again}, order_conflict={erp_qty, crm_again})
    changes = {c["event_id"]: c for c in out["order_change"] if c["order_id"] == order}
    assert [changes[e]["version"] for e in (create, net, name, crm_qty, erp_qty)] == [1, 2, 3, 4, 5]
    assert [changes[e]["outcome"] for e in (net, name, erp_qty)] == ["APPLIED", "MERGED", "RESOLVED"]
    assert changes[net]["diffs"] == [{"field": "amounts.net", "before": None, "after": '"100.00"'}]
    (conflict,) = [c for c in out["order_conflict"] if c["event_id"] == erp_qty]
    (field,) = conflict["fields"]
    assert (field["base_value"], field["current_value"], field["proposed_value"]) == ('"5.000"', '"7.000"', '"8.000"')
    assert (field["current_writer"]["source_system"], field["proposed_writer"]["source_system"]) == ("CRM", "ERP")
    assert (field["policy"], field["outcome"], conflict["resulting_version"]) == ("OWNER_WINS", "PROPOSED_WON", 5)
    (kept,) = [c for c in out["order_conflict"] if c["event_id"] == crm_again]
    assert (kept["fields"][0]["outcome"], kept["resulting_version"], kept["parked"]) == ("CURRENT_KEPT", None, False)
    assert crm_again not in changes  # the owner's value stays; no new version


async def test_manual_conflict_is_parked_whole(engine: Settings) -> None:
    """A conflict on a manual field parks the whole proposal: no version, the proposal kept in the conflict."""
    order = f"O-{uuid.uuid4().hex[:10]}"
    create, sales, planner = ids("e", 3)
    await send(engine,
               creation(create, order_id=order),
               proposal(sales, {"instructions": ["powder coat"]}, base=1, system="HUB", role="sales", order_id=order),
               proposal(planner, {"instructions": ["anodise"], "plant": "P2"}, base=1, system="HUB", role="planner",
                        order_id=order))
    out = await outcomes(engine, {create, sales, planner}, order_conflict={planner})
    assert [c["event_id"] for c in out["order_change"] if c["order_id"] == order] == [create, sales]
    (conflict,) = [c for c in out["order_conflict"] if c["event_id"] == planner]
    assert conflict["parked"] is True and conflict["resulting_version"] is None
    assert conflict["fields"][0]["outcome"] == "PARKED"
    assert conflict["proposal"]["event_id"] == planner


async def test_rejections_carry_reasons_and_the_whole_proposal(engine: Settings) -> None:
    """Permission, mandatory-field, unknown-order and base-ahead rejections name field and rule, and keep the proposal."""
    order = f"O-{uuid.uuid4().hex[:10]}"
    create, denied, missing, unknown, ahead = ids("e", 5)
    await send(engine,
               creation(create, order_id=order),
               proposal(denied, {"amounts.net": Decimal("1")}, base=1, system="CRM", role="sales", order_id=order),
               creation(missing, {"customer.id": None}, order_id=f"O-{uuid.uuid4().hex[:10]}"),
               proposal(unknown, {"contact": "x"}, base=1, order_id=f"O-{uuid.uuid4().hex[:10]}"),
               proposal(ahead, {"contact": "x"}, base=9, order_id=order))
    out = await outcomes(engine, {create, denied, missing, unknown, ahead})
    rejections = {r["event_id"]: r for r in out["order_rejection"]}
    assert {e: rejections[e]["reason"] for e in (denied, missing, unknown, ahead)} == {
        denied: "PERMISSION_DENIED", missing: "MISSING_FIELD", unknown: "UNKNOWN_ORDER", ahead: "BASE_VERSION_AHEAD"}
    assert rejections[denied]["errors"][0]["field"] == "amounts.net"
    assert rejections[denied]["errors"][0]["rule"].startswith("fields.amounts.net: owner ERP")
    assert rejections[missing]["errors"][0]["field"] == "customer.id"
    assert rejections[denied]["proposal"]["event_id"] == denied
    assert [c["version"] for c in out["order_change"] if c["order_id"] == order] == [1]


async def test_release_reaches_the_mes_topic(engine: Settings) -> None:
    """Walking the lifecycle with permitted writers emits one release with the lines to produce."""
    order = f"O-{uuid.uuid4().hex[:10]}"
    steps = [("CRM", "connector", "CONFIRMED"), ("ERP", "connector", "APPROVED"), ("HUB", "planner", "RELEASED")]
    events = ids("e", 4)
    props = [creation(events[0], order_id=order)] + [
        proposal(e, {"status": status}, base=v, system=s, role=r, order_id=order)
        for v, (e, (s, r, status)) in enumerate(zip(events[1:], steps), start=1)]
    await send(engine, *props)
    out = await outcomes(engine, set(events), order_release={events[3]})
    (release,) = [r for r in out["order_release"] if r["order_id"] == order]
    assert release["version"] == 4 and release["event_id"] == events[3]
    assert [(line["material_id"], line["quantity"]) for line in release["lines"]] == [("MAT-100", Decimal("5.000"))]


async def test_an_order_above_a_threshold_waits_for_its_approvals(engine: Settings) -> None:
    """workflow.yaml on the real worker: above 50,000 the ERP's approval step is refused until sales and plant
    approve as people; the last approval makes the order APPROVED, and then it can be released."""
    order = f"O-{uuid.uuid4().hex[:10]}"
    create, price, early, sales, plant, release = ids("wf", 6)
    await send(engine, creation(create, order_id=order),
               proposal(price, {"amounts.gross": Decimal("60000"), "currency": "EUR", "status": "CONFIRMED"}, base=1,
                        system="ERP", order_id=order),
               proposal(early, {"status": "APPROVED"}, base=2, system="ERP", order_id=order),
               proposal(sales, {"approvals.sales": {"decision": "approved", "comment": "ok"}}, base=2, system="HUB",
                        role="sales_manager", order_id=order),
               proposal(plant, {"approvals.plant": {"decision": "approved"}}, base=2, system="HUB",
                        role="plant_manager", order_id=order),
               proposal(release, {"status": "RELEASED"}, base=4, system="HUB", role="planner", order_id=order))
    out = await outcomes(engine, {create, price, early, sales, plant, release}, order_release={release})
    (refused,) = [r for r in out["order_rejection"] if r["event_id"] == early]
    assert refused["errors"][0]["message"] == "the order cannot be APPROVED before sales, plant approved (amount 60000.00 EUR)"
    changes = {c["event_id"]: c for c in out["order_change"] if c["order_id"] == order}
    assert [d["field"] for d in changes[sales]["diffs"]] == ["approvals.sales"]
    assert {d["field"]: d["after"] for d in changes[plant]["diffs"]} == {
        "approvals.plant": '{"comment":null,"decision":"approved"}', "status": '"APPROVED"'}
    assert (changes[plant]["outcome"], changes[release]["version"]) == ("MERGED", 5)
    snapshot = await snapshot_at(engine, order, 5)
    assert snapshot["status"] == "RELEASED"
    assert [(a["level"], a["decision"], a["comment"]) for a in snapshot["approvals"]] == [
        ("plant", "approved", None), ("sales", "approved", "ok")]


async def test_every_approval_path_on_the_real_worker(engine: Settings) -> None:
    """Below the first threshold nobody approves; a refusal holds the order with why and the same level's
    approval lifts it; an amount raised across a threshold after approval asks for the new level and
    approving waits for it; two people deciding one level differently from the same version race: one applies,
    the other is parked for a person."""
    below, held, raced = (f"O-{uuid.uuid4().hex[:10]}" for _ in range(3))
    b = ids("below", 3)
    h = ids("held", 6)
    r = ids("raced", 4)
    confirm = {"amounts.gross": Decimal("12000"), "currency": "EUR", "status": "CONFIRMED"}
    await send(engine,
               creation(b[0], order_id=below),
               proposal(b[1], {"amounts.gross": Decimal("9000"), "currency": "EUR", "status": "CONFIRMED"}, base=1,
                        system="ERP", order_id=below),
               proposal(b[2], {"status": "APPROVED"}, base=2, system="ERP", order_id=below),
               creation(h[0], order_id=held),
               proposal(h[1], confirm, base=1, system="ERP", order_id=held),
               proposal(h[2], {"approvals.sales": {"decision": "refused", "comment": "margin too thin"}}, base=2,
                        system="HUB", role="sales_manager", order_id=held),
               proposal(h[3], {"approvals.sales": {"decision": "approved", "comment": "price raised"}}, base=3,
                        system="HUB", role="sales_manager", order_id=held),
               proposal(h[4], {"amounts.gross": Decimal("75000")}, base=4, system="ERP", order_id=held),
               proposal(h[5], {"status": "APPROVED"}, base=5, system="ERP", order_id=held),
               creation(r[0], order_id=raced),
               proposal(r[1], confirm, base=1, system="ERP", order_id=raced),
               proposal(r[2], {"approvals.sales": {"decision": "approved"}}, base=2, system="HUB",
                        role="sales_manager", actor_id="maria", order_id=raced),
               proposal(r[3], {"approvals.sales": {"decision": "refused", "comment": "no"}}, base=2, system="HUB",
                        role="sales_manager", actor_id="bob", order_id=raced))
    out = await outcomes(engine, set(b + h + r))
    changes = {c["event_id"]: c for c in out["order_change"]}
    rejected = {x["event_id"]: x for x in out["order_rejection"]}

    assert changes[b[2]]["version"] == 3 and (await snapshot_at(engine, below, 3))["status"] == "APPROVED"

    refused = await snapshot_at(engine, held, 3)
    assert (refused["status"], refused["on_hold"], refused["hold_reasons"]) == (
        "CONFIRMED", True, ["approval refused (sales): margin too thin"])
    lifted = await snapshot_at(engine, held, 4)
    assert (lifted["status"], lifted["on_hold"], lifted["hold_reasons"]) == ("APPROVED", False, [])
    raised = await snapshot_at(engine, held, 5)
    assert raised["status"] == "CONFIRMED", "75,000 needs the plant level too: back to waiting for it"
    assert rejected[h[5]]["errors"][0]["message"] == \
        "the order cannot be APPROVED before plant approved (amount 75000.00 EUR)"

    (conflict,) = [c for c in out["order_conflict"] if c["order_id"] == raced]
    assert conflict["event_id"] == r[3] and conflict["parked"] is True
    assert [f["field"] for f in conflict["fields"]] == ["approvals.sales"]
    won = await snapshot_at(engine, raced, 3)
    assert won["status"] == "APPROVED" and [(a["level"], a["decision"]) for a in won["approvals"]] == [
        ("sales", "approved")]


async def test_reference_attached_later_resolves_to_the_same_order(engine: Settings) -> None:
    """An ERP id attached to a CRM-created order afterwards routes ERP's own updates to that order."""
    crm, erp = unique_ref(), unique_ref("ERP", "A_SalesOrder")
    create, attach, update = ids("e", 3)
    order_id = order_id_for_reference(crm.key)
    # keyed differently, the creation and the attach travel different partitions: attach after
    # the creation is decided, as the ERP connector does once it learns the hub order id
    await send(engine, by_reference(creation(create, refs=[crm]), crm))
    await outcomes(engine, {create})
    await send(engine, proposal(attach, {"promised_delivery": dt.date(2026, 12, 3)}, base=1, system="ERP",
                                refs=[erp], order_id=order_id))
    await outcomes(engine, {attach})
    # the link travels engine -> ref-links topic -> resolver table; retry until it is there
    deadline = time.monotonic() + 60
    while True:
        await send(engine, by_reference(proposal(update, {"amounts.net": Decimal("12.5")}, base=2, system="ERP"), erp))
        out = await outcomes(engine, {update})
        decided = [c for c in out["order_change"] + out["order_rejection"] if c["event_id"] == update]
        if any(c.get("order_id") == order_id and "version" in c for c in decided):
            break
        assert time.monotonic() < deadline, f"ERP reference never resolved: {decided}"
        update = ids("e", 1)[0]
    snapshot = await snapshot_at(engine, order_id, decided[0]["version"])
    assert {r["system"] for r in snapshot["external_refs"]} == {"CRM", "ERP"}
    assert snapshot["amounts"]["net"] == Decimal("12.50")


async def test_bad_input_goes_to_dead_letters_and_the_worker_goes_on(engine: Settings) -> None:
    """Undecodable bytes land on the dead-letter topic with why, and the next proposal is still decided."""
    names = topics_of(engine)
    marker = uuid.uuid4().hex.encode()
    (after,) = ids("e", 1)
    await send(engine, b"\x00\x00\x00\x00\x07not avro" + marker, key=marker)
    await send(engine, creation(after, order_id=f"O-{uuid.uuid4().hex[:10]}"))
    await outcomes(engine, {after})
    records = await TopicReader(engine, [names.dead_letters]).until(
        lambda r: any(rec.key == marker for rec in r[names.dead_letters]), 30)
    (dead,) = [r for r in records[names.dead_letters] if r.key == marker]
    headers = dict(dead.headers)
    assert headers["__orderhub.errors.topic"] == names.proposals.encode()
    assert headers["__orderhub.errors.stage"] == b"resolve"
    assert headers["__orderhub.errors.exception.class.name"] == b"hub.errors.UndecodableRecord"
    assert dead.value.endswith(marker)
    with pytest.raises(UndecodableRecord):
        CODEC.decode(dead.value)


async def test_read_model_has_the_order_and_its_history(engine: Settings) -> None:
    """The worker projects accepted changes into SQL: the order, its lines and one history row per version."""
    order = f"O-{uuid.uuid4().hex[:10]}"
    create, update = ids("e", 2)
    await send(engine, creation(create, order_id=order),
               proposal(update, {"customer.name": "Projected GmbH"}, base=1, order_id=order))
    await outcomes(engine, {create, update})
    model = ReadModel(engine.read_model_url)
    # the projector writes a batch per checkpoint; the history and the order row are separate sinks
    def projected() -> bool:
        with contextlib.suppress(OrderNotFound):
            return model.versions(order) == [1, 2] and model.get_order(order)["version"] == 2
        return False
    await poll_until(projected, 30, f"versions 1, 2 of {order} in the read model")
    row = model.get_order(order)
    assert row["customer_name"] == "Projected GmbH" and row["version"] == 2
    assert [line["material_id"] for line in row["lines"]] == ["MAT-100"]
    assert model.history(order)[1].diffs[0].after == '"Projected GmbH"'


async def test_propose_command_walks_the_examples(engine: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """`orderhub propose` on deploy/local/examples: the CRM creation is created, the ERP confirmation
    applied (exit 0), the shop floor's cancel refused with the rule named (exit 1); a re-sent file with
    its own event id changes nothing (UNCHANGED, no version), never a second order."""
    examples = PROJECT_DIR / "deploy" / "local" / "examples"

    def run(name: str) -> tuple[int, str]:
        code = propose_file(engine, str(examples / name), wait_s=60)
        return code, capsys.readouterr().out

    code, out = await asyncio.to_thread(run, "create-order.json")
    assert code == 0 and out.startswith("CREATED: ORD-") and "version 1" in out
    assert "(order id fb0bbf2d-21e6-54e2-b75c-ead36a1f09fb)" in out  # derived from CRM/Opportunity/OPP-4711
    assert 'status: null -> "DRAFT"' in out and 'lines.10.quantity: null -> "250.000"' in out
    code, out = await asyncio.to_thread(run, "erp-confirms.json")
    assert code == 0 and out.startswith("APPLIED: ORD-") and "version 2" in out
    assert 'status: "DRAFT" -> "CONFIRMED"' in out
    code, out = await asyncio.to_thread(run, "mes-cancels.json")
    assert code == 1 and out.startswith("REJECTED PERMISSION_DENIED")
    assert "status: MES:supervisor may not move the order from CONFIRMED to CANCELLED" in out
    code, out = await asyncio.to_thread(run, "create-order.json")
    assert code == 0 and out.startswith("UNCHANGED: ORD-") and "at version 2" in out
    assert "fb0bbf2d-21e6-54e2-b75c-ead36a1f09fb" in out
    model = ReadModel(engine.read_model_url)
    await poll_until(lambda: model.versions("fb0bbf2d-21e6-54e2-b75c-ead36a1f09fb") == [1, 2], 30,
                     "versions 1-2 of the example order in the read model")
    assert model.resolve("ERP/A_SalesOrder/4500012345") == "fb0bbf2d-21e6-54e2-b75c-ead36a1f09fb"
