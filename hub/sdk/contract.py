"""The contract test kit: one suite every connector runs, built-in or third-party.

Subclass ``ConnectorContract`` in the connector's tests and give it the outside system::

    class TestAcme(ConnectorContract):
        creates_orders = True                               # its source makes new hub orders
        has_source = has_sink = True                        # the sides it has (checked)
        @pytest.fixture
        def peer(self, tmp_path): ...                       # the outside system (a sandbox), fresh per test
        def make_connector(self, peer): ...                 # a connector configured against it
        async def put_outside_order(self, peer, key): ...   # a record that creates an order there
        async def put_unmappable(self, peer): ...           # a record the connector cannot map
        def outside_orders(self, peer, order_id): ...       # how many outside objects carry this hub order

A connector whose source only changes orders the hub already has (an ERP's prices, an MES's
job states) sets ``creates_orders = False`` and implements ``put_outside_change(peer, connector,
key)`` instead: it hands the outside system an order the way the hub would (through the
connector's own sink), makes the outside system change it, and returns the hub's snapshot of
that order as the connector knows it.

The suite needs no Kafka: it drives the connector through the runtime's own steps (mapping,
echo suppression, the durable outbox and cursor) and checks the proposals against the hub's
real decision rules (``hub.domain.decide``, ``ownership.yaml``), so a connector that passes
makes proposals the hub accepts. A connector without a sink hook has no sink to test; one
without a source has no source to test: each test then checks that the side is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar

import pytest

from hub.domain.decide import DecisionKind, decide
from hub.domain.fields import field_values
from hub.domain.order import FieldState, OrderState
from hub.events import ChangeProposal, OrderRelease, OrderSnapshot, ReleaseLine
from hub.sdk.connector import Connector, OutsideChange
from hub.sdk.runtime import ConnectorRuntime
from hub.settings import Settings
from hub.topics import TopicNames

AT = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.timezone.utc)
#: How long a push source (webhook, MQTT) may take to hand over what it received.
PUSH_DEADLINE_S = 30.0


def sample_order(order_id: str = "contract-order-7", status: str = "RELEASED") -> OrderSnapshot:
    """An order as the hub publishes it: two lines, a due date, process requirements."""
    return OrderSnapshot(
        order_id=order_id, order_number=f"ORD-2026-00-{abs(hash(order_id)) % 1_000_000:06d}", version=4,
        status=status, created_at=AT, updated_at=AT, requested_delivery=AT.date() + dt.timedelta(days=20),
        customer={"id": "17100001", "name": "ACME GmbH"}, instructions=[{"key": None, "text": "deburr"}],
        lines=[{"line_no": 10, "material": {"id": "MAT-1"}, "quantity": "5", "unit": "C62"},
               {"line_no": 20, "material": {"id": "MAT-2"}, "quantity": "2", "unit": "KGM"}])


def release_of(order: OrderSnapshot) -> OrderRelease:
    """The release the hub publishes when ``order`` goes to production."""
    return OrderRelease(
        record_id=f"{order.order_id}:release", event_id=f"{order.order_id}:release", order_id=order.order_id,
        order_number=order.order_number, version=order.version, priority=order.priority,
        requested_delivery=order.requested_delivery, instructions=list(order.instructions), released_at=AT,
        lines=[ReleaseLine(line_no=line.line_no, material_id=line.material.id, quantity=line.quantity, unit=line.unit)
               for line in order.lines])


def state_of(order: OrderSnapshot) -> OrderState:
    """The engine state an order's snapshot stands for (every field as of its version)."""
    fields = {path: FieldState(value, order.version, "HUB", "contract-kit")
              for path, value in field_values(order.model_dump(mode="json")).items()}
    return OrderState(order_id=order.order_id, version=order.version, order_number=order.order_number,
                      created_at=order.created_at.isoformat(), updated_at=order.updated_at.isoformat(),
                      fields=fields, external_refs=tuple(order.external_refs))


class ConnectorContract:
    """The contract every connector keeps; subclass it and implement the hooks above."""

    #: True when the connector's source creates hub orders; False when it changes orders the hub has.
    creates_orders: ClassVar[bool] = True
    #: The sides the connector declares: the kit checks the connector has exactly these (a misspelt
    #: ``poll`` or hook would otherwise pass as "no source" or "no sink").
    has_source: ClassVar[bool] = True
    has_sink: ClassVar[bool] = True

    # --- what a connector's test provides ---------------------------------------------------

    def make_connector(self, peer: Any) -> Connector:
        raise NotImplementedError

    async def put_outside_order(self, peer: Any, key: str) -> None:
        """(``creates_orders``) Make a record in the outside system that creates an order."""
        raise NotImplementedError

    async def put_outside_change(self, peer: Any, connector: Connector, key: str) -> OrderSnapshot:
        """(not ``creates_orders``) Hand the outside system a hub order through ``connector``'s sink,
        make the outside system change it, and return the hub's snapshot of it as the connector knows it."""
        raise NotImplementedError

    async def put_unmappable(self, peer: Any) -> None:
        """Make a record the connector cannot map (polled, or pushed to the connector)."""
        raise NotImplementedError

    def outside_orders(self, peer: Any, order_id: str) -> int:
        """How many outside objects carry the hub order ``order_id``."""
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

    @contextlib.asynccontextmanager
    async def source(self, peer: Any, settings: Settings, name: str = "contract") -> AsyncIterator[Any]:
        """The connector started with a runtime of its own: ``(connector, runtime, start cursor)``, or
        None when the connector has no source (then there is nothing of the source to test)."""
        connector = self.make_connector(peer)
        assert connector.has_source() == self.has_source, (
            f"the test declares has_source = {self.has_source}, the connector {'has' if connector.has_source() else 'has no'} poll()")
        if not connector.has_source():
            yield None
            return
        runtime = self.runtime(connector, settings, name)
        await connector.start()
        try:
            _, start = await self.polled(connector, {})  # a source may start tracking "now"
            yield connector, runtime, start
        finally:
            await connector.stop()

    async def polled(self, connector: Connector, cursor: dict[str, Any]) -> tuple[list, dict[str, Any]]:
        result = await connector.poll(cursor)
        assert result is not None, "a connector with a source returns Polled from poll()"
        return list(result.changes), result.cursor

    def proposals(self, runtime: ConnectorRuntime) -> list[ChangeProposal]:
        pending = runtime.store.pending()
        return [ChangeProposal.from_avro(runtime.codec.decode(p.value).value) for p in pending
                if p.role in TopicNames.PROPOSAL_ROLES]

    async def outside_change(self, peer: Any, connector: Connector, runtime: ConnectorRuntime, key: str) -> OrderSnapshot | None:
        """One outside change: a new order, or a change to an order the runtime is told the hub has."""
        if self.creates_orders:
            await self.put_outside_order(peer, key)
            return None
        known = await self.put_outside_change(peer, connector, key)
        runtime.store.remember([known], {})
        return known

    def decided(self, settings: Settings, proposals: list[ChangeProposal], known: OrderSnapshot | None) -> list:
        """The hub's decisions on the connector's proposals, in order, from the order as it was known."""
        rules = settings.rules()
        state = state_of(known) if known is not None else None
        decisions = []
        for proposal in proposals:
            decision = decide(state, proposal, order_id=known.order_id if known else "contract-order", rules=rules,
                              at=AT, next_order_number=lambda: "ORD-2026-00-000001")
            assert decision.kind != DecisionKind.REJECTED, (
                f"the hub refuses the connector's proposal {proposal.event_id}: {decision.rejection.errors}")
            state = decision.state
            decisions.append(decision)
        return decisions

    # --- the contract -------------------------------------------------------------------------

    async def test_mapping_round_trip(self, peer: Any, hub_settings: Settings) -> None:
        """What the outside system says becomes proposals the hub's own rules accept: a creation with
        its mandatory fields and lines, or changes its writer may make to the order as it stands."""
        async with self.source(peer, hub_settings) as started:
            if started is None:
                return
            connector, runtime, start = started
            known = await self.outside_change(peer, connector, runtime, "A-1")
            changes, cursor = await self.polled(connector, start)
            await runtime.emit(changes, cursor)
            proposals = self.proposals(runtime)
            assert proposals, "the outside change became a proposal"
            decisions = self.decided(hub_settings, proposals, known)
            if self.creates_orders:
                assert decisions[0].kind == DecisionKind.CREATED and decisions[0].snapshot.lines
            else:
                assert any(d.accepted for d in decisions), [d.kind for d in decisions]

    async def test_echo_of_the_hubs_values_is_not_proposed(self, peer: Any, hub_settings: Settings) -> None:
        """Loop suppression: once the hub has published what the outside system says, reading it again proposes nothing."""
        async with self.source(peer, hub_settings, "first") as started:
            if started is None:
                return
            connector, first, start = started
            known = await self.outside_change(peer, connector, first, "A-2")
            changes, _ = await self.polled(connector, start)
            await first.emit(changes)
            decisions = self.decided(hub_settings, self.proposals(first), known)
            published = [d.snapshot for d in decisions if d.snapshot is not None][-1]
            echo = self.runtime(connector, hub_settings, "echo")
            echo.store.remember([published], {})
            await echo.emit([c for c in changes if isinstance(c, OutsideChange)])
            assert self.proposals(echo) == [] and echo.counts["suppressed"] >= 1

    async def test_unmappable_input_is_dead_lettered_and_the_next_flows(self, peer: Any, hub_settings: Settings) -> None:
        """A record the connector cannot map goes to the dead letters with the reason; the good one after it is proposed."""
        async with self.source(peer, hub_settings) as started:
            if started is None:
                return
            connector, runtime, cursor = started
            await self.put_unmappable(peer)
            await self.outside_change(peer, connector, runtime, "A-3")
            deadline = time.monotonic() + PUSH_DEADLINE_S
            while True:  # polled, or pushed through emit by the connector's own listener
                changes, cursor = await self.polled(connector, cursor)
                await runtime.emit(changes, cursor)
                roles = {"proposal" if p.role in TopicNames.PROPOSAL_ROLES else p.role for p in runtime.store.pending()}
                if {"dead_letters", "proposal"} <= roles or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert {"dead_letters", "proposal"} <= roles, roles
            dead = next(p for p in runtime.store.pending() if p.role == "dead_letters")
            assert dict(dead.headers)["__orderhub.errors.exception.message"]

    async def test_cursor_resumes_after_a_restart(self, peer: Any, hub_settings: Settings) -> None:
        """A poll from the stored cursor finds nothing already found; a restarted instance starts from that cursor."""
        async with self.source(peer, hub_settings) as started:
            if started is None:
                return
            connector, runtime, start = started
            await self.outside_change(peer, connector, runtime, "A-4")
            changes, cursor = await self.polled(connector, start)
            await runtime.emit(changes, cursor)
            runtime.store.close()
            restarted = self.runtime(connector, hub_settings)  # a new runtime on the same file: the restart
            assert restarted.store.cursor() == cursor
            repeated, _ = await self.polled(connector, restarted.store.cursor())
            seen = {c.event_id for c in changes if isinstance(c, OutsideChange)}
            assert seen and not seen & {c.event_id for c in repeated if isinstance(c, OutsideChange)}

    async def test_outbox_keeps_everything_once_across_a_restart(self, peer: Any, hub_settings: Settings) -> None:
        """Proposals stored while Kafka is away survive a restart, in order, and storing them again adds nothing."""
        async with self.source(peer, hub_settings) as started:
            if started is None:
                return
            connector, runtime, start = started
            await self.outside_change(peer, connector, runtime, "A-5")
            await self.outside_change(peer, connector, runtime, "A-6")
            changes, cursor = await self.polled(connector, start)
            await runtime.emit(changes, cursor)
            before = [(p.event_id, p.value) for p in runtime.store.pending()]
            assert len([p for p in runtime.store.pending() if p.role in TopicNames.PROPOSAL_ROLES]) >= 2
            runtime.store.close()
            reopened = self.runtime(connector, hub_settings)
            assert [(p.event_id, p.value) for p in reopened.store.pending()] == before
            assert await reopened.emit(changes, cursor) == 0

    async def test_a_redelivered_record_makes_one_outside_object(self, peer: Any, hub_settings: Settings) -> None:
        """Idempotent sink: the same hub record delivered twice leaves one outside object for the order."""
        connector = self.make_connector(peer)
        hooks = connector.sink_hooks()
        assert bool(hooks) == self.has_sink, (
            f"the test declares has_sink = {self.has_sink}, the connector's sink hooks are {hooks or 'none'}")
        if not hooks:
            return
        await connector.start()
        try:
            snapshot = await self.sink_snapshot(peer, sample_order())
            for _ in range(2):
                if "on_release" in hooks:
                    await connector.on_release(release_of(snapshot))
                if "on_state" in hooks:
                    await connector.on_state(snapshot)
            assert self.outside_orders(peer, snapshot.order_id) == 1
        finally:
            await connector.stop()
