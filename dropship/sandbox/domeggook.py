"""Domeggook (도매꾹) open API sandbox: ``GET /domeggook/ssl/api/?ver=&mode=&aid=&om=json``.

Real shapes (openapi.domeggook.com reference):

* ``mode=getItemList`` (ver 4.1): ``market`` (dome|supply), ``om`` (json|xml), ``sz`` 1..200
  (default 20), ``pg`` (default 1). Answer ``{"domeggook": {"header": {"numberOfItems",
  "firstItem", "lastItem", "currentPage", "itemsPerPage", "numberOfPages"},
  "list": {"item": ...}}}``
  where ``item`` is a **list**, but a single **object** when the page has exactly one product
  (an XML-to-JSON artefact of the real service). Numbers come as strings. The list carries no
  stock and no options: those are in ``getItemView``.
* ``mode=getItemView`` (ver 4.x) with ``no``: ``{"domeggook": {"basis", "price", "qty", "deli",
  "thumb", "category", "selectOpt"}}`` where ``selectOpt`` is a **JSON string** (decode twice).
* Errors use the standard error message, whatever the API, with HTTP 200:
  ``{"errors": {"status": "fail", "code": ..., "message": ..., "dmessage": ...}}``.
  Sandbox codes: ``"100"`` bad/missing aid, ``"200"`` invalid parameter, ``"300"`` no such item.

Only ``om=json`` is served (the connector uses JSON); ``om=xml`` answers a parameter error.
"""

from __future__ import annotations

import json
from typing import Any

from dropship.sandbox.core import RouteSpec, SandboxHandler, SandboxState
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierWorld
from dropship.sandbox.world import CatalogItem

PLATFORM = "domeggook"
MAX_PAGE_SIZE = 200
ITEM_NO_BASE = 30_000_000


def item_no(index: int) -> str:
    return str(ITEM_NO_BASE + index)


def item_index(no: str) -> int | None:
    return int(no) - ITEM_NO_BASE if no.isdigit() and int(no) >= ITEM_NO_BASE else None


def _list_item(item: CatalogItem) -> dict[str, Any]:
    record: dict[str, Any] = {
        "no": item_no(item.index),
        "title": item.name,
        "thumb": item.images[0],
        "price": str(item.price),
        "unitQty": "1",
        "id": f"seller{item.vendor:02d}",
        "deli": {"who": "S" if item.shipping_fee == 0 else "P", "fee": str(item.shipping_fee)},
        "market": {"domeggook": "true", "supply": "true"},
        "url": f"https://domeggook.com/{item_no(item.index)}",
    }
    if item.malformed:  # fault injection: a price the connector cannot read
        record["price"] = "가격문의"
    return record


def _select_opt(item: CatalogItem) -> str:
    """Domeggook's ``selectOpt``: a JSON document inside a string field."""
    if not item.options:
        return ""
    axis = item.options[0].name
    doc = {
        "type": "combination",
        "set": [
            {
                "name": axis,
                "opts": [o.value for o in item.options],
                "domPrice": [o.price_delta for o in item.options],
            }
        ],
        "data": {
            f"{n:02d}": {
                "name": o.value,
                "dom": str(o.price_delta),
                "qty": str(o.stock),
                "hid": "0" if o.stock else "1",
            }
            for n, o in enumerate(item.options)
        },
    }
    return json.dumps(doc, ensure_ascii=False)


def _item_view(item: CatalogItem) -> dict[str, Any]:
    view: dict[str, Any] = {
        "basis": {
            "no": ITEM_NO_BASE + item.index,
            "status": "판매중",
            "title": item.name,
            "nego": "disable",
            "adult": False,
            "tax": "과세상품",
            "dateStart": "2024-12-01 00:00:00",
            "dateEnd": "2099-12-31 23:59:59",
            "model": item.model,
        },
        "price": {"dome": item.price, "resale": {"Recommand": item.fixed_price}},
        "qty": {"inventory": item.stock, "domeUnit": 1},
        "deli": {
            "who": "S" if item.shipping_fee == 0 else "P",
            "fee": item.shipping_fee,
            "method": "택배",
        },
        "thumb": {"original": item.images[0], "large": item.images[0]},
        "detail": {"images": list(item.images[1:])},
        "category": {
            "current": {"code": item.category_code, "name": item.category_name.rsplit(">", 1)[-1]},
            "path": item.category_name,
        },
        "selectOpt": _select_opt(item),
        "seller": {"id": f"seller{item.vendor:02d}"},
        "dateUpdate": item.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if item.malformed:
        del view["price"]
    return view


class DomeggookApiHandler(SandboxHandler):
    platform = PLATFORM
    endpoint = "api"

    def _error(self, code: str, message: str, detail: str) -> None:
        # The standard error message, answered with HTTP 200 like the real service.
        self.write_json(
            {"errors": {"status": "fail", "code": code, "message": message, "dmessage": detail}}
        )

    def _int_arg(self, name: str, default: int, low: int, high: int) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            self._error("200", "Invalid Parameter", f"{name} must be an integer in {low}..{high}")
            return None
        return int(raw)

    def get(self) -> None:
        mode = self.get_query_argument("mode", "")
        self.count("domeggook_calls", mode or "(none)")
        aid = self.get_query_argument("aid", "")
        if aid != SANDBOX_CREDENTIALS[PLATFORM]["api_key"]:
            self._error("100", "Invalid API Key", "aid is missing or not a registered API key")
            return
        if self.get_query_argument("om", "") != "json":
            self._error("200", "Invalid Parameter", "om must be json (xml is not served here)")
            return
        if mode == "getItemList":
            self._item_list()
        elif mode == "getItemView":
            self._item_view()
        else:
            self._error("200", "Invalid Parameter", f"unknown mode {mode!r}")

    def _item_list(self) -> None:
        if self.get_query_argument("ver", "") != "4.1":
            self._error("200", "Invalid Parameter", "getItemList needs ver=4.1")
            return
        if self.get_query_argument("market", "dome") not in ("dome", "supply"):
            self._error("200", "Invalid Parameter", "market must be dome or supply")
            return
        size = self._int_arg("sz", 20, 1, MAX_PAGE_SIZE)
        if size is None:
            return
        page = self._int_arg("pg", 1, 1, 10**9)
        if page is None:
            return
        world = SupplierWorld(self.state)
        total = world.size(PLATFORM)
        pages = -(-total // size)
        first = (page - 1) * size
        items = []
        for index in range(first, min(first + size, total)):
            item = world.item(PLATFORM, index)
            assert item is not None
            items.append(_list_item(item))
        listing: dict[str, Any]
        if not items:
            listing = {}
        elif len(items) == 1:
            listing = {"item": items[0]}  # one result: an object, not a list
        else:
            listing = {"item": items}
        self.write_json(
            {
                "domeggook": {
                    "header": {
                        "numberOfItems": total,
                        "firstItem": first + 1 if items else 0,
                        "lastItem": first + len(items),
                        "currentPage": page,
                        "itemsPerPage": size,
                        "numberOfPages": pages,
                    },
                    "list": listing,
                }
            }
        )

    def _item_view(self) -> None:
        if not self.get_query_argument("ver", "").startswith("4."):
            self._error("200", "Invalid Parameter", "getItemView needs ver=4.x")
            return
        no = self.get_query_argument("no", "")
        if not no.isdigit():
            self._error("200", "Invalid Parameter", "no must be an item number")
            return
        index = item_index(no)
        item = SupplierWorld(self.state).item(PLATFORM, index) if index is not None else None
        if item is None:
            self._error("300", "Item Not Found", f"no item {no}")
            return
        self.write_json({"domeggook": _item_view(item)})


def routes(state: SandboxState) -> list[RouteSpec]:
    return [(r"/domeggook/ssl/api/?", DomeggookApiHandler, {"state": state})]
