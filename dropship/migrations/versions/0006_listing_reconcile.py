"""listing reconciliation: reported discrepancies and per-account reconcile runs

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "('unknown_sku', 'foreign_sku', 'duplicate', 'sku_mismatch')"
RUN_STATUSES = "('running', 'succeeded', 'failed')"


def upgrade() -> None:
    op.create_table(
        "listing_discrepancies",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column(
            "account_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "accounts.id",
                ondelete="CASCADE",
                name=op.f("fk_listing_discrepancies_account_id_accounts"),
            ),
            nullable=False,
        ),
        sa.Column("market_product_id", sa.String(64), nullable=False),
        sa.Column("external_sku", sa.String(128)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("market_state", sa.String(16)),
        sa.Column(
            "listing_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "listings.id",
                ondelete="SET NULL",
                name=op.f("fk_listing_discrepancies_listing_id_listings"),
            ),
        ),
        sa.Column(
            "first_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint(
            "account_id",
            "market_product_id",
            "kind",
            name=op.f("uq_listing_discrepancies_account_id_market_product_id_kind"),
        ),
        sa.CheckConstraint(f"kind IN {KINDS}", name=op.f("ck_listing_discrepancies_kind_known")),
    )
    op.create_index(
        "ix_listing_discrepancies_open", "listing_discrepancies", ["account_id", "resolved_at"]
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column(
            "account_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "accounts.id",
                ondelete="CASCADE",
                name=op.f("fk_reconcile_runs_account_id_accounts"),
            ),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), server_default="running", nullable=False),
        sa.Column(
            "counts", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("error", sa.Text()),
        sa.Column("pages", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            f"status IN {RUN_STATUSES}", name=op.f("ck_reconcile_runs_status_known")
        ),
    )
    op.create_index(
        "ix_reconcile_runs_account_started", "reconcile_runs", ["account_id", "started_at"]
    )
    # At most one run per account reads and applies at a time, even if two sweeps race.
    op.create_index(
        "uq_reconcile_runs_one_running",
        "reconcile_runs",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "reconcile_observations",
        sa.Column(
            "run_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "reconcile_runs.id",
                ondelete="CASCADE",
                name=op.f("fk_reconcile_observations_run_id_reconcile_runs"),
            ),
            primary_key=True,
        ),
        sa.Column("market_product_id", sa.String(64), primary_key=True),
        sa.Column("external_sku", sa.String(128)),
        sa.Column("sale_state", sa.String(16), nullable=False),
        sa.Column("sale_price", sa.Integer()),
        sa.Column("stock", sa.Integer()),
    )


def downgrade() -> None:
    op.drop_table("reconcile_observations")
    op.drop_table("reconcile_runs")
    op.drop_table("listing_discrepancies")
