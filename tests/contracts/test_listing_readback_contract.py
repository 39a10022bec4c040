"""``MarketConnector.get_listing`` on both markets: the read endpoints have the documented shape
(fixtures ``coupang/seller_product_response.json``, ``coupang/vendor_item_inventory_response.json``,
``naver/origin_product_response.json``), the connector normalises the market's states to
on_sale / suspended / pending / refused / deleted with total stock and sale price, and the
sandbox's ``drop_suspensions`` fault really answers a suspension 200 without applying it.

Sources: Coupang product API "상품 조회" (``GET seller-products/{sellerProductId}``: ``statusName``
승인완료 / 승인반려 / 심사중 ..., ``items[].vendorItemId``) and "아이템별 수량/가격/상태 조회"
(``GET vendor-items/{vendorItemId}/inventories``: ``amountInStock``, ``salePrice``, ``onSale``);
Naver Commerce "원상품 조회" (``GET /external/v2/products/origin-products/{originProductNo}``:
``originProduct.statusType`` SALE / WAIT / OUTOFSTOCK / SUSPENSION / CLOSE / PROHIBITION / DELETE,
``stockQuantity``, ``salePrice``, ``detailAttribute.sellerCodeInfo.sellerManagementCode``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from dropship.platforms.coupang import SELLER_API
from dropship.platforms.interfaces import MarketListingRequest, MarketListingState
from dropship.sandbox.coupang import CoupangWorld
from dropship.sandbox.naver import NaverWorld
from tests.contracts._shapes import fixture, shape_gaps
from tests.platforms.hosted_images import market_image_urls

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("frozen_world_clock")]


_BOX: list[Any] = []


@pytest.fixture(autouse=True)
def _market_images_box(sandbox: Any) -> None:
    """The sandbox whose markets the requests go to: their images must be ones it accepts
    (Coupang downloads every vendorPath; Naver takes only its own host's URLs)."""
    _BOX[:] = [sandbox]


def create(connector: Any, req: MarketListingRequest) -> Any:
    """``create_listing`` with images the connector's market accepts."""
    return connector.create_listing(
        replace(req, images=market_image_urls(_BOX[0], connector.market))
    )


ACCOUNTS = {"coupang": "coupang_main", "naver": "naver_main"}


def request(sku: str, stock: int = 10) -> MarketListingRequest:
    return MarketListingRequest(
        external_sku=sku,
        name="스테인리스 보온 텀블러 500ml",
        sale_price=15_900,
        stock=stock,
        category_id="56137",
        images=("https://img.example/t.jpg",),
    )


@pytest.fixture(params=["coupang", "naver"])
def market(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_read_endpoints_have_the_documented_shape(
    make_connector: Callable[[str], Any], market: str
) -> None:
    connector = make_connector(ACCOUNTS[market])
    listing = create(connector, request(f"shape-{market}"))
    if market == "coupang":
        _, product = connector._call(
            "GET", f"{SELLER_API}/seller-products/{listing.market_product_id}"
        )
        assert shape_gaps(fixture("coupang", "seller_product_response.json"), product) == []
        item = product["data"]["items"][0]["vendorItemId"]
        _, inventory = connector._call("GET", f"{SELLER_API}/vendor-items/{item}/inventories")
        documented = fixture("coupang", "vendor_item_inventory_response.json")
        assert shape_gaps(documented, inventory) == []
    else:
        path = f"/external/v2/products/origin-products/{listing.market_product_id}"
        _, product = connector._call("GET", path)
        assert shape_gaps(fixture("naver", "origin_product_response.json"), product) == []


def test_get_listing_follows_suspend_and_resume(
    make_connector: Callable[[str], Any], market: str
) -> None:
    connector = make_connector(ACCOUNTS[market])
    sku = f"rb-{market}"
    listing = create(connector, request(sku, stock=7))
    state = connector.get_listing(listing.market_product_id)
    assert isinstance(state, MarketListingState)
    assert (state.sale_state, state.sale_price, state.stock, state.external_sku) == (
        "on_sale",
        15_900,
        7,
        sku,
    )
    connector.suspend_listing(listing.market_product_id)
    assert connector.get_listing(listing.market_product_id).sale_state == "suspended"
    if market == "naver":
        connector.resume_listing(listing.market_product_id, 5)
    else:
        connector.update_stock(listing.market_product_id, 5)
        connector.resume_listing(listing.market_product_id)
    state = connector.get_listing(listing.market_product_id)
    assert (state.sale_state, state.stock) == ("on_sale", 5)


def test_zero_stock_reads_as_suspended_and_unknown_as_none(
    make_connector: Callable[[str], Any], market: str
) -> None:
    connector = make_connector(ACCOUNTS[market])
    listing = create(connector, request(f"zero-{market}"))
    connector.update_stock(listing.market_product_id, 0)
    state = connector.get_listing(listing.market_product_id)
    assert (state.sale_state, state.stock) == ("suspended", 0)
    assert connector.get_listing("987654321") is None


def test_drop_suspensions_fault_accepts_and_does_not_apply(
    sandbox: Any, make_connector: Callable[[str], Any], market: str
) -> None:
    connector = make_connector(ACCOUNTS[market])
    listing = create(connector, request(f"drop-{market}"))
    sandbox.set_faults(market, drop_suspensions=1)
    connector.suspend_listing(listing.market_product_id)  # answered 200 ...
    assert connector.get_listing(listing.market_product_id).sale_state == "on_sale"  # ... not done
    assert sandbox.counts()["dropped_suspensions"] == {market: 1}
    connector.suspend_listing(listing.market_product_id)  # the fault is spent
    assert connector.get_listing(listing.market_product_id).sale_state == "suspended"


@pytest.mark.parametrize(
    ("status_name", "expected"),
    [
        ("승인반려", "refused"),
        ("심사중", "pending"),
        ("임시저장", "pending"),
        ("상품삭제", "deleted"),
    ],
)
def test_coupang_approval_states(
    sandbox: Any, make_connector: Callable[[str], Any], status_name: str, expected: str
) -> None:
    connector = make_connector("coupang_main")
    listing = create(connector, request(f"appr-{expected}-{status_name}"))
    world = CoupangWorld(sandbox.state)
    with sandbox.state.lock:
        world.store.products[int(listing.market_product_id)].status_name = status_name
    assert connector.get_listing(listing.market_product_id).sale_state == expected


@pytest.mark.parametrize(
    ("status_type", "expected"),
    [
        ("WAIT", "pending"),
        ("PROHIBITION", "refused"),
        ("CLOSE", "suspended"),
        ("SUSPENSION", "suspended"),
        ("DELETE", "deleted"),
    ],
)
def test_naver_status_types(
    sandbox: Any, make_connector: Callable[[str], Any], status_type: str, expected: str
) -> None:
    connector = make_connector("naver_main")
    listing = create(connector, request(f"st-{status_type}"))
    world = NaverWorld(sandbox.state)
    with sandbox.state.lock:
        world.store.products[int(listing.market_product_id)].origin_product["statusType"] = (
            status_type
        )
    assert connector.get_listing(listing.market_product_id).sale_state == expected
