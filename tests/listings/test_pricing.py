"""Pricing rules: the formula, rounding up to the unit, the minimum margin, exact arithmetic,
and the schema refusing rules that cannot make sense."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.orm import Session

from dropship.listings import rule_store
from dropship.listings.rules import BELOW_MIN_MARGIN, PricingRule
from tests.listings.conftest import add_mapping, add_product, add_rule, one


def rule(margin: str, fee: str, min_margin: int = 0, rounding: int = 10) -> PricingRule:
    return PricingRule(None, "coupang", None, Decimal(margin), Decimal(fee), min_margin, rounding)


def test_price_at_an_exact_multiple_of_ten_is_not_raised() -> None:
    # 9000 / (1 - 0.1) = 10000 exactly: rounding *up* must leave it at 10000, not 10010.
    assert rule("0", "0.1").sale_price(9000) == 10000
    assert rule("0.1", "0.1").sale_price(9000) == 11000


def test_price_is_rounded_up_never_to_nearest() -> None:
    # 9001 / 0.9 = 10001.11...: up to 10010 (nearest would give 10000).
    assert rule("0", "0.1").sale_price(9001) == 10010
    # 1000 * 1.15 / 0.892 = 1289.23...: up to 1290; a 100 KRW unit gives 1300.
    assert rule("0.15", "0.108").sale_price(1000) == 1290
    assert rule("0.15", "0.108", rounding=100).sale_price(1000) == 1300


def test_price_is_exact_where_float_would_round_past_a_multiple() -> None:
    # In float 700 * 1.1 / 0.7 = 1100.0000000000002, whose ceiling would be 1110.
    assert rule("0.1", "0.3").sale_price(700) == 1100


def test_margin_after_fee_is_exact() -> None:
    r = rule("0.1", "0.1")
    assert r.margin(11000, 9000) == 900  # 11000 * 0.9 - 9000


def test_margin_exactly_at_the_minimum_is_listable_one_won_more_is_not(
    db_session: Session,
) -> None:
    add_mapping(db_session)
    add_rule(db_session, margin="0.1", fee="0.1", min_margin=900)  # sale 11000, margin 900
    product = add_product(db_session, price=8000, shipping_fee=1000)
    at_minimum = one(db_session, product)
    assert at_minimum.listable and at_minimum.sale_price == 11000 and at_minimum.margin_krw == 900

    db_session.execute(text("UPDATE pricing_rules SET min_margin_krw = 901"))
    above = one(db_session, product)
    assert not above.listable and above.code == BELOW_MIN_MARGIN
    assert "margin 900 KRW at 11000 KRW is below the minimum 901 KRW" in (above.reason or "")


def test_shipping_is_part_of_the_cost(db_session: Session) -> None:
    add_mapping(db_session)
    add_rule(db_session, margin="0", fee="0.1")
    product = add_product(db_session, price=6000, shipping_fee=3000)
    assert one(db_session, product).sale_price == 10000


@pytest.mark.parametrize("fee", ["0.9", "0.9999", "1", "0.51"])
def test_schema_refuses_fee_rates_near_one(db_session: Session, fee: str) -> None:
    with (
        pytest.raises(sqlalchemy.exc.IntegrityError, match="ck_pricing_rules_rates_valid"),
        db_session.begin_nested(),
    ):
        add_rule(db_session, fee=fee)


def test_schema_accepts_fee_up_to_half(db_session: Session) -> None:
    add_rule(db_session, fee="0.5")


@pytest.mark.parametrize(
    ("column", "value"),
    [("rounding_krw", 0), ("rounding_krw", 15), ("min_margin_krw", -1), ("margin_rate", "-0.1")],
)
def test_schema_refuses_other_nonsense(db_session: Session, column: str, value: object) -> None:
    values: dict[str, object] = {"margin": "0.1", "fee": "0.1", "min_margin": 0, "rounding": 10}
    values[{"rounding_krw": "rounding", "min_margin_krw": "min_margin"}.get(column, "margin")] = (
        value
    )
    with (
        pytest.raises(sqlalchemy.exc.IntegrityError, match="ck_pricing_rules_rates_valid"),
        db_session.begin_nested(),
    ):
        add_rule(db_session, **values)  # type: ignore[arg-type]


def test_one_default_rule_per_market(db_session: Session) -> None:
    add_rule(db_session, category=None)
    add_rule(db_session, category="56137")
    with (
        pytest.raises(sqlalchemy.exc.IntegrityError, match="uq_pricing_rules_market_default"),
        db_session.begin_nested(),
    ):
        add_rule(db_session, category=None)


def test_store_names_the_refused_field(db_session: Session) -> None:
    with pytest.raises(rule_store.RuleError, match=re.escape("fee_rate 0.9 is outside 0..0.5")):
        rule_store.add(
            db_session, rule_store.PRICING, market="coupang", margin_rate="0.1", fee_rate="0.9"
        )
    with pytest.raises(rule_store.RuleError, match="more than 4 decimals"):
        rule_store.add(
            db_session, rule_store.PRICING, market="coupang", margin_rate="0.12345", fee_rate="0"
        )
    stored = rule_store.add(
        db_session, rule_store.PRICING, market="naver", margin_rate="15%", fee_rate="5.5%"
    )
    assert stored["margin_rate"] == Decimal("0.15") and stored["fee_rate"] == Decimal("0.055")


def test_upsert_replaces_the_default_rule(db_session: Session) -> None:
    for margin in ("0.1", "0.2"):
        rule_store.add(
            db_session, rule_store.PRICING, market="coupang", margin_rate=margin, fee_rate="0.1"
        )
    rows = rule_store.list_rows(db_session, rule_store.PRICING)
    assert [(r["category"], r["margin_rate"]) for r in rows] == [(None, Decimal("0.2000"))]
