"""Naver Commerce connector against the sandbox over real HTTP (loopback), with real Redis.

Orders are created on demand in a fixed past window, so the sandbox's own arrivals (at the
world's "now") never mix into these assertions.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import bcrypt
import pytest
import redis as redis_lib
import requests

from dropship.errors import PermanentError, TransientError
from dropship.platforms.config import PlatformSettings
from dropship.platforms.http import AuthRejectedError
from dropship.platforms.interfaces import MarketConnector, MarketListingRequest, TrackingUpload
from dropship.platforms.naver import PAY_ORDER, NaverConnector, client_secret_sign
from dropship.platforms.ratelimit import DEFAULT_RATE_LIMITS
from dropship.platforms.registry import build_connector
from dropship.sandbox.core import DEFAULT_SANDBOX_RATE_LIMITS, SandboxRateLimit
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS, SANDBOX_SECOND_ACCOUNTS
from tests.platforms.hosted_images import naver_hosted_urls

KST = timezone(timedelta(hours=9))
WINDOW_START = datetime(2024, 3, 1, 9, 0, tzinfo=KST)
WINDOW_END = datetime(2024, 3, 1, 21, 0, tzinfo=KST)
CREDS = SANDBOX_CREDENTIALS["naver"]

# World time stands still unless a test advances it: listing creation times, token expiry and
# the sandbox's own order arrivals (Poisson, at the world's "now", for listed products) cannot
# shift between two requests of a test because the wall clock ticked on.
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("frozen_world_clock")]


# Images on the sandbox's Naver image host: Naver refuses any other URL (set per test).
IMAGES: tuple[str, ...] = ()


@pytest.fixture(autouse=True)
def _listing_images(sandbox: Any) -> None:
    global IMAGES
    IMAGES = naver_hosted_urls(sandbox)


def listing(sku: str = "dsk-naver-1", **kw: Any) -> MarketListingRequest:
    fields: dict[str, Any] = {
        "external_sku": sku,
        "name": "접이식 캠핑의자",
        "sale_price": 32_000,
        "stock": 9,
        "category_id": "50000156",
        "images": IMAGES,
        "shipping_fee": 3_000,
    }
    fields.update(kw)
    return MarketListingRequest(**fields)


@pytest.fixture
def naver(make_connector: Callable[[str], Any]) -> NaverConnector:
    connector = make_connector("naver_main")
    assert isinstance(connector, NaverConnector)
    return connector


def add_orders(sandbox: Any, count: int, **kw: Any) -> list[str]:
    body = {"count": count, "ordered_at": WINDOW_START.isoformat(), "spacing_s": 30, **kw}
    response = requests.post(f"{sandbox.base_url}/_sandbox/naver/orders", json=body, timeout=10)
    assert response.status_code == 200, response.text
    ids: list[str] = response.json()["productOrderIds"]
    return ids


def sandbox_orders(sandbox: Any) -> dict[str, dict[str, Any]]:
    response = requests.get(f"{sandbox.base_url}/_sandbox/naver/orders", timeout=10)
    return {o["productOrder"]["productOrderId"]: o for o in response.json()["productOrders"]}


def calls(sandbox: Any, endpoint: str) -> int:
    counted: int = sandbox.counts()["calls"].get("naver", {}).get(endpoint, 0)
    return counted


def with_credentials(
    settings: PlatformSettings, redis_url: str, **credentials: str
) -> tuple[NaverConnector, redis_lib.Redis]:
    account = settings.account("naver_main").model_copy(deep=True)
    secret_type = type(account.credentials["client_id"])
    for key, value in credentials.items():
        account.credentials[key] = secret_type(value)
    client = redis_lib.Redis.from_url(redis_url)
    connector = build_connector(account, settings, client)
    assert isinstance(connector, NaverConnector)
    return connector, client


# --------------------------------------------------------------------------- auth


def test_client_secret_sign_is_base64_bcrypt_of_id_and_timestamp() -> None:
    sign = client_secret_sign(CREDS["client_id"], CREDS["client_secret"], 1_700_000_000_000)
    hashed = base64.b64decode(sign)
    assert hashed.startswith(CREDS["client_secret"].encode())  # the secret is the salt
    assert bcrypt.checkpw(f"{CREDS['client_id']}_1700000000000".encode(), hashed)


def test_connector_satisfies_the_market_protocol(naver: NaverConnector) -> None:
    assert isinstance(naver, MarketConnector)
    assert CREDS["client_secret"] not in repr(naver)


def test_wrong_secret_is_rejected_with_401(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    wrong_salt = SANDBOX_SECOND_ACCOUNTS["naver"]["client_secret"]  # a valid salt, wrong client
    connector, client = with_credentials(connector_settings, redis_url, client_secret=wrong_salt)
    try:
        with pytest.raises(AuthRejectedError) as caught:
            connector.find_listing_by_external_sku("anything")
    finally:
        client.close()
    assert caught.value.status == 401 and caught.value.code == "GW.AUTHN"
    assert wrong_salt not in str(caught.value)
    assert calls(sandbox, "products.search") == 0  # never got past the token


def test_secret_that_is_not_a_bcrypt_salt_is_a_configuration_error(
    connector_settings: PlatformSettings, redis_url: str
) -> None:
    connector, client = with_credentials(connector_settings, redis_url, client_secret="plain")
    try:
        with pytest.raises(PermanentError, match="bcrypt salt") as caught:
            connector.find_listing_by_external_sku("anything")
    finally:
        client.close()
    assert "plain" not in str(caught.value)


def test_token_endpoint_checks_timestamp_freshness_and_sign(sandbox: Any) -> None:
    url = f"{sandbox.url('naver')}/external/v1/oauth2/token"

    def ask(timestamp_ms: int, sign: str | None = None) -> requests.Response:
        form = {
            "client_id": CREDS["client_id"],
            "timestamp": str(timestamp_ms),
            "client_secret_sign": sign
            or client_secret_sign(CREDS["client_id"], CREDS["client_secret"], timestamp_ms),
            "grant_type": "client_credentials",
            "type": "SELF",
        }
        return requests.post(url, data=form, timeout=10)

    now_ms = int(time.time() * 1000)
    ok = ask(now_ms)
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer" and ok.json()["expires_in"] == 3 * 3600
    stale = ask(now_ms - 10 * 60 * 1000)
    assert stale.status_code == 400 and stale.json()["invalidInputs"][0]["name"] == "timestamp"
    # a sign made for another timestamp does not verify
    replayed = ask(now_ms, client_secret_sign(CREDS["client_id"], CREDS["client_secret"], 1))
    assert replayed.status_code == 401 and replayed.json()["code"] == "GW.AUTHN"
    no_token = requests.get(f"{sandbox.url('naver')}{PAY_ORDER}/last-changed-statuses", timeout=10)
    assert no_token.status_code == 401 and no_token.json()["code"] == "GW.AUTHN"


def test_token_is_cached_across_calls(sandbox: Any, naver: NaverConnector) -> None:
    for n in range(3):
        naver.find_listing_by_external_sku(f"none-{n}")
    assert calls(sandbox, "oauth2.token") == 1 and naver.tokens_issued == 1


def test_expired_token_is_reissued_on_401(sandbox: Any, naver: NaverConnector) -> None:
    naver.find_listing_by_external_sku("before")
    sandbox.advance_clock(3 * 3600 + 60)  # the platform's clock passes the 3 h expiry
    assert naver.find_listing_by_external_sku("after") is None  # 401 -> new token -> retried
    assert naver.tokens_issued == 2 and calls(sandbox, "oauth2.token") == 2
    assert calls(sandbox, "products.search") == 3  # the rejected call plus its retry


class ManualClock:
    """The connector's token clock, moved by the test (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_token_near_expiry_is_renewed_before_use(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    clock = ManualClock()
    client = redis_lib.Redis.from_url(redis_url)
    try:
        naver = build_connector(
            connector_settings.account("naver_main"), connector_settings, client
        )
        assert isinstance(naver, NaverConnector)
        naver._clock = clock  # the token's age is read from this clock only
        naver.find_listing_by_external_sku("first")
        # 2 h 55 min later on both clocks: 5 min left, inside the 10 min refresh margin, and
        # under Naver's 30 min, so the platform hands out a new token.
        clock.now += 3 * 3600 - 300
        sandbox.advance_clock(3 * 3600 - 300)
        naver.find_listing_by_external_sku("second")
        assert naver.tokens_issued == 2
        assert calls(sandbox, "products.search") == 2  # renewed up front: no call was rejected
        clock.now += 60  # a fresh token is not renewed again
        naver.find_listing_by_external_sku("third")
        assert naver.tokens_issued == 2 and calls(sandbox, "oauth2.token") == 2
    finally:
        client.close()


# --------------------------------------------------------------------------- listings


def test_create_listing_is_idempotent_by_seller_management_code(
    sandbox: Any, naver: NaverConnector
) -> None:
    first = naver.create_listing(listing())
    second = naver.create_listing(listing())
    assert first.market_product_id == second.market_product_id
    assert (first.already_existed, second.already_existed) == (False, True)
    counts = sandbox.counts()
    assert counts["listings"] == {"dsk-naver-1": 1}
    assert counts["calls"]["naver"]["products.create"] == 1
    assert naver.find_listing_by_external_sku("never-listed") is None


def raw_create(sandbox: Any, body: dict[str, Any]) -> int:
    """POST a product with a raw token request and a raw create, as a naive client would: no
    search first."""
    timestamp_ms = int(time.time() * 1000)
    token = requests.post(
        f"{sandbox.url('naver')}/external/v1/oauth2/token",
        data={
            "client_id": CREDS["client_id"],
            "timestamp": str(timestamp_ms),
            "client_secret_sign": client_secret_sign(
                CREDS["client_id"], CREDS["client_secret"], timestamp_ms
            ),
            "grant_type": "client_credentials",
            "type": "SELF",
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    response = requests.post(
        f"{sandbox.url('naver')}/external/v2/products",
        json=body,
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    number: int = response.json()["originProductNo"]
    return number


def test_sandbox_counts_a_duplicate_like_naver_creates_it(
    sandbox: Any, naver: NaverConnector, caplog: pytest.LogCaptureFixture
) -> None:
    # Control: Naver accepts a second product with the same seller management code, and so does
    # the sandbox; its counter must see both, or it could not catch a client that registers twice.
    body = naver._product_body(listing("dup-n"))
    first, second = raw_create(sandbox, body), raw_create(sandbox, body)
    assert first != second
    assert sandbox.counts()["listings"] == {"dup-n": 2}

    # The connector then keeps acting on the oldest one, says so, and adds no third listing.
    with caplog.at_level(logging.WARNING, logger="dropship.platforms._market_common"):
        found = naver.create_listing(listing("dup-n"))
    assert found.market_product_id == str(first) and found.already_existed
    assert sandbox.counts()["listings"] == {"dup-n": 2}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "dup-n" in warning.getMessage() and "2 listings" in warning.getMessage()


def test_create_after_a_timed_out_create_returns_the_listing_it_made(
    sandbox: Any, naver: NaverConnector
) -> None:
    # The core's timeout fault answers before the handler runs, so a create that Naver carried
    # out but whose answer never arrived is played by a raw create; the task's retry then calls
    # create_listing again with the same code.
    made = raw_create(sandbox, naver._product_body(listing("timed-out-n")))
    retried = naver.create_listing(listing("timed-out-n"))
    assert retried.market_product_id == str(made) and retried.already_existed
    counts = sandbox.counts()
    assert counts["listings"] == {"timed-out-n": 1}
    assert counts["calls"]["naver"]["products.create"] == 1  # only the raw one


def test_invalid_listing_names_the_field(naver: NaverConnector) -> None:
    with pytest.raises(PermanentError, match="at least one image"):
        naver.create_listing(listing("no-image", images=()))
    body = naver._product_body(listing("bad-category"))
    body["smartstoreChannelProduct"]["channelProductDisplayStatusType"] = "MAYBE"
    status, answer = naver._call("POST", "/external/v2/products", json=body, ok_statuses=(400,))
    assert status == 400
    assert answer["invalidInputs"][0]["name"].endswith("channelProductDisplayStatusType")


def test_price_stock_and_status_changes(naver: NaverConnector) -> None:
    number = naver.create_listing(listing("stock-1")).market_product_id

    def origin() -> dict[str, Any]:
        product: dict[str, Any] = naver._origin_product(number)["originProduct"]
        return product

    naver.update_price(number, 29_900)
    assert origin()["salePrice"] == 29_900
    naver.update_stock(number, 0)
    assert (origin()["stockQuantity"], origin()["statusType"]) == (0, "OUTOFSTOCK")
    naver.update_stock(number, 5)
    assert (origin()["stockQuantity"], origin()["statusType"]) == (5, "SALE")
    naver.suspend_listing(number)
    naver.update_stock(number, 6)  # a suspended listing stays suspended
    assert (origin()["stockQuantity"], origin()["statusType"]) == (6, "SUSPENSION")
    naver.resume_listing(number, 6)
    assert origin()["statusType"] == "SALE"


# --------------------------------------------------------------------------- orders


def changed_statuses(naver: NaverConnector, **params: str) -> requests.Response:
    """A raw last-changed-statuses call with the connector's token."""
    return requests.get(
        f"{naver.http.base_url}{PAY_ORDER}/last-changed-statuses",
        params=params,
        headers={"Authorization": f"Bearer {naver._access_token()}"},
        timeout=10,
    )


def test_empty_window_yields_nothing(sandbox: Any, naver: NaverConnector) -> None:
    assert list(naver.iter_orders(WINDOW_START, WINDOW_END)) == []
    assert calls(sandbox, "product-orders.last-changed-statuses") == 1
    assert calls(sandbox, "product-orders.query") == 0
    # What Naver answers for an empty range: no ``data`` at all (timestamp and traceId only).
    raw = changed_statuses(
        naver, lastChangedFrom=WINDOW_START.isoformat(), lastChangedTo=WINDOW_END.isoformat()
    )
    assert raw.status_code == 200 and "data" not in raw.json() and raw.json()["traceId"]


def test_last_changed_to_is_inclusive_and_windows_stay_half_open(
    sandbox: Any, naver: NaverConnector
) -> None:
    (first, second) = add_orders(sandbox, 2, spacing_s=60)  # changed at 09:00:03 and 09:01:03
    at_second = WINDOW_START + timedelta(minutes=1, seconds=3)
    raw = changed_statuses(
        naver, lastChangedFrom=WINDOW_START.isoformat(), lastChangedTo=at_second.isoformat()
    )
    assert [c["productOrderId"] for c in raw.json()["data"]["lastChangeStatuses"]] == [
        first,
        second,
    ]  # Naver includes a change made exactly at lastChangedTo
    # Our windows are [since, until): the change at ``until`` belongs to the next window only.
    assert [o.market_order_id for o in naver.iter_orders(WINDOW_START, at_second)] == [first]
    later = naver.iter_orders(at_second, at_second + timedelta(minutes=1))
    assert [o.market_order_id for o in later] == [second]


def test_exactly_one_full_page(sandbox: Any, naver: NaverConnector) -> None:
    naver.create_listing(listing())
    ids = add_orders(sandbox, 300, spacing_s=10, seller_management_code="dsk-naver-1")
    orders = list(naver.iter_orders(WINDOW_START, WINDOW_END))
    assert [o.market_order_id for o in orders] == ids
    assert calls(sandbox, "product-orders.last-changed-statuses") == 1  # no "more"
    assert calls(sandbox, "product-orders.query") == 1
    first = orders[0]
    assert first.market == "naver" and first.status == "PAYED"
    assert first.ordered_at == WINDOW_START
    assert first.changed_at == WINDOW_START + timedelta(seconds=3)
    assert first.items[0].external_sku == "dsk-naver-1"
    assert (first.items[0].unit_price, first.total_price) == (32_000, 32_000)


def test_more_continuation_within_one_timestamp(sandbox: Any, naver: NaverConnector) -> None:
    # 301 changes at the very same instant: only moreSequence can tell the pages apart.
    ids = add_orders(sandbox, 301, spacing_s=0)
    orders = list(naver.iter_orders(WINDOW_START, WINDOW_END))
    assert [o.market_order_id for o in orders] == ids
    assert calls(sandbox, "product-orders.last-changed-statuses") == 2
    assert calls(sandbox, "product-orders.query") == 2


def test_window_longer_than_24_hours_is_split(sandbox: Any, naver: NaverConnector) -> None:
    ids = add_orders(sandbox, 3, spacing_s=30 * 3600)  # day 1, day 2, day 3
    orders = list(naver.iter_orders(WINDOW_START, WINDOW_START + timedelta(days=4)))
    assert [o.market_order_id for o in orders] == ids
    assert calls(sandbox, "product-orders.last-changed-statuses") == 4


def test_duplicated_deliveries_are_yielded_once(sandbox: Any, naver: NaverConnector) -> None:
    ids = add_orders(sandbox, 700, spacing_s=1)
    sandbox.set_faults("naver", duplicate_order_rate=1.0)
    raw_ids = [
        change["productOrderId"]
        for page in naver._change_pages(WINDOW_START, WINDOW_END)
        for change in page
    ]
    assert len(raw_ids) > len(set(raw_ids)) == 700  # the sandbox really delivered duplicates
    orders = list(naver.iter_orders(WINDOW_START, WINDOW_END))
    assert [o.market_order_id for o in orders] == ids


def test_malformed_product_order_fails_the_sweep(sandbox: Any, naver: NaverConnector) -> None:
    add_orders(sandbox, 2)
    sandbox.set_faults("naver", malformed_rate=1.0)
    with pytest.raises(TransientError, match="malformed product order"):
        list(naver.iter_orders(WINDOW_START, WINDOW_END))


def test_buyer_data_stays_out_of_repr_and_raw(sandbox: Any, naver: NaverConnector) -> None:
    (product_order_id,) = add_orders(sandbox, 1)
    (order,) = naver.iter_orders(WINDOW_START, WINDOW_END)
    address = sandbox_orders(sandbox)[product_order_id]["productOrder"]["shippingAddress"]
    assert order.receiver is not None and order.receiver.phone == address["tel1"]
    for secret in (address["name"], address["tel1"], address["baseAddress"]):
        assert secret not in repr(order) and secret not in str(order.raw)


def test_dispatch_is_chunked_to_30_per_call(sandbox: Any, naver: NaverConnector) -> None:
    ids = add_orders(sandbox, 61, spacing_s=1)
    naver.upload_tracking(
        [TrackingUpload(i, (), "CJ대한통운", f"6100{n:08d}") for n, i in enumerate(ids)]
    )
    assert sandbox.counts()["naver_dispatch_batch_sizes"] == {"30": 2, "1": 1}
    after = sandbox_orders(sandbox)
    assert {after[i]["productOrder"]["productOrderStatus"] for i in ids} == {"DELIVERING"}
    assert after[ids[-1]]["delivery"]["trackingNumber"] == "610000000060"
    assert after[ids[0]]["delivery"]["deliveryCompany"] == "CJGLS"
    # dispatched orders show up again as changed (at the world's now), with the new status
    now = sandbox.state.now()
    recent = naver.iter_orders(now - timedelta(minutes=5), now + timedelta(minutes=1))
    changed = {o.market_order_id: o for o in recent}
    assert changed[ids[0]].status == "DELIVERING"
    assert changed[ids[0]].raw["lastChangedType"] == "DISPATCHED"


def test_sandbox_refuses_more_than_30_dispatches(sandbox: Any, naver: NaverConnector) -> None:
    ids = add_orders(sandbox, 31, spacing_s=1)
    body = {
        "dispatchProductOrders": [
            {
                "productOrderId": i,
                "deliveryMethod": "DELIVERY",
                "deliveryCompanyCode": "CJGLS",
                "trackingNumber": "1",
                "dispatchDate": datetime.now(KST).isoformat(),
            }
            for i in ids
        ]
    }
    status, answer = naver._call("POST", f"{PAY_ORDER}/dispatch", json=body, ok_statuses=(400,))
    assert status == 400 and answer["invalidInputs"][0]["name"] == "dispatchProductOrders"


def test_acknowledge_confirms_and_reports_failures(sandbox: Any, naver: NaverConnector) -> None:
    ids = add_orders(sandbox, 31, spacing_s=1)
    naver.acknowledge(ids)  # 31 -> two calls
    assert calls(sandbox, "product-orders.confirm") == 2
    assert {sandbox_orders(sandbox)[i]["productOrder"]["placeOrderStatus"] for i in ids} == {"OK"}
    with pytest.raises(PermanentError, match="999999"):
        naver.acknowledge(["999999"])
    with pytest.raises(PermanentError, match="unknown carrier '비둘기택배'"):
        naver.upload_tracking([TrackingUpload(ids[0], (), "비둘기택배", "1")])


def test_lotte_goes_out_as_hyundai_and_lotte_is_refused(
    sandbox: Any, naver: NaverConnector
) -> None:
    first, second = add_orders(sandbox, 2, spacing_s=1)
    naver.upload_tracking([TrackingUpload(first, (), "롯데택배", "240000000001")])
    assert sandbox_orders(sandbox)[first]["delivery"]["deliveryCompany"] == "HYUNDAI"
    body = {
        "dispatchProductOrders": [
            {
                "productOrderId": second,
                "deliveryMethod": "DELIVERY",
                "deliveryCompanyCode": "LOTTE",
                "trackingNumber": "240000000002",
                "dispatchDate": datetime.now(KST).isoformat(),
            }
        ]
    }
    status, answer = naver._call("POST", f"{PAY_ORDER}/dispatch", json=body, ok_statuses=(400,))
    assert status == 400
    (invalid,) = answer["invalidInputs"]
    assert invalid["type"] == "TypeMismatch" and invalid["name"].endswith("deliveryCompanyCode")
    assert sandbox_orders(sandbox)[second]["productOrder"]["productOrderStatus"] == "PAYED"


def test_measured_limits_are_the_sandbox_and_client_defaults(
    sandbox: Any, naver: NaverConnector
) -> None:
    # File id 71297095581: GNCP-GW-RateLimit-Replenish-Rate 2 (per second), burst 4, per
    # application. The sandbox's default; our client default paces at the same 2/s, no burst.
    assert DEFAULT_SANDBOX_RATE_LIMITS["naver"] == SandboxRateLimit(2, 1.0, burst=4)
    assert DEFAULT_RATE_LIMITS["naver"].per_second == 2.0
    assert DEFAULT_RATE_LIMITS["naver"].burst == 1
    naver.find_listing_by_external_sku("warm-up")  # token first
    default = DEFAULT_SANDBOX_RATE_LIMITS["naver"]
    sandbox.set_rate_limit("naver", default.calls, default.period_s, default.burst)
    since = WINDOW_START.isoformat()
    answers = [changed_statuses(naver, lastChangedFrom=since) for _ in range(6)]
    # Back to back: the burst of 4 passes, then 429 GW.RATE_LIMIT (tokens refill at 2/s, so
    # at most one more can slip in while the six requests are sent).
    statuses = [a.status_code for a in answers]
    assert statuses[:4] == [200] * 4 and 429 in statuses[4:]
    limited = next(a for a in answers if a.status_code == 429)
    assert limited.json()["code"] == "GW.RATE_LIMIT"
    assert limited.headers["GNCP-GW-RateLimit-Replenish-Rate"] == "2"
    assert limited.headers["GNCP-GW-RateLimit-Burst-Capacity"] == "4"
    assert limited.headers["GNCP-GW-RateLimit-Remaining"] == "0"


def test_rate_limit_429_carries_naver_headers_and_is_absorbed(
    sandbox: Any, naver: NaverConnector
) -> None:
    naver.find_listing_by_external_sku("warm-up")  # token first
    sandbox.set_rate_limit("naver", calls=5, period_s=1.0, burst=1)
    token = naver._access_token()
    burst = [
        requests.get(
            f"{sandbox.url('naver')}{PAY_ORDER}/last-changed-statuses",
            params={"lastChangedFrom": WINDOW_START.isoformat()},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        for _ in range(3)
    ]
    limited = [r for r in burst if r.status_code == 429]
    assert limited, "the sandbox must answer 429 above its limit"
    assert limited[0].json()["code"] == "GW.RATE_LIMIT"
    assert limited[0].headers["GNCP-GW-RateLimit-Replenish-Rate"] == "5"
    assert int(limited[0].headers["Retry-After"]) >= 1
    for n in range(6):  # the connector's calls go through: limiter + retries
        assert naver.find_listing_by_external_sku(f"none-{n}") is None
    assert sandbox.counts()["rate_limit_violations"]["naver"] >= len(limited)
