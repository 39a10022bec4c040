"""OwnerClan sandbox: JWT login + a GraphQL API executed by graphql-core against a real schema.

Real shape (OwnerClan API center, seller API):

* ``POST /auth`` with ``{"service": "ownerclan", "userType": "seller", "username", "password"}``
  answers the JWT **as plain text** (not JSON); wrong credentials get ``401``.
* ``POST /v1/graphql`` with ``Authorization: Bearer <jwt>``. Relay paging on ``allItems``/
  ``allOrders`` (``first`` at most 1000 — more is a GraphQL error, as on the real API),
  ``dateFrom``/``dateTo`` as Unix seconds, ``createOrder(input: {..., note})`` returns the list of
  orders the supplier split the purchase into (one per vendor), ``cancelOrder(key)``.

The JWT is HS256-signed with a sandbox secret; its expiry is checked against the *world* clock,
so a test can advance the clock past the TTL and watch the connector log in again.
Mounted under ``/ownerclan``: ``/ownerclan/auth`` and ``/ownerclan/v1/graphql``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from datetime import datetime
from itertools import islice
from typing import Any

import jwt
from graphql import (
    GraphQLError,
    GraphQLSchema,
    OperationType,
    build_schema,
    get_operation_ast,
    graphql_sync,
    parse,
)

from dropship.sandbox.core import RouteSpec, SandboxHandler, SandboxState
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierOrder, SupplierOrderLine, SupplierWorld
from dropship.sandbox.world import CatalogItem

PLATFORM = "ownerclan"
MAX_PAGE = 1000
# Signs the sandbox's JWTs. Sandbox-only, like the credentials in credentials.py.
JWT_SECRET = "sandbox-ownerclan-jwt-signing-secret"
JWT_ALGORITHM = "HS256"

SCHEMA_SDL = """
type Query {
  item(key: ID!): Item
  allItems(first: Int, after: String, dateFrom: Int, dateTo: Int): ItemConnection!
  order(key: ID!): Order
  allOrders(first: Int, after: String, dateFrom: Int, dateTo: Int, note: String,
            status: String): OrderConnection!
}

type Mutation {
  createOrder(input: OrderInput!): [Order!]!
  cancelOrder(key: ID!): Order!
}

type PageInfo { hasNextPage: Boolean! endCursor: String }

type Category { key: ID! name: String! fullName: String! }
type OptionAttribute { name: String! value: String! }
type ItemOption { price: Int quantity: Int! optionAttributes: [OptionAttribute!]! }

type Item {
  key: ID!
  name: String
  model: String
  production: String
  origin: String
  price: Int
  fixedPrice: Int
  shippingFee: Int
  shippingType: String
  status: String!
  category: Category
  options: [ItemOption!]!
  taxFree: Boolean!
  adultOnly: Boolean!
  returnable: Boolean!
  images: [String!]!
  createdAt: Int
  updatedAt: Int
}
type ItemEdge { cursor: String! node: Item! }
type ItemConnection { edges: [ItemEdge!]! pageInfo: PageInfo! }

type OrderProduct {
  itemKey: ID!
  quantity: Int!
  price: Int!
  optionAttributes: [OptionAttribute!]!
  shippingCompanyName: String
  trackingNumber: String
}
type Order {
  key: ID!
  id: String!
  status: String!
  note: String
  products: [OrderProduct!]!
  createdAt: Int!
  updatedAt: Int!
}
type OrderEdge { cursor: String! node: Order! }
type OrderConnection { edges: [OrderEdge!]! pageInfo: PageInfo! }

input AddressInput { addr1: String! addr2: String postalCode: String! }
input RecipientInput { name: String! phoneNumber: String! destinationAddress: AddressInput! }
input OptionAttributeInput { name: String! value: String! }
input OrderProductInput {
  itemKey: ID!
  quantity: Int!
  optionAttributes: [OptionAttributeInput!]
}
input OrderInput {
  products: [OrderProductInput!]!
  recipient: RecipientInput!
  note: String
  sellerNote: String
}
"""


def item_key(index: int) -> str:
    return f"W{index:08d}"


def item_index(key: str) -> int | None:
    if len(key) == 9 and key[0] == "W" and key[1:].isdigit():
        return int(key[1:])
    return None


def _cursor(kind: str, index: int) -> str:
    return base64.b64encode(f"{kind}:{index}".encode()).decode()


def _decode_cursor(kind: str, cursor: str) -> int:
    try:
        prefix, _, number = base64.b64decode(cursor, validate=True).decode().partition(":")
        if prefix == kind and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise GraphQLError(f"invalid cursor for {kind}: {cursor!r}")


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def _check_first(first: int | None) -> int:
    if first is None:
        return 100
    if first < 1 or first > MAX_PAGE:
        raise GraphQLError(f"'first' must be between 1 and {MAX_PAGE}, got {first}")
    return first


def _item_node(item: CatalogItem) -> dict[str, Any]:
    node: dict[str, Any] = {
        "key": item_key(item.index),
        "name": item.name,
        "model": item.model,
        "production": "협력사",
        "origin": "국산" if item.index % 3 else "중국",
        "price": item.price,
        "fixedPrice": item.fixed_price,
        "shippingFee": item.shipping_fee,
        "shippingType": "free" if item.shipping_fee == 0 else "prepaid",
        "status": "soldout" if item.soldout else "available",
        "category": {
            "key": item.category_code,
            "name": item.category_name.rsplit(">", 1)[-1],
            "fullName": item.category_name,
        },
        # OwnerClan option prices are full prices, not deltas. An item without options still
        # has one option entry (no attributes) that carries its quantity.
        "options": [
            {
                "price": item.price + o.price_delta,
                "quantity": o.stock,
                "optionAttributes": [{"name": o.name, "value": o.value}],
            }
            for o in item.options
        ]
        or [{"price": item.price, "quantity": item.stock, "optionAttributes": []}],
        "taxFree": False,
        "adultOnly": False,
        "returnable": True,
        "images": list(item.images),
        "createdAt": _epoch(item.updated_at) - 86_400,
        "updatedAt": _epoch(item.updated_at),
    }
    if item.malformed:  # fault injection: a record the connector must reject, not guess
        node["price"] = None
        node["name"] = ""
    return node


def _order_node(order: SupplierOrder, world: SupplierWorld) -> dict[str, Any]:
    now = world.now()
    shipped = order.shipped(now, world.tracking_delay_s)
    status = "cancelled" if order.cancelled else ("shipping" if shipped else "paid")
    return {
        "key": order.key,
        "id": order.key[-10:],
        "status": status,
        "note": order.note,
        "products": [
            {
                "itemKey": item_key(line.product_index),
                "quantity": line.quantity,
                "price": line.unit_price,
                "optionAttributes": (
                    [dict(zip(("name", "value"), line.option.split(":", 1), strict=True))]
                    if line.option and ":" in line.option
                    else []
                ),
                "shippingCompanyName": order.carrier if shipped else None,
                "trackingNumber": order.tracking_number if shipped else None,
            }
            for line in order.lines
        ],
        "createdAt": _epoch(order.created_at),
        "updatedAt": _epoch(now if shipped or order.cancelled else order.created_at),
    }


def _in_range(value: int, date_from: int | None, date_to: int | None) -> bool:
    return (date_from is None or value >= date_from) and (date_to is None or value <= date_to)


# --------------------------------------------------------------------------- resolvers


def _world(info: Any) -> SupplierWorld:
    world: SupplierWorld = info.context["world"]
    return world


def resolve_item(_: Any, info: Any, key: str) -> dict[str, Any] | None:
    index = item_index(key)
    item = _world(info).item(PLATFORM, index) if index is not None else None
    return _item_node(item) if item else None


def _connection(
    kind: str, rows: Iterable[tuple[int, dict[str, Any]]], limit: int
) -> dict[str, Any]:
    """A relay connection of the first ``limit`` of ``rows`` (``(position, node)``, already
    filtered, after the cursor); consumes at most ``limit + 1`` rows, so lazy rows stay lazy."""
    page = list(islice(rows, limit + 1))
    has_next = len(page) > limit
    page = page[:limit]
    return {
        "edges": [{"cursor": _cursor(kind, position), "node": node} for position, node in page],
        "pageInfo": {
            "hasNextPage": has_next,
            "endCursor": _cursor(kind, page[-1][0]) if page else None,
        },
    }


def resolve_all_items(
    _: Any,
    info: Any,
    first: int | None = None,
    after: str | None = None,
    dateFrom: int | None = None,
    dateTo: int | None = None,
) -> dict[str, Any]:
    limit = _check_first(first)
    start = _decode_cursor("item", after) + 1 if after else 0
    rows = (
        (item.index, _item_node(item))
        for item in _world(info).items(PLATFORM, start)
        if _in_range(_epoch(item.updated_at), dateFrom, dateTo)
    )
    return _connection("item", rows, limit)


def resolve_order(_: Any, info: Any, key: str) -> dict[str, Any] | None:
    world = _world(info)
    order = world.order(PLATFORM, key)
    return _order_node(order, world) if order else None


def resolve_all_orders(
    _: Any,
    info: Any,
    first: int | None = None,
    after: str | None = None,
    dateFrom: int | None = None,
    dateTo: int | None = None,
    note: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    world = _world(info)
    limit = _check_first(first)
    start = _decode_cursor("order", after) + 1 if after else 0
    nodes = ((p, _order_node(o, world)) for p, o in enumerate(world.orders(PLATFORM, note)))
    rows = (
        (position, node)
        for position, node in nodes
        if position >= start
        and _in_range(node["createdAt"], dateFrom, dateTo)
        and (status is None or node["status"] == status)
    )
    return _connection("order", rows, limit)


def resolve_create_order(_: Any, info: Any, input: dict[str, Any]) -> list[dict[str, Any]]:
    world = _world(info)
    products = input["products"]
    if not products:
        raise GraphQLError("createOrder: 'products' must not be empty")
    by_vendor: dict[int, list[SupplierOrderLine]] = {}
    for product in products:
        index = item_index(product["itemKey"])
        item = world.item(PLATFORM, index) if index is not None else None
        if item is None:
            raise GraphQLError(f"createOrder: unknown itemKey {product['itemKey']!r}")
        if product["quantity"] < 1:
            raise GraphQLError(f"createOrder: quantity must be >= 1 for {product['itemKey']}")
        if item.soldout:
            raise GraphQLError(f"createOrder: item {product['itemKey']} is sold out")
        attrs = product.get("optionAttributes") or []
        option = ",".join(f"{a['name']}:{a['value']}" for a in attrs) or None
        delta = 0
        if attrs:
            chosen = item.option(attrs[0]["name"], attrs[0]["value"])
            if chosen is None:
                raise GraphQLError(f"createOrder: no such option on {product['itemKey']}")
            delta = chosen.price_delta
        by_vendor.setdefault(item.vendor, []).append(
            SupplierOrderLine(index or 0, product["quantity"], option, item.price + delta)
        )
    recipient = dict(input["recipient"])
    note = input.get("note") or ""
    orders = [
        world.create_order(PLATFORM, note, lines, recipient, key_format="2026{serial:016d}A")
        for _, lines in sorted(by_vendor.items())
    ]
    world.record_purchase(note)
    return [_order_node(o, world) for o in orders]


def resolve_cancel_order(_: Any, info: Any, key: str) -> dict[str, Any]:
    world = _world(info)
    order = world.cancel(PLATFORM, key)
    if order is None:
        raise GraphQLError(f"cancelOrder: unknown order {key!r}")
    if not order.cancelled:
        raise GraphQLError(f"cancelOrder: order {key} has already shipped and cannot be cancelled")
    return _order_node(order, world)


def _build_schema() -> GraphQLSchema:
    schema = build_schema(SCHEMA_SDL)
    query, mutation = schema.query_type, schema.mutation_type
    assert query is not None and mutation is not None
    query.fields["item"].resolve = resolve_item
    query.fields["allItems"].resolve = resolve_all_items
    query.fields["order"].resolve = resolve_order
    query.fields["allOrders"].resolve = resolve_all_orders
    mutation.fields["createOrder"].resolve = resolve_create_order
    mutation.fields["cancelOrder"].resolve = resolve_cancel_order
    return schema


SCHEMA = _build_schema()


# --------------------------------------------------------------------------- handlers


class OwnerClanAuthHandler(SandboxHandler):
    platform = PLATFORM
    endpoint = "auth"
    mutating_methods = frozenset()  # logging in changes nothing worth losing an answer of

    def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            self.set_status(400)
            self.finish("request body must be JSON")
            return
        expected = SANDBOX_CREDENTIALS[PLATFORM]
        if (
            not isinstance(body, dict)
            or body.get("service") != "ownerclan"
            or body.get("userType") not in ("seller", "supplier")
        ):
            self.set_status(400)
            self.finish("service must be 'ownerclan' and userType 'seller' or 'supplier'")
            return
        if (
            body.get("username") != expected["username"]
            or body.get("password") != expected["password"]
        ):
            self.set_status(401)
            self.finish("Unauthorized")
            return
        now = self.state.now()
        ttl = int(self.state.config.token_ttls_s.get(PLATFORM, 30 * 86_400))
        token = jwt.encode(
            {
                "sub": body["username"],
                "userType": body["userType"],
                "service": "ownerclan",
                "iat": _epoch(now),
                "exp": _epoch(now) + ttl,
            },
            JWT_SECRET,
            algorithm=JWT_ALGORITHM,
        )
        self.count("ownerclan_logins")
        # The real endpoint answers the token as text, not JSON.
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(token)


class OwnerClanGraphQLHandler(SandboxHandler):
    platform = PLATFORM
    endpoint = "graphql"

    def is_mutating(self) -> bool:
        """Only a GraphQL *mutation* changes anything (every operation is a POST), so only its
        answer can be lost by the ``lost_response_rate`` fault."""
        try:
            body = json.loads(self.request.body or b"{}")
            document = parse(body["query"])
        except (ValueError, TypeError, KeyError, GraphQLError):
            return False  # answered with an error below; nothing executed
        operation = get_operation_ast(document, body.get("operationName"))
        return operation is not None and operation.operation == OperationType.MUTATION

    def _unauthorized(self, message: str) -> None:
        self.write_json(
            {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]}, 401
        )

    def post(self) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            self._unauthorized("missing bearer token")
            return
        try:
            # Expiry is checked against the world clock below, not the wall clock.
            claims = jwt.decode(
                token,
                JWT_SECRET,
                algorithms=[JWT_ALGORITHM],
                # iat/exp are world-clock times (tests move that clock): checked below.
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["exp", "sub"],
                },
            )
        except jwt.InvalidTokenError:
            self._unauthorized("invalid token")
            return
        if claims["exp"] <= _epoch(self.state.now()):
            self._unauthorized("token expired")
            return
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            self.write_json({"errors": [{"message": "request body must be JSON"}]}, 400)
            return
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            self.write_json({"errors": [{"message": "'query' must be a string"}]}, 400)
            return
        world = SupplierWorld(self.state)
        result = graphql_sync(
            SCHEMA,
            body["query"],
            variable_values=body.get("variables") or None,
            operation_name=body.get("operationName"),
            context_value={"world": world},
        )
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [e.formatted for e in result.errors]
        self.write_json(payload)


def routes(state: SandboxState) -> list[RouteSpec]:
    return [
        (r"/ownerclan/auth", OwnerClanAuthHandler, {"state": state}),
        (r"/ownerclan/v1/graphql", OwnerClanGraphQLHandler, {"state": state}),
    ]


__all__ = ["SCHEMA", "item_index", "item_key", "routes"]
