"""Order tables. ``orders`` is range-partitioned by month on ``ordered_at``.

PostgreSQL requires every unique key of a partitioned table to include the partition column,
so the natural key is (account_id, market_order_id, ordered_at): a marketplace never changes
an order's placement time, so this is as unique as (account_id, market_order_id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from dropship.models import Base

ORDER_STATUSES = (
    "new",  # stored and matched, not yet forwarded
    "unmatched",  # no listing/product/option found for the item; reason in status_reason
    "forwarding",  # purchase order claimed, being placed at the supplier
    "forwarded",  # supplier accepted the purchase order
    "awaiting_placement",  # on a purchase-order sheet; waits for the supplier to show it placed
    "shipped",  # tracking number known
    "dispatched",  # tracking number pushed to the marketplace
    "cancel_requested",  # the market reports a cancellation request before shipment
    "cancelled",
    "failed",  # needs an operator; reason in status_reason, history in order_events
)
OPEN_ORDER_STATUSES = (
    "new",
    "unmatched",
    "forwarding",
    "forwarded",
    "awaiting_placement",
    "shipped",
    "cancel_requested",
)
PURCHASE_STATUSES = (
    "pending",  # claimed (row committed), not yet sent
    "placing",  # sent or about to be; outcome may be unknown: look the key up first
    "placed",  # the supplier has it (supplier_order_ids)
    "awaiting_placement",  # written to a purchase-order sheet for manual upload
    "failed",  # the supplier refused; last_error says why
    "cancel_requested",
    "cancelled",
)


class Order(Base):
    """One marketplace order *item*: the unit bought at the supplier as one purchase order.

    ``market_order_id`` is the market's unit we acknowledge and dispatch by (Coupang shipment
    box, Naver product order); ``market_item_id`` the item in it (Coupang vendor item; for Naver
    the product order id again); ``market_group_id`` the customer's whole order.
    """

    __tablename__ = "orders"
    __table_args__ = (
        PrimaryKeyConstraint("id", "ordered_at"),
        UniqueConstraint("account_id", "market_order_id", "market_item_id", "ordered_at"),
        CheckConstraint(f"status IN {ORDER_STATUSES!r}", name="status_known"),
        # Sweeps read open orders newest first; the partial index stays small as orders close.
        Index(
            "ix_orders_status_created_at_open",
            "status",
            text("created_at DESC"),
            postgresql_where=text(f"status IN {OPEN_ORDER_STATUSES!r}"),
        ),
        Index("ix_orders_customer_created_at", "customer_id", text("created_at DESC")),
        Index("ix_orders_order_key", "order_key"),
        Index("ix_orders_pii_due", "created_at", postgresql_where=text("pii_erased_at IS NULL")),
        {"postgresql_partition_by": "RANGE (ordered_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False))
    ordered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    market: Mapped[str] = mapped_column(String(32))
    market_order_id: Mapped[str] = mapped_column(String(64))
    market_item_id: Mapped[str] = mapped_column(String(64), server_default="")
    market_group_id: Mapped[str | None] = mapped_column(String(64))
    # Our idempotency key at the supplier, one per item (see dropship.orders.services.order_key).
    order_key: Mapped[str] = mapped_column(String(160))
    status: Mapped[str] = mapped_column(String(24), server_default="new")
    # Why the item is unmatched or failed, in words an operator can act on.
    status_reason: Mapped[str | None] = mapped_column(Text)
    # A claim (cancel/return/exchange) the market reports for this item.
    market_claim: Mapped[str | None] = mapped_column(String(32))
    # The market's id of that claim (Coupang receiptId, Naver product order id): what the
    # cancellation is confirmed with (migration 0010).
    market_claim_id: Mapped[str | None] = mapped_column(String(64))
    external_sku: Mapped[str | None] = mapped_column(String(64))
    option_label: Mapped[str | None] = mapped_column(Text)
    supplier_sku: Mapped[str | None] = mapped_column(String(64))
    supplier_option_code: Mapped[str | None] = mapped_column(String(64))
    unit_cost: Mapped[int | None] = mapped_column(Integer)
    listing_id: Mapped[int | None] = mapped_column(ForeignKey("listings.id", ondelete="SET NULL"))
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"))
    quantity: Mapped[int] = mapped_column(Integer, server_default="1")
    sale_price: Mapped[int | None] = mapped_column(Integer)
    # A stable pseudonymous buyer id (hash from the market), kept after PII is erased.
    customer_id: Mapped[str | None] = mapped_column(String(128))
    # Personal data needed to ship; erased by the retention job after the legal period.
    receiver_name: Mapped[str | None] = mapped_column(Text)
    receiver_phone: Mapped[str | None] = mapped_column(Text)
    receiver_address: Mapped[str | None] = mapped_column(Text)
    receiver_zipcode: Mapped[str | None] = mapped_column(Text)
    receiver_message: Mapped[str | None] = mapped_column(Text)
    pii_erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    supplier: Mapped[str | None] = mapped_column(String(32))
    supplier_order_ids: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    carrier: Mapped[str | None] = mapped_column(String(64))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    raw_status: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    forwarded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    shipped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    def __repr__(self) -> str:  # never show personal data
        return f"Order(id={self.id}, key={self.order_key!r}, status={self.status!r})"


class OrderEvent(Base):
    """Every order state change. No FK to ``orders``: a foreign key into a partitioned table
    would block detaching old partitions; (order_id, ordered_at) locates the order."""

    __tablename__ = "order_events"
    __table_args__ = (Index("ix_order_events_order", "order_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[int] = mapped_column(BigInteger)
    ordered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(48))
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str | None] = mapped_column(String(24))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    task_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PurchaseOrder(Base):
    """Our purchase at the supplier. ``order_key`` is unique: the database itself refuses a
    second purchase for the same marketplace order, whatever the task layer does."""

    __tablename__ = "purchase_orders"
    __table_args__ = (
        CheckConstraint(f"status IN {PURCHASE_STATUSES!r}", name="status_known"),
        Index("ix_purchase_orders_status", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_key: Mapped[str] = mapped_column(String(160), unique=True)
    supplier: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(24), server_default="pending")
    # The order item it buys; (order_id, ordered_at) locates it in the partitioned table.
    order_id: Mapped[int | None] = mapped_column(BigInteger)
    ordered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sheet_id: Mapped[int | None] = mapped_column(
        ForeignKey("purchase_order_sheets.id", ondelete="SET NULL")
    )
    # The task that claimed it last: with order_events.task_id, who did what.
    task_id: Mapped[str | None] = mapped_column(String(64))
    placed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    supplier_order_ids: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class PurchaseOrderSheet(Base):
    """A purchase-order file for a supplier without an ordering API (its upload format, our key
    in its own-order-number column). It holds receivers' addresses: kept under the data folder,
    never logged, and subject to the same retention as the orders."""

    __tablename__ = "purchase_order_sheets"
    __table_args__ = (CheckConstraint("format IN ('csv', 'xlsx')", name="fmt"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    supplier: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    order_count: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="written")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OrderSweep(Base):
    """Per market account: the last order sweep's outcome. The watermark itself is
    ``accounts.orders_watermark``, moved only by a sweep that stored everything it read."""

    __tablename__ = "order_sweeps"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    last_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    orders_seen: Mapped[int] = mapped_column(BigInteger, server_default="0")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class ClaimSweep(Base):
    """Per market account: how far cancellation/return requests have been read (migration
    0010). Moved only by a sweep that stored every claim it read."""

    __tablename__ = "claim_sweeps"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    watermark: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
