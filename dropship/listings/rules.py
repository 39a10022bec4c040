"""Catalog rules: may a product be listed on a market account, at what price, in which category.

:func:`evaluate_products` answers for a batch of product ids and one market account with one
query for the products (joined to their category mapping and the banned-product list) plus one
read of the account's pricing rules and word lists; the price and word checks then run in
Python. It is callable without Celery and, by default, records the reason of every product that
is not listable in ``listing_blocks`` (the row is removed once the product is listable).

Checks, in this order (the first that fails is the reason):

1. the product exists; it is not on the banned-product list;
2. ``status = 'active'``; the supplier allows open-market sales; not adult-only unless the
   account allows adult products (``AccountSettings.allow_adult``);
3. it has a cost price (> 0) and stock (> 0);
4. word lists on the name and every option name and value: ``exclude`` entries are masked out
   first, then any ``ban`` entry left blocks the product (see :class:`WordLists`);
5. a category mapping for (supplier, supplier category, market);
6. a pricing rule (the one for the market category, else the market's default), and the
   minimum margin is met by the product and by every option.

Pricing (all exact: integers and :class:`fractions.Fraction`, never float)::

    sale   = ceil((cost + shipping) * (1 + margin) / (1 - fee) / unit) * unit
    margin = sale * (1 - fee) - cost - shipping        (must be >= min_margin_krw)

Options: each option is priced on its own cost, ``cost + price_delta`` (plus the product's
shipping), through the same rule, so every option keeps the rule's margin; an option whose own
price misses the minimum margin makes the whole product not listable (listing it without that
option would silently drop a variant the supplier sells).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from dropship.errors import ConfigurationError

# Reason codes (``listing_blocks.code``), grouped by ``dropship listings status``.
UNKNOWN_PRODUCT = "unknown_product"
BANNED_PRODUCT = "banned_product"
NOT_ACTIVE = "not_active"
NOT_OPEN_MARKET = "not_open_market"
ADULT_NOT_ALLOWED = "adult_not_allowed"
NO_PRICE = "no_price"
NO_STOCK = "no_stock"
BANNED_WORD = "banned_word"
NO_CATEGORY_MAPPING = "no_category_mapping"
NO_PRICING_RULE = "no_pricing_rule"
INVALID_OPTION = "invalid_option"
BELOW_MIN_MARGIN = "below_min_margin"


@dataclass(frozen=True)
class MarketAccount:
    """What the rules need to know about a market account."""

    name: str
    market: str
    allow_adult: bool = False

    @classmethod
    def from_settings(cls, name: str) -> MarketAccount:
        from dropship.platforms.config import MARKET_PLATFORMS
        from dropship.settings import get_settings

        account = get_settings().platforms.account(name)
        if account.platform not in MARKET_PLATFORMS:
            raise ConfigurationError(
                f"account {name!r} is a {account.platform} (supplier) account, not a market"
            )
        return cls(name=account.name, market=account.platform, allow_adult=account.allow_adult)


# --------------------------------------------------------------------------- pricing


@dataclass(frozen=True)
class PricingRule:
    id: int | None
    market: str
    category: str | None
    margin_rate: Decimal
    fee_rate: Decimal
    min_margin_krw: int
    rounding_krw: int = 10

    def sale_price(self, cost: int) -> int:
        """``cost`` (cost price + shipping, KRW) -> sale price, rounded up to the unit."""
        raw = Fraction(cost) * (1 + Fraction(self.margin_rate)) / (1 - Fraction(self.fee_rate))
        return math.ceil(raw / self.rounding_krw) * self.rounding_krw

    def margin(self, sale_price: int, cost: int) -> Fraction:
        """What is left of ``sale_price`` after the market fee and the cost, exactly."""
        return sale_price * (1 - Fraction(self.fee_rate)) - cost


@dataclass(frozen=True)
class OptionPrice:
    index: int
    name: str
    value: str
    supplier_option_code: str | None
    price_delta: int
    sale_price: int
    margin_krw: int  # rounded down: the exact margin is compared, this is for display


@dataclass(frozen=True)
class Decision:
    product_id: int
    listable: bool
    code: str | None = None
    reason: str | None = None
    sale_price: int | None = None
    margin_krw: int | None = None
    market_category: str | None = None
    rule_id: int | None = None
    options: tuple[OptionPrice, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "listable": self.listable,
            "code": self.code,
            "reason": self.reason,
            "sale_price": self.sale_price,
            "margin_krw": self.margin_krw,
            "market_category": self.market_category,
            "rule_id": self.rule_id,
            "options": [vars(o) for o in self.options],
        }


def _refused(product_id: int, code: str, reason: str, **extra: Any) -> Decision:
    return Decision(product_id=product_id, listable=False, code=code, reason=reason, **extra)


# --------------------------------------------------------------------------- words


def normalise_word(word: str) -> str:
    """The form words are stored and compared in: NFKC (so decomposed Hangul jamo from some
    sources and full-width Latin compare equal to their usual form), casefolded, trimmed."""
    return unicodedata.normalize("NFKC", word).casefold().strip()


def _pattern(word: str, match: str) -> str:
    escaped = re.escape(word)
    if match == "word":
        # A whole word is bounded by a non-word character or the text's edge on both sides.
        # Python's \w is Unicode: Hangul syllables, Latin letters and digits are all word
        # characters, so "총" matches "장난감 총" and "[총]" but not "총알배송" or "총을".
        return rf"(?<!\w){escaped}(?!\w)"
    return escaped


@dataclass(frozen=True)
class WordEntry:
    word: str
    kind: str
    match: str
    reason: str | None = None


@dataclass
class WordLists:
    """Exclude words are masked (replaced by a space, i.e. a word boundary) before the ban
    words are looked for, so an exclude entry carves an exception out of a ban: exclude
    "총알배송" keeps ban "총" from matching "총알배송 텀블러"."""

    exclude: list[WordEntry] = field(default_factory=list)
    ban: list[WordEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._exclude = self._compile(self.exclude)
        self._ban = self._compile(self.ban)
        self._ban_by_word = {e.word: e for e in self.ban}

    @staticmethod
    def _compile(entries: Sequence[WordEntry]) -> re.Pattern[str] | None:
        if not entries:
            return None
        # Longest first, so an alternation prefers "총알배송" over its prefix "총".
        ordered = sorted(entries, key=lambda e: len(e.word), reverse=True)
        return re.compile("|".join(_pattern(e.word, e.match) for e in ordered))

    def banned_in(self, text_: str) -> WordEntry | None:
        if self._ban is None:
            return None
        normalised = normalise_word(text_)
        if self._exclude is not None:
            normalised = self._exclude.sub(" ", normalised)
        found = self._ban.search(normalised)
        return self._ban_by_word[found.group()] if found else None


def load_word_lists(session: Session, market: str) -> WordLists:
    rows = session.execute(
        text(
            "SELECT word, kind, match, reason FROM banned_words "
            "WHERE market IS NULL OR market = :m ORDER BY id"
        ),
        {"m": market},
    ).all()
    lists = {"exclude": [], "ban": []}  # type: dict[str, list[WordEntry]]
    for row in rows:
        # Normalised again in case a row was written around the store (SQL by hand).
        word = normalise_word(row.word)
        lists[row.kind].append(WordEntry(word, row.kind, row.match, row.reason))
    return WordLists(exclude=lists["exclude"], ban=lists["ban"])


def load_pricing_rules(session: Session, market: str) -> dict[str | None, PricingRule]:
    rows = session.execute(
        text(
            "SELECT id, market, category, margin_rate, fee_rate, min_margin_krw, rounding_krw "
            "FROM pricing_rules WHERE market = :m"
        ),
        {"m": market},
    ).all()
    return {row.category: PricingRule(**row._mapping) for row in rows}


# --------------------------------------------------------------------------- evaluation

_PRODUCTS = text(
    """
    SELECT p.id, p.supplier, p.supplier_sku, p.name, p.price, p.shipping_fee, p.stock,
           p.status, p.category, p.options, p.open_market_sellable, p.adult_only,
           cm.market_category, bp.supplier IS NOT NULL AS banned, bp.reason AS banned_reason
    FROM products p
    LEFT JOIN category_map cm
      ON cm.supplier = p.supplier AND cm.supplier_category = p.category AND cm.market = :market
    LEFT JOIN banned_products bp ON bp.supplier = p.supplier AND bp.supplier_sku = p.supplier_sku
    WHERE p.id = ANY(:ids)
    """
)


def evaluate_products(
    session: Session, product_ids: Iterable[int], account: MarketAccount, *, record: bool = True
) -> list[Decision]:
    """One :class:`Decision` per requested id (in the order given, duplicates once). With
    ``record`` the blocks of this account are written in ``session`` (the caller commits)."""
    ids = list(dict.fromkeys(int(i) for i in product_ids))
    if not ids:
        return []
    rules = load_pricing_rules(session, account.market)
    words = load_word_lists(session, account.market)
    rows = {
        row.id: row for row in session.execute(_PRODUCTS, {"ids": ids, "market": account.market})
    }
    decisions = [
        _decide(rows[i], account, rules, words)
        if i in rows
        else _refused(i, UNKNOWN_PRODUCT, "no such product")
        for i in ids
    ]
    if record:
        record_blocks(session, account.name, decisions)
    return decisions


def evaluate(product_ids: Iterable[int], account: MarketAccount | str) -> list[Decision]:
    """:func:`evaluate_products` in its own committed transaction (shell, CLI)."""
    from dropship.db import session_scope

    market_account = MarketAccount.from_settings(account) if isinstance(account, str) else account
    with session_scope() as session:
        return evaluate_products(session, product_ids, market_account)


def _decide(
    row: Any, account: MarketAccount, rules: dict[str | None, PricingRule], words: WordLists
) -> Decision:
    pid = int(row.id)
    if row.banned:
        note = f": {row.banned_reason}" if row.banned_reason else ""
        return _refused(pid, BANNED_PRODUCT, f"banned product{note}")
    if row.status != "active":
        return _refused(pid, NOT_ACTIVE, f"product is {row.status}, not active")
    if not row.open_market_sellable:
        return _refused(pid, NOT_OPEN_MARKET, "the supplier does not allow open-market sales")
    if row.adult_only and not account.allow_adult:
        return _refused(
            pid,
            ADULT_NOT_ALLOWED,
            f"adult-only product; account {account.name!r} does not allow adult products",
        )
    if row.price <= 0:
        return _refused(pid, NO_PRICE, "no cost price")
    if row.stock <= 0:
        return _refused(pid, NO_STOCK, "no stock")
    options: list[dict[str, Any]] = list(row.options or [])
    texts = [("name", row.name)]
    for o in options:
        label = f"option {o.get('name', '')}={o.get('value', '')}"
        texts += [(label, str(o.get("name", ""))), (label, str(o.get("value", "")))]
    for where, value in texts:
        entry = words.banned_in(value)
        if entry is not None:
            note = f" ({entry.reason})" if entry.reason else ""
            return _refused(pid, BANNED_WORD, f"banned word {entry.word!r} in {where}{note}")
    if row.market_category is None:
        return _refused(
            pid,
            NO_CATEGORY_MAPPING,
            f"no category mapping for {row.supplier} category {row.category!r} on {account.market}",
        )
    category = row.market_category
    rule = rules.get(category) or rules.get(None)
    if rule is None:
        return _refused(
            pid,
            NO_PRICING_RULE,
            f"no pricing rule for {account.market} (category {category!r} or a default)",
            market_category=category,
        )
    base_cost = row.price + row.shipping_fee
    sale = rule.sale_price(base_cost)
    margin = rule.margin(sale, base_cost)
    if margin < rule.min_margin_krw:
        return _refused(
            pid,
            BELOW_MIN_MARGIN,
            f"margin {math.floor(margin)} KRW at {sale} KRW is below the minimum "
            f"{rule.min_margin_krw} KRW (pricing rule {rule.id})",
            market_category=category,
            rule_id=rule.id,
        )
    priced: list[OptionPrice] = []
    for index, o in enumerate(options):
        delta = int(o.get("price_delta") or 0)
        label = f"option {o.get('name', '')}={o.get('value', '')}"
        option_cost = row.price + delta
        if option_cost <= 0:
            return _refused(
                pid,
                INVALID_OPTION,
                f"{label}: price delta {delta} leaves no cost price",
                market_category=category,
                rule_id=rule.id,
            )
        option_sale = rule.sale_price(option_cost + row.shipping_fee)
        option_margin = rule.margin(option_sale, option_cost + row.shipping_fee)
        if option_margin < rule.min_margin_krw:
            return _refused(
                pid,
                BELOW_MIN_MARGIN,
                f"{label}: margin {math.floor(option_margin)} KRW at {option_sale} KRW is "
                f"below the minimum {rule.min_margin_krw} KRW (pricing rule {rule.id})",
                market_category=category,
                rule_id=rule.id,
            )
        priced.append(
            OptionPrice(
                index=index,
                name=str(o.get("name", "")),
                value=str(o.get("value", "")),
                supplier_option_code=o.get("supplier_option_code"),
                price_delta=delta,
                sale_price=option_sale,
                margin_krw=math.floor(option_margin),
            )
        )
    return Decision(
        product_id=pid,
        listable=True,
        sale_price=sale,
        margin_krw=math.floor(margin),
        market_category=category,
        rule_id=rule.id,
        options=tuple(priced),
    )


def record_blocks(session: Session, account: str, decisions: Sequence[Decision]) -> None:
    """Upsert the reason of each not-listable product, drop the blocks of listable ones."""
    listable = [d.product_id for d in decisions if d.listable]
    # Sorted by product id: two evaluations writing overlapping batches lock rows in the same
    # order and cannot deadlock.
    blocked = [
        {"p": d.product_id, "a": account, "c": d.code, "r": d.reason}
        for d in sorted(decisions, key=lambda d: d.product_id)
        if not d.listable and d.code != UNKNOWN_PRODUCT
    ]
    if listable:
        session.execute(
            text("DELETE FROM listing_blocks WHERE account = :a AND product_id = ANY(:ids)"),
            {"a": account, "ids": listable},
        )
    if blocked:
        session.execute(
            text(
                "INSERT INTO listing_blocks (product_id, account, code, reason, evaluated_at) "
                "VALUES (:p, :a, :c, :r, now()) ON CONFLICT (product_id, account) DO UPDATE "
                "SET code = EXCLUDED.code, reason = EXCLUDED.reason, evaluated_at = now()"
            ),
            blocked,
        )


def unmapped_categories(
    session: Session, market: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """(market, supplier, supplier category) pairs without a mapping, by how many products
    they hold back: products that pass every check before the mapping (active, in stock, priced,
    open-market, not banned). A NULL supplier category is shown as ``None``."""
    from dropship.catalog.models import MARKETS

    rows = session.execute(
        text(
            """
            SELECT m.market, p.supplier, p.category, count(*) AS products
            FROM products p
            CROSS JOIN unnest(CAST(:markets AS text[])) AS m(market)
            WHERE p.status = 'active' AND p.stock > 0 AND p.price > 0
              AND p.open_market_sellable
              AND NOT EXISTS (SELECT 1 FROM banned_products b
                              WHERE b.supplier = p.supplier AND b.supplier_sku = p.supplier_sku)
              AND NOT EXISTS (SELECT 1 FROM category_map c
                              WHERE c.supplier = p.supplier AND c.supplier_category = p.category
                                AND c.market = m.market)
            GROUP BY m.market, p.supplier, p.category
            ORDER BY products DESC, m.market, p.supplier, p.category NULLS FIRST
            LIMIT :limit
            """
        ),
        {"markets": [market] if market else list(MARKETS), "limit": limit},
    ).all()
    return [dict(row._mapping) for row in rows]


def blocked_summary(
    session: Session, account: str | None = None, code: str | None = None, limit: int = 20
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Recorded blocks: counts per (account, code), and the latest ``limit`` blocks with their
    product and reason (optionally for one account and/or one reason code)."""
    params = {"a": account, "c": code, "limit": limit}
    where = (
        "(CAST(:a AS text) IS NULL OR b.account = :a) AND (CAST(:c AS text) IS NULL OR b.code = :c)"
    )
    counts = session.execute(
        text(
            f"SELECT b.account, b.code, count(*) AS products FROM listing_blocks b WHERE {where} "
            "GROUP BY b.account, b.code ORDER BY products DESC, b.account, b.code"
        ),
        params,
    ).all()
    latest = session.execute(
        text(
            "SELECT b.account, b.product_id, p.supplier, p.supplier_sku, b.code, b.reason, "
            f"b.evaluated_at FROM listing_blocks b JOIN products p ON p.id = b.product_id "
            f"WHERE {where} ORDER BY b.evaluated_at DESC, b.product_id LIMIT :limit"
        ),
        params,
    ).all()
    return [dict(r._mapping) for r in counts], [dict(r._mapping) for r in latest]
