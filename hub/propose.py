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

The proposal goes to the proposals topic like any connector's, through ``hub.client.HubClient``;
the command then prints the hub's answer for its event id: created/applied/merged/resolved with
the diffs, unchanged, a conflict (kept or parked), a rejection with every field error, or a
duplicate (the event id was decided before).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub.domain.fields import canonical_json
from hub.client import Decided, HubClient
from hub.errors import InvalidInput
from hub.events import ChangeProposal, ProposalOutcome
from hub.readmodel import diff_text
from hub.settings import Settings


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


def decision_text(decided: Decided) -> str:
    """For a person: what happened, then the fields it happened to."""
    answer, lines = decided.answer, []
    order = f"(order id {answer.order_id})" if answer.order_id else ""
    if (change := decided.change) is not None:
        lines.append(f"{change.outcome.value}: {change.order_number} version {change.version} (order id {change.order_id})")
        lines += [f"  {diff_text(d.model_dump())}" for d in change.diffs]
        lines += [f"  + cross-reference {x.system}/{x.object_type}/{x.external_id}" for x in change.external_refs_added]
    if (conflict := decided.conflict) is not None:
        what = "PARKED for a person" if conflict.parked else "CONFLICT"
        lines.append(f"{what}: {conflict.order_number} (base version {conflict.base_version}, "
                     f"current {conflict.current_version})")
        lines += [f"  {f.field}: {f.outcome.value} by {f.policy.value} (current {f.current_value}, "
                  f"proposed {f.proposed_value})" + (f": {f.reason}" if f.reason else "") for f in conflict.fields]
    if (rejection := decided.rejection) is not None:
        lines.append(f"REJECTED {rejection.reason.value}" + (f": order id {rejection.order_id}" if rejection.order_id else ""))
        lines += [f"  {_error_text(e.field, e.message)} [{e.rule}]" for e in rejection.errors]
    if not lines:  # unchanged, duplicate, or the details did not come in time: the answer alone
        at = f" at version {answer.version}" if answer.version is not None else ""
        lines.append(f"{answer.outcome.value}: {answer.order_number or '-'}{at} {order}".rstrip())
        if answer.message:
            lines.append(f"  {answer.message}")
    return "\n".join(lines)


def _error_text(field: str | None, message: str) -> str:
    if field is None:
        return f"(proposal): {message}"
    return message if message.startswith(f"{field}: ") else f"{field}: {message}"


async def propose(settings: Settings, proposal: ChangeProposal, *, wait_s: float | None = 30.0) -> Decided | None:
    """Send the proposal; with ``wait_s``, return the hub's answer (``BrokerUnavailable`` if none comes)."""
    async with HubClient(settings, details=wait_s is not None) as client:
        if wait_s is None:
            await client.send(proposal)
            return None
        return await client.propose(proposal, timeout_s=wait_s)


def propose_file(settings: Settings, path: str, *, wait_s: float | None) -> int:
    """The command: load ``path`` (``-``: standard input), send it, print the answer.

    Exit status 0 when the order now has what the file asks for (a new version, or unchanged
    because it already had it), 1 otherwise (rejected, parked, kept, or a duplicate event id).
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the proposal: {exc}") from None
    proposal = load_proposal(text)
    decided = asyncio.run(propose(settings, proposal, wait_s=wait_s))
    if decided is None:
        print(f"sent {proposal.event_id} (key {proposal.order_ref.key})")
        return 0
    print(decision_text(decided))
    return 0 if decided.accepted or decided.outcome == ProposalOutcome.UNCHANGED else 1
