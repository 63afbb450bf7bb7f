"""What a connector is: the base class every connector (built-in or third-party) subclasses.

A connector translates between one outside system and the canonical order. It never talks to
Kafka itself: the runtime (``hub.sdk.runtime``) does, and gives it the guarantees below.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict

from hub.events import Actor, ExternalRef, OrderChange, OrderRelease, OrderSnapshot


class ConnectorConfig(BaseModel):
    """Typed configuration of one connector instance, validated when the instance is built.

    Subclass it with the outside system's settings; declare secrets as ``SecretStr`` (they are
    never logged or printed: ``orderhub connectors list`` shows only their names).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Seconds between two polls of a polling source (a push source ignores it).
    poll_interval_s: float = 5.0


@dataclass(frozen=True)
class OutsideChange:
    """What one outside record says about one order, in canonical terms: the runtime turns it into
    a change proposal (base version from what the hub last said, echoes dropped)."""

    #: How the outside system names the order (its own reference); the hub resolves it.
    ref: ExternalRef
    #: Deterministic id from the outside record (e.g. its change event's replay id): the same record
    #: read twice gives the same id, so the hub decides it once.
    event_id: str
    #: Canonical field path -> plain value (``{"lines.10.quantity": "5"}``), only fields the connector maps.
    values: dict[str, Any]
    #: Who made the change in the outside system (their role is what ownership.yaml checks).
    actor: Actor
    #: When it happened in the outside system.
    occurred_at: dt.datetime
    #: True when the record creates the order (a won opportunity): mandatory fields apply.
    create: bool = False
    #: The hub order id, when the connector knows it (e.g. stored in the outside record).
    order_id: str | None = None
    #: Outside ids to attach to the order (its own system's only).
    refs: tuple[ExternalRef, ...] = ()
    #: Free text for the audit trail.
    comment: str | None = None


@dataclass(frozen=True)
class Unmappable:
    """An outside record the connector cannot translate: it goes to the dead-letter topic with why."""

    #: The record as received (bytes, or anything JSON can write).
    record: Any
    #: Why it cannot be mapped, naming the field.
    reason: str
    #: A key for the dead letter (the outside id, when known).
    key: str | None = None
    #: The exception that refused it, when there was one (its class names the dead letter).
    error: BaseException | None = None


@dataclass(frozen=True)
class Polled:
    """What one poll of a source found, and where the next poll starts."""

    #: Changes (and unmappable records) in the order the outside system made them.
    changes: Sequence[OutsideChange | Unmappable]
    #: The cursor after them (poll position, delta token): stored with the changes, in one step.
    cursor: dict[str, Any]
    #: True when more is waiting: poll again at once instead of after ``poll_interval_s``.
    more: bool = False


C = TypeVar("C", bound=ConnectorConfig)


@dataclass
class Context:
    """What the runtime hands a connector: the last state the hub published for an order."""

    #: Latest snapshot by order id, of every order this instance has seen on the state topic.
    known: Any = field(default=None, repr=False)

    def order(self, order_id: str) -> OrderSnapshot | None:
        """The hub's latest snapshot of ``order_id`` (None when this instance has not seen it yet)."""
        return self.known.snapshot(order_id) if self.known else None

    def order_for(self, ref: ExternalRef) -> OrderSnapshot | None:
        """The hub's latest snapshot of the order an outside reference belongs to."""
        return self.known.snapshot_for(ref) if self.known else None


class Connector(Generic[C]):
    """Base class of every connector. The lifecycle, and what the runtime guarantees:

    1. ``__init__(config, context)``: the validated ``Config`` and the runtime's ``Context``;
       nothing is opened yet.
    2. ``start()``: open clients to the outside system. Called once per process before
       anything else; an exception here fails start-up loudly.
    3. Source side, at least once in: ``poll(cursor)`` is called on exactly one instance of a
       connector at a time (the one holding the source lease; another takes over within the
       session timeout when it dies). It gets the cursor stored after the last poll whose
       changes are safe, and returns changes plus the new cursor; the runtime stores both in one
       local SQLite transaction (the offline outbox) before anything is sent, so a crash or a
       Kafka outage loses nothing, and a restart resumes at the stored cursor. A change may be
       delivered to the hub more than once (after a crash, or a failover to an instance whose
       cursor is older): its ``event_id`` must be derived from the outside record, so the hub
       answers the repeat DUPLICATE. Push sources (webhooks, MQTT) call ``emit(changes)`` from
       their listener instead: it returns once the changes are durable; one that notices lost
       events (a gap) calls ``poll_soon()`` and the next poll recovers them from the cursor.
    4. Loop suppression: a change may carry the object's whole current picture. For an order the
       hub knows, the runtime proposes only the values that changed in the outside system since
       this instance last read the object (so the hub's own edit of a field the outside system
       never takes back is not undone by the next read of that object), drops every value equal to
       what the hub last published for that order (the echo of the hub's own write), and sends
       nothing when nothing is left; the hub answers what slips through (a race) UNCHANGED,
       making no version.
    5. Sink side, idempotent out: ``on_change`` / ``on_state`` / ``on_release`` (override the
       ones the connector needs) are called for the hub's records, in order per order, by
       whichever instance the consumer group gives the order's partition; several instances
       share the work. A record is committed only after its hook returned, so after a crash or
       a rebalance a hook may see a record again: it must look the order up in the outside
       system by the hub's id first (never create a second ERP order or MES job). A hook may
       return changes for the hub (e.g. the ERP's order number), sent like a source's.
    6. Errors: raise ``OutsideSystemUnavailable`` (or any ``RetriableError``) to have the same
       call retried with back-off, holding the partition; raise ``UnmappableRecord`` (or return
       ``Unmappable``) for a record that can never succeed: it goes to the dead-letter topic with
       the reason and the connector goes on. Anything else is a bug: dead-lettered too. So is a
       change no proposal can carry (an actor id holding half of a surrogate pair alone, which no
       text encoding can store): the rest of its batch goes on, and the object counts as not
       read, so reading it again after a fix outside proposes it. (A field value holding one is
       spelt in escapes and proposed; the hub refuses it, naming the field.)
    7. ``stop()``: close the clients. What survives a restart: the cursor, the outbox, and the
       last snapshot of every order (all in the instance's SQLite file); the sink's position is
       the consumer group's committed offset.
    """

    #: The name of the connector kind (its entry point name): crm, erp, mes, acme.
    kind: ClassVar[str] = ""
    #: The source system its proposals come from, as ownership.yaml names it (CRM, ERP, MES, EDI).
    system: ClassVar[str] = ""
    #: The configuration model.
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    #: The canonical fields this connector maps from its system (documentation and the contract kit).
    owns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: C, context: Context | None = None) -> None:
        self.config = config
        self.context = context or Context()
        self.emit: Any = None  # set by the runtime: ``await self.emit([...])`` from a push listener
        #: Set by the runtime: ask for the next poll now (a push source that noticed lost events).
        self.poll_soon: Any = lambda: None

    async def start(self) -> None:
        """Open clients to the outside system."""

    async def stop(self) -> None:
        """Close them again."""

    async def poll(self, cursor: dict[str, Any]) -> Polled | None:
        """One poll of the outside system from ``cursor`` ({} the first time); None: no polling source."""
        return None

    async def on_change(self, change: OrderChange) -> Sequence[OutsideChange] | None:
        """An accepted change of an order (the audit trail), for systems that mirror changes."""
        return None

    async def on_state(self, snapshot: OrderSnapshot) -> Sequence[OutsideChange] | None:
        """The latest state of an order, for systems that mirror what the hub says."""
        return None

    async def on_release(self, release: OrderRelease) -> Sequence[OutsideChange] | None:
        """An order released to production."""
        return None

    @classmethod
    def sink_hooks(cls) -> tuple[str, ...]:
        """The sink hooks this connector overrides: which of the hub's topics it consumes."""
        return tuple(name for name in ("on_change", "on_state", "on_release")
                     if getattr(cls, name) is not getattr(Connector, name))

    @classmethod
    def has_source(cls) -> bool:
        """Whether the connector polls its outside system."""
        return cls.poll is not Connector.poll
