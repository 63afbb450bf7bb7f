"""The read model as it was before migrations: orders, lines, history, conflicts, external ids.

Revision 0001, the first. The tables are declared exactly as ``hub.readmodel.metadata``
declared them then and created the same way (``create_all``), so a database made before
migrations existed is this revision, and ``hub.migrations.upgrade`` stamps it so.
They are frozen here: later changes belong in later revisions, never in this file.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: Decimals as text on SQLite (its NUMERIC would round them through a float).
DECIMAL = sa.Numeric().with_variant(sa.String(64), "sqlite")
UTC_TIMESTAMP = sa.DateTime(timezone=True)
ID, NAME = sa.String(64), sa.String(128)


def initial_tables() -> sa.MetaData:
    """The five tables of the pre-migration read model."""
    metadata = sa.MetaData()
    sa.Table(
        "orders", metadata,
        sa.Column("order_id", ID, primary_key=True),
        sa.Column("order_number", ID, nullable=False, unique=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False), sa.Column("on_hold", sa.Boolean, nullable=False),
        sa.Column("customer_id", ID), sa.Column("customer_name", sa.String(256)), sa.Column("currency", sa.String(3)),
        sa.Column("amount_net", DECIMAL), sa.Column("amount_tax", DECIMAL), sa.Column("amount_gross", DECIMAL),
        sa.Column("amount_crm_expected", DECIMAL),
        sa.Column("requested_delivery", sa.Date), sa.Column("promised_delivery", sa.Date),
        sa.Column("priority", sa.Integer, nullable=False), sa.Column("plant", sa.String(32)),
        sa.Column("updated_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("snapshot", sa.Text, nullable=False),
    )
    sa.Table(
        "order_lines", metadata,
        sa.Column("order_id", ID, primary_key=True), sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("material_id", ID, nullable=False), sa.Column("material_revision", sa.String(32)),
        sa.Column("quantity", DECIMAL, nullable=False), sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("confirmed_quantity", DECIMAL), sa.Column("good_quantity", DECIMAL),
        sa.Column("scrap_quantity", DECIMAL),
    )
    sa.Table(
        "order_history", metadata,
        sa.Column("order_id", ID, primary_key=True), sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("order_number", ID, nullable=False, index=True),
        sa.Column("record_id", NAME, nullable=False, unique=True), sa.Column("event_id", NAME, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False), sa.Column("source_system", sa.String(16), nullable=False),
        sa.Column("actor_id", NAME, nullable=False), sa.Column("actor_role", ID, nullable=False),
        sa.Column("occurred_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("accepted_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("base_version", sa.Integer, nullable=False),
        sa.Column("previous_version", sa.Integer, nullable=False),
        sa.Column("diffs", sa.Text, nullable=False),
    )
    sa.Table(
        "order_conflicts", metadata,
        sa.Column("record_id", NAME, primary_key=True),
        sa.Column("order_id", ID, nullable=False, index=True), sa.Column("event_id", NAME, nullable=False),
        sa.Column("base_version", sa.Integer, nullable=False), sa.Column("current_version", sa.Integer, nullable=False),
        sa.Column("parked", sa.Boolean, nullable=False), sa.Column("resulting_version", sa.Integer),
        sa.Column("decided_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
    )
    sa.Table(
        "order_xrefs", metadata,
        sa.Column("system", sa.String(16), primary_key=True), sa.Column("object_type", ID, primary_key=True),
        sa.Column("external_id", NAME, primary_key=True),
        sa.Column("order_id", ID, nullable=False, index=True), sa.Column("external_number", NAME),
    )
    return metadata


def upgrade() -> None:
    """Create the five tables; an existing one is an error, never silently kept."""
    initial_tables().create_all(op.get_bind(), checkfirst=False)


def downgrade() -> None:
    """Drop the five tables."""
    initial_tables().drop_all(op.get_bind(), checkfirst=False)
