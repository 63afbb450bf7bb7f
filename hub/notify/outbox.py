"""The notifier's durable local state: the notifications to deliver, what it knows of each order,
and how far it has read each topic. One SQLite file (``<state_dir>/notify/<worker_name>.db``).

- ``notifications``: every notification made, by its id (stored once: a record read twice makes
  the same ids), with its state: ``pending`` (with the attempts so far, the last error and when
  to try next), ``delivered``, or ``undeliverable`` (given up, with the reason, kept for an
  operator: ``orderhub notifications``; ``orderhub notifications retry`` sends them again).
- ``orders``: the latest canonical values of every order (from the state topic and the changes),
  so a notification can name the customer and the due date.
- ``offsets``: the next offset to read per topic partition. The notifications a batch of records
  made and the offsets after them are written in one transaction: after a crash either both are
  there or neither (the records are read again and make the same ids).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

PENDING, DELIVERED, UNDELIVERABLE = "pending", "delivered", "undeliverable"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, subscriber TEXT NOT NULL,
    channel TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL, order_id TEXT, order_number TEXT,
    created_at REAL NOT NULL, message TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, last_error TEXT, delivered_at REAL, failing_since REAL);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (subscriber, state, seq);
CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, version INTEGER NOT NULL, number TEXT,
                                   values_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
                                    PRIMARY KEY (topic, partition));
"""


@dataclass(frozen=True)
class Stored:
    """One notification in the outbox."""

    seq: int
    id: str
    subscriber: str
    channel: str
    target: str
    kind: str
    order_id: str | None
    order_number: str | None
    created_at: float
    #: The rendered message (subject, text, and the JSON body webhooks and MQTT carry).
    message: dict[str, Any]
    state: str
    attempts: int
    next_at: float
    last_error: str | None
    delivered_at: float | None
    #: When its attempts started failing (None: not failing); ``give_up_after_s`` counts from here.
    failing_since: float | None


@dataclass(frozen=True)
class Known:
    """What the notifier knows of one order."""

    version: int
    number: str | None
    values: dict[str, Any]


class Outbox:
    """The notifier's SQLite file (safe to share between its tasks and threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a notification stored is one kept, power cut included
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- reading records --------------------------------------------------------------------

    def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read, per (topic, partition) read before."""
        with self._lock:
            rows = self._db.execute("SELECT topic, partition, next FROM offsets").fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def known(self, order_id: str) -> Known | None:
        with self._lock:
            row = self._db.execute("SELECT version, number, values_json FROM orders WHERE order_id = ?",
                                   (order_id,)).fetchone()
        return None if row is None else Known(row[0], row[1], json.loads(row[2]))

    def store(self, notifications: Iterable[dict[str, Any]], orders: dict[str, Known | None],
              offsets: dict[tuple[str, int], int], now: float | None = None) -> int:
        """One batch: its notifications (an id stored before is kept as it is), what it taught about
        orders (None: forget the order) and the offsets after it, in one transaction. Returns how
        many notifications are new."""
        now = time.time() if now is None else now
        added = 0
        with self._transaction() as db:
            for n in notifications:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO notifications (id, subscriber, channel, target, kind, order_id, order_number,"
                    " created_at, message, state, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (n["id"], n["subscriber"], n["channel"], n["target"], n["kind"], n["order_id"], n["order_number"],
                     now, json.dumps(n["message"], sort_keys=True), PENDING, now))
                added += cursor.rowcount
            for order_id, known in orders.items():
                if known is None:
                    db.execute("DELETE FROM orders WHERE order_id = ?", (order_id,))
                else:
                    db.execute("INSERT INTO orders (order_id, version, number, values_json) VALUES (?, ?, ?, ?) "
                               "ON CONFLICT (order_id) DO UPDATE SET version = excluded.version, "
                               "number = excluded.number, values_json = excluded.values_json",
                               (order_id, known.version, known.number, json.dumps(known.values, sort_keys=True)))
            for (topic, partition), offset in offsets.items():
                db.execute("INSERT INTO offsets (topic, partition, next) VALUES (?, ?, ?) ON CONFLICT (topic, partition)"
                           " DO UPDATE SET next = excluded.next", (topic, partition, offset))
        return added

    # --- delivering -------------------------------------------------------------------------

    def next_due(self, subscriber: str) -> Stored | None:
        """The subscriber's oldest pending notification (delivered in the order they were made)."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM notifications WHERE subscriber = ? AND state = ? "
                                   "ORDER BY seq LIMIT 1", (subscriber, PENDING)).fetchone()
        return None if row is None else _stored(row)

    def delivered(self, notification_id: str, now: float | None = None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE notifications SET state = ?, attempts = attempts + 1, delivered_at = ?, last_error = NULL"
                       " WHERE id = ?", (DELIVERED, time.time() if now is None else now, notification_id))

    def failed(self, notification_id: str, error: str, next_at: float | None, now: float | None = None) -> None:
        """An attempt failed: try again at ``next_at``, or (None) keep it as undeliverable with the reason."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            if next_at is None:
                db.execute("UPDATE notifications SET state = ?, attempts = attempts + 1, last_error = ?, "
                           "failing_since = COALESCE(failing_since, ?) WHERE id = ?",
                           (UNDELIVERABLE, error, now, notification_id))
            else:
                db.execute("UPDATE notifications SET attempts = attempts + 1, last_error = ?, next_at = ?, "
                           "failing_since = COALESCE(failing_since, ?) WHERE id = ?",
                           (error, next_at, now, notification_id))

    def retry(self, ids: Iterable[str] | None = None, now: float | None = None) -> int:
        """Undeliverable notifications (these ids; None: all) are pending again, as if never tried."""
        now = time.time() if now is None else now
        again = "UPDATE notifications SET state = ?, attempts = 0, next_at = ?, failing_since = NULL WHERE state = ?"
        with self._transaction() as db:
            if ids is None:
                return db.execute(again, (PENDING, now, UNDELIVERABLE)).rowcount
            return sum(db.execute(again + " AND id = ?", (PENDING, now, UNDELIVERABLE, notification_id)).rowcount
                       for notification_id in ids)

    def give_up_unknown(self, subscribers: Iterable[str], now: float | None = None) -> int:
        """Pending notifications of subscribers the configuration no longer has: kept as undeliverable."""
        names = sorted(set(subscribers))
        marks = ", ".join("?" for _ in names) or "''"
        with self._transaction() as db:
            return db.execute(f"UPDATE notifications SET state = ?, last_error = ?, "
                              f"failing_since = COALESCE(failing_since, ?) WHERE state = ? "
                              f"AND subscriber NOT IN ({marks})",
                              (UNDELIVERABLE, "the subscriber is no longer in the notifications section",
                               time.time() if now is None else now, PENDING, *names)).rowcount

    # --- for people -------------------------------------------------------------------------

    def listing(self, *, state: str | None = None, order_id: str | None = None, limit: int = 100) -> list[Stored]:
        """Notifications, newest first (by state and order, when given)."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if order_id is not None:
            where.append("(order_id = ? OR order_number = ?)")
            args += [order_id, order_id]
        sql = f"SELECT {_COLUMNS} FROM notifications {'WHERE ' + ' AND '.join(where) if where else ''} " \
              "ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [_stored(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many notifications are in each state."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM notifications GROUP BY state").fetchall()
        return {PENDING: 0, DELIVERED: 0, UNDELIVERABLE: 0, **dict(rows)}


_COLUMNS = ("seq, id, subscriber, channel, target, kind, order_id, order_number, created_at, message, state, attempts, "
            "next_at, last_error, delivered_at, failing_since")


def _stored(row: tuple[Any, ...]) -> Stored:
    values = list(row)
    values[9] = json.loads(values[9])
    return Stored(*values)
