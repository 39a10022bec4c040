"""order operations: the market claim id on order items and the claims sweep watermark per
market account

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-02 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The market's id of a claim (Coupang receiptId; Naver: the product order id again), needed
    # to confirm a cancellation at the market once the purchase is cancelled.
    op.add_column("orders", sa.Column("market_claim_id", sa.String(64), nullable=True))
    # Cancellation/return requests come from their own market API (Coupang returnRequests) or
    # change type (Naver CLAIM_REQUESTED): a watermark apart from the order sweep's.
    op.create_table(
        "claim_sweeps",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_claim_sweeps_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_claim_sweeps")),
    )


def downgrade() -> None:
    op.drop_table("claim_sweeps")
    op.drop_column("orders", "market_claim_id")
