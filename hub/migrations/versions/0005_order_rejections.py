"""The refused proposals, for the rejection lead times.

Revision 0005, after 0004. ``order_rejections`` keeps every proposal the hub refused (the
``orderhub.order.rejections.v1`` topic, kept 30 days), one row per record id, so ``orderhub
report lead-times`` can measure how long a refused writer took to get a change through, for as
long as the read model keeps it. ``order_id`` is null for a proposal that named no order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

UTC_TIMESTAMP = sa.DateTime(timezone=True)  # as 0001: migrations do not import the code they migrate

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``order_rejections``."""
    op.create_table(
        "order_rejections",
        # as the refused proposal's writer sent them, of any length
        sa.Column("record_id", sa.Text(), primary_key=True),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), index=True),
        sa.Column("source_system", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("current_version", sa.Integer()),
        sa.Column("decided_at", UTC_TIMESTAMP, nullable=False, index=True),
        sa.Column("errors", sa.Text(), nullable=False),
        sa.Column("proposal", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    """Drop it again."""
    op.drop_table("order_rejections")
