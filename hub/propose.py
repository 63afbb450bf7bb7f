"""``orderhub propose``: hand the hub one change proposal from a JSON file and print its decision.

For people trying the hub, and for scripts, before a connector exists for their system. The
file is the ``ChangeProposal`` event in JSON, with two conveniences: ``event_id`` and
``occurred_at`` may be left out (a new id, now), and ``changes`` may be a mapping of field path
to plain value instead of the wire's list of ``{field, value}`` pairs with canonical JSON text::

    {
      "order_ref": {"external": {"system": "CRM", "object_type": "Opportunity", "external_id": "OPP-4711"}},
      "intent": "CREATE",
      "source_system": "CRM",
      "actor": {"id": "anna", "role": "sales"},
      "changes": {"customer.id": "C-100", "lines.10.quantity": "5", ...}
    }

The proposal goes to the proposals topic like any connector's, keyed by ``OrderRef.key``; the
command then reads the decision topics from where they ended before the send until the
decision for its event id arrives: created/applied/merged/resolved, a conflict (kept or parked),
or a rejection with every field error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from hub.domain.fields import canonical_json
from hub.errors import BrokerUnavailable, InvalidInput
from hub.events import ChangeProposal
from hub.readmodel import diff_text
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec, registry_from_settings
from hub.settings import Settings
from hub.streams.core import TopicNames


def load_proposal(text: str, now: dt.datetime | None = None) -> ChangeProposal:
    """A ``ChangeProposal`` from the JSON a person wrote; ``InvalidInput`` says what is wrong."""
    try:
        doc = json.loads(text, object_pairs_hook=_refuse_repeated_keys)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the proposal is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the proposal must be a JSON object")
    doc.setdefault("event_id", str(uuid.uuid4()))
    doc.setdefault("occurred_at", (now or dt.datetime.now(dt.timezone.utc)).isoformat())
    doc.setdefault("base_version", 0)
    if isinstance(doc.get("changes"), dict):
        doc["changes"] = [{"field": path, "value": canonical_json(value)} for path, value in doc["changes"].items()]
    try:
        proposal = ChangeProposal.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"not a change proposal: {problems}") from None
    if proposal.order_ref.key is None:
        raise InvalidInput("order_ref names no order: give order_id or an external reference")
    return proposal


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if repeated := sorted({key for key in keys if keys.count(key) > 1}):
        raise InvalidInput(f"the proposal names {', '.join(repeated)} more than once in one object")
    return dict(pairs)


@dataclass
class Outcome:
    """The hub's answer to one proposal: its records on the decision topics, by topic."""

    topics: TopicNames
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every record of the answer is here (a conflict decided into a new version comes with its change)."""
        conflict = self.records.get(self.topics.conflicts)
        if conflict is not None and conflict["resulting_version"] is not None:
            return self.topics.changes in self.records
        return bool(self.records)

    @property
    def accepted(self) -> bool:
        """The proposal made a new version."""
        return self.topics.changes in self.records

    def text(self) -> str:
        """For a person: what happened, then the fields it happened to."""
        lines = []
        if (r := self.records.get(self.topics.changes)) is not None:
            lines.append(f"{r['outcome']}: {r['order_number']} version {r['version']} (order id {r['order_id']})")
            lines += [f"  {diff_text(d)}" for d in r["diffs"]]
            lines += [f"  + cross-reference {x['system']}/{x['object_type']}/{x['external_id']}"
                      for x in r["external_refs_added"]]
        if (r := self.records.get(self.topics.conflicts)) is not None:
            what = "PARKED for a person" if r["parked"] else "CONFLICT"
            lines.append(f"{what}: {r['order_number']} (base version {r['base_version']}, current {r['current_version']})")
            lines += [f"  {f['field']}: {f['outcome']} by {f['policy']} (current {f['current_value']}, "
                      f"proposed {f['proposed_value']})" for f in r["fields"]]
        if (r := self.records.get(self.topics.rejections)) is not None:
            lines.append(f"REJECTED {r['reason']}" + (f": order id {r['order_id']}" if r["order_id"] else ""))
            lines += [f"  {_error_text(e)} [{e['rule']}]" for e in r["errors"]]
        return "\n".join(lines)


def _error_text(error: dict[str, Any]) -> str:
    field, message = error["field"], error["message"]
    if field is None:
        return f"(proposal): {message}"
    return message if message.startswith(f"{field}: ") else f"{field}: {message}"


async def propose(settings: Settings, proposal: ChangeProposal, *, wait_s: float | None = 30.0) -> Outcome | None:
    """Send the proposal; with ``wait_s``, return the decision for its event id (``BrokerUnavailable`` if none comes)."""
    topics = TopicNames.in_namespace(settings.topic_namespace)
    codec = AvroCodec(SchemaStore.load(settings.schemas_dir), registry_from_settings(settings))
    decided_on = [topics.changes, topics.conflicts, topics.rejections]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True)
    try:
        await consumer.start()
        await producer.start()
        if wait_s is not None:  # read from where the decision topics end now: older answers are not ours
            existing = await consumer.topics()
            if not set(decided_on) <= existing:
                raise BrokerUnavailable(f"the decision topics {decided_on} do not all exist: run `orderhub topics apply`")
            partitions = [TopicPartition(t, p) for t in decided_on for p in sorted(await producer.partitions_for(t))]
            consumer.assign(partitions)
            for tp, end in (await consumer.end_offsets(partitions)).items():
                consumer.seek(tp, end)
        await producer.send_and_wait(topics.proposals, codec.encode("change_proposal", proposal.to_avro()),
                                     key=proposal.order_ref.key.encode())
        if wait_s is None:
            return None
        outcome = Outcome(topics)
        deadline = time.monotonic() + wait_s
        while not outcome.complete and time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                for message in batch:
                    record = codec.decode(message.value, topic=message.topic, partition=message.partition,
                                          offset=message.offset).value
                    if record.get("event_id") == proposal.event_id:
                        outcome.records[tp.topic] = record
        if outcome.complete:
            return outcome
        raise BrokerUnavailable(
            f"sent {proposal.event_id}, but no decision arrived within {wait_s:g}s: is a worker running "
            "(`orderhub run` or `orderhub worker`)? An event id decided long ago is a duplicate and answers nothing new")
    finally:
        await producer.stop()
        await consumer.stop()


def propose_file(settings: Settings, path: str, *, wait_s: float | None) -> int:
    """The command: load ``path`` (``-``: standard input), send it, print the outcome; 0 if it made a version."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the proposal: {exc}") from None
    proposal = load_proposal(text)
    outcome = asyncio.run(propose(settings, proposal, wait_s=wait_s))
    if outcome is None:
        print(f"sent {proposal.event_id} (key {proposal.order_ref.key})")
        return 0
    print(outcome.text())
    return 0 if outcome.accepted else 1
