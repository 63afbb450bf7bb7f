"""Every event type survives a trip through its declared topic on the real broker, in both wire formats."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from hub import topics
from hub.errors import UndecodableRecord
from hub.events import (EVENT_MODELS, Actor, Amounts, ChangeOutcome, ChangeProposal, ConflictOutcome, ConflictPolicy,
                        Customer, ExternalRef, FieldChange, FieldConflict, FieldDiff, FieldError, Instruction,
                        LifecycleStatus, Material, OrderAlert, OrderChange, OrderConflict, OrderLine, OrderRef,
                        OrderRejection,
                        OrderRelease, OrderSnapshot, ProposalAnswer, ProposalIntent, ProposalOutcome, RejectionReason,
                        ReleaseLine, Writer, _Event)
from hub.serde.store import SchemaStore
from hub.serde.wire import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, AvroCodec, ConfluentClientRegistry
from hub.settings import Settings
from tests.integration.kafka_helpers import TopicReader, produce

pytestmark = pytest.mark.integration

#: Millisecond precision, UTC: what timestamp-millis can hold.
ACCEPTED = dt.datetime(2026, 3, 2, 9, 30, 15, 123000, tzinfo=dt.UTC)
OCCURRED = dt.datetime(2026, 3, 2, 9, 29, 58, 7000, tzinfo=dt.UTC)
CRM_REF = ExternalRef(system="CRM", object_type="Opportunity", external_id="006Qy00000AbCdE", external_number="OPP-4711")
ERP_REF = ExternalRef(system="ERP", object_type="A_SalesOrder", external_id="4500012345")
ALICE = Actor(id="alice@example.com", role="sales")


def _proposal() -> ChangeProposal:
    return ChangeProposal(
        event_id="crm-evt-0001",
        order_ref=OrderRef(external=CRM_REF),
        intent=ProposalIntent.UPDATE,
        base_version=3,
        source_system="CRM",
        actor=ALICE,
        occurred_at=OCCURRED,
        changes=[FieldChange(field="customer.name", value='"ACME Fräsen GmbH"'),
                 FieldChange(field="amounts.crm_expected", value='"15000.00"'),
                 FieldChange(field="contact", value=None)],
        external_refs=[CRM_REF],
        comment="Customer renamed after merger; contact left the company.",
    )


def _snapshot() -> OrderSnapshot:
    return OrderSnapshot(
        order_id="O-7f3a9c",
        order_number="ORD-2026-03-000123",
        version=4,
        status=LifecycleStatus.APPROVED,
        on_hold=True,
        hold_reasons=["credit check pending"],
        external_refs=[CRM_REF, ERP_REF],
        customer=Customer(id="CUST-0815", name="ACME Fräsen GmbH"),
        contact="Jana Novák",
        sales_owner="alice@example.com",
        customer_po_number="PO-2026-0042",
        currency="EUR",
        amounts=Amounts(net=Decimal("12345.67"), tax=Decimal("2345.68"), gross=Decimal("14691.35"),
                        crm_expected=Decimal("15000.00")),
        requested_delivery=dt.date(2026, 4, 30),
        promised_delivery=dt.date(2026, 5, 8),
        planned_start=dt.datetime(2026, 4, 20, 6, 0, 0, 500000, tzinfo=dt.UTC),
        planned_end=dt.datetime(2026, 4, 24, 14, 0, tzinfo=dt.UTC),
        actual_start=dt.datetime(2026, 4, 20, 6, 12, 3, 999000, tzinfo=dt.UTC),
        actual_end=None,
        priority=7,
        terms="NET 30",
        plant="1010",
        credit_status="B",
        instructions=[Instruction(key="packaging", text="EUR pallet, max 800 kg"),
                      Instruction(key=None, text="Certificate 3.1 required")],
        lines=[
            OrderLine(line_no=10, material=Material(id="MAT-100", revision="C"), quantity=Decimal("250.000"),
                      unit="C62", raw_unit="pcs", unit_price=Decimal("41.2575"), confirmed_date=dt.date(2026, 5, 8),
                      confirmed_quantity=Decimal("250.000"), good_quantity=Decimal("120.000"),
                      scrap_quantity=Decimal("1.500")),
            OrderLine(line_no=20, material=Material(id="MAT-200"), quantity=Decimal("12.345"), unit="KGM"),
        ],
        created_at=dt.datetime(2026, 3, 1, 8, 0, 0, 1000, tzinfo=dt.UTC),
        updated_at=ACCEPTED,
    )


def _change() -> OrderChange:
    return OrderChange(
        record_id="chg-O-7f3a9c-v4",
        event_id="crm-evt-0001",
        order_id="O-7f3a9c",
        order_number="ORD-2026-03-000123",
        version=4,
        previous_version=3,
        base_version=3,
        outcome=ChangeOutcome.MERGED,
        source_system="CRM",
        actor=ALICE,
        occurred_at=OCCURRED,
        accepted_at=ACCEPTED,
        diffs=[FieldDiff(field="customer.name", before='"ACME GmbH"', after='"ACME Fräsen GmbH"'),
               FieldDiff(field="contact", before='"Jana Novák"', after=None)],
        external_refs_added=[CRM_REF],
    )


def _conflict() -> OrderConflict:
    return OrderConflict(
        record_id="cfl-crm-evt-0001",
        event_id="crm-evt-0001",
        order_id="O-7f3a9c",
        order_number="ORD-2026-03-000123",
        base_version=3,
        current_version=5,
        fields=[FieldConflict(
            field="requested_delivery", base_value='"2026-04-30"', current_value='"2026-05-15"',
            proposed_value='"2026-05-02"',
            current_writer=Writer(source_system="ERP", actor_id="erp-bot", version=5),
            proposed_writer=Writer(source_system="CRM", actor_id="alice@example.com", version=3),
            owner="ERP", policy=ConflictPolicy.OWNER_WINS, outcome=ConflictOutcome.CURRENT_KEPT)],
        parked=False,
        resulting_version=6,
        decided_at=ACCEPTED,
        proposal=_proposal(),
    )


def _rejection() -> OrderRejection:
    return OrderRejection(
        record_id="rej-crm-evt-0001",
        event_id="crm-evt-0001",
        order_id="O-7f3a9c",
        reason=RejectionReason.PERMISSION_DENIED,
        errors=[FieldError(field="amounts.net", rule="owner:ERP", message="CRM may not set amounts.net"),
                FieldError(field=None, rule="base_version", message="base version 9 is ahead of 4")],
        current_version=4,
        decided_at=ACCEPTED,
        proposal=_proposal(),
    )


def _release() -> OrderRelease:
    return OrderRelease(
        record_id="rel-O-7f3a9c-v6",
        event_id="erp-evt-0099",
        order_id="O-7f3a9c",
        order_number="ORD-2026-03-000123",
        version=6,
        priority=7,
        requested_delivery=dt.date(2026, 4, 30),
        plant="1010",
        instructions=[Instruction(key="packaging", text="EUR pallet, max 800 kg")],
        lines=[ReleaseLine(line_no=10, material_id="MAT-100", material_revision="C", quantity=Decimal("250.000"),
                           unit="C62"),
               ReleaseLine(line_no=20, material_id="MAT-200", quantity=Decimal("0.125"), unit="KGM")],
        released_at=ACCEPTED,
    )


def _answer() -> ProposalAnswer:
    return ProposalAnswer(
        record_id="erp-evt-0099:duplicate@3:812", event_id="erp-evt-0099", order_id="O-7f3a9c",
        order_number="ORD-2026-03-000123", source_system="ERP", outcome=ProposalOutcome.DUPLICATE,
        version=None, made_version=6, first_outcome=ProposalOutcome.MERGED,
        message="event id erp-evt-0099 was already decided as MERGED, making version 6", decided_at=ACCEPTED,
    )


def _alert() -> OrderAlert:
    return OrderAlert(
        record_id="O-7f3a9c:alert:due_soon:2026-04-30:1:raised", order_id="O-7f3a9c", order_number="ORD-2026-03-000123",
        version=6, kind="RAISED", stage="due_soon", notify="production_lead", due_date=dt.date(2026, 4, 30),
        occurrence=1, days_left=7, status="RELEASED", on_hold=False,
        reason="due 2026-04-30, in 7 days and production has not started (RELEASED)", decided_at=ACCEPTED,
    )


#: One realistic instance of every event type, by schema name.
EXAMPLES = {"order_snapshot": _snapshot, "change_proposal": _proposal, "order_change": _change,
            "order_conflict": _conflict, "order_rejection": _rejection, "order_release": _release,
            "proposal_answer": _answer, "order_alert": _alert}


def test_there_is_an_example_of_every_event_type() -> None:
    """The examples cover exactly the event types the hub defines, each built with its own model."""
    assert set(EXAMPLES) == set(EVENT_MODELS)
    for name, build in EXAMPLES.items():
        assert type(build()) is EVENT_MODELS[name]


def store_of(settings: Settings) -> SchemaStore:
    return SchemaStore.load(settings.schemas_dir)


def topics_carrying(settings: Settings, schema_name: str) -> list[str]:
    """Every topic topics.yaml declares with this value schema, in the settings' namespace."""
    declared = topics.load_declarations(settings.topics_file, settings.schemas_dir, settings.topic_namespace)
    names = [d.name for d in declared if d.value_schema == schema_name]
    assert names, f"topics.yaml declares no topic with value schema {schema_name}"
    return names


def message_key(event: _Event) -> bytes:
    """The string key topics.yaml declares: the hub order id, or the proposal's reference."""
    if isinstance(event, ChangeProposal):
        return event.order_ref.key.encode()
    return event.order_id.encode()


async def send_and_read_back(settings: Settings, event: _Event, encode) -> dict[str, list]:
    """Produce ``encode(event, topic)`` to every topic declared for the event; read one record back from each."""
    names = topics_carrying(settings, event.schema_name)
    now_ms = int(ACCEPTED.timestamp() * 1000)
    for topic in names:
        await produce(settings, topic, [(message_key(event), encode(event, topic), now_ms)])
    return await TopicReader(settings, names).until(lambda got: all(got[t] for t in names), timeout=30)


@pytest.mark.parametrize("schema_name", sorted(EXAMPLES))
async def test_single_object_encoded_event_round_trips_through_its_topic(hub_settings: Settings,
                                                                         schema_name: str) -> None:
    """An event written in single-object encoding to its declared topic reads back as an equal model."""
    original = EXAMPLES[schema_name]()
    codec = AvroCodec(store_of(hub_settings))

    records = await send_and_read_back(hub_settings, original,
                                       lambda event, topic: codec.encode(event.schema_name, event.to_avro()))

    for topic, batch in records.items():
        assert len(batch) == 1, topic
        record = batch[0]
        assert record.key == message_key(original)
        assert record.value[:2] == SINGLE_OBJECT_MAGIC
        decoded = codec.decode(record.value, topic=record.topic, partition=record.partition, offset=record.offset)
        assert (decoded.writer.name, decoded.schema_id) == (schema_name, None)
        back = type(original).from_avro(decoded.value)
        assert back == original
        # equal decimals can differ in scale; the JSON form compares the digits as written
        assert back.model_dump_json() == original.model_dump_json()


@pytest.mark.parametrize("schema_name", sorted(EXAMPLES))
async def test_confluent_framed_event_round_trips_through_its_topic(hub_settings: Settings, schema_name: str) -> None:
    """An event written in the Confluent wire format to its declared topic reads back, through the registry, as an equal model."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client = SchemaRegistryClient.new_client({"url": f"mock://{hub_settings.topic_namespace}"})
    writer = AvroCodec(store_of(hub_settings), ConfluentClientRegistry(client))
    # a separate reader: it must learn the writer schema from the registry, not from the writer's cache
    reader = AvroCodec(store_of(hub_settings), ConfluentClientRegistry(client))
    original = EXAMPLES[schema_name]()

    records = await send_and_read_back(
        hub_settings, original,
        lambda event, topic: writer.encode(event.schema_name, event.to_avro(), subject=f"{topic}-value"))

    for topic, batch in records.items():
        assert len(batch) == 1, topic
        record = batch[0]
        assert record.value[:1] == CONFLUENT_MAGIC
        schema_id = int.from_bytes(record.value[1:5], "big")
        assert client.get_latest_version(f"{topic}-value").schema_id == schema_id
        decoded = reader.decode(record.value, topic=record.topic, partition=record.partition, offset=record.offset)
        latest = store_of(hub_settings).latest(schema_name).version  # writers write the newest version
        assert (decoded.writer.name, decoded.writer.version, decoded.schema_id) == (schema_name, latest, schema_id)
        back = type(original).from_avro(decoded.value)
        assert back == original
        assert back.model_dump_json() == original.model_dump_json()


async def test_undecodable_record_names_its_topic_partition_and_offset(hub_settings: Settings) -> None:
    """Bytes on a declared topic that are no known record decode to UndecodableRecord naming topic, partition and offset."""
    codec = AvroCodec(store_of(hub_settings))
    topic = topics_carrying(hub_settings, "change_proposal")[0]
    good = _proposal()
    key = message_key(good)
    # same key, so the same partition: the garbage lands at offset 1, behind a readable record
    await produce(hub_settings, topic, [(key, codec.encode(good.schema_name, good.to_avro()), None),
                                        (key, b'{"order_id": "O-1", "priority": 9}', None)])

    records = await TopicReader(hub_settings, [topic]).until(lambda got: len(got[topic]) >= 2, timeout=30)

    readable, garbage = records[topic]
    assert ChangeProposal.from_avro(codec.decode(readable.value).value) == good
    with pytest.raises(UndecodableRecord) as caught:
        codec.decode(garbage.value, topic=garbage.topic, partition=garbage.partition, offset=garbage.offset)
    error = caught.value
    assert (error.topic, error.partition, error.offset) == (topic, readable.partition, 1)
    assert f"{topic}[{readable.partition}]@1" in str(error)
    assert "magic byte 0x7b" in error.reason
