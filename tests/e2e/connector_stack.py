"""What the connector fault tests start and read: a Kafka of a test's own, connector runtimes run
as tasks, the CRM sandbox's webhook (signed deliveries, the courier's acknowledgements), and the
hub's topics decoded.

Plain functions and context managers; the fixtures that use them are in
``test_connector_faults.py``. Every process is started through ``localdev`` (PID files) and
stopped by its PID; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, TypeVar

import httpx
from aiokafka.structs import ConsumerRecord

from connectors.crm import CrmConfig
from connectors.crm.client import OpportunityClient
from connectors.crm.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from connectors.erp import ErpConfig
from hub.events import ChangeProposal, ExternalRef, OrderChange, OrderSnapshot, ProposalAnswer
from hub.sdk import ConnectorRuntime
from hub.serde.store import SchemaStore
from hub.serde.wire import AvroCodec
from hub.settings import Settings
from hub.topics import TopicNames
from localdev import process
from localdev.sandboxes import sap
from localdev.sandboxes.salesforce import CrmSandbox, SalesDesk
from tests.integration.kafka_helpers import TopicReader

E = TypeVar("E")
T = TypeVar("T")
#: Decodes every topic the hub writes (single-object encoding: the schema files are enough).
CODEC = AvroCodec(SchemaStore.load(Settings().schemas_dir))


# --- a Kafka of the test's own --------------------------------------------------------------


def free_port_pair() -> int:
    """A port P on 127.0.0.1 where P and P+1 are both free: a local Kafka node serves clients on P
    and its controller on P+1 (``localdev.kafka``)."""
    while True:
        port = process.free_port()
        with socket.socket() as controller:
            try:
                controller.bind(("127.0.0.1", port + 1))
            except OSError:
                continue  # P+1 is taken: try another P
        return port


def own_kafka_settings(folder: Path) -> Settings:
    """Settings of a single-node Kafka of one test's own, its data under ``folder`` (kept across a
    ``down``/``up``), on free ports: never the shared broker other tests use."""
    port = free_port_pair()
    return Settings(state_dir=folder, local_kafka_port=port, bootstrap_servers=f"127.0.0.1:{port}")


# --- connector runtimes ---------------------------------------------------------------------


#: How long a stopped connector instance may take to end: the sink's batch in hand (``STOP_WAIT_S``,
#: an ERP call may be in its retries), then the consumers' and the producer's own bounded stops.
STOP_TIMEOUT_S = 120.0


@contextlib.asynccontextmanager
async def running(runtime: ConnectorRuntime) -> AsyncIterator[ConnectorRuntime]:
    """Run a connector instance as a task for the block; stop it after (a task that died of a bug
    raises here, unless the block is failing already). The stop is waited for with a deadline: a
    failing block must fail, not hang (a runtime stopped while its Kafka is down may not end)."""
    task = asyncio.create_task(runtime.run(), name=f"runtime {runtime.instance}")
    try:
        yield runtime
    except BaseException:
        runtime.stop()
        await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
        raise
    runtime.stop()
    done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
    assert done, f"the connector instance {runtime.instance} did not stop within {STOP_TIMEOUT_S:.0f}s; " \
                 f"where everything was:\n{stacks()}"
    task.result()


def stacks() -> str:
    """The stack of every task and thread, for a failure that must say where it hung."""
    import io
    import sys
    import traceback

    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=out)
    for ident, frame in sys._current_frames().items():
        out.write(f"thread {ident}:\n{''.join(traceback.format_stack(frame, limit=12))}")
    return out.getvalue()


def erp_config(url: str) -> ErpConfig:
    """The ERP connector on the mock-sap sandbox at ``url``, polling often (tests wait on it)."""
    return ErpConfig(service_url=url, user=sap.USER, password=sap.PASSWORD, poll_interval_s=0.5)


@dataclass(frozen=True)
class CrmPeer:
    """The Salesforce sandbox of one test and where its change events are pushed to."""

    #: The running sandbox.
    sandbox: CrmSandbox
    #: The port the CRM connector's webhook listens on (the sandbox pushes there).
    webhook_port: int
    #: The shared secret change events are signed with.
    secret: str

    @property
    def webhook_url(self) -> str:
        """The URL the sandbox's courier posts change events to."""
        return f"http://127.0.0.1:{self.webhook_port}/crm/events"

    def config(self) -> CrmConfig:
        """The CRM connector on this sandbox: change events by webhook; polling only as the
        recovery after a gap, so seldom that the webhook is what each test exercises."""
        return CrmConfig(instance_url=self.sandbox.instance_url, session_id=self.sandbox.session_id,
                         ca_file=self.sandbox.ca_file, webhook_secret=self.secret, webhook_port=self.webhook_port,
                         poll_interval_s=3600)

    def desk(self) -> SalesDesk:
        """The sales person's desk in the sandbox (close it after)."""
        return SalesDesk(self.sandbox.instance_url, self.sandbox.ca_file)

    def api(self) -> OpportunityClient:
        """The REST API as the hub's integration user sees it (close it after)."""
        return OpportunityClient(self.sandbox.instance_url, self.sandbox.session_id, ca_file=self.sandbox.ca_file)

    def acknowledged(self) -> int:
        """The replay id up to which the sandbox's courier had a 2xx from the connector's webhook."""
        tls = ssl.create_default_context(cafile=str(self.sandbox.ca_file))
        answer = httpx.get(f"{self.sandbox.instance_url}/sandbox/webhooks", verify=tls, timeout=10.0)
        answer.raise_for_status()
        return next(hook["delivered_through"] for hook in answer.json() if hook["url"] == self.webhook_url)


def opportunity_ref(opportunity_id: str) -> ExternalRef:
    """The cross-reference an order made from this opportunity carries."""
    return ExternalRef(system="CRM", object_type="Opportunity", external_id=opportunity_id)


def latest_replay_id(desk: SalesDesk) -> int:
    """The replay id of the org's newest change event (0 when there is none)."""
    events = desk.events(after=0)
    return events[-1]["event"]["replayId"] if events else 0


def won_event(desk: SalesDesk, opportunity_id: str) -> dict[str, Any]:
    """The change event of the save that won ``opportunity_id`` (its stage moved to a won one)."""
    wins = [event for event in desk.events(after=0)
            if event["payload"]["ChangeEventHeader"]["recordIds"] == [opportunity_id]
            and "StageName" in event["payload"]["ChangeEventHeader"]["changedFields"]]
    assert wins, f"no change event moved the stage of {opportunity_id}"
    return wins[-1]


async def deliver_signed(url: str, body: bytes, secret: str) -> httpx.Response:
    """POST ``body`` to a CRM webhook signed now, as the sandbox's courier signs every delivery."""
    stamp = int(dt.datetime.now(dt.UTC).timestamp())
    async with httpx.AsyncClient(timeout=30.0) as http:  # async: the webhook answers on this event loop
        return await http.post(url, content=body, headers={
            "Content-Type": "application/json", TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: signature(secret, stamp, body)})


# --- the hub's topics -------------------------------------------------------------------------


def decoded(records: list[ConsumerRecord], model: Callable[[dict[str, Any]], E]) -> list[E]:
    """The records' values as events (``OrderChange.from_avro``, ...)."""
    return [model(CODEC.decode(record.value).value) for record in records if record.value is not None]


async def read_until(settings: Settings, roles: list[str], condition: Callable[[dict[str, list[ConsumerRecord]]], bool],
                     timeout: float = 90) -> dict[str, list[ConsumerRecord]]:
    """Read the hub's topics of these roles (``TopicNames`` fields) from the start until
    ``condition(records by role)`` holds; AssertionError after ``timeout`` seconds."""
    names = TopicNames.of(settings)
    topics = {getattr(names, role): role for role in roles}

    def by_role(records: dict[str, list[ConsumerRecord]]) -> dict[str, list[ConsumerRecord]]:
        return {topics[topic]: found for topic, found in records.items()}

    records = await TopicReader(settings, list(topics)).until(lambda found: condition(by_role(found)), timeout)
    return by_role(records)


async def dead_letter(settings: Settings, matches: Callable[[ConsumerRecord], bool],
                      timeout: float = 60) -> ConsumerRecord:
    """The first record on the dead-letter topic that ``matches``, waiting for it."""
    found = await read_until(settings, ["dead_letters"],
                             lambda records: any(map(matches, records["dead_letters"])), timeout)
    return next(record for record in found["dead_letters"] if matches(record))


def why(letter: ConsumerRecord) -> dict[str, str]:
    """A dead letter's ``__orderhub.errors.*`` headers, as text."""
    return {key: value.decode() for key, value in letter.headers if key.startswith("__orderhub.errors.")}


def changes_of(records: list[ConsumerRecord], order_id: str) -> list[OrderChange]:
    """The change records of ``order_id`` among ``records`` (read off the changes topic)."""
    return [change for change in decoded(records, OrderChange.from_avro) if change.order_id == order_id]


async def order_changes(settings: Settings, order_id: str, version: int, timeout: float = 90) -> list[OrderChange]:
    """Every change of ``order_id`` on the changes topic, once version ``version`` is there, each once:
    a worker that restarts re-emits what it decided after its last commit, identically, under the same
    record id (at least once; consumers dedup by record id)."""
    found = await read_until(settings, ["changes"],
                             lambda records: any(c.version >= version for c in changes_of(records["changes"], order_id)),
                             timeout)
    once: dict[str, OrderChange] = {}
    for change in changes_of(found["changes"], order_id):
        assert once.setdefault(change.record_id, change) == change, f"{change.record_id} re-emitted otherwise"
    return list(once.values())


def answers(records: list[ConsumerRecord]) -> list[ProposalAnswer]:
    """The proposal answers among ``records``."""
    return decoded(records, ProposalAnswer.from_avro)


def proposals(records: list[ConsumerRecord]) -> list[ChangeProposal]:
    """The change proposals among ``records``."""
    return decoded(records, ChangeProposal.from_avro)


def snapshots(records: list[ConsumerRecord]) -> list[OrderSnapshot]:
    """The order snapshots among ``records`` (tombstones left out)."""
    return decoded(records, OrderSnapshot.from_avro)
