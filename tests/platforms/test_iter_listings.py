"""``iter_listings`` of both market connectors against the sandbox over HTTP: every listing of the
account once, following the paging (Coupang ``nextToken``, Naver ``page``/``last``), with our key
and the market's sale state; the sandbox refuses what the real list endpoints refuse; a market
error or an unreadable record raises instead of ending the listing early."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from dropship.errors import PermanentError, TransientError
from dropship.platforms import coupang as coupang_module
from dropship.platforms import naver as naver_module
from dropship.platforms.coupang import SELLER_API
from dropship.platforms.interfaces import MarketListingRequest
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


def request(sku: str, price: int = 15_900) -> MarketListingRequest:
    return MarketListingRequest(
        external_sku=sku,
        name=f"텀블러 {sku}",
        sale_price=price,
        stock=5,
        category_id="56137",
        images=("https://img.example/1.jpg",),
    )


@pytest.mark.parametrize("account", ["coupang_main", "naver_main"])
def test_every_listing_once_across_pages_with_key_and_state(
    make_connector: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch, account: str
) -> None:
    module = coupang_module if account.startswith("coupang") else naver_module
    # Pages of 2 over 5 listings: three pages, the last one short.
    monkeypatch.setattr(module, "LISTING_PAGE_SIZE", 2)
    connector = make_connector(account)
    other = make_connector(account.replace("_main", "_second"))
    created = [create(connector, request(f"K-{n}", 10_000 + 100 * n)) for n in range(5)]
    create(other, request("OTHER-1"))  # another account's listing is not ours
    connector.suspend_listing(created[1].market_product_id)

    states = list(connector.iter_listings())

    by_id = {s.market_product_id: s for s in states}
    assert len(states) == 5 and set(by_id) == {c.market_product_id for c in created}
    assert {s.external_sku for s in states} == {f"K-{n}" for n in range(5)}
    assert by_id[created[1].market_product_id].sale_state == "suspended"
    assert {by_id[c.market_product_id].sale_state for c in created if c is not created[1]} == {
        "on_sale"
    }
    assert by_id[created[3].market_product_id].sale_price == 10_300
    assert by_id[created[0].market_product_id].stock == 5


def test_coupang_list_is_as_strict_as_the_document(sandbox: Any) -> None:
    from tests.platforms.test_coupang import signed_get

    # vendorId is required and must be the caller's; maxPerPage at most 100.
    for query, message in (
        ("maxPerPage=10", "vendorId"),
        ("vendorId=A00067890&maxPerPage=10", "does not match"),
        ("vendorId=A00012345&maxPerPage=101", "maxPerPage"),
    ):
        response = signed_get(sandbox, f"{SELLER_API}/seller-products", query)
        status, body = response.status_code, response.json()
        assert status == 400 and body["code"] == "ERROR" and message in body["message"]
    response = signed_get(
        sandbox, f"{SELLER_API}/seller-products", "vendorId=A00012345&maxPerPage=100"
    )
    status, body = response.status_code, response.json()
    assert status == 200 and body == {"code": "SUCCESS", "message": "", "nextToken": "", "data": []}


def test_coupang_page_size_over_the_maximum_is_refused(
    make_connector: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coupang_module, "LISTING_PAGE_SIZE", 101)
    connector = make_connector("coupang_main")
    with pytest.raises(PermanentError):
        list(connector.iter_listings())


def test_naver_page_size_over_the_maximum_is_refused(
    make_connector: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(naver_module, "LISTING_PAGE_SIZE", 501)
    connector = make_connector("naver_main")
    with pytest.raises(PermanentError):
        list(connector.iter_listings())


@pytest.mark.parametrize("account", ["coupang_main", "naver_main"])
def test_market_error_mid_paging_raises_instead_of_ending_early(
    sandbox: Any,
    make_connector: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
    account: str,
) -> None:
    platform = account.split("_")[0]
    module = coupang_module if platform == "coupang" else naver_module
    monkeypatch.setattr(module, "LISTING_PAGE_SIZE", 1)
    connector = make_connector(account)
    for n in range(3):
        create(connector, request(f"E-{n}"))
    seen = []
    listing = connector.iter_listings()
    seen.append(next(listing))
    sandbox.set_faults(platform, error_rate=1.0)
    with pytest.raises(TransientError):
        seen.extend(listing)
    assert len(seen) == 1


def test_unknown_status_is_an_error_not_a_guess(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    connector = make_connector("naver_main")
    created = create(connector, request("S-1"))
    with sandbox.state.lock:
        product = sandbox.state.platform_store("naver", lambda: None).products[
            int(created.market_product_id)
        ]
        product.origin_product["statusType"] = "SOMETHING_NEW"
    with pytest.raises(TransientError, match="unknown statusType"):
        list(connector.iter_listings())


def test_sandbox_counts_each_account_against_its_own_bucket_when_asked(sandbox: Any) -> None:
    """With per-account limits (Coupang counts per vendorId) two vendors at the limit each are
    not refused; with the shared bucket (the default) the second vendor's calls are."""
    from dataclasses import replace

    from dropship.sandbox.credentials import SANDBOX_SECOND_ACCOUNTS
    from tests.platforms.test_coupang import signed_get

    second = SANDBOX_SECOND_ACCOUNTS["coupang"]
    path = f"{SELLER_API}/seller-products/external-vendor-sku-codes/X1"

    def violations(per_account: bool) -> int:
        sandbox.reset()
        with sandbox.state.lock:
            sandbox.state.config = replace(
                sandbox.state.config, per_account_rate_limits=per_account
            )
        sandbox.set_rate_limit("coupang", 1, 60.0, burst=3)
        for _ in range(3):
            assert signed_get(sandbox, path).status_code in (200, 429)
            signed_get(sandbox, path, access_key=second["access_key"], secret=second["secret_key"])
        return int(sandbox.counts()["rate_limit_violations"]["coupang"])

    assert violations(per_account=True) == 0
    assert violations(per_account=False) == 3
