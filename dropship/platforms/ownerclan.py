"""OwnerClan connector: JWT login, GraphQL queries, time-window slices, purchase orders by note.

Every query this module can send is listed by :func:`documents` and validated in
``tests/contracts/test_ownerclan_contract.py`` against ``dropship/sandbox/ownerclan_schema.graphql``
(the published v0.11.0 schema as far as the sources confirm it; docs/PLATFORMS.md, "OwnerClan").

* Auth: ``POST {auth_url}`` with ``{"service": "ownerclan", "userType": "seller", username,
  password}`` answers the JWT as **plain text** (a JSON ``{"accessToken": ...}`` is tolerated).
  The token (30 days) is cached per connector until shortly before its ``exp`` claim (read
  without verifying: only OwnerClan can verify it) and replaced once when the API answers 401.
* Products: ``allItems(first <= 1000, after, dateFrom, dateTo)``; ``dateFrom``/``dateTo`` are the
  ``Timestamp`` scalar, **epoch milliseconds**, inclusive, on the item's ``updatedAt``.
  ``images`` takes the required ``size`` argument. Items have no top-level stock: the stock is the
  sum of the option quantities (an item without options has one attribute-less option carrying
  its quantity). Option prices are full prices; we store the delta to the item price and keep the
  option's ``key`` as ``supplier_option_code``.
* Slices (:meth:`OwnerClanConnector.plan_slices`): disjoint ``updatedAt`` windows. A full collect
  is one window before ``history_start``, then ``window_days`` windows up to the planning time,
  and a last window with no upper bound (so an item touched during the run is still read); an
  incremental collect is one open window from ``since`` minus ``overlap_minutes``. Inside a
  window the relay cursor is followed sequentially (a cursor only means something within the
  query that produced it).
* Status: ``available`` -> active (soldout when every option is at 0), ``soldout`` and
  ``unavailable`` -> soldout (both may come back), ``discontinued`` -> gone.
  ``openmarketSellable`` other than ``true`` -> ``open_market_sellable=False`` (OwnerClan
  sanctions sellers who list such a product on an open market); ``adultOnly`` other than
  ``false`` -> ``adult_only=True``. Unknown is treated as the restrictive answer.
* Records never break the stream: a node that cannot be normalised, or holds an absurd value, is
  an :class:`InvalidRecord` with a precise reason and the raw node (bounded); so is the second
  occurrence of a SKU within one read.
* Purchase orders: our order key travels in ``note``. ``place_order`` first looks the key up
  with ``allOrders(note: key)`` (no dates: OwnerClan's default window, the last 90 days) and only
  creates when nothing exists, so a redelivered task never buys twice; ``createOrder`` itself is
  sent once. ``place_orders`` does the same for a forward batch with one aliased look-up
  (:func:`notes_query`, 20 keys a call) before its creates. Tracking comes from the order
  products' ``shippingCompanyCode``, ``trackingNumber`` and ``shippedDate``, read with the same
  aliased look-up. ``note`` matches by substring: only exact matches count, and a key whose
  answer has a next page is paged through alone.

Account settings: credentials ``username``/``password``; options ``auth_url`` (default
``{base_url}/auth``; production: ``https://auth.ownerclan.com/auth``), ``graphql_path`` (default
``/v1/graphql``), ``window_days`` (default 90), ``history_start`` (ISO date, default
2015-01-01), ``overlap_minutes`` (default 30). Base URL in production: ``https://api.ownerclan.com``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import jwt

from dropship.errors import (
    ConfigurationError,
    DropshipError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from dropship.platforms._supplier_common import SupplierConnectorBase
from dropship.platforms.cache import ResponseCache
from dropship.platforms.config import AccountSettings
from dropship.platforms.http import AuthRejectedError, PlatformHttp
from dropship.platforms.interfaces import (
    CollectSlice,
    InvalidRecord,
    ProductOption,
    ProductStatus,
    PurchaseOrderLine,
    PurchaseOrderRequest,
    PurchaseOrderResult,
    ShipmentInfo,
    SupplierProduct,
)

log = logging.getLogger(__name__)

SUPPLIER = "ownerclan"
MAX_PAGE_SIZE = 1000  # OwnerClan rejects first > 1000
TOKEN_REFRESH_MARGIN_S = 300.0
NOTE_KEYS_PER_QUERY = 20  # aliased allOrders(note:) per request
CREATES_PER_CALL = 20  # aliased createOrder per request (option orders_per_create_call)
# Sanity bounds: a value outside them is a supplier data error, rejected with a reason.
MAX_COST_KRW = 100_000_000
MAX_STOCK = 1_000_000
MAX_NAME_CHARS = 500
MAX_SKU_CHARS = 64
MAX_TIMESTAMP_MS = 4_102_444_800_000  # 2100-01-01: beyond it, not a real time
RAW_LIMIT_CHARS = 16_384  # an InvalidRecord keeps at most this much of the raw node
DEFAULT_WINDOW_DAYS = 90
DEFAULT_HISTORY_START = "2015-01-01"
DEFAULT_OVERLAP_MINUTES = 30
RATE_LIMIT_RETRY_S = 60.0

_STATUS: dict[str, ProductStatus] = {
    "available": "active",
    "soldout": "soldout",  # temporarily sold out
    "unavailable": "soldout",  # not on sale now, may come back
    "discontinued": "gone",  # never comes back
}
_SHIPPED_STATUSES = frozenset({"shipped", "refunded"})

ITEM_FIELDS = """
  key name model price fixedPrice shippingFee shippingType status updatedAt
  images(size: large)
  category { key fullName }
  options { key price quantity optionAttributes { name value } }
  taxFree adultOnly returnable openmarketSellable
"""
ALL_ITEMS_QUERY = (
    "query AllItems($first: Int, $after: String, $dateFrom: Timestamp, $dateTo: Timestamp) {"
    " allItems(first: $first, after: $after, dateFrom: $dateFrom, dateTo: $dateTo) {"
    " pageInfo { hasNextPage endCursor } edges { cursor node {" + ITEM_FIELDS + "} } } }"
)
ITEM_QUERY = "query Item($key: ID!) { item(key: $key) {" + ITEM_FIELDS + "} }"
ORDER_FIELDS = (
    "key status note createdAt"
    " products { itemKey quantity price shippingCompanyCode trackingNumber shippedDate }"
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


def notes_query(count: int) -> str:
    """One ``allOrders(note:)`` per key, as GraphQL aliases: one call for up to 20 keys (the
    purchase look-up of a forward batch and the tracking sweep both send it)."""
    params = ", ".join(f"$n{i}: String!" for i in range(count))
    fields = " ".join(
        f"o{i}: allOrders(note: $n{i}, first: 100) {{ pageInfo {{ hasNextPage endCursor }} "
        f"edges {{ node {{ {ORDER_FIELDS} }} }} }}"
        for i in range(count)
    )
    return f"query OrdersByNotes({params}) {{ {fields} }}"


def creates_mutation(count: int) -> str:
    """``count`` ``createOrder`` mutations as aliases in one document (GraphQL executes a
    mutation's root fields one after another, in order)."""
    params = ", ".join(f"$i{i}: OrderInput!" for i in range(count))
    fields = " ".join(f"c{i}: createOrder(input: $i{i}) {{ {ORDER_FIELDS} }}" for i in range(count))
    return f"mutation CreateOrders({params}) {{ {fields} }}"


def documents() -> list[str]:
    """Every GraphQL document this connector can send (the contract test validates each)."""
    return [
        ALL_ITEMS_QUERY,
        ITEM_QUERY,
        ORDERS_BY_NOTE_QUERY,
        CREATE_ORDER_MUTATION,
        CANCEL_ORDER_MUTATION,
        *(notes_query(n) for n in range(1, NOTE_KEYS_PER_QUERY + 1)),
        *(creates_mutation(n) for n in range(2, CREATES_PER_CALL + 1)),
    ]


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


class OwnerClanConnector(SupplierConnectorBase):
    """:class:`~dropship.platforms.interfaces.SupplierConnector` for OwnerClan."""

    supplier = SUPPLIER
    max_page_size = MAX_PAGE_SIZE

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
        self.window = timedelta(days=self._number_option("window_days", DEFAULT_WINDOW_DAYS))
        self.overlap = timedelta(
            minutes=self._number_option("overlap_minutes", DEFAULT_OVERLAP_MINUTES, minimum=0)
        )
        start = account.option("history_start") or DEFAULT_HISTORY_START
        try:
            parsed = datetime.fromisoformat(start)
        except ValueError:
            raise ConfigurationError(
                f"ownerclan account {account.name!r}: option history_start must be an ISO date,"
                f" got {start!r}"
            ) from None
        self.history_start = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        self.creates_per_call = int(
            min(
                CREATES_PER_CALL, self._number_option("orders_per_create_call", CREATES_PER_CALL, 1)
            )
        )
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = threading.Lock()

    def _number_option(self, key: str, default: float, minimum: float = 1e-3) -> float:
        raw = self.account.option(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < minimum:
            raise ConfigurationError(
                f"ownerclan account {self.account.name!r}: option {key} must be a number"
                f" >= {minimum}, got {raw!r}"
            )
        return value

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
        if token.startswith("{"):  # tolerate a JSON answer {"accessToken": ...}
            try:
                answer = response.json()
                token = str(answer.get("accessToken") or answer.get("token") or "")
            except (ValueError, AttributeError):
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
        body = self._post(query, variables, operation=operation, idempotent=idempotent)
        errors = body.get("errors")
        if errors:
            raise PermanentError(
                f"ownerclan {operation} failed: {_error_text(errors, echo_errors)}"
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise TransientError(f"ownerclan {operation}: response has no data")
        return data

    def _post(
        self, query: str, variables: dict[str, Any], *, operation: str, idempotent: bool
    ) -> dict[str, Any]:
        """One GraphQL request; the answer's JSON object (``data`` and ``errors`` as sent)."""
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
        if not isinstance(body, dict):
            raise PermanentError(f"ownerclan {operation}: response is not a JSON object")
        errors = body.get("errors")
        if errors and _rate_limited(errors):  # OwnerClan answers "Too many requests" with 200
            raise RateLimitedError(f"ownerclan {operation}: too many requests", RATE_LIMIT_RETRY_S)
        return body

    # ------------------------------------------------------------------ products

    def iter_item_pages(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        first: int | None = None,
    ) -> Iterator[list[Any]]:
        """Raw ``allItems`` nodes, one page at a time, following ``endCursor``."""
        yield from self._pages(
            to_ms(since) if since is not None else None,
            to_ms(until) if until is not None else None,
            first,
        )

    def _pages(
        self, date_from: int | None, date_to: int | None, first: int | None = None
    ) -> Iterator[list[Any]]:
        variables: dict[str, Any] = {"first": first or self.page_size, "after": None}
        if date_from is not None:
            variables["dateFrom"] = date_from
        if date_to is not None:
            variables["dateTo"] = date_to
        seen_cursors: set[str] = set()
        while True:
            data = self._graphql(ALL_ITEMS_QUERY, variables, operation="allItems")
            connection = data.get("allItems")
            if not isinstance(connection, dict):
                raise PermanentError("ownerclan allItems: answer has no connection object")
            edges = connection.get("edges")
            if not isinstance(edges, list):
                raise PermanentError("ownerclan allItems: 'edges' is not a list")
            yield [edge.get("node") if isinstance(edge, dict) else edge for edge in edges]
            info = connection.get("pageInfo")
            if not isinstance(info, dict):
                raise PermanentError("ownerclan allItems: 'pageInfo' is not an object")
            cursor = info.get("endCursor")
            if not info.get("hasNextPage"):
                return
            if not isinstance(cursor, str) or not cursor:
                raise PermanentError("ownerclan allItems: hasNextPage without an endCursor")
            if cursor in seen_cursors:  # a server bug must not loop forever
                raise TransientError("ownerclan allItems: pagination cursor repeated")
            seen_cursors.add(cursor)
            variables["after"] = cursor

    def _records(
        self, date_from: int | None, date_to: int | None
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        """One read: normalised records of a window; a SKU seen twice is rejected the second
        time (the set holds only keys, one window's worth)."""
        seen: set[str] = set()
        for nodes in self._pages(date_from, date_to):
            for node in nodes:
                record = normalise_item(node)
                sku = record.supplier_sku
                if sku is not None and sku in seen:
                    yield InvalidRecord(
                        SUPPLIER,
                        sku,
                        f"duplicated SKU {sku} within one read (allItems answered it twice)",
                        raw=bounded_raw(node),
                    )
                    continue
                if sku is not None:
                    seen.add(sku)
                yield record

    def iter_products(
        self, since: datetime | None = None
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        return self._records(to_ms(since) if since is not None else None, None)

    def plan_slices(self, since: datetime | None = None) -> list[CollectSlice]:
        """Disjoint ``updatedAt`` windows (see the module docstring). Bounds are inclusive on
        the wire, so a window ends 1 ms before the next one starts."""
        if since is not None:
            start = to_ms(since - self.overlap)
            return [_window_slice(start, None)]
        now = datetime.now(UTC)
        bounds: list[int] = []
        edge = self.history_start
        while edge < now:
            bounds.append(to_ms(edge))
            edge += self.window
        slices = [_window_slice(None, bounds[0] - 1)] if bounds else []
        for low, high in pairwise(bounds):
            slices.append(_window_slice(low, high - 1))
        slices.append(_window_slice(bounds[-1] if bounds else None, None))
        return slices

    def iter_slice(self, piece: CollectSlice) -> Iterator[SupplierProduct | InvalidRecord]:
        params = piece.params
        date_from, date_to = params.get("date_from_ms"), params.get("date_to_ms")
        for name, value in (("date_from_ms", date_from), ("date_to_ms", date_to)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise PermanentError(
                    f"ownerclan slice {piece.key!r}: {name} must be epoch milliseconds or null,"
                    f" got {value!r}"
                )
        return self._records(date_from, date_to)

    def recheck_missing(
        self, skus: Sequence[str], run_started_at: datetime
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        """An item changed while a full run was reading moves to a later ``updatedAt`` window
        and can be missed by both windows. Every such item was changed after the run started,
        so one catch-up window from then (minus the overlap) finds it; what is still missing
        is gone (OwnerClan keeps discontinued items, with that status, in its listings)."""
        wanted = set(skus)
        if not wanted:
            return
        for record in self._records(to_ms(run_started_at - self.overlap), None):
            if record.supplier_sku in wanted:
                yield record

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
            connection = data.get("allOrders")
            if not isinstance(connection, dict):
                raise PermanentError("ownerclan allOrders: answer has no connection object")
            orders += _order_nodes(connection)
            info = connection.get("pageInfo")
            if not isinstance(info, dict) or not info.get("hasNextPage"):
                break
            if not isinstance(info.get("endCursor"), str):
                raise PermanentError("ownerclan allOrders: hasNextPage without an endCursor")
            variables["after"] = info["endCursor"]
        # allOrders(note) matches by substring: keep exact matches only.
        return [o for o in orders if o.get("note") == note]

    def orders_by_notes(self, keys: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The orders carrying each key as their ``note`` (exact matches), one aliased query per
        :data:`NOTE_KEYS_PER_QUERY` keys. ``note`` matches by substring, so a key can have more
        than one page of near matches (``coupang:1:12`` is inside ``coupang:1:123``): such a key
        is paged through on its own."""
        found: dict[str, list[dict[str, Any]]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), NOTE_KEYS_PER_QUERY):
            chunk = unique[start : start + NOTE_KEYS_PER_QUERY]
            data = self._graphql(
                notes_query(len(chunk)),
                {f"n{i}": key for i, key in enumerate(chunk)},
                operation="allOrders(notes)",
            )
            for i, key in enumerate(chunk):
                connection = data.get(f"o{i}")
                if not isinstance(connection, dict):
                    raise PermanentError("ownerclan allOrders: answer has no connection object")
                info = connection.get("pageInfo")
                if isinstance(info, dict) and info.get("hasNextPage"):
                    found[key] = self._orders_by_note(key)
                else:
                    found[key] = [o for o in _order_nodes(connection) if o.get("note") == key]
        return found

    def place_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        existing = self._orders_by_note(request.order_key)
        if existing:
            log.info("ownerclan: order %s already placed; not buying again", request.order_key)
            return _order_result(request.order_key, existing, already_existed=True)
        return self._create_order(request)

    def place_orders(
        self, requests: Sequence[PurchaseOrderRequest]
    ) -> list[PurchaseOrderResult | DropshipError]:
        """:meth:`place_order` for a batch: one aliased look-up of every key first (a call per
        20 keys instead of one per order), then the keys not found are created,
        ``orders_per_create_call`` aliased ``createOrder`` per request (:meth:`_create_many`).
        The answer lists, in request order, each request's result or its error (a refusal, or a
        lost answer whose outcome the next look-up tells). A failed look-up raises: nothing
        was created. Once the API says "too many requests" the remaining creates are not
        sent; they get the same error."""
        found = self.orders_by_notes([r.order_key for r in requests])
        results: dict[int, PurchaseOrderResult | DropshipError] = {}
        todo: list[int] = []
        for i, request in enumerate(requests):
            existing = found.get(request.order_key)
            if existing:
                log.info("ownerclan: order %s already placed; not buying again", request.order_key)
                results[i] = _order_result(request.order_key, existing, already_existed=True)
            else:
                todo.append(i)
        limited: RateLimitedError | None = None
        while todo:
            chunk, todo = todo[: self.creates_per_call], todo[self.creates_per_call :]
            if limited is not None:
                results.update((i, limited) for i in chunk)
                continue
            try:
                answers = self._create_many([requests[i] for i in chunk])
            except RateLimitedError as exc:
                limited = exc
                answers = [exc] * len(chunk)
            results.update(zip(chunk, answers, strict=True))
        return [results[i] for i in range(len(requests))]

    def _create_many(
        self, requests: Sequence[PurchaseOrderRequest]
    ) -> list[PurchaseOrderResult | DropshipError]:
        """Create each request's purchase (none of them exists), as aliases of one mutation.
        An alias answered with orders is placed; one with its own error was refused (codes
        only: the text may echo the receiver). Any other alias, or every one after a lost
        answer, has an unknown outcome: the keys are looked up once more and the ones still
        missing are created one per call. A document refused as a whole (a server that takes
        one mutation per request) is sent again one ``createOrder`` per call, and so is every
        later batch of this connector."""
        answers: dict[int, PurchaseOrderResult | DropshipError] = {}
        inputs: list[tuple[int, dict[str, Any]]] = []
        for i, request in enumerate(requests):
            try:
                inputs.append((i, self._order_input(request)))
            except (PermanentError, TransientError) as exc:
                answers[i] = exc
        unknown: list[int] = []
        if len(inputs) == 1:
            ((i, _),) = inputs
            answers[i] = self._create_one(requests[i])
        elif inputs:
            body: dict[str, Any] | None
            try:
                body = self._post(
                    creates_mutation(len(inputs)),
                    {f"i{k}": value for k, (_, value) in enumerate(inputs)},
                    operation="createOrder",
                    idempotent=False,
                )
            except RateLimitedError:
                raise
            except TransientError:
                body = None  # the answer was lost: every outcome is unknown
            errors = [e for e in (body or {}).get("errors") or [] if isinstance(e, dict)]
            if body is not None and errors and not any(e.get("path") for e in errors):
                log.warning(
                    "ownerclan: %d createOrder in one request refused (%s); one per request "
                    "from now on",
                    len(inputs),
                    _error_text(errors, False),
                )
                self.creates_per_call = 1
                for i, _ in inputs:
                    answers[i] = self._create_one(requests[i])
                return [answers[i] for i in range(len(requests))]
            data = (body or {}).get("data")
            by_alias = {str(e["path"][0]): e for e in errors if e.get("path")}
            for k, (i, _) in enumerate(inputs):
                node = data.get(f"c{k}") if isinstance(data, dict) else None
                if isinstance(node, list) and node:
                    created = [o for o in node if isinstance(o, dict)]
                    answers[i] = _order_result(
                        requests[i].order_key, created, already_existed=False
                    )
                elif f"c{k}" in by_alias:
                    answers[i] = PermanentError(
                        f"ownerclan createOrder failed: {_error_text([by_alias[f'c{k}']], False)}"
                    )
                else:
                    unknown.append(i)
        if unknown:
            try:
                found = self.orders_by_notes([requests[i].order_key for i in unknown])
            except TransientError as exc:
                answers.update((i, exc) for i in unknown)
            else:
                for i in unknown:
                    key = requests[i].order_key
                    if found.get(key):
                        answers[i] = _order_result(key, found[key], already_existed=True)
                    else:
                        answers[i] = self._create_one(requests[i])
        return [answers[i] for i in range(len(requests))]

    def _create_one(self, request: PurchaseOrderRequest) -> PurchaseOrderResult | DropshipError:
        try:
            return self._create_order(request)
        except RateLimitedError:
            raise
        except (PermanentError, TransientError) as exc:
            return exc

    def _option_values(self, line: PurchaseOrderLine) -> list[str]:
        """The option of a line as OwnerClan's ``optionAttributes``: the attribute values in the
        item's order. ``line.option`` is our label ``"name:value"`` (several joined by ``,``) or
        the supplier's option code (``ItemOption.key``), looked up on the item."""
        option = line.option
        if not option:
            return []
        if ":" in option:
            values = []
            for part in option.split(","):
                name, _, value = part.partition(":")
                if not name.strip() or not value.strip():
                    raise PermanentError(
                        f"ownerclan option must look like 'name:value', got {option!r}"
                    )
                values.append(value.strip())
            return values
        product = self.get_product(line.supplier_sku)
        chosen = (
            next((o for o in product.options if o.supplier_option_code == option), None)
            if product
            else None
        )
        if chosen is None:
            raise PermanentError(
                f"ownerclan item {line.supplier_sku} has no option with code {option!r}"
            )
        return chosen.value.split("/")

    def _order_input(self, request: PurchaseOrderRequest) -> dict[str, Any]:
        receiver = request.receiver
        recipient: dict[str, Any] = {
            "name": receiver.name,
            "phoneNumber": receiver.phone,
            "destinationAddress": {
                "addr1": receiver.address,
                "addr2": receiver.address_detail,
                "postalCode": receiver.zipcode,
            },
        }
        order_input: dict[str, Any] = {
            "products": [
                {
                    "itemKey": line.supplier_sku,
                    "quantity": line.quantity,
                    "optionAttributes": self._option_values(line),
                }
                for line in request.lines
            ],
            "recipient": recipient,
            "note": request.order_key,
        }
        if request.note:
            order_input["sellerNote"] = request.note
        if receiver.message:
            order_input["ordererNote"] = receiver.message
        return order_input

    def _create_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        """``createOrder``, sent once and without a look-up: callers use :meth:`place_order`."""
        data = self._graphql(
            CREATE_ORDER_MUTATION,
            {"input": self._order_input(request)},
            operation="createOrder",
            idempotent=False,
            echo_errors=False,
        )
        created = data.get("createOrder")
        if not isinstance(created, list) or not created:
            raise TransientError(
                f"ownerclan createOrder for {request.order_key}: no order returned"
            )
        return _order_result(
            request.order_key, [o for o in created if isinstance(o, dict)], already_existed=False
        )

    def get_shipments(self, order_keys: Sequence[str]) -> list[ShipmentInfo]:
        # Several keys per request with GraphQL aliases: one call per 20 keys, not per key.
        shipments: list[ShipmentInfo] = []
        for key, orders in self.orders_by_notes(order_keys).items():
            for order in orders:
                shipments += _shipments_of(key, order)
        return shipments

    def cancel_order(self, order_key: str, reason: str = "") -> bool:
        orders = self._orders_by_note(order_key)
        if any(o.get("status") in _SHIPPED_STATUSES for o in orders):
            return False
        for order in orders:
            if order.get("status") == "cancelled":
                continue
            try:
                self._graphql(
                    CANCEL_ORDER_MUTATION, {"key": str(order.get("key"))}, operation="cancelOrder"
                )
            except PermanentError:
                # Shipped between our lookup and the cancel: report "too late" if so.
                refreshed = self._orders_by_note(order_key)
                if any(o.get("status") in _SHIPPED_STATUSES for o in refreshed):
                    return False
                raise
        return True


# ---------------------------------------------------------------------- normalisation


def _window_slice(date_from: int | None, date_to: int | None) -> CollectSlice:
    def label(ms: int | None, open_end: str) -> str:
        return (
            from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z" if ms is not None else open_end
        )

    key = f"window:{label(date_from, 'start')}..{label(date_to, 'open')}"
    return CollectSlice(key, {"date_from_ms": date_from, "date_to_ms": date_to})


def _rate_limited(errors: Any) -> bool:
    return isinstance(errors, list) and any(
        isinstance(e, dict) and "too many requests" in str(e.get("message", "")).lower()
        for e in errors
    )


def _error_text(errors: Any, echo: bool) -> str:
    if not isinstance(errors, list):
        return "unknown error"
    if not echo:
        codes = {
            str((e.get("extensions") or {}).get("code", "error"))
            for e in errors
            if isinstance(e, dict) and isinstance(e.get("extensions") or {}, dict)
        }
        return f"{len(errors)} error(s), codes {sorted(codes)}"
    messages = [str(e.get("message", ""))[:200] for e in errors[:3] if isinstance(e, dict)]
    return "; ".join(messages) or "unknown error"


def bounded_raw(node: Any) -> dict[str, Any]:
    """The raw node for an :class:`InvalidRecord`, cut to :data:`RAW_LIMIT_CHARS` of JSON."""
    try:
        text = json.dumps(node, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(node)
    if isinstance(node, dict) and len(text) <= RAW_LIMIT_CHARS:
        return node
    return {"truncated": text[:RAW_LIMIT_CHARS], "chars": len(text)}


def _krw(value: Any) -> int | None:
    """A JSON number that is a whole KRW amount (OwnerClan types prices as Float), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        return int(value)
    return value


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def normalise_item(node: Any) -> SupplierProduct | InvalidRecord:
    """One ``Item`` node as a product, or an :class:`InvalidRecord` with the reason. Never
    raises: an unexpected shape is a reason too."""
    if not isinstance(node, dict):
        return InvalidRecord(
            SUPPLIER, None, f"item node is not an object: {type(node).__name__}", bounded_raw(node)
        )
    key = node.get("key")
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_SKU_CHARS:
        return InvalidRecord(
            SUPPLIER,
            None,
            f"item key is missing or not a short string: {key!r:.80}",
            bounded_raw(node),
        )
    try:
        return _normalise(key, node)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError) as exc:
        return InvalidRecord(
            SUPPLIER,
            key,
            f"unexpected item shape ({type(exc).__name__}: {exc})"[:300],
            bounded_raw(node),
        )


def _normalise(key: str, node: dict[str, Any]) -> SupplierProduct | InvalidRecord:
    def invalid(reason: str) -> InvalidRecord:
        return InvalidRecord(SUPPLIER, key, reason, raw=bounded_raw(node))

    name = node.get("name")
    if not isinstance(name, str) or not name.strip():
        return invalid("name is missing or empty")
    if len(name) > MAX_NAME_CHARS:
        return invalid(f"name is absurdly long ({len(name)} characters)")
    price = _krw(node.get("price"))
    if price is None:
        return invalid(f"price is missing or not a whole KRW amount: {node.get('price')!r:.40}")
    if price <= 0 or price > MAX_COST_KRW:
        return invalid(f"price {price} KRW is outside 1..{MAX_COST_KRW:,}")
    raw_fee = node.get("shippingFee")
    shipping_fee = 0 if raw_fee is None else _krw(raw_fee)
    if shipping_fee is None or not 0 <= shipping_fee <= MAX_COST_KRW:
        return invalid(
            f"shippingFee is not a KRW amount within 0..{MAX_COST_KRW:,}: {raw_fee!r:.40}"
        )
    raw_status = node.get("status")
    if raw_status not in _STATUS:
        return invalid(f"status is not one of {sorted(_STATUS)}: {raw_status!r:.40}")
    status = _STATUS[raw_status]
    raw_options = node.get("options")
    if raw_options is None:
        raw_options = []
    if not isinstance(raw_options, list):
        return invalid("options is not a list")
    options: list[ProductOption] = []
    stock = 0
    for n, option in enumerate(raw_options):
        if not isinstance(option, dict):
            return invalid(f"option #{n} is not an object")
        quantity = _count(option.get("quantity"))
        if quantity is None or quantity < 0:
            return invalid(
                f"option #{n} quantity is not a non-negative integer:"
                f" {option.get('quantity')!r:.40}"
            )
        if quantity > MAX_STOCK:
            return invalid(f"option #{n} quantity {quantity} is over {MAX_STOCK:,}")
        option_price = _krw(option.get("price"))
        if option_price is None:
            return invalid(
                f"option #{n} price is not a whole KRW amount: {option.get('price')!r:.40}"
            )
        if option_price < 0:
            return invalid(f"option #{n} price {option_price} is below zero")
        if option_price > MAX_COST_KRW:
            return invalid(f"option #{n} price {option_price} is over {MAX_COST_KRW:,}")
        stock += quantity
        attributes = option.get("optionAttributes") or []
        if not isinstance(attributes, list):
            return invalid(f"option #{n} optionAttributes is not a list")
        if not attributes:
            continue  # the attribute-less option only carries the item's quantity
        names, values = [], []
        for attribute in attributes:
            if not isinstance(attribute, dict):
                return invalid(f"option #{n} has an attribute that is not an object")
            attr_name, attr_value = attribute.get("name"), attribute.get("value")
            if not isinstance(attr_name, str) or not isinstance(attr_value, str):
                return invalid(f"option #{n} attribute name/value is not text")
            if not attr_name.strip() or not attr_value.strip():
                return invalid(f"option #{n} has an empty attribute name or value")
            names.append(attr_name.strip())
            values.append(attr_value.strip())
        code = option.get("key")
        options.append(
            ProductOption(
                name="/".join(names),
                value="/".join(values),
                price_delta=option_price - price,
                stock=quantity,
                supplier_option_code=str(code) if code is not None else None,
            )
        )
    if stock > MAX_STOCK:
        return invalid(f"stock {stock} (sum of option quantities) is over {MAX_STOCK:,}")
    if status == "active" and stock == 0:
        status = "soldout"
    raw_updated = node.get("updatedAt")
    updated_at = None
    if raw_updated is not None:
        updated_ms = _count(raw_updated)
        if updated_ms is None or not 0 <= updated_ms < MAX_TIMESTAMP_MS:
            return invalid(f"updatedAt is not epoch milliseconds before 2100: {raw_updated!r:.40}")
        updated_at = from_ms(updated_ms)
    category = node.get("category")
    category_key = category.get("key") if isinstance(category, dict) else None
    images = node.get("images")
    return SupplierProduct(
        supplier=SUPPLIER,
        supplier_sku=key,
        name=name.strip(),
        cost_price=price,
        shipping_fee=shipping_fee,
        stock=stock,
        status=status,
        category=str(category_key) if category_key is not None else None,
        images=tuple(i for i in images if isinstance(i, str)) if isinstance(images, list) else (),
        options=tuple(options),
        updated_at=updated_at,
        # Unknown is the restrictive answer: a product we cannot prove sellable is not listed.
        open_market_sellable=node.get("openmarketSellable") is True,
        adult_only=node.get("adultOnly") is not False,
        raw=node,
    )


def _order_nodes(connection: dict[str, Any]) -> list[dict[str, Any]]:
    edges = connection.get("edges")
    if not isinstance(edges, list):
        raise PermanentError("ownerclan allOrders: 'edges' is not a list")
    nodes = [edge.get("node") for edge in edges if isinstance(edge, dict)]
    return [node for node in nodes if isinstance(node, dict)]


def _order_result(
    order_key: str, orders: list[dict[str, Any]], *, already_existed: bool
) -> PurchaseOrderResult:
    total = 0
    for order in orders:
        for product in order.get("products") or []:
            if not isinstance(product, dict):
                continue
            price = _krw(product.get("price")) or 0
            quantity = _count(product.get("quantity")) or 0
            total += price * quantity
    statuses = {str(o.get("status")) for o in orders}
    return PurchaseOrderResult(
        order_key=order_key,
        supplier_order_ids=tuple(str(o.get("key")) for o in orders),
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
        if not isinstance(product, dict):
            continue
        number, carrier = product.get("trackingNumber"), product.get("shippingCompanyCode")
        if not number or (str(carrier or ""), str(number)) in seen:
            continue
        seen.add((str(carrier or ""), str(number)))
        shipped = _count(product.get("shippedDate"))
        shipments.append(
            ShipmentInfo(
                order_key=order_key,
                carrier=str(carrier or ""),
                tracking_number=str(number),
                supplier_order_id=str(order.get("key")),
                shipped_at=(
                    from_ms(shipped)
                    if shipped is not None and 0 <= shipped < MAX_TIMESTAMP_MS
                    else None
                ),
            )
        )
    return shipments


__all__ = [
    "OwnerClanConnector",
    "bounded_raw",
    "creates_mutation",
    "documents",
    "normalise_item",
    "notes_query",
]
