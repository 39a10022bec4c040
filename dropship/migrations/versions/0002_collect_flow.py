"""collect flow: run slices, watermarks, paused runs, product flags, slice-keyed staging

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_STATUSES = "('planned', 'running', 'paused', 'succeeded', 'partial', 'failed')"
OLD_RUN_STATUSES = "('planned', 'running', 'merging', 'succeeded', 'failed')"


def upgrade() -> None:
    # --- collect_runs: slices (counted from collect_run_slices), mode, account, pause
    op.alter_column("collect_runs", "pages_planned", new_column_name="slices_expected")
    op.alter_column("collect_runs", "pages_done", new_column_name="slices_done")
    op.add_column(
        "collect_runs",
        sa.Column("account", sa.String(length=64), server_default="", nullable=False),
    )
    op.add_column(
        "collect_runs",
        sa.Column("mode", sa.String(length=16), server_default="full", nullable=False),
    )
    op.add_column("collect_runs", sa.Column("since", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "collect_runs", sa.Column("records", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column(
        "collect_runs", sa.Column("resubmits", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column(
        "collect_runs", sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.drop_constraint(op.f("ck_collect_runs_status_known"), "collect_runs", type_="check")
    op.create_check_constraint(
        op.f("ck_collect_runs_status_known"), "collect_runs", f"status IN {RUN_STATUSES}"
    )
    op.create_check_constraint(
        op.f("ck_collect_runs_mode_known"), "collect_runs", "mode IN ('full', 'incremental')"
    )
    op.create_index(
        "ix_collect_runs_active",
        "collect_runs",
        ["status"],
        postgresql_where=sa.text("status IN ('planned', 'running', 'paused')"),
    )

    op.create_table(
        "collect_run_slices",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("slice_key", sa.String(length=200), nullable=False),
        sa.Column(
            "params",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("records", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rejected", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'paused', 'failed')",
            name=op.f("ck_collect_run_slices_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["collect_runs.id"],
            name=op.f("fk_collect_run_slices_run_id_collect_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "slice_key", name=op.f("pk_collect_run_slices")),
    )
    op.create_table(
        "collect_watermarks",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("supplier", sa.String(length=32), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_collect_watermarks")),
    )

    # --- products: supplier flags
    for table in ("products",):
        op.add_column(
            table,
            sa.Column(
                "open_market_sellable", sa.Boolean(), server_default=sa.text("true"), nullable=False
            ),
        )
        op.add_column(
            table,
            sa.Column("adult_only", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        )
        op.add_column(
            table,
            sa.Column(
                "stock_assumed", sa.Boolean(), server_default=sa.text("false"), nullable=False
            ),
        )

    # --- staging: keyed by (run, slice) so a re-run slice replaces its own rows. The table
    # only ever holds in-flight runs, so it is emptied rather than migrated.
    op.execute("TRUNCATE staging_products")
    op.add_column("staging_products", sa.Column("slice_key", sa.String(length=200), nullable=False))
    for column in ("open_market_sellable", "adult_only", "stock_assumed"):
        op.add_column("staging_products", sa.Column(column, sa.Boolean(), nullable=False))
    op.drop_index("ix_staging_products_run", table_name="staging_products")
    op.create_index(
        "ix_staging_products_run", "staging_products", ["run_id", "slice_key"], unique=False
    )

    op.add_column("product_rejects", sa.Column("slice_key", sa.String(length=200), nullable=True))
    op.drop_index("ix_product_rejects_run", table_name="product_rejects")
    op.create_index(
        "ix_product_rejects_run", "product_rejects", ["run_id", "slice_key"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_product_rejects_run", table_name="product_rejects")
    op.create_index("ix_product_rejects_run", "product_rejects", ["run_id"], unique=False)
    op.drop_column("product_rejects", "slice_key")

    op.execute("TRUNCATE staging_products")
    op.drop_index("ix_staging_products_run", table_name="staging_products")
    op.create_index("ix_staging_products_run", "staging_products", ["run_id"], unique=False)
    for column in ("stock_assumed", "adult_only", "open_market_sellable", "slice_key"):
        op.drop_column("staging_products", column)
    for column in ("stock_assumed", "adult_only", "open_market_sellable"):
        op.drop_column("products", column)

    op.drop_table("collect_watermarks")
    op.drop_table("collect_run_slices")
    op.drop_index("ix_collect_runs_active", table_name="collect_runs")
    op.drop_constraint(op.f("ck_collect_runs_mode_known"), "collect_runs", type_="check")
    op.drop_constraint(op.f("ck_collect_runs_status_known"), "collect_runs", type_="check")
    op.execute(
        "UPDATE collect_runs SET status = 'failed' "
        "WHERE status NOT IN ('planned', 'running', 'merging', 'succeeded', 'failed')"
    )
    op.create_check_constraint(
        op.f("ck_collect_runs_status_known"), "collect_runs", f"status IN {OLD_RUN_STATUSES}"
    )
    for column in ("paused_until", "resubmits", "records", "since", "mode", "account"):
        op.drop_column("collect_runs", column)
    op.alter_column("collect_runs", "slices_done", new_column_name="pages_done")
    op.alter_column("collect_runs", "slices_expected", new_column_name="pages_planned")
