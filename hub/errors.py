"""The one error root of orderhub, grouped by what the runtime should do.

::

    OrderhubError
     ├── RetriableError          try again later: the outside world is not ready yet
     │    ├── BrokerUnavailable
     │    └── OutsideSystemUnavailable
     ├── DeadLetterError         this record can never succeed: send it to the dead-letter topic
     │    ├── UndecodableRecord
     │    ├── ReferenceTaken
     │    └── UnmappableRecord
     └── FatalError              configuration or declaration is wrong: stop and say why
          ├── ConfigError
          ├── InvalidInput
          ├── SchemaError
          │    └── IncompatibleSchema
          └── TopicDeclarationError

Control-flow outcomes of the domain (a proposal rejected or parked as a conflict) are
values, not exceptions: see ``hub.domain``.
"""

from __future__ import annotations


class OrderhubError(Exception):
    """Root of every error orderhub raises on purpose."""

    retriable: bool = False


class RetriableError(OrderhubError):
    """A transient condition; the same call may succeed later."""

    retriable = True


class BrokerUnavailable(RetriableError):
    """Kafka did not answer within the deadline."""


class OutsideSystemUnavailable(RetriableError):
    """A connector's outside system (CRM, ERP, MES) did not answer, or answered "try later"."""


class DeadLetterError(OrderhubError):
    """A record that can never be processed; it belongs on the dead-letter topic."""


class UndecodableRecord(DeadLetterError):
    """Bytes that are not a record of any known schema.

    Names where the record came from and why it could not be read, so the dead letter
    carries the whole story.
    """

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        where = f"{topic}[{partition}]@{offset}" if topic is not None else "<no topic>"
        super().__init__(f"undecodable record at {where}: {reason}")

    def at(self, topic: str, partition: int, offset: int) -> "UndecodableRecord":
        """The same error, now naming where the record was read from."""
        return UndecodableRecord(self.reason, topic=topic, partition=partition, offset=offset)


class ReferenceTaken(DeadLetterError):
    """An external id another order already has was attached to a second order: the first keeps it."""


class UnmappableRecord(DeadLetterError):
    """A connector met a record it cannot translate (an outside payload, or an order the outside
    system cannot take); it goes to the dead-letter topic with this reason and the connector goes on."""


class FatalError(OrderhubError):
    """Wrong configuration or declaration: stop and tell the operator."""


class ConfigError(FatalError):
    """A setting or a local installation is unusable."""


class InvalidInput(FatalError):
    """What a person handed the command line (a proposal file) is not valid; nothing was sent."""


class SchemaError(FatalError):
    """A schema file is missing or malformed."""


class IncompatibleSchema(SchemaError):
    """A new schema version cannot be read by, or cannot read, the previous version."""


class TopicDeclarationError(FatalError):
    """topics.yaml asks for something the cluster cannot do (shrink partitions, re-key)."""
