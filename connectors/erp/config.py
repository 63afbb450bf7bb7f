"""The ERP connector's configuration: the SAP OData service and the hub's user there."""

from __future__ import annotations

from pydantic import Field, SecretStr

from hub.sdk import ConnectorConfig


class ErpConfig(ConnectorConfig):
    """One SAP S/4HANA system (API_SALES_ORDER_SRV)."""

    service_url: str = Field(description="Service root of API_SALES_ORDER_SRV, e.g. https://s4/sap/opu/odata/sap/API_SALES_ORDER_SRV")
    user: str = Field(description="The hub's technical user")
    password: SecretStr = Field(description="Its password")
    poll_interval_s: float = Field(10.0, description="How often changes are fetched (delta token, else LastChangeDate)")
