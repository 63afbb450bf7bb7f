"""``orderhub trace ORDER``: one order's whole flow across systems, in time order, from the audit trail.

What it reads: the read model's history (every accepted change: which system, who, what changed,
which outside references it attached, its correlation id), its conflicts, refused proposals and
due-date alerts, and the notifier's outbox on this machine (what was told to whom), when there is
one.

1. One line per event, oldest first; events at the same instant keep the order their kind has in
   the flow (a change before the conflict, alert or notification it caused).
2. The header names the order and its flow's correlation id: the one its creation carried
   (``hub.correlation``). A line whose change carried another one says so; a change recorded
   before correlation ids were kept has none and says nothing.

``flow`` is rules 1 and 2 over plain values: what the tests check.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Iterable

from hub.settings import Settings

#: The order of kinds at the same instant (rule 1).
_KINDS = ("change", "conflict", "rejection", "alert", "notification")


@dataclass(frozen=True)
class Step:
    """One event of an order's flow."""

    at: dt.datetime
    kind: str
    system: str
    who: str
    what: str
    correlation_id: str | None = None


def flow(steps: Iterable[Step], correlation_id: str | None) -> list[str]:
    """Rules 1 and 2: the lines of a flow (without its header)."""
    lines = []
    for step in sorted(steps, key=lambda s: (s.at, _KINDS.index(s.kind))):
        other = f"  [correlation {step.correlation_id}]" if step.correlation_id not in (None, correlation_id) else ""
        stamp = step.at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        lines.append(f"{stamp}  {step.system:<4} {step.who:<24} {step.what}{other}")
    return lines


def steps_of(model: Any, order_id: str, notifications: Iterable[Any] = ()) -> tuple[list[Step], str | None]:
    """The order's events from the read model (and notifications from an outbox), with the flow's
    correlation id (the creation's)."""
    history = model.history(order_id)
    steps = []
    for entry in history:
        changed = ", ".join(f"{d.field} {_short(d.after)}" for d in entry.diffs[:6])
        more = f" (+{len(entry.diffs) - 6} more)" if len(entry.diffs) > 6 else ""
        did = [changed + more] if changed else []
        did += [f"+ {r.system} {r.object_type} {r.external_number or r.external_id}" for r in entry.refs_added]
        steps.append(Step(entry.accepted_at, "change", entry.source_system, f"{entry.actor_id} ({entry.actor_role})",
                          f"version {entry.version} {entry.outcome.value}: {'; '.join(did)}", entry.correlation_id))
    for conflict in model.conflicts(order_id):
        fields = ", ".join(f"{f.field} {f.outcome.value}" for f in conflict.fields)
        steps.append(Step(conflict.decided_at, "conflict", "HUB", "engine",
                          f"conflict on version {conflict.current_version}: {fields}"))
    for rejection in model.rejections(order_id):
        proposal = rejection.proposal
        steps.append(Step(rejection.decided_at, "rejection", proposal.source_system,
                          f"{proposal.actor.id} ({proposal.actor.role})",
                          f"refused ({rejection.reason.value}): " + "; ".join(e.message for e in rejection.errors)))
    for alert in model.alerts(order_id):
        steps.append(Step(alert.decided_at, "alert", "HUB", "due-date alerts",
                          f"alert {alert.stage} {alert.kind.lower()}: {alert.reason}"))
    for note in notifications:
        at = dt.datetime.fromtimestamp(note.delivered_at or note.created_at, dt.timezone.utc)
        steps.append(Step(at, "notification", "HUB", f"notify {note.subscriber}",
                          f"{note.kind} by {note.channel} ({note.state}): {note.message.get('subject', '')}"))
    return steps, (history[0].correlation_id if history else None)


def trace_text(settings: Settings, order: str) -> str:
    """The command's output."""
    from hub.notify.outbox import Outbox
    from hub.readmodel import opened_order
    from hub.streams.notify import outbox_path

    with opened_order(settings, order) as (model, order_id):
        snapshot = model.order(order_id)
        notes: list[Any] = []
        if outbox_path(settings).exists():
            outbox = Outbox(outbox_path(settings))
            try:
                notes = outbox.listing(order_id=order_id, limit=1000)
            finally:
                outbox.close()
        steps, correlation_id = steps_of(model, order_id, notes)
    header = (f"{snapshot.order_number} (order {order_id}), now {snapshot.status.value} at version {snapshot.version}; "
              f"correlation id {correlation_id or '(none recorded)'}")
    return "\n".join([header, *flow(steps, correlation_id)])


def _short(value: str | None, width: int = 40) -> str:
    if value is None:
        return "-"
    try:
        shown = json.loads(value)
    except ValueError:
        shown = value
    text = shown if isinstance(shown, str) else json.dumps(shown, separators=(",", ":"))
    return text if len(text) <= width else text[:width - 3] + "..."
