"""The canonical state of one order, as the engine keeps it.

Unlike the snapshot the world sees, the state remembers, for every field, the version at
which it last changed and who wrote it (that is what conflict detection needs), a short
history so a conflict can show the value at the writer's base version, and the ids of the
proposals already decided (the dedup evidence, which must live in the state itself).

The engine reads and writes the whole state once per proposal (``to_table``/``from_table``), so
its table form is compact: MessagePack, field values as JSON values rather than JSON text,
field paths as small numbers, each writer (system, actor) once, and decided proposal ids as
short digests in one byte string.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import struct
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Mapping

import orjson
import ormsgpack

from hub.domain.fields import STATUS_PATH, as_is, kind_of, line_of, load_json
from hub.events import ExternalRef, OrderSnapshot

#: Earlier values kept per field, to report a conflict's base value.
HISTORY_DEPTH = 3
#: Proposal ids remembered per order; an older id redelivered is decided again.
SEEN_LIMIT = 2000
#: Bytes of BLAKE2b a decided proposal id is remembered by (see ``DecidedIds``).
DIGEST_BYTES = 12
#: One character per decision kind (``DecisionKind`` values) in the dedup evidence. Stored: never
#: change or reuse a code; a new kind gets a new one.
KIND_CODES = {"created": "c", "applied": "a", "merged": "m", "resolved": "r", "parked": "p", "kept": "k",
              "unchanged": "u", "rejected": "x", "duplicate": "d"}
#: The code of an id remembered without its kind (states written before answers existed).
NO_KIND = "?"
_KINDS = {code: kind for kind, code in KIND_CODES.items()}
#: Field paths by the number the table value stores them under (``OrderState.to_dict``): a header
#: field by its position here, a line's field by 100 x its line number + its position in
#: TABLE_LINE_PATHS. Stored: never reorder or remove, only append (each below 100 long). A path
#: not listed (an approval level's) is stored as it is.
TABLE_PATHS = (
    "customer.id", "customer.name", "contact", "sales_owner", "customer_po_number", "currency",
    "amounts.net", "amounts.tax", "amounts.gross", "amounts.crm_expected", "requested_delivery",
    "promised_delivery", "planned_start", "planned_end", "actual_start", "actual_end", "priority",
    "terms", "plant", "credit_status", "instructions", "status", "on_hold", "hold_reasons", "deleted",
)
TABLE_LINE_PATHS = (
    "material.id", "material.revision", "quantity", "unit", "raw_unit", "unit_price", "confirmed_date",
    "confirmed_quantity", "good_quantity", "scrap_quantity",
)
#: Marks the form of a FieldState's value (text or parsed) not made yet.
_UNSET: Any = object()


def value_text(value: Any) -> str | None:
    """The canonical JSON text of a value read back from the table, None for None.

    orjson with sorted keys spells every value of the field kinds exactly as ``canonical_json``
    does (``tests/unit/test_state_encoding.py`` checks every character), ten times faster;
    the state's values are turned back into text on every load.
    """
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@lru_cache(maxsize=1024)  # a decision looks its proposal's id up, then remembers it
def event_digest(event_id: str) -> bytes:
    """What an event id is remembered by: its BLAKE2b hash, DIGEST_BYTES long."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


#: One DecidedIds entry: the id's digest, its kind's code, the version it made (0: none).
_ENTRY = struct.Struct(f">{DIGEST_BYTES}scI")


@dataclass(frozen=True)
class Decided:
    """How one proposal id was decided for this order: what a duplicate is answered with."""

    #: The decision's kind (``DecisionKind`` value), None when not recorded (older state).
    kind: str | None
    #: The version it made, when it was accepted.
    made_version: int | None


@dataclass(frozen=True)
class DecidedIds:
    """The proposal ids an order has decided, oldest first, and how each was decided: the dedup evidence.

    Up to SEEN_LIMIT of them, read and written with the state for every proposal while a lookup
    needs one, so they are kept as one byte string, stored as it is: loading a state makes no
    object per id, a lookup is one search, remembering one more id one concatenation. Each entry
    is 17 bytes (``_ENTRY``): the id's ``event_digest`` (12 bytes), one ASCII byte for the
    decision's kind (``KIND_CODES``; ``?``: not recorded), and the version it made as a 32-bit
    big-endian number, 0 when it made none.

    A digest stands for its id, so two ids with the same digest are one: the later one would be
    answered DUPLICATE. With 96-bit digests and at most SEEN_LIMIT (2,000) remembered per order,
    a new id meets a remembered digest with probability at most 2,000 / 2**96, about 2.5e-26 per
    proposal: below 3e-11 over 10**15 proposals.
    """

    entries: bytes = b""

    def _find(self, event_id: str) -> int:
        """Where ``event_id``'s entry starts, -1 when it is not there."""
        digest, entries = event_digest(event_id), self.entries
        found = entries.find(digest)
        while found > 0 and found % _ENTRY.size:  # the digest's bytes across two entries: look on
            found = entries.find(digest, found + 1)
        return found

    def get(self, event_id: str) -> Decided | None:
        """How ``event_id`` was decided, or None when it was not (or is forgotten)."""
        found = self._find(event_id)
        if found < 0:
            return None
        _, code, made = _ENTRY.unpack_from(self.entries, found)
        return Decided(_KINDS.get(code.decode()), made or None)

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and self._find(event_id) >= 0

    def __len__(self) -> int:
        return len(self.entries) // _ENTRY.size

    def remember(self, event_id: str, kind: str | None, made_version: int | None = None) -> "DecidedIds":
        """These ids and ``event_id`` (the oldest forgotten past SEEN_LIMIT)."""
        return DecidedIds((self.entries + _entry(event_id, kind, made_version))[-SEEN_LIMIT * _ENTRY.size:])

    @classmethod
    def of(cls, decided: Iterable[tuple[str, str | None, int | None]]) -> "DecidedIds":
        """(event id, kind, made version) triples, oldest first, as DecidedIds (the last SEEN_LIMIT)."""
        return cls(b"".join(_entry(*triple) for triple in decided)[-SEEN_LIMIT * _ENTRY.size:])

    @classmethod
    def from_text(cls, text: str) -> "DecidedIds":
        """The same ids from the text form table values held before (``OrderState.from_dict``):
        each entry a space, the digest in base64 (16 characters), the kind's code, the made version
        in decimal when there is one (``" 4tvB2W0+H5xmqF9Qa12"``)."""
        return cls(b"".join(_ENTRY.pack(base64.b64decode(entry[:16]), entry[16].encode(), int(entry[17:] or 0))
                            for entry in text.split(" ")[1:]))


def _entry(event_id: str, kind: str | None, made_version: int | None) -> bytes:
    return _ENTRY.pack(event_digest(event_id), (NO_KIND if kind is None else KIND_CODES[kind]).encode(),
                       made_version or 0)


class _TableKeys(dict[str, "int | str"]):
    """Field path -> the key the table value stores it under (``TABLE_PATHS``), learnt as met."""

    def __missing__(self, path: str) -> int | str:
        line, key = line_of(path), path
        if line is not None and (field_path := path.split(".", 2)[2]) in TABLE_LINE_PATHS:
            key = line * 100 + TABLE_LINE_PATHS.index(field_path)
        if len(self) < _KEYS_KEPT:
            self[path] = key
        return key


class _TablePaths(dict["int | str", str]):
    """The inverse of ``_TableKeys``: a stored key -> its field path."""

    def __missing__(self, key: int | str) -> str:
        if type(key) is str:
            path = key
        else:
            line, at = divmod(key, 100)
            path = f"lines.{line}.{TABLE_LINE_PATHS[at]}"
        if len(self) < _KEYS_KEPT:
            self[key] = path
        return path


#: Keys and paths each map remembers (every header path, then the line paths met first).
_KEYS_KEPT = 100_000
_TABLE_KEYS = _TableKeys({path: at for at, path in enumerate(TABLE_PATHS)})
_TABLE_PATHS = _TablePaths({at: path for at, path in enumerate(TABLE_PATHS)})


class FieldState:
    """One field's current value and its provenance. Immutable: ``changed`` makes the next one.

    Values are canonical JSON text (``value``, ``earlier``), which conflicts compare and records
    carry, and Python values (``parsed``), which the snapshot and the table hold. A field is
    kept in whichever form it was made from, the other made on first use: a proposal touches a
    few fields, while every field is loaded, published and stored again for each proposal.
    """

    __slots__ = ("_value", "_parsed", "_version", "_system", "_actor", "_earlier", "_stored")

    def __init__(self, value: str | None, version: int, system: str, actor: str,
                 earlier: tuple[tuple[int, str | None], ...] = ()) -> None:
        self._value, self._parsed, self._version, self._system, self._actor = value, _UNSET, version, system, actor
        self._earlier: tuple[tuple[int, str | None], ...] | None = earlier
        self._stored: list[Any] | None = None

    @classmethod
    def stored(cls, entry: list[Any], system: str, actor: str) -> "FieldState":
        """A field from its table form: ``[value, version, writer, version1, value1, ...]`` (see
        ``OrderState.to_dict``), values as Python values, turned into text when first asked for."""
        state = cls.__new__(cls)
        state._value, state._parsed, state._version, state._system, state._actor = (
            _UNSET, entry[0], entry[1], system, actor)
        state._earlier, state._stored = None, entry
        return state

    @property
    def value(self) -> str | None:
        """Canonical JSON, or None when unset."""
        if self._value is _UNSET:
            self._value = value_text(self._parsed)
        return self._value

    @property
    def parsed(self) -> Any:
        """The value as a Python value (None when unset), parsed at most once: the snapshot, the
        status and the hold flag all read it."""
        if self._parsed is _UNSET:
            self._parsed = load_json(self._value)
        return self._parsed

    @property
    def version(self) -> int:
        """Version at which the value was last changed."""
        return self._version

    @property
    def system(self) -> str:
        """Source system that wrote it."""
        return self._system

    @property
    def actor(self) -> str:
        """Actor that wrote it."""
        return self._actor

    @property
    def earlier(self) -> tuple[tuple[int, str | None], ...]:
        """Earlier (version, value) pairs, newest first; complete while shorter than HISTORY_DEPTH."""
        if self._earlier is None:
            flat = self._stored or ()
            self._earlier = tuple((flat[i], value_text(flat[i + 1])) for i in range(3, len(flat), 2))
        return self._earlier

    def table_entry(self, writer: int) -> list[Any]:
        """The table form, with ``writer`` the index of (system, actor) in the state's writers (shared
        with this field when it is the form it was loaded from: read it, never change it)."""
        if self._stored is not None:  # loaded from this form: reuse it, or at least its earlier values
            return self._stored if self._stored[2] == writer else [self._parsed, self._version, writer,
                                                                   *self._stored[3:]]
        entry = [self.parsed, self._version, writer]
        for version, text in self.earlier:
            entry += (version, load_json(text))
        return entry

    def value_at(self, version: int) -> str | None:
        """The value this field had at an earlier version (None when unset or no longer known)."""
        if self.version <= version:
            return self.value
        for changed_at, value in self.earlier:
            if changed_at <= version:
                return value
        return None

    def knows(self, version: int) -> bool:
        """Whether ``value_at(version)`` is the value, not a history too short to tell."""
        return (self.version <= version or any(changed_at <= version for changed_at, _ in self.earlier)
                or len(self.earlier) < HISTORY_DEPTH)

    def changed(self, value: str | None, version: int, system: str, actor: str) -> "FieldState":
        """This field after a new value was written at ``version``."""
        earlier = ((self.version, self.value), *self.earlier)[:HISTORY_DEPTH]
        return FieldState(value, version, system, actor, earlier)

    def _key(self) -> tuple[Any, ...]:
        return self.value, self._version, self._system, self._actor, self.earlier

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldState) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"FieldState(value={self.value!r}, version={self._version!r}, system={self._system!r}, "
                f"actor={self._actor!r}, earlier={self.earlier!r})")


class StoredFields(Mapping[str, FieldState]):
    """An order's fields as loaded from the table: each one's table form, made a FieldState when
    first asked for.

    A proposal reads a few fields, while every field goes back into the table value and the
    snapshot: those go as they came (``parsed_items``, ``table_entries``), without an object each.
    Immutable like the dict it stands for: ``fields | changed`` gives them with some replaced.
    """

    __slots__ = ("_fields", "_writers")

    def __init__(self, fields: dict[str, Any], writers: list[tuple[str, str]]) -> None:
        #: By path: the table form (``[value, version, writer, ...]``), or its FieldState once made.
        self._fields = fields
        #: The (system, actor) pairs the table forms' writer indexes point at.
        self._writers = writers

    def __getitem__(self, path: str) -> FieldState:
        state = self._fields[path]
        if type(state) is list:
            state = self._fields[path] = FieldState.stored(state, *self._writers[state[2]])
        return state

    def get(self, path: str, default: Any = None) -> Any:
        """The field at ``path``, or ``default`` (what Mapping.get does, without raising inside)."""
        return self[path] if path in self._fields else default

    def __contains__(self, path: object) -> bool:
        return path in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __or__(self, changed: Mapping[str, FieldState]) -> "StoredFields":
        return StoredFields({**self._fields, **changed}, self._writers)

    def __repr__(self) -> str:
        return f"StoredFields({dict(self.items())!r})"

    def parsed_items(self) -> list[tuple[str, Any]]:
        """Every field's path and value as a Python value."""
        return [(path, state[0] if type(state) is list else state.parsed) for path, state in self._fields.items()]

    def table_entries(self, writers: dict[tuple[str, str], int]) -> dict[int | str, list[Any]]:
        """Every field's table form by its table key, its writer indexed in ``writers`` (grown in
        order of first use)."""
        entries, stored_writers, keys = {}, self._writers, _TABLE_KEYS
        for path, state in self._fields.items():
            if type(state) is list:  # as loaded: the same list while its writer keeps its index
                writer = writers.setdefault(stored_writers[state[2]], len(writers))
                entries[keys[path]] = state if writer == state[2] else [state[0], state[1], writer, *state[3:]]
            else:
                entries[keys[path]] = state.table_entry(writers.setdefault((state.system, state.actor), len(writers)))
        return entries


@dataclass(frozen=True)
class OrderState:
    """Everything the engine knows about one order; version 0 means it does not exist yet."""

    order_id: str
    version: int = 0
    order_number: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    #: By path (a dict, or the StoredFields ``from_dict`` reads).
    fields: Mapping[str, FieldState] = field(default_factory=dict)
    external_refs: tuple[ExternalRef, ...] = ()
    #: Proposal ids already decided for this order, oldest first, with how each was decided.
    decided: DecidedIds = field(default_factory=DecidedIds)
    #: The flow's correlation id (``hub.correlation``), set when the order is created.
    correlation_id: str | None = None

    @property
    def exists(self) -> bool:
        """True once a creation was accepted."""
        return self.version > 0

    @property
    def status(self) -> str:
        """The lifecycle status (DRAFT until someone moves it)."""
        return self.parsed(STATUS_PATH) or "DRAFT"

    def value(self, path: str) -> str | None:
        """The canonical JSON of a field, or None when unset."""
        state = self.fields.get(path)
        return state.value if state else None

    def parsed(self, path: str) -> Any:
        """A field's value as a Python value, or None when unset."""
        state = self.fields.get(path)
        return state.parsed if state else None

    def has_seen(self, event_id: str) -> bool:
        """Whether this proposal id was already decided for this order."""
        return event_id in self.decided

    def remember(self, event_id: str, kind: str, made_version: int | None = None) -> "OrderState":
        """The same state, with one more decided proposal id (the oldest forgotten past SEEN_LIMIT)."""
        return replace(self, decided=self.decided.remember(event_id, kind, made_version))

    def line_numbers(self) -> list[int]:
        """Line numbers that have any field set, ascending."""
        return sorted({n for n in map(line_of, self.fields) if n is not None})

    # --- persistence: the table value, compact ----------------------------------------

    def to_table(self) -> bytes:
        """The order's table value: ``to_dict`` in MessagePack, which keeps its integer keys and
        byte strings (about 1.8 kB after 40 decisions, against 2.7 kB for the same in JSON)."""
        return ormsgpack.packb(self.to_dict(), option=ormsgpack.OPT_NON_STR_KEYS)

    @classmethod
    def from_table(cls, value: bytes) -> "OrderState":
        """The inverse of ``to_table``."""
        return cls.from_dict(ormsgpack.unpackb(value, option=ormsgpack.OPT_NON_STR_KEYS))

    def to_dict(self) -> dict[str, Any]:
        """The table form in plain values, compact: it is written once per proposal. The dict shares
        lists with the state: serialise it, never change it.

        ::

            {"id": order id, "v": version, "no": order number, "c": created at, "u": updated at,
             "w": [[system, actor], ...],                      every writer once, in order of first use
             "f": {key: [value, version, writer, version1, value1, ...]},   key the path's number
                                                               (TABLE_PATHS) or the path, value a
                                                               JSON value, writer an index into "w",
                                                               then the earlier (version, value)
                                                               pairs, flat
             "x": [[system, object type, external id, external number], ...],
             "d": the DecidedIds bytes,
             "k": the correlation id (only when there is one)}
        """
        writers: dict[tuple[str, str], int] = {}
        if isinstance(self.fields, StoredFields):
            fields = self.fields.table_entries(writers)
        else:
            fields = {_TABLE_KEYS[path]: state.table_entry(writers.setdefault((state.system, state.actor),
                                                                             len(writers)))
                      for path, state in self.fields.items()}
        return {
            "id": self.order_id, "v": self.version, "no": self.order_number,
            "c": self.created_at, "u": self.updated_at,
            "w": [list(writer) for writer in writers], "f": fields,
            "x": [[r.system, r.object_type, r.external_id, r.external_number] for r in self.external_refs],
            "d": self.decided.entries,
        } | ({"k": self.correlation_id} if self.correlation_id else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OrderState":
        """The inverse of ``to_dict``. Also reads the table forms written before, as JSON: the same
        with path keys and the decided ids as text (``DecidedIds.from_text``), and the first one
        (``_from_first_dict``)."""
        if "d" not in data:
            return cls._from_first_dict(data)
        paths, decided = _TABLE_PATHS, data["d"]
        return cls(
            order_id=data["id"], version=data["v"], order_number=data["no"],
            created_at=data["c"], updated_at=data["u"],
            fields=StoredFields({paths[key]: entry for key, entry in data["f"].items()},
                                [(system, actor) for system, actor in data["w"]]),
            external_refs=tuple(ExternalRef(system=s, object_type=t, external_id=i, external_number=n)
                                for s, t, i, n in data["x"]),
            decided=DecidedIds(decided) if type(decided) is bytes else DecidedIds.from_text(decided),
            correlation_id=data.get("k"),
        )

    @classmethod
    def _from_first_dict(cls, data: dict[str, Any]) -> "OrderState":
        """A state in the table form deployments wrote first: field values as JSON text, writers
        spelt out per field, decided ids in full (``"s"``); the next write stores the compact form."""
        # an id alone is what states written before answers existed hold
        decided = DecidedIds.of((seen, None, None) if isinstance(seen, str) else seen for seen in data["s"])
        return cls(
            order_id=data["id"], version=data["v"], order_number=data["no"],
            created_at=data["c"], updated_at=data["u"],
            fields={p: FieldState(v[0], v[1], v[2], v[3], tuple((e[0], e[1]) for e in v[4]))
                    for p, v in data["f"].items()},
            external_refs=tuple(ExternalRef(system=s, object_type=t, external_id=i, external_number=n)
                                for s, t, i, n in data["x"]),
            decided=decided,
        )

    # --- the public face ----------------------------------------------------------------

    def to_snapshot(self) -> OrderSnapshot:
        """The snapshot the state topic carries for this version."""
        doc: dict[str, Any] = {}
        for path, state in self.fields.items():
            if state.parsed is None:  # cleared
                continue
            _put(doc, path.split("."), state.parsed)
        lines = doc.pop("lines", {})
        doc["lines"] = [{"line_no": int(n), **lines[n]} for n in sorted(lines, key=int)]
        doc["approvals"] = [{"level": level, **decided} for level, decided in sorted(doc.pop("approvals", {}).items())]
        return OrderSnapshot(
            order_id=self.order_id, order_number=self.order_number or "", version=self.version,
            external_refs=list(self.external_refs),
            created_at=dt.datetime.fromisoformat(self.created_at), updated_at=dt.datetime.fromisoformat(self.updated_at),
            **doc,
        )

    def snapshot_record(self) -> dict[str, Any]:
        """The snapshot as the Avro writer takes it: what ``to_snapshot().to_avro()`` gives, built
        straight from the state, because one is published for every accepted proposal.

        Decimals come at their kind's scale, which is the schema's, so the codec need not quantise
        them (``AvroCodec.encode(..., quantised=True)``); ``tests/unit/test_state_encoding.py``
        checks the bytes equal the model's for varied states.
        """
        header: dict[str, Any] = {}
        lines: dict[int, dict[str, Any]] = {}
        fields = self.fields
        values = fields.parsed_items() if isinstance(fields, StoredFields) else [
            (path, state.parsed) for path, state in fields.items()]
        for path, value in values:
            if value is None:  # cleared
                continue
            line, key, inner, typed = _PLACES.get(path) or _snapshot_place(path)
            doc = header if line is None else lines.get(line) or lines.setdefault(line, {})
            if typed is not None:
                value = typed(value)
            if inner is None:
                doc[key] = value
            else:
                doc.setdefault(key, {})[inner] = value
        get = header.get
        customer, amounts = get("customer"), get("amounts", {})
        return {
            "order_id": self.order_id, "order_number": self.order_number or "", "version": self.version,
            "status": get("status", "DRAFT"), "on_hold": get("on_hold", False), "hold_reasons": get("hold_reasons", []),
            "external_refs": [{"system": r.system, "object_type": r.object_type, "external_id": r.external_id,
                               "external_number": r.external_number} for r in self.external_refs],
            "customer": None if customer is None else {"id": customer["id"], "name": customer.get("name")},
            "contact": get("contact"), "sales_owner": get("sales_owner"),
            "customer_po_number": get("customer_po_number"), "currency": get("currency"),
            "amounts": {"net": amounts.get("net"), "tax": amounts.get("tax"), "gross": amounts.get("gross"),
                        "crm_expected": amounts.get("crm_expected")},
            "requested_delivery": get("requested_delivery"), "promised_delivery": get("promised_delivery"),
            "planned_start": get("planned_start"), "planned_end": get("planned_end"),
            "actual_start": get("actual_start"), "actual_end": get("actual_end"),
            "priority": get("priority", 0), "terms": get("terms"), "plant": get("plant"),
            "credit_status": get("credit_status"),
            "instructions": [{"key": i.get("key"), "text": i["text"]} for i in get("instructions", ())],
            "lines": [_line_record(n, lines[n]) for n in sorted(lines)],
            "approvals": [{"level": level, "decision": decided["decision"], "comment": decided.get("comment")}
                          for level, decided in sorted(get("approvals", {}).items())],
            "created_at": dt.datetime.fromisoformat(self.created_at),
            "updated_at": dt.datetime.fromisoformat(self.updated_at),
        }


def _put(doc: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        doc = doc.setdefault(key, {})
    doc[keys[-1]] = value


#: ``_snapshot_place`` of the paths met so far (a few dozen: the fields, times the line numbers in use).
_PLACES: dict[str, tuple[int | None, str, str | None, Callable[[Any], Any] | None]] = {}


def _snapshot_place(path: str) -> tuple[int | None, str, str | None, Callable[[Any], Any] | None]:
    """Where a field goes in the snapshot record: its line number (None for the header), its key
    there and the key inside that (``customer.id``, ``material.id``; None for a plain one), and
    how the snapshot types its value (None: as it is)."""
    line = line_of(path)
    key, _, inner = (path.split(".", 2)[2] if line is not None else path).partition(".")
    kind = kind_of(path)
    typed = kind.typed if kind is not None else None
    place = line, key, inner or None, None if typed is as_is else typed
    if len(_PLACES) < 4096:
        _PLACES[path] = place
    return place


def _line_record(line_no: int, line: dict[str, Any]) -> dict[str, Any]:
    """One line of the snapshot record, every attribute present (None when unset), as the model dumps it."""
    material = line["material"]
    return {
        "line_no": line_no, "material": {"id": material["id"], "revision": material.get("revision")},
        "quantity": line["quantity"], "unit": line["unit"], "raw_unit": line.get("raw_unit"),
        "unit_price": line.get("unit_price"), "confirmed_date": line.get("confirmed_date"),
        "confirmed_quantity": line.get("confirmed_quantity"), "good_quantity": line.get("good_quantity"),
        "scrap_quantity": line.get("scrap_quantity"),
    }


def merge_refs(current: Iterable[ExternalRef], proposed: Iterable[ExternalRef]) -> list[ExternalRef]:
    """Proposed references not yet known (same system, object type and id), in proposal order."""
    known = {(r.system, r.object_type, r.external_id) for r in current}
    added = []
    for ref in proposed:
        key = (ref.system, ref.object_type, ref.external_id)
        if key not in known:
            known.add(key)
            added.append(ref)
    return added


def as_decimal(text: str | None) -> Decimal | None:
    """A canonical decimal field back as a Decimal."""
    value = load_json(text)
    return None if value is None else Decimal(value)
