"""Lost responses: the platform carried out a create, but its answer never reached us.

The sandbox's ``lost_response_rate`` fault runs a mutating request to the end (the purchase order
or the listing exists, the counters counted it) and then loses the answer: the request is held
past our read timeout, a gateway 502/504 comes back, or the connection is reset. The client sees
exactly what it sees when nothing happened, so the only thing that keeps a retry from buying or
listing twice is the connector's look-up by our key before it creates.

Each test repeats the connector call the way the Celery task's retry does after a
``TransientError`` and checks the sandbox's own counters (``purchase_orders`` per order key,
``listings`` per external SKU): exactly one. The controls send the same create without the
look-up (the connector's own create step) through the same faults and see two or more: the
counters and the fault do catch a double buy.

Coupang's acknowledgement and invoice upload are the other kind of effect: Coupang refuses a
repeat (the box has moved on), so the connector reads the boxes' states after a lost answer
instead of re-sending; the tests count one call and one effect per box, and a control shows the
sandbox refusing the blind re-send as Coupang does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis as redis_lib

from dropship.errors import TransientError
from dropship.platforms.config import PlatformSettings
from dropship.platforms.coupang import CoupangConnector
from dropship.platforms.interfaces import (
    BuyerInfo,
    MarketListingRequest,
    PurchaseOrderLine,
    PurchaseOrderRequest,
    SupplierProduct,
    TrackingUpload,
)
from dropship.platforms.naver import NaverConnector
from dropship.platforms.ownerclan import OwnerClanConnector
from dropship.platforms.registry import connector_for
from dropship.sandbox.suppliers import SupplierWorld
from tests.platforms.hosted_images import market_image_urls

# World time stands still: no order arrival or price step lands between a create and its retry.
pytestmark = [pytest.mark.usefixtures("frozen_world_clock"), pytest.mark.timeout(120)]

T = TypeVar("T")

CLIENT_READ_TIMEOUT_S = 0.5  # our read timeout in these tests...
SANDBOX_HOLD_S = 1.5  # ...is shorter than the time the sandbox holds a lost answer
MAX_TASK_ATTEMPTS = 6  # Celery retries of one logical call (bounded loop)
MODES = ("timeout", "5xx", "reset")

RECEIVER = BuyerInfo(
    name="김철수", phone="010-9876-5432", address="서울특별시 종로구 세종대로 175", zipcode="03154"
)


@pytest.fixture
def make_fast_connector(
    connector_settings: PlatformSettings, redis_url: str
) -> Iterator[Callable[[str], Any]]:
    """The registry's connector with a short read timeout, so a held answer times out fast."""
    http = connector_settings.http.model_copy(update={"read_timeout_s": CLIENT_READ_TIMEOUT_S})
    settings = connector_settings.model_copy(update={"http": http})
    client = redis_lib.Redis.from_url(redis_url)

    def make(account_name: str) -> Any:
        return connector_for(account_name, settings, redis_client=client)

    yield make
    client.close()


def lose_answers(sandbox: Any, platform: str, rate: float, mode: str = "mixed") -> None:
    sandbox.set_faults(
        platform, lost_response_rate=rate, lost_response_mode=mode, timeout_s=SANDBOX_HOLD_S
    )


def like_celery_retries(call: Callable[..., T], *args: Any) -> tuple[T, int]:
    """``call(*args)`` until it returns, as the task's retries would after each
    ``TransientError``; the result and how many attempts failed."""
    failures = 0
    for _ in range(MAX_TASK_ATTEMPTS):
        try:
            return call(*args), failures
        except TransientError:
            failures += 1
    raise AssertionError(f"still failing after {MAX_TASK_ATTEMPTS} attempts")


def attempts_failing(attempts: int, call: Callable[..., object], *args: Any) -> int:
    """Make ``attempts`` calls of ``call(*args)``, each expected to fail transiently; how many
    did."""
    failed = 0
    for _ in range(attempts):
        try:
            call(*args)
        except TransientError:
            failed += 1
    return failed


def lost(sandbox: Any, endpoint: str) -> int:
    count: int = sandbox.counts()["lost_responses"].get(endpoint, 0)
    return count


# ----------------------------------------------------------------------------- suppliers


def ownerclan(make: Callable[[str], Any]) -> OwnerClanConnector:
    conn = make("ownerclan_main")
    assert isinstance(conn, OwnerClanConnector)
    return conn


def orderable(products: Iterator[Any], count: int) -> list[SupplierProduct]:
    found = [
        p
        for p in products
        if isinstance(p, SupplierProduct)
        and p.status == "active"
        and all(o.stock > 0 for o in p.options)
    ][:count]
    assert len(found) == count
    return found


def purchase(key: str, products: list[SupplierProduct]) -> PurchaseOrderRequest:
    lines = tuple(
        PurchaseOrderLine(
            p.supplier_sku, 1, p.options[0].supplier_option_code if p.options else None
        )
        for p in products
    )
    return PurchaseOrderRequest(order_key=key, lines=lines, receiver=RECEIVER)


def supplier_order_keys(sandbox: Any, supplier: str, order_key: str) -> tuple[str, ...]:
    return tuple(o.key for o in SupplierWorld(sandbox.state).orders(supplier, order_key))


@pytest.mark.parametrize("mode", MODES)
def test_ownerclan_retried_place_order_buys_once_when_every_answer_is_lost(
    sandbox: Any, make_fast_connector: Callable[[str], Any], mode: str
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 30})
    conn = ownerclan(make_fast_connector)
    request = purchase(f"ORD-LOST-OC-{mode}", orderable(conn.iter_products(), 2))
    lose_answers(sandbox, "ownerclan", 1.0, mode)  # every createOrder answer, from now on

    result, failures = like_celery_retries(conn.place_order, request)

    assert failures == 1  # the create happened; its answer was lost...
    assert lost(sandbox, "ownerclan:graphql") == 1
    assert sandbox.counts()["purchase_orders"] == {request.order_key: 1}  # ...and only once
    # The retry answers with the orders the lost answer would have carried.
    assert result.already_existed
    assert result.supplier_order_ids == supplier_order_keys(sandbox, "ownerclan", request.order_key)
    assert result.supplier_order_ids  # the supplier's ids, not an empty success


def test_ownerclan_many_orders_at_a_high_lost_rate_each_buy_once(
    sandbox: Any, make_fast_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 30})
    conn = ownerclan(make_fast_connector)
    products = orderable(conn.iter_products(), 8)
    lose_answers(sandbox, "ownerclan", 0.6)  # mixed: held, 5xx or reset, from the seed
    total_failures = 0
    for n, product in enumerate(products):
        request = purchase(f"ORD-LOST-OC-MANY-{n}", [product])
        result, failures = like_celery_retries(conn.place_order, request)
        total_failures += failures
        assert result.already_existed == (failures > 0)
        assert result.supplier_order_ids == supplier_order_keys(
            sandbox, "ownerclan", request.order_key
        )
    counts = sandbox.counts()
    assert total_failures == counts["lost_responses"]["ownerclan:graphql"] >= 2
    assert counts["purchase_orders"] == {f"ORD-LOST-OC-MANY-{n}": 1 for n in range(8)}


def test_control_ownerclan_create_without_lookup_buys_twice(
    sandbox: Any, make_fast_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 30})
    conn = ownerclan(make_fast_connector)
    request = purchase("ORD-LOST-OC-CONTROL", orderable(conn.iter_products(), 1))
    lose_answers(sandbox, "ownerclan", 1.0, "5xx")
    # The same retry sequence, but straight to createOrder: every attempt buys again.
    assert attempts_failing(2, conn._create_order, request) == 2
    assert sandbox.counts()["purchase_orders"] == {request.order_key: 2}


# gentrade (Zentrade) has no order-creation API, so it has no create path to lose an answer
# of: its place_order raises OrderingNotSupportedError (tests/platforms/test_gentrade.py).


# ----------------------------------------------------------------------------- markets


def listing(sku: str, sandbox: Any, market: str) -> MarketListingRequest:
    return MarketListingRequest(
        external_sku=sku,
        name="접이식 캠핑의자",
        sale_price=32_000,
        stock=9,
        category_id="50000156",
        images=market_image_urls(sandbox, market),
        shipping_fee=3_000,
    )


MARKETS = {
    "coupang": ("coupang_main", CoupangConnector, "coupang:seller-products.create"),
    "naver": ("naver_main", NaverConnector, "naver:products.create"),
}


def market(make: Callable[[str], Any], name: str) -> Any:
    account, cls, _ = MARKETS[name]
    conn = make(account)
    assert isinstance(conn, cls)
    return conn


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(MARKETS))
def test_retried_create_listing_lists_once_when_every_answer_is_lost(
    sandbox: Any, make_fast_connector: Callable[[str], Any], name: str, mode: str
) -> None:
    conn = market(make_fast_connector, name)
    if name == "naver":
        conn.find_listing_by_external_sku("warm-up")  # token first (never lost: not a change)
    request = listing(f"lost-{name}-{mode}", sandbox, name)
    lose_answers(sandbox, name, 1.0, mode)

    result, failures = like_celery_retries(conn.create_listing, request)

    assert failures == 1
    assert lost(sandbox, MARKETS[name][2]) == 1
    assert sandbox.counts()["listings"] == {request.external_sku: 1}
    assert result.already_existed and result.external_sku == request.external_sku
    found = conn.find_listing_by_external_sku(request.external_sku)
    assert found is not None and found.market_product_id == result.market_product_id


@pytest.mark.parametrize("name", sorted(MARKETS))
def test_many_listings_at_a_high_lost_rate_each_list_once(
    sandbox: Any, make_fast_connector: Callable[[str], Any], name: str
) -> None:
    conn = market(make_fast_connector, name)
    lose_answers(sandbox, name, 0.6)  # mixed
    skus = [f"lost-many-{name}-{n}" for n in range(8)]
    total_failures = 0
    for sku in skus:
        result, failures = like_celery_retries(conn.create_listing, listing(sku, sandbox, name))
        total_failures += failures
        assert result.already_existed == (failures > 0)
    counts = sandbox.counts()
    assert total_failures == counts["lost_responses"][MARKETS[name][2]] >= 2
    assert counts["listings"] == {sku: 1 for sku in skus}


@pytest.mark.parametrize("name", sorted(MARKETS))
def test_control_create_without_lookup_lists_twice(
    sandbox: Any, make_fast_connector: Callable[[str], Any], name: str
) -> None:
    conn = market(make_fast_connector, name)
    request = listing(f"lost-control-{name}", sandbox, name)
    body = conn._product_body(request)
    lose_answers(sandbox, name, 1.0, "5xx")
    assert attempts_failing(2, conn._create_product, request, body) == 2
    assert sandbox.counts()["listings"] == {request.external_sku: 2}


# ------------------------------------------------- order follow-ups (retried by the HTTP layer)


def add_market_orders(sandbox: Any, name: str, count: int) -> list[str]:
    body = {"count": count, "ordered_at": "2024-03-01T09:00:00+09:00", "spacing_s": 30}
    answer = sandbox.http.post(f"{sandbox.base_url}/_sandbox/{name}/orders", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    ids = answer.json()["shipmentBoxIds" if name == "coupang" else "productOrderIds"]
    return [str(i) for i in ids]


@pytest.mark.parametrize("name", sorted(MARKETS))
def test_acknowledge_and_tracking_upload_converge_when_answers_are_lost(
    sandbox: Any, make_fast_connector: Callable[[str], Any], name: str
) -> None:
    # Naver's confirm/dispatch are marked idempotent, so the HTTP layer repeats them after a lost
    # answer and the repeat must converge. Coupang refuses repeats (see the Coupang tests
    # above), so its connector reads the boxes' states instead; either way every order ends
    # shipped with its own tracking number.
    conn = market(make_fast_connector, name)
    ids = add_market_orders(sandbox, name, 4)
    if name == "naver":
        conn.find_listing_by_external_sku("warm-up")
    lose_answers(sandbox, name, 0.5, "5xx")
    for order_id in ids:
        like_celery_retries(conn.acknowledge, [order_id])
    for n, order_id in enumerate(ids):
        upload = TrackingUpload(order_id, (), "CJ대한통운", f"7700{n:08d}")
        like_celery_retries(conn.upload_tracking, [upload])
    assert sum(sandbox.counts()["lost_responses"].values()) >= 2
    assert shipped_tracking_numbers(sandbox, name, ids) == [f"7700{n:08d}" for n in range(4)]


COUPANG_V4 = "/v2/providers/openapi/apis/api/v4/vendors"


def coupang_box(sandbox: Any, box_id: str) -> dict[str, Any]:
    answer = sandbox.http.get(f"{sandbox.base_url}/_sandbox/coupang/orders", timeout=10).json()
    box: dict[str, Any] = next(o for o in answer["orders"] if str(o["shipmentBoxId"]) == box_id)
    return box


def coupang_calls(sandbox: Any, endpoint: str) -> int:
    count: int = sandbox.counts()["calls"].get("coupang", {}).get(endpoint, 0)
    return count


@pytest.mark.parametrize("mode", MODES)
def test_coupang_acknowledge_after_a_lost_answer_reads_the_box_instead_of_resending(
    sandbox: Any, make_fast_connector: Callable[[str], Any], mode: str
) -> None:
    # Every acknowledgement's answer is lost, so a client that re-sent would never see success
    # (and Coupang would refuse the re-send anyway): only reading the box's state converges.
    conn = market(make_fast_connector, "coupang")
    (box_id,) = add_market_orders(sandbox, "coupang", 1)
    lose_answers(sandbox, "coupang", 1.0, mode)

    conn.acknowledge([box_id])  # no error: the box shows INSTRUCT

    assert lost(sandbox, "coupang:ordersheets.acknowledgement") == 1
    assert coupang_calls(sandbox, "ordersheets.acknowledgement") == 1  # never re-sent
    assert sandbox.counts()["coupang_acknowledgements"] == {box_id: 1}
    assert coupang_box(sandbox, box_id)["status"] == "INSTRUCT"
    conn.acknowledge([box_id])  # a task's retry later: refused by Coupang, seen as done
    assert sandbox.counts()["coupang_acknowledgements"] == {box_id: 1}


@pytest.mark.parametrize("mode", MODES)
def test_coupang_invoice_after_a_lost_answer_reads_the_box_instead_of_resending(
    sandbox: Any, make_fast_connector: Callable[[str], Any], mode: str
) -> None:
    conn = market(make_fast_connector, "coupang")
    (box_id,) = add_market_orders(sandbox, "coupang", 1)
    conn.acknowledge([box_id])
    lose_answers(sandbox, "coupang", 1.0, mode)
    upload = TrackingUpload(box_id, (), "CJ대한통운", "880000000001")

    conn.upload_tracking([upload])  # no error: the box shows DEPARTURE with our invoice
    conn.upload_tracking([upload])  # the task's retry: read first, nothing sent

    assert lost(sandbox, "coupang:orders.invoices") == 1
    assert coupang_calls(sandbox, "orders.invoices") == 1
    assert sandbox.counts()["coupang_invoices"] == {box_id: 1}
    box = coupang_box(sandbox, box_id)
    assert (box["status"], box["invoiceNumber"]) == ("DEPARTURE", "880000000001")


def test_control_coupang_refuses_a_blind_resend_after_a_lost_answer(
    sandbox: Any, make_fast_connector: Callable[[str], Any]
) -> None:
    # What the connector avoids: re-sending the same call after a lost answer. Coupang (and
    # the sandbox) carried the first one out and refuses the repeat.
    conn = market(make_fast_connector, "coupang")
    (box_id,) = add_market_orders(sandbox, "coupang", 1)
    vendor = conn.vendor_id
    ack = {"vendorId": vendor, "shipmentBoxIds": [int(box_id)]}

    def send(method: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"{COUPANG_V4}/{vendor}/{endpoint}"
        answer: dict[str, Any] = conn._call(method, path, json=body, idempotent=False)[1]
        return answer

    lose_answers(sandbox, "coupang", 1.0, "5xx")
    with pytest.raises(TransientError):
        send("PUT", "ordersheets/acknowledgement", ack)
    lose_answers(sandbox, "coupang", 0.0)
    (refused,) = send("PUT", "ordersheets/acknowledgement", ack)["data"]["responseList"]
    assert refused["succeed"] is False
    assert refused["resultMessage"] == "배송상태를 변경할 수 없습니다. 주문내역을 확인해주세요."

    sheet = conn._order_sheet(box_id)
    dto = {
        "shipmentBoxId": int(box_id),
        "orderId": sheet["orderId"],
        "vendorItemId": sheet["orderItems"][0]["vendorItemId"],
        "deliveryCompanyCode": "CJGLS",
        "invoiceNumber": "880000000002",
        "splitShipping": False,
        "preSplitShipped": False,
        "estimatedShippingDate": "",
    }
    invoice = {"vendorId": vendor, "orderSheetInvoiceApplyDtos": [dto]}
    lose_answers(sandbox, "coupang", 1.0, "5xx")
    with pytest.raises(TransientError):
        send("POST", "orders/invoices", invoice)
    lose_answers(sandbox, "coupang", 0.0)
    answer = send("POST", "orders/invoices", invoice)["data"]
    assert answer["responseCode"] == 99
    (entry,) = answer["responseList"]
    assert (entry["resultCode"], entry["retryRequired"]) == ("INVALID_STATUS", False)
    assert sandbox.counts()["coupang_invoices"] == {box_id: 1}  # the lost one, nothing more


def shipped_tracking_numbers(sandbox: Any, name: str, ids: list[str]) -> list[str | None]:
    """Each order's tracking number if the market shows it shipped, else None."""
    answer = sandbox.http.get(f"{sandbox.base_url}/_sandbox/{name}/orders", timeout=10).json()
    if name == "coupang":
        by_id = {str(o["shipmentBoxId"]): o for o in answer["orders"]}
        return [
            by_id[i]["invoiceNumber"] if by_id[i]["status"] == "DEPARTURE" else None for i in ids
        ]
    orders = {o["productOrder"]["productOrderId"]: o for o in answer["productOrders"]}
    return [
        orders[i]["delivery"]["trackingNumber"]
        if orders[i]["productOrder"]["productOrderStatus"] == "DELIVERING"
        else None
        for i in ids
    ]


# ------------------------------------------------------------------------ the fault itself


def test_lost_responses_follow_the_seed_and_spare_reads_and_refusals(sandbox: Any) -> None:
    echo = f"{sandbox.url('coupang')}/_echo"

    def outcomes() -> list[int]:
        lose_answers(sandbox, "coupang", 0.5, "5xx")
        statuses = [
            sandbox.http.post(echo, params={"id": n}, timeout=5).status_code for n in range(20)
        ]
        # Reads are never lost, refusals are answered as they are: nothing was done to lose.
        assert sandbox.http.get(echo, params={"id": "read"}, timeout=5).status_code == 200
        assert sandbox.http.post(echo, params={"status": 400}, timeout=5).status_code == 400
        return statuses

    first = outcomes()
    counts = sandbox.counts()
    # Every POST was carried out, answered or not.
    assert all(counts["echo"][f"coupang:{n}"] == 1 for n in range(20))
    assert counts["lost_responses"]["coupang:_echo"] == sum(s != 200 for s in first)
    assert {s for s in first if s != 200} <= {502, 504}
    assert 2 < first.count(200) < 18  # some lost, some answered
    sandbox.reset()
    assert outcomes() == first  # same seed, same requests: the same answers are lost

    with pytest.raises(AssertionError, match="lost_response_mode"):
        sandbox.set_faults("coupang", lost_response_mode="sometimes")
