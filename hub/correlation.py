"""One correlation id per order flow, from the outside event that started it to the last notification.

1. The id is started by the proposal that creates an order: the ``orderhub.correlation_id`` header
   its sender set, else the creating proposal's own event id (a CRM opportunity's event, for an
   order won in the CRM). The engine keeps it in the order's state.
2. Every record the engine writes about the order carries it as that header: changes, snapshots,
   conflicts, rejections, releases, answers.
3. Whoever proposes a change to a known order sends it along: a connector from the snapshot it
   holds (or from the record its sink hook handled), so the ERP's and the MES's proposals for the
   flow carry it too. The read model keeps it with every version (``orderhub trace``), and the
   notifier puts it in every notification about the order.
4. Every log line written while a record of the flow is handled has it as ``correlation_id``.
"""

from __future__ import annotations

from typing import Iterable

#: The Kafka header.
HEADER = "orderhub.correlation_id"


def of(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The correlation id among a record's headers, None when it has none."""
    for key, value in headers or ():
        if key == HEADER and value:
            return value.decode("utf-8", "replace")
    return None


def header(correlation_id: str | None) -> tuple[tuple[str, bytes], ...]:
    """The header for ``correlation_id`` (none for None)."""
    return ((HEADER, correlation_id.encode()),) if correlation_id else ()
