"""gentrade (= Zentrade) connector against the sandbox over real HTTP: id/m_skey auth, the
``<zentrade>`` EUC-KR product document and its filters, option rows with full prices, the runout
flag and the assumed stock, order lookup by ``pordno``, no order creation; and the record-level
parser against hostile documents, with its memory measured as RSS of a child process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from pydantic import SecretStr

from dropship.errors import (
    ConfigurationError,
    OrderingNotSupportedError,
    PermanentError,
    TransientError,
)
from dropship.platforms.config import AccountSettings, PlatformSettings
from dropship.platforms.gentrade import (
    KST,
    FeedReader,
    GentradeConnector,
    InvalidRecord,
    feed_shard,
    iter_feed,
)
from dropship.platforms.http import AuthRejectedError, PlatformHttp
from dropship.platforms.interfaces import (
    BuyerInfo,
    CollectSlice,
    ProductOption,
    PurchaseOrderLine,
    PurchaseOrderRequest,
    SupplierProduct,
    UnchangedRecord,
)
from dropship.platforms.registry import build_connector
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.gentrade import (
    HOSTILE_KINDS,
    GentradeStore,
    hostile_kind,
    opendate,
    product_code,
    render_feed,
)
from dropship.sandbox.suppliers import SupplierWorld
from dropship.sandbox.world import WORLD_EPOCH, iter_catalog

pytestmark = pytest.mark.usefixtures("frozen_world_clock")

CREDS = SANDBOX_CREDENTIALS["gentrade"]
FEED = "/gentrade/shop/proc/product_api.php"
ORDERS = "/gentrade/shop/proc/order_api.php"
SEED = 42
PROJECT = Path(__file__).resolve().parents[2]


def connector(make_connector: Callable[[str], Any]) -> GentradeConnector:
    conn = make_connector("gentrade_main")
    assert isinstance(conn, GentradeConnector)
    return conn


def feed(sandbox: Any, **params: str) -> requests.Response:
    return requests.get(
        sandbox.base_url + FEED,
        params={"id": CREDS["id"], "m_skey": CREDS["key"], **params},
        timeout=10,
    )


def products(records: Any) -> list[SupplierProduct]:
    out = []
    for record in records:
        assert isinstance(record, SupplierProduct), record
        out.append(record)
    return out


def doc(*records: str | bytes, end: bool = True, head: bytes | None = None) -> bytes:
    body = b"".join(r if isinstance(r, bytes) else r.encode("cp949") for r in records)
    head = (
        head
        if head is not None
        else b'<?xml version="1.0" encoding="euc-kr"?>\n<zentrade version="ZENTRADE XML 1.0">\n'
    )
    return head + body + (b"</zentrade>\n" if end else b"")


def record(code: str = "3", price: str = "2100", runout: str = "0", extra: str = "") -> str:
    return (
        f'<product code="{code}"><prdtname><![CDATA[ 스마일뺏지 ]]></prdtname>'
        f'<price buyprice="{price}" consumerprice="0" taxmode="Y" />{extra}'
        f'<status runout="{runout}" opendate="2020-12-31" /></product>\n'
    )


OPTION = '<option opt1nm="색"><![CDATA[ {} ]]></option>'


def chunked(data: bytes, size: int = 7) -> Iterator[bytes]:
    # Small chunks: every marker straddles a chunk boundary somewhere.
    return (data[i : i + size] for i in range(0, len(data), size))


# --------------------------------------------------------------------------- against the sandbox


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


def test_document_is_euc_kr_zentrade_and_parses_to_the_world(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 40})
    body = feed(sandbox).content
    assert body.startswith(b'<?xml version="1.0" encoding="euc-kr"?>\n<zentrade version="ZENTRADE')
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")  # really EUC-KR bytes, not UTF-8 with a label
    assert "↑=↑".encode("euc_kr") in body and b"^|^" in body
    got = products(connector(make_connector).iter_products())
    assert len(got) == 40
    world = SupplierWorld(sandbox.state)
    for product in got:
        item = world.item("gentrade", int(product.supplier_sku) - 500_000)
        assert item is not None
        assert product.name == item.name and product.category == item.category_code
        assert product.cost_price == item.price
        # Rows carry full prices; we store the difference to buyprice, keyed by the row label.
        got_options = [
            (o.name, o.value, o.price_delta, o.supplier_option_code) for o in product.options
        ]
        assert got_options == [(o.name, o.value, o.price_delta, o.value) for o in item.options]
        if item.soldout:
            assert (product.status, product.stock, product.stock_assumed) == ("soldout", 0, False)
        else:
            assert (product.status, product.stock, product.stock_assumed) == ("active", 10, True)
            assert all(o.stock == 10 for o in product.options)
    assert any(p.options for p in got) and any(p.status == "soldout" for p in got)


def test_assumed_stock_and_shipping_fee_are_account_settings(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 20})
    account = connector_settings.accounts["gentrade_main"]
    client = redis_lib.Redis.from_url(redis_url)
    custom = account.model_copy(update={"options": {"assumed_stock": "3", "shipping_fee": "3000"}})
    got = products(build_connector(custom, connector_settings, client).iter_products())
    active = [p for p in got if p.status == "active"]
    assert active and all(p.stock == 3 and p.shipping_fee == 3000 for p in active)
    bad = account.model_copy(update={"options": {"assumed_stock": "lots"}})
    with pytest.raises(ConfigurationError, match="OPTIONS__ASSUMED_STOCK"):
        build_connector(bad, connector_settings, client)
    client.close()


def test_sandbox_filters_runout_goodsno_and_opendate(sandbox: Any) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 200})
    everything = products(iter_feed([feed(sandbox).content]))
    soldout = products(iter_feed([feed(sandbox, runout="1").content]))
    on_sale = products(iter_feed([feed(sandbox, runout="0").content]))
    assert soldout and all(p.status == "soldout" for p in soldout)
    assert all(p.status == "active" for p in on_sale)
    assert len(soldout) + len(on_sale) == len(everything) == 200
    (one,) = products(iter_feed([feed(sandbox, goodsno="500007").content]))
    assert one.supplier_sku == "500007"
    assert products(iter_feed([feed(sandbox, goodsno="999").content])) == []
    day = opendate(SEED, 7)
    window = products(iter_feed([feed(sandbox, opendate_s=str(day), opendate_e=str(day)).content]))
    expected = {product_code(i) for i in range(200) if opendate(SEED, i) == day}
    assert "500007" in expected and {p.supplier_sku for p in window} == expected
    # The guide: both dates or no date search; the sandbox refuses half a window and bad values.
    assert feed(sandbox, opendate_s=str(day)).status_code == 400
    assert feed(sandbox, opendate_s="2020/01/01", opendate_e="2020-01-02").status_code == 400
    assert feed(sandbox, runout="2").status_code == 400
    assert (
        requests.post(
            sandbox.base_url + FEED,
            data={"id": CREDS["id"], "m_skey": CREDS["key"], "goodsno": "500001"},
            timeout=5,
        ).content.count(b"<product ")
        == 1
    )  # POST works as GET does


def test_sandbox_caches_the_document_but_never_serves_a_stale_one(sandbox: Any) -> None:
    """A second read of an unchanged world is served from the cache (the poisoned entry comes
    back); any change to what the bytes depend on gives a freshly generated document."""
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 120})
    store = sandbox.state.platform_store("gentrade", GentradeStore)
    first = feed(sandbox).content
    assert store.feed_cache is not None and b"".join(store.feed_cache[1]) == first
    assert feed(sandbox).content == first

    def poison() -> None:
        assert store.feed_cache is not None
        store.feed_cache = (store.feed_cache[0], [b"stale"])

    poison()
    assert feed(sandbox).content == b"stale"  # same world: really served from the cache
    hits = requests.get(f"{sandbox.base_url}/_sandbox/gentrade", timeout=5).json()
    assert hits["feed_cache_hits"] == store.feed_cache_hits == 2
    changes: list[tuple[str, Callable[[], Any], dict[str, str]]] = [
        ("runout filter", lambda: None, {"runout": "1"}),
        ("date window", lambda: None, {"opendate_s": "2024-06-01", "opendate_e": "2024-12-31"}),
        ("catalog size", lambda: sandbox.configure_suppliers(catalog_sizes={"gentrade": 121}), {}),
        ("malformed records", lambda: sandbox.set_faults("gentrade", malformed_rate=0.3), {}),
        (
            "hostile records",
            lambda: requests.post(
                f"{sandbox.base_url}/_sandbox/gentrade", json={"hostile_every": 7}, timeout=5
            ).raise_for_status(),
            {},
        ),
        ("world clock", lambda: sandbox.state.advance_clock(8 * 24 * 3600), {}),
    ]
    for what, change, params in changes:
        feed(sandbox)  # cache the whole document...
        poison()  # ...spoil it, then change the world or the query
        change()
        got = feed(sandbox, **params).content
        store.feed_cache = None
        assert got != b"stale" and got == feed(sandbox, **params).content, what
    # A read with a running clock is never kept (no two reads share an instant).
    sandbox.state.freeze_clock(False)
    store.feed_cache = None
    feed(sandbox)
    assert store.feed_cache is None


def test_plan_slices_full_and_incremental(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 120})
    conn = connector(make_connector)
    # A full run: one read of the whole document per shard (default 2).
    assert conn.plan_slices() == [
        CollectSlice("feed:0/2", {"shard": 0, "shards": 2}),
        CollectSlice("feed:1/2", {"shard": 1, "shards": 2}),
    ]
    since = datetime.combine(opendate(SEED, 5), datetime.min.time(), KST)
    window, runout = conn.plan_slices(since)
    assert window.params["opendate_s"] == str(opendate(SEED, 5))
    assert window.params["opendate_e"] == str(datetime.now(KST).date())
    assert runout == CollectSlice("runout", {"runout": "1"})
    new = products(conn.iter_slice(CollectSlice.from_json(window.to_json())))
    assert {p.supplier_sku for p in new} == {
        product_code(i) for i in range(120) if opendate(SEED, i) >= opendate(SEED, 5)
    }
    gone = products(conn.iter_slice(runout))
    assert gone and all(p.status == "soldout" for p in gone)
    assert len(products(conn.iter_slice(CollectSlice("feed")))) == 120


def test_get_product_asks_for_one_goodsno(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 50})
    conn = connector(make_connector)
    product = conn.get_product("500011")
    assert product is not None and product.supplier_sku == "500011"
    assert conn.get_product("500099") is None
    calls = sandbox.counts()["calls"]["gentrade"]["product_api"]
    assert conn.get_product("500011") == product  # from the cache
    assert conn.cache is not None
    lru = conn.cache._lru  # read from Redis (JSON) this time, not the in-process copy
    if lru is not None:
        lru.drop(conn.cache.redis_key("product_detail", "500011"))
    again = conn.get_product("500011")
    assert again == product and again.raw == product.raw and again.stock_assumed
    assert sandbox.counts()["calls"]["gentrade"]["product_api"] == calls


def test_malformed_records_come_back_as_invalid(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 60})
    sandbox.set_faults("gentrade", malformed_rate=0.25)
    records = list(connector(make_connector).iter_products())
    invalid = [r for r in records if isinstance(r, InvalidRecord)]
    assert len(records) == 60 and 5 <= len(invalid) <= 30
    assert all("buyprice is missing" in r.reason for r in invalid)
    assert all(r.supplier_sku and f'code="{r.supplier_sku}"' in r.raw["bytes"] for r in invalid)


def test_hostile_records_from_the_sandbox_cost_one_reject_each(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    size, every = 400, 20
    sandbox.configure_suppliers(catalog_sizes={"gentrade": size})
    requests.post(
        f"{sandbox.base_url}/_sandbox/gentrade", json={"hostile_every": every}, timeout=5
    ).raise_for_status()
    records = list(connector(make_connector).iter_products())
    good = [r.supplier_sku for r in records if isinstance(r, SupplierProduct)]
    rejects = [r for r in records if isinstance(r, InvalidRecord)]
    assert good == [product_code(i) for i in range(size)]
    kinds = [k for i in range(size) if (k := hostile_kind(i, every))]
    assert len(rejects) == len(kinds) == len(HOSTILE_KINDS)
    for kind, reject in zip(kinds, rejects, strict=True):
        assert HOSTILE_KINDS[kind] in reject.reason, (kind, reject.reason)
        json.dumps(reject.raw)  # JSON-safe, bounded
        assert len(reject.raw["bytes"]) <= 4 * 4096 and "\x00" not in reject.raw["bytes"]


def test_stream_cut_mid_body_is_transient(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 3000})
    requests.post(
        f"{sandbox.base_url}/_sandbox/gentrade", json={"cut_after_products": 1000}, timeout=5
    ).raise_for_status()
    seen = []
    with pytest.raises(TransientError, match="ChunkedEncodingError"):
        for record in connector(make_connector).iter_products():
            seen.append(record)
    assert 900 <= len(seen) < 3000 and all(isinstance(r, SupplierProduct) for r in seen)


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


# --------------------------------------------------------------------------- orders


RECEIVER = BuyerInfo(name="홍길동", phone="010-1234-5678", address="서울시 중구 세종대로 110")


def test_place_and_cancel_order_say_there_is_no_api(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    conn = connector(make_connector)
    request = PurchaseOrderRequest("ORD-GT-1", (PurchaseOrderLine("500001", 1),), RECEIVER)
    with pytest.raises(OrderingNotSupportedError, match="purchase-order sheet") as caught:
        conn.place_order(request)
    assert "홍길동" not in str(caught.value) and "010-1234-5678" not in str(caught.value)
    with pytest.raises(OrderingNotSupportedError, match="no cancel API"):
        conn.cancel_order("ORD-GT-1")
    assert sandbox.counts()["calls"].get("gentrade", {}) == {}  # nothing was sent
    # And the sandbox has no order-creation endpoint either: order_api.php only looks up.
    answer = requests.post(
        sandbox.base_url + ORDERS,
        data={"id": CREDS["id"], "m_skey": CREDS["key"], "mode": "order", "goodsno": "500001"},
        timeout=5,
    )
    assert answer.status_code == 400 and SupplierWorld(sandbox.state).orders("gentrade") == []


def test_shipments_are_looked_up_by_pordno(
    sandbox: Any, make_connector: Callable[[str], Any]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 40}, tracking_delay_s=300)
    item = next(i for i in SupplierWorld(sandbox.state).items("gentrade") if i.options)
    registered = requests.post(
        f"{sandbox.base_url}/_sandbox/gentrade/sheet_orders",
        json={
            "pordno": "ORD-GT-7",
            "lines": [
                {"goodsno": product_code(item.index), "qty": 2, "option": item.options[0].value}
            ],
            "receiver": {"name": "홍길동", "address": "서울"},
        },
        timeout=5,
    ).json()
    conn = connector(make_connector)
    (order,) = conn.lookup_orders(pordno="ORD-GT-7")
    assert (order.ordno, order.pordno) == (registered["ordno"], "ORD-GT-7")
    assert len(order.ordno) == 13 and order.items and order.delinum == ""
    assert conn.lookup_orders(ordno=registered["ordno"]) == [order]
    assert conn.get_shipments(["ORD-GT-7"]) == []
    sandbox.advance_clock(300)
    (shipment,) = conn.get_shipments(["ORD-GT-7", "ORD-NOPE"])
    assert shipment.order_key == "ORD-GT-7" and shipment.tracking_number.isdigit()
    assert shipment.carrier and shipment.supplier_order_id == registered["ordno"]
    assert "홍길동" not in repr(conn.lookup_orders(pordno="ORD-GT-7"))


# --------------------------------------------------------------------------- the parser alone


def test_option_rows_are_full_prices_stored_as_deltas() -> None:
    rows = "3cm^|^2100^|^0^|^https://x/0.jpg↑=↑\n 4.5cm^|^3500^|^0^|^↑=↑\n 2cm^|^1,900^|^0^|^"
    extra = f'<option opt1nm="사이즈" opt2nm=""><![CDATA[ {rows} ]]></option>'
    (product,) = products(iter_feed([doc(record(extra=extra))]))
    assert product.options == (
        ProductOption("사이즈", "3cm", 0, 10, "3cm"),
        ProductOption("사이즈", "4.5cm", 1400, 10, "4.5cm"),
        ProductOption("사이즈", "2cm", -200, 10, "2cm"),
    )
    (soldout,) = products(iter_feed([doc(record(runout="1", extra=extra))]))
    assert soldout.status == "soldout" and {o.stock for o in soldout.options} == {0}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (record(price="0"), "outside 1..100,000,000"),
        (record(price="100000001"), "outside"),
        (record(price="-5"), "below zero"),
        (record(price="2 100"), "not a whole number"),
        (record(runout=""), "runout"),
        (record(extra=OPTION.format("빨강^|^-1^|^0^|^")), "below zero"),
        (record(extra=OPTION.format("빨강^|^x^|^0^|^")), "whole number"),
        (record(extra=OPTION.format("빨강^|^1^|^0^|^↑=↑빨강^|^2^|^0^|^")), "duplicate label"),
        (record(extra='<price buyprice="1"/>'), "more than one <price>"),
        (record(extra="<listimg>text</listimg>"), "unexpected text"),
        ('<product code="1"><prdtname>x</prdtname><status runout="0"/></product>', "<price> is"),
        ('<product code="a b"><prdtname>x</prdtname></product>\n', "not a Zentrade product number"),
        (record().replace('taxmode="Y"', 'taxmode="&foo;"'), "Entity 'foo' not defined"),
        (record().replace("스마일", "\x1b"), "control character U+001B"),
        (record().encode("cp949").replace("스마일".encode("cp949"), b"\xc7"), "invalid CP949 byte"),
    ],
)
def test_one_bad_record_is_one_precise_reject(bad: str | bytes, reason: str) -> None:
    records = list(iter_feed(chunked(doc(record("1"), bad, record("2")))))
    assert [r.supplier_sku for r in records if isinstance(r, SupplierProduct)] == ["1", "2"]
    (reject,) = [r for r in records if isinstance(r, InvalidRecord)]
    assert reason in reject.reason
    assert reject.raw["bytes"] and json.loads(json.dumps(reject.raw)) == reject.raw


def test_document_level_faults() -> None:
    # Truncated: every complete product, one reject for the cut one, then TransientError.
    seen: list[Any] = []
    with pytest.raises(TransientError, match="truncated after 1 products"):
        for r in iter_feed(chunked(doc(record("1"), record("2")[:40], end=False))):
            seen.append(r)
    assert [type(r).__name__ for r in seen] == ["SupplierProduct", "InvalidRecord"]
    assert "truncated" in seen[1].reason and seen[1].supplier_sku == "2"
    seen = []
    with pytest.raises(TransientError, match="truncated after 2 products"):
        for r in iter_feed([doc(record("1"), record("2"), end=False)]):
            seen.append(r)  # cut just before </zentrade>: both products are complete
    assert [type(r).__name__ for r in seen] == ["SupplierProduct", "SupplierProduct"]
    # Not a product document at all (an error page, an empty body): TransientError, no records.
    for body in (b"", b"<html><body>error</body></html>", b"<zentrad>"):
        with pytest.raises(TransientError, match="not a <zentrade>"):
            list(iter_feed([body]))
    # A UTF-8 BOM wins over a contradicting declaration; a UTF-8 document declared as such.
    utf8_head = (
        b'\xef\xbb\xbf<?xml version="1.0" encoding="euc-kr"?><zentrade version="ZENTRADE XML 1.0">'
    )
    (product,) = products(iter_feed([utf8_head + record().encode("utf-8") + b"</zentrade>"]))
    assert product.name == "스마일뺏지"
    # ...and a record that is only valid in the declared encoding is still read.
    (product,) = products(iter_feed([utf8_head + record().encode("cp949") + b"</zentrade>"]))
    assert product.name == "스마일뺏지"
    # EUC-KR bytes under a UTF-8 label (no BOM): still read, as CP949.
    utf8_label = b'<?xml version="1.0" encoding="UTF-8"?><zentrade version="ZENTRADE XML 1.0">'
    (product,) = products(iter_feed([utf8_label + record().encode("cp949") + b"</zentrade>"]))
    assert product.name == "스마일뺏지"
    # A stray UTF-16 BOM in front of an 8-bit document is skipped; real UTF-16 is refused.
    (product,) = products(iter_feed([b"\xff\xfe" + doc(record())]))
    assert product.name == "스마일뺏지"
    with pytest.raises(TransientError, match="UTF-16"):
        list(iter_feed([doc(record()).decode("cp949").encode("utf-16")]))
    # A UHC syllable (outside strict EUC-KR) under the euc-kr label, as Korean sites send it.
    (product,) = products(iter_feed([doc(record().replace("스마일", "똠방"))]))
    assert product.name == "똠방뺏지"
    # Garbage after the root and a DOCTYPE (never read) in the prologue.
    head = b'<?xml version="1.0" encoding="euc-kr"?><!DOCTYPE z [<!ENTITY a "b">]><zentrade>'
    records = list(iter_feed([doc(record(extra=""), head=head) + b"junk"]))
    assert [type(r).__name__ for r in records] == ["SupplierProduct", "InvalidRecord"]
    # A nested product and an unclosed one cost one reject each, the next product still parses.
    nested = record("5").replace("<status", record("6") + "<status")
    unclosed = record("7").replace("</product>", "")
    records = list(iter_feed(chunked(doc(nested, unclosed, record("8")), 13)))
    assert [(r.supplier_sku, type(r).__name__) for r in records] == [
        ("5", "InvalidRecord"),
        ("7", "InvalidRecord"),
        ("8", "SupplierProduct"),
    ]
    # A stray </product> after a record is stray content; one inside a CDATA is text.
    records = list(iter_feed([doc(record("11") + "</product>\n", record("12"))]))
    assert [(r.supplier_sku, type(r).__name__) for r in records] == [
        ("11", "SupplierProduct"),
        (None, "InvalidRecord"),
        ("12", "SupplierProduct"),
    ]
    cdata = record("13", extra="<content><![CDATA[ <p>x</product></p> ]]></content>")
    (product,) = products(iter_feed([doc(cdata)]))
    assert product.raw["content"] == "<p>x</product></p>"
    # An empty catalog written as a self-closing root.
    head = b'<?xml version="1.0" encoding="euc-kr"?>\n<zentrade version="ZENTRADE XML 1.0"/>\n'
    assert list(iter_feed([head])) == []
    # An oversized record is skipped to the next <product> without being held in memory.
    big = record("9", extra="<content><![CDATA[" + "x" * 3000 + "]]></content>")
    records = list(iter_feed(chunked(doc(big, record("10")), 512), max_record_bytes=1024))
    assert "exceeds 1024 bytes" in records[0].reason and records[1].supplier_sku == "10"
    assert records[0].raw["length"] <= 4096


def _hostile_expectations(size: int, every: int) -> tuple[str, Counter[str]]:
    codes = hashlib.sha256("\n".join(product_code(i) for i in range(size)).encode()).hexdigest()
    kinds = Counter(k for i in range(size) if (k := hostile_kind(i, every)))
    return codes, kinds


# --------------------------------------------------------------------------- 100k + RSS

# Runs in a child process: parse a generated hostile feed of SIZE products (generated lazily,
# never held), report what came out and the growth of the peak RSS over the RSS after a warm-up
# parse. RSS includes libxml2's C memory, which tracemalloc cannot see. The peak is the kernel's
# VmHWM, reset after the warm-up (``/proc/self/clear_refs`` 5), not ``ru_maxrss``: Linux carries
# the parent's high-water mark into a forked-and-exec'd child, so a child of pytest (~120 MB)
# would report pytest's peak, not its own.
_PROBE = r"""
import hashlib, json, sys
from collections import Counter
from datetime import UTC, datetime
import psutil
from dropship.platforms.gentrade import iter_feed, InvalidRecord
from dropship.sandbox.gentrade import HOSTILE_KINDS, render_feed
from dropship.sandbox.world import iter_catalog

size, every = int(sys.argv[1]), int(sys.argv[2])
def run(n):
    items = iter_catalog(42, "gentrade", n, now=datetime(2025, 1, 1, tzinfo=UTC),
                         price_drift=0.0, soldout_rate=0.05)
    codes, kinds, unmatched = hashlib.sha256(), Counter(), []
    first = True
    for r in iter_feed(render_feed(items, 42, now=datetime(2025, 1, 1, tzinfo=UTC),
                                   hostile_every=every)):
        if isinstance(r, InvalidRecord):
            kind = next((k for k, words in HOSTILE_KINDS.items() if words in r.reason), None)
            kinds[kind or "?"] += 1
            if kind is None:
                unmatched.append(r.reason)
        else:
            codes.update((("" if first else "\n") + r.supplier_sku).encode())
            first = False
    return codes, kinds, unmatched
def peak_rss():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:"))
run(5 * every)  # warm-up: imports, lazy tables, every code path once (incl. an oversized record)
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset VmHWM to the current RSS
before = psutil.Process().memory_info().rss
codes, kinds, unmatched = run(size)
print(json.dumps({"codes": codes.hexdigest(), "kinds": kinds, "unmatched": unmatched[:5],
                  "rss_before": before, "rss_growth": max(0, peak_rss() - before)}))
"""

EVERY = 1000


@pytest.fixture(scope="module")
def probes() -> dict[int, dict[str, Any]]:
    """One child process per size (10,000 and 100,000 products, one broken record before every
    1000th product, each kind in turn); run once for the two tests below."""
    results = {}
    for size in (10_000, 100_000):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, str(size), str(EVERY)],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        results[size] = json.loads(out.stdout)
    return results


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_hostile_100k_feed_yields_every_good_record_and_one_reject_per_bad(
    probes: dict[int, dict[str, Any]],
) -> None:
    for size, result in probes.items():
        codes, kinds = _hostile_expectations(size, EVERY)
        assert result["unmatched"] == []
        assert Counter(result["kinds"]) == kinds, size  # exactly one reject per broken record
        assert set(kinds) == set(HOSTILE_KINDS) or size < 100_000
        assert result["codes"] == codes, size  # every good product, in order, nothing else


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_parser_memory_is_flat_in_catalog_size(probes: dict[int, dict[str, Any]]) -> None:
    """RSS, not tracemalloc (which cannot see libxml2). The 100,000-product document is about
    130 MB of EUC-KR; keeping it (or the parsed tree) costs far more than the bound below, while
    the record-at-a-time reader holds one chunk and one record whatever the size."""
    small, large = probes[10_000]["rss_growth"], probes[100_000]["rss_growth"]
    assert large < small + 8 * 2**20, (small, large)
    assert large < 16 * 2**20, large


# --------------------------------------------------------------------------- helpers' sanity


def test_cut_stream_from_a_raw_socket_is_transient() -> None:
    """A server that promises more bytes than it sends (Content-Length), then closes: urllib3
    raises IncompleteRead/ProtocolError, which must surface as TransientError."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    body = doc(record("1"), record("2"))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
            + f"Content-Length: {len(body) + 5000}\r\n\r\n".encode()
            + body[:-20]
        )
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    account = AccountSettings.model_validate(
        {"name": "gt_cut", "platform": "gentrade", "base_url": base, "credentials": CREDS}
    )
    http = PlatformHttp("gentrade", "gt_cut", base, None, timeout=(2, 5))
    with pytest.raises(TransientError, match=r"interrupted|cut short"):
        list(GentradeConnector(account=account, http=http).iter_products())
    thread.join(5)
    listener.close()


def test_world_opendates_are_in_the_year_before_the_epoch() -> None:
    days = {opendate(SEED, i) for i in range(500)}
    assert min(days) >= (WORLD_EPOCH - timedelta(days=366)).date()
    assert max(days) <= WORLD_EPOCH.astimezone(KST).date()
    now = datetime.now(UTC)
    items = list(iter_catalog(SEED, "gentrade", 3, now=now, price_drift=0, soldout_rate=0))
    assert b"</zentrade>" in b"".join(render_feed(items, SEED, now=datetime.now(UTC)))


# --------------------------------------------------------------------------- feed shards


def _hostile_sandbox_document(size: int, every: int) -> bytes:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    items = iter_catalog(42, "gentrade", size, now=now, price_drift=0.0, soldout_rate=0.1)
    return b"".join(render_feed(items, 42, now=now, hostile_every=every))


# Records whose owner cannot be told from a plain reading of the bytes, each next to the record
# it collides with: a code written with a character reference (a copy of product 21, and a
# product of its own, 4242), attributes that mention ``code`` without being it, a start tag
# without any code, and a duplicate of a plain code.
TRICKY = (
    record("21"),
    # A copy of 21 with a </product> inside its CDATA: the whole unit parses (into a duplicate
    # in 21's shard, into a product in the others), so 21's shard cuts the record at the first
    # </product> and rejects it. Its owner is 21's shard whatever each shard has seen.
    record("&#50;1", extra="<content><![CDATA[ x</product> ]]></content>"),
    record("&#50;1"),  # the same code 21 again: a duplicate, whichever shard reads it
    record("&#52;242"),  # product 4242, readable only by parsing
    record("4242"),  # ...so this one is its duplicate
    '<product x-code="31" code="32">' + record("0").split(">", 1)[1],  # product 32, not 31
    "<product a=\"code='41'\" code='42'>" + record("0").split(">", 1)[1],  # product 42
    record("42"),  # duplicate of the one above
    record("51").replace(' code="51"', ""),  # no code: shard 0's reject
    record("61") + "stray text\n",  # stray content after a record: its record's owner
    record("71").replace("</product>", ""),  # unclosed: shard 0's
    record("81"),
    record("81", price="0"),  # duplicate code that is also broken: a reject either way
)


def _key(record: Any) -> tuple[Any, ...]:
    if isinstance(record, InvalidRecord):
        return ("reject", record.supplier_sku, record.reason, json.dumps(record.raw))
    return (type(record).__name__, record.supplier_sku, record)


def _read_shards(document: bytes, shards: int, chunk: int, **kwargs: Any) -> list[list[Any]]:
    return [
        list(FeedReader(chunked(document, chunk), shard=shard, shards=shards, **kwargs))
        for shard in range(shards)
    ]


@pytest.mark.parametrize(("shards", "chunk"), [(2, 65_536), (3, 4093), (5, 997)])
def test_feed_shards_read_every_record_exactly_once(shards: int, chunk: int) -> None:
    hostile = _hostile_sandbox_document(600, every=9)
    document = hostile.replace(b"</zentrade>", doc(*TRICKY, head=b"").rstrip(b"\n"))
    whole = list(FeedReader(chunked(document, chunk)))
    assert sum(isinstance(r, InvalidRecord) for r in whole) > len(HOSTILE_KINDS)
    parts = _read_shards(document, shards, chunk)
    # The shards together are the whole read, record for record: nothing twice, nothing lost.
    assert Counter(_key(r) for part in parts for r in part) == Counter(_key(r) for r in whole)
    codes = [r.supplier_sku for r in whole if isinstance(r, SupplierProduct)]
    assert len(codes) == len(set(codes)) and {"21", "4242", "32", "42", "81"} <= set(codes)
    assert "31" not in codes and "41" not in codes
    duplicates = 0
    for shard, part in enumerate(parts):
        assert part, f"shard {shard} read nothing"
        for r in part:
            if isinstance(r, SupplierProduct):
                assert feed_shard(r.supplier_sku, shards) == shard
            elif r.reason.startswith("duplicate product code"):
                duplicates += 1  # with the copy it repeats, so the check could see it
                assert feed_shard(r.supplier_sku, shards) == shard
            elif "no </product>" in r.reason or "no code attribute" in r.reason:
                assert shard == 0, r  # no code to tell its shard
    assert duplicates == sum(
        1 for r in whole if isinstance(r, InvalidRecord) and r.reason.startswith("duplicate")
    )
    assert duplicates >= 3


def test_feed_shards_count_and_fingerprint_per_shard() -> None:
    document = _hostile_sandbox_document(400, every=7)
    asked_whole: list[tuple[str, str]] = []
    whole = list(
        FeedReader(iter([document]), known=lambda pairs: asked_whole.extend(pairs) or set())
    )
    stored = {
        (r.supplier_sku, r.source_fingerprint) for r in whole if isinstance(r, SupplierProduct)
    }
    asked: list[tuple[str, str]] = []

    def known(pairs: Any) -> set[tuple[str, str]]:
        asked.extend(pairs)
        return {pair for pair in pairs if pair in stored}

    readers = [
        FeedReader(chunked(document, 8191), shard=shard, shards=2, known=known)
        for shard in range(2)
    ]
    parts = [list(reader) for reader in readers]
    # Each shard asks only for its own records, and gets back only its own as unchanged.
    assert Counter(asked) == Counter(asked_whole) and len(asked) > len(stored)
    unchanged = [r for part in parts for r in part if isinstance(r, UnchangedRecord)]
    assert sorted(r.supplier_sku for r in unchanged) == sorted(sku for sku, _ in stored)
    rejects = [r for part in parts for r in part if isinstance(r, InvalidRecord)]
    assert Counter(_key(r) for r in rejects) == Counter(
        _key(r) for r in whole if isinstance(r, InvalidRecord)
    )
    for reader, part in zip(readers, parts, strict=True):
        assert (
            reader.products == reader.unparsed == sum(isinstance(r, UnchangedRecord) for r in part)
        )
        assert reader.rejects == sum(isinstance(r, InvalidRecord) for r in part)


def test_feed_shards_in_an_encoding_whose_bytes_cannot_be_routed() -> None:
    # Not ASCII-transparent as far as the reader knows: every record is parsed by every shard
    # and still yielded by its owner only.
    head = b'<?xml version="1.0" encoding="iso-8859-15"?>\n<zentrade version="ZENTRADE XML 1.0">\n'
    records = [record(str(n)).replace("스마일뺏지", "smile") for n in range(1, 40)]
    document = doc(*records, records[5], record("&#55;").replace("스마일뺏지", "x"), head=head)
    whole = list(iter_feed([document]))
    parts = _read_shards(document, 3, 50)
    assert Counter(_key(r) for part in parts for r in part) == Counter(_key(r) for r in whole)
    assert sum(isinstance(r, InvalidRecord) for r in whole) == 2


def test_feed_shards_document_faults_fail_every_shard() -> None:
    cut = doc(record("1"), record("2"), record("3")[:50], end=False)
    rejects = []
    for shard in range(3):
        seen: list[Any] = []
        with pytest.raises(TransientError, match=rf"truncated .*shard {shard + 1} of 3"):
            for r in iter_feed(chunked(cut), shard=shard, shards=3):
                seen.append(r)
        rejects += [r for r in seen if isinstance(r, InvalidRecord)]
    (reject,) = rejects  # the cut record: one reject, from shard 0
    assert "truncated" in reject.reason
    for body in (b"", b"<html>error</html>"):
        for shard in range(2):
            with pytest.raises(TransientError, match="not a <zentrade>"):
                list(iter_feed([body], shard=shard, shards=2))
    with pytest.raises(ValueError, match="shard 2"):
        FeedReader([b""], shard=2, shards=2)


def test_feed_shards_option_plans_the_slices(
    sandbox: Any, connector_settings: PlatformSettings, redis_url: str
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 90})
    account = connector_settings.accounts["gentrade_main"]
    client = redis_lib.Redis.from_url(redis_url)

    def with_shards(value: str) -> GentradeConnector:
        custom = account.model_copy(update={"options": {"feed_shards": value}})
        conn = build_connector(custom, connector_settings, client)
        assert isinstance(conn, GentradeConnector)
        return conn

    try:
        assert with_shards("1").plan_slices() == [CollectSlice("feed")]
        three = with_shards("3")
        pieces = three.plan_slices()
        assert [p.key for p in pieces] == ["feed:0/3", "feed:1/3", "feed:2/3"]
        read = [products(three.iter_slice(CollectSlice.from_json(p.to_json()))) for p in pieces]
        codes = [p.supplier_sku for part in read for p in part]
        assert sorted(codes) == sorted(product_code(i) for i in range(90))
        assert all(read)  # 90 codes spread over three shards
        # An incremental run and a whole read (iter_products) are not sharded.
        since = datetime.now(KST) - timedelta(days=1)
        assert [p.key for p in three.plan_slices(since)][1] == "runout"
        assert [p.supplier_sku for p in products(three.iter_products())] == [
            product_code(i) for i in range(90)
        ]
        for bad in ("0", "17", "two"):
            with pytest.raises(ConfigurationError, match="OPTIONS__FEED_SHARDS"):
                with_shards(bad)
        with pytest.raises(PermanentError, match="not a valid feed shard"):
            list(three.iter_slice(CollectSlice("feed:3/3", {"shard": 3, "shards": 3})))
    finally:
        client.close()
