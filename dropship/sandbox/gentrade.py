"""gentrade sandbox: the **Zentrade** product and order-lookup APIs, as the Zentrade API guide
(file id 15186231462) publishes them. "gentrade" is the code's name for Zentrade.

* ``GET|POST /gentrade/shop/proc/product_api.php?id=&m_skey=`` with optional ``goodsno`` (one
  product), ``runout`` (``1`` only sold out, ``0`` only on sale), ``opendate_s``/``opendate_e``
  (``yyyy-MM-dd``; both or neither): one ``<zentrade version="ZENTRADE XML 1.0">`` document in
  **EUC-KR bytes**, streamed in batches (chunked), so 100,000 products never sit in memory.
* ``GET|POST /gentrade/shop/proc/order_api.php?id=&m_skey=&ordno=|pordno=``: the orders
  registered under that Zentrade order number or our own order number (``pordno``) in a
  ``<zentrade version="ZENTRADE ORDER XML 1.0">`` document, with ``<deli_info delicom delinum>``
  filled once shipped (``tracking_delay_s`` world seconds after registration).
* There is **no order-creation or cancel endpoint**, as at Zentrade: orders are registered by
  uploading a purchase-order sheet on its site. The test-only admin endpoint
  ``POST /_sandbox/gentrade/sheet_orders`` stands in for that upload
  (``{"pordno": "...", "lines": [{"goodsno": "500001", "qty": 1, "option": "빨강"}]}``).
* ``POST /_sandbox/gentrade`` ``{"hostile_every": N, "cut_after_products": M}``: serve a broken
  record of each kind in :data:`HOSTILE_KINDS` (in turn) before every N-th product, and/or cut the
  connection after M products (a stream cut mid-body). Undone by ``/_sandbox/reset``.
  ``GET /_sandbox/gentrade`` also shows ``feed_cache_hits``.
* While the world clock is frozen, the last complete product document is kept and resent byte
  for byte to a read whose inputs (seed, catalog size, world instant, price drift, sold-out and
  malformed rates, ``hostile_every``, the query) are all the same: a test double's speed-up that
  never changes what is served (generating the document in Python was the slowest part of a
  100,000-product read). ``feed_cache_hits`` counts the reads served that way.
* Wrong ``id``/``m_skey``: ``403``; a bad parameter: ``400`` (the guide publishes no error shape:
  a sandbox decision, at least as strict as the real service). Answers are EUC-KR XML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import tornado.iostream
import tornado.web

from dropship.sandbox.core import AdminHandler, RouteSpec, SandboxHandler, SandboxState
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierOrder, SupplierOrderLine, SupplierWorld
from dropship.sandbox.world import WORLD_EPOCH, CatalogItem

PLATFORM = "gentrade"
CODE_BASE = 500_000
FEED_BATCH = 500  # products per streamed chunk
KST = timezone(timedelta(hours=9))
XML_DECLARATION = '<?xml version="1.0" encoding="euc-kr"?>\n'
FEED_VERSION = "ZENTRADE XML 1.0"
ORDER_VERSION = "ZENTRADE ORDER XML 1.0"
ROW_SEPARATOR = "↑=↑"
FIELD_SEPARATOR = "^|^"


def product_code(index: int) -> str:
    return str(CODE_BASE + index)


def product_index(code: str) -> int | None:
    return int(code) - CODE_BASE if code.isdigit() and int(code) >= CODE_BASE else None


def opendate(seed: int, index: int) -> date:
    """When product ``index`` went on sale: a seeded day in the year before the world epoch."""
    digest = hashlib.blake2b(f"{seed}:gentrade:opendate:{index}".encode(), digest_size=8)
    days = int.from_bytes(digest.digest(), "big") % 365
    return (WORLD_EPOCH - timedelta(days=days)).astimezone(KST).date()


def _kst(value: datetime) -> str:
    return value.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S")


def _cdata(text: str) -> str:
    return "<![CDATA[ " + text.replace("]]>", "]]]]><![CDATA[>") + " ]]>"


def option_rows(item: CatalogItem) -> str:
    """Zentrade's packing: one row per option, **full** prices (cost + the option's
    difference), ``label^|^price^|^consumer price^|^image url`` rows joined by ``↑=↑``."""
    return (ROW_SEPARATOR + "\n").join(
        FIELD_SEPARATOR.join(
            (
                o.value,
                str(item.price + o.price_delta),
                str(item.fixed_price + o.price_delta),
                f"https://img.sandbox.invalid/gentrade/{item.index}/opt{n}.jpg",
            )
        )
        for n, o in enumerate(item.options)
    )


def product_xml(item: CatalogItem, seed: int, code: str | None = None) -> str:
    images = list(item.images)[:5] + [""] * (5 - min(5, len(item.images)))
    buyprice = "" if item.malformed else str(item.price)  # fault injection: unreadable price
    option_name = item.options[0].name if item.options else ""
    content = '<p align="center">' + "".join(f'<img src="{u}"><br>' for u in item.images) + "</p>"
    code = product_code(item.index) if code is None else code
    return (
        f"<product code={quoteattr(code)}>\n"
        f"<dome_category dome_catecode={quoteattr(item.category_code)}>"
        f"{_cdata(item.category_name)}</dome_category>\n"
        f'<scategory emp_catecode="" esellers_catecode="" classcode="35" />\n'
        f"<prdtname>{_cdata(item.name)}</prdtname>\n"
        '<baseinfo madein="국산" productcom="상세정보참조" brand=""'
        f" model={quoteattr(item.model)} />\n"
        f'<price buyprice="{buyprice}" consumerprice="{item.fixed_price}" taxmode="Y" />\n'
        "<listimg "
        + " ".join(f"url{n + 1}={quoteattr(url)}" for n, url in enumerate(images))
        + " />\n"
        f'<option opt1nm={quoteattr(option_name)} opt2nm="">{_cdata(option_rows(item))}</option>\n'
        f"<content>{_cdata(content)}</content>\n"
        f"<keyword>{_cdata(item.name.split('] ')[-1].replace(' ', ','))}</keyword>\n"
        f'<status runout="{1 if item.soldout else 0}" opendate="{opendate(seed, item.index)}" />\n'
        "</product>\n"
    )


# --------------------------------------------------------------------------- hostile records

# Each kind is one bad unit that must cost exactly one InvalidRecord (and nothing else), with a
# reason containing the given words.
HOSTILE_KINDS: dict[str, str] = {
    "bad_bytes": "byte sequence",
    "control_char": "control character",
    "malformed": "tag mismatch",
    "oversized": "exceeds",
    "nested": "nested",
    "unexpected_element": "unexpected element",
    "bad_number": "not a whole number",
    "zero_cost": "buyprice 0 KRW is outside",
    "absurd_cost": "buyprice 250000000 KRW is outside",
    "negative_option": "below zero",
    "option_fields": "fields",
    "duplicate_code": "duplicate",
    "missing_code": "no code",
    "unclosed_cdata": "CData section not finished",
    "bad_entity": "Entity 'nbsp' not defined",
    "garbage_between": "unexpected content",
    "unclosed_product": "no </product>",
    "bad_status": "runout",
    "bad_date": "opendate",
}
OVERSIZED_BYTES = 1_200_000  # above the connector's 1 MiB record limit


def hostile_record(kind: str, item: CatalogItem, seed: int, previous_code: str) -> bytes:
    """A broken record of ``kind`` built from ``item`` (under a code no good product has,
    except ``duplicate_code``, which repeats ``previous_code``)."""
    code = f"9{item.index:08d}"
    good = product_xml(item, seed, code=code)
    if kind == "duplicate_code":
        return product_xml(item, seed, code=previous_code).encode("euc_kr")
    if kind == "bad_bytes":
        head, tail = good.split("<prdtname><![CDATA[ ", 1)
        return (
            (head + "<prdtname><![CDATA[ ").encode("euc_kr") + b"\x80\xff" + tail.encode("euc_kr")
        )
    replacements: dict[str, tuple[str, str]] = {
        "control_char": ("<prdtname><![CDATA[ ", "<prdtname><![CDATA[ \x01"),
        "malformed": ("</prdtname>", "</prdtnam>"),
        "nested": ("<status ", product_xml(item, seed, code=f"8{item.index:08d}") + "<status "),
        "unexpected_element": ("</prdtname>", "<b>굵게</b></prdtname>"),
        "bad_number": (f'buyprice="{item.price}"', 'buyprice="12a00"'),
        "zero_cost": (f'buyprice="{item.price}"', 'buyprice="0"'),
        "absurd_cost": (f'buyprice="{item.price}"', 'buyprice="250000000"'),
        "missing_code": (f"<product code={quoteattr(code)}>", "<product>"),
        "bad_entity": ('productcom="상세정보참조"', 'productcom="&nbsp;"'),
        "unclosed_product": ("</product>\n", "\n"),
        "bad_status": ('runout="', 'runout="2'),
        "bad_date": ('opendate="', 'opendate="2020-13-45'),
    }
    if kind == "unclosed_cdata":
        # The record's last CDATA never ends: it runs over </product> to the next record.
        keyword_end = good.index(" ]]></keyword>")
        return (good[:keyword_end] + good[keyword_end + 4 :]).encode("euc_kr")
    if kind == "negative_option":
        rows = FIELD_SEPARATOR.join(("검정", "-500", "0", ""))
        return good.replace(
            good[good.index("<option ") : good.index("</option>")],
            f'<option opt1nm="색상" opt2nm="">{_cdata(rows)}',
        ).encode("euc_kr")
    if kind == "option_fields":
        rows = FIELD_SEPARATOR.join(("검정", "1000", "0"))
        return good.replace(
            good[good.index("<option ") : good.index("</option>")],
            f'<option opt1nm="색상" opt2nm="">{_cdata(rows)}',
        ).encode("euc_kr")
    if kind == "oversized":
        return good.replace("<content>", "<content>" + _cdata("x" * OVERSIZED_BYTES), 1).encode(
            "euc_kr"
        )
    if kind == "garbage_between":
        return b"garbage <<not a product>> & \x00\xff between records\n"
    old, new = replacements[kind]
    if old not in good:
        raise ValueError(f"hostile kind {kind}: {old!r} not in the record")
    return good.replace(old, new, 1).encode("euc_kr")


def hostile_kind(index: int, every: int) -> str | None:
    """Which broken record goes before product ``index`` when one in ``every`` is broken."""
    if every <= 0 or index == 0 or index % every:
        return None
    kinds = list(HOSTILE_KINDS)
    return kinds[(index // every - 1) % len(kinds)]


def render_feed(
    items: Iterable[CatalogItem],
    seed: int,
    *,
    now: datetime,
    hostile_every: int = 0,
    batch: int = FEED_BATCH,
) -> Iterator[bytes]:
    """The product document as EUC-KR chunks of ``batch`` products, generated lazily."""
    yield (
        XML_DECLARATION + f'<zentrade version="{FEED_VERSION}" datetime="{_kst(now)}">\n'
    ).encode("euc_kr")
    parts: list[bytes] = []
    previous = ""
    for item in items:
        kind = hostile_kind(item.index, hostile_every)
        if kind is not None:
            parts.append(hostile_record(kind, item, seed, previous))
        parts.append(product_xml(item, seed).encode("euc_kr"))
        previous = product_code(item.index)
        if len(parts) >= batch:
            yield b"".join(parts)
            parts.clear()
    parts.append(b"</zentrade>\n")
    yield b"".join(parts)


# --------------------------------------------------------------------------- handlers


# The last full document served while the world clock was frozen is kept (up to this size), so
# reading the same catalog again sends the same bytes without generating them again: generating
# 100,000 products in Python costs the sandbox process more than the client's whole parse.
MAX_CACHED_FEED_BYTES = 256 * 1024 * 1024


@dataclass
class GentradeStore:
    hostile_every: int = 0
    cut_after_products: int | None = None
    # (everything the document's bytes depend on, its chunks); see _feed_chunks.
    feed_cache: tuple[tuple[Any, ...], list[bytes]] | None = None
    feed_cache_hits: int = 0  # reads served from feed_cache (GET /_sandbox/gentrade shows it)


def _store(state: SandboxState) -> GentradeStore:
    return state.platform_store(PLATFORM, GentradeStore)


class _GentradeHandler(SandboxHandler):
    platform = PLATFORM
    mutating_methods = frozenset()  # both APIs only read, whatever the method

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # Korean legacy endpoints read forms and queries as EUC-KR (ASCII unchanged).
        try:
            return value.decode("euc_kr")
        except UnicodeDecodeError:
            raise tornado.web.HTTPError(400, reason=f"argument {name} is not EUC-KR") from None

    def write_xml(self, body: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/xml; charset=euc-kr")
        self.finish((XML_DECLARATION + body).encode("euc_kr"))

    def refuse(self, status: int, message: str) -> None:
        self.write_xml(f"<error><message>{escape(message)}</message></error>", status)

    def authorised(self) -> bool:
        expected = SANDBOX_CREDENTIALS[PLATFORM]
        if (
            self.get_argument("id", "") == expected["id"]
            and self.get_argument("m_skey", "") == expected["key"]
        ):
            return True
        self.refuse(403, "인증 정보가 올바르지 않습니다")
        return False


def _date_arg(text: str, name: str) -> date:
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise tornado.web.HTTPError(400, reason=f"{name} must be yyyy-MM-dd") from None


class GentradeFeedHandler(_GentradeHandler):
    endpoint = "product_api"

    async def get(self) -> None:
        await self._serve()

    async def post(self) -> None:
        await self._serve()

    async def _serve(self) -> None:
        if not self.authorised():
            return
        goodsno = self.get_argument("goodsno", "")
        runout = self.get_argument("runout", "")
        start_text = self.get_argument("opendate_s", "")
        end_text = self.get_argument("opendate_e", "")
        if runout not in ("", "0", "1"):
            self.refuse(400, "runout must be 1 or 0")
            return
        if bool(start_text) != bool(end_text):
            self.refuse(400, "opendate_s and opendate_e are both required to search by date")
            return
        window = None
        if start_text:
            window = (_date_arg(start_text, "opendate_s"), _date_arg(end_text, "opendate_e"))
        world = SupplierWorld(self.state)
        seed = self.state.config.seed
        store = _store(self.state)

        def selected(items: Iterable[CatalogItem]) -> Iterator[CatalogItem]:
            for item in items:
                if runout and item.soldout != (runout == "1"):
                    continue
                if window and not window[0] <= opendate(seed, item.index) <= window[1]:
                    continue
                yield item

        if goodsno:
            index = product_index(goodsno)
            one = world.item(PLATFORM, index) if index is not None else None
            items: Iterable[CatalogItem] = [one] if one is not None else []
        else:
            items = world.items(PLATFORM)
        self.set_header("Content-Type", "text/xml; charset=euc-kr")
        served = 0
        cut = store.cut_after_products
        chunks = render_feed(
            selected(items), seed, now=world.now(), hostile_every=store.hostile_every
        )
        if not goodsno and self.state.clock_frozen:
            chunks = self._cached(world, store, (runout, window), chunks)
        for chunk in chunks:
            served += chunk.count(b"</product>")
            self.write(chunk)
            try:
                await self.flush()  # back-pressure: wait until the client took the chunk
            except tornado.iostream.StreamClosedError:
                return  # the client stopped reading (e.g. found what it looked for)
            if self._client_gone:
                return
            if cut is not None and served >= cut:
                # A stream cut mid-body: close without the chunked terminator.
                stream = getattr(self.request.connection, "stream", None)
                if stream is not None:
                    stream.close()
                self._finished = True
                return
        self.finish()

    def _cached(
        self,
        world: SupplierWorld,
        store: GentradeStore,
        query: tuple[Any, ...],
        generated: Iterator[bytes],
    ) -> Iterator[bytes]:
        """The document's chunks from the cache when everything its bytes depend on is the
        same as when it was stored (same chunk boundaries, so a cut after M products cuts at the
        same place); otherwise ``generated``, recorded as it goes out and stored once it is
        complete and no larger than :data:`MAX_CACHED_FEED_BYTES`. Only used while the world
        clock is frozen (with a running clock no two reads share an instant)."""
        config = self.state.config
        key = (
            config.seed,
            world.size(PLATFORM),
            world.now(),
            config.price_drift,
            config.soldout_rate,
            self.state.faults[PLATFORM].malformed_rate,
            store.hostile_every,
            query,
        )
        with self.state.lock:
            cached = store.feed_cache
        if cached is not None and cached[0] == key:
            with self.state.lock:
                store.feed_cache_hits += 1
            yield from cached[1]
            return
        recorded: list[bytes] | None = []
        size = 0
        for chunk in generated:
            if recorded is not None:
                size += len(chunk)
                if size <= MAX_CACHED_FEED_BYTES:
                    recorded.append(chunk)
                else:
                    recorded = None  # too large to keep: served as generated, not stored
            yield chunk
        if recorded is not None:
            with self.state.lock:
                store.feed_cache = (key, recorded)


def _order_xml(order: SupplierOrder, world: SupplierWorld) -> str:
    shipped = order.shipped(world.now(), world.tracking_delay_s)
    items = "".join(
        f"<ord_item{n}>{_cdata(product_code(line.product_index) + ' - / ' + (line.option or ''))}"
        f"</ord_item{n}>"
        for n, line in enumerate(order.lines, start=1)
    )
    return (
        f"<ord_info ordno={quoteattr(order.key)} pordno={quoteattr(order.note)}>"
        f"<ord_date>{_kst(order.created_at)}</ord_date>"
        f"<nameReceiver>{_cdata(str(order.recipient.get('name', '')))}</nameReceiver>"
        f"<phoneReceiver>{_cdata('')}</phoneReceiver>"
        f"<mobileReceiver>{_cdata(str(order.recipient.get('mobile', '')))}</mobileReceiver>"
        f"<address>{_cdata(str(order.recipient.get('address', '')))}</address>"
        f"{items}"
        f"<deli_info delicom={quoteattr(order.carrier if shipped else '')}"
        f" delinum={quoteattr(order.tracking_number if shipped else '')} />"
        f"<zentrade_msg>{_cdata('')}</zentrade_msg>"
        "</ord_info>"
    )


class GentradeOrderHandler(_GentradeHandler):
    endpoint = "order_api"

    def get(self) -> None:
        self._lookup()

    def post(self) -> None:
        self._lookup()

    def _lookup(self) -> None:
        if not self.authorised():
            return
        ordno = self.get_argument("ordno", "")
        pordno = self.get_argument("pordno", "")
        if not ordno and not pordno:
            self.refuse(400, "ordno or pordno is required")
            return
        if ordno and not (len(ordno) == 13 and ordno.isdigit()):
            self.refuse(400, "ordno is a 13-digit Zentrade order number")
            return
        world = SupplierWorld(self.state)
        orders = [
            o
            for o in world.orders(PLATFORM)
            if (not ordno or o.key == ordno) and (not pordno or o.note == pordno)
        ]
        body = "".join(_order_xml(o, world) for o in orders)
        self.write_xml(
            f'<zentrade version="{ORDER_VERSION}" datetime="{_kst(world.now())}">{body}</zentrade>'
        )


class GentradeSheetOrderHandler(AdminHandler):
    """Test-only stand-in for uploading a purchase-order sheet on Zentrade's site (there is no
    API for it): registers an order under ``pordno`` so lookups can find it."""

    def post(self) -> None:
        body = self._body_dict()
        world = SupplierWorld(self.state)
        pordno = body.get("pordno")
        lines_in = body.get("lines")
        if not isinstance(pordno, str) or not pordno or not isinstance(lines_in, list):
            raise tornado.web.HTTPError(400, reason="pordno (string) and lines (list) required")
        lines = []
        for line in lines_in:
            if not isinstance(line, dict):
                raise tornado.web.HTTPError(400, reason="each line is an object")
            index = product_index(str(line.get("goodsno", "")))
            item = world.item(PLATFORM, index) if index is not None else None
            qty = line.get("qty", 1)
            if item is None or not isinstance(qty, int) or qty < 1:
                raise tornado.web.HTTPError(400, reason=f"unknown goodsno or bad qty: {line!r}")
            option = line.get("option")
            chosen = next((o for o in item.options if o.value == option), None)
            lines.append(
                SupplierOrderLine(
                    item.index,
                    qty,
                    str(option) if option else None,
                    item.price + (chosen.price_delta if chosen else 0),
                )
            )
        recipient: dict[str, Any] = dict(body.get("receiver") or {})
        order = world.create_order(PLATFORM, pordno, lines, recipient, "1{serial:012d}")
        world.record_purchase(pordno)
        self.write_json({"ordno": order.key, "pordno": pordno})


class GentradeAdminHandler(AdminHandler):
    """``POST /_sandbox/gentrade`` ``{"hostile_every": 50, "cut_after_products": 100}``."""

    def get(self) -> None:
        store = _store(self.state)
        self.write_json(
            {
                "hostile_every": store.hostile_every,
                "cut_after_products": store.cut_after_products,
                "feed_cache_hits": store.feed_cache_hits,
            }
        )

    def post(self) -> None:
        body = self._body_dict()
        store = _store(self.state)
        every = body.get("hostile_every", store.hostile_every)
        cut = body.get("cut_after_products", store.cut_after_products)
        if not isinstance(every, int) or every < 0:
            raise tornado.web.HTTPError(400, reason="hostile_every must be an int >= 0")
        if cut is not None and (not isinstance(cut, int) or cut < 0):
            raise tornado.web.HTTPError(400, reason="cut_after_products must be an int >= 0")
        with self.state.lock:
            store.hostile_every, store.cut_after_products = every, cut
        self.get()


def routes(state: SandboxState) -> list[RouteSpec]:
    return [
        (r"/gentrade/shop/proc/product_api\.php", GentradeFeedHandler, {"state": state}),
        (r"/gentrade/shop/proc/order_api\.php", GentradeOrderHandler, {"state": state}),
        (r"/_sandbox/gentrade/sheet_orders", GentradeSheetOrderHandler, {"state": state}),
        (r"/_sandbox/gentrade", GentradeAdminHandler, {"state": state}),
    ]
