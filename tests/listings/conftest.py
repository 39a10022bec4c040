"""Helpers for the catalog-rules tests: products, rules and an evaluation, all in real
PostgreSQL (``db_session`` rolls back; CLI tests commit through ``rules_db``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from dropship.listings.rules import Decision, MarketAccount, evaluate_products

COUPANG = MarketAccount(name="coupang_main", market="coupang")

_SKU = iter(range(1, 1_000_000))


def add_product(session: Session | Connection, **fields: Any) -> int:
    row: dict[str, Any] = {
        "supplier": "ownerclan",
        "supplier_sku": f"SKU{next(_SKU)}",
        "name": "스테인리스 텀블러 500ml",
        "price": 9000,
        "shipping_fee": 0,
        "stock": 10,
        "status": "active",
        "category": "KITCHEN",
        "options": [],
        "images": ["https://img.example.test/p/1.jpg"],
        "open_market_sellable": True,
        "adult_only": False,
    }
    row.update(fields)
    row["options"] = json.dumps(row["options"], ensure_ascii=False)
    row["images"] = json.dumps(row["images"])
    return int(
        session.execute(
            text(
                "INSERT INTO products (supplier, supplier_sku, name, price, shipping_fee, stock, "
                "status, category, options, images, open_market_sellable, adult_only) VALUES ("
                ":supplier, :supplier_sku, :name, :price, :shipping_fee, :stock, :status, "
                ":category, CAST(:options AS jsonb), CAST(:images AS jsonb), "
                ":open_market_sellable, :adult_only) RETURNING id"
            ),
            row,
        ).scalar_one()
    )


def add_rule(
    session: Session | Connection,
    market: str = "coupang",
    category: str | None = None,
    margin: str = "0.1",
    fee: str = "0.1",
    min_margin: int = 0,
    rounding: int = 10,
) -> int:
    return int(
        session.execute(
            text(
                "INSERT INTO pricing_rules (market, category, margin_rate, fee_rate, "
                "min_margin_krw, rounding_krw) VALUES (:m, :c, :mr, :fr, :mm, :r) RETURNING id"
            ),
            {
                "m": market,
                "c": category,
                "mr": Decimal(margin),
                "fr": Decimal(fee),
                "mm": min_margin,
                "r": rounding,
            },
        ).scalar_one()
    )


def add_mapping(
    session: Session | Connection,
    supplier_category: str = "KITCHEN",
    market_category: str = "56137",
    supplier: str = "ownerclan",
    market: str = "coupang",
) -> None:
    session.execute(
        text(
            "INSERT INTO category_map (supplier, supplier_category, market, market_category) "
            "VALUES (:s, :sc, :m, :mc)"
        ),
        {"s": supplier, "sc": supplier_category, "m": market, "mc": market_category},
    )


def add_word(
    session: Session | Connection,
    word: str,
    kind: str = "ban",
    match: str = "substring",
    market: str | None = None,
) -> None:
    session.execute(
        text("INSERT INTO banned_words (word, kind, match, market) VALUES (:w, :k, :m, :mk)"),
        {"w": word, "k": kind, "m": match, "mk": market},
    )


def one(session: Session, product_id: int, account: MarketAccount = COUPANG) -> Decision:
    (decision,) = evaluate_products(session, [product_id], account)
    return decision


@pytest.fixture
def rules_db(committed_db: Engine) -> Iterator[Engine]:
    """``committed_db`` plus the rule table it does not truncate (banned_products)."""
    with committed_db.begin() as conn:
        conn.execute(text("TRUNCATE banned_products"))
    yield committed_db
    with committed_db.begin() as conn:
        conn.execute(text("TRUNCATE banned_products"))
