"""The CRM connector's configuration: where Salesforce is, who the hub is there, and where its
change events arrive."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from hub.sdk import ConnectorConfig


class CrmConfig(ConnectorConfig):
    """One Salesforce org."""

    instance_url: str = Field(description="The org's instance URL, e.g. https://acme.my.salesforce.com")
    session_id: SecretStr = Field(description="An OAuth access token (session id) of the hub's integration user")
    ca_file: Path | None = Field(None, description="CA bundle to trust (the local sandbox's throwaway CA)")
    client_id: str = Field("orderhub", description="Sent with every write: its change events are recognised as ours")
    webhook_secret: SecretStr | None = Field(None, description="Shared secret of the signed change-event webhook")
    webhook_host: str = Field("127.0.0.1", description="Where the webhook listener binds")
    webhook_port: int | None = Field(None, description="Port of the webhook listener; none: polling only")
    webhook_max_age_s: float = Field(300.0, description="A change event signed longer ago than this is refused")
    poll_interval_s: float = Field(30.0, description="Polling by SystemModstamp: the fallback and the gap recovery")

    @model_validator(mode="after")
    def _signed_webhook(self) -> "CrmConfig":
        if self.webhook_port is not None and self.webhook_secret is None:
            raise ValueError("webhook_port needs webhook_secret: change events are signed")
        return self
