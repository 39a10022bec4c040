"""Domeggook connector against the sandbox over real HTTP: aid auth, getItemList paging quirks,
getItemView with its options JSON string, the standard error body."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis as redis_lib
import requests
from pydantic import SecretStr

from dropship.errors import PermanentError
from dropship.platforms.config import PlatformSettings
from dropship.platforms.domeggook import (
    DomeggookApiError,
    DomeggookConnector,
    parse_select_opt,
)
from dropship.platforms.interfaces import (
    BuyerInfo,
    InvalidRecord,
    PurchaseOrderLine,
    PurchaseOrderRequest,
    SupplierProduct,
)
from dropship.platforms.registry import build_connector
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS

# World time stands still unless a test advances it: prices, updatedAt stamps and tracking delays
# compared across requests cannot change between them because a wall-clock hour ticked over.
pytestmark = pytest.mark.usefixtures("frozen_world_clock")

AID = SANDBOX_CREDENTIALS["domeggook"]["api_key"]


def connector(make_connector: Callable[[str], Any]) -> DomeggookConnector:
    conn = make_connector("domeggook_main")
    assert isinstance(conn, DomeggookConnector)
    return conn


def raw_api(sandbox: Any, **params: Any) -> Any:
    response = requests.get(
        f"{sandbox.base_url}/domeggook/ssl/api/", params={"om": "json", **params}, timeout=5
    )
    assert response.status_code == 200  # errors come in the body, like the real service
    return response.json()


def calls(sandbox: Any, mode: str) -> int:
    count: int = sandbox.counts().get("domeggook_calls", {}).get(mode, 0)
    return count


def test_bad_aid_gets_the_standard_error_and_a_permanent_error(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    body = raw_api(sandbox, ver="4.1", mode="getItemList", aid="wrong-key")
    assert set(body) == {"errors"}
    assert body["errors"]["code"] == "100" and body["errors"]["message"]
    account = connector_settings.accounts["domeggook_main"]
    wrong = account.model_copy(update={"credentials": {"api_key": SecretStr("wrong-key-123")}})
    client = redis_lib.Redis.from_url(redis_url)
    conn = build_connector(wrong, connector_settings, client)
    with pytest.raises(DomeggookApiError) as caught:
        next(iter(conn.iter_products()))
    assert caught.value.code == "100" and isinstance(caught.value, PermanentError)
    assert "wrong-key-123" not in str(caught.value)
    client.close()


def test_bad_parameters_are_rejected(sandbox: Any, make_connector: Callable[[str], Any]) -> None:
    body = raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID, sz=201)
    assert body["errors"]["code"] == "200" and "sz" in body["errors"]["dmessage"]
    assert raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID, pg=0)["errors"]["code"] == "200"
    conn = connector(make_connector)
    with pytest.raises(DomeggookApiError, match="200"):
        conn.list_page(1, size=201)
    with pytest.raises(PermanentError, match="page_size"):
        DomeggookConnector(account=conn.account, http=conn.http, page_size=201)


def test_exact_multiple_of_the_page_size(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 400})
    pages = list(connector(make_connector).iter_list_pages())
    assert [len(p.items) for p in pages] == [200, 200]  # and no third, empty request
    assert [p.next_cursor for p in pages] == ["2", None]
    numbers = [item["no"] for page in pages for item in page.items]
    assert len(set(numbers)) == 400
    assert calls(sandbox, "getItemList") == 2


def test_single_result_comes_as_an_object_and_is_normalised(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 201})
    raw = raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID, sz=200, pg=2)
    assert isinstance(raw["domeggook"]["list"]["item"], dict)  # the real API's quirk
    assert raw["domeggook"]["header"]["numberOfPages"] == 2
    pages = list(connector(make_connector).iter_list_pages())
    assert [len(p.items) for p in pages] == [200, 1]
    assert pages[1].items[0]["no"] == raw["domeggook"]["list"]["item"]["no"]
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 1})
    products = list(connector(make_connector).iter_products())
    assert len(products) == 1 and isinstance(products[0], SupplierProduct)


def test_empty_catalog(sandbox: Any, make_connector: Callable[[str], Any]) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 0})
    raw = raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID)
    assert raw["domeggook"]["header"]["numberOfPages"] == 0
    conn = connector(make_connector)
    assert [len(p.items) for p in conn.iter_list_pages()] == [0]
    assert list(conn.iter_products()) == []


def test_item_view_options_json_string(sandbox: Any, make_connector: Callable[[str], Any]) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 30})
    conn = connector(make_connector)
    products = [p for p in conn.iter_products() if isinstance(p, SupplierProduct)]
    assert len(products) == 30
    with_options = [p for p in products if p.options]
    assert with_options
    product = with_options[0]
    view = raw_api(sandbox, ver="4.5", mode="getItemView", aid=AID, no=product.supplier_sku)
    select_opt = view["domeggook"]["selectOpt"]
    assert isinstance(select_opt, str)  # a JSON document inside a string
    decoded = json.loads(select_opt)
    assert [o.value for o in product.options] == [e["name"] for e in decoded["data"].values()]
    assert [o.price_delta for o in product.options] == [
        int(e["dom"]) for e in decoded["data"].values()
    ]
    assert product.stock == view["domeggook"]["qty"]["inventory"]
    assert product.cost_price == view["domeggook"]["price"]["dome"]
    with pytest.raises(ValueError, match="JSON"):
        parse_select_opt("{not json")
    assert parse_select_opt("") == ()


def test_get_product_uses_the_cache_and_unknown_is_none(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 5})
    conn = connector(make_connector)
    first = conn.get_product("30000003")
    assert first is not None and first.supplier_sku == "30000003"
    assert conn.get_product("30000003") == first
    assert calls(sandbox, "getItemView") == 1  # second read came from the cache
    assert conn.get_product("30009999") is None
    with pytest.raises(PermanentError, match="digits"):
        conn.get_product("abc")


def test_malformed_records_come_back_as_invalid(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 40})
    sandbox.set_faults("domeggook", malformed_rate=0.3)
    records = list(connector(make_connector).iter_products())
    invalid = [r for r in records if isinstance(r, InvalidRecord)]
    assert len(records) == 40
    assert 3 <= len(invalid) <= 25
    assert all("price" in r.reason and r.supplier_sku for r in invalid)


def test_orders_are_refused_clearly(make_connector: Callable[[str], Any]) -> None:
    conn = connector(make_connector)
    request = PurchaseOrderRequest(
        order_key="ORD-DG-1",
        lines=(PurchaseOrderLine("30000001", 1),),
        receiver=BuyerInfo(name="이영희", phone="010-1111-2222", address="부산광역시"),
    )
    with pytest.raises(PermanentError, match="session") as caught:
        conn.place_order(request)
    assert "이영희" not in str(caught.value)
