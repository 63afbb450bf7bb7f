"""Salesforce -> the hub: a won opportunity (and every later change to it) as an order change.

Change events arrive by webhook (``CrmWebhook``): signed, refused when stale, our own writes
(changeOrigin ``client=<client id>``) dropped. Each event only says *which* opportunity
changed: the record and its lines are read again, so the change always carries the whole
current picture and a lost or repeated event does no harm. Polling by SystemModstamp is the
fallback and the recovery after a gap. Both paths name a change by the record's id and
SystemModstamp, so the same state read twice is one event id: the hub decides it once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Awaitable, Callable, Sequence

from connectors.crm.client import CrmRecordRefused, Opportunity, OpportunityClient
from connectors.crm.mapping import crm_reference, is_won, order_changes_for
from connectors.crm.webhook import WebhookRefused, is_own_write, parse_change_event, verify
from hub.sdk import Actor, ExternalRef, OutsideChange, Polled, Unmappable

log = logging.getLogger(__name__)


def opportunity_change(client: OpportunityClient, opp: Opportunity) -> OutsideChange | Unmappable | None:
    """The order change a won opportunity makes (None while it is not won)."""
    if not is_won(opp):
        return None
    try:
        lines = client.line_items(opp.id)
        account = client.account(opp.account_id) if opp.account_id else None
        if account is None:
            raise CrmRecordRefused("a won opportunity needs an account", field="Opportunity.AccountId", record_id=opp.id)
        contact = client.contact(opp.contact_id) if opp.contact_id else None
        values = order_changes_for(opp, lines, account, contact=contact)
    except CrmRecordRefused as exc:
        return Unmappable({"Opportunity": opp.id}, str(exc), key=opp.id)
    return OutsideChange(
        ref=ExternalRef(**crm_reference(opp)), event_id=f"crm:{opp.id}:{opp.system_modstamp.isoformat()}",
        values=values, create=True, actor=Actor(id=opp.owner_id or "crm", role="sales"),
        occurred_at=opp.system_modstamp, comment=f"Salesforce opportunity {opp.name or opp.id}")


def poll_changes(client: OpportunityClient, cursor: dict[str, Any]) -> Polled:
    """Opportunities changed since the cursor (SOQL is exact to the second: the records of the last
    second are read again, and the ones already seen there are skipped)."""
    since = dt.datetime.fromisoformat(cursor["since"]) if "since" in cursor else dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    seen = set(cursor.get("seen", []))
    changes: list[OutsideChange | Unmappable] = []
    latest, at_latest = since, set(seen)
    for opp in client.changed_since(since):
        stamp = f"{opp.id}@{opp.system_modstamp.isoformat()}"
        if stamp in seen:
            continue
        if (change := opportunity_change(client, opp)) is not None:
            changes.append(change)
        second = opp.system_modstamp.replace(microsecond=0)
        if second > latest:
            latest, at_latest = second, set()
        at_latest.add(stamp)
    return Polled(changes, {"since": latest.isoformat(), "seen": sorted(at_latest)})


class CrmWebhook:
    """The HTTP endpoint Salesforce's change events are pushed to (aiohttp)."""

    def __init__(self, client: OpportunityClient, secret: str, client_id: str, max_age_s: float,
                 emit: Callable[[Sequence[OutsideChange | Unmappable]], Awaitable[Any]],
                 on_gap: Callable[[], None] | None = None) -> None:
        self.client, self.secret, self.client_id, self.max_age_s, self.emit = client, secret, client_id, max_age_s, emit
        self.on_gap = on_gap
        self._last_replay: int | None = None
        self._runner: Any = None

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` for POSTs to ``/crm/events``."""
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/crm/events", self.receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def receive(self, request: Any) -> Any:
        """One change event: 401 unless signed and fresh; 200 once what it says is durable."""
        from aiohttp import web

        body = await request.read()
        try:
            verify(body, request.headers, self.secret, now=dt.datetime.now(dt.UTC), max_age_s=self.max_age_s)
        except WebhookRefused as exc:
            log.warning("refused a change event: %s", exc)
            return web.json_response({"error": str(exc)}, status=401)
        try:
            event = parse_change_event(body)
        except CrmRecordRefused as exc:
            await self.emit([Unmappable(body, f"not a change event: {exc}", error=exc)])
            return web.json_response({"dead_lettered": str(exc)})
        jumped = event.replay_id is not None and self._last_replay is not None and event.replay_id > self._last_replay + 1
        if event.replay_id is not None:  # every event counts, ignored ones too: a jump means some were lost
            self._last_replay = max(event.replay_id, self._last_replay or 0)
        if is_own_write(event, self.client_id) or event.entity_name != "Opportunity":
            if jumped and self.on_gap is not None:
                self.on_gap()
            return web.json_response({"ignored": event.entity_name})
        changes: list[OutsideChange | Unmappable] = []
        for record_id in event.record_ids:
            try:  # an id Salesforce no longer has (a delete), or a record it cannot give: a dead letter
                opp = await asyncio.to_thread(self.client.opportunity, record_id)
            except CrmRecordRefused as exc:
                changes.append(Unmappable(body, f"opportunity {record_id}: {exc}", key=record_id, error=exc))
                continue
            if (change := await asyncio.to_thread(opportunity_change, self.client, opp)) is not None:
                changes.append(change)
        if (event.change_type.startswith("GAP_") or jumped) and self.on_gap is not None:
            self.on_gap()  # events were lost: poll now, and re-read what changed since the cursor
        await self.emit(changes)
        return web.json_response({"accepted": len(changes)})
