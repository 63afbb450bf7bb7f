"""What people did through the API that Kafka does not carry: alert acknowledgements and conflict
resolutions. The API's own tables (beside ``api_users``, outside the read model: the read model is
rebuilt from Kafka, these are not in Kafka).

- ``api_alert_acks``: who said they have seen an alert, when, and what they said. It does not clear
  the alert (only production starting, the order ending or its due date moving does: the alert
  worker's rules); it tells the others that someone is on it. The first one stands.
- ``api_conflict_resolutions``: who resolved a parked conflict, how (current, proposed, value), with
  which proposal and what the hub answered. A conflict resolved leaves the queue; resolving it
  again is refused (409), so a second person cannot undo the first one's decision from a stale list.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Column, DateTime, String, Table, Text, select
from sqlalchemy.engine import Engine

from hub.api.users import metadata

api_alert_acks = Table(
    "api_alert_acks", metadata,
    Column("record_id", String(256), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("comment", Text),
)


api_conflict_resolutions = Table(
    "api_conflict_resolutions", metadata,
    Column("record_id", String(256), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("choice", String(16), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("outcome", String(16), nullable=False),
)


@dataclass(frozen=True)
class Ack:
    record_id: str
    username: str
    at: dt.datetime
    comment: str | None


class Acks:
    """The acknowledgements (the first one of an alert stands)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def add(self, record_id: str, username: str, comment: str | None, at: dt.datetime) -> Ack:
        """Acknowledge an alert; an alert acknowledged before keeps its first acknowledgement."""
        with self.engine.begin() as conn:
            row = conn.execute(select(api_alert_acks).where(api_alert_acks.c.record_id == record_id)).mappings().first()
            if row is None:
                conn.execute(api_alert_acks.insert().values(record_id=record_id, username=username, at=at,
                                                            comment=comment))
                return Ack(record_id, username, at, comment)
        return Ack(row["record_id"], row["username"], _utc(row["at"]), row["comment"])

    def of(self, record_ids: list[str]) -> dict[str, Ack]:
        if not record_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_alert_acks).where(api_alert_acks.c.record_id.in_(record_ids))).mappings()
            return {r["record_id"]: Ack(r["record_id"], r["username"], _utc(r["at"]), r["comment"]) for r in rows}


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)  # SQLite gives naive values back


class Resolutions:
    """The conflicts resolved through the API."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def resolved(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(api_conflict_resolutions.c.record_id)).scalars())

    def by(self, record_id: str) -> dict | None:
        """Who resolved the conflict, when, how; None while it waits."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_conflict_resolutions)
                               .where(api_conflict_resolutions.c.record_id == record_id)).mappings().first()
        return dict(row) if row else None

    def claim(self, record_id: str, username: str, choice: str, event_id: str, at: dt.datetime) -> bool:
        """Take the conflict before the resolving proposal is sent; False when someone has it already
        (the first one stands: two people resolving at once cannot both write)."""
        from sqlalchemy.exc import IntegrityError

        try:
            with self.engine.begin() as conn:
                conn.execute(api_conflict_resolutions.insert().values(
                    record_id=record_id, username=username, at=at, choice=choice, event_id=event_id,
                    outcome="SENT"))
        except IntegrityError:
            return False
        return True

    def settle(self, record_id: str, outcome: str) -> None:
        """The hub's answer to the resolving proposal."""
        with self.engine.begin() as conn:
            conn.execute(api_conflict_resolutions.update().where(api_conflict_resolutions.c.record_id == record_id)
                         .values(outcome=outcome))

    def release(self, record_id: str) -> None:
        """The resolving proposal did not get through (refused, or Kafka away): the conflict waits again."""
        with self.engine.begin() as conn:
            conn.execute(api_conflict_resolutions.delete().where(api_conflict_resolutions.c.record_id == record_id))
