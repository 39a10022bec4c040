"""Image rows: one per source URL (what it became, or why not), and the market-hosted copies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from dropship.models import Base

# pending: never looked at; processing: claimed by a task (claimed_at); ok: stored, keys set;
# failed: refused with ``reason`` (``transient`` ones are retried by the next run, the others
# after ``images.retry_failed_after_s``).
IMAGE_STATUSES = ("pending", "processing", "ok", "failed")


class SourceImage(Base):
    __tablename__ = "images"
    __table_args__ = (
        CheckConstraint(f"status IN {IMAGE_STATUSES!r}", name="status_known"),
        Index("ix_images_status", "status"),
        Index("ix_images_source_sha256", "source_sha256"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source_url: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    transient: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    reason: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    # Same bytes behind another URL reuse the stored outputs instead of processing again.
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    source_format: Mapped[str | None] = mapped_column(String(8))
    source_width: Mapped[int | None] = mapped_column(Integer)
    source_height: Mapped[int | None] = mapped_column(Integer)
    market_key: Mapped[str | None] = mapped_column(Text)  # square JPEG for the markets
    market_px: Mapped[int | None] = mapped_column(Integer)
    web_key: Mapped[str | None] = mapped_column(Text)  # WebP for our detail pages
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ImageUpload(Base):
    """A stored image uploaded to a market account's own image host (Naver), so it is never
    uploaded twice to that account."""

    __tablename__ = "image_uploads"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    market_key: Mapped[str] = mapped_column(Text, primary_key=True)
    market_url: Mapped[str] = mapped_column(Text)
    uploaded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
