"""Domeggook / Domeme connector against the sandbox over real HTTP: search conditions and
market=supply, category sweeps x page ranges, getItemView multiple=true (100 per call), the
single-object quirk, cost/stock/options/flags from the documented fields, confirm_gone, bad
records as InvalidRecord, and the sandbox's own limits (180/min, 15,000/day, KST)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as redis_lib
import requests
from pydantic import SecretStr

from dropship.errors import ConfigurationError, PermanentError
from dropship.platforms.config import PlatformSettings
from dropship.platforms.domeggook import (
    DomeggookApiError,
    DomeggookConnector,
    normalise_view,
    parse_price,
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
from dropship.sandbox import domeggook as sandbox_dg
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierWorld

pytestmark = pytest.mark.usefixtures("frozen_world_clock")

AID = SANDBOX_CREDENTIALS["domeggook"]["api_key"]
KST = sandbox_dg.KST


def connector(make_connector: Callable[[str], Any]) -> DomeggookConnector:
    conn = make_connector("domeggook_main")
    assert isinstance(conn, DomeggookConnector)
    return conn


def raw_api(sandbox: Any, expect_status: int = 200, **params: Any) -> Any:
    response = requests.get(
        f"{sandbox.base_url}/domeggook/ssl/api/", params={"om": "json", **params}, timeout=5
    )
    assert response.status_code == expect_status, response.text
    return response.json()


def calls(sandbox: Any, mode: str) -> int:
    count: int = sandbox.counts().get("domeggook_calls", {}).get(mode, 0)
    return count


def world_items(sandbox: Any) -> list[tuple[Any, sandbox_dg.ItemState]]:
    world = SupplierWorld(sandbox.state)
    seed = sandbox.state.config.seed
    return [(item, sandbox_dg.item_state(seed, item)) for item in world.items("domeggook")]


def collect(conn: DomeggookConnector) -> list[SupplierProduct | InvalidRecord]:
    return [record for piece in conn.plan_slices() for record in conn.iter_slice(piece)]


# --------------------------------------------------------------------------- errors


def test_bad_aid_gets_the_standard_error_and_a_permanent_error(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    body = raw_api(sandbox, ver="4.1", mode="getItemList", aid="wrong-key", ca="01_01_00_00_00")
    assert set(body) == {"errors"}
    assert body["errors"]["code"] == "401" and body["errors"]["status"] == "fail"
    account = connector_settings.accounts["domeggook_main"]
    wrong = account.model_copy(update={"credentials": {"api_key": SecretStr("wrong-key-123")}})
    client = redis_lib.Redis.from_url(redis_url)
    conn = build_connector(wrong, connector_settings, client)
    with pytest.raises(DomeggookApiError) as caught:
        conn.plan_slices()
    assert caught.value.code == "401" and isinstance(caught.value, PermanentError)
    assert "wrong-key-123" not in str(caught.value)
    client.close()


def test_a_list_call_without_a_search_condition_is_refused(sandbox: Any) -> None:
    refused = raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID, market="supply")
    assert refused["errors"]["code"] == "400"
    assert "검색 조건" in refused["errors"]["message"]
    # a top-level category is not accepted as a condition either
    top = raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID, ca="01_00_00_00_00")
    assert top["errors"]["code"] == "400"
    for condition in ({"kw": "우산"}, {"ca": "01_01_00_00_00"}, {"id": "seller01"}):
        body = raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID, **condition)
        assert "domeggook" in body, condition
    wrong_ver = raw_api(sandbox, ver="4.5", mode="getItemList", aid=AID, kw="우산")
    assert wrong_ver["errors"]["code"] == "404" and "서비스" in wrong_ver["errors"]["message"]


def test_page_size_bounds(sandbox: Any, make_connector: Callable[[str], Any]) -> None:
    body = raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID, kw="우산", sz=201)
    assert body["errors"]["code"] == "400" and "sz" in body["errors"]["dmessage"]
    assert raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID, kw="a", sz=0)["errors"]
    assert raw_api(sandbox, ver="4.1", mode="getItemList", aid=AID, kw="a", pg=0)["errors"]
    conn = connector(make_connector)
    with pytest.raises(DomeggookApiError, match="400"):
        conn.list_page("01_01_00_00_00", 1, size=201)
    with pytest.raises(PermanentError, match="page_size"):
        DomeggookConnector(account=conn.account, http=conn.http, page_size=201)


def test_configuration_errors_are_clear(make_connector: Callable[[str], Any]) -> None:
    conn = connector(make_connector)
    for options, match in (
        ({"market": "wholesale"}, "market"),
        ({"pages_per_slice": "0"}, "pages_per_slice"),
        ({"category_depth": "1"}, "category_depth"),
    ):
        account = conn.account.model_copy(update={"options": options})
        with pytest.raises(ConfigurationError, match=match):
            DomeggookConnector(account=account, http=conn.http)
    account = conn.account.model_copy(update={"options": {"categories": "01_00_00_00_00"}})
    with pytest.raises(ConfigurationError, match="top-level"):
        DomeggookConnector(account=account, http=conn.http).categories()


# --------------------------------------------------------------------------- sweeps


def test_categories_come_from_get_category_list(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    tree = raw_api(sandbox, ver="1.0", mode="getCategoryList", aid=AID)["domeggook"]["items"]
    assert isinstance(tree, dict) and all("child" in top for top in tree.values())
    conn = connector(make_connector)
    before = calls(sandbox, "getCategoryList")
    codes = conn.categories()
    assert codes == [m["code"] for top in tree.values() for m in top["child"].values()]
    assert calls(sandbox, "getCategoryList") == before + 1
    configured = conn.account.model_copy(
        update={"options": {"categories": "01_01_00_00_00, 02_01_00_00_00"}}
    )
    own = DomeggookConnector(account=configured, http=conn.http)
    assert own.categories() == ["01_01_00_00_00", "02_01_00_00_00"]
    assert calls(sandbox, "getCategoryList") == before + 1  # configured: no category call


def test_slices_are_category_page_ranges_covering_the_listed_catalog(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 400})
    conn = connector(make_connector)
    account = conn.account.model_copy(update={"options": {"pages_per_slice": "2"}})
    conn = DomeggookConnector(account=account, http=conn.http, page_size=10)
    slices = conn.plan_slices()
    keys = [s.key for s in slices]
    assert len(set(keys)) == len(keys)
    assert all(k.startswith("category:") and ":pages:" in k for k in keys)
    by_category: dict[str, list[tuple[int, int]]] = {}
    for piece in slices:
        by_category.setdefault(piece.params["category"], []).append(
            (piece.params["first_page"], piece.params["last_page"])
        )
    for ranges in by_category.values():
        assert ranges[0][0] == 1 and all(b - a <= 1 for a, b in ranges)
        assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(len(ranges) - 1))
    listed = {
        sandbox_dg.item_no(item.index)
        for item, state in world_items(sandbox)
        if state.listed("supply") and not state.malformed
    }
    records = [r for piece in slices for r in conn.iter_slice(piece)]
    skus = [r.supplier_sku for r in records]
    assert len(skus) == len(set(skus))  # no slice overlaps another
    assert set(skus) == listed
    assert all(isinstance(r, SupplierProduct) for r in records)
    # the sweep used market=supply: Domeggook-only items never appear
    dome_only = {sandbox_dg.item_no(i.index) for i, s in world_items(sandbox) if not s.on_supply}
    assert dome_only and not dome_only & set(skus)


def test_details_come_100_per_get_item_view_call(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 2000})
    conn = connector(make_connector)
    category = "01_01_00_00_00"
    items, _, total = conn.list_page(category, 1)
    assert len(items) == 200 and total > 200
    before = calls(sandbox, "getItemView")
    piece = next(s for s in conn.plan_slices() if s.params["category"] == category)
    records = list(conn.iter_slice(piece))
    view_calls = calls(sandbox, "getItemView") - before
    page_lengths = [200] * (total // 200) + ([total % 200] if total % 200 else [])
    assert view_calls == sum(math.ceil(n / 100) for n in page_lengths)
    assert len(records) == total
    counts = sandbox.counts()
    assert counts["domeggook_view_items"]["_total"] == total  # each number asked once


def test_get_item_view_refuses_more_than_100_and_answers_one_as_an_object(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    numbers = ",".join(str(30_000_000 + n) for n in range(101))
    body = raw_api(sandbox, ver="4.6", mode="getItemView", aid=AID, no=numbers, multiple="true")
    assert body["errors"]["code"] == "400" and "100" in body["errors"]["dmessage"]
    one = raw_api(sandbox, ver="4.6", mode="getItemView", aid=AID, no="30000003", multiple="true")
    assert isinstance(one["domeggook"]["multipleResult"]["item"], dict)  # not a list
    two = raw_api(
        sandbox, ver="4.6", mode="getItemView", aid=AID, no="30000003,30000004", multiple="true"
    )
    assert isinstance(two["domeggook"]["multipleResult"]["item"], list)
    conn = connector(make_connector)
    assert set(conn.item_views(["30000003"])) == {"30000003"}
    with pytest.raises(PermanentError, match="100"):
        conn.item_views([str(30_000_000 + n) for n in range(101)])
    assert conn.item_views(["39999998", "39999999"]) == {}  # none exists: 404, not an error


def test_single_list_result_comes_as_an_object_and_is_normalised(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 60})
    listed = [(i, s) for i, s in world_items(sandbox) if s.listed("supply") and not s.malformed]
    item, _ = listed[0]
    body = raw_api(
        sandbox,
        ver="4.1",
        mode="getItemList",
        aid=AID,
        market="supply",
        itemNo=sandbox_dg.item_no(item.index),
    )
    assert isinstance(body["domeggook"]["list"]["item"], dict)
    # through the connector: a page size that leaves exactly one item on the last page
    code = sandbox_dg.CATEGORY_CODES[item.category_code][0]
    count = sum(1 for i, _ in listed if sandbox_dg.CATEGORY_CODES[i.category_code][0] == code)
    assert count >= 2
    conn = connector(make_connector)
    items, pages, total = conn.list_page(code, 2, size=count - 1)
    assert (total, pages, len(items)) == (count, 2, 1)
    assert isinstance(items[0], dict) and items[0]["no"].isdigit()


# --------------------------------------------------------------------------- fields


def test_fields_follow_the_documented_view(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 300})
    products = {
        r.supplier_sku: r
        for r in collect(connector(make_connector))
        if isinstance(r, SupplierProduct)
    }
    tiered = options_checked = adult = 0
    for item, state in world_items(sandbox):
        no = sandbox_dg.item_no(item.index)
        if not state.listed("supply") or state.malformed:
            assert no not in products
            continue
        product = products[no]
        view = sandbox_dg.item_view(item, state)
        assert product.cost_price == item.price  # price.supply, first tier
        tiered += "|" in view["price"]["supply"]
        assert product.stock == item.stock  # qty.inventory
        assert product.shipping_fee == item.shipping_fee  # deli.supply
        assert product.open_market_sellable is True  # channel.supply
        assert product.adult_only is state.adult
        adult += state.adult
        offered = [o for o in item.options if o.stock > 0]  # hid 2 rows are not offered
        assert [(o.value, o.price_delta, o.stock) for o in product.options] == [
            (o.value, o.price_delta, o.stock) for o in offered
        ]
        options_checked += bool(offered)
        assert product.category == sandbox_dg.CATEGORY_CODES[item.category_code][0]
        assert product.status == "active"
    assert tiered and options_checked and adult  # each case was exercised


def test_price_difference_is_the_channel_price_not_the_visibility_flag() -> None:
    select_opt = (
        '{"set":[{"name":"색상","opts":["빨강","파랑","검정"]}],"data":{'
        '"00":{"name":"빨강","qty":"5","dom":"1","domPrice":"700","sup":"1","supPrice":"1000",'
        '"hid":"0"},'
        '"01":{"name":"파랑","qty":"3","dom":"1","domPrice":"0","sup":"0","supPrice":"0",'
        '"hid":"0"},'
        '"02":{"name":"검정","qty":"9","dom":"1","domPrice":"500","hid":"1"}}}'
    )
    supply = parse_select_opt(select_opt, "supply")
    assert [(o.value, o.price_delta, o.stock) for o in supply] == [("빨강", 1000, 5)]
    dome = parse_select_opt(select_opt, "dome")
    assert [(o.value, o.price_delta) for o in dome] == [("빨강", 700), ("파랑", 0)]
    only_dom = '{"set":[],"data":{"00":{"name":"소","qty":"1","dom":"1","domPrice":"300"}}}'
    assert parse_select_opt(only_dom, "supply")[0].price_delta == 300  # no supPrice: domPrice
    assert parse_select_opt(None) == ()


def test_tier_prices_take_the_first_tier() -> None:
    assert parse_price("1+3800|20+3500", "price.supply") == 3800
    assert parse_price("3800", "price.supply") == 3800
    assert parse_price(3800, "price.supply") == 3800
    assert parse_price("12,500", "price.supply") == 12500


# --------------------------------------------------------------------------- gone


def test_absent_from_the_list_is_not_gone_until_get_item_view_says_so(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 500})
    conn = connector(make_connector)
    listed = {r.supplier_sku for r in collect(conn)}
    kinds: dict[str, list[str]] = {"soldout": [], "stopped": [], "ended": [], "dome_only": []}
    for item, state in world_items(sandbox):
        no = sandbox_dg.item_no(item.index)
        if state.ended:
            kinds["ended"].append(no)
        elif not state.on_supply:
            kinds["dome_only"].append(no)  # not on Domeme: gone for us, whatever its status
        elif state.status == "품절":
            kinds["soldout"].append(no)
        elif state.status == "판매중지":
            kinds["stopped"].append(no)
    assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
    absent = [no for group in kinds.values() for no in group]
    assert not set(absent) & listed  # none of them is in the list results
    before = calls(sandbox, "getItemView")
    gone = conn.confirm_gone([*absent, "39999999", "not-a-number"])
    assert gone == set(kinds["stopped"] + kinds["ended"] + kinds["dome_only"]) | {
        "39999999",
        "not-a-number",
    }
    assert not gone & set(kinds["soldout"])  # sold out comes back: not gone
    assert calls(sandbox, "getItemView") - before == math.ceil((len(absent) + 1) / 100)
    soldout = conn.get_product(kinds["soldout"][0])
    assert soldout is not None and soldout.status == "soldout" and soldout.stock == 0
    # not sold on Domeme (channel.supply false, no price.supply): unknown to this market
    assert conn.get_product(kinds["dome_only"][0]) is None

    # What a collect merge asks before marking anything gone: the sold-out items come back as
    # sold out (their zero stock must reach the listings), the gone ones do not come back.
    rechecked = list(conn.recheck_missing([*absent, "39999999"], datetime.now(UTC)))
    assert all(isinstance(r, SupplierProduct) for r in rechecked)
    assert {r.supplier_sku for r in rechecked} == set(kinds["soldout"])
    assert all(r.status == "soldout" and r.stock == 0 for r in rechecked)


def test_get_product_uses_the_cache_and_unknown_is_none(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 50})
    conn = connector(make_connector)
    sku = next(
        sandbox_dg.item_no(i.index)
        for i, s in world_items(sandbox)
        if s.listed("supply") and not s.malformed
    )
    first = conn.get_product(sku)
    assert first is not None and first.supplier_sku == sku
    assert conn.get_product(sku) == first
    assert calls(sandbox, "getItemView") == 1  # second read came from the cache
    assert conn.get_product("30009999") is None
    with pytest.raises(PermanentError, match="digits"):
        conn.get_product("abc")


# --------------------------------------------------------------------------- bad records


EXPECTED_REASON = {
    "price_text": "price.supply is not a price",
    "price_missing": "price.supply is missing",
    "cost_zero": "price.supply is 0 KRW",
    "cost_huge": "above 100,000,000 KRW",
    "stock_huge": "qty.inventory 5000000 is above 1,000,000",
    "stock_text": "qty.inventory '재고충분' is not a count",
    "option_negative": "price difference -500 KRW is below zero",
    "option_qty_text": "is not a count",
    "select_opt_broken": "selectOpt is not valid JSON",
    "title_empty": "basis.title is empty",
    "duplicate_no": "duplicated item number",
}


def test_bad_records_become_invalid_and_the_rest_still_come(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"domeggook": 1500})
    sandbox.set_faults("domeggook", malformed_rate=0.15)
    records = collect(connector(make_connector))
    invalid = [r for r in records if isinstance(r, InvalidRecord)]
    good = {r.supplier_sku for r in records if isinstance(r, SupplierProduct)}
    expected_good: set[str] = set()
    duplicated: set[str] = set()
    expected_kinds: Counter[str] = Counter()
    for item, state in world_items(sandbox):
        if not state.listed("supply"):
            continue
        no = sandbox_dg.item_no(item.index)
        if state.malformed is None:
            expected_good.add(no)
        else:
            expected_kinds[state.malformed] += 1
            if state.malformed == "duplicate_no":
                duplicated.add(no)  # listed under its predecessor's number (unless first)
    # every kind of break happened, and each came back with its precise reason
    assert set(expected_kinds) == set(EXPECTED_REASON)
    for kind, reason in EXPECTED_REASON.items():
        matching = [r for r in invalid if reason in r.reason]
        assert matching, (kind, [r.reason for r in invalid][:20])
        assert all(r.supplier_sku for r in matching)
        assert all(len(r.raw["json"]) <= 4000 for r in matching)
    # the rest still come: every good record, none lost around a bad one
    assert expected_good <= good <= expected_good | duplicated
    lost_duplicates = len(duplicated - good)
    assert len(invalid) == sum(expected_kinds.values()) - len(duplicated) + lost_duplicates


def test_the_normaliser_never_raises() -> None:
    base = {
        "basis": {"no": "31000001", "title": "이름", "status": "판매중"},
        "price": {"supply": "1000"},
        "qty": {"inventory": "5"},
        "deli": {"supply": {"fee": "3000"}},
        "channel": {"supply": True},
    }
    product = normalise_view(base, "supply")
    assert isinstance(product, SupplierProduct) and product.cost_price == 1000
    broken: list[Any] = [
        None,
        [],
        "text",
        {"basis": "x"},
        {**base, "price": []},
        {**base, "qty": {"inventory": -3}},
        {**base, "qty": {"inventory": True}},
        {**base, "deli": {"supply": {"fee": "??"}}},
        {**base, "selectOpt": 42},
        {**base, "selectOpt": '{"set": 1, "data": []}'},
        {**base, "selectOpt": '{"data": {"00": "x"}}'},
        {**base, "price": {"supply": "1+|20+3500"}},
        {**base, "price": {"supply": "9" * 400}},
        {**base, "basis": {"no": "31000001", "title": ["a"], "status": 1}},
    ]
    for view in broken:
        record = normalise_view(view, "supply")
        assert isinstance(record, InvalidRecord | SupplierProduct)
        if isinstance(record, InvalidRecord):
            assert record.reason and len(record.raw["json"]) <= 4000
    assert isinstance(normalise_view({**base, "qty": {"inventory": -3}}), InvalidRecord)
    huge = {**base, "title": "x" * 10_000, "basis": {**base["basis"], "title": ""}}
    record = normalise_view(huge)
    assert isinstance(record, InvalidRecord) and record.raw["truncated_from"] > 4000


# --------------------------------------------------------------------------- sandbox limits


def test_the_sandbox_answers_429_beyond_its_per_minute_limit(sandbox: Any) -> None:
    sandbox._admin("POST", "domeggook", {"per_minute": 5})
    for _ in range(5):
        raw_api(sandbox, ver="1.0", mode="getCategoryList", aid=AID)
    refused = requests.get(
        f"{sandbox.base_url}/domeggook/ssl/api/",
        params={"om": "json", "ver": "1.0", "mode": "getCategoryList", "aid": AID},
        timeout=5,
    )
    assert refused.status_code == 429
    assert refused.json()["errors"]["code"] == "429"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert sandbox.counts()["domeggook_refused"]["minute"] == 1


def test_the_sandbox_refuses_beyond_its_daily_limit_until_midnight_kst(sandbox: Any) -> None:
    sandbox._admin("POST", "domeggook", {"daily": 3})
    for _ in range(3):
        raw_api(sandbox, ver="1.0", mode="getCategoryList", aid=AID)
    refused = raw_api(sandbox, 429, ver="1.0", mode="getCategoryList", aid=AID)
    assert "daily" in refused["errors"]["dmessage"]
    assert sandbox.counts()["domeggook_refused"]["daily"] == 1
    now = sandbox.state.now().astimezone(KST)
    midnight = datetime(now.year, now.month, now.day, tzinfo=KST) + timedelta(days=1)
    sandbox.advance_clock((midnight - now).total_seconds() - 60)  # 23:59 KST: same day
    raw_api(sandbox, 429, ver="1.0", mode="getCategoryList", aid=AID)
    sandbox.advance_clock(61)  # 00:00:01 KST: the platform's new day
    assert "domeggook" in raw_api(sandbox, ver="1.0", mode="getCategoryList", aid=AID)
    assert sandbox.state.now().astimezone(UTC).hour == 15  # and that was not UTC midnight


def test_orders_are_refused_clearly(make_connector: Callable[[str], Any]) -> None:
    conn = connector(make_connector)
    request = PurchaseOrderRequest(
        order_key="ORD-DG-1",
        lines=(PurchaseOrderLine("30000001", 1),),
        receiver=BuyerInfo(name="이영희", phone="010-1111-2222", address="부산광역시"),
    )
    with pytest.raises(PermanentError, match="Private API") as caught:
        conn.place_order(request)
    assert "이영희" not in str(caught.value)


def test_a_body_cut_mid_stream_is_transient(connector_settings: PlatformSettings) -> None:
    """A real loopback server that promises more bytes than it sends, then closes."""
    import socket
    import threading

    from dropship.errors import TransientError
    from dropship.platforms.http import PlatformHttp

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                body = b'{"domeggook": {"header": {"numberOfItems": "1"'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 5000\r\n\r\n" + body
                )

    threading.Thread(target=serve, daemon=True).start()
    account = connector_settings.accounts["domeggook_main"].model_copy(
        update={"base_url": f"http://127.0.0.1:{port}"}
    )
    http = PlatformHttp("domeggook", account.name, account.base_url, None, max_attempts=1)
    conn = DomeggookConnector(account=account, http=http)
    try:
        with pytest.raises(TransientError, match=r"cut (off|short)"):
            conn.list_page("01_01_00_00_00", 1)
    finally:
        server.close()
