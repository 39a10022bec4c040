"""OwnerClan contract: the connector, the sandbox and the published examples agree on one schema.

* Every GraphQL document the connector can send validates against the SDL written from the
  published material (``dropship/sandbox/ownerclan_schema.graphql``); the shapes the old
  connector used (``images`` without ``size``, ``$dateFrom: Int``, ``shippingCompanyName``) do not.
* The documented example requests (fixtures under ``fixtures/ownerclan/``, rewritten from the
  sources listed in its README) validate; the documented example responses fit the schema
  (every field exists, every value has its type: executed through graphql-core's serialisers);
  the connector parses them to the right records.
* The sandbox serves the documented requests over real HTTP and answers in the same shape, and
  refuses what the schema refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from graphql import (
    GraphQLObjectType,
    build_schema,
    execute,
    get_named_type,
    is_leaf_type,
    parse,
    validate,
)

from dropship.platforms.interfaces import SupplierProduct
from dropship.platforms.ownerclan import (
    _shipments_of,
    documents,
    from_ms,
    normalise_item,
)
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.ownerclan import SCHEMA_PATH, build_ownerclan_schema, item_state
from dropship.sandbox.suppliers import SupplierWorld

FIXTURES = Path(__file__).parent / "fixtures" / "ownerclan"
SCHEMA = build_ownerclan_schema()


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def fixture_json(name: str) -> Any:
    return json.loads(fixture_text(name))


def errors_of(document: str) -> list[str]:
    return [e.message for e in validate(SCHEMA, parse(document))]


# Arguments the schema requires, given when a selection is derived from a response.
REQUIRED_ARGS = {"images": "(size: large)", "cancelOrder": '(key: "x")'}


def selection(type_: Any, value: Any) -> str:
    """The selection set asking for exactly the fields present in a response value, guided by
    the schema (leaf fields get no sub-selection). A key the schema lacks is still asked for,
    so validation names it."""
    named = get_named_type(type_)
    if not isinstance(named, GraphQLObjectType):
        return ""
    if isinstance(value, list):
        objects = [v for v in value if isinstance(v, dict)]
        value = {k: v for obj in objects for k, v in obj.items()} if objects else None
    if not isinstance(value, dict) or not value:  # nothing present: ask for the leaves
        leaves = [n for n, f in named.fields.items() if is_leaf_type(get_named_type(f.type))]
        return "{ " + " ".join(leaves) + " }"
    fields = []
    for key, sub in value.items():
        field = named.fields.get(key)
        subselection = selection(field.type, sub) if field is not None else ""
        fields.append(f"{key}{REQUIRED_ARGS.get(key, '')} {subselection}")
    return "{ " + " ".join(fields) + " }"


def numbers_as_float(value: Any) -> Any:
    """Float fields come back as 9800.0 for 9800: compare numbers by value."""
    if isinstance(value, dict):
        return {k: numbers_as_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers_as_float(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def assert_fits_schema(response: dict[str, Any], operation: str = "query") -> None:
    """Every field of a documented response exists in the schema and every value has its type:
    the response is served back through graphql-core's serialisers unchanged."""
    data = response["data"]
    root = SCHEMA.mutation_type if operation == "mutation" else SCHEMA.query_type
    document = f"{operation} {selection(root, data)}"
    assert errors_of(document) == [], document
    result = execute(SCHEMA, parse(document), root_value=data)
    assert result.errors is None, result.errors
    assert numbers_as_float(result.data) == numbers_as_float(data)


def same_shape(served: Any, documented: Any, path: str = "") -> list[str]:
    """Where the two answers differ in field names or nesting (values may differ; a null or an
    empty list on either side matches anything: those fields are nullable)."""
    if served is None or documented is None or served == [] or documented == []:
        return []
    if isinstance(served, dict) and isinstance(documented, dict):
        if set(served) != set(documented):
            return [f"{path}: {sorted(set(served) ^ set(documented))}"]
        return [d for k in served for d in same_shape(served[k], documented[k], f"{path}.{k}")]
    if isinstance(served, list) and isinstance(documented, list):
        return same_shape(served[0], documented[0], f"{path}[0]")
    if isinstance(served, dict | list) or isinstance(documented, dict | list):
        return [f"{path}: object vs value"]
    return []


# ---------------------------------------------------------------------------- the schema


def test_the_sdl_file_is_a_valid_schema() -> None:
    build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))  # raises on any mistake


@pytest.mark.parametrize("document", documents(), ids=lambda d: d.split("(")[0][:40])
def test_every_connector_document_validates_against_the_published_schema(document: str) -> None:
    assert errors_of(document) == []


OLD_SHAPES = {
    "images without size": 'query { item(key: "W1") { key images } }',
    "dateFrom as Int": (
        "query ($dateFrom: Int) { allItems(dateFrom: $dateFrom) { edges { cursor } } }"
    ),
    "shippingCompanyName": (
        'query { allOrders(note: "x") { edges { node { products { shippingCompanyName } } } } }'
    ),
    "unknown item status": "query { allItems(status: active) { edges { cursor } } }",
    "order option attributes as objects": (
        'mutation { createOrder(input: {recipient: {name: "a", phoneNumber: "0",'
        ' destinationAddress: {addr1: "b"}}, products: [{itemKey: "W1", quantity: 1,'
        ' optionAttributes: [{name: "색상", value: "빨강"}]}]}) { key } }'
    ),
}


@pytest.mark.parametrize("name", sorted(OLD_SHAPES))
def test_shapes_the_real_schema_refuses_fail_validation(name: str) -> None:
    assert errors_of(OLD_SHAPES[name]), name


# ---------------------------------------------------------------------------- documented examples


@pytest.mark.parametrize(
    "name",
    [
        "item_query.graphql",
        "all_items_query.graphql",
        "list_orders_query.graphql",
        "create_order_mutation.graphql",
        "cancel_order_mutation.graphql",
    ],
)
def test_documented_requests_validate(name: str) -> None:
    assert errors_of(fixture_text(name)) == []


def test_documented_create_order_input_coerces_to_order_input() -> None:
    result = execute(
        SCHEMA,
        parse(fixture_text("create_order_mutation.graphql")),
        variable_values=fixture_json("create_order_input.json"),
        root_value={"createOrder": []},
    )
    assert result.errors is None, result.errors


@pytest.mark.parametrize(
    ("name", "operation"),
    [
        ("all_items_response.json", "query"),
        ("list_orders_response.json", "query"),
        ("cancel_order_response.json", "mutation"),
    ],
)
def test_documented_responses_fit_the_schema(name: str, operation: str) -> None:
    assert_fits_schema(fixture_json(name), operation)


def test_the_connector_parses_the_documented_item() -> None:
    node = fixture_json("all_items_response.json")["data"]["allItems"]["edges"][0]["node"]
    product = normalise_item(node)
    assert isinstance(product, SupplierProduct), product
    assert product.supplier_sku == "W012345"
    assert product.cost_price == 9800 and product.shipping_fee == 2500
    assert product.stock == 9999 and product.options == ()  # the attribute-less option
    assert product.status == "active"
    assert product.open_market_sellable is True and product.adult_only is False
    assert product.updated_at == from_ms(1560000000000)  # milliseconds, not seconds
    assert product.updated_at.year == 2019
    assert product.category == "101004005002"
    assert product.images == ("https://cdn.example.invalid/item/W012345/640/v1.jpg",)


def test_the_connector_reads_tracking_from_the_documented_order() -> None:
    edges = fixture_json("list_orders_response.json")["data"]["allOrders"]["edges"]
    (shipment,) = _shipments_of("DS-20261201-0001", edges[0]["node"])
    assert shipment.carrier == "CJ" and shipment.tracking_number == "612345678901"
    assert shipment.supplier_order_id == "2026120109300000001A"
    assert shipment.shipped_at == from_ms(1764580000000)
    assert _shipments_of("DS-OTHER", edges[0]["node"]) == []  # note must match exactly


def test_the_documented_token_lasts_thirty_days() -> None:
    claims = fixture_json("auth_token_claims.json")
    assert claims["exp"] - claims["iat"] == 30 * 86_400


# ---------------------------------------------------------------------------- the sandbox


def bearer(sandbox: Any) -> str:
    body = fixture_json("auth_request.json")
    body.update(SANDBOX_CREDENTIALS["ownerclan"])
    response = requests.post(f"{sandbox.base_url}/ownerclan/auth", json=body, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")  # the JWT as text
    return response.text


def ask(sandbox: Any, token: str, query: str, variables: Any = None) -> dict[str, Any]:
    response = requests.post(
        f"{sandbox.base_url}/ownerclan/v1/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.usefixtures("frozen_world_clock")
def test_the_sandbox_token_has_the_documented_lifetime(sandbox: Any) -> None:
    claims = jwt.decode(bearer(sandbox), options={"verify_signature": False})
    documented = fixture_json("auth_token_claims.json")
    assert claims["exp"] - claims["iat"] == documented["exp"] - documented["iat"]
    assert {k: claims[k] for k in ("service", "userType")} == {
        k: documented[k] for k in ("service", "userType")
    }


@pytest.mark.usefixtures("frozen_world_clock")
def test_the_sandbox_serves_the_documented_item_queries(sandbox: Any) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 30})
    token = bearer(sandbox)
    item = ask(sandbox, token, fixture_text("item_query.graphql"))
    assert "errors" not in item and item["data"]["item"]["key"] == "W00000001"
    assert item["data"]["item"]["images"]
    page = ask(sandbox, token, fixture_text("all_items_query.graphql"))
    assert "errors" not in page
    nodes = [e["node"] for e in page["data"]["allItems"]["edges"]]
    assert nodes and all(n["status"] == "available" for n in nodes)  # the status filter holds
    # The sandbox's full item answers the documented item's shape, and the connector reads it.
    documented = fixture_json("all_items_response.json")
    documented_node = documented["data"]["allItems"]["edges"][0]["node"]
    assert SCHEMA.query_type is not None
    connection = SCHEMA.query_type.fields["allItems"].type
    full = ask(
        sandbox,
        token,
        "query { allItems(first: 5) "
        + selection(connection, documented["data"]["allItems"])
        + " }",
    )
    assert "errors" not in full, full
    for served in (e["node"] for e in full["data"]["allItems"]["edges"]):
        assert set(served) == set(documented_node)
        assert isinstance(normalise_item(served), SupplierProduct)


@pytest.mark.usefixtures("frozen_world_clock")
def test_the_sandbox_takes_the_documented_order_and_answers_the_documented_shape(
    sandbox: Any,
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 60}, tracking_delay_s=600)
    world = SupplierWorld(sandbox.state)
    seed = sandbox.state.config.seed
    orderable = next(
        item
        for item in (world.item("ownerclan", i) for i in range(60))
        if item is not None
        and not item.options
        and item_state(seed, item.index, item.soldout)["status"] == "available"
    )
    variables = fixture_json("create_order_input.json")
    variables["input"]["products"][0]["itemKey"] = f"W{orderable.index:08d}"
    token = bearer(sandbox)
    created = ask(sandbox, token, fixture_text("create_order_mutation.graphql"), variables)
    assert "errors" not in created, created
    (order,) = created["data"]["createOrder"]
    assert order["note"] == "DS-20261201-0001" and order["status"] == "paid"
    assert order["sellerNote"] == "coupang:1000001"
    sandbox.advance_clock(600)
    listed = ask(sandbox, token, fixture_text("list_orders_query.graphql"))
    assert "errors" not in listed, listed
    documented = fixture_json("list_orders_response.json")
    assert same_shape(listed["data"], documented["data"]) == []
    (shipment,) = _shipments_of("DS-20261201-0001", listed["data"]["allOrders"]["edges"][0]["node"])
    assert shipment.tracking_number and shipment.carrier and shipment.shipped_at
    # Shipped: too late to cancel, as the cancel document says.
    refused = ask(
        sandbox, token, fixture_text("cancel_order_mutation.graphql"), {"key": order["key"]}
    )
    assert refused["errors"] and "shipped" in refused["errors"][0]["message"]


REFUSED = {  # name: (query, variables, a fragment of the error that says why)
    "images without size": ('query { item(key: "W00000001") { images } }', None, "size"),
    "dateFrom declared Int": (
        "query ($d: Int) { allItems(dateFrom: $d) { edges { cursor } } }",
        {"d": 0},
        "Timestamp",
    ),
    "dateFrom as an ISO string": (
        "query ($d: Timestamp) { allItems(dateFrom: $d) { edges { cursor } } }",
        {"d": "2024-12-01T00:00:00"},
        "epoch milliseconds",
    ),
    "dateFrom as an ISO literal": (
        'query { allItems(dateFrom: "2024-12-01") { edges { cursor } } }',
        None,
        "epoch milliseconds",
    ),
    "shippingCompanyName": (
        'query { allOrders(note: "x") { edges { node { products { shippingCompanyName } } } } }',
        None,
        "shippingCompanyName",
    ),
    "an order window over 90 days": (
        "query { allOrders(dateFrom: 0, dateTo: 7776000001) { edges { cursor } } }",
        None,
        "90 days",
    ),
    "first over 1000": ("query { allItems(first: 1001) { edges { cursor } } }", None, "1000"),
    "an unimplemented filter": (
        'query { allItems(search: "텀블러") { edges { cursor } } }',
        None,
        "does not implement",
    ),
}


@pytest.mark.usefixtures("frozen_world_clock")
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_sandbox_refuses_what_the_real_api_refuses(sandbox: Any, name: str) -> None:
    query, variables, why = REFUSED[name]
    answer = ask(sandbox, bearer(sandbox), query, variables)
    assert answer.get("errors"), answer
    assert not answer.get("data")
    assert why in answer["errors"][0]["message"]


def test_a_response_value_of_the_wrong_type_does_not_fit() -> None:
    """The response check can fail: a time as text, an unknown order status."""
    good = fixture_json("list_orders_response.json")
    for field, wrong in (("createdAt", "2026-12-01T10:00:00"), ("status", "delivered")):
        bad = json.loads(json.dumps(good))
        bad["data"]["allOrders"]["edges"][0]["node"][field] = wrong
        with pytest.raises(AssertionError):
            assert_fits_schema(bad)


def test_connector_documents_are_the_ones_the_sandbox_executes() -> None:
    """The sandbox and the contract test load the same SDL file: one source of truth."""
    from dropship.sandbox.ownerclan import SCHEMA as SANDBOX_SCHEMA

    for document in documents():
        assert validate(SANDBOX_SCHEMA, parse(document)) == []
