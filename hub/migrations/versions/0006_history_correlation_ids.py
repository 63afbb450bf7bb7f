"""The history remembers each version's correlation id (``hub.correlation``).

Revision 0006, after 0005. ``order_history.correlation_id``: the flow the accepted change belongs
to, from its record's header, so ``orderhub trace`` can follow one flow across systems; rows
recorded before it have none (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``order_history.correlation_id``."""
    op.add_column("order_history", sa.Column("correlation_id", sa.String(128)))


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("order_history") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("correlation_id")
