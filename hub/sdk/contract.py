"""The contract test kit: one suite every connector runs, built-in or third-party.

Subclass ``ConnectorContract`` in the connector's tests and give it the outside system::

    class TestAcme(ConnectorContract):
        @pytest.fixture
        def peer(self, tmp_path): ...                     # the outside system (a sandbox), fresh per test
        def make_connector(self, peer): ...               # a connector configured against it
        async def put_outside_order(self, peer, key): ... # a record that creates an order there
        async def put_unmappable(self, peer): ...         # a record the connector cannot map
        def outside_orders(self, peer, order_id): ...     # how many outside objects carry this hub order

The suite needs no Kafka: it drives the connector through the runtime's own steps (mapping,
echo suppression, the durable outbox and cursor) and checks the proposals against the hub's
real decision rules (``hub.domain.decide``), so a connector that passes makes proposals the
hub accepts. Connectors without a source (or without a sink) skip nothing: those tests check
that the side is absent as declared.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from hub.domain.decide import DecisionKind, decide
from hub.domain.rules import Rules
from hub.events import ChangeProposal, OrderRelease, OrderSnapshot, ReleaseLine
from hub.sdk.connector import Connector, OutsideChange, Unmappable
from hub.sdk.runtime import ConnectorRuntime
from hub.sdk.store import ConnectorStore
from hub.settings import Settings

AT = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.timezone.utc)


class ConnectorContract:
    """The contract every connector keeps; subclass it and implement the five hooks above."""

    # --- what a connector's test provides ---------------------------------------------------

    def make_connector(self, peer: Any) -> Connector:
        raise NotImplementedError

    async def put_outside_order(self, peer: Any, key: str) -> None:
        raise NotImplementedError

    async def put_unmappable(self, peer: Any) -> None:
        raise NotImplementedError

    def outside_orders(self, peer: Any, order_id: str) -> int:
        raise NotImplementedError

    async def sink_snapshot(self, peer: Any, snapshot: OrderSnapshot) -> OrderSnapshot:
        """The order the sink test delivers; a connector whose sink updates an outside object that
        exists already (the CRM's opportunity) makes it there and attaches its reference."""
        return snapshot

    # --- the harness ------------------------------------------------------------------------

    @pytest.fixture
    def hub_settings(self, tmp_path: Path) -> Settings:
        return Settings(state_dir=tmp_path / "state")

    def runtime(self, connector: Connector, settings: Settings, name: str = "contract") -> ConnectorRuntime:
        return ConnectorRuntime(connector, instance=name, settings=settings)

    async def polled(self, connector: Connector, cursor: dict[str, Any]) -> tuple[list, dict[str, Any]]:
        result = await connector.poll(cursor)
        assert result is not None, "a connector with a source returns Polled from poll()"
        return list(result.changes), result.cursor

    def proposals(self, runtime: ConnectorRuntime) -> list[ChangeProposal]:
        pending = runtime.store.pending()
        return [ChangeProposal.from_avro(runtime.codec.decode(p.value).value) for p in pending if p.role == "proposals"]

    def created(self, settings: Settings, proposal: ChangeProposal) -> OrderSnapshot:
        decision = decide(None, proposal, order_id="contract-order", rules=Rules.load(settings.ownership_file),
                          at=AT, next_order_number=lambda: "ORD-2026-00-000001")
        assert decision.kind == DecisionKind.CREATED, (
            f"the hub refuses the connector's creation: {decision.rejection and decision.rejection.errors}")
        return decision.snapshot

    # --- the contract -------------------------------------------------------------------------

    async def test_mapping_round_trip(self, peer: Any, hub_settings: Settings) -> None:
        """An outside order becomes a creation the hub's own rules accept (mandatory fields, ownership)."""
        connector = self.make_connector(peer)
        if not connector.has_source():
            assert connector.poll.__qualname__.startswith("Connector."), "no source declared, none run"
            return
        await connector.start()
        try:
            await self.put_outside_order(peer, "A-1")
            changes, cursor = await self.polled(connector, {})
            runtime = self.runtime(connector, hub_settings)
            await runtime.emit(changes, cursor)
            (proposal,) = [p for p in self.proposals(runtime) if p.intent.value == "CREATE"]
            snapshot = self.created(hub_settings, proposal)
            assert snapshot.lines, "a created order has its lines"
        finally:
            await connector.stop()

    async def test_echo_of_the_hubs_values_is_not_proposed(self, peer: Any, hub_settings: Settings) -> None:
        """Loop suppression: once the hub has published what the outside system says, reading it again proposes nothing."""
        connector = self.make_connector(peer)
        if not connector.has_source():
            return
        await connector.start()
        try:
            await self.put_outside_order(peer, "A-2")
            changes, _ = await self.polled(connector, {})
            first = self.runtime(connector, hub_settings, "first")
            await first.emit(changes)
            snapshot = self.created(hub_settings, self.proposals(first)[0])
            echo = self.runtime(connector, hub_settings, "echo")
            echo.store.remember([snapshot], {})
            await echo.emit([c for c in changes if isinstance(c, OutsideChange)])
            assert self.proposals(echo) == [] and echo.counts["suppressed"] >= 1
        finally:
            await connector.stop()

    async def test_unmappable_input_is_dead_lettered_and_the_next_flows(self, peer: Any, hub_settings: Settings) -> None:
        """A record the connector cannot map goes to the dead letters with the reason; the good one after it is proposed."""
        connector = self.make_connector(peer)
        if not connector.has_source():
            return
        await connector.start()
        try:
            await self.put_unmappable(peer)
            await self.put_outside_order(peer, "A-3")
            changes, cursor = await self.polled(connector, {})
            assert any(isinstance(c, Unmappable) and c.reason for c in changes), "the bad record is named"
            runtime = self.runtime(connector, hub_settings)
            await runtime.emit(changes, cursor)
            roles = [p.role for p in runtime.store.pending()]
            assert "dead_letters" in roles and "proposals" in roles
            dead = next(p for p in runtime.store.pending() if p.role == "dead_letters")
            assert dict(dead.headers)["__orderhub.errors.exception.message"]
        finally:
            await connector.stop()

    async def test_cursor_resumes_after_a_restart(self, peer: Any, hub_settings: Settings) -> None:
        """A poll from the stored cursor finds nothing already found; a restarted instance starts from that cursor."""
        connector = self.make_connector(peer)
        if not connector.has_source():
            return
        await connector.start()
        try:
            await self.put_outside_order(peer, "A-4")
            changes, cursor = await self.polled(connector, {})
            runtime = self.runtime(connector, hub_settings)
            await runtime.emit(changes, cursor)
            runtime.store.close()
            again = ConnectorStore(runtime.store.path)
            assert again.cursor() == cursor
            repeated, _ = await self.polled(connector, again.cursor())
            seen = {c.event_id for c in changes if isinstance(c, OutsideChange)}
            assert not seen & {c.event_id for c in repeated if isinstance(c, OutsideChange)}
            again.close()
        finally:
            await connector.stop()

    async def test_outbox_keeps_everything_once_across_a_restart(self, peer: Any, hub_settings: Settings) -> None:
        """Proposals stored while Kafka is away survive a restart, in order, and storing them again adds nothing."""
        connector = self.make_connector(peer)
        if not connector.has_source():
            return
        await connector.start()
        try:
            await self.put_outside_order(peer, "A-5")
            await self.put_outside_order(peer, "A-6")
            changes, cursor = await self.polled(connector, {})
            runtime = self.runtime(connector, hub_settings)
            await runtime.emit(changes, cursor)
            before = [(p.event_id, p.value) for p in runtime.store.pending()]
            runtime.store.close()
            reopened = self.runtime(connector, hub_settings)
            assert [(p.event_id, p.value) for p in reopened.store.pending()] == before
            assert await reopened.emit(changes, cursor) == 0
        finally:
            await connector.stop()

    async def test_a_redelivered_release_makes_one_outside_order(self, peer: Any, hub_settings: Settings) -> None:
        """Idempotent sink: the same hub record delivered twice leaves one outside object for the order."""
        connector = self.make_connector(peer)
        hooks = connector.sink_hooks()
        if not hooks:
            return
        snapshot = OrderSnapshot(order_id="contract-order-7", order_number="ORD-2026-00-000007", version=4,
                                 status="RELEASED", created_at=AT, updated_at=AT, requested_delivery=AT.date(),
                                 customer={"id": "C-1", "name": "ACME GmbH"}, currency="EUR",
                                 lines=[{"line_no": 10, "material": {"id": "MAT-1"}, "quantity": "5", "unit": "C62"}])
        release = OrderRelease(record_id="e:release", event_id="e", order_id=snapshot.order_id,
                               order_number=snapshot.order_number, version=4, priority=0, requested_delivery=AT.date(),
                               instructions=[], released_at=AT,
                               lines=[ReleaseLine(line_no=10, material_id="MAT-1", quantity="5", unit="C62")])
        await connector.start()
        try:
            snapshot = await self.sink_snapshot(peer, snapshot)
            for _ in range(2):
                if "on_release" in hooks:
                    await connector.on_release(release)
                if "on_state" in hooks:
                    await connector.on_state(snapshot)
            assert self.outside_orders(peer, snapshot.order_id) == 1
        finally:
            await connector.stop()
