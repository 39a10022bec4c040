"""gentrade connector against the sandbox over real HTTP: id/key auth, the EUC-KR XML feed
streamed with bounded memory, packed options, orders with tracking."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
import redis as redis_lib
import requests
from pydantic import SecretStr

from dropship.errors import PermanentError, TransientError
from dropship.platforms.config import AccountSettings, PlatformSettings
from dropship.platforms.gentrade import GentradeConnector, iter_feed, parse_packed_options
from dropship.platforms.http import AuthRejectedError, PlatformHttp
from dropship.platforms.interfaces import (
    BuyerInfo,
    InvalidRecord,
    ProductOption,
    PurchaseOrderLine,
    PurchaseOrderRequest,
    SupplierProduct,
)
from dropship.platforms.registry import build_connector
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierWorld

# World time stands still unless a test advances it: prices, updatedAt stamps and tracking delays
# compared across requests cannot change between them because a wall-clock hour ticked over.
pytestmark = pytest.mark.usefixtures("frozen_world_clock")

CREDS = SANDBOX_CREDENTIALS["gentrade"]
FEED = "/gentrade/shop/proc/product_api.php"
RECEIVER = BuyerInfo(name="홍길동", phone="010-1234-5678", address="서울시 중구 세종대로 110")


def connector(make_connector: Callable[[str], Any]) -> GentradeConnector:
    conn = make_connector("gentrade_main")
    assert isinstance(conn, GentradeConnector)
    return conn


def feed_bytes(sandbox: Any) -> bytes:
    response = requests.get(
        sandbox.base_url + FEED, params={"id": CREDS["id"], "m_skey": CREDS["key"]}, timeout=10
    )
    assert response.status_code == 200
    return response.content


def test_wrong_key_is_rejected(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    bad = requests.get(
        sandbox.base_url + FEED, params={"id": CREDS["id"], "m_skey": "nope"}, timeout=5
    )
    assert bad.status_code == 403
    account = connector_settings.accounts["gentrade_main"]
    wrong = account.model_copy(
        update={"credentials": {**account.credentials, "key": SecretStr("stolen-key-999")}}
    )
    client = redis_lib.Redis.from_url(redis_url)
    with pytest.raises(AuthRejectedError) as caught:
        next(iter(build_connector(wrong, connector_settings, client).iter_products()))
    assert "stolen-key-999" not in str(caught.value)
    client.close()


def test_feed_is_euc_kr_and_korean_text_is_decoded(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 30})
    body = feed_bytes(sandbox)
    assert body.startswith(b'<?xml version="1.0" encoding="euc-kr"?>')
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")  # really EUC-KR bytes, not UTF-8 with a label
    records = list(connector(make_connector).iter_products())
    products = [p for p in records if isinstance(p, SupplierProduct)]
    assert len(products) == len(records) == 30
    world = SupplierWorld(sandbox.state)
    for product in products:
        assert isinstance(product, SupplierProduct)
        item = world.item("gentrade", int(product.supplier_sku) - 500_000)
        assert item is not None
        assert product.name == item.name  # e.g. "[한빛] 프리미엄 텀블러"
        assert product.name.encode("euc_kr").decode("euc_kr") == product.name
        assert product.category == item.category_code
        assert [(o.name, o.value, o.price_delta, o.stock) for o in product.options] == [
            (o.name, o.value, o.price_delta, o.stock) for o in item.options
        ]
        assert product.status == ("soldout" if item.soldout or item.stock == 0 else "active")
    assert any(p.options for p in products)


def test_packed_options_parsing() -> None:
    assert parse_packed_options("색상:빨강^^0^^10|색상:파랑^^500^^0") == (
        ProductOption("색상", "빨강", 0, 10, "색상:빨강"),
        ProductOption("색상", "파랑", 500, 0, "색상:파랑"),
    )
    assert parse_packed_options("") == () and parse_packed_options(None) == ()
    assert parse_packed_options("사이즈:대^^-500^^3")[0].price_delta == -500
    for bad in ("색상빨강^^0^^1", "색상:빨강^^0", "색상:빨강^^x^^1", "색상:^^0^^1", "a:b^^0^^-1"):
        with pytest.raises(ValueError, match="option entry"):
            parse_packed_options(bad)


def test_empty_catalog_is_a_valid_empty_feed(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 0})
    assert b"<gentrade" in feed_bytes(sandbox)
    assert list(connector(make_connector).iter_products()) == []


def test_malformed_records_come_back_as_invalid(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 60})
    sandbox.set_faults("gentrade", malformed_rate=0.25)
    records = list(connector(make_connector).iter_products())
    invalid = [r for r in records if isinstance(r, InvalidRecord)]
    assert len(records) == 60
    assert 5 <= len(invalid) <= 30
    assert all("buyprice" in r.reason and r.raw["code"] == r.supplier_sku for r in invalid)


def test_cut_feed_is_a_transient_error() -> None:
    document = '<?xml version="1.0" encoding="euc-kr"?>\n<gentrade><product code="1" status="Y">'
    with pytest.raises(TransientError, match="well-formed"):
        list(iter_feed([document.encode("euc_kr")]))


def test_order_once_per_key_and_tracking_after_delay(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 40}, tracking_delay_s=300)
    conn = connector(make_connector)
    products = [
        p
        for p in conn.iter_products()
        if isinstance(p, SupplierProduct) and p.status == "active" and p.options
    ][:2]
    request = PurchaseOrderRequest(
        order_key="ORD-GT-1",
        lines=tuple(
            PurchaseOrderLine(p.supplier_sku, 1, p.options[0].supplier_option_code)
            for p in products
        ),
        receiver=RECEIVER,
    )
    first = conn.place_order(request)
    again = conn.place_order(request)
    assert again.already_existed and again.supplier_order_ids == first.supplier_order_ids
    assert sandbox.counts()["purchase_orders"]["ORD-GT-1"] == 1
    # The receiver went over the wire in EUC-KR and arrived intact.
    orders = SupplierWorld(sandbox.state).orders("gentrade", "ORD-GT-1")
    assert orders[0].recipient["rcv_name"] == "홍길동"
    assert [line.option for line in orders[0].lines] == [
        p.options[0].supplier_option_code for p in products
    ]
    sandbox.advance_clock(299)  # the world clock is frozen: exactly 299 s after the order
    assert conn.get_shipments(["ORD-GT-1"]) == []
    sandbox.advance_clock(1)
    (shipment,) = conn.get_shipments(["ORD-GT-1", "ORD-NOPE"])
    assert shipment.order_key == "ORD-GT-1" and shipment.tracking_number.isdigit()
    assert shipment.supplier_order_id == first.supplier_order_ids[0]
    assert conn.cancel_order("ORD-GT-1") is False


def test_cancel_before_shipping_and_refusals(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 20}, tracking_delay_s=300)
    conn = connector(make_connector)
    product = next(
        p for p in conn.iter_products() if isinstance(p, SupplierProduct) and p.status == "active"
    )
    conn.place_order(
        PurchaseOrderRequest("ORD-GT-2", (PurchaseOrderLine(product.supplier_sku, 1),), RECEIVER)
    )
    assert conn.cancel_order("ORD-GT-2") is True
    sandbox.advance_clock(400)
    assert conn.get_shipments(["ORD-GT-2"]) == []
    with pytest.raises(PermanentError) as caught:
        conn.place_order(PurchaseOrderRequest("ORD-GT-3", (PurchaseOrderLine("999", 1),), RECEIVER))
    assert "홍길동" not in str(caught.value) and "010-1234-5678" not in str(caught.value)


@pytest.fixture(scope="module")
def separate_sandbox() -> Iterator[str]:
    """A sandbox in its own process, so tracemalloc in this one sees only the client."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dropship.sandbox", "--port", "0", "--seed", "42"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    try:
        assert "listening on http://127.0.0.1:" in line, line
        base_url = line.rsplit(" ", 1)[1]
        limits = {"gentrade": {"calls": 100, "period_s": 1, "burst": 100}}
        requests.post(f"{base_url}/_sandbox/rate_limits", json=limits, timeout=5).raise_for_status()
        yield base_url
    finally:
        process.terminate()
        process.wait(10)


def _peak_while_parsing(base_url: str, size: int) -> tuple[int, int]:
    response = requests.post(
        f"{base_url}/_sandbox/suppliers", json={"catalog_sizes": {"gentrade": size}}, timeout=5
    )
    response.raise_for_status()
    account = AccountSettings.model_validate(
        {
            "name": "gentrade_memory",
            "platform": "gentrade",
            "base_url": f"{base_url}/gentrade",
            "credentials": CREDS,
        }
    )
    http = PlatformHttp("gentrade", "gentrade_memory", account.base_url, None, timeout=(2, 30))
    conn = GentradeConnector(account=account, http=http)
    tracemalloc.start()
    try:
        count = sum(1 for r in conn.iter_products() if isinstance(r, SupplierProduct))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_parsing_memory_does_not_grow_with_catalog_size(separate_sandbox: str) -> None:
    """Behaviour, not timing: 10x the products must not mean ~10x the peak memory."""
    _peak_while_parsing(separate_sandbox, 200)  # warm-up: imports, pools, lazy tables
    small_count, small_peak = _peak_while_parsing(separate_sandbox, 1_000)
    large_count, large_peak = _peak_while_parsing(separate_sandbox, 10_000)
    assert (small_count, large_count) == (1_000, 10_000)
    # Holding the document or the parsed tree would cost >= 5 MB at 10k products (the EUC-KR
    # feed itself is ~5 MB, its tree ~50 MB); streaming stays at a few hundred kB either way.
    assert large_peak < 2 * small_peak + 256 * 1024, (small_peak, large_peak)
    assert large_peak < 2 * 2**20, large_peak


def test_stopping_early_releases_the_stream(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 20_000})
    conn = connector(make_connector)
    records = conn.iter_products()
    assert isinstance(records, Generator)
    first = [next(records) for _ in range(5)]
    records.close()  # the caller walks away mid-feed: the response is closed, not drained
    assert [r.supplier_sku for r in first] == [str(500_000 + i) for i in range(5)]
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 3})
    assert len(list(conn.iter_products())) == 3  # server and connection pool still fine
