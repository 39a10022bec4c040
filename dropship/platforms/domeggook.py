"""Domeggook / Domeme (도매꾹/도매매) connector: category sweeps over ``getItemList``, details
through ``getItemView`` with ``multiple=true``.

Wire facts (sources in docs/PLATFORMS.md "Domeggook / Domeme"):

* ``GET {base_url}/ssl/api/?ver=&mode=&aid=KEY&om=json``. Errors come as HTTP 200 with
  ``{"errors": {"code", "message", "dmessage"}}``: ``401``/``403`` (key rejected) are a
  :class:`~dropship.errors.PermanentError` that never echoes the key; ``404`` is "no such item"
  (``None`` from :meth:`get_product`) unless it says there is no such service (wrong ``mode``/
  ``ver``: a configuration error). Beyond 180 calls/minute or 15,000/day: HTTP 429.
* ``getItemList`` **ver 4.1** needs a search condition (``kw``, ``ca``, ``ev``, ``id``,
  ``itemNo``; a top-level category does not count), so the catalog is read as **category
  sweeps**: the categories come from ``getCategoryList`` (ver 1.0; its middle level, depth 2, by
  default), or from the account option ``categories`` when set. ``market=supply`` (Domeme, the
  no-minimum dropshipping channel), ``sz`` 1..200, ``pg``. ``list.item`` is a list, one object
  when the page has one product, absent when empty: :func:`as_list` normalises all three.
  Sold-out and stopped items are **absent** from list results, so absence proves nothing:
  :meth:`DomeggookConnector.confirm_gone` asks ``getItemView`` before anything is called gone.
* ``getItemView`` **ver 4.6** with ``multiple=true``: up to 100 comma-separated ``no`` per call
  (``domeggook.multipleResult.item``, again one object when one item; ``domeggook.items`` is also
  accepted). Cost is ``price.supply`` (a number or a tier string ``1+3800|20+3500``: the first
  tier), stock ``qty.inventory``, shipping ``deli.supply`` (``fee``, free when ``type``/``pay``
  says 무료), ``channel.supply`` whether Domeme sells it (-> ``open_market_sellable``),
  ``basis.adultOnly`` (-> ``adult_only``). Options: ``selectOpt`` is a JSON document inside a
  string; each ``data`` row has ``sup``/``dom`` (0/1: offered on Domeme / Domeggook), ``hid``
  (0 on sale; otherwise not offered), ``supPrice``/``domPrice`` (price difference) and ``qty``.

Records never break the stream: an item that cannot be normalised (an unreadable number, a
missing price, cost 0 or above 100,000,000 KRW, stock above 1,000,000, an option priced below
zero, an item number listed twice, a broken ``selectOpt``) becomes an
:class:`~dropship.platforms.interfaces.InvalidRecord` with a bounded excerpt of the raw record and
a precise reason, and the next item follows.

Daily budget: every call is charged to the account's daily budget by the limiter the registry
wires in (:mod:`dropship.platforms.budget`); :meth:`iter_slice` checks up front that the slice's
calls still fit today and raises :class:`~dropship.errors.BudgetExhaustedError` before its first
call when they do not, so a collect pauses cleanly at a slice boundary.

Account options: ``market`` (``supply`` default, or ``dome``), ``categories`` (comma-separated
codes; default: from ``getCategoryList``), ``category_depth`` (default 2), ``pages_per_slice``
(default 5). Credential ``api_key`` (sent as ``aid``). Production base URL
``https://domeggook.com``.

Purchase orders need the Private API (approval required) and are not implemented: the order
methods raise a clear :class:`~dropship.errors.PermanentError` (orders go out on a purchase-order
sheet).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from dropship.errors import ConfigurationError, PermanentError, TransientError
from dropship.platforms._supplier_common import SupplierConnectorBase
from dropship.platforms.cache import ResponseCache
from dropship.platforms.config import AccountSettings
from dropship.platforms.http import PlatformHttp
from dropship.platforms.interfaces import (
    CollectSlice,
    InvalidRecord,
    ProductOption,
    PurchaseOrderRequest,
    PurchaseOrderResult,
    ShipmentInfo,
    SupplierProduct,
    SupplierRecord,
)

log = logging.getLogger(__name__)

SUPPLIER = "domeggook"
API_PATH = "/ssl/api/"
LIST_VER = "4.1"
VIEW_VER = "4.6"
CATEGORY_VER = "1.0"
MAX_PAGE_SIZE = 200
MAX_VIEW_ITEMS = 100  # getItemView multiple=true: numbers per call
DEFAULT_PAGES_PER_SLICE = 5
DEFAULT_CATEGORY_DEPTH = 2
ON_SALE = "판매중"
SOLD_OUT = "품절"
# Sanity bounds: a record outside them is rejected with its reason, never stored.
MAX_COST_KRW = 100_000_000
MAX_STOCK = 1_000_000
MAX_SHIPPING_FEE_KRW = 1_000_000
RAW_EXCERPT_CHARS = 4_000

_AUTH_ERROR_CODES = frozenset({"401", "403"})
_NOT_FOUND_CODES = frozenset({"404"})


class DomeggookApiError(PermanentError):
    """The standard error body; ``code`` is the platform's code (a string)."""

    def __init__(self, mode: str, code: str, message: str) -> None:
        super().__init__(f"domeggook {mode} -> error {code}: {message[:160]}")
        self.mode = mode
        self.code = code
        self.message = message


class RecordProblem(Exception):
    """Internal: one record cannot be normalised; the message is the reason."""


class DomeggookConnector(SupplierConnectorBase):
    """:class:`~dropship.platforms.interfaces.SupplierConnector` for Domeggook (catalog side)."""

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
        self.market = account.option("market") or "supply"
        if self.market not in ("supply", "dome"):
            raise ConfigurationError(
                f"domeggook account {account.name!r}: option market must be supply or dome, "
                f"got {self.market!r}"
            )
        self.pages_per_slice = _positive_option(account, "pages_per_slice", DEFAULT_PAGES_PER_SLICE)
        self.category_depth = _positive_option(account, "category_depth", DEFAULT_CATEGORY_DEPTH)
        if self.category_depth < 2:
            raise ConfigurationError(
                f"domeggook account {account.name!r}: category_depth must be at least 2 (a "
                "top-level category is not accepted as a search condition)"
            )

    # ------------------------------------------------------------------ raw calls

    def _call(self, mode: str, ver: str, **params: Any) -> dict[str, Any]:
        query = {"ver": ver, "mode": mode, "aid": self.account.secret("api_key"), "om": "json"}
        query.update({k: v for k, v in params.items() if v is not None})
        try:
            response = self.http.get(API_PATH, params=query)
            body = response.json()
        except ValueError:
            raise TransientError(f"domeggook {mode}: response is not JSON") from None
        if not isinstance(body, dict):
            raise TransientError(f"domeggook {mode}: unexpected response shape")
        errors = body.get("errors")
        if errors:
            code = str(errors.get("code", "?")) if isinstance(errors, dict) else "?"
            message = ""
            if isinstance(errors, dict):
                message = str(errors.get("message") or "")
                detail = str(errors.get("dmessage") or "")
                message = f"{message} ({detail})" if detail and detail != message else message
            if code in _AUTH_ERROR_CODES:
                message = "API key (aid) rejected"  # never echo the key
            raise DomeggookApiError(mode, code, message)
        data = body.get("domeggook")
        if not isinstance(data, dict):
            raise TransientError(f"domeggook {mode}: response has no 'domeggook' object")
        return data

    def _not_found(self, exc: DomeggookApiError) -> bool:
        if exc.code not in _NOT_FOUND_CODES:
            return False
        if "서비스" in exc.message:  # "해당 오픈 API 서비스가 없습니다": wrong mode/ver
            raise ConfigurationError(f"domeggook: {exc}") from None
        return True

    def categories(self) -> list[str]:
        """The category codes a sweep covers: the ``categories`` option, or the codes at
        ``category_depth`` from ``getCategoryList`` (locked ones left out)."""
        configured = self.account.option("categories")
        if configured:
            codes = [c.strip() for c in configured.split(",") if c.strip()]
            top = [c for c in codes if _is_top_level(c)]
            if top:
                raise ConfigurationError(
                    f"domeggook account {self.account.name!r}: top-level categories {top} are "
                    "not accepted by getItemList; configure middle-level codes"
                )
            return codes
        data = self._call("getCategoryList", CATEGORY_VER)
        codes = []
        for code, depth, locked in _walk_categories(data.get("items")):
            if depth == self.category_depth and not locked:
                codes.append(code)
        if not codes:
            raise TransientError("domeggook getCategoryList: no category at the sweep depth")
        return codes

    def list_page(
        self, category: str, page: int, size: int | None = None
    ) -> tuple[list[Any], int, int]:
        """One ``getItemList`` page of a category: its items (always a list), ``numberOfPages``
        and ``numberOfItems``."""
        data = self._call(
            "getItemList",
            LIST_VER,
            market=self.market,
            ca=category,
            sz=size or self.page_size,
            pg=page,
        )
        header = data.get("header") if isinstance(data.get("header"), dict) else {}
        assert isinstance(header, dict)
        pages = _int(header.get("numberOfPages"))
        total = _int(header.get("numberOfItems"))
        if pages is None or total is None:
            raise TransientError("domeggook getItemList: header.numberOfPages unreadable")
        listing = data.get("list")
        return as_list(listing.get("item") if isinstance(listing, dict) else None), pages, total

    def item_views(self, numbers: Sequence[str]) -> dict[str, Any]:
        """``getItemView`` with ``multiple=true`` for up to 100 numbers: views by item number
        (numbers the platform does not know are missing). A view without a readable
        ``basis.no`` comes under the key ``""`` as a list."""
        if not numbers:
            return {}
        if len(numbers) > MAX_VIEW_ITEMS:
            raise PermanentError(
                f"domeggook getItemView: at most {MAX_VIEW_ITEMS} numbers per call, got "
                f"{len(numbers)}"
            )
        try:
            data = self._call("getItemView", VIEW_VER, no=",".join(numbers), multiple="true")
        except DomeggookApiError as exc:
            if self._not_found(exc):
                return {}
            raise
        views: dict[str, Any] = {}
        unnamed: list[Any] = []
        for view in _view_items(data):
            no = _view_no(view)
            if no is None:
                unnamed.append(view)
            else:
                views.setdefault(no, view)
        if unnamed:
            views[""] = unnamed
        return views

    def item_view(self, no: str) -> dict[str, Any] | None:
        """One item's view (``getItemView`` without ``multiple``), through the response cache."""

        def load() -> dict[str, Any] | None:
            try:
                return self._call("getItemView", VIEW_VER, no=no)
            except DomeggookApiError as exc:
                if self._not_found(exc):
                    return None
                raise

        return self.cached_detail(no, load)

    # ------------------------------------------------------------------ collect

    def plan_slices(self, since: datetime | None = None) -> list[CollectSlice]:
        """Category sweeps x page ranges. ``since`` is ignored: getItemList has no change-date
        filter (the collect merge skips unchanged rows). Costs one ``getCategoryList`` call (none
        with configured categories) plus one ``sz=1`` probe per category for its item count; the
        last range of each category is open-ended (``open_end``), so items added after planning
        are still read."""
        slices: list[CollectSlice] = []
        for category in self.categories():
            _, _, total = self.list_page(category, 1, size=1)
            pages = math.ceil(total / self.page_size)
            for first in range(1, pages + 1, self.pages_per_slice):
                last = min(pages, first + self.pages_per_slice - 1)
                slices.append(
                    CollectSlice(
                        f"category:{category}:pages:{first}-{last}",
                        {
                            "category": category,
                            "first_page": first,
                            "last_page": last,
                            "open_end": last == pages,
                            "page_size": self.page_size,
                        },
                    )
                )
        return slices

    def iter_slice(self, piece: CollectSlice) -> Iterator[SupplierRecord]:
        """The records of one category page range: each page listed, its items completed by
        ``getItemView`` 100 at a time (one page in memory). Raises
        :class:`BudgetExhaustedError` before the first call when today's budget cannot cover
        the range."""
        params = piece.params
        try:
            category = str(params["category"])
            first = int(params["first_page"])
            last = int(params["last_page"])
            open_end = bool(params.get("open_end", False))
            size = int(params.get("page_size") or self.page_size)
        except (KeyError, TypeError, ValueError):
            raise PermanentError(f"domeggook: malformed collect slice {piece.key!r}") from None
        self.checked_page_size(size, MAX_PAGE_SIZE)
        budget = getattr(self.http.limiter, "budget", None)
        if budget is not None:
            from dropship.platforms.budget import calls_needed

            budget.ensure_available(calls_needed(last - first + 1, size, MAX_VIEW_ITEMS))
        seen: dict[str, int] = {}
        page = first
        while True:
            listed, pages, _ = self.list_page(category, page, size)
            yield from self._records_of_page(listed, page, seen)
            if not listed or page >= pages or (page >= last and not open_end):
                return
            page += 1

    def iter_products(self, since: datetime | None = None) -> Iterator[SupplierRecord]:
        """Every Domeme product: all slices of :meth:`plan_slices`, one after the other."""
        for piece in self.plan_slices(since):
            yield from self.iter_slice(piece)

    def _records_of_page(
        self, listed: list[Any], page: int, seen: dict[str, int]
    ) -> Iterator[SupplierRecord]:
        wanted: list[str] = []
        list_rows: dict[str, Any] = {}
        for row in listed:
            no = str(row.get("no") or "").strip() if isinstance(row, dict) else ""
            if not no.isdigit():
                shown = row.get("no") if isinstance(row, dict) else row
                yield InvalidRecord(
                    SUPPLIER,
                    no or None,
                    f"getItemList page {page}: item number 'no' is missing or not digits: "
                    f"{_short(shown)}",
                    raw=bounded_raw({"list": row}),
                )
                continue
            if no in seen:
                yield InvalidRecord(
                    SUPPLIER,
                    no,
                    f"duplicated item number {no}: listed on page {seen[no]} and again on "
                    f"page {page}",
                    raw=bounded_raw({"list": row}),
                )
                continue
            seen[no] = page
            wanted.append(no)
            list_rows[no] = row
        for start in range(0, len(wanted), MAX_VIEW_ITEMS):
            batch = wanted[start : start + MAX_VIEW_ITEMS]
            views = self.item_views(batch)
            for view in views.pop("", []):
                yield InvalidRecord(
                    SUPPLIER,
                    None,
                    "getItemView: a result without a readable basis.no",
                    raw=bounded_raw({"view": view}),
                )
            for no in batch:
                view = views.get(no)
                if view is None:
                    # Listed a moment ago, unknown now: gone or changing. Not assumed gone here:
                    # the collect's gone-marking goes through confirm_gone.
                    log.info("domeggook item %s listed but not in getItemView", no)
                    continue
                yield normalise_view(view, self.market, list_rows.get(no))

    def recheck_missing(
        self, skus: Sequence[str], run_started_at: datetime
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        """List results leave out sold-out and stopped items, so a product a sweep did not see
        is asked of ``getItemView`` (100 per call, never the cache): a sold-out one comes back
        as sold out (its stock must reach the listings), a gone one is not yielded."""
        numbers = [n for n in dict.fromkeys(str(s) for s in skus) if n.isdigit()]
        for start in range(0, len(numbers), MAX_VIEW_ITEMS):
            batch = numbers[start : start + MAX_VIEW_ITEMS]
            views = self.item_views(batch)
            for no in batch:
                view = views.get(no)
                if view is not None and not view_is_gone(view, self.market):
                    yield normalise_view(view, self.market, None)

    def confirm_gone(self, skus: Iterable[str]) -> set[str]:
        """The item numbers among ``skus`` that are truly gone, asked of ``getItemView`` 100 per
        call (never the cache): unknown to the platform, or known with a status other than on
        sale / sold out (판매중지, 판매종료, 단종 ...), or no longer sold on the account's market
        (``channel.supply`` false for Domeme). Sold-out items are *not* gone: they come back.

        Use it for products a complete run did not see: list results leave out sold-out and
        stopped items, so absence from a sweep is no proof. A number that is not digits cannot
        exist at Domeggook and is reported gone without a call."""
        numbers = list(dict.fromkeys(str(s) for s in skus))
        gone = {n for n in numbers if not n.isdigit()}
        valid = [n for n in numbers if n.isdigit()]
        for start in range(0, len(valid), MAX_VIEW_ITEMS):
            batch = valid[start : start + MAX_VIEW_ITEMS]
            views = self.item_views(batch)
            for no in batch:
                view = views.get(no)
                if view is None or view_is_gone(view, self.market):
                    gone.add(no)
        return gone

    # ------------------------------------------------------------------ one product

    def get_product(self, supplier_sku: str) -> SupplierProduct | None:
        if not supplier_sku.isdigit():
            raise PermanentError(f"domeggook item number must be digits, got {supplier_sku!r}")
        view = self.item_view(supplier_sku)
        if view is None or not on_market(view, self.market):
            return None  # unknown, or not offered on this market (Domeme: channel.supply false)
        record = normalise_view(view, self.market, None)
        if isinstance(record, InvalidRecord):
            raise self.malformed_error(record)
        return record

    # ------------------------------------------------------------------ orders

    def _no_orders(self) -> PermanentError:
        return PermanentError(
            "domeggook: purchase orders need the Private API (approval and a member session), "
            "which this connector does not use; Domeggook orders go out on a purchase-order sheet"
        )

    def place_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        raise self._no_orders()

    def get_shipments(self, order_keys: Sequence[str]) -> list[ShipmentInfo]:
        raise self._no_orders()

    def cancel_order(self, order_key: str, reason: str = "") -> bool:
        raise self._no_orders()


# ---------------------------------------------------------------------- helpers


def _positive_option(account: AccountSettings, name: str, default: int) -> int:
    raw = account.option(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigurationError(
            f"domeggook account {account.name!r}: option {name} must be a positive integer, "
            f"got {raw!r}"
        )
    return int(raw)


def _is_top_level(code: str) -> bool:
    parts = code.split("_")
    return len(parts) == 5 and all(p == "00" for p in parts[1:])


def _walk_categories(nodes: Any, depth: int = 1) -> Iterator[tuple[str, int, bool]]:
    """(code, depth, locked) for every node of getCategoryList's tree: ``items`` and each
    ``child`` are objects keyed by position (a list is accepted too)."""
    if isinstance(nodes, dict):
        children: Iterable[Any] = nodes.values()
    elif isinstance(nodes, list):
        children = nodes
    else:
        return
    for node in children:
        if not isinstance(node, dict):
            continue
        code = node.get("code")
        if isinstance(code, str) and code:
            yield code, depth, _truthy(node.get("locked"))
        yield from _walk_categories(node.get("child"), depth + 1)


def as_list(items: Any) -> list[Any]:
    """A list whatever the server sent: a list, one object, or nothing."""
    if items is None or items == "":
        return []
    if isinstance(items, list):
        return items
    return [items]


def _view_items(data: dict[str, Any]) -> list[Any]:
    """The views of a ``multiple=true`` answer: ``multipleResult.item`` (or ``items``), a list or
    one object; a single view at the root (``basis`` there) is accepted too."""
    wrapper = data.get("multipleResult")
    if isinstance(wrapper, dict):
        return as_list(wrapper.get("item"))
    if "items" in data:
        return as_list(data.get("items"))
    if "basis" in data:
        return [data]
    return []


def _view_no(view: Any) -> str | None:
    if not isinstance(view, dict):
        return None
    basis = view.get("basis")
    no = basis.get("no") if isinstance(basis, dict) else view.get("no")
    if isinstance(no, bool) or no is None:
        return None
    text = str(no).strip()
    return text if text.isdigit() else None


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in ("true", "1", "y", "yes")


def _int(value: Any) -> int | None:
    """A non-negative integer from an int or a digits string (commas allowed), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if text.isdigit():
            return int(text)
    return None


def _signed_int(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().startswith("-"):
        inner = _int(value.strip()[1:])
        return -inner if inner is not None else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _int(value)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded_raw(obj: Any, limit: int = RAW_EXCERPT_CHARS) -> dict[str, Any]:
    """A record's raw payload for ``product_rejects``, bounded: its JSON text cut at ``limit``
    characters (a hostile record cannot blow up a reject row)."""
    try:
        text = json.dumps(obj, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(obj)
    if len(text) <= limit:
        return {"json": text}
    return {"json": text[:limit], "truncated_from": len(text)}


def parse_price(value: Any, field: str) -> int:
    """A price from a number, a digits string, or a quantity-tier string ``1+3800|20+3500``
    (the first tier: the price of the smallest quantity)."""
    if value is None or value == "":
        raise RecordProblem(f"{field} is missing")
    price = _int(value)
    if price is None and isinstance(value, str) and "+" in value:
        first_tier = value.split("|", 1)[0]
        quantity, _, amount = first_tier.partition("+")
        if _int(quantity) is not None:
            price = _int(amount)
    if price is None:
        raise RecordProblem(f"{field} is not a price: {_short(value)}")
    if price == 0:
        raise RecordProblem(f"{field} is 0 KRW")
    if price > MAX_COST_KRW:
        raise RecordProblem(f"{field} {price} KRW is above {MAX_COST_KRW:,} KRW")
    return price


def parse_select_opt(select_opt: Any, market: str = "supply") -> tuple[ProductOption, ...]:
    """Options from ``selectOpt`` (a JSON document inside a string; an object is accepted):
    rows not offered on ``market`` (``sup``/``dom`` 0) or hidden (``hid`` not 0) are left out;
    the price difference is ``supPrice`` on Domeme (``domPrice`` when absent) and ``domPrice`` on
    Domeggook. Raises :class:`RecordProblem` naming what is wrong."""
    if select_opt is None or select_opt in ("", "null"):
        return ()
    if isinstance(select_opt, str):
        try:
            doc = json.loads(select_opt)
        except ValueError:
            raise RecordProblem("selectOpt is not valid JSON") from None
    else:
        doc = select_opt
    if not isinstance(doc, dict):
        raise RecordProblem(f"selectOpt is a {type(doc).__name__}, not an object")
    sets = doc.get("set") or []
    data = doc.get("data") or {}
    if not isinstance(sets, list) or not isinstance(data, dict):
        raise RecordProblem("selectOpt has no 'set' list / 'data' object")
    axis = "/".join(str(s.get("name", "")) for s in sets if isinstance(s, dict)) or "옵션"
    flag_field, price_fields = (
        ("sup", ("supPrice", "domPrice")) if market == "supply" else ("dom", ("domPrice",))
    )
    options = []
    for code, row in sorted(data.items()):
        if not isinstance(row, dict):
            raise RecordProblem(f"selectOpt data {code!r} is not an object")
        if str(row.get("hid", "0")).strip() not in ("0", ""):
            continue  # ended (1) or hidden (2) by the supplier: not offered
        flag = row.get(flag_field)
        if flag is not None and str(flag).strip() == "0":
            continue  # not offered on this market
        raw_delta = next((row[f] for f in price_fields if row.get(f) not in (None, "")), "0")
        delta = _signed_int(raw_delta)
        if delta is None:
            raise RecordProblem(f"option {code!r}: price difference {_short(raw_delta)} unreadable")
        if delta < 0:
            raise RecordProblem(f"option {code!r}: price difference {delta} KRW is below zero")
        if delta > MAX_COST_KRW:
            raise RecordProblem(f"option {code!r}: price difference {delta} KRW is absurd")
        qty = _int(row.get("qty", 0))
        if qty is None:
            raise RecordProblem(f"option {code!r}: qty {_short(row.get('qty'))} is not a count")
        if qty > MAX_STOCK:
            raise RecordProblem(f"option {code!r}: qty {qty} is above {MAX_STOCK:,}")
        name = str(row.get("name") or "").strip()
        if not name:
            raise RecordProblem(f"option {code!r} has no name")
        options.append(
            ProductOption(
                name=axis,
                value=name,
                price_delta=delta,
                stock=qty,
                supplier_option_code=str(code),
            )
        )
    return tuple(options)


def _shipping_fee(view: dict[str, Any], market: str) -> int:
    deli = view.get("deli")
    if not isinstance(deli, dict):
        raise RecordProblem("deli is missing")
    channel = deli.get(market)
    if not isinstance(channel, dict):
        channel = deli  # older shape: deli.fee
    words = f"{channel.get('type') or ''} {channel.get('pay') or ''}"
    if "무료" in words:
        return 0
    fee = _int(channel.get("fee"))
    if fee is None:
        raise RecordProblem(f"deli.{market}.fee {_short(channel.get('fee'))} is not an amount")
    if fee > MAX_SHIPPING_FEE_KRW:
        raise RecordProblem(f"deli.{market}.fee {fee} KRW is absurd")
    return fee


def _status(view: dict[str, Any], stock: int) -> str:
    basis = view.get("basis") if isinstance(view.get("basis"), dict) else {}
    assert isinstance(basis, dict)
    status = str(basis.get("status") or "").strip()
    if status == ON_SALE:
        return "active" if stock > 0 else "soldout"
    if status == SOLD_OUT:
        return "soldout"
    return "gone"


def on_market(view: Any, market: str) -> bool:
    """False when the view says the item is not offered on ``market`` (``channel.<market>``
    false); True when it says so or does not say."""
    channel = view.get("channel") if isinstance(view, dict) else None
    return not (isinstance(channel, dict) and market in channel and not _truthy(channel[market]))


def view_is_gone(view: Any, market: str) -> bool:
    """True when a view says the item is gone for ``market``: a status other than on sale /
    sold out, or the market's channel flag false."""
    if not isinstance(view, dict):
        return False
    basis = view.get("basis") if isinstance(view.get("basis"), dict) else {}
    assert isinstance(basis, dict)
    if str(basis.get("status") or "").strip() not in (ON_SALE, SOLD_OUT):
        return True
    return not on_market(view, market)


def normalise_view(
    view: Any, market: str = "supply", listed: dict[str, Any] | None = None
) -> SupplierProduct | InvalidRecord:
    """One ``getItemView`` result as a product, or an :class:`InvalidRecord` with the reason and
    a bounded raw excerpt (nothing raises)."""
    no = _view_no(view)
    if no is None:
        no = _view_no(listed)
    try:
        if not isinstance(view, dict):
            raise RecordProblem(f"the view is a {type(view).__name__}, not an object")
        if no is None:
            raise RecordProblem("basis.no is missing or not digits")
        return _product(view, market, no)
    except RecordProblem as problem:
        return InvalidRecord(SUPPLIER, no, str(problem), raw=bounded_raw({"view": view}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # A shape nobody anticipated: still one reject, never a broken stream.
        return InvalidRecord(
            SUPPLIER,
            no,
            f"unexpected record shape ({type(exc).__name__}: {str(exc)[:120]})",
            raw=bounded_raw({"view": view}),
        )


def _product(view: dict[str, Any], market: str, no: str) -> SupplierProduct:
    basis = view.get("basis")
    if not isinstance(basis, dict):
        raise RecordProblem("basis is missing")
    title = str(basis.get("title") or "").strip()
    if not title:
        raise RecordProblem("basis.title is empty")
    price = view.get("price")
    if not isinstance(price, dict):
        raise RecordProblem("price is missing")
    price_field = "supply" if market == "supply" else "dome"
    cost = parse_price(price.get(price_field), f"price.{price_field}")
    qty = view.get("qty")
    raw_stock = qty.get("inventory") if isinstance(qty, dict) else None
    if raw_stock is None or raw_stock == "":
        raise RecordProblem("qty.inventory is missing")
    stock = _int(raw_stock)
    if stock is None:
        raise RecordProblem(f"qty.inventory {_short(raw_stock)} is not a count")
    if stock > MAX_STOCK:
        raise RecordProblem(f"qty.inventory {stock} is above {MAX_STOCK:,}")
    fee = _shipping_fee(view, market)
    options = parse_select_opt(view.get("selectOpt"), market)
    channel = view.get("channel")
    sellable = isinstance(channel, dict) and _truthy(channel.get(market))
    adult = _truthy(basis.get("adultOnly", basis.get("adult")))
    thumb = view.get("thumb") if isinstance(view.get("thumb"), dict) else {}
    assert isinstance(thumb, dict)
    images = [thumb.get("original") or thumb.get("large") or thumb.get("small")]
    category = view.get("category") if isinstance(view.get("category"), dict) else {}
    assert isinstance(category, dict)
    current = category.get("current") if isinstance(category.get("current"), dict) else {}
    assert isinstance(current, dict)
    return SupplierProduct(
        supplier=SUPPLIER,
        supplier_sku=no,
        name=title,
        cost_price=cost,
        shipping_fee=fee,
        stock=stock,
        status=_status(view, stock),  # type: ignore[arg-type]
        category=str(current["code"]) if current.get("code") else None,
        images=tuple(str(i) for i in images if i),
        options=options,
        open_market_sellable=sellable,
        adult_only=adult,
        raw={"view": view},
    )


__all__ = [
    "DomeggookApiError",
    "DomeggookConnector",
    "as_list",
    "bounded_raw",
    "normalise_view",
    "parse_price",
    "parse_select_opt",
]
