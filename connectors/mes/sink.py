"""The hub -> the MES: a release becomes one ISA-95 job order per line, stored and allowed to start.

Idempotent: a job order id that is already stored is left as it is (``store`` looks it up first),
so a redelivered release never makes a second job. A release of an order the hub has cancelled
since is not stored.
"""

from __future__ import annotations

from connectors.mes.mapping import job_orders_for
from connectors.mes.opcua import JobOrderReceiverClient
from hub.sdk import Context, OrderRelease


async def store_jobs(client: JobOrderReceiverClient, release: OrderRelease, context: Context) -> int:
    """Store the release's job orders (StoreAndStart: the floor may begin them); how many were new."""
    known = context.order(release.order_id)
    if known is not None and known.status.value == "CANCELLED":
        return 0
    new = 0
    for job in job_orders_for(release):
        if await client.find(job.job_order_id) is None:
            await client.store(job, start=True)
            new += 1
    return new
