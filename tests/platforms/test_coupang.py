"""Coupang Wing connector against the sandbox over real HTTP (loopback), with real Redis.

Orders are created on demand in a fixed past window (``WINDOW_*``), so the sandbox's own
order arrivals (which happen at the world's "now") never mix into these assertions.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis as redis_lib
import requests

from dropship.errors import PermanentError, RateLimitedError, TransientError
from dropship.platforms._market_common import ListingMatch, oldest_listing
from dropship.platforms.config import PlatformSettings
from dropship.platforms.coupang import (
    OPENAPI_V4,
    SELLER_API,
    CoupangConnector,
    coupang_authorization,
    response_ok,
)
from dropship.platforms.http import AuthRejectedError
from dropship.platforms.interfaces import (
    MarketConnector,
    MarketListingRequest,
    ProductOption,
    TrackingUpload,
)
from dropship.platforms.registry import build_connector
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from tests.platforms.hosted_images import coupang_image_urls

KST = timezone(timedelta(hours=9))
WINDOW_START = datetime(2024, 3, 1, 9, 0, tzinfo=KST)
WINDOW_END = datetime(2024, 3, 1, 21, 0, tzinfo=KST)
CREDS = SANDBOX_CREDENTIALS["coupang"]
VENDOR = CREDS["vendor_id"]

# World time stands still unless a test advances it: listing creation times, token expiry and
# the sandbox's own order arrivals (Poisson, at the world's "now", for listed products) cannot
# shift between two requests of a test because the wall clock ticked on.
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("frozen_world_clock")]


# Real, square, decodable images: the sandbox downloads every vendorPath (set per test).
IMAGES: tuple[str, ...] = ()


@pytest.fixture(autouse=True)
def _listing_images(sandbox: Any) -> None:
    global IMAGES
    IMAGES = coupang_image_urls(sandbox)


def listing(sku: str = "dsk-coupang-1", **kw: Any) -> MarketListingRequest:
    fields: dict[str, Any] = {
        "external_sku": sku,
        "name": "프리미엄 텀블러 500ml",
        "sale_price": 15_900,
        "stock": 7,
        "category_id": "56137",
        "images": IMAGES,
    }
    fields.update(kw)
    return MarketListingRequest(**fields)


@pytest.fixture
def coupang(make_connector: Callable[[str], Any]) -> CoupangConnector:
    connector = make_connector("coupang_main")
    assert isinstance(connector, CoupangConnector)
    return connector


def add_orders(sandbox: Any, count: int, **kw: Any) -> list[int]:
    body = {"count": count, "ordered_at": WINDOW_START.isoformat(), "spacing_s": 30, **kw}
    response = requests.post(f"{sandbox.base_url}/_sandbox/coupang/orders", json=body, timeout=10)
    assert response.status_code == 200, response.text
    ids: list[int] = response.json()["shipmentBoxIds"]
    return ids


def sandbox_orders(sandbox: Any) -> dict[str, dict[str, Any]]:
    response = requests.get(f"{sandbox.base_url}/_sandbox/coupang/orders", timeout=10)
    return {str(o["shipmentBoxId"]): o for o in response.json()["orders"]}


def calls(sandbox: Any, endpoint: str) -> int:
    counted: int = sandbox.counts()["calls"].get("coupang", {}).get(endpoint, 0)
    return counted


def signed_get(
    sandbox: Any,
    path: str,
    query: str = "",
    *,
    secret: str | None = None,
    access_key: str | None = None,
    signed_at: datetime | None = None,
    send_query: str | None = None,
) -> requests.Response:
    """A hand-signed request: sign ``query`` but send ``send_query`` (default: the same)."""
    header = coupang_authorization(
        access_key or CREDS["access_key"],
        secret or CREDS["secret_key"],
        "GET",
        path,
        query,
        signed_at or datetime.now(UTC),
    )
    sent = query if send_query is None else send_query
    url = f"{sandbox.url('coupang')}{path}" + (f"?{sent}" if sent else "")
    return requests.get(url, headers={"Authorization": header}, timeout=10)


# --------------------------------------------------------------------------- auth


def test_authorization_header_is_the_documented_hmac() -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    header = coupang_authorization("AK", "SK", "get", "/v2/x", "a=1&b=2", at)
    expected = hmac.new(b"SK", b"250102T030405ZGET/v2/xa=1&b=2", hashlib.sha256).hexdigest()
    assert header == (
        f"CEA algorithm=HmacSHA256, access-key=AK, signed-date=250102T030405Z, signature={expected}"
    )


def test_connector_satisfies_the_market_protocol(coupang: CoupangConnector) -> None:
    assert isinstance(coupang, MarketConnector)
    assert CREDS["secret_key"] not in repr(coupang)


def test_wrong_secret_is_rejected_with_401(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    account = connector_settings.account("coupang_main").model_copy(deep=True)
    account.credentials["secret_key"] = type(account.credentials["secret_key"])("wrong-secret")
    client = redis_lib.Redis.from_url(redis_url)
    try:
        connector = build_connector(account, connector_settings, client)
        with pytest.raises(AuthRejectedError) as caught:
            connector.find_listing_by_external_sku("anything")
    finally:
        client.close()
    assert caught.value.status == 401
    assert "wrong-secret" not in str(caught.value)

    raw = signed_get(sandbox, f"{SELLER_API}/seller-products/1", secret="wrong-secret")
    assert raw.status_code == 401
    assert raw.json() == {"code": "ERROR", "message": "Invalid signature.", "data": None}


def test_stale_or_future_signed_date_and_unknown_key_are_rejected(sandbox: Any) -> None:
    path = f"{SELLER_API}/seller-products/external-vendor-sku-codes/none"
    now = datetime.now(UTC)
    assert signed_get(sandbox, path, signed_at=now - timedelta(minutes=1)).status_code == 200
    stale = signed_get(sandbox, path, signed_at=now - timedelta(minutes=6))
    assert stale.status_code == 401 and "expired" in stale.json()["message"]
    assert signed_get(sandbox, path, signed_at=now + timedelta(minutes=6)).status_code == 401
    unknown = signed_get(sandbox, path, access_key="not-a-key")
    assert unknown.status_code == 401 and unknown.json()["code"] == "ERROR"
    no_header = requests.get(f"{sandbox.url('coupang')}{path}", timeout=10)
    assert no_header.status_code == 401


def test_signature_covers_the_query_string(sandbox: Any) -> None:
    path = f"{OPENAPI_V4}/{VENDOR}/ordersheets"
    query = "createdAtFrom=2024-03-01&createdAtTo=2024-03-01&status=ACCEPT"
    assert signed_get(sandbox, path, query).status_code == 200
    tampered = signed_get(sandbox, path, query, send_query=query.replace("ACCEPT", "INSTRUCT"))
    assert tampered.status_code == 401


# --------------------------------------------------------------------------- listings


def test_create_listing_is_idempotent_by_external_sku(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    first = coupang.create_listing(listing())
    second = coupang.create_listing(listing())
    assert first.market_product_id == second.market_product_id
    assert (first.already_existed, second.already_existed) == (False, True)
    counts = sandbox.counts()
    assert counts["listings"] == {"dsk-coupang-1": 1}
    assert counts["calls"]["coupang"]["seller-products.create"] == 1
    found = coupang.find_listing_by_external_sku("dsk-coupang-1")
    assert found is not None and found.market_product_id == first.market_product_id
    assert coupang.find_listing_by_external_sku("never-listed") is None


def raw_create(sandbox: Any, body: dict[str, Any]) -> int:
    """POST a product with a hand-signed request, as a naive client would: no look-up first."""
    path = f"{SELLER_API}/seller-products"
    header = coupang_authorization(
        CREDS["access_key"], CREDS["secret_key"], "POST", path, "", datetime.now(UTC)
    )
    response = requests.post(
        f"{sandbox.url('coupang')}{path}", json=body, headers={"Authorization": header}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["code"] == "SUCCESS"
    product_id: int = response.json()["data"]
    return product_id


def test_sandbox_counts_a_duplicate_like_coupang_creates_it(
    sandbox: Any, coupang: CoupangConnector, caplog: pytest.LogCaptureFixture
) -> None:
    # Control: Coupang accepts a second product with the same externalVendorSku, and so does the
    # sandbox; its counter must see both, or it could not catch a client that registers twice.
    body = coupang._product_body(listing("dup-1"))
    first, second = raw_create(sandbox, body), raw_create(sandbox, body)
    assert first != second
    assert sandbox.counts()["listings"] == {"dup-1": 2}

    # The connector then keeps acting on the oldest one, says so, and adds no third listing.
    with caplog.at_level(logging.WARNING, logger="dropship.platforms._market_common"):
        found = coupang.create_listing(listing("dup-1"))
    assert found.market_product_id == str(first) and found.already_existed
    assert sandbox.counts()["listings"] == {"dup-1": 2}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "dup-1" in warning.getMessage() and "2 listings" in warning.getMessage()


def test_create_after_a_timed_out_create_returns_the_listing_it_made(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    # The core's timeout fault answers before the handler runs, so a create that Coupang
    # carried out but whose answer never arrived is played by a raw create; the task's retry
    # then calls create_listing again with the same key.
    made = raw_create(sandbox, coupang._product_body(listing("timed-out-1")))
    retried = coupang.create_listing(listing("timed-out-1"))
    assert retried.market_product_id == str(made) and retried.already_existed
    counts = sandbox.counts()
    assert counts["listings"] == {"timed-out-1": 1}
    assert counts["calls"]["coupang"]["seller-products.create"] == 1  # only the raw one


def test_oldest_listing_is_chosen_by_creation_time_not_by_answer_order() -> None:
    at = datetime(2025, 1, 1, 9, 0, tzinfo=KST)
    matches = [
        ListingMatch("300", None, "승인완료"),  # age unknown: after the dated ones
        ListingMatch("200", at + timedelta(hours=1), "승인완료"),
        ListingMatch("100", at, "승인완료"),
    ]
    found = oldest_listing("coupang", "main", "key-1", matches)
    assert found is not None and (found.market_product_id, found.already_existed) == ("100", True)
    assert oldest_listing("coupang", "main", "key-1", matches[:1]) is not None
    assert oldest_listing("coupang", "main", "key-1", []) is None


def test_listings_are_scoped_to_the_vendor(make_connector: Callable[[str], Any]) -> None:
    main, second = make_connector("coupang_main"), make_connector("coupang_second")
    created = main.create_listing(listing("scoped-1"))
    assert second.find_listing_by_external_sku("scoped-1") is None
    with pytest.raises(PermanentError):
        second.update_stock(created.market_product_id, 1)


def test_price_stock_and_suspend_reach_every_vendor_item(coupang: CoupangConnector) -> None:
    options = (
        ProductOption(name="색상", value="블랙", price_delta=0, stock=3),
        ProductOption(name="색상", value="화이트", price_delta=1_000, stock=2),
    )
    created = coupang.create_listing(listing("opt-1", options=options))
    coupang.update_price(created.market_product_id, 20_000)
    coupang.update_stock(created.market_product_id, 4)
    items = coupang._product(created.market_product_id)["items"]
    assert [(i["salePrice"], i["maximumBuyCount"]) for i in items] == [(20_000, 4), (21_000, 4)]
    coupang.suspend_listing(created.market_product_id)
    assert {i["saleStatus"] for i in coupang._product(created.market_product_id)["items"]} == {
        "STOP_SALE"
    }
    coupang.resume_listing(created.market_product_id)
    assert {i["saleStatus"] for i in coupang._product(created.market_product_id)["items"]} == {
        "ON_SALE"
    }


def test_bad_prices_fail_fast_with_a_clear_message(sandbox: Any, coupang: CoupangConnector) -> None:
    with pytest.raises(PermanentError, match="multiple of 10"):
        coupang.create_listing(listing("bad-price", sale_price=15_905))
    with pytest.raises(PermanentError, match="numeric id"):
        coupang.update_price("not-a-number", 1_000)
    assert sandbox.counts()["calls"].get("coupang", {}).get("seller-products.create", 0) == 0


# --------------------------------------------------------------------------- orders


def test_empty_window_yields_nothing(sandbox: Any, coupang: CoupangConnector) -> None:
    assert list(coupang.iter_orders(WINDOW_START, WINDOW_END)) == []
    # one page per status (ACCEPT, INSTRUCT), no continuation
    assert calls(sandbox, "ordersheets.list") == 2


def test_exactly_one_full_page(sandbox: Any, coupang: CoupangConnector) -> None:
    coupang.create_listing(listing())
    ids = add_orders(sandbox, 50, external_sku="dsk-coupang-1")
    orders = list(coupang.iter_orders(WINDOW_START, WINDOW_END))
    assert [o.market_order_id for o in orders] == [str(i) for i in ids]
    assert calls(sandbox, "ordersheets.list") == 2  # a full page, then no nextToken
    first = orders[0]
    assert first.market == "coupang" and first.status == "ACCEPT"
    assert first.ordered_at == WINDOW_START
    assert first.items[0].external_sku == "dsk-coupang-1"
    assert first.items[0].unit_price == 15_900 and first.items[0].quantity == 1


def test_next_token_continuation(sandbox: Any, coupang: CoupangConnector) -> None:
    ids = add_orders(sandbox, 51)
    orders = list(coupang.iter_orders(WINDOW_START, WINDOW_END))
    assert [o.market_order_id for o in orders] == [str(i) for i in ids]
    assert calls(sandbox, "ordersheets.list") == 3  # ACCEPT: 50 + 1, INSTRUCT: empty


def test_window_is_half_open_and_split_under_24_hours(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    ids = add_orders(sandbox, 3, spacing_s=3600)  # 09:00, 10:00, 11:00
    since, until = WINDOW_START + timedelta(hours=1), WINDOW_START + timedelta(hours=2)
    assert [o.market_order_id for o in coupang.iter_orders(since, until)] == [str(ids[1])]
    long_window = list(coupang.iter_orders(WINDOW_START - timedelta(days=2), WINDOW_END))
    assert len(long_window) == 3
    with pytest.raises(PermanentError, match="timezone-aware"):
        list(coupang.iter_orders(datetime(2024, 3, 1), datetime(2024, 3, 2)))


def test_duplicated_deliveries_are_yielded_once(sandbox: Any, coupang: CoupangConnector) -> None:
    ids = add_orders(sandbox, 120)
    sandbox.set_faults("coupang", duplicate_order_rate=1.0)
    raw_ids = [r["shipmentBoxId"] for r in coupang._order_pages(WINDOW_START, WINDOW_END, "ACCEPT")]
    assert len(raw_ids) > len(set(raw_ids)) == 120  # the sandbox really delivered duplicates
    orders = list(coupang.iter_orders(WINDOW_START, WINDOW_END))
    assert [o.market_order_id for o in orders] == [str(i) for i in ids]


def test_malformed_order_sheet_fails_the_sweep_instead_of_skipping(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    add_orders(sandbox, 3)
    sandbox.set_faults("coupang", malformed_rate=1.0)
    with pytest.raises(TransientError, match="malformed order sheet"):
        list(coupang.iter_orders(WINDOW_START, WINDOW_END))


def test_buyer_data_stays_out_of_repr_and_raw(sandbox: Any, coupang: CoupangConnector) -> None:
    (box_id,) = add_orders(sandbox, 1)
    (order,) = coupang.iter_orders(WINDOW_START, WINDOW_END)
    name = sandbox_orders(sandbox)[str(box_id)]["receiver"]["name"]
    assert order.receiver is not None and order.receiver.name == name
    assert name not in repr(order) and name not in str(order.raw)
    assert "receiver" not in order.raw and order.raw["orderId"]


def test_acknowledge_then_invoice_upload(sandbox: Any, coupang: CoupangConnector) -> None:
    ids = [str(i) for i in add_orders(sandbox, 55)]
    coupang.acknowledge(ids)  # 55 ids -> two calls (<= 50 each)
    assert calls(sandbox, "ordersheets.acknowledgement") == 2
    assert {sandbox_orders(sandbox)[i]["status"] for i in ids} == {"INSTRUCT"}
    coupang.acknowledge(ids[:1])  # repeating is harmless: refused by Coupang, seen as done
    assert calls(sandbox, "ordersheets.acknowledgement") == 3
    assert sandbox.counts()["coupang_acknowledgements"][ids[0]] == 1  # no second effect

    coupang.upload_tracking(
        [TrackingUpload(i, (), "CJ대한통운", f"5500{n:08d}") for n, i in enumerate(ids[:2])]
    )
    after = sandbox_orders(sandbox)
    assert [after[i]["status"] for i in ids[:2]] == ["DEPARTURE", "DEPARTURE"]
    assert after[ids[0]]["invoiceNumber"] == "550000000000"
    assert after[ids[0]]["deliveryCompanyName"] == "CJ 대한통운"  # a name, as order sheets show
    assert after[ids[2]]["status"] == "INSTRUCT"


def test_invoice_before_acknowledgement_and_unknown_carrier_fail(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    (box_id,) = add_orders(sandbox, 1)
    with pytest.raises(PermanentError, match=str(box_id)):
        coupang.upload_tracking([TrackingUpload(str(box_id), (), "HANJIN", "1234")])
    with pytest.raises(PermanentError, match="unknown carrier '비둘기택배'"):
        coupang.upload_tracking([TrackingUpload(str(box_id), (), "비둘기택배", "1234")])
    coupang.acknowledge([str(box_id)])
    twice = [TrackingUpload(str(box_id), (), "HANJIN", n) for n in ("100000000001", "100000000002")]
    with pytest.raises(PermanentError, match="more than one tracking upload"):
        coupang.upload_tracking(twice)
    assert sandbox_orders(sandbox)[str(box_id)]["status"] == "INSTRUCT"  # nothing was sent


def test_sandbox_429s_are_absorbed_by_retries(sandbox: Any, coupang: CoupangConnector) -> None:
    sandbox.set_rate_limit("coupang", calls=5, period_s=1.0, burst=1)
    for n in range(8):
        assert coupang.find_listing_by_external_sku(f"none-{n}") is None
    counts = sandbox.counts()
    assert counts["rate_limit_violations"]["coupang"] > 0  # real 429s happened...
    assert counts["calls"]["coupang"]["seller-products.by-external-sku"] > 8  # ...and were retried
    # ...without ever looking like sustained excess: the client backed off on each 429.
    assert "coupang_blocks" not in counts and throttle(sandbox)["blocked_s"] == {}


# --------------------------------------------------------------------------- Coupang's rules


def throttle(sandbox: Any, **policy: Any) -> dict[str, Any]:
    url = f"{sandbox.base_url}/_sandbox/coupang/throttle"
    if policy:
        answer = requests.post(url, json=policy, timeout=10)
    else:
        answer = requests.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    return state


def test_sustained_excess_blocks_the_vendor_for_minutes_of_world_time(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    # Coupang: above the per-vendor rate, 429, and the block is lifted "within minutes" once the
    # rate is back to normal. The sandbox's figures (documented decision): 5 refused calls within
    # 10 s block the vendor for 300 s of world time in this test (20 by default).
    (box_id,) = add_orders(sandbox, 1)
    throttle(sandbox, excess_calls=5, excess_window_s=10, block_s=300)
    sandbox.set_rate_limit("coupang", calls=1, period_s=60.0, burst=1)
    path = f"{SELLER_API}/seller-products/external-vendor-sku-codes/none"
    statuses = [signed_get(sandbox, path).status_code for _ in range(7)]
    assert statuses[0] == 200 and statuses[1:] == [429] * 6
    blocked = throttle(sandbox)["blocked_s"]
    assert set(blocked) == {VENDOR} and 299 < blocked[VENDOR] <= 300
    throttle(sandbox, excess_calls=100)  # from here on, calls in the block do not extend it

    # A block, not a bucket that refills: with the limit lifted (a fresh, full bucket) every call
    # of the vendor is still refused, with a Retry-After of the block's remaining minutes...
    sandbox.set_rate_limit("coupang", calls=1000, period_s=1.0, burst=100)
    refused = signed_get(sandbox, path)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 299
    assert refused.json()["code"] == "ERROR" and "Too Many Requests" in refused.json()["message"]
    # ...and the connector turns it into a re-schedule after the block, not a tight retry loop.
    before = calls(sandbox, "seller-products.by-external-sku")
    with pytest.raises(RateLimitedError) as caught:
        coupang.find_listing_by_external_sku("none")
    assert caught.value.retry_after >= 299
    assert calls(sandbox, "seller-products.by-external-sku") == before + 1
    # Our shared limiter took the Retry-After: every call of the account now waits for the block
    # to end without reaching Coupang, and a refused acknowledgement reads no box states.
    with pytest.raises(RateLimitedError):
        coupang.acknowledge([str(box_id)])
    assert calls(sandbox, "ordersheets.acknowledgement") == 0
    assert calls(sandbox, "ordersheets.get") == 0
    # Another vendor is not blocked (Coupang throttles per vendorId).
    assert throttle(sandbox)["blocked_s"].keys() == {VENDOR}

    sandbox.advance_clock(290)  # world time: still inside the block
    assert signed_get(sandbox, path).status_code == 429
    sandbox.advance_clock(11)
    assert signed_get(sandbox, path).status_code == 200
    assert throttle(sandbox)["blocked_s"] == {}
    assert sandbox.counts()["coupang_blocks"] == {VENDOR: 1}


def test_a_rate_limited_acknowledgement_reschedules_without_touching_the_boxes(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    # A 429 means Coupang did nothing: the task re-schedules, and neither a re-send nor a state
    # read reaches Coupang before the Retry-After (the shared limiter holds them back).
    (box_id,) = add_orders(sandbox, 1)
    sandbox.set_rate_limit("coupang", calls=1, period_s=60.0, burst=1)
    assert signed_get(sandbox, f"{OPENAPI_V4}/{VENDOR}/ordersheets/{box_id}").status_code == 200
    with pytest.raises(RateLimitedError):
        coupang.acknowledge([str(box_id)])
    assert calls(sandbox, "ordersheets.acknowledgement") == 1
    assert calls(sandbox, "ordersheets.get") == 1  # only the call that used up the bucket


def test_excessive_calls_during_a_block_extend_it(sandbox: Any) -> None:
    throttle(sandbox, excess_calls=3, excess_window_s=10, block_s=300)
    sandbox.set_rate_limit("coupang", calls=1, period_s=60.0, burst=1)
    path = f"{SELLER_API}/seller-products/external-vendor-sku-codes/none"
    assert [signed_get(sandbox, path).status_code for _ in range(4)] == [200, 429, 429, 429]
    sandbox.advance_clock(200)
    assert throttle(sandbox)["blocked_s"][VENDOR] == pytest.approx(100, abs=1)
    # Still hammering: the block is not lifted but starts over ("수분 ... 이내" only once the
    # rate is back within the limit).
    assert [signed_get(sandbox, path).status_code for _ in range(3)] == [429] * 3
    assert throttle(sandbox)["blocked_s"][VENDOR] == pytest.approx(300, abs=1)


def test_envelope_code_is_accepted_as_string_or_number() -> None:
    assert response_ok({"code": "200"}) and response_ok({"code": 200})
    assert not response_ok({"code": "ERROR"}) and not response_ok({"code": 400})
    assert not response_ok({})


def send_ack(coupang: CoupangConnector, box_ids: list[Any]) -> dict[str, Any]:
    """A raw acknowledgement, as a client without the state check would send it."""
    _, body = coupang._call(
        "PUT",
        f"{OPENAPI_V4}/{VENDOR}/ordersheets/acknowledgement",
        json={"vendorId": VENDOR, "shipmentBoxIds": box_ids},
        idempotent=False,
    )
    return body


def send_invoices(coupang: CoupangConnector, dtos: list[dict[str, Any]]) -> dict[str, Any]:
    _, body = coupang._call(
        "POST",
        f"{OPENAPI_V4}/{VENDOR}/orders/invoices",
        json={"vendorId": VENDOR, "orderSheetInvoiceApplyDtos": dtos},
        idempotent=False,
        ok_statuses=(400,),
    )
    return body


def test_sandbox_acknowledges_only_accept_boxes_as_coupang_words_it(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    first, second = add_orders(sandbox, 2)
    ok = send_ack(coupang, [first])
    assert ok["code"] == "200" and ok["data"]["responseCode"] == 0
    # A blind re-send: the box is INSTRUCT now, and Coupang refuses it (responseCode 99).
    again = send_ack(coupang, [first])["data"]
    assert again["responseCode"] == 99
    (entry,) = again["responseList"]
    assert entry["shipmentBoxId"] == first and entry["succeed"] is False
    assert entry["resultMessage"] == "배송상태를 변경할 수 없습니다. 주문내역을 확인해주세요."
    mixed = send_ack(coupang, [second, 999_999])["data"]
    assert mixed["responseCode"] == 1 and "Partial errors" in mixed["responseMessage"]
    missing = next(r for r in mixed["responseList"] if r["shipmentBoxId"] == 999_999)
    assert missing["resultCode"] == "NOT_FOUND_SHIPMENT_BOX"
    assert sandbox.counts()["coupang_acknowledgements"] == {str(first): 1, str(second): 1}


def test_sandbox_takes_invoices_only_for_instruct_boxes(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    accept, instruct, other = add_orders(sandbox, 3)
    coupang.acknowledge([str(instruct), str(other)])
    sheets = {b: coupang._order_sheet(str(b)) for b in (accept, instruct, other)}

    def dto(box: int, number: str, **kw: Any) -> dict[str, Any]:
        sheet = sheets[box]
        return {
            "shipmentBoxId": box,
            "orderId": sheet["orderId"],
            "vendorItemId": sheet["orderItems"][0]["vendorItemId"],
            "deliveryCompanyCode": "CJGLS",
            "invoiceNumber": number,
            "splitShipping": False,
            "preSplitShipped": False,
            "estimatedShippingDate": "",
            **kw,
        }

    def only(body: dict[str, Any]) -> dict[str, Any]:
        (entry,) = body["data"]["responseList"]
        result: dict[str, Any] = entry
        return result

    on_accept = only(send_invoices(coupang, [dto(accept, "111100000001")]))
    assert (on_accept["resultCode"], on_accept["retryRequired"]) == ("INVALID_STATUS", False)
    assert on_accept["succeed"] is False

    done = send_invoices(coupang, [dto(instruct, "111100000002")])
    assert done["code"] == "200" and done["data"]["responseCode"] == 0
    resent = send_invoices(coupang, [dto(instruct, "111100000002")])  # blind re-send
    assert resent["data"]["responseCode"] == 99
    assert (only(resent)["resultCode"], only(resent)["retryRequired"]) == ("INVALID_STATUS", False)
    assert sandbox.counts()["coupang_invoices"] == {str(instruct): 1}

    duplicate = only(send_invoices(coupang, [dto(other, "111100000002")]))
    assert duplicate["resultCode"] == "DUPLICATE_INVOICE_NUMBER"
    merged = send_invoices(coupang, [dto(other, "111100000003", deliveryCompanyCode="KOREX")])
    assert merged["code"] == 400  # a struck-through (merged) carrier is not in Coupang's table
    assert sandbox_orders(sandbox)[str(other)]["status"] == "INSTRUCT"


def test_repeated_invoice_upload_converges_and_a_different_invoice_is_refused(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    (box_id,) = add_orders(sandbox, 1)
    coupang.acknowledge([str(box_id)])
    upload = TrackingUpload(str(box_id), (), "롯데택배", "320000000001")
    coupang.upload_tracking([upload])
    coupang.upload_tracking([upload])  # a task's retry: the box already shows this invoice
    assert calls(sandbox, "orders.invoices") == 1  # read first, not re-sent
    assert sandbox.counts()["coupang_invoices"] == {str(box_id): 1}
    assert sandbox_orders(sandbox)[str(box_id)]["deliveryCompanyName"] == "롯데택배"
    with pytest.raises(PermanentError, match=f"{box_id} is DEPARTURE with another invoice"):
        coupang.upload_tracking([TrackingUpload(str(box_id), (), "롯데택배", "320000000002")])


def test_an_upload_with_the_stored_order_id_sends_without_reading_the_boxes(
    sandbox: Any, coupang: CoupangConnector
) -> None:
    ids = [str(i) for i in add_orders(sandbox, 3)]
    coupang.acknowledge(ids[:2])  # the third stays ACCEPT: not ready for an invoice
    sheets = sandbox_orders(sandbox)

    def upload(box: str, number: str) -> TrackingUpload:
        items = tuple(str(i["vendorItemId"]) for i in sheets[box]["orderItems"])
        return TrackingUpload(
            box, items, "CJ대한통운", number, market_group_id=str(sheets[box]["orderId"])
        )

    reads = calls(sandbox, "ordersheets.get")
    coupang.upload_tracking([upload(ids[0], "660000000001"), upload(ids[1], "660000000002")])
    assert calls(sandbox, "ordersheets.get") == reads  # no read: one call for both boxes
    assert calls(sandbox, "orders.invoices") == 1
    after = sandbox_orders(sandbox)
    assert [after[i]["invoiceNumber"] for i in ids[:2]] == ["660000000001", "660000000002"]
    # A task's retry after a lost answer: refused as already done, read, seen as ours.
    coupang.upload_tracking([upload(ids[0], "660000000001")])
    assert sandbox.counts()["coupang_invoices"][ids[0]] == 1
    # Refusals name the box and the state it is in.
    with pytest.raises(PermanentError, match=f"{ids[2]} \\(INVALID_STATUS, box is ACCEPT\\)"):
        coupang.upload_tracking([upload(ids[2], "660000000003")])
    with pytest.raises(PermanentError, match=f"{ids[0]} \\(INVALID_STATUS, box is DEPARTURE\\)"):
        coupang.upload_tracking([upload(ids[0], "660000000009")])
    assert after[ids[2]]["status"] == "ACCEPT"


def test_acknowledging_an_unknown_box_names_it(sandbox: Any, coupang: CoupangConnector) -> None:
    (box_id,) = add_orders(sandbox, 1)
    with pytest.raises(PermanentError, match="999999 \\(NOT_FOUND_SHIPMENT_BOX\\)") as caught:
        coupang.acknowledge([str(box_id), "999999"])
    assert str(box_id) not in str(caught.value)  # the known box was acknowledged
    assert sandbox_orders(sandbox)[str(box_id)]["status"] == "INSTRUCT"
