"""Domeggook / Domeme contract: the documented request and response examples (rewritten as
fixtures in ``fixtures/domeggook/``, each naming its source) are parsed by the connector to the
expected records, and the sandbox answers the same requests with the same shape (every key of
the example, with the same JSON type, a list where the example has a list and one object where
it has one object). Both sides are held to the published shape, not to each other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dropship.platforms.domeggook import (
    _view_items,
    _walk_categories,
    as_list,
    normalise_view,
    view_is_gone,
)
from dropship.platforms.interfaces import SupplierProduct
from dropship.sandbox import domeggook as sandbox_dg
from dropship.sandbox.core import SandboxServer
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierWorld
from tests.platforms.conftest import SandboxFixture, sandbox_test_config

FIXTURES = Path(__file__).parent / "fixtures" / "domeggook"
AID = SANDBOX_CREDENTIALS["domeggook"]["api_key"]


@pytest.fixture(scope="module")
def dg_server() -> Iterator[SandboxServer]:
    server = SandboxServer(sandbox_test_config(), host="127.0.0.1", port=0).start()
    yield server
    server.stop()


@pytest.fixture
def dg_sandbox(dg_server: SandboxServer) -> Iterator[SandboxFixture]:
    """The sandbox, reset, its world clock frozen for the test (same world instant throughout)."""
    fixture = SandboxFixture(dg_server)
    fixture.reset()
    fixture.freeze_clock()
    yield fixture
    fixture.http.close()


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert data.get("source"), f"{name} must name its source"
    return data


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_shape(expected: Any, actual: Any, path: str = "$") -> None:
    """Every key of ``expected`` is in ``actual`` with the same JSON type, recursively (lists:
    element by element of the shorter one; objects keyed by position, like getCategoryList's
    tree, compare their first entries)."""
    assert json_type(actual) == json_type(expected), (
        f"{path}: {json_type(actual)} where the example has {json_type(expected)}"
    )
    if isinstance(expected, dict):
        keys = list(expected)
        if keys and all(k.isdigit() for k in keys) and actual and all(k.isdigit() for k in actual):
            assert_shape(expected[keys[0]], next(iter(actual.values())), f"{path}.<n>")
            return
        for key in keys:
            assert key in actual, f"{path}.{key} is missing (has {sorted(actual)})"
            assert_shape(expected[key], actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        for n, (e, a) in enumerate(zip(expected, actual, strict=False)):
            assert_shape(e, a, f"{path}[{n}]")


def sandbox_get(sandbox: Any, params: dict[str, Any]) -> Any:
    response = requests.get(f"{sandbox.base_url}/domeggook/ssl/api/", params=params, timeout=5)
    assert response.status_code == 200  # errors too, like the real service
    return response.json()


def good_items(sandbox: Any) -> list[tuple[Any, Any]]:
    seed = sandbox.state.config.seed
    items = []
    for item in SupplierWorld(sandbox.state).items("domeggook"):
        state = sandbox_dg.item_state(seed, item)
        if state.listed("supply") and not state.malformed:
            items.append((item, state))
    return items


# --------------------------------------------------------------------------- connector side


def test_the_connector_parses_the_list_examples() -> None:
    for name in ("get_item_list.json", "get_item_list_single.json"):
        data = fixture(name)
        body = data["response"]["domeggook"]
        items = as_list(body["list"].get("item"))
        assert [i["no"] for i in items] == data["expected"]["numbers"], name
        assert int(body["header"]["numberOfPages"]) == data["expected"]["numberOfPages"]
        assert int(body["header"]["numberOfItems"]) == data["expected"]["numberOfItems"]
        assert data["request"]["market"] == "supply" and data["request"]["ca"]


def test_the_connector_parses_the_view_example() -> None:
    data = fixture("get_item_view.json")
    product = normalise_view(data["response"]["domeggook"], "supply")
    assert isinstance(product, SupplierProduct), product
    expected = data["expected"]
    for field in (
        "supplier_sku",
        "name",
        "cost_price",
        "shipping_fee",
        "stock",
        "status",
        "category",
        "open_market_sellable",
        "adult_only",
    ):
        assert getattr(product, field) == expected[field], field
    assert [
        [o.name, o.value, o.price_delta, o.stock, o.supplier_option_code] for o in product.options
    ] == expected["options"]


def test_the_connector_parses_the_multiple_example() -> None:
    data = fixture("get_item_view_multiple.json")
    views = _view_items(data["response"]["domeggook"])
    asked = data["request"]["no"].split(",")
    assert len(asked) <= 100 and data["request"]["multiple"] == "true"
    by_no = {v["basis"]["no"]: v for v in views}
    for no, expected in data["expected"]["products"].items():
        product = normalise_view(by_no[no], "supply")
        assert isinstance(product, SupplierProduct)
        for field, value in expected.items():
            assert getattr(product, field) == value, (no, field)
    gone = {n for n in asked if n not in by_no or view_is_gone(by_no[n], "supply")}
    assert gone == set(data["expected"]["gone"])
    # one view comes as an object, not a list
    single = {"multipleResult": {"item": views[0]}}
    assert _view_items(single) == [views[0]]


def test_the_connector_sweeps_the_category_example() -> None:
    data = fixture("get_category_list.json")
    items = data["response"]["domeggook"]["items"]
    sweep = [code for code, depth, locked in _walk_categories(items) if depth == 2 and not locked]
    assert sweep == data["expected"]["sweep"]


# --------------------------------------------------------------------------- sandbox side


def test_the_sandbox_serves_the_list_shape(dg_sandbox: SandboxFixture) -> None:
    dg_sandbox.configure_suppliers(catalog_sizes={"domeggook": 120})
    items = good_items(dg_sandbox)
    code = sandbox_dg.CATEGORY_CODES[items[0][0].category_code][0]
    count = sum(1 for i, _ in items if sandbox_dg.CATEGORY_CODES[i.category_code][0] == code)
    assert count >= 3
    example = fixture("get_item_list.json")
    body = sandbox_get(dg_sandbox, {**example["request"], "aid": AID, "ca": code})
    assert_shape(example["response"], body)
    single = fixture("get_item_list_single.json")
    params = {**single["request"], "aid": AID, "ca": code, "sz": str(count - 1), "pg": "2"}
    assert_shape(single["response"], sandbox_get(dg_sandbox, params))


def test_the_sandbox_serves_the_view_shape(dg_sandbox: SandboxFixture) -> None:
    example = fixture("get_item_view.json")
    item, _ = next((i, s) for i, s in good_items(dg_sandbox) if i.options and s.tiered)
    no = sandbox_dg.item_no(item.index)
    body = sandbox_get(dg_sandbox, {**example["request"], "aid": AID, "no": no})
    expected_view = dict(example["response"]["domeggook"])
    select_opt = json.loads(expected_view.pop("selectOpt"))
    assert_shape({"domeggook": expected_view}, body)
    served = json.loads(body["domeggook"]["selectOpt"])  # also a JSON document in a string
    assert set(served) >= set(select_opt) - {"orgSet"}
    example_row_keys = set().union(*(row.keys() for row in select_opt["data"].values()))
    for row in served["data"].values():
        assert set(row) >= example_row_keys
        assert all(isinstance(v, str) for v in row.values())
    assert "|" in body["domeggook"]["price"]["supply"]  # the tier string form is served too


def test_the_sandbox_serves_the_multiple_shape(dg_sandbox: SandboxFixture) -> None:
    example = fixture("get_item_view_multiple.json")
    first, second = good_items(dg_sandbox)[:2]
    numbers = [sandbox_dg.item_no(first[0].index), sandbox_dg.item_no(second[0].index), "39999999"]
    body = sandbox_get(dg_sandbox, {**example["request"], "aid": AID, "no": ",".join(numbers)})
    assert_shape(example["response"], body)
    assert len(body["domeggook"]["multipleResult"]["item"]) == 2  # unknown number left out


def test_the_sandbox_serves_the_category_shape(dg_sandbox: SandboxFixture) -> None:
    example = fixture("get_category_list.json")
    body = sandbox_get(dg_sandbox, {**example["request"], "aid": AID})
    assert_shape(example["response"], body)


def test_the_sandbox_answers_the_error_examples(dg_sandbox: SandboxFixture) -> None:
    for name, case in fixture("errors.json")["cases"].items():
        params = dict(case["request"])
        if name != "bad_key":
            params["aid"] = AID
        body = sandbox_get(dg_sandbox, params)
        assert_shape(case["response"], body)
        assert body["errors"]["code"] == case["response"]["errors"]["code"], name
        if name == "no_search_condition":
            assert "검색 조건" in body["errors"]["message"]
        if name == "no_such_service":
            assert "서비스가 없습니다" in body["errors"]["message"]
