"""OwnerClan connector against the sandbox over real HTTP: JWT auth, relay paging, orders."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
import redis as redis_lib
import requests
from pydantic import SecretStr

from dropship.errors import PermanentError, TransientError
from dropship.platforms.config import PlatformSettings
from dropship.platforms.http import AuthRejectedError
from dropship.platforms.interfaces import (
    BuyerInfo,
    InvalidRecord,
    PurchaseOrderLine,
    PurchaseOrderRequest,
    SupplierProduct,
)
from dropship.platforms.ownerclan import OwnerClanConnector
from dropship.platforms.registry import build_connector
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
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
        and all(o.stock > 0 for o in p.options)
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
            "products": [{"itemKey": request.lines[0].supplier_sku, "quantity": 1}],
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
    assert all(s.carrier.endswith("택배") or s.carrier == "CJ대한통운" for s in shipments)
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
