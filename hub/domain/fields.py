"""The canonical order's fields: their paths, their types, and their canonical JSON.

A proposal sets fields by path. Header fields have fixed paths (``customer.name``,
``amounts.net``); line fields are ``lines.<line_no>.<attribute>`` (``lines.10.quantity``),
and rules about them are written with a ``*`` for the line number (``lines.*.quantity``).

Values travel as canonical JSON text: one spelling per value, so two writers who mean the
same value write the same bytes and converge instead of conflicting. Decimals are JSON
strings quantised to their scale (``"12.50"``), dates ``"2026-12-01"``, timestamps UTC with
milliseconds (``"2026-12-01T08:00:00.000Z"``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable

import orjson

#: A proposal that "changes" this path asks for a hard delete, which nobody may do.
DELETE_PATH = "deleted"
STATUS_PATH = "status"
_LINE_PATH = re.compile(r"^lines\.([1-9][0-9]{0,5})\.(.+)$")
#: What an approval level's name may look like (workflow.yaml); ``approvals.<level>`` holds its decision.
LEVEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_APPROVAL_PATH = re.compile(rf"^approvals\.{LEVEL_NAME.pattern}$")
#: ``json.loads(text, parse_float=Decimal)`` builds this anew on every call.
_DECIMAL_JSON = json.JSONDecoder(parse_float=Decimal)


def canonical_json(value: Any) -> str | None:
    """One spelling per value: sorted keys, no spaces, None stays None (clears the field).

    Characters stay as they are, but for half of a surrogate pair alone, which no text encoding can
    store: a text holding one is spelt all in ASCII escapes (``"a\\ud800"``), so the proposal that
    carries it can still be sent, and the hub refuses it naming the field (``_text``)."""
    if value is None:
        return None
    if type(value) is str:  # most values: orjson spells every string as json does, but for a lone surrogate
        try:
            return orjson.dumps(value).decode()
        except TypeError:
            pass
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text


def load_json(text: str | None) -> Any:
    """Canonical (or any) JSON text as a Python value, None for None (decimals stay strings: parse
    them with their kind).

    orjson, which reads every text ``canonical_json`` writes for the field kinds (strings,
    int16, booleans, lists, objects: no floats, no big integers) exactly as ``json`` does;
    ``json`` for whatever orjson refuses (an escaped lone surrogate, an integer past 64 bits,
    NaN), so every text reads as ``json.loads`` reads it.
    """
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def as_is(value: Any) -> Any:
    """A canonical value as the snapshot types it, for the kinds whose JSON form is their Python form."""
    return value


@dataclass(frozen=True)
class FieldKind:
    """A field type: ``normalise`` turns a JSON value into its canonical Python form or raises ValueError."""

    name: str
    normalise: Callable[[Any], Any]
    #: The canonical Python form as the snapshot types it: decimals become Decimal, dates date,
    #: timestamps datetime (what the snapshot model makes of the JSON strings); the rest stays as it is.
    typed: Callable[[Any], Any] = as_is

    def canonical(self, text: str | None) -> str | None:
        """The canonical JSON of a proposed value; ValueError says why it is invalid."""
        if text is None:
            return None
        try:
            if text.startswith("\ufeff"):  # what json.loads refuses before decoding
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
            raw = _DECIMAL_JSON.decode(text)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        return canonical_json(self.normalise(raw))


def _text(max_len: int = 500) -> Callable[[Any], str]:
    def normalise(raw: Any) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError("expected a non-empty string")
        if len(raw) > max_len:
            raise ValueError(f"longer than {max_len} characters")
        if not raw.isascii():
            try:  # JSON can spell half of a surrogate pair alone ("\ud800"); no text encoding can store it
                raw.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"not Unicode text: a lone surrogate {raw[exc.start]!r} at character "
                                 f"{exc.start + 1}") from None
        return raw.strip()
    return normalise


def _decimal(scale: int, minimum: Decimal | None = None, *, exclusive: bool = False) -> Callable[[Any], str]:
    quantum = Decimal(1).scaleb(-scale)

    def normalise(raw: Any) -> str:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, Decimal)):
            raise ValueError("expected a decimal number (a JSON string like \"12.50\")")
        try:
            exact = Decimal(str(raw))
            if not exact.is_finite():
                raise InvalidOperation
            value = exact.quantize(quantum)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {raw!r}") from None
        if value != exact:  # money and quantities are never rounded silently
            raise ValueError(f"{raw!r} has more than {scale} decimal places")
        if not value.is_finite() or len(value.as_tuple().digits) > 18:
            raise ValueError(f"out of range: {raw!r}")
        value = value.copy_abs() if value == 0 else value  # one spelling of zero: "-0.00" is "0.00"
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise ValueError(f"must be {'>' if exclusive else '>='} {minimum}")
        return str(value)
    return normalise


def _date(raw: Any) -> str:
    try:
        return dt.date.fromisoformat(raw).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"expected an ISO date like 2026-12-01, got {raw!r}") from None


def _timestamp(raw: Any) -> str:
    try:
        value = dt.datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected an ISO timestamp with zone, got {raw!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"timestamp {raw!r} has no time zone")
    return format_timestamp(value)


def format_timestamp(value: dt.datetime) -> str:
    """A timestamp as canonical text: UTC, milliseconds, ``Z``."""
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _int16(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not -32768 <= raw <= 32767:
        raise ValueError("expected an integer from -32768 to 32767 (ISA-95 Int16 priority)")
    return raw


def _bool(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ValueError("expected true or false")
    return raw


def _pattern(regex: str, hint: str) -> Callable[[Any], str]:
    compiled = re.compile(regex)

    def normalise(raw: Any) -> str:
        if not isinstance(raw, str) or not compiled.fullmatch(raw.strip().upper()):
            raise ValueError(f"expected {hint}, got {raw!r}")
        return raw.strip().upper()
    return normalise


def _text_list(raw: Any) -> list[str]:
    if not isinstance(raw, list):
        raise ValueError("expected a list of strings")
    return [_text()(item) for item in raw]


def _instructions(raw: Any) -> list[dict[str, str | None]]:
    if not isinstance(raw, list):
        raise ValueError("expected a list of {key, text} objects")
    result = []
    for item in raw:
        if isinstance(item, str):
            item = {"key": None, "text": item}
        if not isinstance(item, dict) or set(item) - {"key", "text"} or "text" not in item:
            raise ValueError("each instruction is {\"key\": ..., \"text\": ...} or a string")
        key = item.get("key")
        result.append({"key": None if key is None else _text(100)(key), "text": _text(2000)(item["text"])})
    return result


def _approval(raw: Any) -> dict[str, str | None]:
    if not isinstance(raw, dict) or set(raw) - {"decision", "comment"} or raw.get("decision") not in (
            "approved", "refused"):
        raise ValueError('expected {"decision": "approved" or "refused", "comment": "..."}')
    comment = raw.get("comment")
    comment = None if comment is None or (isinstance(comment, str) and not comment.strip()) else _text(2000)(comment)
    if raw["decision"] == "refused" and comment is None:
        raise ValueError("a refusal says why: comment is required")
    return {"decision": raw["decision"], "comment": comment}


def _status(raw: Any) -> str:
    from hub.domain.lifecycle import LIFECYCLE

    if raw not in LIFECYCLE:
        raise ValueError(f"expected one of {', '.join(LIFECYCLE)}, got {raw!r}")
    return raw


TEXT = FieldKind("text", _text())
MONEY = FieldKind("decimal(18,2)", _decimal(2), Decimal)
PRICE = FieldKind("decimal(18,4) >= 0", _decimal(4, Decimal(0)), Decimal)
QUANTITY = FieldKind("decimal(18,3) > 0", _decimal(3, Decimal(0), exclusive=True), Decimal)
COUNT = FieldKind("decimal(18,3) >= 0", _decimal(3, Decimal(0)), Decimal)
DATE = FieldKind("date", _date, dt.date.fromisoformat)
TIMESTAMP = FieldKind("timestamp", _timestamp, dt.datetime.fromisoformat)
PRIORITY = FieldKind("int16", _int16)
FLAG = FieldKind("boolean", _bool)
CURRENCY = FieldKind("ISO 4217 code", _pattern(r"[A-Z]{3}", "a 3-letter ISO 4217 code like EUR"))
UNIT = FieldKind("UN/ECE Rec 20 code", _pattern(r"[A-Z0-9]{2,3}", "a UN/ECE Rec 20 unit code like C62 or KGM"))
TEXT_LIST = FieldKind("list of text", _text_list)
INSTRUCTIONS = FieldKind("instructions", _instructions)
STATUS = FieldKind("lifecycle status", _status)
APPROVAL = FieldKind("approval", _approval)

HEADER_FIELDS: dict[str, FieldKind] = {
    "customer.id": TEXT, "customer.name": TEXT, "contact": TEXT, "sales_owner": TEXT,
    "customer_po_number": TEXT, "currency": CURRENCY,
    "amounts.net": MONEY, "amounts.tax": MONEY, "amounts.gross": MONEY, "amounts.crm_expected": MONEY,
    "requested_delivery": DATE, "promised_delivery": DATE,
    "planned_start": TIMESTAMP, "planned_end": TIMESTAMP, "actual_start": TIMESTAMP, "actual_end": TIMESTAMP,
    "priority": PRIORITY, "terms": TEXT, "plant": TEXT, "credit_status": TEXT,
    "instructions": INSTRUCTIONS, STATUS_PATH: STATUS, "on_hold": FLAG, "hold_reasons": TEXT_LIST,
}
LINE_FIELDS: dict[str, FieldKind] = {
    "material.id": TEXT, "material.revision": TEXT, "quantity": QUANTITY, "unit": UNIT, "raw_unit": TEXT,
    "unit_price": PRICE, "confirmed_date": DATE, "confirmed_quantity": COUNT,
    "good_quantity": COUNT, "scrap_quantity": COUNT,
}
#: What a line needs before it exists.
LINE_REQUIRED = ("material.id", "quantity", "unit")


def rule_path(path: str) -> str:
    """The path rules are written for: line numbers become ``*`` (``lines.10.unit`` -> ``lines.*.unit``)."""
    match = _LINE_PATH.match(path)
    return f"lines.*.{match.group(2)}" if match else path


def line_of(path: str) -> int | None:
    """The line number a line path is about, or None for a header path."""
    match = _LINE_PATH.match(path)
    return int(match.group(1)) if match else None


def kind_of(path: str) -> FieldKind | None:
    """The type of a field path, or None when the canonical order has no such field."""
    match = _LINE_PATH.match(path)
    if match:
        return LINE_FIELDS.get(match.group(2))
    return HEADER_FIELDS.get(path) or (APPROVAL if _APPROVAL_PATH.match(path) else None)


def field_values(snapshot: dict[str, Any], only: Iterable[str] | None = None) -> dict[str, str]:
    """Every canonical field an order snapshot holds (``OrderSnapshot.model_dump(mode="json")``), by
    path, as canonical JSON (``only``: just these paths): what a connector compares its outside
    values with, so an echo of the hub's own values is recognised whatever its spelling."""
    values: dict[str, str] = {}
    wanted = None if only is None else set(only)

    def put(path: str, kind: FieldKind, container: Any, keys: list[str]) -> None:
        value = container
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return
        try:
            canonical = kind.canonical(canonical_json(value))
        except ValueError:  # a default the canonical kinds do not take (an empty list): not a value
            return
        if canonical is not None:
            values[path] = canonical

    for path, kind in HEADER_FIELDS.items():
        if wanted is None or path in wanted:
            put(path, kind, snapshot, path.split("."))
    for line in snapshot.get("lines") or []:
        for attr, kind in LINE_FIELDS.items():
            path = f"lines.{line['line_no']}.{attr}"
            if wanted is None or path in wanted:
                put(path, kind, line, attr.split("."))
    for approval in snapshot.get("approvals") or []:  # approvals.<level>: {"decision", "comment"}
        path = f"approvals.{approval['level']}"
        if wanted is None or path in wanted:
            put(path, APPROVAL, {"approval": {"decision": approval["decision"], "comment": approval.get("comment")}},
                ["approval"])
    return values
