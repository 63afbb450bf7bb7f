"""The due-date alerts of each order.

Revision 0004, after 0003. ``order_alerts`` keeps every alert ``orderhub alerts`` raised or
cleared (the ``orderhub.order.alerts.v1`` topic), one row per record id, so ``orderhub orders
show`` lists the ones still open.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

UTC_TIMESTAMP = sa.DateTime(timezone=True)  # as 0001: migrations do not import the code they migrate

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``order_alerts``."""
    op.create_table(
        "order_alerts",
        sa.Column("record_id", sa.String(256), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False, index=True),
        sa.Column("order_number", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(40), nullable=False),
        sa.Column("notify", sa.String(64), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("occurrence", sa.Integer(), nullable=False),
        sa.Column("days_left", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("on_hold", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_at", UTC_TIMESTAMP, nullable=False),
    )


def downgrade() -> None:
    """Drop it again."""
    op.drop_table("order_alerts")
