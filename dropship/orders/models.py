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
    "new",  # stored, not yet forwarded
    "forwarding",  # purchase order being placed at the supplier
    "forwarded",  # supplier accepted the purchase order
    "shipped",  # tracking number known
    "dispatched",  # tracking number pushed to the marketplace
    "cancel_requested",
    "cancelled",
    "failed",  # needs an operator; see order_events for why
)
OPEN_ORDER_STATUSES = ("new", "forwarding", "forwarded", "shipped", "cancel_requested")


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        PrimaryKeyConstraint("id", "ordered_at"),
        UniqueConstraint("account_id", "market_order_id", "ordered_at"),
        CheckConstraint(f"status IN {ORDER_STATUSES!r}", name="status_known"),
        # Sweeps read open orders newest first; the partial index stays small as orders close.
        Index(
            "ix_orders_status_created_at_open",
            "status",
            text("created_at DESC"),
            postgresql_where=text(f"status IN {OPEN_ORDER_STATUSES!r}"),
        ),
        Index("ix_orders_customer_created_at", "customer_id", text("created_at DESC")),
        {"postgresql_partition_by": "RANGE (ordered_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False))
    ordered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    market: Mapped[str] = mapped_column(String(32))
    market_order_id: Mapped[str] = mapped_column(String(64))
    # Our idempotency key at the supplier: "<market>:<account_id>:<market_order_id>".
    order_key: Mapped[str] = mapped_column(String(160))
    status: Mapped[str] = mapped_column(String(24), server_default="new")
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
    pii_erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    supplier: Mapped[str | None] = mapped_column(String(32))
    supplier_order_ids: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    carrier: Mapped[str | None] = mapped_column(String(64))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    raw_status: Mapped[str | None] = mapped_column(String(64))
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

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_key: Mapped[str] = mapped_column(String(160), unique=True)
    supplier: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(24), server_default="pending")
    supplier_order_ids: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
