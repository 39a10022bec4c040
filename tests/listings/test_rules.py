"""Evaluation against the real database: every exclusion, category mapping and its precedence
in pricing, word lists, banned products, option prices, recorded reasons, batching."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from dropship.listings import rules
from dropship.listings.rules import MarketAccount, evaluate_products, unmapped_categories
from tests.listings.conftest import COUPANG, add_mapping, add_product, add_rule, add_word, one

NAVER = MarketAccount(name="naver_main", market="naver")


@pytest.fixture
def priced(db_session: Session) -> Iterator[Session]:
    """A coupang default rule (10 % margin, 10 % fee) and the KITCHEN mapping."""
    add_rule(db_session, margin="0.1", fee="0.1")
    add_mapping(db_session)
    yield db_session


def test_listable_product_gets_price_category_and_option_prices(priced: Session) -> None:
    options = [
        {
            "name": "색상",
            "value": "빨강",
            "price_delta": 0,
            "stock": 3,
            "supplier_option_code": "R",
        },
        {
            "name": "색상",
            "value": "파랑",
            "price_delta": 900,
            "stock": 0,
            "supplier_option_code": "B",
        },
        {"name": "색상", "value": "흰색", "price_delta": -900, "stock": 1},
    ]
    product = add_product(priced, price=9000, options=options)
    d = one(priced, product)
    assert d.listable and d.code is None and d.reason is None
    assert d.sale_price == 11000 and d.market_category == "56137"
    # Each option priced from its own cost (cost + delta) through the same rule.
    assert [(o.value, o.sale_price, o.supplier_option_code) for o in d.options] == [
        ("빨강", 11000, "R"),
        ("파랑", 12100, "B"),  # 9900 * 1.1 / 0.9 = 12100
        ("흰색", 9900, None),  # 8100 * 1.1 / 0.9 = 9900
    ]
    assert all(o.margin_krw >= 0 for o in d.options)


def test_option_below_minimum_margin_blocks_the_product(priced: Session) -> None:
    priced.execute(text("UPDATE pricing_rules SET min_margin_krw = 850"))
    cheap = [{"name": "크기", "value": "S", "price_delta": -1000, "stock": 2}]
    product = add_product(
        priced, price=9000, options=cheap
    )  # base margin 900, option 802 (sale 9780)
    d = one(priced, product)
    assert not d.listable and d.code == rules.BELOW_MIN_MARGIN
    assert d.reason and d.reason.startswith("option 크기=S: margin 802 KRW at 9780 KRW")


def test_option_without_cost_is_refused(priced: Session) -> None:
    product = add_product(priced, options=[{"name": "a", "value": "b", "price_delta": -9000}])
    assert one(priced, product).code == rules.INVALID_OPTION


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"open_market_sellable": False}, rules.NOT_OPEN_MARKET),
        ({"adult_only": True}, rules.ADULT_NOT_ALLOWED),
        ({"stock": 0}, rules.NO_STOCK),
        ({"price": 0}, rules.NO_PRICE),
        ({"status": "soldout"}, rules.NOT_ACTIVE),
        ({"status": "gone"}, rules.NOT_ACTIVE),
        ({"status": "invalid"}, rules.NOT_ACTIVE),
    ],
)
def test_never_listable(priced: Session, fields: dict[str, object], code: str) -> None:
    control = add_product(priced)
    product = add_product(priced, **fields)
    assert one(priced, control).listable
    d = one(priced, product)
    assert not d.listable and d.code == code and d.sale_price is None


def test_adult_product_on_an_account_that_allows_it(priced: Session) -> None:
    product = add_product(priced, adult_only=True)
    refused = one(priced, product)
    assert "does not allow adult products" in (refused.reason or "")
    adult_ok = MarketAccount(name="coupang_adult", market="coupang", allow_adult=True)
    assert one(priced, product, adult_ok).listable


def test_unmapped_product_waits_with_the_reason(priced: Session) -> None:
    product = add_product(priced, category="GARDEN")
    d = one(priced, product)
    assert d.code == rules.NO_CATEGORY_MAPPING
    assert d.reason and d.reason.startswith("no category mapping")
    # The mapping is per market: KITCHEN is mapped on coupang only.
    assert one(priced, add_product(priced), NAVER).code == rules.NO_CATEGORY_MAPPING
    add_mapping(priced, supplier_category="GARDEN", market_category="99")
    assert one(priced, product).listable


def test_category_rule_wins_over_the_market_default(priced: Session) -> None:
    add_mapping(priced, supplier_category="TOYS", market_category="777")
    category_rule = add_rule(priced, category="777", margin="0.5", fee="0.1")
    toy = add_product(priced, category="TOYS", price=9000)
    mug = add_product(priced, category="KITCHEN", price=9000)
    d = one(priced, toy)
    assert d.rule_id == category_rule and d.sale_price == 15000  # 9000 * 1.5 / 0.9
    assert one(priced, mug).sale_price == 11000  # the default
    priced.execute(text("DELETE FROM pricing_rules WHERE id = :i"), {"i": category_rule})
    assert one(priced, toy).sale_price == 11000


def test_no_pricing_rule(db_session: Session) -> None:
    add_mapping(db_session)
    add_rule(db_session, market="naver")
    d = one(db_session, add_product(db_session))
    assert d.code == rules.NO_PRICING_RULE and d.market_category == "56137"


def test_banned_substring_and_whole_word(priced: Session) -> None:
    toy_gun = add_product(priced, name="장난감 총 세트")
    bracketed = add_product(priced, name="[총] 모형")
    compound = add_product(priced, name="총알배송 텀블러")
    particle = add_product(priced, name="물총을 사세요")
    add_word(priced, "총", match="word")
    assert one(priced, toy_gun).code == rules.BANNED_WORD
    assert one(priced, bracketed).code == rules.BANNED_WORD
    assert one(priced, compound).listable  # 총 is inside the word 총알배송
    assert one(priced, particle).listable  # 물총을: no boundary on either side
    priced.execute(text("UPDATE banned_words SET match = 'substring'"))
    assert one(priced, compound).code == rules.BANNED_WORD
    assert one(priced, particle).code == rules.BANNED_WORD


def test_exclude_words_are_applied_before_ban_words(priced: Session) -> None:
    add_word(priced, "총")
    add_word(priced, "총알배송", kind="exclude")
    assert one(priced, add_product(priced, name="총알배송 텀블러")).listable
    blocked = one(priced, add_product(priced, name="총알배송 총 텀블러"))
    assert blocked.code == rules.BANNED_WORD and "'총' in name" in (blocked.reason or "")


def test_banned_words_look_at_option_names_and_values(priced: Session) -> None:
    add_word(priced, "replica", match="word")
    named = add_product(priced, options=[{"name": "Replica 등급", "value": "A"}])
    valued = add_product(priced, options=[{"name": "등급", "value": "REPLICA"}])
    clean = add_product(priced, options=[{"name": "등급", "value": "replicas"}])
    assert "in option" in (one(priced, named).reason or "")  # casefolded
    assert one(priced, valued).code == rules.BANNED_WORD
    assert one(priced, clean).listable


def test_banned_word_compare_is_unicode_normalised(priced: Session) -> None:
    import unicodedata

    add_word(priced, "짝퉁")
    decomposed = unicodedata.normalize("NFD", "정품 아님 짝퉁 가방")  # jamo, as some feeds send
    assert one(priced, add_product(priced, name=decomposed)).code == rules.BANNED_WORD


def test_market_scoped_word_applies_to_that_market_only(priced: Session) -> None:
    add_mapping(priced, market="naver", market_category="50000803")
    add_rule(priced, market="naver")
    add_word(priced, "최저가", market="coupang")
    product = add_product(priced, name="최저가 텀블러")
    assert one(priced, product).code == rules.BANNED_WORD
    assert one(priced, product, NAVER).listable


def test_banned_product_is_never_listed_again(priced: Session) -> None:
    product = add_product(priced, supplier_sku="OC-1")
    priced.execute(
        text("INSERT INTO banned_products (supplier, supplier_sku, reason) VALUES (:s, :k, :r)"),
        {"s": "ownerclan", "k": "OC-1", "r": "customer complaints"},
    )
    d = one(priced, product)
    assert d.code == rules.BANNED_PRODUCT and "customer complaints" in (d.reason or "")
    # The product disappears and the supplier brings it back under a new row: still banned.
    priced.execute(text("DELETE FROM products WHERE id = :i"), {"i": product})
    again = add_product(priced, supplier_sku="OC-1")
    assert again != product and one(priced, again).code == rules.BANNED_PRODUCT
    add_mapping(priced, supplier="domeggook")
    assert one(priced, add_product(priced, supplier="domeggook", supplier_sku="OC-1")).listable


def test_reasons_are_recorded_and_cleared(priced: Session) -> None:
    product = add_product(priced, category="GARDEN")
    evaluate_products(priced, [product, 10**12], COUPANG)
    block = priced.execute(
        text("SELECT code, reason FROM listing_blocks WHERE product_id = :p AND account = :a"),
        {"p": product, "a": "coupang_main"},
    ).one()
    assert block.code == rules.NO_CATEGORY_MAPPING and block.reason.startswith("no category")
    add_mapping(priced, supplier_category="GARDEN")
    (d,) = evaluate_products(priced, [product], COUPANG)
    assert d.listable
    assert priced.execute(text("SELECT count(*) FROM listing_blocks")).scalar_one() == 0


def test_unknown_ids_get_a_decision_too(priced: Session) -> None:
    product = add_product(priced)
    decisions = evaluate_products(priced, [10**12, product, product], COUPANG)
    assert [(d.product_id, d.code) for d in decisions] == [
        (10**12, rules.UNKNOWN_PRODUCT),
        (product, None),
    ]


def test_unmapped_categories_ranked_by_products_held_back(priced: Session) -> None:
    for _ in range(3):
        add_product(priced, category="GARDEN")
    add_product(priced, category="TOYS")
    add_product(priced, category="TOYS", stock=0)  # not held back by the mapping
    add_product(priced, category=None)
    add_product(priced, category="KITCHEN")  # mapped on coupang
    rows = unmapped_categories(priced, "coupang")
    assert [(r["supplier"], r["category"], r["products"]) for r in rows] == [
        ("ownerclan", "GARDEN", 3),
        ("ownerclan", None, 1),
        ("ownerclan", "TOYS", 1),
    ]
    both = unmapped_categories(priced)
    assert ("naver", "KITCHEN", 1) in [(r["market"], r["category"], r["products"]) for r in both]


def test_evaluation_is_batched_not_per_product(priced: Session) -> None:
    """The number of statements does not grow with the number of products."""
    add_word(priced, "짝퉁")
    small = [add_product(priced, category=c) for c in ("KITCHEN", "GARDEN")]
    large = [add_product(priced, category=("KITCHEN", "GARDEN")[i % 2]) for i in range(300)]
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    engine = priced.get_bind()
    event.listen(engine, "before_cursor_execute", count)
    try:
        evaluate_products(priced, small, COUPANG)
        few = len(statements)
        statements.clear()
        decisions = evaluate_products(priced, large, COUPANG)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == few
    assert sum(d.listable for d in decisions) == 150
