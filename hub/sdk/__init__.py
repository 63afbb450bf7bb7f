"""The connector SDK: everything a connector is built from, and nothing else.

A connector (``connectors/crm``, ``connectors/erp``, ``connectors/mes``, or a third party's
package) imports only from here (a test holds the built-ins to it)::

    from hub.sdk import Connector, ConnectorConfig, OutsideChange, Polled, Unmappable

- ``Connector``: the base class; its docstring is the lifecycle contract and its guarantees.
- ``ConnectorConfig``: typed configuration (pydantic; secrets as ``SecretStr``).
- ``OutsideChange`` / ``Unmappable`` / ``Polled``: what a source and the sink hooks return.
- The errors a connector raises, by what the runtime does with them: ``OutsideSystemUnavailable``
  (and any ``RetriableError``: retried), ``UnmappableRecord`` (and any ``DeadLetterError``: to the
  dead-letter topic), ``ConfigError`` (and any ``FatalError``: the instance stops, loudly).
- The canonical order as the hub publishes it (``OrderSnapshot``, ``OrderChange``,
  ``OrderRelease``, ...), and its field paths and canonical values (``kind_of``,
  ``canonical_json``, ``format_timestamp``, ``FINAL_STATUSES``).
- ``ConnectorRuntime``: runs one instance (``orderhub connectors run`` / ``orderhub up`` use it).
- ``hub.sdk.contract``: the contract test kit every connector runs.
"""

from hub.domain.fields import canonical_json, format_timestamp, kind_of
from hub.domain.lifecycle import FINAL as FINAL_STATUSES
from hub.errors import (ConfigError, DeadLetterError, FatalError, OutsideSystemUnavailable, RetriableError,
                        UnmappableRecord)
from hub.events import (Actor, ExternalRef, Instruction, LifecycleStatus, OrderChange, OrderLine, OrderRelease,
                        OrderSnapshot, ReleaseLine)
from hub.sdk.connector import Connector, ConnectorConfig, Context, OutsideChange, Polled, Unmappable
from hub.sdk.runtime import ConnectorRuntime, utcnow

__all__ = [
    "Actor", "ConfigError", "Connector", "ConnectorConfig", "ConnectorRuntime", "Context", "DeadLetterError",
    "ExternalRef", "FINAL_STATUSES", "FatalError", "Instruction", "LifecycleStatus", "OrderChange", "OrderLine",
    "OrderRelease", "OrderSnapshot", "OutsideChange", "OutsideSystemUnavailable", "Polled", "ReleaseLine",
    "RetriableError", "Unmappable", "UnmappableRecord", "canonical_json", "format_timestamp", "kind_of", "utcnow",
]
