"""Acknowledged due-date alerts: who said they have seen an alert, when, and what they said.

The API's own table (``api_alert_acks``, beside ``api_users``, outside the read model: the read
model is rebuilt from Kafka, acknowledgements are not in Kafka). An acknowledgement does not clear
the alert: only production starting, the order ending or its due date moving does (the alert
worker's rules); it tells the others that someone is on it.
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
