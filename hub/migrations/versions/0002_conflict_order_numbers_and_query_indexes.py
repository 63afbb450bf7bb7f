"""Conflicts carry their order number; indexes for the typed queries' filters.

Revision 0002, after 0001. ``order_conflicts.order_number`` lets the queue of parked
conflicts across all orders name each order without a join; rows recorded before it are
filled from the order (or, before its snapshot arrived, from its history). The indexes
serve ``ReadModel.list_orders`` (status, customer, due date, newest first),
``parked_conflicts`` (parked, oldest first) and ``resolve`` (an external id or number alone).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: (index name, table, columns)
INDEXES = (
    ("ix_orders_status", "orders", ["status"]),
    ("ix_orders_customer_id", "orders", ["customer_id"]),
    ("ix_orders_requested_delivery", "orders", ["requested_delivery"]),
    ("ix_orders_updated_at", "orders", ["updated_at"]),
    ("ix_order_conflicts_parked_decided_at", "order_conflicts", ["parked", "decided_at"]),
    ("ix_order_xrefs_external_id", "order_xrefs", ["external_id"]),
    ("ix_order_xrefs_external_number", "order_xrefs", ["external_number"]),
)


def upgrade() -> None:
    """Add and fill ``order_conflicts.order_number``, then create the query indexes."""
    op.add_column("order_conflicts", sa.Column("order_number", sa.String(64)))
    conflicts = sa.table("order_conflicts", sa.column("order_id"), sa.column("order_number"))
    orders = sa.table("orders", sa.column("order_id"), sa.column("order_number"))
    history = sa.table("order_history", sa.column("order_id"), sa.column("order_number"))
    from_order = sa.select(orders.c.order_number).where(orders.c.order_id == conflicts.c.order_id)
    from_history = (sa.select(history.c.order_number).where(history.c.order_id == conflicts.c.order_id)
                    .limit(1))
    op.execute(conflicts.update().values(order_number=sa.func.coalesce(from_order.scalar_subquery(),
                                                                       from_history.scalar_subquery())))
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    """Drop the indexes and the column."""
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("order_conflicts") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("order_number")
