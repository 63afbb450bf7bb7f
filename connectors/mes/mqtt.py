"""The shop floor's MQTT messages: production progress and quality holds, as JSON.

Topics (one per job order and kind, so a broker ACL can scope a line's terminal to its plant)::

    mes/<plant>/jobs/<job_order_id>/progress
    mes/<plant>/jobs/<job_order_id>/quality

``SUBSCRIPTION`` (``mes/+/jobs/+/+``) receives both kinds from every plant. A job order id in a
topic must not contain ``/``, ``+`` or ``#`` (the hub's ``<order_number>-L<line_no>`` never does).

Payloads are UTF-8 JSON objects; every field is required unless marked optional, and unknown
fields are refused (a typo must not pass as a missing value)::

    progress: {"type": "progress", "version": 1, "job_order_id": "ORD-2026-03-000123-L10",
               "seq": 1767261600000, "reported_at": "2026-01-01T10:00:00.000Z",
               "good_quantity": "40", "scrap_quantity": "2", "unit": "C62"}
    quality:  {"type": "quality", "version": 1, "job_order_id": "...", "seq": ..., "reported_at": "...",
               "hold": true, "reason": "surface cracks on batch 7"}        (reason optional on release)

- ``good_quantity`` / ``scrap_quantity`` are the job's *cumulative* totals so far, as decimal
  strings (never JSON numbers: no float rounding). A lost message is made good by the next one,
  and a redelivered one sets the same totals again.
- ``seq`` is a per-job sequence number, strictly increasing across both kinds: the publisher
  takes ``max(now in ms since the epoch, last seq + 1)`` (``SequenceClock``), so it keeps
  increasing across publisher restarts without storage. A consumer remembers the highest
  ``seq`` it applied per job and ignores anything not above it (``is_newer``): a redelivered
  or stale message is recognised by that alone.
- ``reported_at`` is when the shop floor observed it, ISO 8601 with a time zone.

``parse_message`` refuses anything else with ``UnmappableMessage`` (a ``hub.errors.UnmappableRecord``)
naming the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.sdk import UnmappableRecord, format_timestamp

TOPIC_ROOT = "mes"
#: Every progress and quality message of every plant.
SUBSCRIPTION = f"{TOPIC_ROOT}/+/jobs/+/+"
#: The plant segment when a job order names none.
DEFAULT_PLANT = "main"
PROGRESS = "progress"
QUALITY = "quality"
FORMAT_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_REASON_LENGTH = 400  # leaves room for the job id in the hub's 500-character hold reason

_TOPIC = re.compile(rf"^{TOPIC_ROOT}/([^/+#]+)/jobs/([^/+#]+)/({PROGRESS}|{QUALITY})$")
_UNIT = re.compile(r"^[A-Z0-9]{2,3}$")
_COMMON = {"type", "version", "job_order_id", "seq", "reported_at"}
_FIELDS = {PROGRESS: _COMMON | {"good_quantity", "scrap_quantity", "unit"},
           QUALITY: _COMMON | {"hold", "reason"}}


class UnmappableMessage(UnmappableRecord):
    """A shop-floor MQTT message that can never become a hub change: ``reason`` says why, ``topic`` where."""

    def __init__(self, reason: str, *, topic: str | None = None) -> None:
        self.reason = reason
        self.topic = topic
        where = f" on {topic}" if topic else ""
        super().__init__(f"unmappable MES message{where}: {reason}")


@dataclass(frozen=True)
class ProgressReport:
    """The shop floor's cumulative good and scrap quantities for one job order."""

    plant: str
    """Plant segment of the topic."""
    job_order_id: str
    """The ISA-95 job order the quantities belong to."""
    seq: int
    """Per-job sequence number; a higher one is newer."""
    reported_at: dt.datetime
    """When the shop floor observed the quantities (time-zone aware)."""
    good_quantity: Decimal
    """Good quantity produced so far for the job (cumulative, >= 0)."""
    scrap_quantity: Decimal
    """Scrap produced so far for the job (cumulative, >= 0)."""
    unit: str
    """UN/ECE Rec 20 code of both quantities, e.g. C62."""

    @property
    def topic(self) -> str:
        """The topic this report is published on."""
        return job_topic(self.plant, self.job_order_id, PROGRESS)


@dataclass(frozen=True)
class QualityReport:
    """A quality hold put on, or lifted from, one job order."""

    plant: str
    """Plant segment of the topic."""
    job_order_id: str
    """The ISA-95 job order held or released."""
    seq: int
    """Per-job sequence number; a higher one is newer."""
    reported_at: dt.datetime
    """When quality decided (time-zone aware)."""
    on_hold: bool
    """True: the job is held; False: the hold is lifted."""
    reason: str | None
    """Why it is held (required when held; optional on release)."""

    @property
    def topic(self) -> str:
        """The topic this report is published on."""
        return job_topic(self.plant, self.job_order_id, QUALITY)


ShopFloorReport = ProgressReport | QualityReport


def job_topic(plant: str, job_order_id: str, kind: str) -> str:
    """The topic of one job's ``progress`` or ``quality`` messages; ValueError for an unusable segment."""
    for what, segment in (("plant", plant), ("job order id", job_order_id)):
        if not segment or any(c in segment for c in "/+#"):
            raise ValueError(f"{what} {segment!r} cannot be an MQTT topic segment (empty, or has / + #)")
    if kind not in (PROGRESS, QUALITY):
        raise ValueError(f"unknown message kind {kind!r}")
    return f"{TOPIC_ROOT}/{plant}/jobs/{job_order_id}/{kind}"


class SequenceClock:
    """Hands out per-job sequence numbers: ``max(now in ms, last + 1)``, strictly increasing.

    Wall-clock based so that a restarted publisher continues above what it sent before
    (given a clock that does not jump back by more than its restart takes).
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def next(self, job_order_id: str) -> int:
        """The next sequence number for this job."""
        seq = max(time.time_ns() // 1_000_000, self._last.get(job_order_id, 0) + 1)
        self._last[job_order_id] = seq
        return seq


def observed_now() -> dt.datetime:
    """Now, in UTC, to the millisecond the wire carries (a report made with it reads back equal)."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def is_newer(report: ShopFloorReport, last_seq: int | None) -> bool:
    """Whether ``report`` comes after the newest one applied for its job (``last_seq``)."""
    return last_seq is None or report.seq > last_seq


def encode_progress(report: ProgressReport) -> tuple[str, bytes]:
    """The topic and JSON payload of a progress report."""
    body = {**_header(PROGRESS, report), "good_quantity": _decimal_text(report.good_quantity),
            "scrap_quantity": _decimal_text(report.scrap_quantity), "unit": report.unit}
    return report.topic, _dump(body)


def encode_quality(report: QualityReport) -> tuple[str, bytes]:
    """The topic and JSON payload of a quality hold or release."""
    body: dict[str, Any] = {**_header(QUALITY, report), "hold": report.on_hold}
    if report.reason is not None:
        body["reason"] = report.reason
    return report.topic, _dump(body)


def encode_message(report: ShopFloorReport) -> tuple[str, bytes]:
    """The topic and payload of either kind of report."""
    return encode_progress(report) if isinstance(report, ProgressReport) else encode_quality(report)


def parse_message(topic: str, payload: bytes) -> ShopFloorReport:
    """Read one MQTT message; ``UnmappableMessage`` says exactly what is wrong with it."""
    match = _TOPIC.match(topic)
    if match is None:
        raise UnmappableMessage(f"topic is not {TOPIC_ROOT}/<plant>/jobs/<job_order_id>/{PROGRESS}|{QUALITY}",
                               topic=topic)
    plant, job_order_id, kind = match.groups()
    body = _load(payload, topic)
    _check_header(body, kind, job_order_id, topic)
    seq = _seq(body["seq"], topic)
    reported_at = _timestamp(body["reported_at"], topic)
    if kind == PROGRESS:
        return ProgressReport(plant, job_order_id, seq, reported_at,
                              _quantity(body, "good_quantity", topic), _quantity(body, "scrap_quantity", topic),
                              _unit(body["unit"], topic))
    on_hold, reason = _hold(body, topic)
    return QualityReport(plant, job_order_id, seq, reported_at, on_hold, reason)


def _header(kind: str, report: ShopFloorReport) -> dict[str, Any]:
    if report.reported_at.tzinfo is None:
        raise ValueError("reported_at needs a time zone")
    return {"type": kind, "version": FORMAT_VERSION, "job_order_id": report.job_order_id, "seq": report.seq,
            "reported_at": format_timestamp(report.reported_at)}


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite() or value < 0:
        raise ValueError(f"quantity {value} is not a finite number >= 0")
    return format(value, "f")


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _load(payload: bytes, topic: str) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise UnmappableMessage(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}", topic=topic)
    try:
        body = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise UnmappableMessage("payload is not UTF-8", topic=topic) from None
    except json.JSONDecodeError as exc:
        raise UnmappableMessage(f"payload is not JSON: {exc}", topic=topic) from None
    if not isinstance(body, dict):
        raise UnmappableMessage("payload is not a JSON object", topic=topic)
    return body


def _check_header(body: dict[str, Any], kind: str, job_order_id: str, topic: str) -> None:
    if body.get("type") != kind:
        raise UnmappableMessage(f"type {body.get('type')!r} does not match the topic's {kind!r}", topic=topic)
    if body.get("version") != FORMAT_VERSION or isinstance(body.get("version"), bool):
        raise UnmappableMessage(f"version {body.get('version')!r} is not {FORMAT_VERSION}", topic=topic)
    required = _FIELDS[kind] - ({"reason"} if kind == QUALITY else set())
    if missing := sorted(required - set(body)):
        raise UnmappableMessage(f"missing field(s): {', '.join(missing)}", topic=topic)
    if unknown := sorted(set(body) - _FIELDS[kind]):  # after type and version: a newer format says so first
        raise UnmappableMessage(f"unknown field(s): {', '.join(unknown)}", topic=topic)
    if body["job_order_id"] != job_order_id:
        raise UnmappableMessage(f"job_order_id {body['job_order_id']!r} differs from the topic's {job_order_id!r}",
                               topic=topic)


def _seq(raw: Any, topic: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise UnmappableMessage(f"seq must be a positive integer, got {raw!r}", topic=topic)
    return raw


def _timestamp(raw: Any, topic: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        raise UnmappableMessage(f"reported_at must be an ISO 8601 timestamp, got {raw!r}", topic=topic) from None
    if value.tzinfo is None:
        raise UnmappableMessage(f"reported_at {raw!r} has no time zone", topic=topic)
    return value


def _quantity(body: dict[str, Any], name: str, topic: str) -> Decimal:
    raw = body[name]
    if not isinstance(raw, str):  # a JSON number would already have been rounded by some float on the way
        raise UnmappableMessage(f"{name} must be a decimal string like \"12.5\", got {raw!r}", topic=topic)
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise UnmappableMessage(f"{name} is not a decimal number: {raw!r}", topic=topic) from None
    if not value.is_finite() or value < 0:
        raise UnmappableMessage(f"{name} must be a finite number >= 0, got {raw!r}", topic=topic)
    return value


def _unit(raw: Any, topic: str) -> str:
    if not isinstance(raw, str) or not _UNIT.match(raw):
        raise UnmappableMessage(f"unit must be a UN/ECE Rec 20 code like C62 or KGM, got {raw!r}", topic=topic)
    return raw


def _hold(body: dict[str, Any], topic: str) -> tuple[bool, str | None]:
    on_hold, reason = body["hold"], body.get("reason")
    if not isinstance(on_hold, bool):
        raise UnmappableMessage(f"hold must be true or false, got {on_hold!r}", topic=topic)
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        raise UnmappableMessage(f"reason must be non-empty text, got {reason!r}", topic=topic)
    if on_hold and reason is None:
        raise UnmappableMessage("a hold needs a reason", topic=topic)
    if reason is not None and len(reason.strip()) > MAX_REASON_LENGTH:
        raise UnmappableMessage(f"reason is longer than {MAX_REASON_LENGTH} characters", topic=topic)
    return on_hold, None if reason is None else reason.strip()
