"""The hub -> Salesforce: what sales should see of the order (its id and number, status, promised
date), written to the opportunity the order came from, only where it shows something else."""

from __future__ import annotations

from connectors.crm.client import OpportunityClient
from connectors.crm.mapping import write_back_fields
from hub.sdk import OrderSnapshot


def write_back(client: OpportunityClient, snapshot: OrderSnapshot) -> bool:
    """Update the order's opportunity; False when the order has none or it is up to date."""
    opp_ids = [r.external_id for r in snapshot.external_refs if r.system == "CRM" and r.object_type == "Opportunity"]
    if not opp_ids:
        return False
    opp = client.opportunity(opp_ids[0])
    fields = write_back_fields(snapshot, opp)
    if fields:
        client.write_back(opp.id, **fields)
    return bool(fields)
