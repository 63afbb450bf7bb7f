"""Ownership and permissions, read from ownership.yaml into plain values.

Every answer that refuses carries the rule that refused, in words a person can find in
the file (``fields.amounts.net: owner ERP, writers []``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import yaml

from hub.domain import lifecycle
from hub.domain.fields import HEADER_FIELDS, LINE_FIELDS, STATUS_PATH, rule_path
from hub.domain.workflow import APPROVALS_PREFIX, Workflow
from hub.errors import ConfigError

OWNER_WINS = "owner_wins"
MANUAL = "manual"


def writer_matches(spec: str, system: str, role: str) -> bool:
    """True when a writer spec (``SYSTEM`` or ``SYSTEM:role``) covers this system and role."""
    spec_system, _, spec_role = spec.partition(":")
    return spec_system == system and (not spec_role or spec_role == role)


@dataclass(frozen=True)
class FieldRule:
    """Who owns one field and who else may write it."""

    owner: str
    writers: tuple[str, ...] = ()
    #: False: only the listed writers, not every role of the owner system (an approval level's role).
    owner_writes: bool = True

    def allows(self, system: str, role: str) -> bool:
        """The owner system (any role) and the listed writers may write the field."""
        return (self.owner_writes and system == self.owner) or any(writer_matches(w, system, role) for w in self.writers)


@dataclass(frozen=True)
class Rules:
    """The whole ownership file, validated against the canonical order's fields."""

    fields: dict[str, FieldRule]
    systems: tuple[str, ...]
    create: tuple[str, ...]
    steps: dict[str, frozenset[tuple[str, str]]]
    cancel: tuple[str, ...]
    status_owner: str = "HUB"
    default_policy: str = OWNER_WINS
    policies: dict[str, str] = field(default_factory=dict)
    #: The plant's workflow rules (workflow.yaml), which ``decide`` enforces too; None: none.
    workflow: Workflow | None = None
    #: Fields some HUB roles do not see (``hidden:``): field path (``lines.*.x`` for lines) -> roles.
    hidden: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, workflow: Path | None = None) -> "Rules":
        """Read ownership.yaml, and workflow.yaml when given (``with_workflow``); ConfigError names any
        field, step, policy or rule that is wrong."""
        rules = cls._load(path)
        return rules.with_workflow(Workflow.load(workflow)) if workflow is not None else rules

    def with_workflow(self, workflow: Workflow) -> "Rules":
        """These rules and the workflow's: each approval level's field ``approvals.<level>`` written only by
        ``HUB:<role>``, two differing decisions of one level waiting for a person (``manual``)."""
        levels = workflow.approvals.levels if workflow.approvals else ()
        fields = {path: rule for path, rule in self.fields.items() if not path.startswith(APPROVALS_PREFIX)}
        policies = {path: rule for path, rule in self.policies.items() if not path.startswith(APPROVALS_PREFIX)}
        return replace(self, workflow=workflow,
                       fields={**fields, **{level.path: FieldRule("HUB", (f"HUB:{level.role}",), owner_writes=False)
                                            for level in levels}},
                       policies={**policies, **{level.path: MANUAL for level in levels}})

    @classmethod
    def _load(cls, path: Path) -> "Rules":
        try:
            doc = yaml.safe_load(Path(path).read_text())
            fields = {}
            for name, spec in doc["fields"].items():
                if not isinstance(spec, dict) or not spec.get("owner"):
                    raise ConfigError(f"{path}: fields.{name} has no owner")
                fields[name] = FieldRule(spec["owner"], tuple(spec.get("writers") or ()))
            rules = cls(
                fields=fields,
                systems=tuple(doc["systems"]),
                create=tuple(doc["create"]),
                steps={writer: frozenset(tuple(step.split(">")) for step in steps)
                       for writer, steps in doc["status"]["steps"].items()},
                cancel=tuple(doc["status"]["cancel"]),
                status_owner=doc["status"]["owner"],
                default_policy=doc["conflicts"]["default"],
                policies=dict(doc["conflicts"].get("fields", {})),
                hidden={name: tuple(roles) for name, roles in (doc.get("hidden") or {}).items()},
            )
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: cannot read ownership rules: {exc!r}") from exc
        rules.validate(path)
        return rules

    def validate(self, source: Path | str = "ownership rules") -> None:
        """Every canonical field has a rule, and every rule, step and policy names something real."""
        known = {p for p in HEADER_FIELDS if p != STATUS_PATH} | {f"lines.*.{a}" for a in LINE_FIELDS}
        if missing := sorted(known - set(self.fields)):
            raise ConfigError(f"{source}: fields without an owner: {', '.join(missing)}")
        if unknown := sorted(set(self.fields) - known):
            raise ConfigError(f"{source}: rules for fields the order does not have: {', '.join(unknown)}")
        for where, specs in [(f"fields.{n}", (r.owner, *r.writers)) for n, r in self.fields.items()] + [
                ("create", self.create), ("status.cancel", self.cancel), ("status.owner", (self.status_owner,)),
                *((f"status.steps.{w}", (w,)) for w in self.steps)]:
            for spec in specs:
                if spec.partition(":")[0] not in self.systems:
                    raise ConfigError(f"{source}: {where}: {spec!r} names no system in systems: {list(self.systems)}")
        for writer, steps in self.steps.items():
            for step in steps:
                statuses_exist = len(step) == 2 and all(status in lifecycle.LIFECYCLE for status in step)
                if not statuses_exist or not lifecycle.is_step(*step) or lifecycle.CANCELLED in step:
                    raise ConfigError(f"{source}: status.steps.{writer}: {'>'.join(step)} is not a lifecycle step")
        for name, policy in {**self.policies, "default": self.default_policy}.items():
            if policy not in (OWNER_WINS, MANUAL):
                raise ConfigError(f"{source}: conflicts.{name}: {policy!r} is neither {OWNER_WINS} nor {MANUAL}")
        if unknown := sorted(set(self.policies) - known):
            raise ConfigError(f"{source}: conflicts.fields names fields the order does not have: {', '.join(unknown)}")
        if unknown := sorted(set(self.hidden) - known):
            raise ConfigError(f"{source}: hidden names fields the order does not have: {', '.join(unknown)}")
        for name, roles in self.hidden.items():
            if not roles or not all(isinstance(role, str) and role for role in roles):
                raise ConfigError(f"{source}: hidden.{name}: expected a list of HUB roles")

    def hidden_from(self, roles: Iterable[str]) -> frozenset[str]:
        """The field paths (``lines.*.x`` for line fields) a person with these roles does not see: those
        every one of their roles is hidden from (a role that sees a field lets its holder see it)."""
        held = set(roles)
        return frozenset(path for path, hidden in self.hidden.items() if held and held <= set(hidden))

    def rule_for(self, path: str) -> FieldRule:
        """The rule of a field path (line numbers generalised to ``*``)."""
        if path == STATUS_PATH:
            return FieldRule(self.status_owner)
        if path.startswith(APPROVALS_PREFIX) and path not in self.fields:  # no such level: nobody writes it
            return FieldRule("HUB", (), owner_writes=False)
        return self.fields[rule_path(path)]

    def owner(self, path: str) -> str:
        """The system authoritative for a field."""
        return self.rule_for(path).owner

    def knows(self, system: str) -> bool:
        """Whether proposals from this system are accepted at all."""
        return system in self.systems

    def may_create(self, system: str, role: str) -> bool:
        """Whether this writer may create orders."""
        return any(writer_matches(w, system, role) for w in self.create)

    def may_write(self, path: str, system: str, role: str) -> str | None:
        """None when allowed; otherwise the rule that refuses, in the file's words."""
        rule = self.rule_for(path)
        if rule.allows(system, role):
            return None
        if path.startswith(APPROVALS_PREFIX):
            level = path.removeprefix(APPROVALS_PREFIX)
            if path not in self.fields:
                return f"workflow.approvals: no level {level!r}"
            return f"workflow.approvals.levels: {level} is approved by [{', '.join(rule.writers)}]"
        return f"fields.{rule_path(path)}: owner {rule.owner}, writers [{', '.join(rule.writers)}]"

    def may_step(self, current: str, proposed: str, system: str, role: str) -> str | None:
        """None when this writer may move the order from ``current`` to ``proposed``; else why not."""
        if not lifecycle.is_step(current, proposed):
            return f"lifecycle: {current} -> {proposed} is not a lifecycle step"
        return self.may_take_step(current, proposed, system, role)

    def may_take_step(self, current: str, proposed: str, system: str, role: str) -> str | None:
        """None when this writer is permitted the (existing) step ``current`` -> ``proposed``; else why not."""
        if proposed == lifecycle.CANCELLED:
            if any(writer_matches(w, system, role) for w in self.cancel):
                return None
            return f"status.cancel: only [{', '.join(self.cancel)}] may cancel"
        allowed = [w for w, steps in self.steps.items() if (current, proposed) in steps]
        if any(writer_matches(w, system, role) for w in allowed):
            return None
        return f"status.steps: {current}>{proposed} is allowed for [{', '.join(allowed)}] only"

    def policy(self, path: str) -> str:
        """The conflict policy of a field: owner_wins or manual."""
        return self.policies.get(rule_path(path), self.default_policy)
