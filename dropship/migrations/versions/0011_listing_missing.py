"""listings the market no longer has: listing status ``missing`` and discrepancy kind ``missing``

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LISTING_STATUSES = (
    "('claimed', 'registering', 'active', 'suspending', 'suspended', 'suspend_failed', "
    "'failed', 'refused', 'deleted', 'missing')"
)
OLD_LISTING_STATUSES = (
    "('claimed', 'registering', 'active', 'suspending', 'suspended', 'suspend_failed', "
    "'failed', 'refused', 'deleted')"
)
KINDS = "('unknown_sku', 'foreign_sku', 'duplicate', 'sku_mismatch', 'missing')"
OLD_KINDS = "('unknown_sku', 'foreign_sku', 'duplicate', 'sku_mismatch')"


def _checks(statuses: str, kinds: str) -> None:
    op.drop_constraint(op.f("ck_listings_status_known"), "listings", type_="check")
    op.create_check_constraint(
        op.f("ck_listings_status_known"), "listings", f"status IN {statuses}"
    )
    op.drop_constraint(
        op.f("ck_listing_discrepancies_kind_known"), "listing_discrepancies", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_listing_discrepancies_kind_known"), "listing_discrepancies", f"kind IN {kinds}"
    )


def upgrade() -> None:
    _checks(LISTING_STATUSES, KINDS)


def downgrade() -> None:
    # A missing listing was live before reconciliation marked it.
    op.execute("UPDATE listings SET status = 'active' WHERE status = 'missing'")
    op.execute("DELETE FROM listing_discrepancies WHERE kind = 'missing'")
    _checks(OLD_LISTING_STATUSES, OLD_KINDS)
