"""The MES connector's configuration: the OPC UA job order receiver and the shop floor's MQTT broker."""

from __future__ import annotations

from pydantic import Field, SecretStr

from hub.sdk import ConnectorConfig


class MesConfig(ConnectorConfig):
    """One MES."""

    opc_url: str = Field(description="opc.tcp URL of the server with the ISA-95 JobOrderReceiver")
    mqtt_host: str | None = Field(None, description="MQTT broker the shop floor reports progress and holds to")
    mqtt_port: int = Field(1883, description="Its port")
    mqtt_user: str | None = Field(None, description="MQTT user, when the broker wants one")
    mqtt_password: SecretStr | None = Field(None, description="Its password")
    mqtt_client_id: str = Field("orderhub-mes", description="MQTT client id, one per instance: the broker keeps "
                                "its session, so nothing published during a restart is lost")
    mqtt_share_group: str = Field("orderhub-mes", description="Shared-subscription group: the instances of one "
                                  "connector share the shop floor's messages instead of each handling all")
    poll_interval_s: float = Field(2.0, description="How often the job orders' states are read over OPC UA")
