"""A connector instance's durable local state: the offline outbox, the source cursor, and what
the hub last said about each order. One SQLite file per instance.

- ``outbox``: encoded proposals in the order they were made, until Kafka has taken them. A
  proposal and the cursor behind it are written in one transaction: after a crash either both
  are there (the proposal is sent after the restart) or neither (the poll is repeated).
  An event id is stored once, so a change emitted twice is sent once.
- ``cursor``: the source's position after the last stored poll.
- ``known``: the latest snapshot of every order (from the state topic), its external
  references indexed, and the state topic's offsets, so a restart does not read it all again.
- ``proposed`` / ``answered``: the last proposal this instance made per outside object, and the
  hub's answers to this instance's proposals: an echo is dropped only once the hub's snapshot
  has caught up with the instance's own last proposal (else an A -> B -> A in flight would lose
  the second A).
- ``seen``: what the outside system said last about each of its objects (path -> canonical JSON),
  stored with the proposals it made: a later read proposes only what changed outside since (see
  ``hub.sdk.runtime``), so the hub's own edit of a field the outside system never takes back is
  not undone by the next read of that object.
- ``held``: records Kafka refused for good (too large, not authorised), kept with the reason
  so they block nothing and lose nothing.
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

import orjson

from hub.events import ExternalRef, OrderSnapshot


@dataclass(frozen=True)
class Pending:
    """One record waiting in the outbox: a proposal, a dead letter, or a cursor to publish."""

    #: Position in the outbox: records are sent in this order.
    seq: int
    #: Unique id (a proposal's event id): the same id is stored once.
    event_id: str
    #: The topic's role (``TopicNames``): proposals, dead_letters, connector_cursors.
    role: str
    #: Its Kafka key.
    key: str
    #: The encoded value.
    value: bytes
    #: Kafka headers (a dead letter's why).
    headers: tuple[tuple[str, bytes], ...] = ()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
                                   role TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                                   headers TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS known (order_id TEXT PRIMARY KEY, version INTEGER NOT NULL, snapshot TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS known_refs (ref TEXT PRIMARY KEY, order_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
                                    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS proposed (ref TEXT PRIMARY KEY, event_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answered (event_id TEXT PRIMARY KEY, version INTEGER);
CREATE TABLE IF NOT EXISTS seen (ref TEXT PRIMARY KEY, fields BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS held (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, role TEXT NOT NULL,
                                 key TEXT NOT NULL, value BLOB NOT NULL, headers TEXT NOT NULL, reason TEXT NOT NULL);
"""


class ConnectorStore:
    """The SQLite file of one connector instance (safe to share between the runtime's tasks)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a proposal stored is a proposal kept, power cut included
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "stored_at" not in columns:  # a store from before the outbox said when (its records count as now)
            self._db.execute("ALTER TABLE outbox ADD COLUMN stored_at REAL")
        if "correlation_id" not in {row[1] for row in self._db.execute("PRAGMA table_info(known)")}:
            self._db.execute("ALTER TABLE known ADD COLUMN correlation_id TEXT")
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction (one fsync) around several statements; the caller holds the lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the file (after whatever another thread is doing with it)."""
        with self._lock:
            self._db.close()

    # --- outbox and cursor --------------------------------------------------------------

    def put(self, records: Iterable[Pending], cursor: dict[str, Any] | None = None,
            proposed: Iterable[tuple[str, str]] = (), seen: Iterable[tuple[str, dict[str, str]]] = ()) -> int:
        """Store records (their ``seq`` is ignored) and, with them, the cursor behind them, which
        proposal is now the last per outside object (``(ref, event_id)``) and what the outside system
        now says of each object (``(ref, {path: canonical JSON})``, replacing what it said before), in
        one transaction; an id already in the outbox is not stored again. Returns how many were new."""
        now = time.time()
        rows = [(r.event_id, r.role, r.key, r.value, json.dumps([[k, v.decode("latin-1")] for k, v in r.headers]),
                 now) for r in records]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany("INSERT OR IGNORE INTO outbox (event_id, role, key, value, headers, stored_at) "
                                     "VALUES (?, ?, ?, ?, ?, ?)", rows)
                added = self._db.total_changes - before
                if cursor is not None:
                    self._db.execute("INSERT OR REPLACE INTO cursor (name, value) VALUES ('source', ?)",
                                     (json.dumps(cursor, sort_keys=True),))
                self._db.executemany("INSERT OR REPLACE INTO proposed (ref, event_id) VALUES (?, ?)", list(proposed))
                self._db.executemany("INSERT OR REPLACE INTO seen (ref, fields) VALUES (?, ?)",
                                     [(ref, orjson.dumps(fields)) for ref, fields in seen])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def pending(self, limit: int = 500) -> list[Pending]:
        """The oldest proposals Kafka has not taken yet, in the order they were stored."""
        with self._lock:
            rows = self._db.execute("SELECT seq, event_id, role, key, value, headers FROM outbox ORDER BY seq LIMIT ?",
                                    (limit,)).fetchall()
        return [Pending(seq, event_id, role, key, value,
                        () if headers == "[]" else tuple((k, v.encode("latin-1")) for k, v in orjson.loads(headers)))
                for seq, event_id, role, key, value, headers in rows]

    def sent(self, upto_seq: int) -> None:
        """Forget every record up to ``upto_seq``: Kafka has them."""
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (upto_seq,))

    def sent_seqs(self, seqs: list[int]) -> None:
        """Forget these records, in one transaction: Kafka has them."""
        if not seqs:
            return
        with self._lock, self._transaction():
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def waiting(self, role: str | None = None) -> int:
        """How many records (of one role: proposals, dead_letters, connector_cursors) wait for Kafka."""
        with self._lock:
            if role is None:
                return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM outbox WHERE role = ?", (role,)).fetchone()[0]

    def oldest_age_s(self, now: float | None = None) -> float:
        """How long the oldest record in the outbox has waited for Kafka (0 when none waits)."""
        with self._lock:
            # rows stored before stored_at was kept have none: the oldest of those that say
            oldest = self._db.execute("SELECT MIN(stored_at) FROM outbox").fetchone()[0]
        if oldest is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - oldest)

    def hold(self, record: Pending, reason: str) -> None:
        """Move a record Kafka refused for good out of the outbox, keeping it with the reason."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (record.seq, record.event_id, record.role, record.key, record.value,
                                  json.dumps([[k, v.decode("latin-1")] for k, v in record.headers]), reason))
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (record.seq,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def held(self) -> list[tuple[str, str]]:
        """``(event_id, reason)`` of every record Kafka refused for good."""
        with self._lock:
            return self._db.execute("SELECT event_id, reason FROM held ORDER BY seq").fetchall()

    # --- what this instance proposed, and what the hub answered ---------------------------

    def answered(self, answers: Iterable[tuple[str, int | None]]) -> None:
        """Record the hub's answers to this instance's proposals: ``(event_id, version after it)``."""
        with self._lock, self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO answered (event_id, version) VALUES (?, ?)", list(answers))

    def settled(self, ref: str, known_version: int) -> bool:
        """Whether the hub's snapshot at ``known_version`` already reflects the last proposal this
        instance made for the outside object ``ref`` (true when it made none)."""
        return self.known(refs=[ref]).settled(ref, known_version)

    def seen(self, refs: Iterable[str]) -> dict[str, dict[str, str]]:
        """What the outside system said last of each object in ``refs`` (path -> canonical JSON), by
        ref; an object this instance never read is missing."""
        with self._lock:
            rows = self._rows_in("SELECT ref, fields FROM seen WHERE ref IN ({})", refs)
        return {ref: orjson.loads(fields) for ref, fields in rows}

    def _rows_in(self, query: str, values: Iterable[Any]) -> list[tuple[Any, ...]]:
        """Every row of ``query`` (``IN ({})`` in it) for the distinct ``values``, asked in chunks within
        SQLite's limit on parameters; the caller holds the lock."""
        wanted, rows = list(dict.fromkeys(values)), []
        for at in range(0, len(wanted), 500):
            chunk = wanted[at:at + 500]
            rows += self._db.execute(query.format(", ".join("?" * len(chunk))), chunk).fetchall()
        return rows

    def cursor(self) -> dict[str, Any]:
        """The source's cursor after the last stored poll ({} before the first)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM cursor WHERE name = 'source'").fetchone()
        return json.loads(row[0]) if row else {}

    def set_cursor(self, cursor: dict[str, Any]) -> None:
        """Adopt a cursor (another instance's, taken over with the source lease)."""
        self.put((), cursor)

    # --- what the hub last said ---------------------------------------------------------

    def remember(self, snapshots: Iterable[OrderSnapshot], offsets: dict[tuple[str, int], int],
                 correlation_ids: dict[str, str] | None = None) -> None:
        """Keep the latest snapshot per order (an older version never replaces a newer one), with the
        order's correlation id when the record carried one, and the state topic's next offsets, in one
        transaction."""
        flows = correlation_ids or {}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for snap in snapshots:
                    self._db.execute(
                        "INSERT INTO known (order_id, version, snapshot, correlation_id) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(order_id) DO UPDATE SET version = excluded.version, snapshot = excluded.snapshot, "
                        "correlation_id = COALESCE(excluded.correlation_id, known.correlation_id) "
                        "WHERE excluded.version >= known.version",
                        (snap.order_id, snap.version, snap.model_dump_json(), flows.get(snap.order_id)))
                    self._db.executemany("INSERT OR IGNORE INTO known_refs (ref, order_id) VALUES (?, ?)",
                                         [(ref.key, snap.order_id) for ref in snap.external_refs])
                self._db.executemany("INSERT OR REPLACE INTO offsets (topic, partition, next) VALUES (?, ?, ?)",
                                     [(t, p, o) for (t, p), o in offsets.items()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read per partition of ``topic``."""
        with self._lock:
            rows = self._db.execute("SELECT partition, next FROM offsets WHERE topic = ?", (topic,)).fetchall()
        return dict(rows)

    def snapshot(self, order_id: str) -> OrderSnapshot | None:
        """The latest snapshot of an order, or None."""
        return self.known(order_ids=[order_id]).snapshot(order_id)

    def correlation_id(self, order_id: str) -> str | None:
        """The correlation id of the order's flow (``hub.correlation``), when its snapshot carried one."""
        return self.known(order_ids=[order_id]).correlation_id(order_id)

    def snapshot_for(self, ref: ExternalRef) -> OrderSnapshot | None:
        """The latest snapshot of the order an outside reference belongs to, or None."""
        return self.known(refs=[ref.key]).snapshot(None, ref.key)

    def known(self, order_ids: Iterable[str] = (), refs: Iterable[str] = ()) -> "Known":
        """What the store knows of these orders and outside objects (``ExternalRef.key``), read in three
        queries however many there are: what ``emit`` asks once per batch of changes."""
        refs = list(refs)
        with self._lock:
            by_id = self._rows_in("SELECT order_id, snapshot, correlation_id FROM known WHERE order_id IN ({})",
                                  order_ids)
            by_ref = self._rows_in("SELECT r.ref, k.order_id, k.snapshot, k.correlation_id FROM known_refs r "
                                   "JOIN known k ON k.order_id = r.order_id WHERE r.ref IN ({})", refs)
            proposed = self._rows_in("SELECT p.ref, a.event_id IS NOT NULL, a.version FROM proposed p "
                                     "LEFT JOIN answered a ON a.event_id = p.event_id WHERE p.ref IN ({})", refs)
        orders = {order_id: (snapshot, flow) for order_id, snapshot, flow in by_id}
        orders.update((order_id, (snapshot, flow)) for _, order_id, snapshot, flow in by_ref)
        return Known(orders, {ref: order_id for ref, order_id, _, _ in by_ref},
                     {ref: (bool(answered), version) for ref, answered, version in proposed})


class Known:
    """The hub's latest word on some orders, and this instance's last proposal per outside object,
    as ``ConnectorStore.known`` read them: each snapshot parsed when first asked for."""

    def __init__(self, orders: dict[str, tuple[str, str | None]], ref_orders: dict[str, str],
                 proposed: dict[str, tuple[bool, int | None]]) -> None:
        #: By order id: the snapshot's JSON and the flow's correlation id.
        self._orders = orders
        #: Order id by outside reference (``ExternalRef.key``).
        self._ref_orders = ref_orders
        #: By outside reference: whether the hub answered the last proposal, and the version it named.
        self._proposed = proposed
        self._json: dict[str, dict[str, Any]] = {}

    def order(self, order_id: str | None, ref: str | None = None) -> dict[str, Any] | None:
        """The latest snapshot of the order ``order_id`` names, else of the one ``ref`` belongs to, in
        its JSON form (what ``OrderSnapshot.model_dump(mode="json")`` gives), parsed once per order:
        what ``emit`` compares changes with, without building the model."""
        if order_id not in self._orders:
            order_id = self._ref_orders.get(ref) if ref is not None else None
            if order_id is None:
                return None
        parsed = self._json.get(order_id)
        if parsed is None:
            parsed = self._json[order_id] = orjson.loads(self._orders[order_id][0])
        return parsed

    def snapshot(self, order_id: str | None, ref: str | None = None) -> OrderSnapshot | None:
        """``order`` as the model."""
        found = self.order(order_id, ref)
        return None if found is None else OrderSnapshot.model_validate(found)

    def correlation_id(self, order_id: str) -> str | None:
        """The order's correlation id, when its snapshot carried one."""
        known = self._orders.get(order_id)
        return known[1] if known else None

    def settled(self, ref: str, known_version: int) -> bool:
        """Whether the hub's snapshot at ``known_version`` already reflects the last proposal this
        instance made for the outside object ``ref`` (true when it made none)."""
        if ref not in self._proposed:
            return True
        answered, version = self._proposed[ref]
        return answered and (version is None or known_version >= version)
