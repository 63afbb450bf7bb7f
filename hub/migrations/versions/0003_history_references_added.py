"""The history remembers which outside references each change attached.

Revision 0003, after 0002. ``order_history.refs_added`` (JSON list of ExternalRef) lets
``orderhub orders history`` show a change that only attached a reference (the ERP's order
number) for what it did; rows recorded before it have none recorded (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``order_history.refs_added``."""
    op.add_column("order_history", sa.Column("refs_added", sa.Text()))


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("order_history") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("refs_added")
