"""Matching a marketplace order item to our listing, product and supplier option.

The rules, in order (the first that applies decides):

1. **Listing**: by the external SKU the market echoes (Coupang ``externalVendorSkuCode``, Naver
   ``sellerProductCode``: our ``DS{account_id}-{product_id}``) on the same market account; when
   the market sends none, by the market product id (Coupang sellerProductId, Naver
   originProductNo) of a listing of that account.
2. **Product**: the listing's product (its supplier and supplier SKU are what we buy).
3. **Option**, only when the product has options: by the option code the market echoes (Naver
   ``optionManageCode`` = the supplier option code we registered), else by the option label the
   market shows (Coupang item name ``"{name} {value}"``, Naver ``"{name}: {value}"``) against the
   listing's options, whose supplier option code must still exist on the product.

An item that fails a rule gets a :class:`Match` with ``reason`` (stored as ``status_reason`` of
an ``unmatched`` order); no guess is ever made. ``unit_cost`` is the product's current cost
plus the option's price difference: what the purchase should cost (the forward step compares the
supplier's live price with it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from dropship.platforms.interfaces import MarketOrderItem


@dataclass(frozen=True)
class Match:
    listing_id: int | None = None
    product_id: int | None = None
    supplier: str | None = None
    supplier_sku: str | None = None
    supplier_option_code: str | None = None
    option_label: str | None = None
    unit_cost: int | None = None
    reason: str | None = None  # None: matched

    @property
    def matched(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class _Listing:
    id: int
    external_sku: str
    market_product_id: str | None
    options: list[dict[str, Any]]
    product_id: int
    supplier: str
    supplier_sku: str
    price: int
    product_options: list[dict[str, Any]]


class ListingIndex:
    """The listings of one account that a chunk of order items may refer to, loaded in two
    queries (by external SKU and by market product id)."""

    def __init__(self, session: Session, account_id: int, items: Sequence[MarketOrderItem]) -> None:
        skus = sorted({i.external_sku for i in items if i.external_sku})
        product_ids = sorted({i.market_product_id for i in items if i.market_product_id})
        rows = session.execute(
            text(
                "SELECT l.id, l.external_sku, l.market_product_id, l.options, l.product_id, "
                "p.supplier, p.supplier_sku, p.price, p.options AS product_options "
                "FROM listings l JOIN products p ON p.id = l.product_id "
                "WHERE l.account_id = :a AND (l.external_sku = ANY(:skus) "
                "OR l.market_product_id = ANY(:mpids))"
            ),
            {"a": account_id, "skus": skus, "mpids": product_ids},
        ).all()
        self.by_sku: dict[str, _Listing] = {}
        self.by_market_id: dict[str, _Listing] = {}
        for r in rows:
            listing = _Listing(
                id=int(r.id),
                external_sku=str(r.external_sku),
                market_product_id=r.market_product_id,
                options=list(r.options or []),
                product_id=int(r.product_id),
                supplier=str(r.supplier),
                supplier_sku=str(r.supplier_sku),
                price=int(r.price),
                product_options=list(r.product_options or []),
            )
            self.by_sku[listing.external_sku] = listing
            if listing.market_product_id:
                self.by_market_id[listing.market_product_id] = listing

    def match(self, item: MarketOrderItem) -> Match:
        listing: _Listing | None
        if item.external_sku:
            listing = self.by_sku.get(item.external_sku)
            if listing is None:
                return Match(
                    option_label=item.option,
                    reason=f"no listing with external SKU {item.external_sku} on this account",
                )
        else:
            listing = self.by_market_id.get(item.market_product_id or "")
            if listing is None:
                return Match(
                    option_label=item.option,
                    reason=(
                        "the market sent no external SKU and no listing of this account has "
                        f"market product id {item.market_product_id or '(none)'}"
                    ),
                )
        return _match_option(listing, item)


def _labels(name: str, value: str) -> set[str]:
    """The ways a market writes one option: Coupang ``"색상 빨강"``, Naver ``"색상: 빨강"``."""
    forms = {f"{name} {value}", f"{name}: {value}", f"{name}:{value}", f"{name}={value}", value}
    return {_norm(f) for f in forms}


def _norm(label: str) -> str:
    return " ".join(label.replace(":", ": ").split()).casefold()


def _match_option(listing: _Listing, item: MarketOrderItem) -> Match:
    base = Match(
        listing_id=listing.id,
        product_id=listing.product_id,
        supplier=listing.supplier,
        supplier_sku=listing.supplier_sku,
        option_label=item.option,
        unit_cost=listing.price,
    )
    if not listing.product_options:
        return base
    by_code = {
        str(o.get("supplier_option_code")): o
        for o in listing.product_options
        if o.get("supplier_option_code")
    }
    chosen: dict[str, Any] | None = None
    if item.option_code:
        chosen = by_code.get(item.option_code)
        if chosen is None:
            return _unmatched(
                base,
                f"option code {item.option_code} is not an option of product "
                f"{listing.product_id} at the supplier (any more)",
            )
    elif item.option:
        wanted = _norm(item.option)
        listed = [o for o in listing.options if wanted in _labels(str(o["name"]), str(o["value"]))]
        if len(listed) != 1:
            return _unmatched(
                base,
                f"option {item.option!r} matches {len(listed)} options of listing {listing.id}",
            )
        code = listed[0].get("supplier_option_code")
        chosen = by_code.get(str(code)) if code else None
        if chosen is None:
            # Options without codes: the product's option with the same name and value.
            chosen = next(
                (
                    o
                    for o in listing.product_options
                    if (o.get("name"), o.get("value")) == (listed[0]["name"], listed[0]["value"])
                ),
                None,
            )
        if chosen is None:
            return _unmatched(
                base,
                f"option {item.option!r} of listing {listing.id} is no longer an option of "
                f"product {listing.product_id} at the supplier",
            )
    else:
        return _unmatched(
            base,
            f"product {listing.product_id} has options and the market named none for this item",
        )
    return Match(
        listing_id=listing.id,
        product_id=listing.product_id,
        supplier=listing.supplier,
        supplier_sku=listing.supplier_sku,
        supplier_option_code=(
            str(chosen["supplier_option_code"])
            if chosen.get("supplier_option_code")
            else f"{chosen['name']}:{chosen['value']}"
        ),
        option_label=item.option,
        unit_cost=listing.price + int(chosen.get("price_delta") or 0),
    )


def _unmatched(base: Match, reason: str) -> Match:
    return Match(
        listing_id=base.listing_id,
        product_id=base.product_id,
        supplier=base.supplier,
        supplier_sku=base.supplier_sku,
        option_label=base.option_label,
        reason=reason,
    )


def match_items(session: Session, account_id: int, items: Iterable[MarketOrderItem]) -> list[Match]:
    """One :class:`Match` per item, in order (a convenience over :class:`ListingIndex`)."""
    listed = list(items)
    index = ListingIndex(session, account_id, listed)
    return [index.match(i) for i in listed]
