"""Zentrade (``gentrade`` in the code) contract: the published examples of the Zentrade API guide
(file id 15186231462), rewritten as fixtures in ``fixtures/zentrade/``, are parsed by the
connector *and* are the shape the sandbox serves, so both sides are held to the same document.

* ``product_api.xml`` — a ``<zentrade version="ZENTRADE XML 1.0">`` document as the guide shows
  it (EUC-KR, CDATA fields, option rows with full prices, ``<status runout opendate>``).
* ``order_api.xml`` — a ``<zentrade version="ZENTRADE ORDER XML 1.0">`` lookup answer.
* ``requests.json`` — the documented request parameters of both endpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from lxml import etree

from dropship.platforms.gentrade import (
    GentradeConnector,
    InvalidRecord,
    iter_feed,
    parse_order_document,
)
from dropship.platforms.interfaces import ProductOption, SupplierProduct
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierWorld

FIXTURES = Path(__file__).parent / "fixtures" / "zentrade"
CREDS = SANDBOX_CREDENTIALS["gentrade"]
REQUESTS = json.loads((FIXTURES / "requests.json").read_text(encoding="utf-8"))

pytestmark = pytest.mark.usefixtures("frozen_world_clock")


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def shape(document: bytes, record_tag: str) -> tuple[dict[str, Any], set[tuple[str, ...]]]:
    """The root's tag and attribute names, and every (path, attribute names) under each
    ``record_tag`` element; ``ord_itemN`` counts as one name."""
    root = etree.fromstring(document, parser=etree.XMLParser(resolve_entities=False))
    paths: set[tuple[str, ...]] = set()
    for record in root.iter(record_tag):
        paths.add((record_tag, *sorted(record.attrib)))
        for node in record.iterdescendants():
            if isinstance(node.tag, str):
                tag = "ord_itemN" if node.tag.startswith("ord_item") else node.tag
                paths.add((tag, *sorted(node.attrib)))
    return {"tag": root.tag, "attrs": sorted(root.attrib), "version": root.get("version")}, paths


def get(sandbox: Any, path: str, **params: str) -> requests.Response:
    return requests.get(
        sandbox.base_url + "/gentrade" + path,
        params={"id": CREDS["id"], "m_skey": CREDS["key"], **params},
        timeout=10,
    )


# --------------------------------------------------------------------------- product_api.php


def test_the_guide_example_parses_to_the_right_products() -> None:
    document = fixture_bytes("product_api.xml")
    assert document.startswith(b'<?xml version="1.0" encoding="euc-kr"?>')
    records = list(iter_feed([document]))
    assert not [r for r in records if isinstance(r, InvalidRecord)]
    badge, bottle = records
    assert isinstance(badge, SupplierProduct) and isinstance(bottle, SupplierProduct)
    assert (badge.supplier_sku, badge.name, badge.cost_price, badge.category) == (
        "3",
        "[연동시험] 스마일 배지 40개입 3cm/4.5cm",
        2100,
        "011",
    )
    # Option rows carry full prices (2100 / 3500); we store deltas to buyprice, keyed by label.
    assert badge.options == (
        ProductOption("사이즈", "3cm-일반형", 0, 10, "3cm-일반형"),
        ProductOption("사이즈", "4.5cm-일반형", 1400, 10, "4.5cm-일반형"),
        ProductOption("사이즈", "3cm-깜찍이형", 0, 10, "3cm-깜찍이형"),
        ProductOption("사이즈", "4.5cm-깜찍이형", 1400, 10, "4.5cm-깜찍이형"),
    )
    assert (badge.status, badge.stock, badge.stock_assumed) == ("active", 10, True)
    assert len(badge.images) == 3 and badge.raw["taxmode"] == "Y"
    assert badge.raw["keyword"] == "배지,스마일배지,브로치,버튼배지"
    assert badge.raw["opendate"] == "2020-12-31" and "<img" in badge.raw["content"]
    assert (bottle.status, bottle.stock, bottle.stock_assumed) == ("soldout", 0, False)
    assert bottle.options == () and bottle.raw["brand"] == "한빛"


def test_the_sandbox_serves_the_guide_shape(sandbox: Any) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 60})
    served = get(sandbox, REQUESTS["product_api"]["path"]).content
    assert served.startswith(b'<?xml version="1.0" encoding="euc-kr"?>')
    assert shape(served, "product") == shape(fixture_bytes("product_api.xml"), "product")
    # Option rows: four ^|^ fields, rows separated by ↑=↑, full prices.
    world = SupplierWorld(sandbox.state)
    root = etree.fromstring(served)
    checked = 0
    for node in root.iter("product"):
        item = world.item("gentrade", int(node.get("code")) - 500_000)
        assert item is not None
        rows = [r.strip() for r in (node.findtext("option") or "").split("↑=↑") if r.strip()]
        assert len(rows) == len(item.options)
        for row, option in zip(rows, item.options, strict=True):
            label, price, _consumer, _image = row.split("^|^")
            assert (label, int(price)) == (option.value, item.price + option.price_delta)
            checked += 1
    assert checked


def test_the_sandbox_accepts_exactly_the_documented_parameters(sandbox: Any) -> None:
    spec = REQUESTS["product_api"]
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 20})
    for runout in spec["runout"]:
        assert get(sandbox, spec["path"], runout=runout).status_code == 200
    assert get(sandbox, spec["path"], goodsno="500003").content.count(b"<product ") == 1
    window = {"opendate_s": "2024-01-01", "opendate_e": "2024-12-31"}
    assert get(sandbox, spec["path"], **window).status_code == 200
    assert get(sandbox, spec["path"], opendate_s="2024-01-01").status_code == 400  # both needed
    missing = requests.get(sandbox.base_url + "/gentrade" + spec["path"], timeout=5)
    assert missing.status_code == 403  # id and m_skey are required


def test_the_connector_sends_only_documented_parameters(
    make_connector: Callable[[str], Any],
) -> None:
    conn = make_connector("gentrade_main")
    assert isinstance(conn, GentradeConnector)
    documented = set(REQUESTS["product_api"]["optional"])
    for piece in conn.plan_slices() + conn.plan_slices(datetime(2026, 11, 1, tzinfo=UTC)):
        sent = conn._slice_params(piece)
        assert set(sent) <= documented, piece
        # A full run's feed shard is the connector's own business, never a query parameter.
        assert set(piece.params) - set(sent) <= {"shard", "shards"}, piece
        if "opendate_s" in piece.params:
            assert "opendate_e" in piece.params  # the guide: both or the search does not apply


# --------------------------------------------------------------------------- order_api.php


def test_the_guide_order_example_parses() -> None:
    (order,) = parse_order_document(fixture_bytes("order_api.xml"))
    assert (order.ordno, order.pordno) == ("1606712345678", "DS-20261130-0001")
    assert (order.delicom, order.delinum) == ("CJ대한통운", "612345678901")
    assert order.ord_date == "2026-11-30 10:12:00" and len(order.items) == 2
    assert "김수신" not in repr(order)  # receiver fields are not kept


def test_the_sandbox_order_lookup_has_the_guide_shape(sandbox: Any) -> None:
    spec = REQUESTS["order_api"]
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 20}, tracking_delay_s=0)
    item = next(i for i in SupplierWorld(sandbox.state).items("gentrade") if i.options)
    registered = requests.post(
        f"{sandbox.base_url}/_sandbox/gentrade/sheet_orders",
        json={
            "pordno": "DS-20261130-0001",
            "lines": [{"goodsno": str(500_000 + item.index), "qty": 1}],
            "receiver": {"name": "김수신"},
        },
        timeout=5,
    ).json()
    by_pordno = get(sandbox, spec["path"], pordno="DS-20261130-0001").content
    by_ordno = get(sandbox, spec["path"], ordno=registered["ordno"]).content
    assert shape(by_pordno, "ord_info") == shape(fixture_bytes("order_api.xml"), "ord_info")
    assert parse_order_document(by_pordno) == parse_order_document(by_ordno)
    (order,) = parse_order_document(by_pordno)
    assert len(order.ordno) == spec["ordno_digits"] and order.delinum
    assert get(sandbox, spec["path"]).status_code == 400  # one of ordno/pordno is required
