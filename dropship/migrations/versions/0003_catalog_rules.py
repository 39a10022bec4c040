"""catalog rules as data: tighter pricing rules, banned-word kinds and match modes, banned
products, market-scoped category maps, recorded reasons a product is not listable

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKETS = "('coupang', 'naver')"
LISTING_STATUSES = (
    "('claimed', 'registering', 'active', 'suspended', 'failed', 'refused', 'deleted')"
)
OLD_LISTING_STATUSES = "('claimed', 'registering', 'active', 'suspended', 'failed', 'deleted')"
PRICING_RATES = (
    "margin_rate >= 0 AND margin_rate <= 10 AND fee_rate >= 0 AND fee_rate <= 0.5 "
    "AND min_margin_krw >= 0 AND rounding_krw >= 10 AND rounding_krw % 10 = 0"
)


def upgrade() -> None:
    # --- pricing_rules: a fee near 1 makes (1 - fee) explode the price; refuse it in the schema
    op.drop_constraint(op.f("ck_pricing_rules_rates_valid"), "pricing_rules", type_="check")
    op.create_check_constraint(op.f("ck_pricing_rules_rates_valid"), "pricing_rules", PRICING_RATES)
    op.create_check_constraint(
        op.f("ck_pricing_rules_market_known"), "pricing_rules", f"market IN {MARKETS}"
    )
    # UNIQUE (market, category) lets two NULL-category (default) rules coexist: NULLs differ.
    op.create_index(
        "uq_pricing_rules_market_default",
        "pricing_rules",
        ["market"],
        unique=True,
        postgresql_where=sa.text("category IS NULL"),
    )

    # --- category_map
    op.create_check_constraint(
        op.f("ck_category_map_market_known"), "category_map", f"market IN {MARKETS}"
    )

    # --- banned_words: kind (exclude | ban), match (word | substring), optional market
    op.add_column(
        "banned_words",
        sa.Column("kind", sa.String(length=16), server_default="ban", nullable=False),
    )
    op.add_column(
        "banned_words",
        sa.Column("match", sa.String(length=16), server_default="substring", nullable=False),
    )
    op.add_column("banned_words", sa.Column("market", sa.String(length=32), nullable=True))
    op.add_column(
        "banned_words",
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.drop_constraint(op.f("uq_banned_words_word"), "banned_words", type_="unique")
    op.create_index(
        "uq_banned_words_kind_market_word",
        "banned_words",
        ["kind", sa.text("coalesce(market, '')"), "word"],
        unique=True,
    )
    op.create_check_constraint(
        op.f("ck_banned_words_kind_known"), "banned_words", "kind IN ('exclude', 'ban')"
    )
    op.create_check_constraint(
        op.f("ck_banned_words_match_known"), "banned_words", "match IN ('word', 'substring')"
    )
    op.create_check_constraint(
        op.f("ck_banned_words_market_known"),
        "banned_words",
        f"market IS NULL OR market IN {MARKETS}",
    )
    op.create_check_constraint(op.f("ck_banned_words_word_not_blank"), "banned_words", "word <> ''")

    # --- banned_products: by supplier key, so a re-collected product stays banned
    op.create_table(
        "banned_products",
        sa.Column("supplier", sa.String(length=32), nullable=False),
        sa.Column("supplier_sku", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("supplier", "supplier_sku", name=op.f("pk_banned_products")),
    )

    # --- listing_blocks: the latest reason a product is not listable on an account
    op.create_table(
        "listing_blocks",
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "evaluated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_listing_blocks_product_id_products"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("product_id", "account", name=op.f("pk_listing_blocks")),
    )
    op.create_index("ix_listing_blocks_account_code", "listing_blocks", ["account", "code"])

    # --- listings: a market refusal is its own state; what was registered (category, option
    # prices with their supplier option codes) is kept on the row
    op.drop_constraint(op.f("ck_listings_status_known"), "listings", type_="check")
    op.create_check_constraint(
        op.f("ck_listings_status_known"), "listings", f"status IN {LISTING_STATUSES}"
    )
    op.add_column("listings", sa.Column("market_category", sa.String(length=128), nullable=True))
    op.add_column(
        "listings",
        sa.Column(
            "options",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "listings", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False)
    )
    op.create_index("ix_listings_account_status", "listings", ["account_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_listings_account_status", table_name="listings")
    for column in ("attempts", "options", "market_category"):
        op.drop_column("listings", column)
    op.execute("UPDATE listings SET status = 'failed' WHERE status = 'refused'")
    op.drop_constraint(op.f("ck_listings_status_known"), "listings", type_="check")
    op.create_check_constraint(
        op.f("ck_listings_status_known"), "listings", f"status IN {OLD_LISTING_STATUSES}"
    )
    op.drop_index("ix_listing_blocks_account_code", table_name="listing_blocks")
    op.drop_table("listing_blocks")
    op.drop_table("banned_products")
    for name in ("word_not_blank", "market_known", "match_known", "kind_known"):
        op.drop_constraint(op.f(f"ck_banned_words_{name}"), "banned_words", type_="check")
    op.drop_index("uq_banned_words_kind_market_word", table_name="banned_words")
    # Several kinds/markets may share a word now; keep one row per word before restoring UNIQUE.
    op.execute(
        "DELETE FROM banned_words a USING banned_words b WHERE a.word = b.word AND a.id > b.id"
    )
    op.create_unique_constraint(op.f("uq_banned_words_word"), "banned_words", ["word"])
    for column in ("created_at", "market", "match", "kind"):
        op.drop_column("banned_words", column)
    op.drop_constraint(op.f("ck_category_map_market_known"), "category_map", type_="check")
    op.drop_index("uq_pricing_rules_market_default", table_name="pricing_rules")
    op.drop_constraint(op.f("ck_pricing_rules_market_known"), "pricing_rules", type_="check")
    op.drop_constraint(op.f("ck_pricing_rules_rates_valid"), "pricing_rules", type_="check")
    op.create_check_constraint(
        op.f("ck_pricing_rules_rates_valid"),
        "pricing_rules",
        "margin_rate >= 0 AND fee_rate >= 0 AND fee_rate < 1",
    )
