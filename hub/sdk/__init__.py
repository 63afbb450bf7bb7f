"""The connector SDK: everything a connector is built from, and nothing else.

A connector (``connectors/crm``, ``connectors/erp``, ``connectors/mes``, or a third party's
package) imports only from here::

    from hub.sdk import Connector, ConnectorConfig, OutsideChange, Polled, Unmappable

- ``Connector``: the base class; its docstring is the lifecycle contract and its guarantees.
- ``ConnectorConfig``: typed configuration (pydantic; secrets as ``SecretStr``).
- ``OutsideChange`` / ``Unmappable`` / ``Polled``: what a source and the sink hooks return.
- ``OutsideSystemUnavailable`` / ``UnmappableRecord``: the two errors a connector raises.
- ``ConnectorRuntime``: runs one instance (``orderhub connectors run`` / ``orderhub up`` use it).
- ``hub.sdk.contract``: the contract test kit every connector runs.
"""

from hub.errors import OutsideSystemUnavailable, UnmappableRecord
from hub.events import Actor, ExternalRef, OrderChange, OrderRelease, OrderSnapshot
from hub.sdk.connector import Connector, ConnectorConfig, Context, OutsideChange, Polled, Unmappable
from hub.sdk.runtime import ConnectorRuntime, utcnow

__all__ = [
    "Actor", "Connector", "ConnectorConfig", "ConnectorRuntime", "Context", "ExternalRef", "OrderChange",
    "OrderRelease", "OrderSnapshot", "OutsideChange", "OutsideSystemUnavailable", "Polled", "Unmappable",
    "UnmappableRecord", "utcnow",
]
