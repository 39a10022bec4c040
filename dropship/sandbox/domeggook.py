"""Domeggook / Domeme (도매꾹/도매매) open API sandbox: ``GET /domeggook/ssl/api/?ver=&mode=&aid=``.

Shapes and rules, each with its source (docs/PLATFORMS.md "Domeggook" has the full table):

* ``mode=getItemList`` **ver 4.1** (file id 60754891376 §1.1): at least one search condition
  (``kw``, ``ca``, ``ev``, ``id``, ``itemNo``) or the standard error; a top-level category
  (``XX_00_00_00_00``) does not count as one (measured by 68682640901, "최소 한 가지 이상의 검색
  조건"). ``market`` dome|supply (``supply`` = Domeme, the dropshipping channel), ``sz`` 1..200
  (default 20), ``pg``. Answer ``{"domeggook": {"header": {...}, "list": {"item": ...}}}``, ``item``
  a list, **one object when one product**, absent when none (70871769709 ``as_list``). Sold-out,
  stopped and ended items are **absent** (60754891376: "판매중지·종료·품절·단종 상품은 응답에
  포함되지 않는다"); so are items the asked market does not sell.
* ``mode=getItemView`` **ver 4.6** (60754891376 §1.2): ``no``; with ``multiple=true`` up to 100
  comma-separated numbers. Single: the view object under ``domeggook``; multiple:
  ``domeggook.multipleResult.item``, a list, one object when one item (54515500296); numbers that
  do not exist are left out. Blocks: ``basis`` (no, title, status, adultOnly), ``price`` (dome,
  supply: a number or a tier string ``1+3800|20+3500``), ``qty.inventory``, ``deli.dome|supply``
  (type, pay, fee), ``channel`` (dome/supply booleans), ``thumb``, ``category.current``, ``seller``,
  ``detail``, ``selectOpt`` (a **JSON string**; rows ``{name, qty, dom, domPrice, sup, supPrice,
  hid}``: ``dom``/``sup`` are 0/1 channel flags, ``domPrice``/``supPrice`` the price differences,
  ``hid`` 0 on sale / 1 ended / 2 hidden; 32601410182, 68682640901, 58508630246).
* ``mode=getCategoryList`` **ver 1.0**: ``{"domeggook": {"items": {"1": {"code", "name",
  "locked", "child": {...}}}}}`` (68682640901, 18121004899); another ver is "no such service".
* Errors: HTTP 200 with ``{"errors": {"status": "fail", "code", "message", "dmessage"}}``
  (70871769709, 68682640901). Codes: ``401`` bad key, ``404`` no such item / no such service
  (68682640901); ``400`` other parameter errors (our choice: no source names it).
* Limits: **180 calls/minute and 15,000 calls/day per key, HTTP 429 beyond** (60754891376 §5).
  Enforced here on top of the core's configurable bucket, with a sliding 60 s window (stricter
  than a fixed minute) and a day in **KST** of the world clock; the daily refusal sends no
  ``Retry-After`` (none is documented). Tests lower them through ``POST /_sandbox/domeggook``.

Only ``om=json`` is served (the connector uses JSON); ``om=xml`` answers a parameter error.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from typing import Any

import tornado.web

from dropship.sandbox.core import AdminHandler, RouteSpec, SandboxHandler, SandboxState
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierWorld
from dropship.sandbox.world import CATEGORIES, CatalogItem

PLATFORM = "domeggook"
MAX_PAGE_SIZE = 200
MAX_VIEW_ITEMS = 100
ITEM_NO_BASE = 30_000_000
PER_MINUTE_LIMIT = 180
DAILY_LIMIT = 15_000
KST = timezone(timedelta(hours=9))
SEARCH_CONDITIONS = ("kw", "ca", "ev", "id", "itemNo")
ON_SALE = "판매중"

# Share of the catalog in each state the list leaves out (besides the world's sold-out items).
STOPPED_RATE = 0.03  # 판매중지: getItemView still answers, with that status
ENDED_RATE = 0.02  # gone: getItemView does not know the number any more
DOME_ONLY_RATE = 0.04  # not sold on Domeme (channel.supply false, no price.supply)
ADULT_RATE = 0.03
TIERED_PRICE_RATE = 0.3

# Kinds of broken records the malformed_rate fault serves (one per affected item, by hash).
MALFORMED_KINDS = (
    "price_text",
    "price_missing",
    "cost_zero",
    "cost_huge",
    "stock_huge",
    "stock_text",
    "option_negative",
    "option_qty_text",
    "select_opt_broken",
    "title_empty",
    "duplicate_no",
)


def item_no(index: int) -> str:
    return str(ITEM_NO_BASE + index)


def item_index(no: str) -> int | None:
    return int(no) - ITEM_NO_BASE if no.isdigit() and int(no) >= ITEM_NO_BASE else None


def _unit(seed: int, *parts: object) -> float:
    digest = hashlib.blake2b(
        ":".join(str(p) for p in (seed, PLATFORM, *parts)).encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


# --------------------------------------------------------------------------- categories


def _category_tree() -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """Domeggook's five-level codes (``대_중_소_세_세세``) for the world's categories: the tree
    getCategoryList answers, and world category code -> (Domeggook code, name)."""
    tops: dict[str, dict[str, Any]] = {}
    mapping: dict[str, tuple[str, str]] = {}
    for world_code, path in CATEGORIES:
        top_name, mid_name = path.split(">", 1)
        top = tops.get(top_name)
        if top is None:
            top_no = len(tops) + 1
            top = tops[top_name] = {
                "code": f"{top_no:02d}_00_00_00_00",
                "name": top_name,
                "locked": "FALSE",
                "child": {},
            }
        mid_no = len(top["child"]) + 1
        code = f"{top['code'][:2]}_{mid_no:02d}_00_00_00"
        top["child"][str(mid_no)] = {"code": code, "name": mid_name, "locked": "FALSE"}
        mapping[world_code] = (code, mid_name)
    tree = {str(n): top for n, top in enumerate(tops.values(), start=1)}
    return tree, mapping


CATEGORY_TREE, CATEGORY_CODES = _category_tree()
TOP_LEVEL_CODES = frozenset(top["code"] for top in CATEGORY_TREE.values())
CATEGORY_NAMES = {code: name for code, name in CATEGORY_CODES.values()}


# --------------------------------------------------------------------------- the Domeggook view


@dataclass(frozen=True)
class ItemState:
    """What this platform adds to the neutral world item."""

    status: str  # 판매중 / 품절 / 판매중지
    ended: bool  # the number is not known any more
    on_supply: bool
    adult: bool
    tiered: bool
    malformed: str | None  # one of MALFORMED_KINDS

    def listed(self, market: str) -> bool:
        if self.ended or self.status != ON_SALE:
            return False
        return self.on_supply if market == "supply" else True


def item_state(seed: int, item: CatalogItem) -> ItemState:
    i = item.index
    stopped = _unit(seed, "stopped", i) < STOPPED_RATE
    malformed = None
    if item.malformed:
        malformed = MALFORMED_KINDS[int(_unit(seed, "kind", i) * len(MALFORMED_KINDS))]
        if malformed.startswith(("option_", "select_opt")) and not item.options:
            malformed = "price_text"  # nothing to break in options it does not have
    return ItemState(
        status="품절" if item.soldout else ("판매중지" if stopped else ON_SALE),
        ended=_unit(seed, "ended", i) < ENDED_RATE,
        on_supply=_unit(seed, "dome_only", i) >= DOME_ONLY_RATE,
        adult=_unit(seed, "adult", i) < ADULT_RATE,
        tiered=_unit(seed, "tiered", i) < TIERED_PRICE_RATE,
        malformed=malformed,
    )


def supply_price(item: CatalogItem) -> int:
    """Domeme's price: the world cost (the dropship cost our connector must read)."""
    return item.price


def dome_price(item: CatalogItem) -> int:
    """Domeggook's (bulk channel) unit price, a little below Domeme's."""
    return max(100, item.price * 95 // 100 // 10 * 10)


def _tier_string(price: int) -> str:
    def step(percent: int) -> int:
        return max(10, price * percent // 100 // 10 * 10)

    return f"1+{price}|20+{step(97)}|100+{step(94)}"


def _deli(item: CatalogItem) -> dict[str, Any]:
    if item.shipping_fee == 0:
        channel = {"type": "무료배송", "pay": "무료", "fee": "0"}
    else:
        channel = {"type": "일반배송", "pay": "선결제", "fee": str(item.shipping_fee)}
    return {"method": "택배", "dome": dict(channel), "supply": dict(channel)}


def _select_opt(item: CatalogItem, state: ItemState) -> str | None:
    """Domeggook's ``selectOpt``: a JSON document inside a string field. Options without stock
    are hidden (``hid`` 2), like a supplier hides a sold-out variant."""
    if not item.options:
        return None
    axis = item.options[0].name
    data: dict[str, Any] = {}
    for n, option in enumerate(item.options):
        data[f"{n:02d}"] = {
            "name": option.value,
            "qty": str(option.stock),
            "dom": "1",
            "domPrice": str(option.price_delta),
            "sup": "1",
            "supPrice": str(option.price_delta),
            "hid": "0" if option.stock else "2",
        }
    if state.malformed == "option_negative":
        data["00"]["supPrice"] = data["00"]["domPrice"] = "-500"
    if state.malformed == "option_qty_text":
        data["00"]["qty"] = "많음"
    doc = {
        "type": "combination",
        "set": [
            {
                "name": axis,
                "opts": [o.value for o in item.options],
                "domPrice": [str(o.price_delta) for o in item.options],
            }
        ],
        "data": data,
    }
    text = json.dumps(doc, ensure_ascii=False)
    if state.malformed == "select_opt_broken":
        text = text[: len(text) // 2]  # cut mid-document
    return text


def item_view(item: CatalogItem, state: ItemState) -> dict[str, Any]:
    no = item_no(item.index)
    code, name = CATEGORY_CODES[item.category_code]
    supply = supply_price(item)
    price: dict[str, Any] = {
        "dome": _tier_string(dome_price(item)) if state.tiered else str(dome_price(item)),
        "resale": {"Recommand": str(item.fixed_price)},
    }
    if state.on_supply:
        price["supply"] = _tier_string(supply) if state.tiered else str(supply)
    view: dict[str, Any] = {
        "basis": {
            "no": no,
            "title": item.name,
            "status": state.status,
            "adultOnly": "true" if state.adult else "false",
            "tax": "과세상품",
        },
        "price": price,
        "qty": {
            "inventory": str(item.stock),
            "domeMoq": "1",
            "domeUnit": "1",
            "supplyUnit": "1",
        },
        "deli": _deli(item),
        "channel": {"dome": True, "supply": state.on_supply},
        "thumb": {"original": item.images[0], "large": item.images[0]},
        "category": {
            "current": {"code": code, "name": name, "depth": "2"},
            "parents": {"elem": [{"code": code[:2] + "_00_00_00_00", "depth": "1"}]},
        },
        "seller": {"id": f"seller{item.vendor:02d}", "nick": f"공급사{item.vendor:02d}"},
        "detail": {"model": item.model, "country": "국산", "manufacturer": "상세정보별도표기"},
    }
    select_opt = _select_opt(item, state)
    if select_opt is not None:  # items without options have no selectOpt key (70871769709)
        view["selectOpt"] = select_opt
    kind = state.malformed
    if kind == "price_text":
        price["supply" if state.on_supply else "dome"] = "가격문의"
    elif kind == "price_missing":
        price.pop("supply", None)
        price.pop("dome", None)
    elif kind == "cost_zero":
        price["supply" if state.on_supply else "dome"] = "0"
    elif kind == "cost_huge":
        price["supply" if state.on_supply else "dome"] = "250000000"
    elif kind == "stock_huge":
        view["qty"]["inventory"] = "5000000"
    elif kind == "stock_text":
        view["qty"]["inventory"] = "재고충분"
    elif kind == "title_empty":
        view["basis"]["title"] = "  "
    return view


def list_item(item: CatalogItem, state: ItemState, market: str) -> dict[str, Any]:
    no = item_no(item.index)
    listed_price = supply_price(item) if market == "supply" else dome_price(item)
    return {
        "no": no,
        "title": item.name,
        "thumb": item.images[0],
        "price": str(listed_price),
        "unitQty": "1",
        "id": f"seller{item.vendor:02d}",
        "nick": f"공급사{item.vendor:02d}",
        "comOnly": "false",
        "adultOnly": "true" if state.adult else "false",
        "deli": {"who": "S" if item.shipping_fee == 0 else "P", "fee": str(item.shipping_fee)},
        "market": {"domeggook": "true", "supply": "true" if state.on_supply else "false"},
        "url": f"http://domeggook.com/{no}",
    }


# --------------------------------------------------------------------------- limits and store


@dataclass
class DomeggookStore:
    """Per-state data (guarded by ``state.lock``): limits, the per-minute window, the day's
    count, and the catalog's list index (category -> item indices, built once per size)."""

    per_minute: int = PER_MINUTE_LIMIT
    daily: int = DAILY_LIMIT
    window: deque[float] = field(default_factory=deque)
    day: str = ""
    day_calls: int = 0
    index_key: tuple[int, int, float] | None = None
    # market -> category code -> indices of the items it lists
    by_category: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def _store(state: SandboxState) -> DomeggookStore:
    return state.platform_store(PLATFORM, DomeggookStore)


class DomeggookApiHandler(SandboxHandler):
    platform = PLATFORM
    endpoint = "api"
    mutating_methods = frozenset()

    def _error(self, code: str, message: str, detail: str, status: int = 200) -> None:
        # The standard error message, answered with HTTP 200 like the real service.
        self.write_json(
            {"errors": {"status": "fail", "code": code, "message": message, "dmessage": detail}},
            status=status,
        )

    def _param_error(self, detail: str) -> None:
        self._error("400", "Invalid Parameter", detail)

    def _int_arg(self, name: str, default: int, low: int, high: int) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            self._param_error(f"{name} must be an integer in {low}..{high}")
            return None
        return int(raw)

    def _within_limits(self) -> bool:
        """Count this call against the key's minute window and KST day; answer 429 beyond."""
        store = _store(self.state)
        now = time.monotonic()
        day = self.state.now().astimezone(KST).strftime("%Y-%m-%d")
        with self.state.lock:
            if store.day != day:
                store.day, store.day_calls = day, 0
            store.day_calls += 1  # every request with the key counts, refused or not
            if store.day_calls > store.daily:
                self.count("domeggook_refused", "daily")
                self._error(
                    "429",
                    "Too Many Requests",
                    f"daily call limit of {store.daily} reached for this API key",
                    status=429,
                )
                return False
            while store.window and store.window[0] <= now - 60.0:
                store.window.popleft()
            if len(store.window) >= store.per_minute:
                wait = store.window[0] + 60.0 - now
                self.count("domeggook_refused", "minute")
                self.set_header("Retry-After", str(max(1, math.ceil(wait))))
                self._error(
                    "429",
                    "Too Many Requests",
                    f"more than {store.per_minute} calls in a minute for this API key",
                    status=429,
                )
                return False
            store.window.append(now)
        return True

    def get(self) -> None:
        mode = self.get_query_argument("mode", "")
        aid = self.get_query_argument("aid", "")
        if aid != SANDBOX_CREDENTIALS[PLATFORM]["api_key"]:
            self._error("401", "Invalid API Key", "aid is missing or not a registered API key")
            return
        if not self._within_limits():
            return
        self.count("domeggook_calls", mode or "(none)")
        if self.get_query_argument("om", "") != "json":
            self._param_error("om must be json (xml is not served here)")
            return
        ver = self.get_query_argument("ver", "")
        if mode == "getItemList" and ver == "4.1":
            self._item_list()
        elif mode == "getItemView" and ver in ("4.1", "4.2", "4.3", "4.4", "4.5", "4.6"):
            self._item_view(ver)
        elif mode == "getCategoryList" and ver == "1.0":
            self.write_json({"domeggook": {"items": CATEGORY_TREE}})
        else:
            self._error(
                "404", "해당 오픈 API 서비스가 없습니다", f"no service {mode!r} in version {ver!r}"
            )

    # ---- getItemList

    def _category_index(self, world: SupplierWorld, market: str) -> dict[str, list[int]]:
        """Indices of the items each category lists on ``market``, built once per catalog:
        categories and list membership do not change with world time or faults, so a page then
        generates only its own items (a 100,000-item catalog is not regenerated per call)."""
        store = _store(self.state)
        config = self.state.config
        key = (world.size(PLATFORM), config.seed, config.soldout_rate)
        with self.state.lock:
            if store.index_key == key:
                return store.by_category.get(market, {})
        by_market: dict[str, dict[str, list[int]]] = {"dome": {}, "supply": {}}
        for item in world.items(PLATFORM):
            state = item_state(config.seed, item)
            code = CATEGORY_CODES[item.category_code][0]
            for name, listing in by_market.items():
                if state.listed(name):
                    listing.setdefault(code, []).append(item.index)
        with self.state.lock:
            store.index_key, store.by_category = key, by_market
        return by_market[market]

    def _item_list(self) -> None:
        market = self.get_query_argument("market", "dome")
        if market not in ("dome", "supply"):
            self._param_error("market must be dome or supply")
            return
        conditions = {
            name: value
            for name in SEARCH_CONDITIONS
            if (value := self.get_query_argument(name, "").strip())
        }
        if conditions.get("ca") in TOP_LEVEL_CODES:
            del conditions["ca"]  # a top-level category is not accepted as a condition
        if not conditions:
            self._error(
                "400",
                "최소 한 가지 이상의 검색 조건을 입력하세요",
                "getItemList needs at least one of kw, ca (below the top level), ev, id, itemNo",
            )
            return
        size = self._int_arg("sz", 20, 1, MAX_PAGE_SIZE)
        if size is None:
            return
        page = self._int_arg("pg", 1, 1, 10**9)
        if page is None:
            return
        world = SupplierWorld(self.state)
        seed = self.state.config.seed
        if "ev" in conditions:
            candidates: list[int] = []  # no events (기획전) in the sandbox
        elif "itemNo" in conditions:
            index = item_index(conditions["itemNo"])
            candidates = [index] if index is not None else []
        elif "ca" in conditions:
            candidates = self._category_index(world, market).get(conditions["ca"], [])
        else:
            candidates = range(world.size(PLATFORM))  # type: ignore[assignment]
        if set(conditions) == {"ca"}:
            # Only the category: its listed items are known; generate just this page's.
            first = (page - 1) * size
            chosen = candidates[first : first + size]
            matching_page = [(i, item_state(seed, i)) for i in map_items(world, chosen)]
            self._answer_list(len(candidates), size, page, matching_page, market)
            return
        matching: list[tuple[CatalogItem, ItemState]] = []
        for index in candidates:
            item = world.item(PLATFORM, index)
            if item is None:
                continue
            state = item_state(seed, item)
            if not state.listed(market):
                continue
            if "ca" in conditions and CATEGORY_CODES[item.category_code][0] != conditions["ca"]:
                continue
            if "kw" in conditions and conditions["kw"] not in item.name:
                continue
            if "id" in conditions and conditions["id"] != f"seller{item.vendor:02d}":
                continue
            matching.append((item, state))
        first = (page - 1) * size
        self._answer_list(len(matching), size, page, matching[first : first + size], market)

    def _answer_list(
        self,
        total: int,
        size: int,
        page: int,
        page_items: list[tuple[CatalogItem, ItemState]],
        market: str,
    ) -> None:
        pages = -(-total // size)
        first = (page - 1) * size
        records = []
        previous_no: str | None = None
        for item, state in page_items:
            record = list_item(item, state, market)
            if state.malformed == "duplicate_no" and previous_no is not None:
                record["no"] = previous_no  # the same number listed twice
            previous_no = record["no"]
            records.append(record)
        listing: dict[str, Any]
        if not records:
            listing = {}
        elif len(records) == 1:
            listing = {"item": records[0]}  # one result: an object, not a list
        else:
            listing = {"item": records}
        self.write_json(
            {
                "domeggook": {
                    "header": {
                        "numberOfItems": str(total),
                        "firstItem": str(first + 1 if records else 0),
                        "lastItem": str(first + len(records)),
                        "currentPage": str(page),
                        "itemsPerPage": str(size),
                        "numberOfPages": str(pages),
                    },
                    "list": listing,
                }
            }
        )

    # ---- getItemView

    def _view_of(self, no: str) -> dict[str, Any] | None:
        index = item_index(no)
        item = SupplierWorld(self.state).item(PLATFORM, index) if index is not None else None
        if item is None:
            return None
        state = item_state(self.state.config.seed, item)
        if state.ended:
            return None
        return item_view(item, state)

    def _item_view(self, ver: str) -> None:
        raw = self.get_query_argument("no", "")
        multiple = self.get_query_argument("multiple", "") == "true"
        if not multiple:
            if not raw.isdigit():
                self._param_error("no must be one item number (several need multiple=true)")
                return
            view = self._view_of(raw)
            if view is None:
                self._error("404", "상품이 존재하지 않습니다", f"no item {raw}")
                return
            self.write_json({"domeggook": view})
            return
        if ver != "4.6":
            self._param_error("multiple=true needs ver=4.6")
            return
        numbers = raw.split(",") if raw else []
        if not numbers or not all(n.isdigit() for n in numbers):
            self._param_error("no must be comma-separated item numbers")
            return
        if len(numbers) > MAX_VIEW_ITEMS:
            self._param_error(f"at most {MAX_VIEW_ITEMS} item numbers per call, got {len(numbers)}")
            return
        self.count("domeggook_view_items", amount=len(numbers))
        views = [v for v in (self._view_of(n) for n in dict.fromkeys(numbers)) if v is not None]
        if not views:
            self._error("404", "상품이 존재하지 않습니다", "none of the item numbers exist")
            return
        item: Any = views[0] if len(views) == 1 else views  # one result: an object
        self.write_json({"domeggook": {"multipleResult": {"item": item}}})


def map_items(world: SupplierWorld, indices: list[int]) -> list[CatalogItem]:
    items = (world.item(PLATFORM, index) for index in indices)
    return [item for item in items if item is not None]


class DomeggookAdminHandler(AdminHandler):
    """``POST /_sandbox/domeggook`` ``{"per_minute": 5, "daily": 20}``: this platform's own limits
    (default 180/minute, 15,000/day); GET shows them with today's count. Undone by reset."""

    def get(self) -> None:
        store = _store(self.state)
        with self.state.lock:
            self.write_json(
                {
                    "per_minute": store.per_minute,
                    "daily": store.daily,
                    "day": store.day,
                    "day_calls": store.day_calls,
                }
            )

    def post(self) -> None:
        body = self._body_dict()
        store = _store(self.state)
        for name in ("per_minute", "daily"):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise tornado.web.HTTPError(400, reason=f"{name} must be an int >= 1")
        with self.state.lock:
            store.per_minute = body.get("per_minute") or store.per_minute
            store.daily = body.get("daily") or store.daily
        self.get()


def routes(state: SandboxState) -> list[RouteSpec]:
    return [
        (r"/domeggook/ssl/api/?", DomeggookApiHandler, {"state": state}),
        (r"/_sandbox/domeggook", DomeggookAdminHandler, {"state": state}),
    ]
