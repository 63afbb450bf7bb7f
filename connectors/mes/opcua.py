"""The MES client: ISA-95 job orders over OPC UA (OPC 10031-4 Job Control V2), on asyncua.

``JobOrderReceiverClient`` finds the server's ``ISA95JobOrderReceiverObjectType`` object (and,
when there is one, its ``ISA95JobResponseProviderObjectType`` object for actual start and end
times), stores, cancels and commands job orders through the standard methods, lists them from
the receiver's ``JobOrderList`` and watches that list by subscription.

Method outcomes follow the standard's Annex B.2: every job-order method answers a UInt64
``ReturnStatus`` bit map (bit 0 = no error), with a Good or Uncertain call status; a refused call
raises ``JobOrderRefused`` carrying the bits. How a job order becomes executable, per the
standard's state machine: Store puts it in NotAllowedToStart, Start (or StoreAndStart) makes it
AllowedToStart, and the MES itself moves it to Running when execution begins.

Errors, by what the caller should do::

    RetriableError  -> OutsideSystemUnavailable -> MesUnavailable
                                        no connection, timeout, session or channel lost: try later
    DeadLetterError -> JobOrderRefused  the MES refused this job order or command (ReturnStatus)
    FatalError      -> MesModelError    the server does not have the model, or answers nonsense

Watching subscribes to ``JobOrderList`` rather than polling it: the standard models the list as
one array variable, so each data change is the whole list and a diff against the last one gives
the state changes; asyncua's subscription delivered every change against the sandbox (monitored
item queue of 100), and it is told when the connection is lost (the client's 1 s watchdog), so
the watch then raises ``MesUnavailable`` instead of going quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from enum import IntFlag
from typing import Any

try:
    from asyncua import Client, Node, ua
except ImportError as exc:  # the MES connector's client is an extra
    raise ImportError("the MES connector needs asyncua: pip install 'orderhub[mes]'") from exc

from connectors.mes.mapping import (
    PARAM_INSTRUCTION_PREFIX, PARAM_LINE_NO, PARAM_ORDER_ID, PARAM_ORDER_NUMBER, PARAM_ORDER_VERSION, PARAM_PLANT,
    PARAM_REQUESTED_DELIVERY, JobOrder, JobOrderState, JobState, JobStateChange,
)
from hub.sdk import DeadLetterError, FatalError, Instruction, OutsideSystemUnavailable

log = logging.getLogger(__name__)

ISA95_NAMESPACE = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
RECEIVER_TYPE = 1002  # ISA95JobOrderReceiverObjectType, in ISA95_NAMESPACE
RESPONSE_PROVIDER_TYPE = 1003  # ISA95JobResponseProviderObjectType
#: OPC UA's namespace of UN/ECE Rec 20 units in EUInformation (OPC 10000-8).
UNECE_UNITS_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
#: ISA-95 Part 2's MaterialUse of what a job produces.
MATERIAL_PRODUCED = "Produced"
REVISION_PROPERTY = "Revision"
#: The receiver's job-order commands that take a JobOrderID and a Comment.
COMMANDS = ("Start", "RevokeStart", "Pause", "Resume", "Stop", "Abort", "Cancel", "Clear")

_TRANSIENT = frozenset(getattr(ua.StatusCodes, name) for name in (
    "BadResourceUnavailable", "BadCommunicationError", "BadTimeout", "BadShutdown", "BadServerNotConnected",
    "BadServerHalted", "BadSecureChannelIdInvalid", "BadSessionIdInvalid", "BadSessionClosed", "BadServerTooBusy",
    "BadNoCommunication", "BadTooManySessions", "BadTcpServerTooBusy", "BadRequestTimeout",
    "BadSecureChannelClosed", "BadNotConnected", "BadConnectionRejected", "BadDisconnect", "BadConnectionClosed",
))


class ReturnStatus(IntFlag):
    """The UInt64 ReturnStatus bit map of the job-order methods (OPC 10031-4 V2, Annex B.2)."""

    NO_ERROR = 1 << 0
    UNKNOWN_JOB_ORDER_ID = 1 << 1
    INVALID_JOB_ORDER_STATUS = 1 << 3
    UNABLE_TO_ACCEPT_JOB_ORDER = 1 << 4
    INVALID_REQUEST = 1 << 32
    #: Implementation-specific (bits 33-63 are the implementation's): the JobOrderID is already
    #: stored. Set by the sandbox MES together with UNABLE_TO_ACCEPT_JOB_ORDER.
    JOB_ORDER_ID_EXISTS = 1 << 33

    @property
    def ok(self) -> bool:
        """Exactly "no error"."""
        return self == ReturnStatus.NO_ERROR

    def text(self) -> str:
        """The set bits by name, for a person."""
        names = [flag.name for flag in ReturnStatus if flag in self and flag.name]
        unknown = int(self) & ~sum(int(flag) for flag in ReturnStatus)
        return "|".join(names + ([f"0x{unknown:x}"] if unknown else [])) or "0 (undefined)"


class MesUnavailable(OutsideSystemUnavailable):
    """The MES's OPC UA server cannot be reached now (connection, timeout, lost session)."""


class MesModelError(FatalError):
    """The server lacks the ISA-95 Job Control model or answers outside it."""


class JobOrderRefused(DeadLetterError):
    """The MES refused a job-order method; ``status`` says why (ReturnStatus bits)."""

    def __init__(self, method: str, job_order_id: str, status: ReturnStatus) -> None:
        self.method = method
        self.job_order_id = job_order_id
        self.status = status
        super().__init__(f"MES refused {method} of job order {job_order_id}: {status.text()}")


# --- job orders as OPC UA structures ------------------------------------------------------


def isa95_type(name: str) -> type:
    """An ISA-95 structure class (``ISA95JobOrderDataType`` ...), once the type definitions are loaded."""
    cls = getattr(ua, name, None)
    if cls is None:
        raise MesModelError(f"{name} is not loaded: call load_data_type_definitions() after connecting")
    return cls


def unece_unit_id(code: str) -> int:
    """OPC 10000-8's UnitId of a UN/ECE Rec 20 common code: its characters as big-endian bytes."""
    value = 0
    for char in code.upper():
        value = (value << 8) | ord(char)
    return value


def unece_code(unit_id: int) -> str:
    """The UN/ECE Rec 20 code of an OPC UA UnitId (the inverse of ``unece_unit_id``)."""
    return unit_id.to_bytes(4, "big").lstrip(b"\0").decode("ascii")


def engineering_units(code: str) -> ua.EUInformation:
    """The EUInformation of a UN/ECE Rec 20 unit code."""
    return ua.EUInformation(NamespaceUri=UNECE_UNITS_NAMESPACE, UnitId=unece_unit_id(code),
                            DisplayName=ua.LocalizedText(code), Description=ua.LocalizedText(code))


def job_order_to_ua(job: JobOrder) -> Any:
    """The ``ISA95JobOrderDataType`` of a job order: its produced material, priority, due time, and
    the hub's order id, number, version, line and process requirements as JobOrderParameters."""
    parameter, material, prop = (isa95_type(name) for name in (
        "ISA95ParameterDataType", "ISA95MaterialDataType", "ISA95PropertyDataType"))
    produced = material(
        MaterialDefinitionID=job.material_id, MaterialUse=MATERIAL_PRODUCED, Quantity=str(job.quantity),
        EngineeringUnits=engineering_units(job.unit),
        Properties=[prop(ID=REVISION_PROPERTY, Value=ua.Variant(job.material_revision, ua.VariantType.String))]
        if job.material_revision else None)
    values: list[tuple[str, Any, ua.VariantType]] = [
        (PARAM_ORDER_ID, job.order_id, ua.VariantType.String),
        (PARAM_ORDER_NUMBER, job.order_number, ua.VariantType.String),
        (PARAM_ORDER_VERSION, job.order_version, ua.VariantType.Int32),
        (PARAM_LINE_NO, job.line_no, ua.VariantType.Int32),
        (PARAM_REQUESTED_DELIVERY, job.due.isoformat() if job.due else None, ua.VariantType.String),
        (PARAM_PLANT, job.plant, ua.VariantType.String),
    ]
    parameters = [parameter(ID=key, Value=ua.Variant(value, kind)) for key, value, kind in values if value is not None]
    parameters += [_instruction_parameter(parameter, position, instruction)
                   for position, instruction in enumerate(job.instructions, start=1)]
    label = f"{job.order_number} line {job.line_no}: " if job.from_hub else ""
    return isa95_type("ISA95JobOrderDataType")(
        JobOrderID=job.job_order_id,
        Description=[ua.LocalizedText(f"{label}{job.quantity} {job.unit} of {job.material_id}")],
        EndTime=dt.datetime.combine(job.due, dt.time(), dt.timezone.utc) if job.due else None,
        Priority=job.priority, JobOrderParameters=parameters, MaterialRequirements=[produced])


def job_order_from_ua(value: Any) -> JobOrder | None:
    """A job order from an ``ISA95JobOrderDataType``; None when it names no produced material with a
    quantity and a unit (not a job order this client can follow)."""
    produced = _produced_material(value.MaterialRequirements or [])
    if produced is None:
        return None
    try:
        quantity = Decimal(produced.Quantity)
    except (InvalidOperation, TypeError):
        return None
    unit = _unit_code(produced.EngineeringUnits)
    if unit is None or not quantity.is_finite():
        return None
    params = {p.ID: _plain(p.Value) for p in value.JobOrderParameters or []}
    revision = next((_plain(p.Value) for p in produced.Properties or [] if p.ID == REVISION_PROPERTY), None)
    due = _date(params.get(PARAM_REQUESTED_DELIVERY)) or (value.EndTime.date() if value.EndTime else None)
    return JobOrder(
        job_order_id=value.JobOrderID, material_id=produced.MaterialDefinitionID, quantity=quantity, unit=unit,
        priority=value.Priority or 0, material_revision=revision, due=due,
        order_id=_text(params.get(PARAM_ORDER_ID)), order_number=_text(params.get(PARAM_ORDER_NUMBER)),
        order_version=_int(params.get(PARAM_ORDER_VERSION)), line_no=_int(params.get(PARAM_LINE_NO)),
        plant=_text(params.get(PARAM_PLANT)), instructions=_instructions(value.JobOrderParameters or []))


def job_state_of(states: Sequence[Any]) -> JobState | None:
    """The top-level state from an ``ISA95StateDataType`` array (its first entry, by text, else number)."""
    if not states:
        return None
    top = states[0]
    text = top.StateText.Text if top.StateText is not None else None
    try:
        return JobState(text)
    except ValueError:
        pass
    try:
        return JobState.from_number(top.StateNumber)
    except (ValueError, TypeError):
        return None


def state_to_ua(state: JobState) -> list[Any]:
    """The ``ISA95StateDataType`` array of a top-level state (BrowsePath null, as the standard asks)."""
    return [isa95_type("ISA95StateDataType")(BrowsePath=ua.RelativePath(), StateText=ua.LocalizedText(state.value),
                                             StateNumber=state.number)]


def _instruction_parameter(parameter: type, position: int, instruction: Instruction) -> Any:
    key = [parameter(ID="key", Value=ua.Variant(instruction.key, ua.VariantType.String))] if instruction.key else None
    return parameter(ID=f"{PARAM_INSTRUCTION_PREFIX}{position}",
                     Value=ua.Variant(instruction.text, ua.VariantType.String), Subparameters=key)


def _instructions(parameters: Iterable[Any]) -> tuple[Instruction, ...]:
    found = []
    for p in parameters:
        suffix = p.ID[len(PARAM_INSTRUCTION_PREFIX):] if p.ID.startswith(PARAM_INSTRUCTION_PREFIX) else ""
        if suffix.isdigit() and isinstance(_plain(p.Value), str) and _plain(p.Value).strip():
            key = next((_plain(s.Value) for s in p.Subparameters or [] if s.ID == "key"), None)
            found.append((int(suffix), Instruction(key=key, text=_plain(p.Value))))
    return tuple(instruction for _, instruction in sorted(found, key=lambda item: item[0]))


def _produced_material(materials: Sequence[Any]) -> Any | None:
    usable = [m for m in materials if m.MaterialDefinitionID and m.Quantity and m.EngineeringUnits]
    produced = [m for m in usable if m.MaterialUse == MATERIAL_PRODUCED]
    return (produced or usable or [None])[0]


def _unit_code(units: Any) -> str | None:
    if units.NamespaceUri == UNECE_UNITS_NAMESPACE and units.UnitId and units.UnitId > 0:
        with contextlib.suppress(OverflowError, UnicodeDecodeError):
            return unece_code(units.UnitId)
    return units.DisplayName.Text if units.DisplayName is not None and units.DisplayName.Text else None


def _plain(value: Any) -> Any:
    return value.Value if isinstance(value, ua.Variant) else value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _date(value: Any) -> dt.date | None:
    with contextlib.suppress(TypeError, ValueError):
        return dt.date.fromisoformat(value)
    return None


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # asyncua hands out UTC; make sure it says so.
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def comment_variant(comment: str | None) -> ua.Variant:
    """The methods' ``Comment`` argument: an array of LocalizedText, empty when there is none."""
    return ua.Variant([ua.LocalizedText(comment)] if comment else [], ua.VariantType.LocalizedText)


# --- calls --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def translated_errors(doing: str) -> AsyncIterator[None]:
    """Raise asyncua's and the network's errors as ``MesUnavailable`` (transient) or ``MesModelError``."""
    try:
        yield
    except (MesUnavailable, MesModelError, JobOrderRefused):
        raise
    except ua.UaStatusCodeError as exc:
        if exc.code in _TRANSIENT:
            raise MesUnavailable(f"{doing}: {exc}") from exc
        raise MesModelError(f"{doing}: {exc}") from exc
    except OSError as exc:  # ConnectionError and TimeoutError are OSErrors too
        raise MesUnavailable(f"{doing}: {exc!r}") from exc


async def call_with_return_status(obj: Node, method: Node, *arguments: ua.Variant) -> ReturnStatus:
    """Call a job-order method and return its ReturnStatus (Good and Uncertain calls both carry one)."""
    request = ua.CallMethodRequest(ObjectId=obj.nodeid, MethodId=method.nodeid, InputArguments=list(arguments))
    result = (await obj.session.call([request]))[0]
    if result.StatusCode.is_bad():
        result.StatusCode.check()  # raises the asyncua error of that code
    outputs = result.OutputArguments or []
    if not outputs or not isinstance(outputs[-1].Value, int):
        raise MesModelError(f"method {method.nodeid.to_string()} returned no ReturnStatus: {outputs!r}")
    return ReturnStatus(outputs[-1].Value)


class JobOrderReceiverClient:
    """An OPC UA session with an MES's ISA-95 JobOrderReceiver; use ``async with``.

    ``receiver_name`` picks one receiver by browse name when the server has several; by
    default the first found under Objects (or one level below) is used.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, receiver_name: str | None = None,
                 watchdog_interval: float = 1.0) -> None:
        self.url = url
        self._timeout = timeout
        self._receiver_name = receiver_name
        self._watchdog_interval = watchdog_interval
        self._client: Client | None = None
        self._ns = 0
        self._receiver: Node | None = None
        self._job_list: Node | None = None
        self._response_list: Node | None = None
        self._methods: dict[str, Node] = {}

    async def __aenter__(self) -> "JobOrderReceiverClient":
        client = Client(self.url, timeout=self._timeout, watchdog_intervall=self._watchdog_interval)
        async with translated_errors(f"connecting to {self.url}"):
            await client.connect()
        try:
            async with translated_errors(f"reading the ISA-95 model of {self.url}"):
                await self._bind(client)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise
        self._client = client
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a dead server cannot be told goodbye
                await client.disconnect()

    @property
    def asyncua(self) -> Client:
        """The underlying asyncua client, for a server's vendor-specific objects (the sandbox's terminal)."""
        if self._client is None:
            raise MesModelError("the client is not connected: use `async with JobOrderReceiverClient(url)`")
        return self._client

    @property
    def receiver(self) -> Node:
        """The JobOrderReceiver object."""
        if self._receiver is None:
            raise MesModelError("the client is not connected: use `async with JobOrderReceiverClient(url)`")
        return self._receiver

    async def list_jobs(self) -> list[JobOrderState]:
        """Every job order the receiver lists that this client can read, with state and actual times."""
        async with translated_errors(f"reading JobOrderList of {self.url}"):
            entries = await self._read_job_list()
            return self._states(entries, await self._read_times())

    async def find(self, job_order_id: str) -> JobOrderState | None:
        """The job order with this id, or None."""
        return next((job for job in await self.list_jobs() if job.job_order_id == job_order_id), None)

    async def jobs_for_order(self, order_id: str) -> list[JobOrderState]:
        """The job orders the hub sent for one order (by the order id in their parameters)."""
        return [job for job in await self.list_jobs() if job.job.order_id == order_id]

    async def store(self, job: JobOrder, start: bool = False, *, comment: str | None = None) -> JobOrderState:
        """Store the job order (``start``: StoreAndStart, so it may run); an existing id is left as it is.

        Idempotent: when the id is already stored (a redelivered release), nothing is sent and
        the stored job order is returned, whatever its content; compare ``order_version`` to
        decide on ``update``.
        """
        if (existing := await self.find(job.job_order_id)) is not None:
            return existing
        method = "StoreAndStart" if start else "Store"
        status = await self._call(method, ua.Variant(job_order_to_ua(job), ua.VariantType.ExtensionObject),
                                  comment_variant(comment))
        if not status.ok:
            # Someone stored it between our look-up and our call: that is the same outcome.
            if status & (ReturnStatus.JOB_ORDER_ID_EXISTS | ReturnStatus.UNABLE_TO_ACCEPT_JOB_ORDER):
                if (existing := await self.find(job.job_order_id)) is not None:
                    return existing
            raise JobOrderRefused(method, job.job_order_id, status)
        if (stored := await self.find(job.job_order_id)) is None:
            raise MesModelError(f"{method} of {job.job_order_id} succeeded but JobOrderList does not list it")
        return stored

    async def update(self, job: JobOrder, *, comment: str | None = None) -> JobOrderState:
        """Replace a job order that has not started (Update); ``JobOrderRefused`` otherwise."""
        status = await self._call("Update", ua.Variant(job_order_to_ua(job), ua.VariantType.ExtensionObject),
                                  comment_variant(comment))
        if not status.ok:
            raise JobOrderRefused("Update", job.job_order_id, status)
        if (stored := await self.find(job.job_order_id)) is None:
            raise MesModelError(f"Update of {job.job_order_id} succeeded but JobOrderList does not list it")
        return stored

    async def cancel(self, job_order_id: str, *, comment: str | None = None) -> bool:
        """Cancel a job order that has not started; True if cancelled now, False if it was not there.

        ``JobOrderRefused`` (INVALID_JOB_ORDER_STATUS) when it has started: then only Abort stops it.
        """
        status = await self._call("Cancel", ua.Variant(job_order_id, ua.VariantType.String), comment_variant(comment))
        if status.ok:
            return True
        if status == ReturnStatus.UNKNOWN_JOB_ORDER_ID:
            return False
        raise JobOrderRefused("Cancel", job_order_id, status)

    async def command(self, method: str, job_order_id: str, *, comment: str | None = None) -> None:
        """Call one of ``COMMANDS`` (Start, Pause, Stop, Abort ...) on a job order; ``JobOrderRefused`` if refused."""
        if method not in COMMANDS:
            raise ValueError(f"{method!r} is not one of {', '.join(COMMANDS)}")
        status = await self._call(method, ua.Variant(job_order_id, ua.VariantType.String), comment_variant(comment))
        if not status.ok:
            raise JobOrderRefused(method, job_order_id, status)

    async def watch(self, *, publishing_interval_ms: int = 100) -> AsyncIterator[JobStateChange]:
        """Job orders appearing, changing state and disappearing, as the receiver reports them.

        The first notification reports every listed job order (``previous`` None), so a
        watcher that restarts catches up; then each change once. Intermediate states between
        two notifications may be skipped. Raises ``MesUnavailable`` when the connection is
        lost. Use with ``contextlib.aclosing`` to end the subscription when leaving early.
        """
        queue: asyncio.Queue[Any] = asyncio.Queue()
        async with translated_errors(f"subscribing to JobOrderList of {self.url}"):
            subscription = await self.asyncua.create_subscription(publishing_interval_ms, _JobListHandler(queue))
            await subscription.subscribe_data_change(self._job_list, queuesize=100)
        known: dict[str, JobOrderState] = {}
        try:
            while True:
                entries = await queue.get()
                if isinstance(entries, Exception):
                    raise MesUnavailable(f"watching JobOrderList of {self.url}: {entries}")
                async with translated_errors(f"reading job responses of {self.url}"):
                    current = {job.job_order_id: job for job in self._states(entries or [], await self._read_times())}
                for change in _changes(known, current):
                    yield change
                known = current
        finally:
            with contextlib.suppress(Exception):
                await subscription.delete()

    async def _bind(self, client: Client) -> None:
        await client.load_data_type_definitions()
        try:
            self._ns = await client.get_namespace_index(ISA95_NAMESPACE)
        except ValueError:
            raise MesModelError(f"{self.url} does not implement ISA-95 Job Control ({ISA95_NAMESPACE})") from None
        self._receiver = await self._find_instance(client, RECEIVER_TYPE, self._receiver_name)
        if self._receiver is None:
            raise MesModelError(f"{self.url} has no ISA95JobOrderReceiverObjectType object under Objects")
        self._job_list = await self._receiver.get_child(f"{self._ns}:JobOrderList")
        provider = await self._find_instance(client, RESPONSE_PROVIDER_TYPE, None)
        if provider is not None:
            with contextlib.suppress(ua.UaStatusCodeError):  # JobOrderResponseList is optional in the model
                self._response_list = await provider.get_child(f"{self._ns}:JobOrderResponseList")

    async def _find_instance(self, client: Client, type_id: int, name: str | None) -> Node | None:
        wanted = await _type_and_subtypes(client.get_node(ua.NodeId(type_id, self._ns)))
        level = [client.nodes.objects]
        for _ in range(2):  # Objects and one folder below: where servers put such objects
            below = []
            for parent in level:
                for child in await parent.get_children(nodeclassmask=ua.NodeClass.Object):
                    if await child.read_type_definition() in wanted and (
                            name is None or (await child.read_browse_name()).Name == name):
                        return child
                    below.append(child)
            level = below
        return None

    async def _call(self, method: str, *arguments: ua.Variant) -> ReturnStatus:
        async with translated_errors(f"calling {method} on {self.url}"):
            if method not in self._methods:
                try:
                    self._methods[method] = await self.receiver.get_child(f"{self._ns}:{method}")
                except ua.UaStatusCodeError:
                    raise MesModelError(f"the JobOrderReceiver of {self.url} has no {method} method") from None
            return await call_with_return_status(self.receiver, self._methods[method], *arguments)

    async def _read_job_list(self) -> list[Any]:
        return list(await self._job_list.read_value() or [])

    async def _read_times(self) -> dict[str, tuple[dt.datetime | None, dt.datetime | None]]:
        if self._response_list is None:
            return {}
        responses = await self._response_list.read_value() or []
        return {r.JobOrderID: (_aware(r.StartTime), _aware(r.EndTime)) for r in responses}

    @staticmethod
    def _states(entries: Iterable[Any], times: dict[str, tuple[dt.datetime | None, dt.datetime | None]],
                ) -> list[JobOrderState]:
        states = []
        for entry in entries:
            job, state = job_order_from_ua(entry.JobOrder), job_state_of(entry.State or [])
            if job is None or state is None:
                log.info("skipping job order %s: no produced material, quantity and unit, or no state",
                         getattr(entry.JobOrder, "JobOrderID", "?"))
                continue
            started, ended = times.get(job.job_order_id, (None, None))
            states.append(JobOrderState(job, state, started, ended))
        return states


class _JobListHandler:
    """asyncua subscription handler: puts each new JobOrderList, or the loss of the connection, on a queue."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        """A new JobOrderList value."""
        self._queue.put_nowait(list(value or []))

    def status_change_notification(self, status: Any) -> None:
        """The subscription's status changed: for a bad one, the connection is gone."""
        code = getattr(status, "Status", status)
        if isinstance(code, ua.StatusCode) and not code.is_good():
            self._queue.put_nowait(ua.UaStatusCodeError(code.value))


def _changes(known: dict[str, JobOrderState], current: dict[str, JobOrderState]) -> list[JobStateChange]:
    changes = [JobStateChange(job_id, known[job_id].state if job_id in known else None, job)
               for job_id, job in current.items()
               if job_id not in known or known[job_id].state is not job.state]
    changes += [JobStateChange(job_id, job.state, None) for job_id, job in known.items() if job_id not in current]
    return changes


async def _type_and_subtypes(type_node: Node) -> set[ua.NodeId]:
    found, pending = set(), [type_node]
    while pending:
        node = pending.pop()
        found.add(node.nodeid)
        pending += await node.get_children(refs=ua.ObjectIds.HasSubtype)
    return found
