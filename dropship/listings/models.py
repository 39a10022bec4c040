"""Marketplace listings: one row per product x market account."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from dropship.models import Base

# ``refused``: the market said no (category attributes, name length, price range); its message
# is in ``error`` and the listing is not retried blindly.
# ``suspending``: a suspension was sent and is not yet confirmed by reading the listing back;
# ``suspend_failed``: not confirmed after the bounded re-sends (an operator lists and retries it,
# ``dropship listings suspensions`` / ``retry-suspend``).
# ``missing``: we held it as live, but the market no longer has it at all (absent from a
# complete read of the account's listings and unknown to a read of the listing itself);
# reconciliation marks it and reports it (discrepancy kind ``missing``); an operator decides.
LISTING_STATUSES = (
    "claimed",
    "registering",
    "active",
    "suspending",
    "suspended",
    "suspend_failed",
    "failed",
    "refused",
    "deleted",
    "missing",
)


class Listing(Base):
    __tablename__ = "listings"
    __table_args__ = (
        UniqueConstraint("product_id", "account_id"),
        # The external SKU carries our key on the marketplace so a retried registration finds the
        # listing it already created instead of creating a duplicate.
        UniqueConstraint("account_id", "external_sku"),
        CheckConstraint(f"status IN {LISTING_STATUSES!r}", name="status_known"),
        Index("ix_listings_status_synced", "status", "last_synced_at"),
        Index("ix_listings_account_status", "account_id", "status"),
        CheckConstraint(
            "protected_fields <@ ARRAY['name', 'price']::varchar[]", name="protected_fields_known"
        ),
        Index(
            "ix_listings_suspending",
            "suspend_requested_at",
            postgresql_where=text("status = 'suspending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    external_sku: Mapped[str] = mapped_column(String(64))
    market_product_id: Mapped[str | None] = mapped_column(String(64))
    sale_price: Mapped[int | None] = mapped_column(Integer)
    market_category: Mapped[str | None] = mapped_column(String(128))
    # Option prices as registered, each with its supplier option code, so an order for a market
    # option can be bought from the supplier as that option.
    options: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="claimed")
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    # Fields an operator set by hand that sync never overwrites (``dropship listings protect``).
    protected_fields: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), server_default=text("'{}'::varchar[]")
    )
    # Why we suspended the listing (``soldout``, ``gone``, a rule code such as
    # ``below_min_margin``); ``soldout`` and ``below_min_margin`` are resumed by sync when the
    # product is sellable again at a price that keeps the margin.
    suspend_reason: Mapped[str | None] = mapped_column(String(32))
    suspend_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    suspend_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    suspend_confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The stock last sent to the market.
    stock: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class ListingBlock(Base):
    """Why a product is not listable on a market account, from its latest evaluation
    (``dropship.listings.rules``); the row goes away when the product becomes listable."""

    __tablename__ = "listing_blocks"
    __table_args__ = (Index("ix_listing_blocks_account_code", "account", "code"),)

    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), primary_key=True
    )
    # The market account's settings name (``DROPSHIP_PLATFORMS__ACCOUNTS__<NAME>``).
    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    evaluated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


SYNC_KINDS = ("suspend", "update")


class SyncOutbox(Base):
    """Sync work recorded by the collect merge in its own transaction (a product whose cost,
    shipping, stock or status changed) and published after that transaction commits; a row
    still unpublished after a crash is published by the sync sweep."""

    __tablename__ = "sync_outbox"
    __table_args__ = (
        CheckConstraint(f"kind IN {SYNC_KINDS!r}", name="kind_known"),
        Index(
            "ix_sync_outbox_unpublished",
            "kind",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    product_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --------------------------------------------------------------------------- reconciliation

DISCREPANCY_KINDS = ("unknown_sku", "foreign_sku", "duplicate", "sku_mismatch", "missing")


class ListingDiscrepancy(Base):
    """A market listing reconciliation could not match to ours, with the reason: visible to an
    operator (``dropship listings discrepancies``) instead of adopted by a guess or ignored.
    ``resolved_at`` is set when a later complete run no longer sees it."""

    __tablename__ = "listing_discrepancies"
    __table_args__ = (
        UniqueConstraint("account_id", "market_product_id", "kind"),
        CheckConstraint(f"kind IN {DISCREPANCY_KINDS!r}", name="kind_known"),
        Index("ix_listing_discrepancies_open", "account_id", "resolved_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    market_product_id: Mapped[str] = mapped_column(String(64))
    external_sku: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    market_state: Mapped[str | None] = mapped_column(String(16))
    listing_id: Mapped[int | None] = mapped_column(ForeignKey("listings.id", ondelete="SET NULL"))
    first_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


RECONCILE_RUN_STATUSES = ("running", "succeeded", "failed")


class ReconcileRun(Base):
    """One reconciliation of one market account: counts when it succeeded, the error when it
    was aborted (a market error or an unreadable record changes nothing of ours)."""

    __tablename__ = "reconcile_runs"
    __table_args__ = (
        CheckConstraint(f"status IN {RECONCILE_RUN_STATUSES!r}", name="status_known"),
        Index("ix_reconcile_runs_account_started", "account_id", "started_at"),
        # At most one run per account reads and applies at a time, even if two sweeps race.
        Index(
            "uq_reconcile_runs_one_running",
            "account_id",
            unique=True,
            postgresql_where=text("status = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), server_default="running")
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
