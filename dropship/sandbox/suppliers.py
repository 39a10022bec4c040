"""The suppliers' side of the sandbox: their catalogs at the world time, and purchase orders.

The products themselves come from :mod:`dropship.sandbox.world` (:func:`generate_item`, lazily,
one at a time: random access for OwnerClan/Domeggook pages, bounded memory for the 100,000-product
gentrade feed). :class:`SupplierWorld` reads them at the state's world time with the state's
configuration, faults and per-test catalog sizes.

Mutable supplier data lives in ``state.platform_store("suppliers", ...)`` (dropped by
``POST /_sandbox/reset``): purchase orders placed by our connectors and per-test overrides set
through ``POST /_sandbox/suppliers`` (catalog size per supplier, tracking delay).
"""

from __future__ import annotations

import math
import random
import threading
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import tornado.web

from dropship.sandbox.core import RouteSpec, SandboxState, _AdminHandler
from dropship.sandbox.world import (
    WORLD_EPOCH,
    CatalogItem,
    check_ks_x_1001,
    generate_item,
    iter_catalog,
)

SUPPLIERS = ("ownerclan", "domeggook", "gentrade")

CARRIERS = ("CJ대한통운", "한진택배", "롯데택배", "우체국택배", "로젠택배")
check_ks_x_1001(CARRIERS)  # the gentrade order lookup answers them in EUC-KR


# --------------------------------------------------------------------------- purchase orders


@dataclass
class SupplierOrderLine:
    product_index: int
    quantity: int
    option: str | None
    unit_price: int


@dataclass
class SupplierOrder:
    supplier: str
    key: str
    note: str  # our order key
    created_at: datetime  # world time
    lines: list[SupplierOrderLine]
    carrier: str
    tracking_number: str
    recipient: dict[str, Any] = field(repr=False)  # personal data: never logged
    cancelled: bool = False

    def shipped(self, now: datetime, tracking_delay_s: float) -> bool:
        return not self.cancelled and (now - self.created_at).total_seconds() >= tracking_delay_s


@dataclass
class SupplierStore:
    """Mutable supplier data of one sandbox state (guarded by ``state.lock``)."""

    orders: dict[str, dict[str, SupplierOrder]] = field(
        default_factory=lambda: {s: {} for s in SUPPLIERS}
    )
    serial: int = 0
    # (supplier, note) -> order keys: lookups by our key stay O(1) with 10,000s of orders.
    by_note: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # supplier -> (every order in placing order, their notes joined by NUL, each note's start):
    # a note filter ("contains", as allOrders(note:) is read) is one C-level str.find over the
    # joined notes instead of a Python loop over every order (the forward and tracking
    # look-ups ask for dozens of keys a second against 10,000s of orders in the benchmark).
    note_search: dict[str, tuple[list[SupplierOrder], str, list[int]]] = field(default_factory=dict)
    catalog_sizes: dict[str, int] = field(default_factory=dict)
    tracking_delay_s: float | None = None
    # Per supplier: (inputs, updatedAt in epoch ms of every product), see SupplierWorld.
    updated_index: dict[str, tuple[tuple[Any, ...], array[int]]] = field(default_factory=dict)
    # Items an admin call sold out (a product selling out after it was listed): supplier ->
    # item index -> world time of the sell-out, which becomes the item's updatedAt (a real
    # supplier's modification time moves with its stock, so an incremental read sees it).
    sold_out: dict[str, dict[int, datetime]] = field(default_factory=dict)


class SupplierWorld:
    """What the supplier platform modules read and change; a thin view over the state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.store = state.platform_store("suppliers", SupplierStore)

    @property
    def lock(self) -> threading.RLock:
        return self.state.lock

    def now(self) -> datetime:
        return self.state.now()

    def size(self, supplier: str) -> int:
        with self.lock:
            return self.store.catalog_sizes.get(supplier, self.state.config.catalog_size)

    @property
    def tracking_delay_s(self) -> float:
        with self.lock:
            if self.store.tracking_delay_s is not None:
                return self.store.tracking_delay_s
            return self.state.config.tracking_delay_s

    def item(self, supplier: str, index: int) -> CatalogItem | None:
        if not 0 <= index < self.size(supplier):
            return None
        config = self.state.config
        return self._sold_out(
            generate_item(
                config.seed,
                supplier,
                index,
                now=self.now(),
                price_drift=config.price_drift,
                soldout_rate=config.soldout_rate,
                malformed_rate=self.state.faults[supplier].malformed_rate,
                image_base=self.state.image_base,
            )
        )

    def _sold_out(self, item: CatalogItem) -> CatalogItem:
        with self.lock:
            sold_at = self.store.sold_out.get(item.supplier, {}).get(item.index)
        if sold_at is None:
            return item
        options = tuple(replace(o, stock=0) for o in item.options)
        return replace(
            item,
            soldout=True,
            stock=0,
            options=options,
            updated_at=max(item.updated_at, sold_at),
        )

    def items(self, supplier: str, start: int = 0) -> Iterator[CatalogItem]:
        """Every product from ``start`` on, generated one at a time at one world instant."""
        config = self.state.config
        items = iter_catalog(
            config.seed,
            supplier,
            self.size(supplier),
            now=self.now(),
            price_drift=config.price_drift,
            soldout_rate=config.soldout_rate,
            malformed_rate=self.state.faults[supplier].malformed_rate,
            start=start,
            image_base=self.state.image_base,
        )
        with self.lock:
            forced = bool(self.store.sold_out.get(supplier))
        return (self._sold_out(item) for item in items) if forced else items

    def items_updated_within(
        self, supplier: str, start: int, low_ms: int | None, high_ms: int | None
    ) -> Iterator[CatalogItem]:
        """Products from ``start`` on whose ``updatedAt`` (epoch ms) lies in ``[low, high]``
        (either bound open when ``None``), at one world instant.

        A real supplier answers a modification-time filter from an index; generating every
        product to test its timestamp made each time-window query cost the whole catalog (a
        100,000-product OwnerClan full run is ~50 windows: minutes of sandbox CPU that looked
        like collect time). The timestamps of the whole catalog are computed once per world
        hour (a product's ``updatedAt`` moves only at a price-change hour) and kept per state;
        only the matching products are generated."""
        now = self.now()
        config = self.state.config
        stamps = self._updated_stamps(supplier, now)
        with self.lock:
            sold_ms = {
                index: int(at.timestamp() * 1000)
                for index, at in self.store.sold_out.get(supplier, {}).items()
            }
        for index in range(max(0, start), len(stamps)):
            stamp = stamps[index]
            if index in sold_ms:
                stamp = max(stamp, sold_ms[index])  # as _sold_out stamps the item
            if (low_ms is None or stamp >= low_ms) and (high_ms is None or stamp <= high_ms):
                yield self._sold_out(
                    generate_item(
                        config.seed,
                        supplier,
                        index,
                        now=now,
                        price_drift=config.price_drift,
                        soldout_rate=config.soldout_rate,
                        malformed_rate=self.state.faults[supplier].malformed_rate,
                        image_base=self.state.image_base,
                    )
                )

    def _updated_stamps(self, supplier: str, now: datetime) -> array[int]:
        config = self.state.config
        hour = math.floor((now - WORLD_EPOCH).total_seconds() / 3600)
        # Everything generate_item's updatedAt depends on (the sold-out rate changes how many
        # random draws come before it).
        inputs = (config.seed, self.size(supplier), config.soldout_rate, config.price_drift, hour)
        with self.lock:
            cached = self.store.updated_index.get(supplier)
            if cached is not None and cached[0] == inputs:
                return cached[1]
            stamps = array(
                "q",
                (
                    int(item.updated_at.timestamp() * 1000)
                    for item in iter_catalog(
                        config.seed,
                        supplier,
                        inputs[1],
                        now=now,
                        price_drift=config.price_drift,
                        soldout_rate=config.soldout_rate,
                    )
                ),
            )
            self.store.updated_index[supplier] = (inputs, stamps)
            return stamps

    # ---- orders: recorded as asked, duplicates included, like a real supplier

    def create_order(
        self,
        supplier: str,
        note: str,
        lines: list[SupplierOrderLine],
        recipient: dict[str, Any],
        key_format: str,
    ) -> SupplierOrder:
        with self.lock:
            self.store.serial += 1
            serial = self.store.serial
            rng = random.Random(f"{self.state.config.seed}:{supplier}:order:{serial}")
            order = SupplierOrder(
                supplier=supplier,
                key=key_format.format(serial=serial),
                note=note,
                created_at=self.now(),
                lines=lines,
                carrier=rng.choice(CARRIERS),
                tracking_number=str(rng.randrange(10**11, 10**12)),
                recipient=recipient,
            )
            self.store.orders[supplier][order.key] = order
            self.store.by_note.setdefault((supplier, note), []).append(order.key)
        return order

    def record_purchase(self, note: str) -> None:
        """Count one purchase request (however the supplier splits it) under our order key:
        a connector that buys twice shows up as 2 in ``/_sandbox/counts`` ``purchase_orders``."""
        self.state.count("purchase_orders", note)

    def order(self, supplier: str, key: str) -> SupplierOrder | None:
        with self.lock:
            return self.store.orders[supplier].get(key)

    def orders(self, supplier: str, note: str | None = None) -> list[SupplierOrder]:
        with self.lock:
            if note is None:
                return list(self.store.orders[supplier].values())
            placed = self.store.orders[supplier]
            return [placed[k] for k in self.store.by_note.get((supplier, note), ())]

    def orders_noting(self, supplier: str, fragment: str) -> list[tuple[int, SupplierOrder]]:
        """(position, order) of every order whose note contains ``fragment``, in placing order
        (the position is the order's index in :meth:`orders`)."""
        with self.lock:
            placed = self.store.orders[supplier]
            orders, blob, starts = self.store.note_search.get(supplier, ([], "", []))
            if len(orders) != len(placed):  # orders are only ever added: extend
                fresh = list(placed.values())[len(orders) :]
                orders = orders + fresh
                pieces = [blob] if blob else []
                offset = len(blob)
                starts = list(starts)
                for order in fresh:
                    if pieces:
                        offset += 1  # the NUL before this note
                    starts.append(offset)
                    offset += len(order.note or "")
                    pieces.append(order.note or "")
                blob = "\x00".join(pieces)
                self.store.note_search[supplier] = (orders, blob, starts)
        if "\x00" in fragment:
            return []
        if not fragment:
            return list(enumerate(orders))
        found: list[tuple[int, SupplierOrder]] = []
        at = blob.find(fragment)
        while at != -1:
            index = bisect_right(starts, at) - 1
            found.append((index, orders[index]))
            if index + 1 >= len(starts):
                break
            at = blob.find(fragment, starts[index + 1])  # one hit per order
        return found

    def cancel(self, supplier: str, key: str) -> SupplierOrder | None:
        """Cancel unless already shipped; returns the order (None when unknown)."""
        with self.lock:
            order = self.store.orders[supplier].get(key)
            if order is not None and not order.shipped(self.now(), self.tracking_delay_s):
                order.cancelled = True
            return order


# --------------------------------------------------------------------------- admin route


class SupplierAdminHandler(_AdminHandler):
    """``POST /_sandbox/suppliers`` with e.g.
    ``{"catalog_sizes": {"domeggook": 400}, "tracking_delay_s": 60, "sold_out": {"ownerclan":
    [3]}}`` (``sold_out``: those item indexes sell out from now on); GET shows the settings.
    Not counted, not rate limited (like the other ``/_sandbox`` endpoints); undone by reset."""

    def get(self) -> None:
        world = SupplierWorld(self.state)
        self.write_json(
            {
                "catalog_sizes": {s: world.size(s) for s in SUPPLIERS},
                "tracking_delay_s": world.tracking_delay_s,
            }
        )

    def post(self) -> None:
        body = self._body_dict()
        world = SupplierWorld(self.state)
        try:
            sizes = body.get("catalog_sizes", {})
            if not isinstance(sizes, dict):
                raise ValueError("catalog_sizes must be an object {supplier: size}")
            for supplier, size in sizes.items():
                if supplier not in SUPPLIERS:
                    raise ValueError(f"unknown supplier {supplier!r}; known: {SUPPLIERS}")
                if not isinstance(size, int) or size < 0:
                    raise ValueError(f"catalog size of {supplier} must be an int >= 0")
            delay = body.get("tracking_delay_s")
            if delay is not None and (not isinstance(delay, int | float) or delay < 0):
                raise ValueError("tracking_delay_s must be a number >= 0")
            sold_out = body.get("sold_out", {})
            if not isinstance(sold_out, dict) or not all(
                s in SUPPLIERS and isinstance(v, list) and all(isinstance(i, int) for i in v)
                for s, v in sold_out.items()
            ):
                raise ValueError("sold_out must be an object {supplier: [item index, ...]}")
        except ValueError as exc:
            raise tornado.web.HTTPError(400, reason=str(exc)) from None
        with self.state.lock:
            world.store.catalog_sizes.update(sizes)
            now = world.now()
            for supplier, indexes in sold_out.items():
                sold = world.store.sold_out.setdefault(supplier, {})
                for index in indexes:
                    sold.setdefault(index, now)  # selling out again changes nothing
            if delay is not None:
                world.store.tracking_delay_s = float(delay)
        self.get()


# --------------------------------------------------------------------------- sheet upload

# The upload templates the sandbox suppliers accept (kept apart from the client's copy on
# purpose: a drift between what we write and what the supplier reads must fail a test).
SHEET_HEADERS: dict[str, tuple[str, ...]] = {
    "gentrade": (
        "개인고유주문번호",
        "상품번호",
        "옵션",
        "수량",
        "받는사람",
        "받는사람 전화번호",
        "받는사람 핸드폰번호",
        "우편번호",
        "받는사람 주소",
        "배송메세지",
    ),
    "domeggook": (
        "판매자주문번호",
        "상품번호",
        "옵션",
        "수량",
        "수령인",
        "수령인 연락처",
        "우편번호",
        "주소",
        "배송요청사항",
    ),
}
_SHEET_REQUIRED = {
    "gentrade": (
        "개인고유주문번호",
        "상품번호",
        "수량",
        "받는사람",
        "받는사람 핸드폰번호",
        "받는사람 주소",
    ),
    "domeggook": ("판매자주문번호", "상품번호", "수량", "수령인", "수령인 연락처", "주소"),
}
_ITEM_BASE = {"gentrade": 500_000, "domeggook": 30_000_000}
_ORDER_KEY_FORMAT = {"gentrade": "1{serial:012d}", "domeggook": "D{serial:010d}"}
MAX_SHEET_ROWS = 10_000


def parse_sheet(supplier: str, content: bytes, fmt: str) -> list[dict[str, str]]:
    """The rows of an uploaded purchase-order sheet, checked strictly: the exact header row,
    the required cells filled, no order number twice. ValueError naming the first problem."""
    if fmt == "csv":
        import csv
        import io

        try:
            text_ = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError("the CSV is not UTF-8") from None
        table = [row for row in csv.reader(io.StringIO(text_, newline=""))]
    elif fmt == "xlsx":
        import io
        import zipfile

        from openpyxl import load_workbook

        try:
            book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise ValueError(f"not an xlsx workbook ({type(exc).__name__})") from None
        sheet = book.worksheets[0]
        table = [
            ["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)
        ]
    else:
        raise ValueError("format must be csv or xlsx")
    headers = SHEET_HEADERS[supplier]
    if not table or tuple(c.strip() for c in table[0]) != headers:
        raise ValueError(f"the header row must be exactly {', '.join(headers)}")
    if len(table) - 1 > MAX_SHEET_ROWS:
        raise ValueError(f"at most {MAX_SHEET_ROWS} rows per sheet")
    rows, seen = [], set()
    for number, raw in enumerate(table[1:], start=2):
        if not any(c.strip() for c in raw):
            continue
        if len(raw) != len(headers):
            raise ValueError(f"row {number}: {len(raw)} cells, expected {len(headers)}")
        row = dict(zip(headers, (c.strip() for c in raw), strict=True))
        for name in _SHEET_REQUIRED[supplier]:
            if not row[name]:
                raise ValueError(f"row {number}: {name} is empty")
        if row[headers[0]] in seen:
            raise ValueError(f"row {number}: order number {row[headers[0]]} appears twice")
        seen.add(row[headers[0]])
        if not row["수량"].isdigit() or int(row["수량"]) < 1:
            raise ValueError(f"row {number}: 수량 must be a whole number >= 1")
        rows.append(row)
    if not rows:
        raise ValueError("the sheet has no order rows")
    return rows


class SheetUploadHandler(_AdminHandler):
    """``POST /_sandbox/<gentrade|domeggook>/sheet_upload?format=csv|xlsx`` with the file as
    the body: stands in for uploading a purchase-order sheet on the supplier's site. The whole
    file is refused (400, the first problem named) unless every row is valid: the template's
    header row, known item numbers, an option the item has (by label or option code), a
    quantity. Each row becomes one supplier order under its order number, counted in
    ``purchase_orders`` like an API purchase (a sheet uploaded twice buys twice, as it would).
    Answers ``{"orders": [{"order_key", "supplier_order_id"}]}``."""

    def initialize(self, state: SandboxState, supplier: str) -> None:  # type: ignore[override]
        super().initialize(state=state)
        self.supplier = supplier

    def post(self) -> None:
        fmt = self.get_query_argument("format", "")
        world = SupplierWorld(self.state)
        try:
            rows = parse_sheet(self.supplier, self.request.body, fmt)
            prepared = []
            for number, row in enumerate(rows, start=2):
                key = row[SHEET_HEADERS[self.supplier][0]]
                code = row["상품번호"]
                index = int(code) - _ITEM_BASE[self.supplier] if code.isdigit() else -1
                item = world.item(self.supplier, index)
                if item is None:
                    raise ValueError(f"row {number}: unknown item number {code}")
                option = row["옵션"] or None
                chosen = None
                if item.options:
                    chosen = next(
                        (
                            o
                            for n, o in enumerate(item.options)
                            if option in (o.value, o.code, f"{n:02d}", f"{o.name}:{o.value}")
                        ),
                        None,
                    )
                    if chosen is None:
                        raise ValueError(f"row {number}: item {code} has no option {option!r}")
                elif option:
                    raise ValueError(f"row {number}: item {code} has no options")
                line = SupplierOrderLine(
                    item.index,
                    int(row["수량"]),
                    chosen.value if chosen else None,
                    item.price + (chosen.price_delta if chosen else 0),
                )
                prepared.append((key, line, row))
        except ValueError as exc:
            # In the body, not the reason phrase: the message names Korean column headers.
            self.write_json({"error": str(exc)[:300]}, status=400)
            return
        created = []
        for key, line, row in prepared:
            recipient = {
                "name": row[SHEET_HEADERS[self.supplier][4]],
                "address": row["주소" if self.supplier == "domeggook" else "받는사람 주소"],
            }
            order = world.create_order(
                self.supplier, key, [line], recipient, _ORDER_KEY_FORMAT[self.supplier]
            )
            world.record_purchase(key)
            created.append({"order_key": key, "supplier_order_id": order.key})
        self.write_json({"orders": created})


class SupplierOrdersAdminHandler(_AdminHandler):
    """``GET /_sandbox/suppliers/orders?supplier=domeggook``: every order the supplier holds,
    with its shipping state (what an operator would download from the supplier's site; no
    receiver data)."""

    def get(self) -> None:
        supplier = self.get_query_argument("supplier", "")
        if supplier not in SUPPLIERS:
            raise tornado.web.HTTPError(400, reason=f"supplier must be one of {SUPPLIERS}")
        world = SupplierWorld(self.state)
        now, delay = world.now(), world.tracking_delay_s
        self.write_json(
            {
                "orders": [
                    {
                        "order_key": o.note,
                        "supplier_order_id": o.key,
                        "created_at": o.created_at.isoformat(),
                        "cancelled": o.cancelled,
                        "shipped": o.shipped(now, delay),
                        "carrier": o.carrier if o.shipped(now, delay) else None,
                        "tracking_number": o.tracking_number if o.shipped(now, delay) else None,
                    }
                    for o in world.orders(supplier)
                ]
            }
        )


def routes(state: SandboxState) -> list[RouteSpec]:
    return [
        (r"/_sandbox/suppliers", SupplierAdminHandler, {"state": state}),
        (r"/_sandbox/suppliers/orders", SupplierOrdersAdminHandler, {"state": state}),
        (
            r"/_sandbox/gentrade/sheet_upload",
            SheetUploadHandler,
            {"state": state, "supplier": "gentrade"},
        ),
        (
            r"/_sandbox/domeggook/sheet_upload",
            SheetUploadHandler,
            {"state": state, "supplier": "domeggook"},
        ),
    ]
