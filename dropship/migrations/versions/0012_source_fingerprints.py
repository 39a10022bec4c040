"""collect: source fingerprints, so a re-run skips the parse of records whose bytes did not change

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Staging columns a record staged as "source unchanged" (not parsed) leaves empty.
PARSED_COLUMNS = (
    "name",
    "price",
    "shipping_fee",
    "stock",
    "status",
    "images",
    "options",
    "content_hash",
    "open_market_sellable",
    "adult_only",
    "stock_assumed",
)


def upgrade() -> None:
    # The fingerprint of the source bytes (and parser versions) a product was built from; a
    # collect that reads the same bytes again does not parse them. NULL: always parsed.
    op.add_column("products", sa.Column("source_fingerprint", sa.String(80), nullable=True))
    op.add_column("staging_products", sa.Column("source_fingerprint", sa.String(80), nullable=True))
    op.add_column(
        "staging_products",
        sa.Column(
            "source_unchanged", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    for column in PARSED_COLUMNS:
        op.alter_column("staging_products", column, nullable=True)
    for table in ("collect_runs", "collect_run_slices"):
        op.add_column(
            table, sa.Column("unparsed", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    for table in ("collect_run_slices", "collect_runs"):
        op.drop_column(table, "unparsed")
    # Only in-flight runs live in staging: emptied rather than migrated.
    op.execute("TRUNCATE staging_products")
    for column in PARSED_COLUMNS:
        op.alter_column("staging_products", column, nullable=False)
    op.drop_column("staging_products", "source_unchanged")
    op.drop_column("staging_products", "source_fingerprint")
    op.drop_column("products", "source_fingerprint")
