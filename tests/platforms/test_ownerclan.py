"""OwnerClan connector against the sandbox over real HTTP: JWT auth, relay paging, orders."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, ClassVar

import jwt
import pytest
import redis as redis_lib
import requests
from pydantic import SecretStr

from dropship.errors import PermanentError, RateLimitedError, TransientError
from dropship.platforms.config import PlatformSettings
from dropship.platforms.http import AuthRejectedError
from dropship.platforms.interfaces import (
    BuyerInfo,
    InvalidRecord,
    PurchaseOrderLine,
    PurchaseOrderRequest,
    SupplierProduct,
)
from dropship.platforms.ownerclan import OwnerClanConnector, normalise_item
from dropship.platforms.registry import build_connector
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.ownerclan import CARRIER_CODES, epoch_ms, item_state
from dropship.sandbox.suppliers import SupplierWorld

# World time stands still unless a test advances it: prices, updatedAt stamps and tracking delays
# compared across requests cannot change between them because a wall-clock hour ticked over.
pytestmark = pytest.mark.usefixtures("frozen_world_clock")

RECEIVER = BuyerInfo(
    name="김철수", phone="010-9876-5432", address="서울특별시 종로구 세종대로 175", zipcode="03154"
)


def connector(make_connector: Callable[[str], Any], page_size: int | None = None) -> Any:
    conn = make_connector("ownerclan_main")
    assert isinstance(conn, OwnerClanConnector)
    if page_size is not None:
        conn.page_size = page_size
    return conn


def token(sandbox: Any) -> str:
    creds = SANDBOX_CREDENTIALS["ownerclan"]
    response = requests.post(
        f"{sandbox.base_url}/ownerclan/auth",
        json={"service": "ownerclan", "userType": "seller", **creds},
        timeout=5,
    )
    assert response.status_code == 200
    return response.text


def graphql(sandbox: Any, bearer: str, query: str, variables: dict[str, Any] | None = None) -> Any:
    return requests.post(
        f"{sandbox.base_url}/ownerclan/v1/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=5,
    )


def order_request(key: str, products: list[SupplierProduct]) -> PurchaseOrderRequest:
    lines = tuple(
        PurchaseOrderLine(
            p.supplier_sku, 2, f"{p.options[0].name}:{p.options[0].value}" if p.options else None
        )
        for p in products
    )
    return PurchaseOrderRequest(order_key=key, lines=lines, receiver=RECEIVER)


def active_products(conn: OwnerClanConnector, count: int) -> list[SupplierProduct]:
    products = [
        p
        for p in conn.iter_products()
        if isinstance(p, SupplierProduct)
        and p.status == "active"
        and all(o.stock >= 2 for o in p.options)  # orders take 2
    ]
    assert len(products) >= count
    return products[:count]


# ---------------------------------------------------------------------------- auth


def test_wrong_password_is_rejected_without_leaking_it(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    account = connector_settings.accounts["ownerclan_main"]
    wrong = account.model_copy(
        update={"credentials": {**account.credentials, "password": SecretStr("not-the-password")}}
    )
    client = redis_lib.Redis.from_url(redis_url)
    conn = build_connector(wrong, connector_settings, client)
    with pytest.raises(AuthRejectedError) as caught:
        next(iter(conn.iter_products()))
    assert caught.value.status == 401
    assert "not-the-password" not in str(caught.value)
    assert sandbox.counts().get("ownerclan_logins", {}) == {}
    client.close()


def test_forged_or_missing_jwt_is_rejected(sandbox: Any) -> None:
    query = "{ allItems(first: 1) { edges { cursor } } }"
    good = token(sandbox)
    assert graphql(sandbox, good, query).status_code == 200
    claims = jwt.decode(good, options={"verify_signature": False})
    forged = jwt.encode(claims, "some-other-secret-of-a-decent-length-0123", algorithm="HS256")
    assert graphql(sandbox, forged, query).status_code == 401
    assert graphql(sandbox, "", query).status_code == 401
    bad_login = requests.post(
        f"{sandbox.base_url}/ownerclan/auth",
        json={
            "service": "ownerclan",
            "userType": "seller",
            "username": "sandbox-seller",
            "password": "wrong",
        },
        timeout=5,
    )
    assert bad_login.status_code == 401


def test_expired_token_is_renewed_once(sandbox: Any, make_connector: Callable[[str], Any]) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 3})
    conn = connector(make_connector)
    assert conn.get_product("W00000000") is not None
    stale = token(sandbox)
    # Past the 30-day TTL in world time: the cached token and the one above are now expired.
    sandbox.advance_clock(31 * 86_400)
    assert graphql(sandbox, stale, '{ item(key: "W00000000") { key } }').status_code == 401
    assert conn.get_product("W00000001") is not None  # 401 -> login again -> retried
    logins = sandbox.counts()["ownerclan_logins"]["_total"]
    assert logins == 3  # connector, helper above, connector's renewal


# ---------------------------------------------------------------------------- paging


@pytest.mark.parametrize(
    ("size", "page_size", "expected_pages"), [(6, 3, [3, 3]), (7, 3, [3, 3, 1])]
)
def test_paging_follows_end_cursor_exactly(
    sandbox: Any,
    make_connector: Callable[[str], Any],
    size: int,
    page_size: int,
    expected_pages: list[int],
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": size})
    conn = connector(make_connector, page_size)
    pages = list(conn.iter_item_pages())
    assert [len(p) for p in pages] == expected_pages  # no trailing empty page
    keys = [node["key"] for page in pages for node in page]
    assert keys == [f"W{i:08d}" for i in range(size)]
    assert sandbox.counts()["calls"]["ownerclan"]["graphql"] == len(expected_pages)


def test_empty_catalog_gives_one_empty_page(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 0})
    conn = connector(make_connector)
    assert list(conn.iter_item_pages()) == [[]]
    assert list(conn.iter_products()) == []


def test_first_over_1000_is_rejected_like_the_real_api(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    body = graphql(sandbox, token(sandbox), "{ allItems(first: 1001) { edges { cursor } } }").json()
    assert body["data"] is None
    assert "1000" in body["errors"][0]["message"]
    conn = connector(make_connector)
    with pytest.raises(PermanentError, match="1000"):
        next(iter(conn.iter_item_pages(first=1001)))
    assert len(next(iter(conn.iter_item_pages(first=1000)))) == 500  # the default world


def test_the_page_rows_cap_holds_each_page_to_it(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    """``platforms.page_rows`` (the memory budget sets it) is the most rows one page holds:
    OwnerClan's pages shrink to it; Domeggook's 200 stay under its own maximum."""
    from dropship.platforms.domeggook import DomeggookConnector
    from dropship.platforms.registry import connector_for

    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 60})
    capped = connector_settings.model_copy(update={"page_rows": 25})
    client = redis_lib.Redis.from_url(redis_url)
    conn = connector_for("ownerclan_main", capped, redis_client=client)
    assert isinstance(conn, OwnerClanConnector) and conn.page_size == 25
    assert [len(page) for page in conn.iter_item_pages()] == [25, 25, 10]
    domeggook = connector_for("domeggook_main", capped, redis_client=client)
    assert isinstance(domeggook, DomeggookConnector) and domeggook.page_size == 25
    wide = connector_settings.model_copy(update={"page_rows": 5000})
    assert connector_for("domeggook_main", wide, redis_client=client).page_size == 200
    assert connector_for("ownerclan_main", wide, redis_client=client).page_size == 1000
    uncapped = connector_for("ownerclan_main", connector_settings, redis_client=client)
    assert uncapped.page_size == 1000
    client.close()


def test_date_window_with_cursor_continuation(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 60})
    conn = connector(make_connector, page_size=5)
    everything = [p for p in conn.iter_products() if isinstance(p, SupplierProduct)]
    stamps = sorted({p.updated_at for p in everything if p.updated_at})
    since, until = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    expected = [p.supplier_sku for p in everything if p.updated_at and p.updated_at >= since]
    got = [p.supplier_sku for p in conn.iter_products(since=since)]
    assert got == expected and 5 < len(got) < 60  # several pages, filtered
    window = [
        node["key"] for page in conn.iter_item_pages(since=since, until=until) for node in page
    ]
    assert window == [
        p.supplier_sku for p in everything if p.updated_at and since <= p.updated_at <= until
    ]


# ---------------------------------------------------------------------------- products


def test_products_are_normalised_with_options(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 40})
    conn = connector(make_connector)
    products = [p for p in conn.iter_products() if isinstance(p, SupplierProduct)]
    assert len(products) == 40
    with_options = [p for p in products if p.options]
    assert with_options, "the seeded world has products with options"
    for product in with_options:
        assert product.stock == sum(o.stock for o in product.options)
        raw_prices = {
            tuple((a["name"], a["value"]) for a in o["optionAttributes"]): o["price"]
            for o in product.raw["options"]
        }
        for option in product.options:
            assert (
                raw_prices[((option.name, option.value),)]
                == product.cost_price + option.price_delta
            )
    assert all(p.updated_at and p.updated_at.tzinfo is UTC for p in products)
    assert all(p.name and "[" in p.name for p in products)  # "[브랜드] 형용사 명사"
    assert conn.get_product("W99999999") is None


def test_prices_move_only_when_the_world_clock_does(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 60})
    conn = connector(make_connector, page_size=25)
    world = SupplierWorld(sandbox.state)

    def collected() -> dict[str, tuple[int, datetime | None]]:
        records = conn.iter_products()
        return {
            p.supplier_sku: (p.cost_price, p.updated_at)
            for p in records
            if isinstance(p, SupplierProduct)
        }

    def generated() -> dict[str, tuple[int, datetime | None]]:
        items = (world.item("ownerclan", i) for i in range(60))
        return {f"W{i.index:08d}": (i.price, i.updated_at) for i in items if i is not None}

    before = collected()
    assert before == collected() == generated()  # frozen clock: same world instant throughout
    sandbox.advance_clock(14 * 86_400)  # two world weeks: the drift step the test controls
    after = collected()
    assert after == generated()
    # Each product drifts in the skipped fortnight with probability >= 1/2, independently:
    # "none of 60" is a 2**-60 event.
    assert {sku for sku in before if after[sku] != before[sku]}


def test_malformed_records_come_back_as_invalid(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 50})
    sandbox.set_faults("ownerclan", malformed_rate=0.3)
    records = list(connector(make_connector).iter_products())
    invalid = [r for r in records if isinstance(r, InvalidRecord)]
    assert len(records) == 50  # nothing dropped
    assert 5 <= len(invalid) <= 25
    assert all(r.supplier_sku and r.reason and r.raw["key"] == r.supplier_sku for r in invalid)


# ---------------------------------------------------------------------------- orders


def test_same_order_key_buys_once(sandbox: Any, make_connector: Callable[[str], Any]) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 40})
    conn = connector(make_connector)
    request = order_request("ORD-OC-1", active_products(conn, 3))
    first = conn.place_order(request)
    again = conn.place_order(request)  # a redelivered forward_order task
    assert first.supplier_order_ids and not first.already_existed
    assert again.already_existed and again.supplier_order_ids == first.supplier_order_ids
    assert sandbox.counts()["purchase_orders"]["ORD-OC-1"] == 1
    # The counter does see double buys: createOrder sent twice without the lookup.
    bearer = token(sandbox)
    mutation = "mutation($i: OrderInput!) { createOrder(input: $i) { key } }"
    variables = {
        "i": {
            "products": [
                {
                    "itemKey": request.lines[0].supplier_sku,
                    "quantity": 1,
                    "optionAttributes": [line.split(":", 1)[1]]
                    if (line := request.lines[0].option)
                    else [],
                }
            ],
            "recipient": {
                "name": "x",
                "phoneNumber": "0",
                "destinationAddress": {"addr1": "a", "postalCode": "1"},
            },
            "note": "ORD-RAW",
        }
    }
    for _ in range(2):
        assert graphql(sandbox, bearer, mutation, variables).json()["data"]["createOrder"]
    assert sandbox.counts()["purchase_orders"]["ORD-RAW"] == 2


def test_create_order_returns_split_orders_and_records_the_note(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 80})
    conn = connector(make_connector)
    products = active_products(conn, 8)
    result = conn.place_order(order_request("ORD-OC-SPLIT", products))
    vendors = {node["vendor"] for node in _vendors(sandbox, products)}
    assert len(result.supplier_order_ids) == len(vendors) > 1
    assert result.total_cost == sum(
        2 * (p.cost_price + (p.options[0].price_delta if p.options else 0)) for p in products
    )


def _vendors(sandbox: Any, products: list[SupplierProduct]) -> list[dict[str, int]]:
    world = SupplierWorld(sandbox.state)
    out = []
    for p in products:
        item = world.item("ownerclan", int(p.supplier_sku[1:]))
        assert item is not None
        out.append({"vendor": item.vendor})
    return out


def test_tracking_appears_after_the_delay(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 40}, tracking_delay_s=600)
    conn = connector(make_connector)
    result = conn.place_order(order_request("ORD-OC-TRK", active_products(conn, 2)))
    assert conn.get_shipments(["ORD-OC-TRK", "ORD-UNKNOWN"]) == []
    sandbox.advance_clock(599)  # the world clock is frozen: exactly 599 s after the order
    assert conn.get_shipments(["ORD-OC-TRK"]) == []
    sandbox.advance_clock(1)
    shipments = conn.get_shipments(["ORD-OC-TRK", "ORD-UNKNOWN"])
    assert {s.supplier_order_id for s in shipments} == set(result.supplier_order_ids)
    assert all(s.order_key == "ORD-OC-TRK" and s.tracking_number.isdigit() for s in shipments)
    # Tracking comes from the real fields: shippingCompanyCode, trackingNumber, shippedDate.
    assert all(s.carrier in CARRIER_CODES.values() for s in shipments)
    placed_at = SupplierWorld(sandbox.state).orders("ownerclan", "ORD-OC-TRK")[0].created_at
    shipped_ms = epoch_ms(placed_at + timedelta(seconds=600))  # Timestamp: milliseconds
    assert all(s.shipped_at and epoch_ms(s.shipped_at) == shipped_ms for s in shipments)
    assert conn.cancel_order("ORD-OC-TRK") is False  # shipped: too late


def test_cancel_before_shipping(sandbox: Any, make_connector: Callable[[str], Any]) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 40}, tracking_delay_s=600)
    conn = connector(make_connector)
    conn.place_order(order_request("ORD-OC-CXL", active_products(conn, 1)))
    assert conn.cancel_order("ORD-OC-CXL") is True
    assert conn.cancel_order("ORD-OC-CXL") is True  # idempotent
    sandbox.advance_clock(700)
    assert conn.get_shipments(["ORD-OC-CXL"]) == []  # a cancelled order never ships


def test_order_errors_do_not_echo_personal_data(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    conn = connector(make_connector)
    request = PurchaseOrderRequest(
        order_key="ORD-OC-BAD",
        lines=(PurchaseOrderLine("W77777777", 1),),  # no such item
        receiver=RECEIVER,
    )
    with pytest.raises(PermanentError) as caught:
        conn.place_order(request)
    message = str(caught.value)
    assert "createOrder" in message
    for secret in (RECEIVER.name, RECEIVER.phone, RECEIVER.address, "sandbox-ownerclan-pw"):
        assert secret not in message


def test_paging_and_ordering_survive_injected_5xx(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 50})
    conn = connector(make_connector, page_size=5)
    products = active_products(conn, 2)
    sandbox.set_faults("ownerclan", error_rate=0.3)
    keys = [p.supplier_sku for p in conn.iter_products()]
    assert keys == [f"W{i:08d}" for i in range(50)]  # every page once, none lost or repeated
    # createOrder is not retried inside the call (it is not idempotent); the task-level retry
    # comes back through place_order, whose lookup makes the retry safe.
    request = order_request("ORD-OC-5XX", products)
    result = None
    for _ in range(10):
        try:
            result = conn.place_order(request)
            break
        except TransientError:
            continue
    assert result is not None
    assert sandbox.counts()["purchase_orders"]["ORD-OC-5XX"] == 1


# ---------------------------------------------------------------------------- published shapes


EXPECTED_STATUS = {
    "available": "active",
    "soldout": "soldout",
    "unavailable": "soldout",
    "discontinued": "gone",
}


def test_statuses_and_flags_follow_the_published_values(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    world = SupplierWorld(sandbox.state)
    seed = sandbox.state.config.seed
    products = [
        p for p in connector(make_connector).iter_products() if isinstance(p, SupplierProduct)
    ]
    assert len(products) == 500
    raw_statuses = set()
    for product in products:
        item = world.item("ownerclan", int(product.supplier_sku[1:]))
        assert item is not None
        state = item_state(seed, item.index, item.soldout)
        raw_statuses.add(state["status"])
        expected = EXPECTED_STATUS[state["status"]]
        if expected == "active" and product.stock == 0:
            expected = "soldout"
        assert product.status == expected, product.supplier_sku
        assert product.open_market_sellable is state["openmarketSellable"]
        assert product.adult_only is state["adultOnly"]
    assert raw_statuses == set(EXPECTED_STATUS)  # all four occur in the default world
    assert any(not p.open_market_sellable for p in products)
    assert any(p.adult_only for p in products)


def test_options_keep_the_supplier_code_and_their_own_stock(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 40})
    products = [
        p for p in connector(make_connector).iter_products() if isinstance(p, SupplierProduct)
    ]
    checked = 0
    for product in products:
        by_code = {o["key"]: o for o in product.raw["options"] if o["optionAttributes"]}
        assert {o.supplier_option_code for o in product.options} == set(by_code)
        for option in product.options:
            raw = by_code[option.supplier_option_code]
            assert option.stock == raw["quantity"]
            assert option.price_delta == raw["price"] - product.raw["price"]
            checked += 1
    assert checked > 10


def test_an_order_can_name_its_option_by_the_supplier_code(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 60})
    conn = connector(make_connector)
    product = next(p for p in active_products(conn, 20) if p.options)
    option = product.options[-1]
    line = PurchaseOrderLine(product.supplier_sku, 1, option.supplier_option_code)
    conn.place_order(
        PurchaseOrderRequest(order_key="ORD-OC-CODE", lines=(line,), receiver=RECEIVER)
    )
    (order,) = SupplierWorld(sandbox.state).orders("ownerclan", "ORD-OC-CODE")
    assert order.lines[0].option == f"{option.name}:{option.value}"
    assert order.lines[0].unit_price == product.cost_price + option.price_delta
    unknown = PurchaseOrderLine(product.supplier_sku, 1, "no-such-code")
    with pytest.raises(PermanentError, match="no option with code"):
        conn.place_order(
            PurchaseOrderRequest(order_key="ORD-OC-X", lines=(unknown,), receiver=RECEIVER)
        )


# ---------------------------------------------------------------------------- slices


def test_full_collect_windows_cover_the_catalog_exactly_once(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 120})
    conn = connector(make_connector, page_size=7)
    conn.window = timedelta(days=4)
    conn.history_start = datetime(2024, 12, 10, tzinfo=UTC)  # inside the world's 30-day spread
    pieces = conn.plan_slices()
    # Slices travel in Celery messages: JSON primitives only, unique keys.
    pieces = [type(p).from_json(json.loads(json.dumps(p.to_json()))) for p in pieces]
    assert len({p.key for p in pieces}) == len(pieces) > 5
    assert pieces[0].params["date_from_ms"] is None and pieces[-1].params["date_to_ms"] is None
    for before, after in pairwise(pieces):
        assert before.params["date_to_ms"] + 1 == after.params["date_from_ms"]  # disjoint, no gap
    per_slice = [[r.supplier_sku for r in conn.iter_slice(p)] for p in pieces]
    assert sum(1 for skus in per_slice if skus) >= 3  # the catalog really is spread out
    everything = [r.supplier_sku for r in conn.iter_products()]
    assert sorted(sku for skus in per_slice for sku in skus) == sorted(everything)
    assert len(everything) == 120


def test_an_item_changed_during_a_full_run_is_found_by_the_recheck(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    """Windows are by ``updatedAt``: an item changed while the run reads moves from a window not
    yet read into one already read, and no window returns it. Without the recheck a merge would
    mark it gone."""
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 120})
    conn = connector(make_connector, page_size=7)
    conn.window = timedelta(days=4)
    conn.history_start = datetime(2024, 12, 10, tzinfo=UTC)
    pieces = conn.plan_slices()
    products = [r for r in conn.iter_products() if isinstance(r, SupplierProduct)]
    started = max(p.updated_at for p in products if p.updated_at) + timedelta(milliseconds=1)
    cut = epoch_ms(started)
    late = [p for p in pieces if p.params["date_to_ms"] is None or p.params["date_to_ms"] >= cut]
    early = [p for p in pieces if p not in late]
    seen = {r.supplier_sku for p in late for r in conn.iter_slice(p)}  # read first, in parallel
    sandbox.advance_clock(14 * 86_400)  # items change while the run is still reading
    seen |= {r.supplier_sku for p in early for r in conn.iter_slice(p)}
    missing = sorted({p.supplier_sku for p in products} - seen)
    assert missing  # the gap is real: these were seen by no window
    rechecked = list(conn.recheck_missing(missing, started))
    assert sorted(r.supplier_sku for r in rechecked) == missing
    assert list(conn.recheck_missing([], started)) == []


def test_incremental_collect_is_one_window_from_since_minus_the_overlap(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 60})
    conn = connector(make_connector)
    since = datetime(2024, 12, 20, tzinfo=UTC)
    (piece,) = conn.plan_slices(since)
    assert piece.params == {
        "date_from_ms": epoch_ms(since - conn.overlap),
        "date_to_ms": None,
    }
    expected = [
        p.supplier_sku
        for p in conn.iter_products()
        if isinstance(p, SupplierProduct) and p.updated_at and p.updated_at >= since - conn.overlap
    ]
    assert [r.supplier_sku for r in conn.iter_slice(piece)] == expected
    with pytest.raises(PermanentError, match="date_from_ms"):
        next(iter(conn.iter_slice(type(piece)("bad", {"date_from_ms": "2024-12-20"}))))


# ---------------------------------------------------------------------------- bad records


REASONS = {
    "price_missing": "price is missing",
    "name_empty": "name is missing or empty",
    "price_zero": "price 0 KRW is outside",
    "price_absurd": "price 250000000 KRW is outside",
    "stock_absurd": "quantity 5000000 is over",
    "option_price_negative": "price -500 is below zero",
}


def test_every_malformed_kind_is_rejected_with_its_reason(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 80})
    sandbox.set_faults("ownerclan", malformed_rate=1.0)
    records = list(connector(make_connector).iter_products())
    assert len(records) == 80 and all(isinstance(r, InvalidRecord) for r in records)
    for kind, reason in REASONS.items():
        assert any(reason in r.reason for r in records), kind


class PagesFake(OwnerClanConnector):
    """The connector with its page source replaced by fixed pages (an in-process fake of the
    one function that talks HTTP), for record-level properties of one read."""

    pages: ClassVar[list[list[Any]]] = []

    def _pages(self, date_from: int | None, date_to: int | None, first: int | None = None) -> Any:
        yield from self.pages


def node(key: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "key": key,
        "name": "[한빛] 심플 텀블러",
        "price": 12000.0,  # OwnerClan types prices as Float
        "shippingFee": 3000,
        "status": "available",
        "updatedAt": 1_735_000_000_000,
        "images": ["https://img.invalid/1.jpg"],
        "category": {"key": "50000803", "fullName": "생활용품>수납/정리"},
        "options": [{"key": "0", "optionAttributes": [], "price": 12000, "quantity": 5}],
        "openmarketSellable": True,
        "adultOnly": False,
    }
    base.update(fields)
    return base


def fake_connector(make_connector: Callable[[str], Any], pages: list[list[Any]]) -> PagesFake:
    real = connector(make_connector)
    fake = PagesFake(account=real.account, http=real.http)
    fake.pages = pages
    return fake


def test_a_sku_answered_twice_in_one_read_is_rejected_the_second_time(
    make_connector: Callable[[str], Any],
) -> None:
    fake = fake_connector(make_connector, [[node("W1"), node("W2")], [node("W1", price=9000)]])
    records = list(fake.iter_products())
    assert [type(r).__name__ for r in records] == ["SupplierProduct"] * 2 + ["InvalidRecord"]
    assert records[2].supplier_sku == "W1" and "duplicated SKU W1" in records[2].reason
    assert isinstance(records[0], SupplierProduct) and records[0].cost_price == 12000


HOSTILE: list[tuple[Any, str]] = [
    (None, "not an object"),
    (["W1"], "not an object"),
    ({"key": 5}, "item key"),
    ({"key": ""}, "item key"),
    (node("W1", name=None), "name is missing"),
    (node("W1", name="x" * 10_000), "absurdly long"),
    (node("W1", price="12,000원"), "price is missing or not a whole KRW amount"),
    (node("W1", price=12000.5), "not a whole KRW amount"),
    (node("W1", price=float("nan")), "not a whole KRW amount"),
    (node("W1", price=True), "not a whole KRW amount"),
    (node("W1", price=0), "outside 1..100,000,000"),
    (node("W1", price=100_000_001), "outside 1..100,000,000"),
    (node("W1", shippingFee=-1), "shippingFee"),
    (node("W1", status="weird"), "status is not one of"),
    (node("W1", status=None), "status is not one of"),
    (node("W1", options="many"), "options is not a list"),
    (node("W1", options=[1]), "option #0 is not an object"),
    (node("W1", options=[{"price": 1, "quantity": -1, "optionAttributes": []}]), "quantity"),
    (node("W1", options=[{"price": 1, "quantity": "3", "optionAttributes": []}]), "quantity"),
    (node("W1", options=[{"price": 1, "quantity": 1_000_001}]), "over 1,000,000"),
    (
        node("W1", options=[{"price": 1, "quantity": 600_000}, {"price": 1, "quantity": 600_000}]),
        "stock 1200000",
    ),
    (node("W1", options=[{"price": -1, "quantity": 1}]), "below zero"),
    (node("W1", options=[{"price": None, "quantity": 1}]), "option #0 price"),
    (node("W1", options=[{"price": 1, "quantity": 1, "optionAttributes": "x"}]), "not a list"),
    (
        node("W1", options=[{"price": 1, "quantity": 1, "optionAttributes": [{"name": 1}]}]),
        "not text",
    ),
    (node("W1", updatedAt="2024-12-01"), "updatedAt"),
    (node("W1", updatedAt=10**30), "updatedAt"),
    (node("W1", category=[1, 2]), ""),  # tolerated: category is optional
]


@pytest.mark.parametrize(("raw", "reason"), HOSTILE)
def test_hostile_nodes_become_invalid_records_and_never_raise(raw: Any, reason: str) -> None:
    record = normalise_item(raw)
    if not reason:
        assert isinstance(record, SupplierProduct) and record.category is None
        return
    assert isinstance(record, InvalidRecord), record
    assert reason in record.reason
    assert len(json.dumps(record.raw, ensure_ascii=False, default=str)) <= 16_500  # bounded


def test_unknown_flags_are_the_restrictive_answer() -> None:
    record = normalise_item(node("W1", openmarketSellable=None, adultOnly=None))
    assert isinstance(record, SupplierProduct)
    assert record.open_market_sellable is False and record.adult_only is True
    fine = normalise_item(node("W1"))
    assert isinstance(fine, SupplierProduct) and fine.open_market_sellable and not fine.adult_only


# ---------------------------------------------------------------------------- cut bodies


class RawAnswerServer:
    """A loopback TCP server that answers every connection with fixed bytes and closes: the
    only way to get a body really cut mid-response over real HTTP."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/graphql"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                client.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


CUT_BODIES = {
    "content-length": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n"
        b'Connection: close\r\n\r\n{"data": {"allItems": {"edges": [{"cursor": "a", "no'
    ),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b'Connection: close\r\n\r\n400\r\n{"data": {"allItems": {"edges": [{"curs'
    ),
}


@pytest.mark.parametrize("framing", sorted(CUT_BODIES))
def test_a_body_cut_mid_response_is_transient(
    make_connector: Callable[[str], Any], framing: str
) -> None:
    server = RawAnswerServer(CUT_BODIES[framing])
    try:
        conn = connector(make_connector)
        conn.graphql_path = server.url  # login still goes to the sandbox
        with pytest.raises(TransientError):
            next(iter(conn.iter_products()))
    finally:
        server.close()


def test_too_many_requests_in_graphql_errors_is_a_rate_limit(
    make_connector: Callable[[str], Any],
) -> None:
    body = b'{"errors": [{"message": "Too many requests"}], "data": null}'
    server = RawAnswerServer(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:
        conn = connector(make_connector)
        conn.graphql_path = server.url
        with pytest.raises(RateLimitedError):
            next(iter(conn.iter_products()))
    finally:
        server.close()


def test_note_lookups_keep_exact_matches_only(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    """allOrders(note) matches by substring (documented): "ORD-SUB-1" also finds "ORD-SUB-10"."""
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 40}, tracking_delay_s=60)
    conn = connector(make_connector)
    products = active_products(conn, 2)
    longer = conn.place_order(order_request("ORD-SUB-10", products[:1]))
    shorter = conn.place_order(order_request("ORD-SUB-1", products[1:]))
    assert not shorter.already_existed  # the longer key's order is not ours
    assert set(shorter.supplier_order_ids).isdisjoint(longer.supplier_order_ids)
    assert sandbox.counts()["purchase_orders"] == {"ORD-SUB-10": 1, "ORD-SUB-1": 1}
    sandbox.advance_clock(60)
    shipments = conn.get_shipments(["ORD-SUB-1"])
    assert {s.supplier_order_id for s in shipments} == set(shorter.supplier_order_ids)
