"""OwnerClan sandbox: JWT login + the seller GraphQL API, executed by graphql-core against the
schema in ``ownerclan_schema.graphql`` (written from OwnerClan's published v0.11.0 material; see
docs/PLATFORMS.md). Every request is parsed and validated against that schema, so a query the
real service would refuse (``images`` without ``size``, ``$dateFrom: Int``, an unknown field such
as ``shippingCompanyName``) is refused here too, with GraphQL's own error.

Real shape:

* ``POST /auth`` with ``{"service": "ownerclan", "userType": "seller", "username", "password"}``
  answers the JWT **as plain text** (not JSON); wrong credentials get ``401``. The token lasts
  30 days (``exp - iat``), checked against the *world* clock so tests can move past it.
* ``POST /v1/graphql`` with ``Authorization: Bearer <jwt>``. Relay paging on ``allItems``/
  ``allOrders`` (``first`` at most 1000 — more is a GraphQL error). Times are ``Timestamp``:
  Unix **milliseconds**. ``allItems(dateFrom, dateTo)`` filter on ``updatedAt`` (inclusive).
  ``allOrders`` windows are at most 90 days and default to the last 90 days; ``note`` matches by
  substring. ``createOrder(input)`` returns the orders the purchase was split into (one per
  vendor). ``cancelOrder(key)`` until the order ships.

Item status, ``openmarketSellable`` and ``adultOnly`` are derived per item from the seed (a few
percent each), so collects meet every status. Malformed items (fault ``malformed_rate``) come in
several kinds, each something the connector must reject with a reason: no price, empty name, zero
or absurd cost, absurd stock, a negative option price.

Mounted under ``/ownerclan``: ``/ownerclan/auth`` and ``/ownerclan/v1/graphql``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

import jwt
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLScalarType,
    GraphQLSchema,
    IntValueNode,
    OperationType,
    ValueNode,
    build_schema,
    execute,
    get_operation_ast,
    parse,
    validate,
)

from dropship.sandbox.core import RouteSpec, SandboxHandler, SandboxState
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierOrder, SupplierOrderLine, SupplierWorld
from dropship.sandbox.world import CatalogItem

PLATFORM = "ownerclan"
MAX_PAGE = 1000
DEFAULT_PAGE = 100
ORDER_WINDOW = timedelta(days=90)
# Signs the sandbox's JWTs. Sandbox-only, like the credentials in credentials.py.
JWT_SECRET = "sandbox-ownerclan-jwt-signing-secret"
JWT_ALGORITHM = "HS256"

SCHEMA_PATH = Path(__file__).with_name("ownerclan_schema.graphql")
SCHEMA_SDL = SCHEMA_PATH.read_text(encoding="utf-8")

# Share of items (per seed) in each non-default state. Small, so most of a catalog is on sale.
UNAVAILABLE_RATE = 0.02
DISCONTINUED_RATE = 0.02
NOT_OPENMARKET_RATE = 0.05
ADULT_ONLY_RATE = 0.03
MALFORMED_KINDS = (
    "price_missing",
    "name_empty",
    "price_zero",
    "price_absurd",
    "stock_absurd",
    "option_price_negative",
)
# Carrier codes the sandbox answers in ``shippingCompanyCode``. OwnerClan's code list is not in
# the published material: these are sandbox stand-ins, passed through verbatim by the connector.
CARRIER_CODES = {
    "CJ대한통운": "CJ",
    "한진택배": "HANJIN",
    "롯데택배": "LOTTE",
    "우체국택배": "EPOST",
    "로젠택배": "LOGEN",
}


# The seller's default sender, used by OwnerClan when an order gives none.
SANDBOX_SENDER = {"name": "샌드박스 판매자", "phoneNumber": "02-000-0000", "email": None}


def item_key(index: int) -> str:
    return f"W{index:08d}"


def item_index(key: str) -> int | None:
    if len(key) == 9 and key[0] == "W" and key[1:].isdigit():
        return int(key[1:])
    return None


def epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _unit(*parts: object) -> float:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


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


def _check_first(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE
    if first < 1 or first > MAX_PAGE:
        raise GraphQLError(f"'first' must be between 1 and {MAX_PAGE}, got {first}")
    return first


def _refuse_unsupported(field: str, **args: Any) -> None:
    """Arguments of the real API the sandbox does not implement: refused loudly rather than
    ignored, so no test believes a filter worked."""
    used = sorted(name for name, value in args.items() if value is not None)
    if used:
        raise GraphQLError(f"the sandbox does not implement {field}({', '.join(used)})")


# --------------------------------------------------------------------------- Timestamp scalar


def _timestamp_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GraphQLError(
            f"Timestamp must be a non-negative integer of epoch milliseconds, got {value!r}"
        )
    return value


def _timestamp_literal(node: ValueNode, _variables: Any = None) -> int:
    if not isinstance(node, IntValueNode):
        raise GraphQLError("Timestamp must be an integer literal of epoch milliseconds")
    return _timestamp_value(int(node.value))


# --------------------------------------------------------------------------- wire records


def item_state(seed: int, index: int, soldout: bool) -> dict[str, Any]:
    """The OwnerClan-only facts of an item (status, flags), a pure function of the seed."""
    roll = _unit(seed, PLATFORM, index, "status")
    if roll < DISCONTINUED_RATE:
        status = "discontinued"
    elif roll < DISCONTINUED_RATE + UNAVAILABLE_RATE:
        status = "unavailable"
    else:
        status = "soldout" if soldout else "available"
    return {
        "status": status,
        "openmarketSellable": _unit(seed, PLATFORM, index, "openmarket") >= NOT_OPENMARKET_RATE,
        "adultOnly": _unit(seed, PLATFORM, index, "adult") < ADULT_ONLY_RATE,
    }


def _item_node(item: CatalogItem, seed: int) -> dict[str, Any]:
    state = item_state(seed, item.index, item.soldout)
    key = item_key(item.index)
    node: dict[str, Any] = {
        "createdAt": epoch_ms(item.updated_at) - 86_400_000,
        "updatedAt": epoch_ms(item.updated_at),
        "key": key,
        "id": base64.b64encode(f"Item,{key}".encode()).decode(),
        "name": item.name,
        "model": item.model,
        "production": "협력사",
        "origin": "국산" if item.index % 3 else "중국",
        "price": item.price,
        "pricePolicy": "free",
        "fixedPrice": item.fixed_price,
        "category": {
            "key": item.category_code,
            "name": item.category_name.rsplit(">", 1)[-1],
            "fullName": item.category_name,
        },
        "content": f"<p>{item.name}</p>",
        "shippingFee": item.shipping_fee,
        "shippingType": "free" if item.shipping_fee == 0 else "inAdvance",
        "images": list(item.images),
        # OwnerClan option prices are full prices, not deltas. An item without options still
        # has one option entry (no attributes) that carries its quantity.
        "options": [
            {
                "key": o.code,
                "optionAttributes": [{"name": o.name, "value": o.value}],
                "price": item.price + o.price_delta,
                "quantity": o.stock,
            }
            for o in item.options
        ]
        or [{"key": "0", "optionAttributes": [], "price": item.price, "quantity": item.stock}],
        "taxFree": item.index % 17 == 0,
        "returnable": True,
        "noReturnReason": None,
        "guaranteedShippingPeriod": 3,
        "boxQuantity": 0,
        "attributes": ["OPENMARKET"] if state["openmarketSellable"] else [],
        "closingTime": "15:00:00",
        "metadata": {"vendorKey": item.vendor},
        **state,
    }
    if item.malformed:  # fault injection: a record the connector must reject, not guess
        kind = MALFORMED_KINDS[int(_unit(seed, PLATFORM, item.index, "kind") * 6)]
        if kind == "price_missing":
            node["price"] = None
        elif kind == "name_empty":
            node["name"] = " "
        elif kind == "price_zero":
            node["price"] = 0
        elif kind == "price_absurd":
            node["price"] = 250_000_000
        elif kind == "stock_absurd":
            node["options"][0]["quantity"] = 5_000_000
        else:
            node["options"][0]["price"] = -500
    return node


def _order_status(order: SupplierOrder, world: SupplierWorld) -> str:
    if order.cancelled:
        return "cancelled"
    if order.shipped(world.now(), world.tracking_delay_s):
        return "shipped"
    age = (world.now() - order.created_at).total_seconds()
    return "preparing" if age >= world.tracking_delay_s / 2 else "paid"


def _shipped_at(order: SupplierOrder, world: SupplierWorld) -> datetime:
    return order.created_at + timedelta(seconds=world.tracking_delay_s)


def _order_node(order: SupplierOrder, world: SupplierWorld) -> dict[str, Any]:
    status = _order_status(order, world)
    shipped = status == "shipped"
    shipped_ms = epoch_ms(_shipped_at(order, world))
    changed = order.created_at
    if shipped:
        changed = _shipped_at(order, world)
    elif order.cancelled:
        changed = world.now()
    return {
        "key": order.key,
        "id": order.key[-10:],
        "status": status,
        "note": order.note,
        "sellerNote": order.recipient.get("_sellerNote"),
        "ordererNote": order.recipient.get("_ordererNote"),
        "isBeingMediated": False,
        "adjustments": [],
        "transactions": [],
        "shippingInfo": {
            # The recipient is echoed back as given (personal data: never logged).
            "sender": order.recipient.get("_sender") or SANDBOX_SENDER,
            "recipient": {k: v for k, v in order.recipient.items() if not k.startswith("_")},
            "shippingFee": None,
        },
        "products": [
            {
                "quantity": line.quantity,
                "price": line.unit_price,
                "itemKey": item_key(line.product_index),
                "itemOptionInfo": {
                    "optionAttributes": (
                        [dict(zip(("name", "value"), line.option.split(":", 1), strict=True))]
                        if line.option and ":" in line.option
                        else []
                    ),
                    "price": line.unit_price,
                },
                "shippingCompanyCode": CARRIER_CODES.get(order.carrier) if shipped else None,
                "trackingNumber": order.tracking_number if shipped else None,
                "shippedDate": shipped_ms if shipped else None,
                "additionalAttributes": [],
                "shippingType": None,
                "productName": None,
                "taxFree": False,
            }
            for line in order.lines
        ],
        "createdAt": epoch_ms(order.created_at),
        "updatedAt": epoch_ms(changed),
    }


# --------------------------------------------------------------------------- resolvers


def _world(info: Any) -> SupplierWorld:
    world: SupplierWorld = info.context["world"]
    return world


def _seed(info: Any) -> int:
    return _world(info).state.config.seed


def resolve_item(_: Any, info: Any, key: str, **_options: Any) -> dict[str, Any] | None:
    index = item_index(key)
    item = _world(info).item(PLATFORM, index) if index is not None else None
    return _item_node(item, _seed(info)) if item else None


def resolve_items_by_keys(_: Any, info: Any, keys: list[str]) -> list[dict[str, Any] | None]:
    if len(keys) > MAX_PAGE:
        raise GraphQLError(f"itemsByKeys takes at most {MAX_PAGE} keys, got {len(keys)}")
    return [resolve_item(None, info, key) for key in keys]


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
            "hasPreviousPage": False,
            "startCursor": _cursor(kind, page[0][0]) if page else None,
            "endCursor": _cursor(kind, page[-1][0]) if page else None,
        },
    }


def _in_range(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def resolve_all_items(
    _: Any,
    info: Any,
    first: int | None = None,
    after: str | None = None,
    dateFrom: int | None = None,
    dateTo: int | None = None,
    status: str | None = None,
    openmarketSellable: bool | None = None,
    before: str | None = None,
    last: int | None = None,
    minPrice: int | None = None,
    maxPrice: int | None = None,
    search: str | None = None,
    vendor: str | None = None,
    category: str | None = None,
    attributes: list[str] | None = None,
    sortBy: str | None = None,
) -> dict[str, Any]:
    _refuse_unsupported(
        "allItems",
        before=before,
        last=last,
        minPrice=minPrice,
        maxPrice=maxPrice,
        search=search,
        vendor=vendor,
        category=category,
        attributes=attributes,
        sortBy=sortBy,
    )
    limit = _check_first(first)
    start = _decode_cursor("item", after) + 1 if after else 0
    seed = _seed(info)
    items = (
        _world(info).items_updated_within(PLATFORM, start, dateFrom, dateTo)
        if dateFrom is not None or dateTo is not None
        else _world(info).items(PLATFORM, start)
    )
    nodes = (
        (item.index, _item_node(item, seed))
        for item in items
        # Checked again on the product itself: the index is a prefilter, this is the rule.
        if _in_range(epoch_ms(item.updated_at), dateFrom, dateTo)
    )
    rows = (
        (index, node)
        for index, node in nodes
        if (status is None or node["status"] == status)
        and (openmarketSellable is None or node["openmarketSellable"] == openmarketSellable)
    )
    return _connection("item", rows, limit)


def resolve_order(_: Any, info: Any, key: str) -> dict[str, Any] | None:
    world = _world(info)
    order = world.order(PLATFORM, key)
    return _order_node(order, world) if order else None


def _order_window(
    world: SupplierWorld, date_from: int | None, date_to: int | None
) -> tuple[int, int]:
    """The creation-time window of an ``allOrders`` call: at most 90 days; none given means
    the last 90 days (the documented default, applied even with ``note``: the strict reading)."""
    now = epoch_ms(world.now())
    span = int(ORDER_WINDOW.total_seconds() * 1000)
    high = date_to if date_to is not None else now
    low = date_from if date_from is not None else high - span
    if high - low > span:
        raise GraphQLError("allOrders: the date range must not exceed 90 days")
    return low, high


def resolve_all_orders(
    _: Any,
    info: Any,
    first: int | None = None,
    after: str | None = None,
    dateFrom: int | None = None,
    dateTo: int | None = None,
    note: str | None = None,
    sellerNote: str | None = None,
    status: str | None = None,
    shippedAfter: int | None = None,
    shippedBefore: int | None = None,
    before: str | None = None,
    last: int | None = None,
) -> dict[str, Any]:
    _refuse_unsupported("allOrders", before=before, last=last)
    world = _world(info)
    limit = _check_first(first)
    low, high = _order_window(world, dateFrom, dateTo)
    start = _decode_cursor("order", after) + 1 if after else 0
    # The note filter first, on the stored orders (one search over all notes), before rendering
    # any node: a lookup by our key must not render or even visit every order the sandbox holds
    # (10,000s in the orders benchmark).
    candidates = (
        enumerate(world.orders(PLATFORM)) if note is None else world.orders_noting(PLATFORM, note)
    )
    nodes = ((p, _order_node(o, world)) for p, o in candidates)

    def wanted(node: dict[str, Any]) -> bool:
        shipped = [p["shippedDate"] for p in node["products"] if p["shippedDate"] is not None]
        if (shippedAfter is not None or shippedBefore is not None) and not shipped:
            return False
        return (
            low <= node["createdAt"] <= high
            and (note is None or note in (node["note"] or ""))
            and (sellerNote is None or sellerNote in (node["sellerNote"] or ""))
            and (status is None or node["status"] == status)
            and all(_in_range(s, shippedAfter, shippedBefore) for s in shipped)
        )

    rows = ((p, node) for p, node in nodes if p >= start and wanted(node))
    return _connection("order", rows, limit)


def resolve_create_order(_: Any, info: Any, input: dict[str, Any]) -> list[dict[str, Any]]:
    world = _world(info)
    seed = _seed(info)
    products = input["products"]
    if not products:
        raise GraphQLError("createOrder: 'products' must not be empty")
    by_vendor: dict[int, list[SupplierOrderLine]] = {}
    for product in products:
        key = product["itemKey"]
        index = item_index(key)
        item = world.item(PLATFORM, index) if index is not None else None
        if item is None:
            raise GraphQLError(f"createOrder: unknown itemKey {key!r}")
        if product["quantity"] < 1:
            raise GraphQLError(f"createOrder: quantity must be >= 1 for {key}")
        status = item_state(seed, item.index, item.soldout)["status"]
        if status != "available":
            raise GraphQLError(f"createOrder: item {key} is not on sale ({status})")
        values = list(product.get("optionAttributes") or [])
        option_label, delta = None, 0
        if item.options:
            chosen = next((o for o in item.options if [o.value] == values), None)
            if chosen is None:
                raise GraphQLError(f"createOrder: item {key} needs one of its options")
            if chosen.stock < product["quantity"]:
                raise GraphQLError(f"createOrder: not enough stock for {key}")
            option_label, delta = f"{chosen.name}:{chosen.value}", chosen.price_delta
        elif values:
            raise GraphQLError(f"createOrder: item {key} has no options")
        by_vendor.setdefault(item.vendor, []).append(
            SupplierOrderLine(item.index, product["quantity"], option_label, item.price + delta)
        )
    recipient = dict(input["recipient"])
    # Kept with the order (never logged) so the order answers them back.
    recipient["_sellerNote"] = input.get("sellerNote")
    recipient["_ordererNote"] = input.get("ordererNote")
    recipient["_sender"] = input.get("sender")
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


def build_ownerclan_schema() -> GraphQLSchema:
    """The schema from the SDL file, without resolvers (what the contract tests validate
    against)."""
    schema = build_schema(SCHEMA_SDL)
    timestamp = schema.type_map["Timestamp"]
    assert isinstance(timestamp, GraphQLScalarType)
    # graphql-core 3.2 reads serialize/parse_value/parse_literal; 3.3 reads the coerce_* names
    # (copied from those at construction, so both are set here).
    for name in ("serialize", "parse_value", "coerce_output_value", "coerce_input_value"):
        setattr(timestamp, name, _timestamp_value)
    timestamp.parse_literal = _timestamp_literal  # type: ignore[method-assign,assignment]
    return schema


def _build_schema() -> GraphQLSchema:
    schema = build_ownerclan_schema()
    query, mutation = schema.query_type, schema.mutation_type
    assert query is not None and mutation is not None
    query.fields["item"].resolve = resolve_item
    query.fields["itemsByKeys"].resolve = resolve_items_by_keys
    query.fields["allItems"].resolve = resolve_all_items
    query.fields["order"].resolve = resolve_order
    query.fields["allOrders"].resolve = resolve_all_orders
    mutation.fields["createOrder"].resolve = resolve_create_order
    mutation.fields["cancelOrder"].resolve = resolve_cancel_order
    return schema


SCHEMA = _build_schema()


@lru_cache(maxsize=512)
def prepared(query: str) -> tuple[DocumentNode | None, tuple[GraphQLError, ...]]:
    """The query's document and its syntax or validation errors against :data:`SCHEMA`, kept per
    query text (as GraphQL servers cache validated documents): the same text always gets the
    same answer, so nothing is less strict, and the connector sends a handful of texts, whose
    parse and validation were most of the sandbox's time in the orders benchmark."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        return None, (exc,)
    errors = validate(SCHEMA, document)
    return (None, tuple(errors)) if errors else (document, ())


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
                "iat": int(now.timestamp()),
                "exp": int(now.timestamp()) + ttl,
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
            document, _ = prepared(body["query"])
        except (ValueError, TypeError, KeyError):
            return False  # answered with an error below; nothing executed
        if document is None:
            return False  # refused below; nothing executed
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
        if claims["exp"] <= int(self.state.now().timestamp()):  # JWT times are seconds
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
        document, refused = prepared(body["query"])
        if document is not None and self.state.faults[PLATFORM].one_mutation_per_request:
            operation = get_operation_ast(document, body.get("operationName"))
            if (
                operation is not None
                and operation.operation == OperationType.MUTATION
                and len(operation.selection_set.selections) > 1
            ):
                document = None
                refused = (GraphQLError("only one mutation field per request"),)
        if document is None:
            result = ExecutionResult(data=None, errors=list(refused))
        else:
            executed = execute(
                SCHEMA,
                document,
                variable_values=body.get("variables") or None,
                operation_name=body.get("operationName"),
                context_value={"world": world},
            )
            assert isinstance(executed, ExecutionResult)  # every resolver is synchronous
            result = executed
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [e.formatted for e in result.errors]
        self.write_json(payload)


def routes(state: SandboxState) -> list[RouteSpec]:
    return [
        (r"/ownerclan/auth", OwnerClanAuthHandler, {"state": state}),
        (r"/ownerclan/v1/graphql", OwnerClanGraphQLHandler, {"state": state}),
    ]


__all__ = [
    "SCHEMA",
    "SCHEMA_PATH",
    "build_ownerclan_schema",
    "epoch_ms",
    "item_index",
    "item_key",
    "item_state",
    "routes",
]
