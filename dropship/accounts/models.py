"""Platform accounts. Credentials are stored by reference (a settings key), never as values."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from dropship.models import Base

PLATFORMS = ("ownerclan", "domeggook", "gentrade", "coupang", "naver")


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(f"platform IN {PLATFORMS!r}", name="platform_known"),
        CheckConstraint("role IN ('supplier', 'market')", name="role_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Stable name used in task arguments, limiter keys and logs, e.g. "coupang-main".
    name: Mapped[str] = mapped_column(String(64), unique=True)
    platform: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16))
    # Name of the settings entry holding the credentials; the secret itself lives in the
    # environment or a secret store, so a database dump or a log line never carries it.
    credentials_ref: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # Order sweep watermark (orders changed since), advanced only after a page is stored.
    orders_watermark: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
