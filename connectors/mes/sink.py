"""The hub -> the MES: a release becomes one ISA-95 job order per line, stored and allowed to start.

Idempotent: a job order id that is already stored is left as it is, so a redelivered release
never makes a second job. A release of an order the hub has closed or cancelled since is not stored.
"""

from __future__ import annotations

from connectors.mes.mapping import job_orders_for
from connectors.mes.opcua import JobOrderReceiverClient
from hub.sdk import FINAL_STATUSES, Context, OrderRelease


async def store_jobs(client: JobOrderReceiverClient, release: OrderRelease, context: Context) -> int:
    """Store the release's job orders (StoreAndStart: the floor may begin them); how many were new."""
    known = context.order(release.order_id)
    if known is not None and known.status.value in FINAL_STATUSES:
        return 0
    stored = {job.job_order_id for job in await client.jobs_for_order(release.order_id)}
    new = [job for job in job_orders_for(release) if job.job_order_id not in stored]
    for job in new:
        await client.store(job, start=True)  # looks the id up once more: never a second job
    return len(new)
