"""OwnerClan connector: JWT login, GraphQL queries, relay paging, purchase orders by note.

* Auth: ``POST {auth_url}`` with ``{"service": "ownerclan", "userType": "seller", username,
  password}`` answers the JWT as **plain text**. The token is cached per connector until shortly
  before its ``exp`` claim (read without verifying: only OwnerClan can verify it) and replaced
  once when the API answers 401 (expired or revoked early).
* Products: ``allItems(first <= 1000, after, dateFrom)`` followed page by page (bounded memory:
  one page in flight). Items have no top-level stock: the stock is the sum of the option
  quantities (an item without options has one attribute-less option carrying its quantity).
  Option prices are full prices; we store the delta to the item price.
* Purchase orders: our order key travels in ``note``. ``place_order`` first looks the key up
  with ``allOrders(note: key)`` and only creates when nothing exists, so a redelivered task never
  buys twice; ``createOrder`` itself is sent once (a POST that timed out is *not* repeated by the
  HTTP layer; the task's retry comes back here and finds the order).

Account settings: credentials ``username``/``password``; option ``auth_url`` (default
``{base_url}/auth``; production: ``https://auth.ownerclan.com/auth``), option ``graphql_path``
(default ``/v1/graphql``). Base URL in production: ``https://api.ownerclan.com``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import jwt

from dropship.errors import PermanentError, TransientError
from dropship.platforms._supplier_common import SupplierConnectorBase
from dropship.platforms.cache import ResponseCache
from dropship.platforms.config import AccountSettings
from dropship.platforms.http import AuthRejectedError, PlatformHttp
from dropship.platforms.interfaces import (
    InvalidRecord,
    ProductOption,
    PurchaseOrderRequest,
    PurchaseOrderResult,
    ShipmentInfo,
    SupplierProduct,
)

log = logging.getLogger(__name__)

SUPPLIER = "ownerclan"
MAX_PAGE_SIZE = 1000  # OwnerClan rejects first > 1000
TOKEN_REFRESH_MARGIN_S = 300.0
SHIPMENT_KEYS_PER_QUERY = 20
_STATUS = {"available": "active", "soldout": "soldout"}
_SHIPPED_STATUSES = frozenset({"shipping", "shipped", "delivered"})

ITEM_FIELDS = """
  key name model price fixedPrice shippingFee status updatedAt images
  category { key fullName }
  options { price quantity optionAttributes { name value } }
"""
ALL_ITEMS_QUERY = (
    "query AllItems($first: Int, $after: String, $dateFrom: Int, $dateTo: Int) {"
    " allItems(first: $first, after: $after, dateFrom: $dateFrom, dateTo: $dateTo) {"
    " pageInfo { hasNextPage endCursor } edges { cursor node {" + ITEM_FIELDS + "} } } }"
)
ITEM_QUERY = "query Item($key: ID!) { item(key: $key) {" + ITEM_FIELDS + "} }"
ORDER_FIELDS = (
    "key status note createdAt"
    " products { itemKey quantity price shippingCompanyName trackingNumber }"
)
ORDERS_BY_NOTE_QUERY = (
    "query OrdersByNote($note: String!, $after: String) {"
    " allOrders(note: $note, first: 100, after: $after) {"
    " pageInfo { hasNextPage endCursor } edges { node { " + ORDER_FIELDS + " } } } }"
)
CREATE_ORDER_MUTATION = (
    "mutation CreateOrder($input: OrderInput!) { createOrder(input: $input) { "
    + ORDER_FIELDS
    + " } }"
)
CANCEL_ORDER_MUTATION = "mutation CancelOrder($key: ID!) { cancelOrder(key: $key) { key status } }"


class OwnerClanConnector(SupplierConnectorBase):
    """:class:`~dropship.platforms.interfaces.SupplierConnector` for OwnerClan."""

    supplier = SUPPLIER

    def __init__(
        self,
        *,
        account: AccountSettings,
        http: PlatformHttp,
        cache: ResponseCache | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        super().__init__(account=account, http=http, cache=cache)
        self.page_size = self.checked_page_size(page_size, MAX_PAGE_SIZE)
        self.auth_url = account.option("auth_url") or f"{account.base_url}/auth"
        self.graphql_path = account.option("graphql_path") or "/v1/graphql"
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = threading.Lock()

    # ------------------------------------------------------------------ auth

    def _login(self) -> str:
        body = {
            "service": "ownerclan",
            "userType": "seller",
            "username": self.account.secret("username"),
            "password": self.account.secret("password"),
        }
        # Login has no side effects: safe to repeat on a timeout.
        response = self.http.post(self.auth_url, json=body, idempotent=True)
        token = response.text.strip()
        if token.startswith("{"):  # tolerate a JSON answer {"token": ...}
            try:
                token = str(response.json().get("token", ""))
            except ValueError:
                token = ""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise PermanentError(
                f"ownerclan account {self.account.name!r}: the auth endpoint did not answer a JWT"
            ) from None
        exp = claims.get("exp")
        self._token_expires_at = float(exp) if isinstance(exp, int | float) else time.time() + 3600
        log.info("ownerclan account %s: logged in", self.account.name)
        return token

    def _bearer(self, force_refresh: bool = False) -> str:
        with self._token_lock:
            fresh = time.time() < self._token_expires_at - TOKEN_REFRESH_MARGIN_S
            if force_refresh or self._token is None or not fresh:
                self._token = self._login()
            return self._token

    # ------------------------------------------------------------------ GraphQL

    def _graphql(
        self,
        query: str,
        variables: dict[str, Any],
        *,
        operation: str,
        idempotent: bool = True,
        echo_errors: bool = True,
    ) -> dict[str, Any]:
        """Run one GraphQL operation; its ``data`` or a clear error. ``echo_errors=False`` keeps
        the server's messages out of our exception (they may echo input such as addresses)."""
        payload = {"query": query, "variables": variables}
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._bearer(force_refresh=attempt == 2)}"}
            try:
                response = self.http.post(
                    self.graphql_path, json=payload, headers=headers, idempotent=idempotent
                )
                break
            except AuthRejectedError:
                if attempt == 2:
                    raise
                log.info("ownerclan %s: token rejected, logging in again", operation)
        try:
            body = response.json()
        except ValueError:
            raise TransientError(f"ownerclan {operation}: response is not JSON") from None
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            raise PermanentError(
                f"ownerclan {operation} failed: {_error_text(errors, echo_errors)}"
            )
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise TransientError(f"ownerclan {operation}: response has no data")
        return data

    # ------------------------------------------------------------------ products

    def iter_item_pages(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        first: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Raw ``allItems`` nodes, one page at a time, following ``endCursor``."""
        variables: dict[str, Any] = {"first": first or self.page_size, "after": None}
        if since is not None:
            variables["dateFrom"] = int(since.timestamp())
        if until is not None:
            variables["dateTo"] = int(until.timestamp())
        seen_cursors: set[str] = set()
        while True:
            data = self._graphql(ALL_ITEMS_QUERY, variables, operation="allItems")
            connection = data.get("allItems") or {}
            yield [edge["node"] for edge in connection.get("edges") or []]
            info = connection.get("pageInfo") or {}
            cursor = info.get("endCursor")
            if not info.get("hasNextPage") or not cursor:
                return
            if cursor in seen_cursors:  # a server bug must not loop forever
                raise TransientError("ownerclan allItems: pagination cursor repeated")
            seen_cursors.add(cursor)
            variables["after"] = cursor

    def iter_products(
        self, since: datetime | None = None
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        for nodes in self.iter_item_pages(since=since):
            for node in nodes:
                yield normalise_item(node)

    def get_product(self, supplier_sku: str) -> SupplierProduct | None:
        def load() -> dict[str, Any] | None:
            data = self._graphql(ITEM_QUERY, {"key": supplier_sku}, operation="item")
            node = data.get("item")
            return node if isinstance(node, dict) else None

        node = self.cached_detail(supplier_sku, load)
        if node is None:
            return None
        record = normalise_item(node)
        if isinstance(record, InvalidRecord):
            raise self.malformed_error(record)
        return record

    # ------------------------------------------------------------------ orders

    def _orders_by_note(self, note: str) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = []
        variables: dict[str, Any] = {"note": note, "after": None}
        for _ in range(100):  # bounded: 100 pages of 100 orders for one key is already absurd
            data = self._graphql(ORDERS_BY_NOTE_QUERY, variables, operation="allOrders")
            connection = data.get("allOrders") or {}
            orders += [edge["node"] for edge in connection.get("edges") or []]
            info = connection.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                break
            variables["after"] = info["endCursor"]
        # allOrders(note) may match by substring on some servers: keep exact matches only.
        return [o for o in orders if o.get("note") == note]

    def place_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        existing = self._orders_by_note(request.order_key)
        if existing:
            log.info("ownerclan: order %s already placed; not buying again", request.order_key)
            return _order_result(request.order_key, existing, already_existed=True)
        return self._create_order(request)

    def _create_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        """``createOrder``, sent once and without a look-up: callers use :meth:`place_order`."""
        receiver = request.receiver
        order_input = {
            "products": [
                {
                    "itemKey": line.supplier_sku,
                    "quantity": line.quantity,
                    "optionAttributes": _option_attributes(line.option),
                }
                for line in request.lines
            ],
            "recipient": {
                "name": receiver.name,
                "phoneNumber": receiver.phone,
                "destinationAddress": {
                    "addr1": receiver.address,
                    "addr2": receiver.address_detail,
                    "postalCode": receiver.zipcode,
                },
            },
            "note": request.order_key,
            "sellerNote": request.note or receiver.message,
        }
        data = self._graphql(
            CREATE_ORDER_MUTATION,
            {"input": order_input},
            operation="createOrder",
            idempotent=False,
            echo_errors=False,
        )
        created = data.get("createOrder") or []
        if not created:
            raise TransientError(
                f"ownerclan createOrder for {request.order_key}: no order returned"
            )
        return _order_result(request.order_key, created, already_existed=False)

    def get_shipments(self, order_keys: Sequence[str]) -> list[ShipmentInfo]:
        shipments: list[ShipmentInfo] = []
        keys = list(dict.fromkeys(order_keys))
        # Several keys per request with GraphQL aliases: one call per 20 keys, not per key.
        for start in range(0, len(keys), SHIPMENT_KEYS_PER_QUERY):
            chunk = keys[start : start + SHIPMENT_KEYS_PER_QUERY]
            params = ", ".join(f"$n{i}: String!" for i in range(len(chunk)))
            fields = " ".join(
                f"o{i}: allOrders(note: $n{i}, first: 100)"
                f" {{ edges {{ node {{ {ORDER_FIELDS} }} }} }}"
                for i in range(len(chunk))
            )
            data = self._graphql(
                f"query Shipments({params}) {{ {fields} }}",
                {f"n{i}": key for i, key in enumerate(chunk)},
                operation="allOrders(shipments)",
            )
            for i, key in enumerate(chunk):
                edges = (data.get(f"o{i}") or {}).get("edges") or []
                for edge in edges:
                    shipments += _shipments_of(key, edge["node"])
        return shipments

    def cancel_order(self, order_key: str, reason: str = "") -> bool:
        orders = self._orders_by_note(order_key)
        if any(o.get("status") in _SHIPPED_STATUSES for o in orders):
            return False
        for order in orders:
            if order.get("status") == "cancelled":
                continue
            try:
                self._graphql(CANCEL_ORDER_MUTATION, {"key": order["key"]}, operation="cancelOrder")
            except PermanentError:
                # Shipped between our lookup and the cancel: report "too late" if so.
                refreshed = self._orders_by_note(order_key)
                if any(o.get("status") in _SHIPPED_STATUSES for o in refreshed):
                    return False
                raise
        return True


# ---------------------------------------------------------------------- normalisation


def _error_text(errors: Any, echo: bool) -> str:
    if not isinstance(errors, list):
        return "unknown error"
    if not echo:
        codes = {
            str((e.get("extensions") or {}).get("code", "error"))
            for e in errors
            if isinstance(e, dict)
        }
        return f"{len(errors)} error(s), codes {sorted(codes)}"
    messages = [str(e.get("message", ""))[:200] for e in errors[:3] if isinstance(e, dict)]
    return "; ".join(messages) or "unknown error"


def _option_attributes(option: str | None) -> list[dict[str, str]]:
    """Our option label ``"색상:빨강"`` (``name:value``, several joined by ``,``) as OwnerClan
    ``optionAttributes``."""
    if not option:
        return []
    attributes = []
    for part in option.split(","):
        name, sep, value = part.partition(":")
        if not sep or not name or not value:
            raise PermanentError(f"ownerclan option must look like 'name:value', got {option!r}")
        attributes.append({"name": name.strip(), "value": value.strip()})
    return attributes


def normalise_item(node: dict[str, Any]) -> SupplierProduct | InvalidRecord:
    key = node.get("key")
    if not isinstance(key, str) or not key:
        return InvalidRecord(SUPPLIER, None, "item has no key", raw=node)

    def invalid(reason: str) -> InvalidRecord:
        return InvalidRecord(SUPPLIER, key, reason, raw=node)

    name = node.get("name")
    if not isinstance(name, str) or not name.strip():
        return invalid("name is missing or empty")
    price = node.get("price")
    if not isinstance(price, int) or isinstance(price, bool) or price < 0:
        return invalid(f"price is missing or not a non-negative integer: {price!r}")
    shipping_fee = node.get("shippingFee") or 0
    if not isinstance(shipping_fee, int) or shipping_fee < 0:
        return invalid(f"shippingFee is not a non-negative integer: {shipping_fee!r}")
    options: list[ProductOption] = []
    stock = 0
    for option in node.get("options") or []:
        quantity = option.get("quantity")
        if not isinstance(quantity, int) or quantity < 0:
            return invalid(f"option quantity is not a non-negative integer: {quantity!r}")
        stock += quantity
        attributes = option.get("optionAttributes") or []
        if not attributes:
            continue  # the attribute-less option only carries the item's quantity
        option_price = option.get("price")
        if not isinstance(option_price, int):
            return invalid(f"option price is not an integer: {option_price!r}")
        options.append(
            ProductOption(
                name="/".join(str(a.get("name", "")) for a in attributes),
                value="/".join(str(a.get("value", "")) for a in attributes),
                price_delta=option_price - price,
                stock=quantity,
            )
        )
    status = _STATUS.get(str(node.get("status")), "gone")
    if status == "active" and stock == 0:
        status = "soldout"
    updated = node.get("updatedAt")
    category = node.get("category") or {}
    images = node.get("images") or []
    return SupplierProduct(
        supplier=SUPPLIER,
        supplier_sku=key,
        name=name.strip(),
        cost_price=price,
        shipping_fee=shipping_fee,
        stock=stock,
        status=status,  # type: ignore[arg-type]
        category=category.get("key") if isinstance(category, dict) else None,
        images=tuple(str(i) for i in images),
        options=tuple(options),
        updated_at=datetime.fromtimestamp(updated, UTC) if isinstance(updated, int) else None,
        raw=node,
    )


def _order_result(
    order_key: str, orders: list[dict[str, Any]], *, already_existed: bool
) -> PurchaseOrderResult:
    total = sum(
        int(p.get("price") or 0) * int(p.get("quantity") or 0)
        for o in orders
        for p in o.get("products") or []
    )
    statuses = {str(o.get("status")) for o in orders}
    return PurchaseOrderResult(
        order_key=order_key,
        supplier_order_ids=tuple(str(o["key"]) for o in orders),
        already_existed=already_existed,
        total_cost=total,
        status=statuses.pop() if len(statuses) == 1 else ",".join(sorted(statuses)),
    )


def _shipments_of(order_key: str, order: dict[str, Any]) -> list[ShipmentInfo]:
    if order.get("note") != order_key or order.get("status") == "cancelled":
        return []
    seen: set[tuple[str, str]] = set()
    shipments = []
    for product in order.get("products") or []:
        number, carrier = product.get("trackingNumber"), product.get("shippingCompanyName")
        if number and (carrier or "", number) not in seen:
            seen.add((carrier or "", number))
            shipments.append(
                ShipmentInfo(
                    order_key=order_key,
                    carrier=str(carrier or ""),
                    tracking_number=str(number),
                    supplier_order_id=str(order.get("key")),
                )
            )
    return shipments


__all__ = ["OwnerClanConnector", "normalise_item"]
