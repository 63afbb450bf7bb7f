"""The order lifecycle: which status follows which.

DRAFT -> CONFIRMED -> APPROVED -> RELEASED -> IN_PRODUCTION -> COMPLETED -> SHIPPED -> CLOSED,
and CANCELLED from any open status. ON_HOLD is not a status but a flag beside it
(``on_hold``), so a held order resumes exactly where it was. Which writer may make which
step is policy (ownership.yaml); this module only knows which steps exist.
"""

from __future__ import annotations

#: The main path, in order.
LIFECYCLE: tuple[str, ...] = (
    "DRAFT", "CONFIRMED", "APPROVED", "RELEASED", "IN_PRODUCTION", "COMPLETED", "SHIPPED", "CLOSED", "CANCELLED",
)
MAIN_PATH = LIFECYCLE[:-1]
CANCELLED = "CANCELLED"
#: Statuses after which an order no longer changes.
FINAL = frozenset({"CLOSED", "CANCELLED"})
#: Production has started once an order is in one of these.
PRODUCTION_STARTED = frozenset({"IN_PRODUCTION", "COMPLETED", "SHIPPED", "CLOSED"})


def is_step(current: str, proposed: str) -> bool:
    """True when ``proposed`` directly follows ``current`` (or cancels an open order)."""
    if current in FINAL:
        return False
    if proposed == CANCELLED:
        return True
    return proposed in MAIN_PATH and MAIN_PATH.index(proposed) == MAIN_PATH.index(current) + 1
