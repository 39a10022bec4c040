"""listing sync: an outbox of product changes written by the collect merge, suspension state
and operator-protected fields on listings

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LISTING_STATUSES = (
    "('claimed', 'registering', 'active', 'suspending', 'suspended', 'suspend_failed', "
    "'failed', 'refused', 'deleted')"
)
OLD_LISTING_STATUSES = (
    "('claimed', 'registering', 'active', 'suspended', 'failed', 'refused', 'deleted')"
)


def upgrade() -> None:
    # --- sync_outbox: written in the merge's transaction, published after it commits
    op.create_table(
        "sync_outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('suspend', 'update')", name=op.f("ck_sync_outbox_kind_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_outbox")),
    )
    op.create_index(
        "ix_sync_outbox_unpublished",
        "sync_outbox",
        ["kind", "id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )

    # --- listings: suspension confirmed by reading the market back, protected fields
    op.drop_constraint(op.f("ck_listings_status_known"), "listings", type_="check")
    op.create_check_constraint(
        op.f("ck_listings_status_known"), "listings", f"status IN {LISTING_STATUSES}"
    )
    op.add_column(
        "listings",
        sa.Column(
            "protected_fields",
            postgresql.ARRAY(sa.String(length=16)),
            server_default=sa.text("'{}'::varchar[]"),
            nullable=False,
        ),
    )
    op.add_column("listings", sa.Column("suspend_reason", sa.String(length=32), nullable=True))
    op.add_column(
        "listings",
        sa.Column("suspend_attempts", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "listings",
        sa.Column("suspend_requested_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "listings", sa.Column("suspend_confirmed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("listings", sa.Column("stock", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_listings_protected_fields_known"),
        "listings",
        "protected_fields <@ ARRAY['name', 'price']::varchar[]",
    )
    op.create_index(
        "ix_listings_suspending",
        "listings",
        ["suspend_requested_at"],
        postgresql_where=sa.text("status = 'suspending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_listings_suspending", table_name="listings")
    op.drop_constraint(op.f("ck_listings_protected_fields_known"), "listings", type_="check")
    for column in (
        "stock",
        "suspend_confirmed_at",
        "suspend_requested_at",
        "suspend_attempts",
        "suspend_reason",
        "protected_fields",
    ):
        op.drop_column("listings", column)
    op.execute(
        "UPDATE listings SET status = 'active' WHERE status IN ('suspending', 'suspend_failed')"
    )
    op.drop_constraint(op.f("ck_listings_status_known"), "listings", type_="check")
    op.create_check_constraint(
        op.f("ck_listings_status_known"), "listings", f"status IN {OLD_LISTING_STATUSES}"
    )
    op.drop_index("ix_sync_outbox_unpublished", table_name="sync_outbox")
    op.drop_table("sync_outbox")
