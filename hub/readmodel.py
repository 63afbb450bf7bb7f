"""The SQL read model: orders, their lines, history, conflicts and external ids as tables.

The projector feeds it the hub's output events; people and reports read it. Every writer
is idempotent (a replayed topic changes nothing) and takes one batch per transaction. It
runs on a SQLite file by default (``settings.read_model_url``) and on PostgreSQL by URL
(``postgresql+psycopg://...``); upserts use each dialect's ``INSERT ... ON CONFLICT``.

Tables::

    orders           one row per order, the latest snapshot (whole, as JSON, in ``snapshot``)
    order_lines      (order_id, line_no): the lines of that snapshot
    order_history    (order_id, version): one accepted change each, diffs as JSON
    order_conflicts  record_id: one recorded conflict each, fields as JSON
    order_xrefs      (system, object_type, external_id): outside ids -> order_id
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import closing, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Mapping

from sqlalchemy import (Boolean, Column, Date, DateTime, Integer, MetaData, Numeric, String, Table, Text,
                        TypeDecorator, create_engine, event, func, or_, select)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

from hub.errors import ConfigError
from hub.events import ExternalRef, OrderChange, OrderConflict, OrderLine, OrderSnapshot
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
    Column("status", String(32), nullable=False), Column("on_hold", Boolean, nullable=False),
    Column("customer_id", ID), Column("customer_name", String(256)), Column("currency", String(3)),
    Column("amount_net", DECIMAL), Column("amount_tax", DECIMAL), Column("amount_gross", DECIMAL),
    Column("amount_crm_expected", DECIMAL),
    Column("requested_delivery", Date), Column("promised_delivery", Date),
    Column("priority", Integer, nullable=False), Column("plant", String(32)),
    Column("updated_at", _UtcDateTime, nullable=False),
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
)
order_conflicts = Table(
    "order_conflicts", metadata,
    Column("record_id", NAME, primary_key=True),
    Column("order_id", ID, nullable=False, index=True), Column("event_id", NAME, nullable=False),
    Column("base_version", Integer, nullable=False), Column("current_version", Integer, nullable=False),
    Column("parked", Boolean, nullable=False), Column("resulting_version", Integer),
    Column("decided_at", _UtcDateTime, nullable=False),
    Column("fields", Text, nullable=False),  # JSON list of FieldConflict
)
order_xrefs = Table(
    "order_xrefs", metadata,
    Column("system", String(16), primary_key=True), Column("object_type", ID, primary_key=True),
    Column("external_id", NAME, primary_key=True),
    Column("order_id", ID, nullable=False, index=True), Column("external_number", NAME),
)


class ReadModel:
    """The read model at one SQLAlchemy URL: idempotent batch writers and order readers."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(f"the read model runs on sqlite or postgresql, not {parsed.get_backend_name()!r}")
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Readers (the CLI) and the projector share the file: WAL lets them not block each other.
            self.engine: Engine = create_engine(parsed, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", lambda conn, _: conn.execute("PRAGMA journal_mode=WAL"))
        else:
            self.engine = create_engine(parsed)
        self._insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert

    def create_schema(self) -> None:
        """Create the tables that do not exist yet."""
        metadata.create_all(self.engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # --- writers ----------------------------------------------------------------------

    def project_changes(self, changes: list[OrderChange]) -> None:
        """Record accepted changes in the history, once per (order_id, version), and their new xrefs."""
        rows = {(c.order_id, c.version): _history_row(c) for c in changes}
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
        queries = (
            select(o.order_id).where(or_(o.order_id == order, o.order_number == order)),
            select(h.order_id).where(or_(h.order_id == order, h.order_number == order)),  # no snapshot yet
            select(x.order_id).where(or_(x.external_id == order, x.external_number == order,
                                         x.system + "/" + x.object_type + "/" + x.external_id == order)),
        )
        with self.engine.connect() as conn:
            for query in queries:
                found = sorted(set(conn.execute(query).scalars()))
                if len(found) == 1:
                    return found[0]
                if found:
                    raise AmbiguousOrder(f"{order!r} names {len(found)} orders: {', '.join(found)}")
        raise OrderNotFound(order)

    def get_order(self, order: str) -> dict[str, Any]:
        """The order's row, with ``lines`` (by line number) and ``external_refs``; OrderNotFound if none."""
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

    def history(self, order: str) -> list[dict[str, Any]]:
        """The order's accepted changes by version, ``diffs`` decoded to a list of dicts."""
        order_id = self.resolve(order)
        with self.engine.connect() as conn:
            rows = conn.execute(select(order_history).where(order_history.c.order_id == order_id)
                                .order_by(order_history.c.version)).mappings().all()
        return [{**r, "diffs": json.loads(r["diffs"])} for r in rows]

    def versions(self, order_id: str) -> list[int]:
        """The versions recorded in the history of one order, ascending."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(order_history.c.version).where(order_history.c.order_id == order_id)
                                     .order_by(order_history.c.version)).scalars())

    def conflicts(self, order_id: str) -> list[dict[str, Any]]:
        """The order's recorded conflicts, parked ones first, then newest first; ``fields`` decoded."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(order_conflicts).where(order_conflicts.c.order_id == order_id)
                                .order_by(order_conflicts.c.parked.desc(), order_conflicts.c.decided_at.desc(),
                                          order_conflicts.c.record_id)).mappings().all()
        return [{**r, "fields": json.loads(r["fields"])} for r in rows]

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


def _history_row(change: OrderChange) -> dict[str, Any]:
    same = {"order_id", "version", "order_number", "record_id", "event_id", "source_system", "occurred_at",
            "accepted_at", "base_version", "previous_version"}
    return {**change.model_dump(include=same), "outcome": change.outcome.value, "actor_id": change.actor.id,
            "actor_role": change.actor.role, "diffs": json.dumps([d.model_dump(mode="json") for d in change.diffs])}


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


def _conflict_row(conflict: OrderConflict) -> dict[str, Any]:
    same = {"record_id", "order_id", "event_id", "base_version", "current_version", "parked", "resulting_version",
            "decided_at"}
    return {**conflict.model_dump(include=same),
            "fields": json.dumps([f.model_dump(mode="json") for f in conflict.fields])}


# --- text for the CLI -------------------------------------------------------------------


def show_order_text(settings: Settings, order: str) -> str:
    """``orderhub orders show``: the order's header fields and a table of its lines."""
    with _order(settings, order) as (model, order_id):
        o = model.get_order(order_id)
        parked = [c for c in model.conflicts(order_id) if c["parked"]]
    money = "  ".join(f"{label} {_v(o[f'amount_{key}'])}" for key, label in
                      (("net", "net"), ("tax", "tax"), ("gross", "gross"), ("crm_expected", "crm expected")))
    refs = ", ".join(f"{r['system']}/{r['object_type']}/{r['external_id']}"
                     + (f" ({r['external_number']})" if r["external_number"] else "") for r in o["external_refs"])
    header = [
        f"order {o['order_number']}  (id {o['order_id']})  version {o['version']}",
        f"status      {o['status']}{'  ON HOLD' if o['on_hold'] else ''}",
        f"customer    {_v(o['customer_id'])}  {o['customer_name'] or ''}".rstrip(),
        f"amounts     {_v(o['currency'])}  {money}",
        f"delivery    requested {_v(o['requested_delivery'])}  promised {_v(o['promised_delivery'])}",
        f"priority    {o['priority']}    plant {_v(o['plant'])}",
        f"updated at  {o['updated_at'].isoformat()}",
        f"external    {refs or '-'}",
    ]
    if parked:
        header.append(f"conflicts   {len(parked)} parked, waiting for a person: orderhub orders conflicts {o['order_number']}")
    table = _table(["line", "material", "rev", "quantity", "unit", "confirmed", "good", "scrap"],
                   [[ln["line_no"], ln["material_id"], ln["material_revision"], ln["quantity"], ln["unit"],
                     ln["confirmed_quantity"], ln["good_quantity"], ln["scrap_quantity"]] for ln in o["lines"]])
    return "\n".join([*header, "", *(table if o["lines"] else ["no lines"])])


def diff_text(diff: Mapping[str, Any]) -> str:
    """One field of an accepted change for a person: ``path: before -> after`` (JSON; absent is null)."""
    return f"{diff['field']}: {diff['before'] or 'null'} -> {diff['after'] or 'null'}"


def history_text(settings: Settings, order: str) -> str:
    """``orderhub orders history``: one line per version, then each field's before -> after."""
    with _order(settings, order) as (model, order_id):
        rows = model.history(order_id)
    out = [f"history of order {rows[0]['order_number'] if rows else order}  (id {order_id})"]
    for r in rows:
        base = "" if r["base_version"] == r["previous_version"] else f"  (based on v{r['base_version']})"
        out.append(f"v{r['version']}  {r['accepted_at'].isoformat()}  {r['actor_id']}/{r['actor_role']}  "
                   f"via {r['source_system']}  {r['outcome']}{base}")
        out.extend(f"      {diff_text(d)}" for d in r["diffs"])
    return "\n".join(out if rows else [*out, "no recorded changes"])


def conflicts_text(settings: Settings, order: str) -> str:
    """``orderhub orders conflicts``: every conflict recorded for the order, parked ones first."""
    with _order(settings, order) as (model, order_id):
        rows = model.conflicts(order_id)
    out = [f"conflicts of order {order_id}: {sum(r['parked'] for r in rows)} parked, {len(rows)} in all"]
    for r in rows:
        verdict = "PARKED, waiting for a person" if r["parked"] else (
            f"decided, made v{r['resulting_version']}" if r["resulting_version"] else "decided, current kept")
        out.append(f"{r['decided_at'].isoformat()}  proposal {r['event_id']}  base v{r['base_version']} "
                   f"against v{r['current_version']}  {verdict}")
        out.extend(f"      {f['field']}: {f['outcome']} by {f['policy']} (owner {f['owner']}): base "
                   f"{(f['base_value'] or 'null') if f.get('base_value_known', True) else 'unknown'}, "
                   f"current {f['current_value'] or 'null'} by {f['current_writer']['source_system']}, "
                   f"proposed {f['proposed_value'] or 'null'} by {f['proposed_writer']['source_system']}"
                   for f in r["fields"])
    return "\n".join(out)


@contextmanager
def _order(settings: Settings, order: str) -> Iterator[tuple[ReadModel, str]]:
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
    return closing(model)


def _not_found(settings: Settings, order: str, exc: OrderNotFound) -> OrderNotFound:
    if isinstance(exc, AmbiguousOrder):
        return AmbiguousOrder(f"{exc}; use the order id")
    return OrderNotFound(f"no order {order!r} in the read model at {_safe_url(settings)}")


def _safe_url(settings: Settings) -> str:
    return make_url(settings.read_model_url).render_as_string(hide_password=True)


def _v(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [headers, *([_v(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
