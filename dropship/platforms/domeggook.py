"""Domeggook (도매꾹) connector: open API ``getItemList`` paging + ``getItemView`` detail.

* ``GET {base_url}/ssl/api/?ver=4.1&mode=getItemList&aid=KEY&market=dome&om=json&sz=200&pg=N``;
  ``header.numberOfPages`` says when to stop. ``list.item`` is a list, **or a single object when
  the page holds one product**, or absent on an empty page: :func:`list_items` normalises all three.
* The list has no stock and no options, so each product is completed by ``getItemView``
  (through the response cache when one is configured), whose ``selectOpt`` is a JSON document
  inside a string field (decoded twice).
* Errors arrive as HTTP 200 with the standard body ``{"errors": {"code", "message", ...}}``:
  a rejected API key becomes :class:`~dropship.errors.PermanentError`, "no such item" becomes
  ``None`` from :meth:`get_product`.
* Purchase orders: the open API's order functions need a member session (``sId`` from a login
  API) that this project does not hold; the order methods raise a clear ``PermanentError``.

Account settings: credential ``api_key`` (sent as ``aid``); options ``market`` (``dome`` or
``supply``, default ``dome``), ``view_ver`` (default ``4.5``). Production base URL:
``https://domeggook.com``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from dropship.errors import PermanentError, TransientError
from dropship.platforms._supplier_common import KST, SupplierConnectorBase
from dropship.platforms.cache import ResponseCache
from dropship.platforms.config import AccountSettings
from dropship.platforms.http import PlatformHttp
from dropship.platforms.interfaces import (
    InvalidRecord,
    Page,
    ProductOption,
    PurchaseOrderRequest,
    PurchaseOrderResult,
    ShipmentInfo,
    SupplierProduct,
)

log = logging.getLogger(__name__)

SUPPLIER = "domeggook"
MAX_PAGE_SIZE = 200
API_PATH = "/ssl/api/"
# Standard error codes we act on (everything else is a plain PermanentError).
_AUTH_ERROR_CODES = frozenset({"100"})
_NOT_FOUND_CODES = frozenset({"300"})


class DomeggookApiError(PermanentError):
    def __init__(self, mode: str, code: str, message: str) -> None:
        super().__init__(f"domeggook {mode} -> error {code}: {message[:120]}")
        self.mode = mode
        self.code = code


class DomeggookConnector(SupplierConnectorBase):
    """:class:`~dropship.platforms.interfaces.SupplierConnector` for Domeggook (catalog side)."""

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
        self.market = account.option("market") or "dome"
        self.view_ver = account.option("view_ver") or "4.5"

    # ------------------------------------------------------------------ raw calls

    def _call(self, mode: str, ver: str, **params: Any) -> dict[str, Any]:
        query = {"ver": ver, "mode": mode, "aid": self.account.secret("api_key"), "om": "json"}
        query.update({k: v for k, v in params.items() if v is not None})
        response = self.http.get(API_PATH, params=query)
        try:
            body = response.json()
        except ValueError:
            raise TransientError(f"domeggook {mode}: response is not JSON") from None
        if not isinstance(body, dict):
            raise TransientError(f"domeggook {mode}: unexpected response shape")
        errors = body.get("errors")
        if errors:
            code = str(errors.get("code", "?")) if isinstance(errors, dict) else "?"
            message = str(errors.get("message", "")) if isinstance(errors, dict) else ""
            if code in _AUTH_ERROR_CODES:
                message = "API key (aid) rejected"  # never echo the key
            raise DomeggookApiError(mode, code, message)
        data = body.get("domeggook")
        if not isinstance(data, dict):
            raise TransientError(f"domeggook {mode}: response has no 'domeggook' object")
        return data

    def list_page(self, page: int, size: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """One ``getItemList`` page: its items (always a list) and ``numberOfPages``."""
        data = self._call(
            "getItemList", "4.1", market=self.market, sz=size or self.page_size, pg=page
        )
        header = data.get("header") or {}
        try:
            pages = int(header.get("numberOfPages") or 0)
        except (TypeError, ValueError):
            raise TransientError("domeggook getItemList: header.numberOfPages unreadable") from None
        return list_items(data), pages

    def iter_list_pages(self, size: int | None = None) -> Iterator[Page[dict[str, Any]]]:
        """Raw list items page by page until ``numberOfPages`` (one page in memory)."""
        page = 1
        while True:
            items, pages = self.list_page(page, size)
            has_next = page < pages and bool(items)
            yield Page(items=tuple(items), next_cursor=str(page + 1) if has_next else None)
            if not has_next:
                return
            page += 1

    def item_view(self, no: str) -> dict[str, Any] | None:
        def load() -> dict[str, Any] | None:
            try:
                return self._call("getItemView", self.view_ver, no=no)
            except DomeggookApiError as exc:
                if exc.code in _NOT_FOUND_CODES:
                    return None
                raise

        return self.cached_detail(no, load)

    # ------------------------------------------------------------------ SupplierConnector

    def iter_products(
        self, since: datetime | None = None
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        """Every listed product completed by its detail. ``since`` is ignored: getItemList has no
        change-date filter (the collect merge skips unchanged rows)."""
        for page in self.iter_list_pages():
            for listed in page.items:
                no = str(listed.get("no") or "")
                problem = check_list_item(listed)
                if problem:
                    yield InvalidRecord(SUPPLIER, no or None, problem, raw=listed)
                    continue
                view = self.item_view(no)
                if view is None:
                    continue  # delisted between the list and the detail call: gone next run
                yield normalise_view(view, listed)

    def get_product(self, supplier_sku: str) -> SupplierProduct | None:
        if not supplier_sku.isdigit():
            raise PermanentError(f"domeggook item number must be digits, got {supplier_sku!r}")
        view = self.item_view(supplier_sku)
        if view is None:
            return None
        record = normalise_view(view, None)
        if isinstance(record, InvalidRecord):
            raise self.malformed_error(record)
        return record

    def _no_orders(self) -> PermanentError:
        return PermanentError(
            "domeggook: purchase orders need a member session (sId), which this connector does "
            "not hold; place Domeggook orders manually"
        )

    def place_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        raise self._no_orders()

    def get_shipments(self, order_keys: Sequence[str]) -> list[ShipmentInfo]:
        raise self._no_orders()

    def cancel_order(self, order_key: str, reason: str = "") -> bool:
        raise self._no_orders()


# ---------------------------------------------------------------------- normalisation


def list_items(data: dict[str, Any]) -> list[dict[str, Any]]:
    """``list.item`` as a list whatever the server sent: list, one object, or nothing."""
    listing = data.get("list")
    if not isinstance(listing, dict):
        return []
    items = listing.get("item")
    if items is None:
        return []
    if isinstance(items, dict):
        return [items]  # exactly one product on the page
    if isinstance(items, list):
        return [i for i in items if isinstance(i, dict)]
    raise TransientError(f"domeggook getItemList: list.item is a {type(items).__name__}")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def check_list_item(item: dict[str, Any]) -> str | None:
    if not str(item.get("no") or "").isdigit():
        return f"item number 'no' is missing or not digits: {item.get('no')!r}"
    if _int(item.get("price")) is None:
        return f"price is not an integer: {item.get('price')!r}"
    if not str(item.get("title") or "").strip():
        return "title is empty"
    return None


def parse_select_opt(select_opt: Any) -> tuple[ProductOption, ...]:
    """Decode ``selectOpt`` (a JSON string) into options; ``ValueError`` names what is wrong."""
    if select_opt in (None, "", "null"):
        return ()
    if not isinstance(select_opt, str):
        raise ValueError(f"selectOpt must be a JSON string, got {type(select_opt).__name__}")
    try:
        doc = json.loads(select_opt)
    except ValueError:
        raise ValueError("selectOpt is not valid JSON") from None
    sets = doc.get("set") or []
    data = doc.get("data") or {}
    if not isinstance(sets, list) or not isinstance(data, dict):
        raise ValueError("selectOpt has no 'set' list / 'data' object")
    axis = "/".join(str(s.get("name", "")) for s in sets if isinstance(s, dict)) or "옵션"
    options = []
    for code, entry in sorted(data.items()):
        if not isinstance(entry, dict):
            raise ValueError(f"selectOpt data {code!r} is not an object")
        delta, qty = _int_signed(entry.get("dom", 0)), _int(entry.get("qty", 0))
        if delta is None or qty is None:
            raise ValueError(f"selectOpt data {code!r}: dom/qty are not integers")
        hidden = str(entry.get("hid", "0")) not in ("0", "")
        options.append(
            ProductOption(
                name=axis,
                value=str(entry.get("name", "")),
                price_delta=delta,
                stock=0 if hidden else qty,
                supplier_option_code=str(code),
            )
        )
    return tuple(options)


def _int_signed(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().startswith("-"):
        inner = _int(value.strip()[1:])
        return -inner if inner is not None else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _int(value)


def normalise_view(
    view: dict[str, Any], listed: dict[str, Any] | None
) -> SupplierProduct | InvalidRecord:
    basis = view.get("basis") or {}
    no = str(basis.get("no") or (listed or {}).get("no") or "")
    raw = {"view": view, "list": listed} if listed is not None else {"view": view}
    if not no.isdigit():
        return InvalidRecord(SUPPLIER, None, "basis.no is missing", raw=raw)

    def invalid(reason: str) -> InvalidRecord:
        return InvalidRecord(SUPPLIER, no, reason, raw=raw)

    title = str(basis.get("title") or "").strip()
    if not title:
        return invalid("basis.title is empty")
    price = _int((view.get("price") or {}).get("dome"))
    if price is None:
        # price.dome may be a quantity-tiered string "1+3800|20+3500": take the 1-unit price.
        tiered = str((view.get("price") or {}).get("dome") or "")
        first_tier = tiered.split("|", 1)[0].partition("+")[2]
        price = _int(first_tier)
    if price is None:
        return invalid("price.dome is missing or unreadable")
    fee = _int((view.get("deli") or {}).get("fee", 0))
    if fee is None:
        return invalid("deli.fee is not an integer")
    stock = _int((view.get("qty") or {}).get("inventory"))
    if stock is None:
        return invalid("qty.inventory is missing or not an integer")
    try:
        options = parse_select_opt(view.get("selectOpt"))
    except ValueError as exc:
        return invalid(str(exc))
    selling = basis.get("status") == "판매중"
    status = "gone" if not selling else ("active" if stock > 0 else "soldout")
    thumb = view.get("thumb") or {}
    images = [thumb.get("original") or thumb.get("large")]
    images += list((view.get("detail") or {}).get("images") or [])
    category = (view.get("category") or {}).get("current") or {}
    updated = view.get("dateUpdate")
    updated_at = None
    if isinstance(updated, str):
        try:
            updated_at = datetime.strptime(updated, "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST)
        except ValueError:
            updated_at = None
    return SupplierProduct(
        supplier=SUPPLIER,
        supplier_sku=no,
        name=title,
        cost_price=price,
        shipping_fee=fee,
        stock=stock,
        status=status,  # type: ignore[arg-type]
        category=str(category.get("code")) if category.get("code") else None,
        images=tuple(str(i) for i in images if i),
        options=options,
        updated_at=updated_at,
        raw=raw,
    )
