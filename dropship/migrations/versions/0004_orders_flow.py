"""orders flow: one row per order item, matching and failure reasons, purchase-order states and
sheets, order sweep state per account

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 00:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORDER_STATUSES = (
    "('new', 'unmatched', 'forwarding', 'forwarded', 'awaiting_placement', 'shipped', "
    "'dispatched', 'cancel_requested', 'cancelled', 'failed')"
)
OLD_ORDER_STATUSES = (
    "('new', 'forwarding', 'forwarded', 'shipped', 'dispatched', 'cancel_requested', "
    "'cancelled', 'failed')"
)
OPEN_ORDER_STATUSES = (
    "('new', 'unmatched', 'forwarding', 'forwarded', 'awaiting_placement', 'shipped', "
    "'cancel_requested')"
)
OLD_OPEN_ORDER_STATUSES = "('new', 'forwarding', 'forwarded', 'shipped', 'cancel_requested')"
PURCHASE_STATUSES = (
    "('pending', 'placing', 'placed', 'awaiting_placement', 'failed', 'cancel_requested', "
    "'cancelled')"
)


def upgrade() -> None:
    # --- orders: one row per order item. A Coupang shipment box or a Naver product order is the
    # market's unit (market_order_id); its item (Coupang vendorItemId, Naver productOrderId again)
    # is market_item_id. Each item is bought as its own purchase order (its own order key).
    op.add_column(
        "orders",
        sa.Column("market_item_id", sa.String(64), server_default="", nullable=False),
    )
    # The market's grouping of units into one customer order (Coupang orderId, Naver orderId):
    # what partial shipments and cancellations are reported against.
    op.add_column("orders", sa.Column("market_group_id", sa.String(64), nullable=True))
    op.add_column("orders", sa.Column("external_sku", sa.String(64), nullable=True))
    op.add_column("orders", sa.Column("option_label", sa.Text(), nullable=True))
    op.add_column("orders", sa.Column("supplier_sku", sa.String(64), nullable=True))
    op.add_column("orders", sa.Column("supplier_option_code", sa.String(64), nullable=True))
    op.add_column("orders", sa.Column("unit_cost", sa.Integer(), nullable=True))
    # Why an item is unmatched / failed, in words an operator can act on.
    op.add_column("orders", sa.Column("status_reason", sa.Text(), nullable=True))
    # A claim (cancel/return/exchange) the market reports for this item, e.g. "CANCEL_REQUEST".
    op.add_column("orders", sa.Column("market_claim", sa.String(32), nullable=True))
    # Personal data for shipping only (with receiver_name/phone/address): erased by retention.
    op.add_column("orders", sa.Column("receiver_zipcode", sa.Text(), nullable=True))
    op.add_column("orders", sa.Column("receiver_message", sa.Text(), nullable=True))
    for column in ("acknowledged_at", "forwarded_at", "shipped_at", "dispatched_at", "closed_at"):
        op.add_column("orders", sa.Column(column, sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint(
        op.f("uq_orders_account_id_market_order_id_ordered_at"), "orders", type_="unique"
    )
    op.create_unique_constraint(
        op.f("uq_orders_account_id_market_order_id_market_item_id_ordered_at"),
        "orders",
        ["account_id", "market_order_id", "market_item_id", "ordered_at"],
    )
    op.drop_constraint(op.f("ck_orders_status_known"), "orders", type_="check")
    op.create_check_constraint(
        op.f("ck_orders_status_known"), "orders", f"status IN {ORDER_STATUSES}"
    )
    op.drop_index("ix_orders_status_created_at_open", table_name="orders")
    op.create_index(
        "ix_orders_status_created_at_open",
        "orders",
        ["status", sa.text("created_at DESC")],
        postgresql_where=sa.text(f"status IN {OPEN_ORDER_STATUSES}"),
    )
    op.create_index("ix_orders_order_key", "orders", ["order_key"])
    # The retention job finds orders whose personal data is due for erasure.
    op.create_index(
        "ix_orders_pii_due",
        "orders",
        ["created_at"],
        postgresql_where=sa.text("pii_erased_at IS NULL"),
    )

    # --- purchase orders: one per order item (order_key unique, from 0001)
    op.add_column("purchase_orders", sa.Column("order_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "purchase_orders", sa.Column("ordered_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("purchase_orders", sa.Column("sheet_id", sa.BigInteger(), nullable=True))
    op.add_column("purchase_orders", sa.Column("task_id", sa.String(64), nullable=True))
    op.add_column(
        "purchase_orders", sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "purchase_orders", sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_purchase_orders_status_known"),
        "purchase_orders",
        f"status IN {PURCHASE_STATUSES}",
    )
    op.create_index("ix_purchase_orders_status", "purchase_orders", ["status", "updated_at"])

    # --- purchase-order sheets for suppliers without an ordering API
    op.create_table(
        "purchase_order_sheets",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("supplier", sa.String(32), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("order_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(16), server_default="written", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("format IN ('csv', 'xlsx')", name=op.f("ck_purchase_order_sheets_fmt")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_order_sheets")),
    )
    op.create_foreign_key(
        op.f("fk_purchase_orders_sheet_id_purchase_order_sheets"),
        "purchase_orders",
        "purchase_order_sheets",
        ["sheet_id"],
        ["id"],
        ondelete="SET NULL",
    )

    # --- order sweep state per market account (the watermark column exists on accounts)
    op.create_table(
        "order_sweeps",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("orders_seen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "detail",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_order_sweeps_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_order_sweeps")),
    )


def downgrade() -> None:
    op.drop_table("order_sweeps")
    op.drop_constraint(
        op.f("fk_purchase_orders_sheet_id_purchase_order_sheets"),
        "purchase_orders",
        type_="foreignkey",
    )
    op.drop_table("purchase_order_sheets")
    op.drop_index("ix_purchase_orders_status", table_name="purchase_orders")
    op.drop_constraint(op.f("ck_purchase_orders_status_known"), "purchase_orders", type_="check")
    for column in ("cancelled_at", "placed_at", "task_id", "sheet_id", "ordered_at", "order_id"):
        op.drop_column("purchase_orders", column)

    op.drop_index("ix_orders_pii_due", table_name="orders")
    op.drop_index("ix_orders_order_key", table_name="orders")
    op.drop_index("ix_orders_status_created_at_open", table_name="orders")
    op.create_index(
        "ix_orders_status_created_at_open",
        "orders",
        ["status", sa.text("created_at DESC")],
        postgresql_where=sa.text(f"status IN {OLD_OPEN_ORDER_STATUSES}"),
    )
    op.drop_constraint(op.f("ck_orders_status_known"), "orders", type_="check")
    op.create_check_constraint(
        op.f("ck_orders_status_known"), "orders", f"status IN {OLD_ORDER_STATUSES}"
    )
    op.drop_constraint(
        op.f("uq_orders_account_id_market_order_id_market_item_id_ordered_at"),
        "orders",
        type_="unique",
    )
    op.create_unique_constraint(
        op.f("uq_orders_account_id_market_order_id_ordered_at"),
        "orders",
        ["account_id", "market_order_id", "ordered_at"],
    )
    for column in (
        "closed_at",
        "dispatched_at",
        "shipped_at",
        "forwarded_at",
        "acknowledged_at",
        "receiver_message",
        "receiver_zipcode",
        "market_claim",
        "status_reason",
        "unit_cost",
        "supplier_option_code",
        "supplier_sku",
        "option_label",
        "external_sku",
        "market_group_id",
        "market_item_id",
    ):
        op.drop_column("orders", column)
