"""Notifications (workflow.yaml ``notifications:``): who is told what, for each event the hub records.

Pure functions of one recorded event (an accepted change, a parked conflict, a rejection, a due-date
alert) and what the hub knew of its order, so a worker can call them for every record it reads,
again after a crash, and get the same answer:

1. What happened (a ``Notice``), by kind:
   ``status_changed``    an accepted change whose diffs include the status (its new status);
   ``approval_waiting``  an accepted change after which the order waits for approval levels it did
                         not wait for before: it waits while it is CONFIRMED and not on hold, for
                         the levels missing (with ``order: sequence``, the next one). So it is told
                         when the order becomes CONFIRMED, when an amount crosses a threshold, when
                         a hold is lifted, and when the previous level of a sequence approved;
                         addressed to the roles of the newly waiting levels only;
   ``alert_raised`` / ``alert_cleared``  a due-date alert, addressed to the role of its stage;
   ``conflict_parked``   a conflict the hub parked for a person;
   ``proposal_rejected`` a proposal refused whole, with its errors.
2. Who is told: every subscriber whose ``events`` name the kind, whose ``statuses`` (when given)
   name the order's status after the event, and whose ``role`` the notice is addressed to. A
   notice addressed to roles reaches subscribers of those roles and subscribers with no role (a
   shop-floor display, an integration); a notice addressed to no role reaches every subscriber
   of its kind.
3. A notification's id is derived from the record it comes from, its kind and the subscriber: the
   same record read twice (a redelivery, a restart) makes the same id, which the outbox keeps once
   and receivers dedup by.
4. A notification says what changed (the diffs), on which order (number, customer, due date,
   status), by whom (system, actor, role), when, and links to the order's page (``link``).
5. What a change made of the order is computed from what is known of the order and the change's
   diffs (``around``): the fields the change touched are always the diffs' own, so its status before
   and after are exact whatever else is known.

The configuration is data read once at start; a mistake stops the worker naming the key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from hub.domain.fields import load_json
from hub.domain.lifecycle import LIFECYCLE
from hub.errors import ConfigError

STATUS_CHANGED = "status_changed"
APPROVAL_WAITING = "approval_waiting"
ALERT_RAISED = "alert_raised"
ALERT_CLEARED = "alert_cleared"
CONFLICT_PARKED = "conflict_parked"
PROPOSAL_REJECTED = "proposal_rejected"
KINDS = (STATUS_CHANGED, APPROVAL_WAITING, ALERT_RAISED, ALERT_CLEARED, CONFLICT_PARKED, PROPOSAL_REJECTED)
CHANNELS = ("email", "webhook", "mqtt")
#: The due date a notification names: the first of these the order has.
DUE_DATE_FIELDS = ("promised_delivery", "requested_delivery")


@dataclass(frozen=True)
class Subscriber:
    """One receiver: a person's mailbox, an HTTP endpoint, or an MQTT topic."""

    name: str
    channel: str
    #: The address: an e-mail address, a URL, or an MQTT topic.
    target: str
    events: tuple[str, ...] = KINDS
    statuses: tuple[str, ...] = ()
    role: str | None = None


@dataclass(frozen=True)
class Notifications:
    """The ``notifications:`` section."""

    subscribers: tuple[Subscriber, ...]
    #: The order page's address, with ``{order_id}`` and ``{order_number}`` filled in.
    link: str = "http://127.0.0.1:8080/orders/{order_number}"
    #: The template folder's language (``<templates>/<language>/``).
    language: str = "en"
    #: A folder of the plant's own templates; None: the ones orderhub ships.
    templates: str | None = None
    #: How long a notification is retried before it is kept as undeliverable.
    give_up_after_s: float = 86400.0


@dataclass(frozen=True)
class Notice:
    """One thing that happened to one order, and who it is addressed to (rule 1)."""

    kind: str
    #: The id of the record it comes from (an OrderChange's, an OrderAlert's, ...).
    source_id: str
    order_id: str | None
    order_number: str | None
    #: The order's status after the event (None: not known, e.g. a rejected creation).
    status: str | None
    at: dt.datetime
    #: Who did it: system, actor and role (the hub itself for alerts).
    by: Mapping[str, str]
    #: One line for a person.
    summary: str
    #: The roles it is addressed to; empty: anyone subscribed to the kind.
    roles: tuple[str, ...] = ()
    #: (field, before, after) of every changed field, values as canonical JSON.
    changes: tuple[tuple[str, str | None, str | None], ...] = ()
    #: The order as the hub knew it: customer, due date, ... (canonical JSON values by field path).
    order: Mapping[str, Any] = field(default_factory=dict)
    #: Kind-specific facts: the previous status, the levels waiting, the alert's stage, the errors.
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    """One notice for one subscriber (rules 2-3)."""

    id: str
    subscriber: Subscriber
    notice: Notice


# --- reading the section ------------------------------------------------------------------


def parse(doc: Any, where: str) -> Notifications:
    """The ``notifications:`` section; ConfigError names the key that is wrong."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping with subscribers:")
    known = {"subscribers", "link", "language", "templates", "give_up_after_s"}
    if unknown := sorted(set(doc) - known):
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {', '.join(sorted(known))}")
    entries = doc.get("subscribers")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}.subscribers: expected a list of {{name, email|webhook|mqtt, events, ...}}")
    subscribers = tuple(_subscriber(entry, f"{where}.subscribers[{i}]") for i, entry in enumerate(entries))
    names = [s.name for s in subscribers]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{where}.subscribers: names must be unique; repeated: {repeated}")
    link = doc.get("link", Notifications.link)
    if not isinstance(link, str) or not link.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.link: {link!r}: an http(s) address, with {{order_number}} or {{order_id}}")
    try:
        link.format(order_id="x", order_number="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{where}.link: {link!r}: only {{order_id}} and {{order_number}} are filled in ({exc})") from None
    language = doc.get("language", "en")
    if not isinstance(language, str) or not re.fullmatch(r"[a-z]{2}(_[A-Z]{2})?", language):
        raise ConfigError(f"{where}.language: {language!r}: a language code such as en or de")
    templates = doc.get("templates")
    if templates is not None and not isinstance(templates, str):
        raise ConfigError(f"{where}.templates: a folder path")
    give_up = doc.get("give_up_after_s", Notifications.give_up_after_s)
    if isinstance(give_up, bool) or not isinstance(give_up, (int, float)) or not 1 <= give_up <= 30 * 86400:
        raise ConfigError(f"{where}.give_up_after_s: {give_up!r}: seconds from 1 to 2592000 (30 days)")
    return Notifications(subscribers=subscribers, link=link, language=language, templates=templates,
                         give_up_after_s=float(give_up))


def _subscriber(doc: Any, where: str) -> Subscriber:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping with name and one of email, webhook, mqtt")
    known = {"name", "role", "events", "statuses", *CHANNELS}
    if unknown := sorted(set(doc) - known):
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {', '.join(sorted(known))}")
    name = doc.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name):
        raise ConfigError(f"{where}.name: {name!r}: lower-case letters, digits, '.', '_' and '-'")
    channels = [c for c in CHANNELS if c in doc]
    if len(channels) != 1:
        raise ConfigError(f"{where}: give exactly one of email, webhook, mqtt (got {channels or 'none'})")
    channel = channels[0]
    target = doc[channel]
    checks = {"email": (r"[^@\s]+@[^@\s]+", "an e-mail address"),
              "webhook": (r"https?://\S+", "an http(s) URL"),
              "mqtt": (r"[^#+\s]+", "an MQTT topic without wildcards")}
    pattern, what = checks[channel]
    if not isinstance(target, str) or not re.fullmatch(pattern, target):
        raise ConfigError(f"{where}.{channel}: {target!r}: {what}")
    events = doc.get("events", list(KINDS))
    if events == "all":
        events = list(KINDS)
    if not isinstance(events, list) or not events or any(e not in KINDS for e in events):
        raise ConfigError(f"{where}.events: {events!r}: a list of {', '.join(KINDS)} (or all)")
    statuses = doc.get("statuses", [])
    if not isinstance(statuses, list) or any(s not in LIFECYCLE for s in statuses):
        raise ConfigError(f"{where}.statuses: {statuses!r}: a list of lifecycle statuses ({', '.join(LIFECYCLE)})")
    role = doc.get("role")
    if role is not None and not (isinstance(role, str) and re.fullmatch(r"[a-z][a-z0-9_]*", role)):
        raise ConfigError(f"{where}.role: {role!r}: a HUB role name such as production_lead")
    return Subscriber(name=name, channel=channel, target=target, events=tuple(events), statuses=tuple(statuses),
                      role=role)


# --- the rules ----------------------------------------------------------------------------


def recipients(config: Notifications, notice: Notice) -> list[Notification]:
    """Rules 2 and 3: one notification per subscriber the notice reaches, in the file's order."""
    found = []
    for subscriber in config.subscribers:
        if notice.kind not in subscriber.events:
            continue
        if subscriber.statuses and notice.status not in subscriber.statuses:
            continue
        if notice.roles and subscriber.role is not None and subscriber.role not in notice.roles:
            continue
        found.append(Notification(notification_id(notice, subscriber), subscriber, notice))
    return found


def notification_id(notice: Notice, subscriber: Subscriber) -> str:
    """Rule 3: the same record, kind and subscriber give the same id (32 hex digits)."""
    return hashlib.sha256(f"{notice.source_id}\x1f{notice.kind}\x1f{subscriber.name}".encode()).hexdigest()[:32]


def due_date(order: Mapping[str, Any]) -> str | None:
    """The due date a notification names (ISO), from the order's canonical values."""
    for path in DUE_DATE_FIELDS:
        if order.get(path) is not None:
            return load_json(order[path])
    return None


def link(config: Notifications, notice: Notice) -> str | None:
    """Rule 4: the order page's address."""
    if notice.order_id is None:
        return None
    return config.link.format(order_id=notice.order_id, order_number=notice.order_number or notice.order_id)


def changed(before: Mapping[str, Any], diffs: Iterable[Any]) -> dict[str, Any]:
    """``before`` (canonical values by path) with the diffs' after values applied."""
    after = dict(before)
    for diff in diffs:
        if diff.after is None:
            after.pop(diff.field, None)
        else:
            after[diff.field] = diff.after
    return after


def around(order: Mapping[str, Any], version: int | None, change: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rule 5: the order's values before and after ``change`` (an OrderChange), from what is known of the
    order at ``version`` (None: nothing known). Exact when the order known is the version before the
    change (its diffs applied), the change's own version (its diffs undone), or nothing and the change
    is the creation. Otherwise the known values stand in for the fields the change did not touch, and
    the change's own fields (its status among them) come from its diffs."""
    if version == change.version:
        after, before = dict(order), dict(order)
        for diff in change.diffs:
            if diff.before is None:
                before.pop(diff.field, None)
            else:
                before[diff.field] = diff.before
        return before, after
    before = dict(order) if version is not None else {}
    for diff in change.diffs:  # exact for what the change touched, whatever version is known
        if diff.before is None:
            before.pop(diff.field, None)
        else:
            before[diff.field] = diff.before
    return before, changed(before, change.diffs)


def waiting(approvals: Any, values: Mapping[str, Any]) -> tuple[Any, ...]:
    """The approval levels an order waits for (rule 1): the missing ones (with ``order: sequence``, the
    next one) while it is CONFIRMED and not on hold; none otherwise."""
    from hub.domain import workflow  # here: workflow imports this module to read its section

    parsed = _parsed(values)
    if parsed.get("status") != "CONFIRMED" or parsed.get("on_hold"):
        return ()
    missing = workflow.missing(approvals, parsed)
    return missing[:1] if approvals.in_sequence else missing


def of_change(change: Any, before: Mapping[str, Any], after: Mapping[str, Any],
              approvals: Any | None) -> list[Notice]:
    """Rule 1 for an accepted change (an OrderChange): its status change, and approval levels it made
    waiting (each told once: a level already waiting before the change is not told again)."""
    from hub.domain import workflow

    status_before, status_after = load_json(before.get("status")), load_json(after.get("status"))
    by = {"system": change.source_system, "actor": change.actor.id, "role": change.actor.role}
    common = dict(source_id=change.record_id, order_id=change.order_id, order_number=change.order_number,
                  status=status_after, at=change.accepted_at, by=by, order=dict(after),
                  changes=tuple((d.field, d.before, d.after) for d in change.diffs))
    notices = []
    if any(diff.field == "status" for diff in change.diffs):
        notices.append(Notice(kind=STATUS_CHANGED, summary=f"{change.order_number}: {status_before or 'new'} -> "
                              f"{status_after} by {change.source_system} {change.actor.id}",
                              details={"previous_status": status_before}, **common))
    if approvals is not None:
        before_waiting = waiting(approvals, before)
        new = [level for level in waiting(approvals, after) if level not in before_waiting]
        if new:
            names = ", ".join(level.name for level in new)
            notices.append(Notice(kind=APPROVAL_WAITING, roles=tuple(level.role for level in new),
                                  summary=f"{change.order_number} waits for approval: {names}",
                                  details={"levels": [level.name for level in new],
                                           "amount": str(workflow.amount_of(approvals, _parsed(after))),
                                           "currency": load_json(after.get("currency"))}, **common))
    return notices


def of_alert(alert: Any, order: Mapping[str, Any]) -> Notice:
    """Rule 1 for a due-date alert (an OrderAlert)."""
    raised = alert.kind == "RAISED"
    what = "raised" if raised else "cleared"
    return Notice(kind=ALERT_RAISED if raised else ALERT_CLEARED, source_id=alert.record_id, order_id=alert.order_id,
                  order_number=alert.order_number, status=alert.status, at=alert.decided_at,
                  by={"system": "HUB", "actor": "alerts", "role": "alerts"}, roles=(alert.notify,),
                  summary=f"{alert.order_number}: due-date alert {alert.stage} {what}: {alert.reason}", order=dict(order),
                  details={"stage": alert.stage, "due_date": alert.due_date.isoformat(), "days_left": alert.days_left,
                           "reason": alert.reason, "on_hold": alert.on_hold, "notify": alert.notify})


def of_conflict(conflict: Any, order: Mapping[str, Any]) -> Notice | None:
    """Rule 1 for a conflict (an OrderConflict): a notice only when it was parked for a person."""
    if not conflict.parked:
        return None
    proposal = conflict.proposal
    fields = [f.field for f in conflict.fields]
    return Notice(kind=CONFLICT_PARKED, source_id=conflict.record_id, order_id=conflict.order_id,
                  order_number=conflict.order_number, status=load_json(order.get("status")), at=conflict.decided_at,
                  by={"system": proposal.source_system, "actor": proposal.actor.id, "role": proposal.actor.role},
                  summary=f"{conflict.order_number}: a change to {', '.join(fields)} by {proposal.source_system} "
                          f"{proposal.actor.id} conflicts with version {conflict.current_version}; it waits for a person",
                  order=dict(order),
                  changes=tuple((f.field, f.current_value, f.proposed_value) for f in conflict.fields),
                  details={"base_version": conflict.base_version, "current_version": conflict.current_version,
                           "fields": fields})


def of_rejection(rejection: Any, order: Mapping[str, Any], order_number: str | None) -> Notice:
    """Rule 1 for a proposal refused whole (an OrderRejection)."""
    proposal = rejection.proposal
    errors = [{"field": e.field, "rule": e.rule, "message": e.message} for e in rejection.errors]
    about = order_number or rejection.order_id or _reference(proposal)
    return Notice(kind=PROPOSAL_REJECTED, source_id=rejection.record_id, order_id=rejection.order_id,
                  order_number=order_number, status=load_json(order.get("status")), at=rejection.decided_at,
                  by={"system": proposal.source_system, "actor": proposal.actor.id, "role": proposal.actor.role},
                  summary=f"{about}: a proposal by {proposal.source_system} {proposal.actor.id} was rejected "
                          f"({rejection.reason.value}): {errors[0]['message'] if errors else 'no reason given'}",
                  order=dict(order), changes=tuple((c.field, None, c.value) for c in proposal.changes),
                  details={"reason": rejection.reason.value, "errors": errors, "event_id": rejection.event_id})


def _reference(proposal: Any) -> str:
    ref = proposal.order_ref
    if ref.order_id:
        return ref.order_id
    if ref.external is not None:
        return f"{ref.external.system}/{ref.external.object_type}/{ref.external.external_id}"
    return "a new order"


def _parsed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {path: load_json(text) for path, text in values.items()}
