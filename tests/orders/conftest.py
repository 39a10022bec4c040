"""Fixtures for the order flow: real PostgreSQL, the platform sandbox over HTTP, products that
exist at the sandbox's OwnerClan, listed on both sandbox markets through the register flow, and
orders created at the sandbox markets for them (``/_sandbox/<market>/orders``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.images import services as image_services
from dropship.listings import services as listing_services
from dropship.platforms.interfaces import SupplierProduct
from dropship.sandbox.credentials import sandbox_account_config
from dropship.sandbox.ownerclan import item_key
from dropship.settings import get_settings
from tests.images.conftest import HostedStore, image_store  # noqa: F401  (fixture)
from tests.listings.conftest import add_mapping, add_product, add_rule, rules_db  # noqa: F401
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    connector_settings,
    make_connector,
    sandbox,
    sandbox_server,
)

MARKETS = {"coupang_main": "56137", "naver_main": "50000803"}


@pytest.fixture(autouse=True)
def hosted_images(image_store: HostedStore) -> HostedStore:  # noqa: F811
    """Every order test registers listings, and registration needs processed images: a store
    served over HTTP (also seen by workers started later, through the environment)."""
    return image_store


@pytest.fixture(autouse=True)
def no_spontaneous_orders(sandbox: SandboxFixture) -> None:  # noqa: F811
    """The test sandbox lets orders arrive by themselves for listed products (0.5 a minute per
    market); these tests count exactly the orders they create, so arrivals are off. (The next
    test's reset brings the configured rate back.)"""
    state = sandbox.state
    state.reset(replace(state.initial_config, order_rate_per_min=0.0))


@pytest.fixture
def accounts(sandbox: SandboxFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    monkeypatch.setenv(
        "DROPSHIP_PLATFORMS__ACCOUNTS", json.dumps(sandbox_account_config(sandbox.base_url))
    )
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def sandbox_items(
    make_connector: Callable[[str], Any],  # noqa: F811
    want: Callable[[SupplierProduct], bool],
    count: int,
    start: int = 0,
) -> list[SupplierProduct]:
    """The first ``count`` OwnerClan sandbox items from index ``start`` that ``want`` accepts."""
    connector = make_connector("ownerclan_main")
    found: list[SupplierProduct] = []
    for index in range(start, start + 400):
        product = connector.get_product(item_key(index))
        if product is not None and want(product):
            found.append(product)
            if len(found) == count:
                return found
    raise AssertionError("not enough sandbox items of that kind")


def sellable(product: SupplierProduct) -> bool:
    return (
        product.status == "active"
        and product.stock >= 5
        and product.open_market_sellable
        and not product.adult_only
        and all(o.stock >= 5 for o in product.options)
    )


def insert_product(engine: Engine, product: SupplierProduct, **overrides: Any) -> int:
    fields: dict[str, Any] = {
        "supplier": "ownerclan",
        "supplier_sku": product.supplier_sku,
        "name": product.name,
        "price": product.cost_price,
        "stock": product.stock,
        "images": list(product.images),
        "options": [
            {
                "name": o.name,
                "value": o.value,
                "price_delta": o.price_delta,
                "stock": o.stock,
                "supplier_option_code": o.supplier_option_code,
            }
            for o in product.options
        ],
    }
    fields.update(overrides)
    with engine.begin() as conn:
        return add_product(conn, **fields)


@dataclass
class Catalog:
    products: dict[str, int]  # name -> product id
    skus: dict[tuple[str, str], str]  # (account, name) -> external SKU


def list_products(
    engine: Engine,
    make_connector: Callable[[str], Any],  # noqa: F811
    products: dict[str, int],
) -> Catalog:
    """Register ``products`` on both sandbox markets (real register flow); external SKUs."""
    with engine.begin() as conn:
        if not conn.execute(text("SELECT 1 FROM pricing_rules LIMIT 1")).first():
            for account, category in MARKETS.items():
                market = account.split("_")[0]
                add_rule(conn, market=market, margin="0.2", fee="0.1")
                add_mapping(conn, market=market, market_category=category)
    # Registration lists only products with a usable, processed image (the sandbox serves
    # every catalog product's images).
    # A product keeps the images that passed; one without any would not be listed (and the
    # assert below names it).
    image_services.process_products(list(products.values()))
    skus: dict[tuple[str, str], str] = {}
    for account in MARKETS:
        planned = listing_services.plan_registrations(account)
        listing_services.register_listings(account, planned["publish"], make_connector)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT l.product_id, l.external_sku, l.status FROM listings l "
                    "JOIN accounts a ON a.id = l.account_id WHERE a.name = :a"
                ),
                {"a": account},
            ).all()
        by_product = {r.product_id: r for r in rows}
        for name, product_id in products.items():
            row = by_product[product_id]
            assert row.status == "active", row
            skus[(account, name)] = row.external_sku
    return Catalog(products=products, skus=skus)


def market_orders(
    box: SandboxFixture,
    account: str,
    external_sku: str | None,
    count: int = 1,
    **extra: Any,
) -> list[str]:
    """Create ``count`` orders at the sandbox market of ``account`` (for the listing with
    ``external_sku``, or for a product listed outside the system), placed a few minutes ago
    one second apart (all before the sweep's end); their market unit ids."""
    start = datetime.now(UTC) - timedelta(seconds=300)
    extra.setdefault("ordered_at", start.isoformat())
    if account.startswith("coupang"):
        body: dict[str, Any] = {"count": count, "spacing_s": 1, **extra}
        if external_sku:
            body["external_sku"] = external_sku
        return [str(i) for i in box._admin("POST", "coupang/orders", body)["shipmentBoxIds"]]
    body = {"count": count, "spacing_s": 1, **extra}
    if external_sku:
        body["seller_management_code"] = external_sku
    return [str(i) for i in box._admin("POST", "naver/orders", body)["productOrderIds"]]


def order_rows(engine: Engine, account: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT o.* FROM orders o JOIN accounts a ON a.id = o.account_id "
                "WHERE CAST(:a AS text) IS NULL OR a.name = :a ORDER BY o.id"
            ),
            {"a": account},
        ).all()
    return [dict(r._mapping) for r in rows]


def purchase_counts(box: SandboxFixture, keys: list[str]) -> list[int]:
    bought = box.counts()["purchase_orders"]
    return [int(bought.get(k, 0)) for k in keys]


def listed_catalog(
    engine: Engine,
    make_connector: Callable[[str], Any],  # noqa: F811
    *,
    optioned: bool = True,
) -> Catalog:
    """A sandbox OwnerClan product without options ("plain") and, with ``optioned``, one with
    at least two ("optioned"), stored and listed on both markets."""
    picks: dict[str, Callable[[SupplierProduct], bool]] = {
        "plain": lambda p: sellable(p) and not p.options
    }
    if optioned:
        picks["optioned"] = lambda p: sellable(p) and len(p.options) >= 2
    products = {
        name: insert_product(engine, sandbox_items(make_connector, pick, 1)[0])
        for name, pick in picks.items()
    }
    return list_products(engine, make_connector, products)


def swept(
    box: SandboxFixture,
    make_connector: Callable[[str], Any],  # noqa: F811
    account: str,
    sku: str,
    n: int,
) -> list[int]:
    """``n`` new orders of ``sku`` at the market, swept: the ids to forward."""
    from dropship.orders import services

    market_orders(box, account, sku, count=n)
    return services.sweep_account(account, make_connector).forward
