"""The plant's workflow rules (workflow.yaml): multi-level approvals over amount thresholds, and the
due-date alert's settings (its rules: ``hub.domain.alerts``).

The rules are data, read once at start and validated with errors that name the line's key;
what they mean is the pure functions below, which ``decide`` calls for every proposal, so no
path (a connector, the API, an offline upload) can go around them.

Approvals (``approvals:``):

1. An order needs the approval of every level whose threshold its amount exceeds: the amount is
   the first of ``approvals.amount`` the order has, compared in the order's currency (a level's
   ``above`` is one figure for every currency, or one per currency with ``"*"`` for the rest).
   An order with no amount yet needs none; the amount arriving later is an amount change (5).
   Once set, the amount may change but not be cleared (that would drop every level at once).
2. A level approves or refuses by writing the field ``approvals.<level>`` with
   ``{"decision": "approved"}`` or ``{"decision": "refused", "comment": "why"}``: a proposal by
   ``HUB:<role>`` like any other, so the ownership check, the audit trail, idempotency and
   conflicts (``manual``: two people deciding one level differently wait for a person) apply.
   Levels decide while the order is DRAFT, CONFIRMED or APPROVED, never in a CREATE and never
   once it is released: production is not taken back.
3. The status enters APPROVED or RELEASED only when no required level is missing; with
   ``order: sequence`` a level approves only after every required level before it.
4. An order that is CONFIRMED, not on hold and missing no level moves to APPROVED in the same
   version when a level approves, or when levels are required and the proposal changed what
   they depend on (status, hold, amount, currency): the approval is the step. A proposal that
   asks for another status than the rules give is rejected, not silently overruled.
5. An APPROVED order that a change leaves with a level missing (an amount raised across a
   threshold, a currency changed, a level refusing) goes back to CONFIRMED, waiting for it.
6. A refusal puts the order on hold with the reason (``on_refusal``; the comment shortened to
   fit a hold reason), and back to ``on_refusal.status`` if it is past it; the same level
   approving (or its decision cleared) later lifts that reason, and the hold with it when no
   other reason is left and the rules were the ones who set it.

Values are passed as a ``Values`` mapping of field path to parsed value (what the order has
after the proposal), so the functions are plain, testable, and know nothing of state or Kafka.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from hub.domain import lifecycle, notify
from hub.domain.alerts import DueDateAlert, Stage
from hub.domain.notify import Notifications
from hub.domain.fields import DATE, HEADER_FIELDS, LEVEL_NAME, MONEY, STATUS_PATH
from hub.errors import ConfigError

#: Field paths of approvals: ``approvals.<level>``.
APPROVALS_PREFIX = "approvals."
APPROVED, REFUSED = "approved", "refused"
#: The writer of the changes the rules make themselves (in the audit trail and the field's writer).
WORKFLOW_WRITER = ("HUB", "workflow")
#: Statuses an order may enter only with every required approval.
GATED = ("APPROVED", "RELEASED")
#: Statuses in which levels decide.
DECIDING = ("DRAFT", "CONFIRMED", "APPROVED")
#: What a hold reason may hold (``hold_reasons`` entries are texts of up to this many characters).
HOLD_REASON_MAX = 500
#: The pseudo-field ``Values`` carries for who last wrote ``on_hold`` ("SYSTEM:actor").
HOLD_WRITER = "on_hold@writer"

Values = Mapping[str, Any]


@dataclass(frozen=True)
class Level:
    """One approval level: who approves, and from which amount on."""

    name: str
    #: The HUB role that approves this level (``HUB:<role>`` writes ``approvals.<name>``).
    role: str
    #: Thresholds by currency; ``"*"``: any other currency. The level is required above it.
    above: Mapping[str, Decimal]

    @property
    def path(self) -> str:
        """The field this level's decision is written to."""
        return APPROVALS_PREFIX + self.name

    def threshold(self, currency: str | None) -> Decimal | None:
        """The threshold for an amount in ``currency``; None when the level does not apply to it."""
        return self.above.get(currency or "*", self.above.get("*"))


@dataclass(frozen=True)
class Approvals:
    """The ``approvals:`` section."""

    levels: tuple[Level, ...]
    #: Amount fields, first set one counts.
    amount: tuple[str, ...] = ("amounts.gross", "amounts.net", "amounts.crm_expected")
    #: True: a level only after every required level before it (``order: sequence``).
    in_sequence: bool = False
    #: Where a refusal sends an order past it, and the hold reason it gets.
    refusal_status: str = "CONFIRMED"
    refusal_reason: str = "approval refused"

    def level(self, name: str) -> Level | None:
        """The level called ``name``."""
        return next((level for level in self.levels if level.name == name), None)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every level's field path."""
        return tuple(level.path for level in self.levels)


@dataclass(frozen=True)
class Workflow:
    """The whole workflow file."""

    approvals: Approvals | None = None
    #: The due-date alert (``hub.domain.alerts``).
    due_date_alert: DueDateAlert | None = None
    #: Who is told what (``hub.domain.notify``).
    notifications: Notifications | None = None
    source: str = "workflow rules"

    @classmethod
    def load(cls, path: Path) -> "Workflow":
        """Read workflow.yaml; ConfigError names the key that is wrong and says what it should be."""
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read workflow rules: {exc}") from exc
        return cls.parse(doc, str(path))

    @classmethod
    def parse(cls, doc: Any, source: str = "workflow rules") -> "Workflow":
        """The workflow in a parsed YAML document."""
        if not isinstance(doc, dict):
            raise ConfigError(f"{source}: expected a mapping of sections (approvals: ...)")
        if unknown := sorted(set(doc) - {"approvals", "due_date_alert", "notifications"}):
            raise ConfigError(f"{source}: unknown sections {unknown}; known: approvals, due_date_alert, notifications")
        approvals = _approvals(doc["approvals"], f"{source}: approvals") if doc.get("approvals") is not None else None
        alert = doc.get("due_date_alert")
        notifications = doc.get("notifications")
        return cls(approvals=approvals, source=source,
                   due_date_alert=_due_date_alert(alert, f"{source}: due_date_alert") if alert is not None else None,
                   notifications=notify.parse(notifications, f"{source}: notifications")
                   if notifications is not None else None)


def _approvals(doc: Any, where: str) -> Approvals:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping with levels:")
    if unknown := sorted(set(doc) - {"amount", "order", "levels", "on_refusal"}):
        raise ConfigError(f"{where}: unknown keys {unknown}; known: amount, order, levels, on_refusal")
    amount = _fields_of_kind(doc.get("amount", Approvals.amount), MONEY, "money", f"{where}.amount")
    order = doc.get("order", "any")
    if order not in ("any", "sequence"):
        raise ConfigError(f"{where}.order: {order!r} is neither 'any' nor 'sequence'")
    levels_doc = doc.get("levels")
    if not isinstance(levels_doc, list) or not levels_doc:
        raise ConfigError(f"{where}.levels: expected a list of {{level, role, above}}")
    levels = tuple(_level(entry, f"{where}.levels[{index}]") for index, entry in enumerate(levels_doc))
    _unique([level.name for level in levels], f"{where}.levels", "level")
    refusal = doc.get("on_refusal") or {}
    if not isinstance(refusal, dict) or set(refusal) - {"status", "hold_reason"}:
        raise ConfigError(f"{where}.on_refusal: expected {{status, hold_reason}}")
    status = refusal.get("status", "CONFIRMED")
    if status not in ("DRAFT", "CONFIRMED"):
        raise ConfigError(f"{where}.on_refusal.status: {status!r}: a refused order goes back to DRAFT or CONFIRMED")
    reason = refusal.get("hold_reason", "approval refused")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 100:
        raise ConfigError(f"{where}.on_refusal.hold_reason: expected a text of 1 to 100 characters")
    return Approvals(levels=levels, amount=amount, in_sequence=order == "sequence",
                     refusal_status=status, refusal_reason=reason.strip())


def _level(doc: Any, where: str) -> Level:
    if not isinstance(doc, dict) or set(doc) != {"level", "role", "above"}:
        raise ConfigError(f"{where}: expected exactly {{level, role, above}}, got {doc!r}")
    name, role, above = _name(doc["level"], f"{where}.level"), _role(doc["role"], f"{where}.role"), doc["above"]
    thresholds = above if isinstance(above, dict) else {"*": above}
    if "*" not in thresholds:  # a currency left out would need nobody's approval
        raise ConfigError(f"{where}.above: give '*' too, the threshold for every other currency")
    parsed = {}
    for currency, figure in thresholds.items():
        if currency != "*" and not (isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)):
            raise ConfigError(f"{where}.above: {currency!r} is not an ISO 4217 code (or '*' for any other)")
        try:
            value = Decimal(str(figure))
            if isinstance(figure, bool) or not value.is_finite() or value < 0:
                raise InvalidOperation
        except InvalidOperation:
            raise ConfigError(f"{where}.above.{currency}: {figure!r} is not an amount >= 0") from None
        parsed[currency] = value
    return Level(name=name, role=role, above=parsed)


def _due_date_alert(doc: Any, where: str) -> DueDateAlert:
    if not isinstance(doc, dict) or set(doc) - {"date", "stages", "interval_s"}:
        raise ConfigError(f"{where}: expected a mapping with date, stages, interval_s")
    date = _fields_of_kind(doc.get("date", DueDateAlert.date), DATE, "date", f"{where}.date")
    stages_doc = doc.get("stages")
    if not isinstance(stages_doc, list) or not stages_doc:
        raise ConfigError(f"{where}.stages: expected a list of {{stage, within_days, notify}}")
    stages = []
    for index, entry in enumerate(stages_doc):
        at = f"{where}.stages[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"stage", "within_days", "notify"}:
            raise ConfigError(f"{at}: expected exactly {{stage, within_days, notify}}, got {entry!r}")
        days = entry["within_days"]
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 366:
            raise ConfigError(f"{at}.within_days: {days!r}: whole days from 0 to 366")
        stages.append(Stage(_name(entry["stage"], f"{at}.stage"), days, _role(entry["notify"], f"{at}.notify")))
    _unique([stage.name for stage in stages], f"{where}.stages", "stage")
    interval = doc.get("interval_s", DueDateAlert.interval_s)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 1 <= interval <= 86400:
        raise ConfigError(f"{where}.interval_s: {interval!r}: seconds from 1 to 86400")
    return DueDateAlert(stages=tuple(stages), date=date, interval_s=float(interval))


def _fields_of_kind(value: Any, kind: Any, what: str, where: str) -> tuple[str, ...]:
    """A header field of ``kind`` or a list of them (``amounts.gross``, ``[promised_delivery, ...]``)."""
    paths = [value] if isinstance(value, str) else value
    known = sorted(p for p, k in HEADER_FIELDS.items() if k is kind)
    if not isinstance(paths, (list, tuple)) or not paths:
        raise ConfigError(f"{where}: {value!r}: expected {what} fields of the order ({', '.join(known)})")
    for path in paths:
        if not isinstance(path, str) or path not in known:
            raise ConfigError(f"{where}: {path!r} is not a {what} field of the order; expected {what} fields "
                              f"({', '.join(known)})")
    return tuple(paths)


def _name(value: Any, where: str) -> str:
    """A level's or stage's name: lower-case letters, digits and _, as field paths take it."""
    if not isinstance(value, str) or not LEVEL_NAME.fullmatch(value):
        raise ConfigError(f"{where}: {value!r}: lower-case letters, digits and _, starting with a letter")
    return value


def _role(value: Any, where: str) -> str:
    """A HUB role's name."""
    if not isinstance(value, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", value):
        raise ConfigError(f"{where}: {value!r}: a HUB role name such as sales_manager")
    return value


def _unique(names: list[str], where: str, what: str) -> None:
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ConfigError(f"{where}: {what} names must be unique; repeated: {repeated}")


# --- the rules --------------------------------------------------------------------------


def amount_of(approvals: Approvals, values: Values) -> Decimal | None:
    """The amount thresholds compare (rule 1): the first amount field the order has."""
    for path in approvals.amount:
        if values.get(path) is not None:
            return Decimal(values[path])
    return None


def required(approvals: Approvals, values: Values) -> tuple[Level, ...]:
    """The levels the order's amount needs, in the file's order (rule 1)."""
    amount = amount_of(approvals, values)
    if amount is None:
        return ()
    currency = values.get("currency")
    return tuple(level for level in approvals.levels
                 if (threshold := level.threshold(currency)) is not None and amount > threshold)


def decision_of(values: Values, level: Level) -> str | None:
    """``approved``, ``refused``, or None when the level has not decided."""
    value = values.get(level.path)
    return value.get("decision") if isinstance(value, dict) else None


def missing(approvals: Approvals, values: Values) -> tuple[Level, ...]:
    """The required levels that have not approved."""
    return tuple(level for level in required(approvals, values) if decision_of(values, level) != APPROVED)


def errors(approvals: Approvals, before: Values, after: Values, touched: Iterable[str]) -> list[tuple[str, str, str]]:
    """Why the change from ``before`` to ``after`` breaks rule 3, as (field, rule, message); empty if not."""
    found = []
    touched = set(touched)
    status, previous = after.get(STATUS_PATH), before.get(STATUS_PATH)
    deciding = sorted(path for path in touched if path.startswith(APPROVALS_PREFIX))
    if deciding and (previous or "DRAFT") not in DECIDING:
        found += [(path, f"workflow.approvals: levels decide while {', '.join(DECIDING)}",
                   f"the order is {previous}: approvals are decided before it is released") for path in deciding]
    if amount_of(approvals, before) is not None and amount_of(approvals, after) is None:
        found.append((approvals.amount[0], "workflow.approvals.amount: the amount is kept once set",
                      f"the amount approvals compare ({', '.join(approvals.amount)}) can be changed, not cleared"))
    if status != previous and status in GATED and (waiting := missing(approvals, after)):
        names = ", ".join(level.name for level in waiting)
        found.append((STATUS_PATH, f"workflow.approvals: {status} needs every required level",
                      f"the order cannot be {status} before {names} approved "
                      f"(amount {amount_of(approvals, after)} {after.get('currency') or ''})".rstrip()))
    if approvals.in_sequence:
        needed = required(approvals, after)
        for path in deciding:
            level = approvals.level(path.removeprefix(APPROVALS_PREFIX)) if path.startswith(APPROVALS_PREFIX) else None
            if level is None or decision_of(after, level) != APPROVED or level not in needed:
                continue
            earlier = [other.name for other in needed[:needed.index(level)] if decision_of(after, other) != APPROVED]
            if earlier:
                found.append((path, "workflow.approvals.order: sequence",
                              f"{level.name} approves after {', '.join(earlier)}"))
    return found


def consequences(approvals: Approvals, before: Values, after: Values, touched: Iterable[str]) -> dict[str, Any]:
    """The changes the rules make themselves (rules 4-6), as path -> parsed value; empty when none."""
    touched = set(touched)
    status = after.get(STATUS_PATH) or "DRAFT"
    reasons = list(after.get("hold_reasons") or [])
    held = after.get("on_hold") is True
    approved_now = False
    for level in approvals.levels:
        if level.path not in touched or before.get(level.path) == after.get(level.path):
            continue
        mark = f"{approvals.refusal_reason} ({level.name})"
        if decision_of(after, level) == REFUSED:  # rule 6: on hold, and back
            comment = (after.get(level.path) or {}).get("comment")
            reason = f"{mark}: {comment}" if comment else mark
            reason = reason if len(reason) <= HOLD_REASON_MAX else reason[:HOLD_REASON_MAX - 3] + "..."
            reasons = [r for r in reasons if not r.startswith(mark)] + [reason]
            held = True
            if status in ("CONFIRMED", "APPROVED") and _past(status, approvals.refusal_status):
                status = approvals.refusal_status
            continue
        approved_now = approved_now or decision_of(after, level) == APPROVED
        kept = [r for r in reasons if not r.startswith(mark)]
        if len(kept) != len(reasons):  # this level's refusal lifted; the hold too, if the rules set it
            reasons = kept
            held = held and (bool(kept) or after.get(HOLD_WRITER) != ":".join(WORKFLOW_WRITER))
    waiting = missing(approvals, after)
    depends = touched & {STATUS_PATH, "on_hold", "hold_reasons", "currency", *approvals.amount}
    if status == "APPROVED" and waiting:  # rule 5
        status = "CONFIRMED"
    elif status == "CONFIRMED" and not held and not waiting and (
            approved_now or (depends and required(approvals, after))):
        status = "APPROVED"  # rule 4
    derived: dict[str, Any] = {}
    for path, value, was in ((STATUS_PATH, status, after.get(STATUS_PATH) or "DRAFT"),
                             ("hold_reasons", reasons, list(after.get("hold_reasons") or [])),
                             ("on_hold", held, after.get("on_hold") is True)):
        if value != was:
            derived[path] = value
    return derived


def _past(status: str, target: str) -> bool:
    """Whether ``status`` lies after ``target`` on the main path."""
    path = lifecycle.MAIN_PATH
    return status in path and path.index(status) > path.index(target)
