"""Catalog tables: supplier products, rejects, collection runs, COPY staging, catalog rules."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from dropship.models import Base

PRODUCT_STATUSES = ("active", "soldout", "gone", "invalid")


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("supplier", "supplier_sku"),
        CheckConstraint(f"status IN {PRODUCT_STATUSES!r}", name="status_known"),
        CheckConstraint(
            "price >= 0 AND shipping_fee >= 0 AND stock >= 0", name="amounts_non_negative"
        ),
        # Indexes from the performance notes (seeds/performance-guide): the register sweep filters
        # active products by category; listings pages read newest first; collect dashboards group
        # by supplier+category and want name/price/stock without touching the heap.
        Index(
            "ix_products_category_status_active",
            "category",
            "status",
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_products_created_at_desc", text("created_at DESC")),
        Index(
            "ix_products_supplier_category_status",
            "supplier",
            "category",
            "status",
            postgresql_include=["name", "price", "stock"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    supplier: Mapped[str] = mapped_column(String(32))
    supplier_sku: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(Text)
    # Cost price from the supplier, KRW (integer won; KRW has no minor unit).
    price: Mapped[int] = mapped_column(Integer)
    shipping_fee: Mapped[int] = mapped_column(Integer, server_default="0")
    stock: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    category: Mapped[str | None] = mapped_column(String(128))
    images: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    options: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # Fingerprint of the source bytes (and parser versions) this row was built from: a collect
    # reading the same bytes again does not parse them (docs/ARCHITECTURE.md "Collect").
    source_fingerprint: Mapped[str | None] = mapped_column(String(80))
    # Supplier flags (see SupplierProduct): the register flow must skip a product that may not
    # be sold on open markets; ``stock_assumed`` means stock is our configured guess.
    open_market_sellable: Mapped[bool] = mapped_column(server_default=text("true"))
    adult_only: Mapped[bool] = mapped_column(server_default=text("false"))
    stock_assumed: Mapped[bool] = mapped_column(server_default=text("false"))
    first_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


RUN_STATUSES = ("planned", "running", "paused", "succeeded", "partial", "failed")
ACTIVE_RUN_STATUSES = ("planned", "running", "paused")
SLICE_STATUSES = ("pending", "done", "paused", "failed")


class CollectRun(Base):
    """One collection of one supplier account. ``planned`` (row committed, slices not yet
    published) -> ``running`` -> ``succeeded`` (every slice merged), ``partial`` (some slices
    failed: the others were merged, nothing marked gone) or ``failed``; ``paused`` while a daily
    budget is spent (resumed by the sweep after ``paused_until``)."""

    __tablename__ = "collect_runs"
    __table_args__ = (
        CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status_known"),
        CheckConstraint("mode IN ('full', 'incremental')", name="mode_known"),
        Index("ix_collect_runs_supplier_started", "supplier", text("started_at DESC")),
        Index(
            "ix_collect_runs_active",
            "status",
            postgresql_where=text(f"status IN {ACTIVE_RUN_STATUSES!r}"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    supplier: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16), server_default="full")
    status: Mapped[str] = mapped_column(String(16), server_default="planned")
    # The modification filter this run asked for (incremental), and the watermark it sets.
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Counted from ``collect_run_slices`` (one row per slice key), so a redelivered slice
    # cannot count twice.
    slices_expected: Mapped[int | None] = mapped_column(Integer)
    slices_done: Mapped[int] = mapped_column(Integer, server_default="0")
    records: Mapped[int] = mapped_column(Integer, server_default="0")
    # Of ``records``: staged without parsing (source bytes as stored).
    unparsed: Mapped[int] = mapped_column(Integer, server_default="0")
    # How often the sweep re-published the unfinished slices of a stalled run.
    resubmits: Mapped[int] = mapped_column(Integer, server_default="0")
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Only a complete run may mark products missing from it as gone.
    complete: Mapped[bool] = mapped_column(server_default=text("false"))
    inserted: Mapped[int] = mapped_column(Integer, server_default="0")
    updated: Mapped[int] = mapped_column(Integer, server_default="0")
    unchanged: Mapped[int] = mapped_column(Integer, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, server_default="0")
    gone: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CollectRunSlice(Base):
    """One chord header of a run, by the connector's slice key. The slice task replaces its
    staging and reject rows and marks the slice done in one transaction."""

    __tablename__ = "collect_run_slices"
    __table_args__ = (CheckConstraint(f"status IN {SLICE_STATUSES!r}", name="status_known"),)

    run_id: Mapped[int] = mapped_column(
        ForeignKey("collect_runs.id", ondelete="CASCADE"), primary_key=True
    )
    slice_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    records: Mapped[int] = mapped_column(Integer, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, server_default="0")
    unparsed: Mapped[int] = mapped_column(Integer, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CollectWatermark(Base):
    """Per supplier account: incremental runs ask for changes since this (minus an overlap)."""

    __tablename__ = "collect_watermarks"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    supplier: Mapped[str] = mapped_column(String(32))
    watermark: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProductReject(Base):
    """An invalid supplier record, kept with its raw payload and the reason: nothing is dropped."""

    __tablename__ = "product_rejects"
    __table_args__ = (Index("ix_product_rejects_run", "run_id", "slice_key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("collect_runs.id", ondelete="SET NULL"))
    slice_key: Mapped[str | None] = mapped_column(String(200))
    supplier: Mapped[str] = mapped_column(String(32))
    supplier_sku: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StagingProduct(Base):
    """COPY target for collection pages. UNLOGGED: it is rebuilt from the supplier on a crash,
    so WAL for it is pure cost. Rows are tagged with their run and cleared by the merge.

    A ``source_unchanged`` row is a record whose source bytes matched the stored product's
    ``source_fingerprint``: it was not parsed, only its key is staged (the product fields are
    NULL); the merge counts it unchanged and the gone-marking sees it."""

    __tablename__ = "staging_products"
    __table_args__ = (
        Index("ix_staging_products_run", "run_id", "slice_key"),
        {"prefixes": ["UNLOGGED"]},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(BigInteger)
    slice_key: Mapped[str] = mapped_column(String(200))
    supplier: Mapped[str] = mapped_column(String(32))
    supplier_sku: Mapped[str] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(Text)
    price: Mapped[int | None] = mapped_column(Integer)
    shipping_fee: Mapped[int | None] = mapped_column(Integer)
    stock: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(128))
    images: Mapped[list[str] | None] = mapped_column(JSONB)
    options: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    open_market_sellable: Mapped[bool | None] = mapped_column()
    adult_only: Mapped[bool | None] = mapped_column()
    stock_assumed: Mapped[bool | None] = mapped_column()
    source_fingerprint: Mapped[str | None] = mapped_column(String(80))
    source_unchanged: Mapped[bool] = mapped_column(server_default=text("false"))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


MARKETS = ("coupang", "naver")
BANNED_WORD_KINDS = ("exclude", "ban")
BANNED_WORD_MATCHES = ("word", "substring")


class CategoryMap(Base):
    """Supplier category -> marketplace category, per market (shared by its accounts)."""

    __tablename__ = "category_map"
    __table_args__ = (
        UniqueConstraint("supplier", "supplier_category", "market"),
        CheckConstraint(f"market IN {MARKETS!r}", name="market_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    supplier: Mapped[str] = mapped_column(String(32))
    supplier_category: Mapped[str] = mapped_column(String(128))
    market: Mapped[str] = mapped_column(String(32))
    market_category: Mapped[str] = mapped_column(String(128))


class BannedWord(Base):
    """One entry of the word lists (see ``dropship.listings.rules``): ``exclude`` words are
    masked out of the text first, then a ``ban`` word left in it blocks the product. ``word`` is
    stored normalised (NFKC, casefolded); ``market`` NULL applies to every market."""

    __tablename__ = "banned_words"
    __table_args__ = (
        Index(
            "uq_banned_words_kind_market_word",
            "kind",
            text("coalesce(market, '')"),
            "word",
            unique=True,
        ),
        CheckConstraint(f"kind IN {BANNED_WORD_KINDS!r}", name="kind_known"),
        CheckConstraint(f"match IN {BANNED_WORD_MATCHES!r}", name="match_known"),
        CheckConstraint(f"market IS NULL OR market IN {MARKETS!r}", name="market_known"),
        CheckConstraint("word <> ''", name="word_not_blank"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    word: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), server_default="ban")
    match: Mapped[str] = mapped_column(String(16), server_default="substring")
    market: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BannedProduct(Base):
    """A product an operator removed: never listed again, on any market. Keyed by the
    supplier's own key, so a product that disappears and comes back is still banned."""

    __tablename__ = "banned_products"

    supplier: Mapped[str] = mapped_column(String(32), primary_key=True)
    supplier_sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PricingRule(Base):
    """Sale price = (cost + shipping) * (1 + margin) / (1 - market fee), rounded up to
    ``rounding_krw``. ``category`` is a *market* category (fees are set per market category);
    NULL is the market's default rule. A fee above 50 % or a margin above 1000 % is refused:
    near a fee of 1 the divisor (1 - fee) makes the price explode."""

    __tablename__ = "pricing_rules"
    __table_args__ = (
        UniqueConstraint("market", "category"),
        # UNIQUE treats NULLs as distinct: one default rule per market needs its own index.
        Index(
            "uq_pricing_rules_market_default",
            "market",
            unique=True,
            postgresql_where=text("category IS NULL"),
        ),
        CheckConstraint(
            "margin_rate >= 0 AND margin_rate <= 10 AND fee_rate >= 0 AND fee_rate <= 0.5 "
            "AND min_margin_krw >= 0 AND rounding_krw >= 10 AND rounding_krw % 10 = 0",
            name="rates_valid",
        ),
        CheckConstraint(f"market IN {MARKETS!r}", name="market_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    market: Mapped[str] = mapped_column(String(32))
    # NULL category is the market's default rule.
    category: Mapped[str | None] = mapped_column(String(128))
    margin_rate: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    fee_rate: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    min_margin_krw: Mapped[int] = mapped_column(Integer, server_default="0")
    rounding_krw: Mapped[int] = mapped_column(Integer, server_default="10")
