"""The canonical state of one order, as the engine keeps it.

Unlike the snapshot the world sees, the state remembers, for every field, the version at
which it last changed and who wrote it (that is what conflict detection needs), a short
history so a conflict can show the value at the writer's base version, and the ids of the
proposals already decided (the dedup evidence, which must live in the state itself).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Iterable

from hub.domain.fields import STATUS_PATH, line_of, load_json
from hub.events import ExternalRef, OrderSnapshot

#: Earlier values kept per field, to report a conflict's base value.
HISTORY_DEPTH = 3
#: Proposal ids remembered per order; an older id redelivered is decided again.
SEEN_LIMIT = 2000


@dataclass(frozen=True)
class Decided:
    """How one proposal id was decided for this order: what a duplicate is answered with."""

    #: The decision's kind (``DecisionKind`` value), None when not recorded (older state).
    kind: str | None
    #: The version it made, when it was accepted.
    made_version: int | None


@dataclass(frozen=True)
class FieldState:
    """One field's current value and its provenance."""

    #: Canonical JSON, or None when unset.
    value: str | None
    #: Version at which the value was last changed.
    version: int
    #: Source system and actor that wrote it.
    system: str
    actor: str
    #: Earlier (version, value) pairs, newest first; complete while shorter than HISTORY_DEPTH.
    earlier: tuple[tuple[int, str | None], ...] = ()

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


@dataclass(frozen=True)
class OrderState:
    """Everything the engine knows about one order; version 0 means it does not exist yet."""

    order_id: str
    version: int = 0
    order_number: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    fields: dict[str, FieldState] = field(default_factory=dict)
    external_refs: tuple[ExternalRef, ...] = ()
    #: Proposal ids already decided for this order, oldest first, with how each was decided.
    decided: dict[str, Decided] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        """True once a creation was accepted."""
        return self.version > 0

    @property
    def status(self) -> str:
        """The lifecycle status (DRAFT until someone moves it)."""
        return load_json(self.value(STATUS_PATH)) or "DRAFT"

    def value(self, path: str) -> str | None:
        """The canonical JSON of a field, or None when unset."""
        state = self.fields.get(path)
        return state.value if state else None

    def has_seen(self, event_id: str) -> bool:
        """Whether this proposal id was already decided for this order."""
        return event_id in self.decided

    def remember(self, event_id: str, kind: str, made_version: int | None = None) -> "OrderState":
        """The same state, with one more decided proposal id (the oldest forgotten past SEEN_LIMIT)."""
        decided = dict(self.decided)
        decided[event_id] = Decided(kind, made_version)
        while len(decided) > SEEN_LIMIT:
            del decided[next(iter(decided))]
        return replace(self, decided=decided)

    def line_numbers(self) -> list[int]:
        """Line numbers that have any field set, ascending."""
        return sorted({n for n in map(line_of, self.fields) if n is not None})

    # --- persistence: a compact dict of plain values for the table --------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (JSON-ready), compact: it is written once per proposal."""
        return {
            "id": self.order_id, "v": self.version, "no": self.order_number,
            "c": self.created_at, "u": self.updated_at,
            "f": {p: [s.value, s.version, s.system, s.actor, [list(e) for e in s.earlier]]
                  for p, s in self.fields.items()},
            "x": [[r.system, r.object_type, r.external_id, r.external_number] for r in self.external_refs],
            "s": [[e, d.kind, d.made_version] for e, d in self.decided.items()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OrderState":
        """The inverse of ``to_dict``."""
        return cls(
            order_id=data["id"], version=data["v"], order_number=data["no"],
            created_at=data["c"], updated_at=data["u"],
            fields={p: FieldState(v[0], v[1], v[2], v[3], tuple((e[0], e[1]) for e in v[4]))
                    for p, v in data["f"].items()},
            external_refs=tuple(ExternalRef(system=s, object_type=t, external_id=i, external_number=n)
                                for s, t, i, n in data["x"]),
            # an id alone is what states written before answers existed hold
            decided={s: Decided(None, None) for s in data["s"] if isinstance(s, str)}
            | {s[0]: Decided(s[1], s[2]) for s in data["s"] if not isinstance(s, str)},
        )

    # --- the public face ----------------------------------------------------------------

    def to_snapshot(self) -> OrderSnapshot:
        """The snapshot the state topic carries for this version."""
        doc: dict[str, Any] = {}
        for path, state in self.fields.items():
            if state.value is None:
                continue
            _put(doc, path.split("."), load_json(state.value))
        lines = doc.pop("lines", {})
        doc["lines"] = [{"line_no": int(n), **lines[n]} for n in sorted(lines, key=int)]
        return OrderSnapshot(
            order_id=self.order_id, order_number=self.order_number or "", version=self.version,
            external_refs=list(self.external_refs),
            created_at=dt.datetime.fromisoformat(self.created_at), updated_at=dt.datetime.fromisoformat(self.updated_at),
            **doc,
        )


def _put(doc: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        doc = doc.setdefault(key, {})
    doc[keys[-1]] = value


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
