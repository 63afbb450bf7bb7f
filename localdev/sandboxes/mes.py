"""The sandbox MES: a real OPC UA server with the OPC Foundation's ISA-95 Job Control model,
and a shop floor that reports progress and quality over MQTT (through Mosquitto).

The server (asyncua) imports ``opcua/opc.ua.isa95-jobcontrol.nodeset2.xml`` and creates under
Objects (namespace ``urn:orderhub:sandbox:mes``):

- ``JobOrderReceiver`` (ISA95JobOrderReceiverObjectType) with working Store, StoreAndStart,
  Update, Start, RevokeStart, Pause, Resume, Stop, Abort, Cancel and Clear, and its
  ``JobOrderList`` (ISA95JobOrderAndStateDataType[]) rewritten on every change, so clients can
  read it or subscribe to it;
- ``JobResponseProvider`` (ISA95JobResponseProviderObjectType) whose ``JobOrderResponseList``
  has one ISA95JobResponseDataType per job order that has started, with its actual start and
  end time (written before ``JobOrderList``, so a reader of both sees them agree);
- ``ShopFloorTerminal``, this sandbox's own object with ``BeginExecution(JobOrderID, Comment)
  -> ReturnStatus``: an operator starting a job. The standard has no method for that transition
  (AllowedToStart -> Running happens inside the MES), so the sandbox exposes one.

The job order state machine, as the nodeset's transitions define it (per job order)::

    Store -> NotAllowedToStart --Start--> AllowedToStart --(BeginExecution)--> Running
             NotAllowedToStart <--RevokeStart-- AllowedToStart;  StoreAndStart -> AllowedToStart
    Running --Pause--> Interrupted --Resume--> Running;  Running|Interrupted --Stop--> Ended
    any of the four above --Abort--> Aborted
    NotAllowedToStart|AllowedToStart --Cancel--> removed;  Ended|Aborted --Clear--> removed
    NotAllowedToStart|AllowedToStart --Update--> the same state, new content

So a stored job order becomes executable by Start (the hub, a planner) or by StoreAndStart, and
runs when the shop floor begins it. Refusals answer the method's ReturnStatus (Annex B.2 bits,
see ``connectors.mes.opcua.ReturnStatus``) with an Uncertain call status, as the standard asks:
unknown id -> UNKNOWN_JOB_ORDER_ID; illegal transition -> INVALID_JOB_ORDER_STATUS; a JobOrderID
already stored, or the store full -> UNABLE_TO_ACCEPT_JOB_ORDER (plus JOB_ORDER_ID_EXISTS for
the former); a malformed argument -> INVALID_REQUEST.

Stored job orders survive a restart: every change is written to ``<state_dir>/mes/jobs.json``
(each job order in OPC UA binary encoding, base64, beside a readable summary) before the
method answers.

``--auto-seconds S`` makes the sandbox run every stored job order itself, deterministically:
S seconds after it is stored it is started (Start if needed, then BeginExecution), after
another S it reports half the quantity good, after another S all of it (MQTT, when a broker
port is given), and after another S it is stopped (Ended). A job someone else moves meanwhile
(paused, aborted, cancelled) is left alone from then on.

``ShopFloor`` is the operator's side for tests and demos: begin, pause, resume and finish jobs
over OPC UA, and report good/scrap quantities and quality holds over MQTT.

Layout::

    <state_dir>/mes/mes.pid     the server's PID (up/down)
    <state_dir>/mes/mes.json    how it was started (port, MQTT port, auto seconds)
    <state_dir>/mes/mes.log     its output
    <state_dir>/mes/jobs.json   the stored job orders
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import aiomqtt
from asyncua import Node, Server, ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from connectors.mes.mapping import JobState
from connectors.mes.mqtt import (
    DEFAULT_PLANT, ProgressReport, QualityReport, SequenceClock, ShopFloorReport, encode_message, observed_now,
)
from connectors.mes.opcua import (
    ISA95_NAMESPACE, RECEIVER_TYPE, RESPONSE_PROVIDER_TYPE, JobOrderReceiverClient, JobOrderRefused, MesModelError,
    ReturnStatus, call_with_return_status, comment_variant, isa95_type, job_order_from_ua, state_to_ua,
    translated_errors,
)
from hub.errors import ConfigError
from hub.settings import PROJECT_DIR
from localdev import process

log = logging.getLogger(__name__)

NODESET = Path(__file__).parent / "opcua" / "opc.ua.isa95-jobcontrol.nodeset2.xml"
SANDBOX_NAMESPACE = "urn:orderhub:sandbox:mes"
RECEIVER_NAME = "JobOrderReceiver"
RESPONSE_PROVIDER_NAME = "JobResponseProvider"
TERMINAL_NAME = "ShopFloorTerminal"
BEGIN_EXECUTION = "BeginExecution"
MAX_JOB_ORDERS = 1000  # the receiver's MaxDownloadableJobOrders
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
MQTT_HOST = "127.0.0.1"

_NAS, _ATS, _RUN, _INT, _END, _ABT = (JobState.NOT_ALLOWED_TO_START, JobState.ALLOWED_TO_START, JobState.RUNNING,
                                      JobState.INTERRUPTED, JobState.ENDED, JobState.ABORTED)
#: Each command's transitions, from state -> to state; None: the job order is removed.
TRANSITIONS: dict[str, dict[JobState, JobState | None]] = {
    "Start": {_NAS: _ATS},
    "RevokeStart": {_ATS: _NAS},
    "Pause": {_RUN: _INT},
    "Resume": {_INT: _RUN},
    "Stop": {_RUN: _END, _INT: _END},
    "Abort": {_NAS: _ABT, _ATS: _ABT, _RUN: _ABT, _INT: _ABT},
    "Cancel": {_NAS: None, _ATS: None},
    "Clear": {_END: None, _ABT: None},
    BEGIN_EXECUTION: {_ATS: _RUN},  # the nodeset's FromAllowedToStartToRunning: execution begins
}
UPDATABLE = frozenset({_NAS, _ATS})


# --- the job orders and their state machine ----------------------------------------------


@dataclass
class JobRecord:
    """One stored job order: the ISA95JobOrderDataType as received, its state, and when it ran."""

    job: Any
    state: JobState
    stored_at: dt.datetime
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None

    @property
    def job_order_id(self) -> str:
        """The job order's id."""
        return self.job.JobOrderID


class JobBook:
    """The stored job orders, the state machine over them, and their file (written on every change)."""

    def __init__(self, path: Path, capacity: int = MAX_JOB_ORDERS) -> None:
        self.path = path
        self.capacity = capacity
        self._records: dict[str, JobRecord] = {}

    def load(self) -> None:
        """Read the job orders stored before (none when there is no file yet)."""
        if not self.path.exists():
            return
        doc = json.loads(self.path.read_text())
        job_type = isa95_type("ISA95JobOrderDataType")
        for item in doc["jobs"]:
            job = struct_from_binary(job_type, Buffer(base64.b64decode(item["job_order"])))
            self._records[job.JobOrderID] = JobRecord(job, JobState(item["state"]), _time(item["stored_at"]),
                                                      _time(item.get("started_at")), _time(item.get("ended_at")))

    def records(self) -> list[JobRecord]:
        """Every stored job order, in the order they were stored."""
        return list(self._records.values())

    def get(self, job_order_id: str) -> JobRecord | None:
        """The job order with this id, or None."""
        return self._records.get(job_order_id)

    def store(self, job: Any, *, start: bool, now: dt.datetime) -> ReturnStatus:
        """Store a new job order in NotAllowedToStart (``start``: AllowedToStart); an existing id is refused."""
        if (invalid := _invalid_job(job)) is not None:
            return invalid
        if job.JobOrderID in self._records:
            return ReturnStatus.UNABLE_TO_ACCEPT_JOB_ORDER | ReturnStatus.JOB_ORDER_ID_EXISTS
        if len(self._records) >= self.capacity:
            return ReturnStatus.UNABLE_TO_ACCEPT_JOB_ORDER
        self._records[job.JobOrderID] = JobRecord(job, _ATS if start else _NAS, now)
        self._save()
        return ReturnStatus.NO_ERROR

    def update(self, job: Any) -> ReturnStatus:
        """Replace the content of a job order that has not started."""
        if (invalid := _invalid_job(job)) is not None:
            return invalid
        record = self._records.get(job.JobOrderID)
        if record is None:
            return ReturnStatus.UNKNOWN_JOB_ORDER_ID
        if record.state not in UPDATABLE:
            return ReturnStatus.INVALID_JOB_ORDER_STATUS
        record.job = job
        self._save()
        return ReturnStatus.NO_ERROR

    def command(self, method: str, job_order_id: Any, *, now: dt.datetime) -> ReturnStatus:
        """Apply one command of ``TRANSITIONS`` to a job order, if its state allows it."""
        if not isinstance(job_order_id, str) or not job_order_id:
            return ReturnStatus.INVALID_REQUEST
        record = self._records.get(job_order_id)
        if record is None:
            return ReturnStatus.UNKNOWN_JOB_ORDER_ID
        allowed = TRANSITIONS[method]
        if record.state not in allowed:
            return ReturnStatus.INVALID_JOB_ORDER_STATUS
        target = allowed[record.state]
        if target is None:
            del self._records[job_order_id]
        else:
            record.state = target
            if target is _RUN and record.started_at is None:
                record.started_at = now
            if target in (_END, _ABT):
                record.ended_at = now
        self._save()
        return ReturnStatus.NO_ERROR

    def _save(self) -> None:
        doc = {"format": 1, "jobs": [_record_json(record) for record in self._records.values()]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.path)  # a crash mid-write leaves the previous file whole


def _invalid_job(job: Any) -> ReturnStatus | None:
    if not isinstance(job, isa95_type("ISA95JobOrderDataType")):
        return ReturnStatus.INVALID_REQUEST
    job_id = job.JobOrderID
    # The id is an MQTT topic segment on this shop floor: no "/", "+" or "#".
    if not isinstance(job_id, str) or not job_id.strip() or any(c in job_id for c in "/+#"):
        return ReturnStatus.INVALID_REQUEST
    return None


def _record_json(record: JobRecord) -> dict[str, Any]:
    job = job_order_from_ua(record.job)
    return {
        "job_order_id": record.job_order_id, "state": record.state.value, "stored_at": record.stored_at.isoformat(),
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "summary": None if job is None else {"order_number": job.order_number, "line_no": job.line_no,
                                             "material": job.material_id, "quantity": str(job.quantity),
                                             "unit": job.unit, "priority": job.priority},
        "job_order": base64.b64encode(struct_to_binary(record.job)).decode("ascii"),
    }


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --- the OPC UA server ----------------------------------------------------------------------


def _answer(status: ReturnStatus) -> ua.CallMethodResult:
    """A job-order method's result: Good with "no error", else Uncertain with the bits (Annex B.2)."""
    code = ua.StatusCodes.Good if status.ok else ua.StatusCodes.Uncertain
    return ua.CallMethodResult(StatusCode=ua.StatusCode(code),
                               OutputArguments=[ua.Variant(int(status), ua.VariantType.UInt64)])


def _argument(name: str, data_type: int, *, array: bool = False, description: str = "") -> ua.Argument:
    return ua.Argument(Name=name, DataType=ua.NodeId(data_type), ValueRank=1 if array else -1,
                       ArrayDimensions=[0] if array else [], Description=ua.LocalizedText(description))


class SandboxMes:
    """The OPC UA server of the sandbox MES, its job book, and (optionally) its automatic shop floor."""

    def __init__(self, folder: Path, *, mqtt_port: int | None = None, auto_seconds: float | None = None) -> None:
        self.folder = folder
        self.mqtt_port = mqtt_port
        self.auto_seconds = auto_seconds
        self.book = JobBook(folder / "jobs.json")
        self._server: Server | None = None
        self._job_list: Node | None = None
        self._response_list: Node | None = None
        self._auto_tasks: dict[str, asyncio.Task[None]] = {}
        self._clock = SequenceClock()
        self._lock = asyncio.Lock()  # one change at a time: the lists are written in the order changes happen

    async def start(self, port: int) -> None:
        """Build the address space, load the stored job orders, and listen on 127.0.0.1:``port``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        server = Server()
        await server.init()
        server.set_endpoint(url(port))
        server.set_server_name("orderhub sandbox MES")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        await server.import_xml(str(NODESET))
        await server.load_data_type_definitions()
        isa95 = await server.get_namespace_index(ISA95_NAMESPACE)
        own = await server.register_namespace(SANDBOX_NAMESPACE)
        objects = server.nodes.objects
        receiver = await objects.add_object(own, RECEIVER_NAME, ua.NodeId(RECEIVER_TYPE, isa95))
        provider = await objects.add_object(own, RESPONSE_PROVIDER_NAME, ua.NodeId(RESPONSE_PROVIDER_TYPE, isa95))
        self._job_list = await receiver.get_child(f"{isa95}:JobOrderList")
        self._response_list = await provider.get_child(f"{isa95}:JobOrderResponseList")
        await (await receiver.get_child(f"{isa95}:MaxDownloadableJobOrders")).write_value(
            ua.Variant(MAX_JOB_ORDERS, ua.VariantType.UInt16))
        await self._link_receiver(server, receiver, isa95)
        await self._link_provider(server, provider, isa95)
        terminal = await objects.add_object(own, TERMINAL_NAME)
        await terminal.add_method(
            own, BEGIN_EXECUTION, self._command_method(BEGIN_EXECUTION),
            [_argument("JobOrderID", ua.ObjectIds.String, description="The job order the operator starts."),
             _argument("Comment", ua.ObjectIds.LocalizedText, array=True)],
            [_argument("ReturnStatus", ua.ObjectIds.UInt64, description="ISA-95 Annex B.2 bit map.")])
        self.book.load()
        await self._publish_lists()
        await server.start()
        self._server = server
        for record in self.book.records():
            self._schedule_auto(record.job_order_id)

    async def stop(self) -> None:
        """Stop the automatic shop floor and the server."""
        for task in self._auto_tasks.values():
            task.cancel()
        await asyncio.gather(*self._auto_tasks.values(), return_exceptions=True)
        if self._server is not None:
            await self._server.stop()

    async def _link_receiver(self, server: Server, receiver: Node, isa95: int) -> None:
        for name in TRANSITIONS:
            if name != BEGIN_EXECUTION:
                server.link_method(await receiver.get_child(f"{isa95}:{name}"), self._command_method(name))
        server.link_method(await receiver.get_child(f"{isa95}:Store"), self._store_method(start=False))
        server.link_method(await receiver.get_child(f"{isa95}:StoreAndStart"), self._store_method(start=True))
        server.link_method(await receiver.get_child(f"{isa95}:Update"), self._update_method())

    async def _link_provider(self, server: Server, provider: Node, isa95: int) -> None:
        async def by_id(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
            job_id = args[0].Value if args else None
            record = self.book.get(job_id) if isinstance(job_id, str) else None
            response = self._job_response(record) if record is not None and record.started_at else None
            status = ReturnStatus.NO_ERROR if response is not None else ReturnStatus.UNKNOWN_JOB_ORDER_ID
            empty = isa95_type("ISA95JobResponseDataType")(JobResponseID="", JobOrderID=job_id or "", JobState=[])
            return ua.CallMethodResult(
                StatusCode=ua.StatusCode(ua.StatusCodes.Good if status.ok else ua.StatusCodes.Uncertain),
                OutputArguments=[ua.Variant(response or empty, ua.VariantType.ExtensionObject),
                                 ua.Variant(int(status), ua.VariantType.UInt64)])

        server.link_method(await provider.get_child(f"{isa95}:RequestJobResponseByJobOrderID"), by_id)

    def _store_method(self, *, start: bool) -> Callable[..., Awaitable[ua.CallMethodResult]]:
        async def store(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
            job = args[0].Value if args else None
            async with self._lock:
                status = self.book.store(job, start=start, now=_now())
                if status.ok:
                    await self._publish_lists()
            self._log_call("StoreAndStart" if start else "Store", getattr(job, "JobOrderID", None), status)
            if status.ok:
                self._schedule_auto(job.JobOrderID)
            return _answer(status)
        return store

    def _update_method(self) -> Callable[..., Awaitable[ua.CallMethodResult]]:
        async def update(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
            job = args[0].Value if args else None
            async with self._lock:
                status = self.book.update(job)
                if status.ok:
                    await self._publish_lists()
            self._log_call("Update", getattr(job, "JobOrderID", None), status)
            return _answer(status)
        return update

    def _command_method(self, name: str) -> Callable[..., Awaitable[ua.CallMethodResult]]:
        async def command(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
            job_id = args[0].Value if args else None
            return _answer(await self.apply(name, job_id))
        return command

    async def apply(self, name: str, job_order_id: Any) -> ReturnStatus:
        """Apply one command to a job order and publish the lists; its ReturnStatus."""
        async with self._lock:
            status = self.book.command(name, job_order_id, now=_now())
            if status.ok:
                await self._publish_lists()
        self._log_call(name, job_order_id, status)
        return status

    async def _publish_lists(self) -> None:
        records = self.book.records()
        responses = [self._job_response(r) for r in records if r.started_at is not None]
        await self._response_list.write_value(ua.Variant(responses, ua.VariantType.ExtensionObject))
        and_state = isa95_type("ISA95JobOrderAndStateDataType")
        entries = [and_state(JobOrder=r.job, State=state_to_ua(r.state)) for r in records]
        await self._job_list.write_value(ua.Variant(entries, ua.VariantType.ExtensionObject))

    @staticmethod
    def _job_response(record: JobRecord) -> Any:
        return isa95_type("ISA95JobResponseDataType")(
            JobResponseID=f"{record.job_order_id}.response", JobOrderID=record.job_order_id,
            StartTime=record.started_at, EndTime=record.ended_at, JobState=state_to_ua(record.state))

    @staticmethod
    def _log_call(name: str, job_order_id: Any, status: ReturnStatus) -> None:
        log.info("%s %s -> %s", name, job_order_id, status.text())

    # --- the automatic shop floor (demo) ---------------------------------------------------

    def _schedule_auto(self, job_order_id: str) -> None:
        record = self.book.get(job_order_id)
        if self.auto_seconds is None or record is None or record.state not in (_NAS, _ATS, _RUN):
            return
        if job_order_id not in self._auto_tasks or self._auto_tasks[job_order_id].done():
            self._auto_tasks[job_order_id] = asyncio.create_task(self._auto_run(job_order_id))

    async def _auto_run(self, job_order_id: str) -> None:
        """Start, report twice and end one job order, S seconds apart (a timed simulation, on purpose)."""
        pause = self.auto_seconds or 0.0
        await asyncio.sleep(pause)
        if self._state(job_order_id) is _NAS and not (await self.apply("Start", job_order_id)).ok:
            return
        if self._state(job_order_id) is _ATS and not (await self.apply(BEGIN_EXECUTION, job_order_id)).ok:
            return
        record = self.book.get(job_order_id)
        job = job_order_from_ua(record.job) if record is not None else None
        if job is not None:
            half = (job.quantity / 2).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
            for good in (half, job.quantity):
                await asyncio.sleep(pause)
                if self._state(job_order_id) is not _RUN:
                    return  # someone else is steering this job now
                await self._publish_report(ProgressReport(job.plant or DEFAULT_PLANT, job_order_id,
                                                          self._clock.next(job_order_id), observed_now(), good,
                                                          Decimal(0), job.unit))
        await asyncio.sleep(pause)
        if self._state(job_order_id) is _RUN:
            await self.apply("Stop", job_order_id)

    def _state(self, job_order_id: str) -> JobState | None:
        record = self.book.get(job_order_id)
        return record.state if record is not None else None

    async def _publish_report(self, report: ShopFloorReport) -> None:
        if self.mqtt_port is None:
            return
        topic, payload = encode_message(report)
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(5), wait=wait_fixed(0.5), reraise=True,
                                               retry=retry_if_exception_type(aiomqtt.MqttError)):
                with attempt:
                    async with aiomqtt.Client(MQTT_HOST, self.mqtt_port) as client:
                        await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as exc:  # the demo goes on; the next (cumulative) report makes up for it
            log.warning("could not publish %s: %s", topic, exc)


async def serve(state_dir: Path, port: int, *, mqtt_port: int | None, auto_seconds: float | None) -> None:
    """Run the sandbox MES until SIGTERM or SIGINT."""
    mes = SandboxMes(state_dir / "mes", mqtt_port=mqtt_port, auto_seconds=auto_seconds)
    await mes.start(port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("sandbox MES listening on %s", url(port))
    await stopping.wait()
    await mes.stop()


# --- the shop floor (operator side) -----------------------------------------------------------


class ShopFloor:
    """An operator's terminal: begins and ends jobs over OPC UA, reports quantities and holds over MQTT.

    Use ``async with ShopFloor(opc_url, mqtt_host, mqtt_port) as floor``. The plant in the MQTT
    topics is ``plant`` when given, else the job order's plant, else ``DEFAULT_PLANT``.
    """

    def __init__(self, opc_url: str, mqtt_host: str, mqtt_port: int, *, plant: str | None = None) -> None:
        self._opc = JobOrderReceiverClient(opc_url)
        self._mqtt = aiomqtt.Client(mqtt_host, mqtt_port)
        self._plant = plant
        self._clock = SequenceClock()
        self._terminal: Node | None = None
        self._begin: Node | None = None

    async def __aenter__(self) -> "ShopFloor":
        await self._opc.__aenter__()
        try:
            await self._find_terminal()
            await self._mqtt.__aenter__()
        except BaseException:
            await self._opc.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._mqtt.__aexit__(*exc_info)
        finally:
            await self._opc.__aexit__(*exc_info)

    async def _find_terminal(self) -> None:
        client = self._opc.asyncua
        async with translated_errors("finding the shop floor terminal"):
            try:
                own = await client.get_namespace_index(SANDBOX_NAMESPACE)
            except ValueError:
                raise MesModelError(f"{self._opc.url} is not the sandbox MES: no {SANDBOX_NAMESPACE}") from None
            self._terminal = await client.nodes.objects.get_child(f"{own}:{TERMINAL_NAME}")
            self._begin = await self._terminal.get_child(f"{own}:{BEGIN_EXECUTION}")

    async def start(self, job_order_id: str, *, comment: str | None = None) -> None:
        """Begin executing a job order: AllowedToStart -> Running (``JobOrderRefused`` from any other state)."""
        async with translated_errors(f"beginning {job_order_id}"):
            status = await call_with_return_status(self._terminal, self._begin,
                                                   ua.Variant(job_order_id, ua.VariantType.String),
                                                   comment_variant(comment))
        if not status.ok:
            raise JobOrderRefused(BEGIN_EXECUTION, job_order_id, status)

    async def pause(self, job_order_id: str, *, comment: str | None = None) -> None:
        """Interrupt a running job order (Pause)."""
        await self._opc.command("Pause", job_order_id, comment=comment)

    async def resume(self, job_order_id: str, *, comment: str | None = None) -> None:
        """Continue an interrupted job order (Resume)."""
        await self._opc.command("Resume", job_order_id, comment=comment)

    async def finish(self, job_order_id: str, *, comment: str | None = None) -> None:
        """End a running or interrupted job order (Stop -> Ended)."""
        await self._opc.command("Stop", job_order_id, comment=comment)

    async def report(self, job_order_id: str, good: Decimal, scrap: Decimal, unit: str) -> ProgressReport:
        """Publish the job's cumulative good and scrap quantities; the report sent."""
        plant = await self._plant_of(job_order_id)
        report = ProgressReport(plant, job_order_id, self._clock.next(job_order_id), observed_now(), Decimal(good),
                                Decimal(scrap), unit)
        await self._publish(report)
        return report

    async def hold(self, job_order_id: str, reason: str) -> QualityReport:
        """Publish a quality hold on the job; the report sent."""
        return await self._quality(job_order_id, True, reason)

    async def release_hold(self, job_order_id: str, reason: str | None = None) -> QualityReport:
        """Publish the lifting of the job's quality hold; the report sent."""
        return await self._quality(job_order_id, False, reason)

    async def _quality(self, job_order_id: str, on_hold: bool, reason: str | None) -> QualityReport:
        plant = await self._plant_of(job_order_id)
        report = QualityReport(plant, job_order_id, self._clock.next(job_order_id), observed_now(), on_hold, reason)
        await self._publish(report)
        return report

    async def _plant_of(self, job_order_id: str) -> str:
        job = await self._opc.find(job_order_id)
        if job is None:  # a terminal only reports on job orders the MES has
            raise JobOrderRefused("report", job_order_id, ReturnStatus.UNKNOWN_JOB_ORDER_ID)
        return self._plant or job.job.plant or DEFAULT_PLANT

    async def _publish(self, report: ShopFloorReport) -> None:
        topic, payload = encode_message(report)
        await self._mqtt.publish(topic, payload, qos=1)


# --- process management -----------------------------------------------------------------------


def url(port: int) -> str:
    """The opc.tcp URL of a sandbox MES on ``port``."""
    return f"opc.tcp://127.0.0.1:{port}"


def _folder(state_dir: Path) -> Path:
    return Path(state_dir) / "mes"


def up(state_dir: Path, port: int, *, mqtt_port: int | None = None, auto_seconds: float | None = None) -> str:
    """Start the sandbox MES unless it runs on ``state_dir`` already; return its opc.tcp URL.

    A sandbox already running there is kept, with the port and options it was started with.
    """
    folder = _folder(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    marker = str(Path(state_dir).resolve())
    if (pid := process.recorded_pid(folder / "mes.pid", marker=marker)) is not None:
        running_port = _started_with(folder).get("port", port)
        process.wait_answering(pid, running_port, folder / "mes.log", "sandbox MES", START_TIMEOUT)
        return url(running_port)
    if process.answers(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is taken by a process that is not this sandbox MES")
    (folder / "mes.json").write_text(json.dumps({"port": port, "mqtt_port": mqtt_port, "auto_seconds": auto_seconds}))
    cmd = [sys.executable, "-m", "localdev.sandboxes.mes", "serve", "--state-dir", marker, "--port", str(port)]
    cmd += ["--mqtt-port", str(mqtt_port)] if mqtt_port is not None else []
    cmd += ["--auto-seconds", str(auto_seconds)] if auto_seconds is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))}
    pid = process.spawn(cmd, log=folder / "mes.log", pidfile=folder / "mes.pid", cwd=PROJECT_DIR, env=env)
    process.wait_answering(pid, port, folder / "mes.log", "sandbox MES", START_TIMEOUT)
    return url(port)


def down(state_dir: Path) -> list[int]:
    """Stop the sandbox MES running on ``state_dir``; the PIDs stopped."""
    folder = _folder(state_dir)
    return process.stop_recorded(folder / "mes.pid", marker=str(Path(state_dir).resolve()), timeout=STOP_TIMEOUT)


def status(state_dir: Path) -> process.ServerStatus:
    """Whether the sandbox MES runs on ``state_dir``, and where."""
    folder = _folder(state_dir)
    pid = process.recorded_pid(folder / "mes.pid", marker=str(Path(state_dir).resolve()))
    return process.ServerStatus("sandbox MES", folder, pid, url(_started_with(folder)["port"]) if pid else None)


def _started_with(folder: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((folder / "mes.json").read_text())
    return {}


def main(argv: list[str] | None = None) -> None:
    """``python -m localdev.sandboxes.mes serve --state-dir D --port P [--mqtt-port M] [--auto-seconds S]``."""
    parser = argparse.ArgumentParser(prog="python -m localdev.sandboxes.mes",
                                     description="The sandbox MES: OPC UA ISA-95 Job Control, progress over MQTT.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the sandbox MES in the foreground")
    run.add_argument("--state-dir", type=Path, required=True)
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--mqtt-port", type=int)
    run.add_argument("--auto-seconds", type=float)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncua").setLevel(logging.WARNING)  # its INFO is every request
    asyncio.run(serve(args.state_dir, args.port, mqtt_port=args.mqtt_port, auto_seconds=args.auto_seconds))


if __name__ == "__main__":
    main()
