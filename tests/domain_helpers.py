"""Small builders for testing the pure domain core (``hub.domain.decide``) without a broker.

``proposal()`` takes plain Python values and encodes them as proposals carry them: canonical
JSON text, decimals and dates as JSON strings. ``run()`` folds proposals for one order through
``decide`` and returns the final state and every decision, so a test reads as a story.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from hub.domain.decide import Decision, decide
from hub.domain.fields import canonical_json, format_timestamp
from hub.domain.order import OrderState
from hub.domain.rules import Rules
from hub.events import Actor, ChangeProposal, ExternalRef, FieldChange, OrderRef, ProposalIntent
from hub.settings import PROJECT_DIR

#: The repository's own rules: tests exercise the policy that ships.
RULES = Rules.load(PROJECT_DIR / "ownership.yaml")
#: The instant every test decision is taken (decisions are pure: time is an argument).
AT = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.timezone.utc)
#: The order most tests talk about.
ORDER_ID = "O-1"


class Raw(str):
    """A value already written as JSON text (or deliberately not JSON): ``proposal`` passes it verbatim."""


class OrderNumbers:
    """A counter-based order number source: ORD-2026-000001, ORD-2026-000002, ... in call order."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)
        self.issued: list[str] = []

    def __call__(self) -> str:
        number = f"ORD-2026-{next(self._counter):06d}"
        self.issued.append(number)
        return number


def json_ready(value: Any) -> Any:
    """A Python value as proposals spell it in JSON: decimals and dates become strings."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def encode(value: Any) -> str | None:
    """The JSON text a proposal carries for ``value`` (``Raw`` text passes unchanged, None clears)."""
    if isinstance(value, Raw):
        return str(value)
    return canonical_json(json_ready(value))


def ref(system: str, object_type: str, external_id: str, external_number: str | None = None) -> ExternalRef:
    """An external reference."""
    return ExternalRef(system=system, object_type=object_type, external_id=external_id,
                       external_number=external_number)


def proposal(
    event_id: str,
    changes: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    base: int = 0,
    system: str = "CRM",
    role: str = "connector",
    intent: ProposalIntent | str = ProposalIntent.UPDATE,
    refs: Iterable[ExternalRef | tuple] = (),
    order_id: str = ORDER_ID,
    actor_id: str | None = None,
) -> ChangeProposal:
    """A change proposal setting ``changes`` (path -> Python value, or pairs), values JSON-encoded in order."""
    pairs = list(changes.items()) if isinstance(changes, Mapping) else [tuple(pair) for pair in changes]
    return ChangeProposal(
        event_id=event_id,
        order_ref=OrderRef(order_id=order_id),
        intent=ProposalIntent(intent),
        base_version=base,
        source_system=system,
        actor=Actor(id=actor_id or f"{system.lower()}-{role}", role=role),
        occurred_at=AT - dt.timedelta(seconds=5),
        changes=[FieldChange(field=path, value=encode(value)) for path, value in pairs],
        external_refs=[r if isinstance(r, ExternalRef) else ref(*r) for r in refs],
    )


def creation(event_id: str = "create-1", changes: Mapping[str, Any] | None = None, **kwargs: Any) -> ChangeProposal:
    """A CREATE proposal with every mandatory field, plus or overriding ``changes``."""
    kwargs.setdefault("intent", ProposalIntent.CREATE)
    return proposal(event_id, {**valid_creation(), **(changes or {})}, **kwargs)


def valid_creation() -> dict[str, Any]:
    """The mandatory fields of a new order (customer, due date, process requirements, one line)."""
    return {
        "customer.id": "C-100",
        "customer.name": "ACME GmbH",
        "requested_delivery": dt.date(2026, 12, 1),
        "instructions": [{"key": "coating", "text": "zinc"}],
        "lines.10.material.id": "MAT-100",
        "lines.10.quantity": Decimal("5"),
        "lines.10.unit": "C62",
    }


def decide_one(state: OrderState | None, prop: ChangeProposal, numbers: OrderNumbers | None = None,
               *, rules: Rules = RULES, at: dt.datetime = AT) -> Decision:
    """Decide one proposal for the order it names."""
    return decide(state, prop, order_id=prop.order_ref.order_id, rules=rules, at=at,
                  next_order_number=numbers or OrderNumbers())


def run(proposals: Iterable[ChangeProposal], state: OrderState | None = None, *,
        numbers: OrderNumbers | None = None, rules: Rules = RULES,
        at: dt.datetime = AT) -> tuple[OrderState, list[Decision]]:
    """Fold proposals for one order through ``decide``: the final state and each decision, in order."""
    numbers = numbers or OrderNumbers()
    decisions = []
    for prop in proposals:
        decision = decide_one(state, prop, numbers, rules=rules, at=at)
        state = decision.state
        decisions.append(decision)
    if state is None:
        raise ValueError("run() needs at least one proposal or a state")
    return state, decisions


def run_orders(proposals: Iterable[ChangeProposal], states: Mapping[str, OrderState] | None = None, *,
               numbers: OrderNumbers | None = None) -> tuple[dict[str, OrderState], list[Decision]]:
    """Like ``run`` for proposals about several orders, each decided against its own order's state."""
    numbers = numbers or OrderNumbers()
    result = dict(states or {})
    decisions = []
    for prop in proposals:
        order_id = prop.order_ref.order_id
        decision = decide_one(result.get(order_id), prop, numbers)
        result[order_id] = decision.state
        decisions.append(decision)
    return result, decisions


def value_of(state: OrderState, path: str) -> Any:
    """A field's value decoded from its canonical JSON (decimals stay strings)."""
    text = state.value(path)
    return None if text is None else json.loads(text)


# --- scenarios: edge cases as data (tests/scenarios/*.yaml, format in its README) ----------

SCENARIOS_DIR = PROJECT_DIR / "tests" / "scenarios"


def scenario_files() -> list[Path]:
    """Every scenario file, sorted by name."""
    return sorted(SCENARIOS_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class Step:
    """One delivery of a scenario: the proposal (new or replayed) and what must be decided."""

    proposal: ChangeProposal
    replay: bool
    expect: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    """A scenario file, read: its sentence, its deliveries in order, and the expected final state."""

    name: str
    description: str
    steps: tuple[Step, ...]
    final: dict[str, Any]

    def proposals(self) -> list[ChangeProposal]:
        """Every delivery's proposal, replays included, in order."""
        return [step.proposal for step in self.steps]


def load_scenario(path: Path) -> Scenario:
    """Read one scenario file into proposals and expectations."""
    doc = yaml.safe_load(path.read_text())
    by_id: dict[str, ChangeProposal] = {}
    steps = []
    for raw in doc["steps"]:
        if "replay" in raw:
            steps.append(Step(by_id[raw["replay"]], True, raw["expect"]))
            continue
        spec = raw["propose"]
        prop = _scenario_proposal(spec)
        if prop.event_id in by_id:
            raise ValueError(f"{path.name}: event id {prop.event_id} proposed twice; use replay")
        by_id[prop.event_id] = prop
        steps.append(Step(prop, False, raw["expect"]))
    return Scenario(path.stem, doc["description"], tuple(steps), doc.get("final") or {})


def _scenario_proposal(spec: Mapping[str, Any]) -> ChangeProposal:
    changes: list[tuple[str, Any]] = []
    if spec.get("creation"):
        without = set(spec.get("without", ()))
        changes += [(p, v) for p, v in valid_creation().items() if p not in without]
    given = spec.get("changes") or {}
    given_pairs = list(given.items()) if isinstance(given, Mapping) else [tuple(p) for p in given]
    given_pairs += [(p, Raw(v)) for p, v in (spec.get("raw") or {}).items()]
    overridden = {p for p, _ in given_pairs}
    changes = [(p, v) for p, v in changes if p not in overridden] + given_pairs
    return proposal(
        str(spec["id"]), changes, base=spec.get("base", 0), system=spec.get("system", "CRM"),
        role=spec.get("role", "connector"), intent=spec.get("intent", "UPDATE"),
        refs=[tuple(map(str, r)) for r in spec.get("refs", ())], order_id=spec.get("order", ORDER_ID),
    )
