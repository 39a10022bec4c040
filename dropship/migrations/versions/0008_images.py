"""images: one row per supplier image URL (stored outputs or the refusal), and the copies
uploaded to market-hosted image servers per account

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("source_url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("transient", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("source_sha256", sa.String(64), nullable=True),
        sa.Column("source_format", sa.String(8), nullable=True),
        sa.Column("source_width", sa.Integer(), nullable=True),
        sa.Column("source_height", sa.Integer(), nullable=True),
        sa.Column("market_key", sa.Text(), nullable=True),
        sa.Column("market_px", sa.Integer(), nullable=True),
        sa.Column("web_key", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.UniqueConstraint("source_url", name=op.f("uq_images_source_url")),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'ok', 'failed')",
            name=op.f("ck_images_status_known"),
        ),
    )
    op.create_index("ix_images_status", "images", ["status"])
    op.create_index("ix_images_source_sha256", "images", ["source_sha256"])
    op.create_table(
        "image_uploads",
        sa.Column("account", sa.String(64), primary_key=True),
        sa.Column("market_key", sa.Text(), primary_key=True),
        sa.Column("market_url", sa.Text(), nullable=False),
        sa.Column(
            "uploaded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_table("image_uploads")
    op.drop_index("ix_images_source_sha256", table_name="images")
    op.drop_index("ix_images_status", table_name="images")
    op.drop_table("images")
