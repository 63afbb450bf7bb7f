"""The SQL read model: orders, their lines, history, conflicts and external ids as tables.

The projector feeds it the hub's output events; people, reports, the client and REST APIs
and connectors read it through typed queries (``order``, ``list_orders``, ``history``,
``conflicts``, ``parked_conflicts``, ``alerts``, ``open_alerts``, ``rejections``, ``lead_times``). Every writer is
idempotent (a replayed topic changes nothing) and takes one batch per transaction. It runs on a SQLite file by default
(``settings.read_model_url``) and on PostgreSQL by URL (``postgresql+psycopg://...``);
upserts use each dialect's ``INSERT ... ON CONFLICT``.

The schema is migrated by Alembic (``hub/migrations/``): ``create_schema`` upgrades to the
newest revision, so a database keeps its rows across hub upgrades. ``metadata`` below is
the schema at that revision (a test compares the two) and includes Alembic's version table,
so ``metadata.drop_all`` empties a read model entirely; create it with ``create_schema``,
never with ``metadata.create_all``.

Tables::

    orders           one row per order, the latest snapshot (whole, as JSON, in ``snapshot``)
    order_lines      (order_id, line_no): the lines of that snapshot
    order_history    (order_id, version): one accepted change each, diffs as JSON
    order_conflicts  record_id: one recorded conflict each, fields as JSON
    order_xrefs      (system, object_type, external_id): outside ids -> order_id
    order_alerts     record_id: one due-date alert raised or cleared each
    order_rejections record_id: one refused proposal each, errors and the proposal as JSON
    alembic_version  the schema's revision
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, TypeVar

from pydantic import BaseModel
from sqlalchemy import (Boolean, Column, Date, DateTime, Index, Integer, MetaData, Numeric, PrimaryKeyConstraint,
                        String, Table, Text, TypeDecorator, and_, create_engine, event, exists, false, func, or_,
                        select)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.elements import ColumnElement
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from hub import migrations
from hub.domain.fields import STATUS_PATH
from hub.errors import ConfigError
from hub.events import (ChangeOutcome, ChangeProposal, ExternalRef, FieldConflict, FieldDiff, FieldError,
                        LifecycleStatus, OrderAlert, OrderChange, OrderConflict, OrderLine, OrderRejection,
                        OrderSnapshot)
from hub.leadtimes import DEFAULT_WEEKS, KINDS, LeadTime, report_json, report_text, weekly, window
from hub.settings import Settings


class OrderNotFound(LookupError):
    """No order in the read model answers to the given id, number or external id."""


class AmbiguousOrder(OrderNotFound):
    """An external id or number that names more than one order."""


class _DecimalText(TypeDecorator[Decimal]):
    """Decimals as text: SQLite's NUMERIC would round them through a float."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


class _UtcDateTime(TypeDecorator[dt.datetime]):
    """Timestamps stored in UTC and read back aware, on PostgreSQL and on SQLite alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        value = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=dt.UTC)


DECIMAL = Numeric().with_variant(_DecimalText(), "sqlite")
metadata = MetaData()

ID, NAME = String(64), String(128)  # ids and numbers; names and free-form keys
orders = Table(
    "orders", metadata,
    Column("order_id", ID, primary_key=True),
    Column("order_number", ID, nullable=False, unique=True),
    Column("version", Integer, nullable=False),
    Column("status", String(32), nullable=False, index=True), Column("on_hold", Boolean, nullable=False),
    Column("customer_id", ID, index=True), Column("customer_name", String(256)), Column("currency", String(3)),
    Column("amount_net", DECIMAL), Column("amount_tax", DECIMAL), Column("amount_gross", DECIMAL),
    Column("amount_crm_expected", DECIMAL),
    Column("requested_delivery", Date, index=True), Column("promised_delivery", Date),
    Column("priority", Integer, nullable=False), Column("plant", String(32)),
    Column("updated_at", _UtcDateTime, nullable=False, index=True),
    Column("snapshot", Text, nullable=False),  # the whole OrderSnapshot as JSON, for every other field
)
order_lines = Table(
    "order_lines", metadata,
    Column("order_id", ID, primary_key=True), Column("line_no", Integer, primary_key=True),
    Column("material_id", ID, nullable=False), Column("material_revision", String(32)),
    Column("quantity", DECIMAL, nullable=False), Column("unit", String(8), nullable=False),
    Column("confirmed_quantity", DECIMAL), Column("good_quantity", DECIMAL), Column("scrap_quantity", DECIMAL),
)
order_history = Table(
    "order_history", metadata,
    Column("order_id", ID, primary_key=True), Column("version", Integer, primary_key=True),
    Column("order_number", ID, nullable=False, index=True),
    Column("record_id", NAME, nullable=False, unique=True), Column("event_id", NAME, nullable=False),
    Column("outcome", String(16), nullable=False), Column("source_system", String(16), nullable=False),
    Column("actor_id", NAME, nullable=False), Column("actor_role", ID, nullable=False),
    Column("occurred_at", _UtcDateTime, nullable=False), Column("accepted_at", _UtcDateTime, nullable=False),
    Column("base_version", Integer, nullable=False), Column("previous_version", Integer, nullable=False),
    Column("diffs", Text, nullable=False),  # JSON list of FieldDiff
    Column("refs_added", Text),  # JSON list of ExternalRef; NULL in rows recorded before migration 0003
    Column("correlation_id", NAME),  # hub.correlation; NULL in rows recorded before migration 0006
)
order_conflicts = Table(
    "order_conflicts", metadata,
    Column("record_id", NAME, primary_key=True),
    Column("order_id", ID, nullable=False, index=True), Column("event_id", NAME, nullable=False),
    Column("base_version", Integer, nullable=False), Column("current_version", Integer, nullable=False),
    Column("parked", Boolean, nullable=False), Column("resulting_version", Integer),
    Column("decided_at", _UtcDateTime, nullable=False),
    Column("fields", Text, nullable=False),  # JSON list of FieldConflict
    Column("order_number", ID),  # null only for a row older than revision 0002 whose order was never seen
    Index("ix_order_conflicts_parked_decided_at", "parked", "decided_at"),
)
order_xrefs = Table(
    "order_xrefs", metadata,
    Column("system", String(16), primary_key=True), Column("object_type", ID, primary_key=True),
    Column("external_id", NAME, primary_key=True, index=True),
    Column("order_id", ID, nullable=False, index=True), Column("external_number", NAME, index=True),
)
order_alerts = Table(
    "order_alerts", metadata,
    Column("record_id", String(256), primary_key=True),
    Column("order_id", ID, nullable=False, index=True), Column("order_number", ID, nullable=False),
    Column("version", Integer, nullable=False), Column("kind", String(16), nullable=False),
    Column("stage", String(40), nullable=False), Column("notify", String(64), nullable=False),
    Column("due_date", Date, nullable=False), Column("occurrence", Integer, nullable=False),
    Column("days_left", Integer, nullable=False),
    Column("status", String(32), nullable=False), Column("on_hold", Boolean, nullable=False),
    Column("reason", Text, nullable=False), Column("decided_at", _UtcDateTime, nullable=False),
)
# Ids, system and actor come from the refused proposal as its writer sent them, of any length (what is
# refused is often malformed): Text, so the database keeps every rejection.
order_rejections = Table(
    "order_rejections", metadata,
    Column("record_id", Text, primary_key=True), Column("event_id", Text, nullable=False),
    Column("order_id", Text, index=True),  # null when the proposal named no order (the resolver refused it)
    Column("source_system", Text, nullable=False), Column("actor_id", Text, nullable=False),
    Column("reason", String(32), nullable=False), Column("current_version", Integer),
    Column("decided_at", _UtcDateTime, nullable=False, index=True),
    Column("errors", Text, nullable=False),  # JSON list of FieldError
    Column("proposal", Text, nullable=False),  # the refused ChangeProposal, whole, as JSON
)
# Alembic's own table, declared so that metadata.drop_all resets the read model whole (a
# version row left behind would make create_schema skip the tables it just lost).
alembic_version = Table(
    "alembic_version", metadata,
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


# --- typed answers ----------------------------------------------------------------------


@dataclass(frozen=True)
class OrderSummary:
    """One order in a list: what people filter and sort orders by, without lines."""

    order_id: str
    """Hub order id."""
    order_number: str
    """Human-readable unique order number."""
    version: int
    """The order's current version."""
    status: LifecycleStatus
    """Lifecycle status."""
    on_hold: bool
    """Held; the order resumes where it was."""
    customer_id: str | None
    """Ordering customer's id, when known."""
    customer_name: str | None
    """Ordering customer's name, when known."""
    requested_delivery: dt.date | None
    """Due date requested by the customer."""
    promised_delivery: dt.date | None
    """Delivery date promised by the ERP."""
    amount_net: Decimal | None
    """Net amount (ERP)."""
    currency: str | None
    """ISO 4217 currency of the amounts."""
    updated_at: dt.datetime
    """When the current version was accepted (UTC)."""


@dataclass(frozen=True)
class HistoryEntry:
    """One accepted change of an order: the version it made, who made it, and every field's before/after."""

    order_id: str
    """Hub order id."""
    order_number: str
    """Human-readable order number."""
    version: int
    """The version this change made."""
    previous_version: int
    """The version it was applied on (0 for the creation)."""
    base_version: int
    """The version its writer had seen; lower than ``previous_version`` when it was merged."""
    outcome: ChangeOutcome
    """How it got in: created, applied, merged or resolved."""
    source_system: str
    """The system it came from."""
    actor_id: str
    """The user or service account that made it."""
    actor_role: str
    """The role the permission rules checked."""
    occurred_at: dt.datetime
    """When the writer made it (UTC)."""
    accepted_at: dt.datetime
    """When the hub accepted it (UTC)."""
    record_id: str
    """The change record's deterministic id."""
    event_id: str
    """The proposal it answers."""
    diffs: tuple[FieldDiff, ...]
    """Before and after of every changed field, as canonical JSON."""
    refs_added: tuple[ExternalRef, ...] = ()
    """Outside references the change attached (e.g. the ERP's order number)."""
    correlation_id: str | None = None
    """The flow the change belongs to (``hub.correlation``); None for rows from before it was kept."""


@dataclass(frozen=True)
class ConflictRecord:
    """One recorded conflict: a proposal that changed fields someone else changed since its base version."""

    record_id: str
    """The conflict record's deterministic id."""
    order_id: str
    """Hub order id."""
    order_number: str | None
    """Human-readable order number; None only for a conflict recorded before the read model kept it whose
    order the read model never saw."""
    event_id: str
    """The proposal in conflict."""
    base_version: int
    """The version the proposal was based on."""
    current_version: int
    """The order's version when the proposal arrived."""
    parked: bool
    """True while the proposal waits for a person."""
    resulting_version: int | None
    """The version the decision made, if it made one."""
    decided_at: dt.datetime
    """When the hub decided (UTC)."""
    fields: tuple[FieldConflict, ...]
    """Every field in conflict: base, current and proposed value, who wrote each, policy, outcome, reason."""


_Model = TypeVar("_Model", bound=BaseModel)


class ReadModel:
    """The read model at one SQLAlchemy URL: idempotent batch writers and typed order queries."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(f"the read model runs on sqlite or postgresql, not {parsed.get_backend_name()!r}")
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Readers (the CLI) and the projector share the file: WAL lets them not block each other.
            self.engine: Engine = create_engine(parsed, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", lambda conn, _: _use_wal(conn))
        else:
            self.engine = create_engine(parsed)
        self._insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert

    def create_schema(self) -> None:
        """Upgrade the schema to the newest migration; safe when several processes start at once.

        A database made before migrations existed is recognised and upgraded, keeping its rows.
        """
        migrations.upgrade(self.engine)

    def schema_revision(self) -> str | None:
        """The migration revision the database is at; None before ``create_schema``."""
        return migrations.schema_revision(self.engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # --- writers ----------------------------------------------------------------------

    def project_changes(self, changes: list[OrderChange], correlation_ids: Mapping[str, str] | None = None) -> None:
        """Record accepted changes in the history, once per (order_id, version), and their new xrefs;
        ``correlation_ids``: each change's flow by its record id (its record's header)."""
        flows = correlation_ids or {}
        rows = {(c.order_id, c.version): _history_row(c) | {"correlation_id": flows.get(c.record_id)} for c in changes}
        xrefs = [(c.order_id, ref) for c in changes for ref in c.external_refs_added]
        with self.engine.begin() as conn:
            if rows:
                stmt = self._insert(order_history).on_conflict_do_nothing(index_elements=["order_id", "version"])
                conn.execute(stmt, list(rows.values()))
            self._put_xrefs(conn, xrefs)

    def project_snapshots(self, snapshots: list[OrderSnapshot]) -> None:
        """Upsert orders and replace their lines, unless the stored version is newer."""
        latest: dict[str, OrderSnapshot] = {}
        for snap in snapshots:
            if snap.order_id not in latest or snap.version >= latest[snap.order_id].version:
                latest[snap.order_id] = snap
        if not latest:
            return
        stmt = self._insert(orders)
        stmt = stmt.on_conflict_do_update(
            index_elements=["order_id"],
            set_={c.name: stmt.excluded[c.name] for c in orders.columns if c.name != "order_id"},
            where=orders.c.version <= stmt.excluded.version,  # an older snapshot never overwrites a newer one
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, [_order_row(s) for s in latest.values()])
            stored = dict(conn.execute(select(orders.c.order_id, orders.c.version)
                                       .where(orders.c.order_id.in_(latest))).all())
            won = [s for s in latest.values() if stored.get(s.order_id) == s.version]
            if won:
                conn.execute(order_lines.delete().where(order_lines.c.order_id.in_([s.order_id for s in won])))
                lines = [_line_row(s.order_id, line) for s in won for line in s.lines]
                if lines:
                    conn.execute(order_lines.insert(), lines)
            self._put_xrefs(conn, [(s.order_id, ref) for s in snapshots for ref in s.external_refs])

    def project_conflicts(self, conflicts: list[OrderConflict]) -> None:
        """Upsert recorded conflicts by record_id."""
        rows = {c.record_id: _conflict_row(c) for c in conflicts}
        if not rows:
            return
        stmt = self._insert(order_conflicts)
        stmt = stmt.on_conflict_do_update(
            index_elements=["record_id"],
            set_={c.name: stmt.excluded[c.name] for c in order_conflicts.columns if c.name != "record_id"})
        with self.engine.begin() as conn:
            conn.execute(stmt, list(rows.values()))

    def project_alerts(self, alerts: list[OrderAlert]) -> None:
        """Record due-date alerts by record_id (the same record again changes nothing)."""
        rows = {a.record_id: a.model_dump(mode="python") for a in alerts}
        if rows:
            with self.engine.begin() as conn:
                conn.execute(self._insert(order_alerts).on_conflict_do_nothing(index_elements=["record_id"]),
                             list(rows.values()))

    def project_rejections(self, rejections: list[OrderRejection]) -> None:
        """Record refused proposals by record_id (the same record again changes nothing)."""
        rows = {r.record_id: _rejection_row(r) for r in rejections}
        if rows:
            with self.engine.begin() as conn:
                conn.execute(self._insert(order_rejections).on_conflict_do_nothing(index_elements=["record_id"]),
                             list(rows.values()))

    def _put_xrefs(self, conn: Connection, refs: list[tuple[str, ExternalRef]]) -> None:
        rows = {(r.system, r.object_type, r.external_id): {
            "system": r.system, "object_type": r.object_type, "external_id": r.external_id,
            "order_id": order_id, "external_number": r.external_number} for order_id, r in refs}
        if not rows:
            return
        stmt = self._insert(order_xrefs)
        stmt = stmt.on_conflict_do_update(
            index_elements=["system", "object_type", "external_id"],
            # a reference stays with the order it was first recorded for (the resolver keeps the same
            # rule); a later record without a number keeps the known one
            set_={"external_number": func.coalesce(stmt.excluded.external_number, order_xrefs.c.external_number)},
            where=order_xrefs.c.order_id == stmt.excluded.order_id)
        conn.execute(stmt, list(rows.values()))

    # --- readers ----------------------------------------------------------------------

    def resolve(self, order: str) -> str:
        """The order id named by an order id, order number, external id or number, or SYSTEM/Type/id."""
        o, h, x = orders.c, order_history.c, order_xrefs.c
        parts = order.split("/", 2)  # an external id may itself hold slashes; system and type do not
        by_key = (and_(x.system == parts[0], x.object_type == parts[1], x.external_id == parts[2])
                  if len(parts) == 3 else false())
        queries = (
            select(o.order_id).where(or_(o.order_id == order, o.order_number == order)),
            select(h.order_id).where(or_(h.order_id == order, h.order_number == order)),  # no snapshot yet
            select(x.order_id).where(or_(x.external_id == order, x.external_number == order, by_key)),
        )
        with self.engine.connect() as conn:
            for query in queries:
                found = sorted(set(conn.execute(query).scalars()))
                if len(found) == 1:
                    return found[0]
                if found:
                    raise AmbiguousOrder(f"{order!r} names {len(found)} orders: {', '.join(found)}")
        raise OrderNotFound(order)

    def order(self, ref: str) -> OrderSnapshot:
        """The order's latest snapshot, by any name ``resolve`` takes; OrderNotFound until it is projected."""
        order_id = self.resolve(ref)
        with self.engine.connect() as conn:
            stored = conn.execute(select(orders.c.snapshot).where(orders.c.order_id == order_id)).scalar()
        if stored is None:  # its changes were projected, its snapshot not yet
            raise OrderNotFound(ref)
        return OrderSnapshot.model_validate_json(stored)

    def get_order(self, order: str) -> dict[str, Any]:
        """The order's row as stored, with ``lines`` (by line number) and ``external_refs``; OrderNotFound if none.

        The projected columns themselves; ``order()`` is the typed view of the whole order.
        """
        order_id = self.resolve(order)
        with self.engine.connect() as conn:
            row = conn.execute(select(orders).where(orders.c.order_id == order_id)).mappings().first()
            if row is None:  # its changes were projected, its snapshot not yet
                raise OrderNotFound(order)
            lines = conn.execute(select(order_lines).where(order_lines.c.order_id == order_id)
                                 .order_by(order_lines.c.line_no)).mappings().all()
            refs = conn.execute(select(order_xrefs).where(order_xrefs.c.order_id == order_id)
                                .order_by(order_xrefs.c.system, order_xrefs.c.external_id)).mappings().all()
        return {**row, "lines": [dict(r) for r in lines], "external_refs": [dict(r) for r in refs]}

    def list_orders(self, *, status: LifecycleStatus | str | None = None, customer_id: str | None = None,
                    on_hold: bool | None = None, due_before: dt.date | None = None, due_from: dt.date | None = None,
                    alerted: bool | None = None, overdue_on: dt.date | None = None, text: str | None = None,
                    limit: int = 50, offset: int = 0) -> list[OrderSummary]:
        """Orders matching every filter given, most recently updated first, one page of them.

        ``due_before`` / ``due_from``: requested delivery strictly before / on or after that date
        (orders without one never match). ``alerted``: with (True) or without (False) an open
        due-date alert. ``overdue_on``: still open (not shipped, closed or cancelled) with the due
        date (promised, else requested) before that day. ``text``: case-insensitive part of the
        order number, customer id or name, or an external id or number. ``limit`` and ``offset``
        page through the result.
        """
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must not be negative, not {limit} and {offset}")
        o = orders.c
        filters: list[ColumnElement[bool]] = []
        if status is not None:
            filters.append(o.status == LifecycleStatus(status).value)
        if customer_id is not None:
            filters.append(o.customer_id == customer_id)
        if on_hold is not None:
            filters.append(o.on_hold == on_hold)
        if due_before is not None:
            filters.append(o.requested_delivery < due_before)
        if due_from is not None:
            filters.append(o.requested_delivery >= due_from)
        if alerted is not None:
            filters.append(o.order_id.in_(_open_alert_orders()) if alerted else o.order_id.not_in(_open_alert_orders()))
        if overdue_on is not None:
            due = func.coalesce(o.promised_delivery, o.requested_delivery)
            filters.append(and_(due < overdue_on, o.status.not_in(("SHIPPED", "CLOSED", "CANCELLED"))))
        if text:
            filters.append(_text_matches(text))
        query = (select(*(o[name] for name in _SUMMARY_COLUMNS)).where(*filters)
                 .order_by(o.updated_at.desc(), o.order_id).limit(limit).offset(offset))
        with self.engine.connect() as conn:
            return [_summary(row) for row in conn.execute(query).mappings()]

    def history(self, ref: str) -> list[HistoryEntry]:
        """The order's accepted changes by version, by any name ``resolve`` takes."""
        order_id = self.resolve(ref)
        with self.engine.connect() as conn:
            rows = conn.execute(select(order_history).where(order_history.c.order_id == order_id)
                                .order_by(order_history.c.version)).mappings().all()
        return [_history_entry(r) for r in rows]

    def versions(self, order_id: str) -> list[int]:
        """The versions recorded in the history of one order, ascending."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(order_history.c.version).where(order_history.c.order_id == order_id)
                                     .order_by(order_history.c.version)).scalars())

    def conflicts(self, order_id: str) -> list[ConflictRecord]:
        """The order's recorded conflicts, parked ones first, then newest first."""
        c = order_conflicts.c
        query = (select(order_conflicts).where(c.order_id == order_id)
                 .order_by(c.parked.desc(), c.decided_at.desc(), c.record_id))
        with self.engine.connect() as conn:
            return [_conflict_record(r) for r in conn.execute(query).mappings()]

    def alerts(self, order_id: str) -> list[OrderAlert]:
        """The order's due-date alerts, raised and cleared, in the order they were decided."""
        a = order_alerts.c
        query = select(order_alerts).where(a.order_id == order_id).order_by(a.decided_at, a.kind.desc(), a.record_id)
        with self.engine.connect() as conn:
            return [OrderAlert.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def open_alerts(self, order_id: str) -> list[OrderAlert]:
        """The alerts raised for the order and not cleared: each occurrence of a stage and due date is
        raised once and cleared once, so the answer holds whatever order the clocks wrote them in."""
        alerts = self.alerts(order_id)
        cleared = {(a.stage, a.due_date, a.occurrence) for a in alerts if a.kind == "CLEARED"}
        return [a for a in alerts if a.kind == "RAISED" and (a.stage, a.due_date, a.occurrence) not in cleared]

    def decision_of(self, event_id: str) -> tuple[str, str | None, int | None] | None:
        """What the read model knows the hub decided on a proposal: (outcome, order id, version) from
        the history (an accepted change), the conflicts (parked) or the rejections; None if nothing yet."""
        with self.engine.connect() as conn:
            row = conn.execute(select(order_history.c.outcome, order_history.c.order_id, order_history.c.version)
                               .where(order_history.c.event_id == event_id)).first()
            if row is not None:
                return (row[0], row[1], row[2])
            row = conn.execute(select(order_conflicts.c.parked, order_conflicts.c.order_id,
                                      order_conflicts.c.resulting_version)
                               .where(order_conflicts.c.event_id == event_id)).first()
            if row is not None:
                return ("PARKED" if row[0] else "KEPT", row[1], row[2])
            row = conn.execute(select(order_rejections.c.order_id, order_rejections.c.current_version)
                               .where(order_rejections.c.event_id == event_id)).first()
            if row is not None:
                return ("REJECTED", row[0], None)
        return None

    def version_of(self, order_id: str) -> int | None:
        """The order's current version in the read model (None before its snapshot is projected)."""
        with self.engine.connect() as conn:
            return conn.execute(select(orders.c.version).where(orders.c.order_id == order_id)).scalar()

    def alert(self, record_id: str) -> OrderAlert:
        """One alert record by its record id; LookupError when there is none."""
        with self.engine.connect() as conn:
            row = conn.execute(select(order_alerts).where(order_alerts.c.record_id == record_id)).mappings().first()
        if row is None:
            raise LookupError(f"no alert {record_id!r}")
        return OrderAlert.model_validate(dict(row))

    def every_open_alert(self, *, limit: int = 100, offset: int = 0) -> list[OrderAlert]:
        """Every order's open alerts, the most recently raised first, one page of them."""
        raised, is_open = _open_raised()
        query = (select(raised).where(is_open).order_by(raised.c.decided_at.desc(), raised.c.record_id)
                 .limit(limit).offset(offset))
        with self.engine.connect() as conn:
            return [OrderAlert.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def rejections(self, order_id: str) -> list[OrderRejection]:
        """The order's refused proposals, in the order they were decided."""
        r = order_rejections.c
        query = select(order_rejections).where(r.order_id == order_id).order_by(r.decided_at, r.record_id)
        with self.engine.connect() as conn:
            return [_rejection(row) for row in conn.execute(query).mappings()]

    def lead_times(self, kinds: Iterable[str] = KINDS, *, since: dt.datetime | None = None) -> list[LeadTime]:
        """Every wait of every order the audit trail shows, of the given kinds, started at ``since`` or later.

        What starts and what ends each kind (``hub.leadtimes`` sums them up per week):

        1. ``release``: version 1 accepted -> the first accepted change whose status diff goes to
           RELEASED. An order whose status went to CANCELLED first is never released: it has no
           release lead time (not an open one either). An order whose version 1 the read model
           does not hold has none.
        2. ``conflict``: a parked conflict decided -> the first accepted change of its order at a
           version above the conflict's ``current_version`` that writes one of the conflict's
           fields (diff field path equal to a conflicting field's). Versions, not clocks, decide
           what came after. A person who keeps the current value writes nothing, so that
           conflict stays open. Conflicts not parked (merged, kept, resolved by ``owner_wins``)
           did not wait for anyone and have none.
        3. ``alert``: a RAISED alert -> the CLEARED alert of the same order, stage, due date and
           occurrence (the pairing ``open_alerts`` uses), whichever clock wrote them.
        4. ``rejection``: a refused proposal -> the first accepted change of its order from the
           same source system at a version above the order's version when it was refused (any
           version when the order did not exist yet: a refused creation ends when the creation
           gets through). A rejection that names no order (the resolver refused it) has none.

        Sorted by kind (``KINDS`` order), start, order id and subject.
        """
        wanted = list(kinds)
        if unknown := set(wanted) - set(KINDS):
            raise ValueError(f"unknown lead-time kind(s) {sorted(unknown)}; the kinds are {', '.join(KINDS)}")
        finders = {"release": self._release_lead_times, "conflict": self._conflict_lead_times,
                   "alert": self._alert_lead_times, "rejection": self._rejection_lead_times}
        with self.engine.connect() as conn:
            found = [item for kind in KINDS if kind in wanted for item in finders[kind](conn, since)]
        return sorted(found, key=lambda t: (KINDS.index(t.kind), t.started_at, t.order_id, t.subject))

    def _release_lead_times(self, conn: Connection, since: dt.datetime | None) -> list[LeadTime]:
        h, v1 = order_history.c, order_history.alias("v1").c
        created = select(v1.order_id, v1.order_number, v1.record_id, v1.accepted_at).where(v1.version == 1)
        if since is not None:
            created = created.where(v1.accepted_at >= since)
        starts = conn.execute(created).all()
        # the changes that touched the status of those orders (the creation's own included), oldest first
        status_changes = (select(h.order_id, h.accepted_at, h.diffs)
                          .where(h.order_id.in_(created.with_only_columns(v1.order_id)),
                                 h.diffs.contains(f'"{STATUS_PATH}"', autoescape=True))
                          .order_by(h.order_id, h.version))
        ends: dict[str, dt.datetime | None] = {}
        for order_id, accepted_at, diffs in conn.execute(status_changes):
            if order_id in ends:
                continue  # released or cancelled already
            status = next((_json_value(d["after"]) for d in json.loads(diffs) if d["field"] == STATUS_PATH), None)
            if status == LifecycleStatus.RELEASED.value:
                ends[order_id] = accepted_at
            elif status == LifecycleStatus.CANCELLED.value:
                ends[order_id] = None
        return [LeadTime("release", order_id, number, record_id, accepted_at, ends.get(order_id))
                for order_id, number, record_id, accepted_at in starts
                if order_id not in ends or ends[order_id] is not None]

    def _conflict_lead_times(self, conn: Connection, since: dt.datetime | None) -> list[LeadTime]:
        c, h = order_conflicts.c, order_history.c
        parked = [c.parked.is_(True)] + ([c.decided_at >= since] if since is not None else [])
        conflicts = conn.execute(select(c.record_id, c.order_id, c.order_number, c.decided_at, c.fields)
                                 .where(*parked)).all()
        # every change accepted after each of them, by version: the first writing one of its fields ends it
        later = (select(c.record_id, h.accepted_at, h.diffs)
                 .select_from(order_conflicts.join(order_history, and_(h.order_id == c.order_id,
                                                                       h.version > c.current_version)))
                 .where(*parked).order_by(c.record_id, h.version))
        fields = {record_id: {f["field"] for f in json.loads(stored)} for record_id, *_, stored in conflicts}
        ends: dict[str, dt.datetime] = {}
        for record_id, accepted_at, diffs in conn.execute(later):
            # (a conflict projected between the two reads is not in ``fields``: it is in the next report)
            if record_id not in ends and fields.get(record_id, set()) & {d["field"] for d in json.loads(diffs)}:
                ends[record_id] = accepted_at
        return [LeadTime("conflict", order_id, number, record_id, decided_at, ends.get(record_id))
                for record_id, order_id, number, decided_at, _ in conflicts]

    def _alert_lead_times(self, conn: Connection, since: dt.datetime | None) -> list[LeadTime]:
        raised, cleared = order_alerts.alias("raised"), order_alerts.alias("cleared")
        r, c = raised.c, cleared.c
        same_occurrence = and_(c.order_id == r.order_id, c.stage == r.stage, c.due_date == r.due_date,
                               c.occurrence == r.occurrence, c.kind == "CLEARED")
        query = (select(r.order_id, r.order_number, r.record_id, r.decided_at, c.decided_at.label("cleared_at"))
                 .select_from(raised.outerjoin(cleared, same_occurrence)).where(r.kind == "RAISED")
                 .order_by(r.record_id, c.decided_at))
        if since is not None:
            query = query.where(r.decided_at >= since)
        found: dict[str, LeadTime] = {}
        for order_id, number, record_id, raised_at, cleared_at in conn.execute(query):
            found.setdefault(record_id, LeadTime("alert", order_id, number, record_id, raised_at, cleared_at))
        return list(found.values())

    def _rejection_lead_times(self, conn: Connection, since: dt.datetime | None) -> list[LeadTime]:
        r, h, o = order_rejections.c, order_history.c, orders.c
        first_after = (select(func.min(h.version))
                       .where(h.order_id == r.order_id, h.source_system == r.source_system,
                              h.version > func.coalesce(r.current_version, 0))
                       .correlate(order_rejections).scalar_subquery())
        known_number = (select(func.min(h.order_number)).where(h.order_id == r.order_id)
                        .correlate(order_rejections).scalar_subquery())  # before its snapshot is projected
        resolved = order_history.alias("resolved")
        query = (select(r.order_id, func.coalesce(o.order_number, known_number), r.record_id, r.decided_at,
                        resolved.c.accepted_at)
                 .select_from(order_rejections
                              .outerjoin(orders, o.order_id == r.order_id)
                              .outerjoin(resolved, and_(resolved.c.order_id == r.order_id,
                                                        resolved.c.version == first_after)))
                 .where(r.order_id.is_not(None)))
        if since is not None:
            query = query.where(r.decided_at >= since)
        return [LeadTime("rejection", order_id, number, record_id, decided_at, accepted_at)
                for order_id, number, record_id, decided_at, accepted_at in conn.execute(query)]

    def conflict(self, record_id: str) -> ConflictRecord:
        """One recorded conflict by its record id; LookupError when there is none."""
        with self.engine.connect() as conn:
            row = conn.execute(select(order_conflicts).where(order_conflicts.c.record_id == record_id)).mappings().first()
        if row is None:
            raise LookupError(f"no conflict {record_id!r}")
        return _conflict_record(row)

    def parked_conflicts(self, *, limit: int = 100) -> list[ConflictRecord]:
        """Conflicts waiting for a person, across all orders, the longest waiting first."""
        c = order_conflicts.c
        query = (select(order_conflicts).where(c.parked.is_(True))
                 .order_by(c.decided_at, c.record_id).limit(limit))
        with self.engine.connect() as conn:
            return [_conflict_record(r) for r in conn.execute(query).mappings()]

    def all_order_versions(self) -> dict[str, list[int]]:
        """Every order id with its recorded versions, ascending: what gaplessness checks read."""
        result: dict[str, list[int]] = {}
        with self.engine.connect() as conn:
            for order_id, version in conn.execute(select(order_history.c.order_id, order_history.c.version)
                                                  .order_by(order_history.c.order_id, order_history.c.version)):
                result.setdefault(order_id, []).append(version)
        return result

    def count_history(self) -> int:
        """How many history rows (accepted changes) the read model holds."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(order_history)).scalar_one()


def _database_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


@retry(retry=retry_if_exception(_database_locked), wait=wait_exponential(multiplier=0.01, max=0.5),
       stop=stop_after_delay(30), reraise=True)
def _use_wal(dbapi_connection: sqlite3.Connection) -> None:
    """Put the SQLite file in WAL mode, unless it is already.

    Switching needs the file to itself, and SQLite answers "database is locked" at once
    (without its busy timeout) when another process opens it at the same moment, as two
    workers starting on a new file do: so the switch is retried.
    """
    if dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        dbapi_connection.execute("PRAGMA journal_mode=WAL")


_SUMMARY_COLUMNS = ("order_id", "order_number", "version", "status", "on_hold", "customer_id", "customer_name",
                    "requested_delivery", "promised_delivery", "amount_net", "currency", "updated_at")


def _open_raised() -> tuple[Any, ColumnElement[bool]]:
    """The alerts raised and not cleared (paired by stage, due date and occurrence, as ``open_alerts``
    pairs them): the ``raised`` alias and the condition on it."""
    raised, cleared = order_alerts.alias("raised"), order_alerts.alias("cleared")
    closed = (select(cleared.c.record_id)
              .where(cleared.c.kind == "CLEARED", cleared.c.order_id == raised.c.order_id,
                     cleared.c.stage == raised.c.stage, cleared.c.due_date == raised.c.due_date,
                     cleared.c.occurrence == raised.c.occurrence).exists())
    return raised, and_(raised.c.kind == "RAISED", ~closed)


def _open_alert_orders() -> Any:
    """The ids of orders with an open due-date alert."""
    raised, is_open = _open_raised()
    return select(raised.c.order_id).where(is_open)


def _text_matches(text: str) -> ColumnElement[bool]:
    """Orders whose number, customer id or name, or an external id or number, contains ``text``."""
    needle = text.lower()

    def has(column: Any) -> ColumnElement[bool]:
        return func.lower(column).contains(needle, autoescape=True)  # % and _ are meant literally

    o, x = orders.c, order_xrefs.c
    by_reference = exists().where(x.order_id == o.order_id, or_(has(x.external_id), has(x.external_number)))
    return or_(has(o.order_number), has(o.customer_id), has(o.customer_name), by_reference)


def _summary(row: RowMapping) -> OrderSummary:
    return OrderSummary(**{**row, "status": LifecycleStatus(row["status"])})


def _history_entry(row: RowMapping) -> HistoryEntry:
    return HistoryEntry(**{**row, "outcome": ChangeOutcome(row["outcome"]),
                           "diffs": _models(FieldDiff, json.loads(row["diffs"])),
                           "refs_added": _models(ExternalRef, json.loads(row["refs_added"] or "[]"))})


def _conflict_record(row: RowMapping) -> ConflictRecord:
    return ConflictRecord(**{**row, "fields": _models(FieldConflict, json.loads(row["fields"]))})


def _models(model: type[_Model], stored: Iterable[Mapping[str, Any]]) -> tuple[_Model, ...]:
    """Stored JSON objects as models; keys a newer hub added and this one does not know are left out."""
    return tuple(model.model_validate({k: v for k, v in item.items() if k in model.model_fields})
                 for item in stored)


def _history_row(change: OrderChange) -> dict[str, Any]:
    same = {"order_id", "version", "order_number", "record_id", "event_id", "source_system", "occurred_at",
            "accepted_at", "base_version", "previous_version"}
    return {**change.model_dump(include=same), "outcome": change.outcome.value, "actor_id": change.actor.id,
            "actor_role": change.actor.role, "diffs": json.dumps([d.model_dump(mode="json") for d in change.diffs]),
            "refs_added": json.dumps([r.model_dump(mode="json") for r in change.external_refs_added])}


def _order_row(snap: OrderSnapshot) -> dict[str, Any]:
    return {
        "order_id": snap.order_id, "order_number": snap.order_number, "version": snap.version,
        "status": snap.status.value, "on_hold": snap.on_hold,
        "customer_id": snap.customer.id if snap.customer else None,
        "customer_name": snap.customer.name if snap.customer else None, "currency": snap.currency,
        "amount_net": snap.amounts.net, "amount_tax": snap.amounts.tax, "amount_gross": snap.amounts.gross,
        "amount_crm_expected": snap.amounts.crm_expected, "requested_delivery": snap.requested_delivery,
        "promised_delivery": snap.promised_delivery, "priority": snap.priority, "plant": snap.plant,
        "updated_at": snap.updated_at, "snapshot": snap.model_dump_json(),
    }


def _line_row(order_id: str, line: OrderLine) -> dict[str, Any]:
    return {
        "order_id": order_id, "line_no": line.line_no, "material_id": line.material.id,
        "material_revision": line.material.revision, "quantity": line.quantity, "unit": line.unit,
        "confirmed_quantity": line.confirmed_quantity, "good_quantity": line.good_quantity,
        "scrap_quantity": line.scrap_quantity,
    }


def _rejection_row(rejection: OrderRejection) -> dict[str, Any]:
    same = {"record_id", "event_id", "order_id", "current_version", "decided_at"}
    return {**rejection.model_dump(include=same), "reason": rejection.reason.value,
            "source_system": rejection.proposal.source_system, "actor_id": rejection.proposal.actor.id,
            "errors": json.dumps([e.model_dump(mode="json") for e in rejection.errors]),
            "proposal": rejection.proposal.model_dump_json()}


def _rejection(row: RowMapping) -> OrderRejection:
    return OrderRejection(record_id=row["record_id"], event_id=row["event_id"], order_id=row["order_id"],
                          reason=row["reason"], errors=list(_models(FieldError, json.loads(row["errors"]))),
                          current_version=row["current_version"], decided_at=row["decided_at"],
                          proposal=ChangeProposal.model_validate_json(row["proposal"]))


def _json_value(text: str | None) -> Any:
    """A diff's canonical JSON value as Python; None for an absent value or text that is not JSON."""
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def _conflict_row(conflict: OrderConflict) -> dict[str, Any]:
    same = {"record_id", "order_id", "order_number", "event_id", "base_version", "current_version", "parked",
            "resulting_version", "decided_at"}
    return {**conflict.model_dump(include=same),
            "fields": json.dumps([f.model_dump(mode="json") for f in conflict.fields])}


# --- text for the CLI -------------------------------------------------------------------


def show_order_text(settings: Settings, order: str) -> str:
    """``orderhub orders show``: every field of the order, and a table of its lines."""
    with opened_order(settings, order) as (model, order_id):
        snapshot = model.order(order_id)
        parked = sum(c.parked for c in model.conflicts(order_id))
        alerts = model.open_alerts(order_id)
    return order_text(snapshot, parked_conflicts=parked, alerts=alerts)


def order_text(order: OrderSnapshot, *, parked_conflicts: int = 0, alerts: Sequence[OrderAlert] = ()) -> str:
    """Every canonical field of ``order`` for a person, one label per line, then its lines as a table."""
    amounts = order.amounts
    header = [
        f"order {order.order_number}  (id {order.order_id})  version {order.version}",
        _field("status", f"{order.status.value}{'  ON HOLD' if order.on_hold else ''}"),
        _field("hold reasons", "; ".join(order.hold_reasons) or "-"),
        _field("customer", f"{_v(order.customer.id)}  {order.customer.name or ''}".rstrip() if order.customer else "-"),
        _field("contact", _v(order.contact)),
        _field("sales owner", _v(order.sales_owner)),
        _field("customer PO", _v(order.customer_po_number)),
        _field("terms", _v(order.terms)),
        _field("credit", _v(order.credit_status)),
        _field("amounts", f"{_v(order.currency)}  net {_v(amounts.net)}  tax {_v(amounts.tax)}  "
                          f"gross {_v(amounts.gross)}  crm expected {_v(amounts.crm_expected)}"),
        _field("delivery", f"requested {_v(order.requested_delivery)}  promised {_v(order.promised_delivery)}"),
        _field("planned", f"start {_v(order.planned_start)}  end {_v(order.planned_end)}"),
        _field("actual", f"start {_v(order.actual_start)}  end {_v(order.actual_end)}"),
        _field("priority", str(order.priority)),
        _field("plant", _v(order.plant)),
        _field("created at", _v(order.created_at)),
        _field("updated at", _v(order.updated_at)),
        *_field_list("external", [_ref_text(r) for r in order.external_refs]),
        *_field_list("instructions", [f"{i.key}: {i.text}" if i.key else i.text for i in order.instructions]),
        *_field_list("approvals", [f"{a.level}: {a.decision}" + (f" ({a.comment})" if a.comment else "")
                                   for a in order.approvals]),
    ]
    header += _field_list("alerts", [f"{a.stage} for {a.notify} since {_v(a.decided_at)}: {a.reason}" for a in alerts])
    if parked_conflicts:
        header.append(_field("conflicts", f"{parked_conflicts} parked, waiting for a person: "
                                          f"orderhub orders conflicts {order.order_number}"))
    table = _table(["line", "material", "rev", "quantity", "unit", "raw unit", "unit price", "confirmed date",
                    "confirmed qty", "good", "scrap"],
                   [[ln.line_no, ln.material.id, ln.material.revision, ln.quantity, ln.unit, ln.raw_unit,
                     ln.unit_price, ln.confirmed_date, ln.confirmed_quantity, ln.good_quantity, ln.scrap_quantity]
                    for ln in order.lines])
    return "\n".join([*header, "", *(table if order.lines else ["no lines"])])


def diff_text(diff: Mapping[str, Any] | FieldDiff) -> str:
    """One field of an accepted change for a person: ``path: before -> after`` (JSON; absent is null)."""
    if isinstance(diff, FieldDiff):
        diff = diff.model_dump()
    return f"{diff['field']}: {diff['before'] or 'null'} -> {diff['after'] or 'null'}"


def history_text(settings: Settings, order: str) -> str:
    """``orderhub orders history``: one line per version, then each field's before -> after."""
    with opened_order(settings, order) as (model, order_id):
        entries = model.history(order_id)
    out = [f"history of order {entries[0].order_number if entries else order}  (id {order_id})"]
    for e in entries:
        base = "" if e.base_version == e.previous_version else f"  (based on v{e.base_version})"
        out.append(f"v{e.version}  {e.accepted_at.isoformat()}  {e.actor_id}/{e.actor_role}  "
                   f"via {e.source_system}  {e.outcome.value}{base}")
        out.extend(f"      {diff_text(d)}" for d in e.diffs)
        out.extend(f"      + cross-reference {_ref_text(r)}" for r in e.refs_added)
    return "\n".join(out if entries else [*out, "no recorded changes"])


def conflicts_text(settings: Settings, order: str) -> str:
    """``orderhub orders conflicts``: every conflict recorded for the order, parked ones first."""
    with opened_order(settings, order) as (model, order_id):
        records = model.conflicts(order_id)
    out = [f"conflicts of order {order_id}: {sum(r.parked for r in records)} parked, {len(records)} in all"]
    for r in records:
        verdict = "PARKED, waiting for a person" if r.parked else (
            f"decided, made v{r.resulting_version}" if r.resulting_version else "decided, current kept")
        out.append(f"{r.decided_at.isoformat()}  proposal {r.event_id}  base v{r.base_version} "
                   f"against v{r.current_version}  {verdict}")
        for f in r.fields:
            out.append(f"      {field_conflict_text(f)}")
            if f.reason is not None:
                out.append(f"        why: {f.reason}")
    return "\n".join(out)


def field_conflict_text(conflict: FieldConflict) -> str:
    """One conflicting field for a person: outcome, policy, owner, and each value with its writer."""
    base = (conflict.base_value or "null") if conflict.base_value_known else "unknown"
    return (f"{conflict.field}: {conflict.outcome.value} by {conflict.policy.value} (owner {conflict.owner}): "
            f"base {base}, current {conflict.current_value or 'null'} by {conflict.current_writer.source_system}, "
            f"proposed {conflict.proposed_value or 'null'} by {conflict.proposed_writer.source_system}")


def lead_times_text(settings: Settings, *, kind: str | None = None, weeks: int = DEFAULT_WEEKS,
                    until: dt.date | None = None, as_json: bool = False) -> str:
    """``orderhub report lead-times``: per kind and ISO week, count, open, p50/p90/p95 and max, as a
    table in hours or as JSON in seconds; ``until`` (default: today, UTC) is the report's last day."""
    until = until or dt.datetime.now(dt.UTC).date()
    since, _ = window(until, weeks)
    with _open(settings) as model:
        found = model.lead_times([kind] if kind else KINDS, since=since)
    rows = weekly(found, until=until, weeks=weeks)
    return (report_json if as_json else report_text)(rows, until=until, weeks=weeks)


@contextmanager
def opened_order(settings: Settings, order: str) -> Iterator[tuple[ReadModel, str]]:
    """The read model and the id of the order ``order`` names; OrderNotFound saying where it looked."""
    with _open(settings) as model:
        try:
            yield model, model.resolve(order)
        except OrderNotFound as exc:
            raise _not_found(settings, order, exc) from None


def _open(settings: Settings) -> closing[ReadModel]:
    model = ReadModel(settings.read_model_url)
    try:
        model.create_schema()  # a fresh state folder reads as an empty model, not as an error
    except OperationalError as exc:
        model.close()
        raise ConfigError(f"cannot open the read model at {_safe_url(settings)}: {exc.orig}") from None
    except BaseException:
        model.close()
        raise
    return closing(model)


def _not_found(settings: Settings, order: str, exc: OrderNotFound) -> OrderNotFound:
    if isinstance(exc, AmbiguousOrder):
        return AmbiguousOrder(f"{exc}; use the order id")
    return OrderNotFound(f"no order {order!r} in the read model at {_safe_url(settings)}")


def _safe_url(settings: Settings) -> str:
    return make_url(settings.read_model_url).render_as_string(hide_password=True)


def _ref_text(ref: ExternalRef) -> str:
    return ref.key + (f" ({ref.external_number})" if ref.external_number else "")


LABEL_WIDTH = 14


def _field(label: str, value: str) -> str:
    return f"{label:<{LABEL_WIDTH}}{value}"


def _field_list(label: str, values: list[str]) -> list[str]:
    """A label with one value per line, the later ones indented under the first; ``-`` for none."""
    return [_field(label if i == 0 else "", value) for i, value in enumerate(values or ["-"])]


def _v(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return "-" if value is None else str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [headers, *([_v(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
