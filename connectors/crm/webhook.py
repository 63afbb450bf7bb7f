"""Change Data Capture events pushed to orderhub's webhook: check the signature, read the event,
recognise the echo of orderhub's own writes.

A delivery is an HTTP POST whose body is one Salesforce change event in CometD JSON
(``{"schema", "payload": {"ChangeEventHeader": {...}, <field>: <value>, ...}, "event":
{"replayId"}}``), signed by the sender with the shared secret::

    X-Orderhub-Timestamp: <unix seconds>
    X-Orderhub-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body bytes)>

``verify`` accepts a body only when one ``v1=`` signature (comma-separated, for a secret being
rotated) matches and the timestamp is within ``max_age_s`` of now, so a captured delivery cannot
be replayed later. Delivery is at least once: the same event (same replayId) may come again.

Errors (``WebhookRefused`` and its kinds are dead letters: the request can never be accepted)::

    WebhookRefused      (hub.errors.DeadLetterError)
     ├── BadSignature   a missing, malformed or wrong signature or timestamp
     └── StaleWebhook   a timestamp older (or newer) than max_age_s
    CrmRecordRefused    (connectors.crm.client) a body that is no change event, with the reason
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from connectors.crm.client import CrmRecordRefused
from hub.sdk import DeadLetterError

TIMESTAMP_HEADER = "X-Orderhub-Timestamp"
SIGNATURE_HEADER = "X-Orderhub-Signature"
#: Salesforce's change types; GAP_* say events were lost: re-read the records named.
CHANGE_TYPES = ("CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE", "GAP_DELETE",
                "GAP_UNDELETE", "GAP_OVERFLOW")
_CLIENT = re.compile(r"(?:^|;)\s*client=([^;]+)")


class WebhookRefused(DeadLetterError):
    """A webhook delivery that is not accepted."""


class BadSignature(WebhookRefused):
    """The signature or timestamp header is missing or malformed, or no signature matches."""


class StaleWebhook(WebhookRefused):
    """The signed timestamp is further from now than allowed: a late or replayed delivery."""


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Orderhub-Signature`` value of ``body`` signed at ``timestamp``: ``v1=<hex>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(body: bytes, headers: Mapping[str, str], secret: str, *, now: dt.datetime,
           max_age_s: float = 300) -> None:
    """Accept a delivery (return None) or raise ``BadSignature`` / ``StaleWebhook`` saying why.

    ``now`` is an aware datetime (the caller's clock, passed in so the check is testable).
    """
    if now.tzinfo is None:
        raise ValueError("verify needs an aware datetime for now")
    given = {name.lower(): value for name, value in headers.items()}
    stamp_text = given.get(TIMESTAMP_HEADER.lower())
    signatures = given.get(SIGNATURE_HEADER.lower())
    if stamp_text is None or signatures is None:
        raise BadSignature(f"missing {TIMESTAMP_HEADER if stamp_text is None else SIGNATURE_HEADER} header")
    if not stamp_text.strip().isdigit():
        raise BadSignature(f"{TIMESTAMP_HEADER} is not unix seconds: {stamp_text!r}")
    expected = signature(secret, stamp_text.strip(), body)
    # compare_digest: the time taken does not tell a forger how much of the signature was right
    if not any(hmac.compare_digest(expected, candidate.strip()) for candidate in signatures.split(",")):
        raise BadSignature(f"no {SIGNATURE_HEADER} matches the body (tampered, or another secret)")
    age = now.timestamp() - int(stamp_text)
    if abs(age) > max_age_s:
        raise StaleWebhook(f"signed {age:.0f} s ago; accepted within {max_age_s:.0f} s")


@dataclass(frozen=True)
class ChangeEvent:
    """One Salesforce change event: its header, and the values of the fields it carries."""

    entity_name: str
    """The object changed, e.g. Opportunity."""
    record_ids: tuple[str, ...]
    """The records changed (one, or several changed the same way in one transaction)."""
    change_type: str
    """CREATE, UPDATE, DELETE, UNDELETE or GAP_* (events were lost: re-read the records)."""
    changed_fields: tuple[str, ...]
    """The fields an UPDATE changed (empty for a CREATE, which carries every set field)."""
    nulled_fields: tuple[str, ...]
    """The fields an UPDATE cleared."""
    commit_timestamp: dt.datetime
    """When the change was committed (UTC)."""
    transaction_key: str
    """The transaction the change belongs to."""
    change_origin: str
    """Who wrote it, e.g. ``com/salesforce/api/rest/59.0;client=orderhub`` ("" when unknown)."""
    sequence_number: int | None = None
    """The change's place in its transaction."""
    commit_user: str | None = None
    """The user id that committed it."""
    replay_id: int | None = None
    """The event's position in the stream: a jump means events were missed."""
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """The new values of the fields carried (read-only; numbers as Decimal)."""

    @property
    def record_id(self) -> str:
        """The first (usually the only) record changed."""
        return self.record_ids[0]

    @property
    def client_id(self) -> str | None:
        """The ``client=`` id in changeOrigin: the API client that wrote the change, if it said."""
        match = _CLIENT.search(self.change_origin)
        return match.group(1).strip() if match else None


def parse_change_event(body: bytes) -> ChangeEvent:
    """Read a change event; ``CrmRecordRefused`` says why a body is no change event."""
    try:
        doc = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed(f"not JSON: {exc}") from None
    payload = doc.get("payload") if isinstance(doc, dict) else None
    header = payload.get("ChangeEventHeader") if isinstance(payload, dict) else None
    if not isinstance(header, dict):
        raise _malformed("no payload.ChangeEventHeader object")
    event = doc.get("event") if isinstance(doc.get("event"), dict) else {}
    return ChangeEvent(
        entity_name=_required(header, "entityName", str),
        record_ids=tuple(_strings(header, "recordIds", required=True)),
        change_type=_change_type(header),
        changed_fields=tuple(_strings(header, "changedFields")),
        nulled_fields=tuple(_strings(header, "nulledFields")),
        commit_timestamp=_commit_time(header),
        transaction_key=_required(header, "transactionKey", str),
        change_origin=_optional(header, "changeOrigin", str) or "",
        sequence_number=_optional(header, "sequenceNumber", int),
        commit_user=_optional(header, "commitUser", str),
        replay_id=_optional(event, "replayId", int),
        values=MappingProxyType({k: v for k, v in payload.items() if k != "ChangeEventHeader"}),
    )


def is_own_write(event: ChangeEvent, client_id: str) -> bool:
    """Whether the change came from the API client ``client_id`` (an echo of our own write)."""
    return event.client_id == client_id


def _malformed(reason: str) -> CrmRecordRefused:
    return CrmRecordRefused(f"not a change event: {reason}")


def _required(header: Mapping[str, Any], name: str, kind: type) -> Any:
    value = _optional(header, name, kind)
    if value is None or value == "":
        raise _malformed(f"ChangeEventHeader.{name} is missing")
    return value


def _optional(header: Mapping[str, Any], name: str, kind: type) -> Any:
    value = header.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise _malformed(f"ChangeEventHeader.{name} is not a {kind.__name__}: {value!r}")
    return value


def _strings(header: Mapping[str, Any], name: str, *, required: bool = False) -> list[str]:
    value = header.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value) or (required and not value):
        raise _malformed(f"ChangeEventHeader.{name} is not a {'non-empty ' if required else ''}list of text")
    return value


def _change_type(header: Mapping[str, Any]) -> str:
    value = _required(header, "changeType", str)
    if value not in CHANGE_TYPES:
        raise _malformed(f"ChangeEventHeader.changeType {value!r} is none of {', '.join(CHANGE_TYPES)}")
    return value


def _commit_time(header: Mapping[str, Any]) -> dt.datetime:
    millis = _required(header, "commitTimestamp", int)
    try:
        return dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise _malformed(f"ChangeEventHeader.commitTimestamp {millis} is no time") from None
