"""gentrade sandbox: a Zentrade-style supplier feed in EUC-KR XML.

* ``GET /gentrade/shop/proc/product_api.php?id=<member id>&m_skey=<api key>``: the **whole
  catalog** as one XML document, ``<?xml version="1.0" encoding="euc-kr"?>``, no paging.
  It is streamed (chunked transfer encoding) in batches of products, so serving 100,000 products
  never holds the document in memory.
* ``/gentrade/shop/proc/order_api.php`` (same ``id``/``m_skey``): ``POST mode=order`` places a
  purchase order (``ordercode`` = our order key; repeated ``goodsno``/``qty``/``opt`` lines),
  ``GET mode=lookup&ordercode=...`` returns its orders with courier and invoice (tracking) number
  once shipped, ``POST mode=cancel&ordno=...`` cancels an unshipped one. Answers are EUC-KR XML.
* Wrong ``id``/``m_skey``: ``403`` with an XML ``<error>``.

Feed format, one ``<product>`` per item::

    <product code="500012" status="Y">            status: Y selling, N sold out (품절)
      <prdtname><![CDATA[[한빛] 심플 텀블러]]></prdtname>
      <baseinfo model="M-12345" madein="국산" category="50000805"
                categoryname="주방용품&gt;조리도구" updated="2024-12-20 13:05:00"/>   (KST)
      <price buyprice="12340" consumerprice="19900" deliveryfee="3000"/>
      <stock qty="120"/>
      <listimg url1="https://..." url2="" url3=""/>
      <option><![CDATA[색상:빨강^^0^^10|색상:파랑^^500^^0]]></option>
    </product>

Options are packed in one text field: entries separated by ``|``, each
``<option name>:<option value>^^<price delta KRW>^^<stock>``; empty when the product has none.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape, quoteattr

import tornado.iostream
import tornado.web

from dropship.sandbox.core import RouteSpec, SandboxHandler, SandboxState
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS
from dropship.sandbox.suppliers import SupplierOrder, SupplierOrderLine, SupplierWorld
from dropship.sandbox.world import CatalogItem

PLATFORM = "gentrade"
CODE_BASE = 500_000
FEED_BATCH = 500  # products per streamed chunk
KST = timezone(timedelta(hours=9))
XML_DECLARATION = '<?xml version="1.0" encoding="euc-kr"?>\n'


def product_code(index: int) -> str:
    return str(CODE_BASE + index)


def product_index(code: str) -> int | None:
    return int(code) - CODE_BASE if code.isdigit() and int(code) >= CODE_BASE else None


def _kst(value: datetime) -> str:
    return value.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S")


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def pack_options(item: CatalogItem) -> str:
    return "|".join(f"{o.name}:{o.value}^^{o.price_delta}^^{o.stock}" for o in item.options)


def product_xml(item: CatalogItem) -> str:
    images = list(item.images) + [""] * (3 - len(item.images))
    buyprice = "" if item.malformed else str(item.price)  # fault injection: unreadable price
    return (
        f'<product code="{product_code(item.index)}" status="{"N" if item.soldout else "Y"}">\n'
        f"<prdtname>{_cdata(item.name)}</prdtname>\n"
        f"<baseinfo model={quoteattr(item.model)} madein={quoteattr('국산')}"
        f" category={quoteattr(item.category_code)} categoryname={quoteattr(item.category_name)}"
        f" updated={quoteattr(_kst(item.updated_at))}/>\n"
        f'<price buyprice="{buyprice}" consumerprice="{item.fixed_price}"'
        f' deliveryfee="{item.shipping_fee}"/>\n'
        f'<stock qty="{item.stock}"/>\n'
        f"<listimg url1={quoteattr(images[0])} url2={quoteattr(images[1])}"
        f" url3={quoteattr(images[2])}/>\n"
        f"<option>{_cdata(pack_options(item))}</option>\n"
        "</product>\n"
    )


class _GentradeHandler(SandboxHandler):
    platform = PLATFORM

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # Legacy Korean supplier endpoints read forms and queries as EUC-KR (ASCII unchanged).
        try:
            return value.decode("euc_kr")
        except UnicodeDecodeError:
            raise tornado.web.HTTPError(400, reason=f"argument {name} is not EUC-KR") from None

    def write_xml(self, body: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/xml; charset=euc-kr")
        self.finish((XML_DECLARATION + body).encode("euc_kr"))

    def authorised(self) -> bool:
        expected = SANDBOX_CREDENTIALS[PLATFORM]
        if (
            self.get_argument("id", "") == expected["id"]
            and self.get_argument("m_skey", "") == expected["key"]
        ):
            return True
        self.write_xml(
            "<error><code>AUTH</code><message>인증 정보가 올바르지 않습니다</message></error>", 403
        )
        return False


class GentradeFeedHandler(_GentradeHandler):
    endpoint = "product_api"

    async def get(self) -> None:
        if not self.authorised():
            return
        world = SupplierWorld(self.state)
        self.set_header("Content-Type", "text/xml; charset=euc-kr")
        self.write(
            (
                XML_DECLARATION + f'<gentrade version="1.0" datetime="{_kst(world.now())}"'
                f' count="{world.size(PLATFORM)}">\n'
            ).encode("euc_kr")
        )
        batch: list[str] = []
        for item in world.items(PLATFORM):
            batch.append(product_xml(item))
            if len(batch) == FEED_BATCH:
                self.write("".join(batch).encode("euc_kr"))
                batch.clear()
                try:
                    await self.flush()  # back-pressure: wait until the client took the chunk
                except tornado.iostream.StreamClosedError:
                    return  # the client stopped reading (e.g. found what it looked for)
                if self._client_gone:
                    return
        self.write(("".join(batch) + "</gentrade>\n").encode("euc_kr"))
        self.finish()


def _order_xml(order: SupplierOrder, world: SupplierWorld) -> str:
    shipped = order.shipped(world.now(), world.tracking_delay_s)
    status = "취소" if order.cancelled else ("배송중" if shipped else "주문접수")
    return (
        f"<order ordno={quoteattr(order.key)} ordercode={quoteattr(order.note)}"
        f" status={quoteattr(status)} orderdate={quoteattr(_kst(order.created_at))}"
        f" delivery_company={quoteattr(order.carrier if shipped else '')}"
        f" invoice_no={quoteattr(order.tracking_number if shipped else '')}/>"
    )


class GentradeOrderHandler(_GentradeHandler):
    endpoint = "order_api"

    def _result(self, code: str, message: str, extra: str = "", status: int = 200) -> None:
        self.write_xml(
            f"<result><code>{code}</code><message>{escape(message)}</message>{extra}</result>",
            status,
        )

    def get(self) -> None:
        if not self.authorised():
            return
        if self.get_argument("mode", "") != "lookup":
            self._result("9000", "GET supports mode=lookup only", status=400)
            return
        ordercode = self.get_argument("ordercode", "")
        if not ordercode:
            self._result("9000", "ordercode is required", status=400)
            return
        world = SupplierWorld(self.state)
        orders = "".join(_order_xml(o, world) for o in world.orders(PLATFORM, ordercode))
        self.write_xml(f"<orders>{orders}</orders>")

    def post(self) -> None:
        if not self.authorised():
            return
        mode = self.get_argument("mode", "")
        if mode == "order":
            self._place()
        elif mode == "cancel":
            self._cancel()
        else:
            self._result("9000", "mode must be order or cancel", status=400)

    def _place(self) -> None:
        world = SupplierWorld(self.state)
        ordercode = self.get_argument("ordercode", "")
        codes = self.get_body_arguments("goodsno")
        quantities = self.get_body_arguments("qty")
        options = self.get_body_arguments("opt")
        if not ordercode or not codes or len(codes) != len(quantities):
            self._result(
                "9000", "ordercode, goodsno and qty (one per goodsno) are required", status=400
            )
            return
        options = options + [""] * (len(codes) - len(options))
        lines = []
        for code, qty, opt in zip(codes, quantities, options, strict=True):
            index = product_index(code)
            item = world.item(PLATFORM, index) if index is not None else None
            if item is None or not qty.isdigit() or int(qty) < 1:
                self._result("9001", f"unknown goodsno {code} or bad qty", status=400)
                return
            if item.soldout:
                self._result("9002", f"goodsno {code} is sold out (품절)", status=409)
                return
            chosen = item.option(*opt.split(":", 1)) if ":" in opt else None
            delta = chosen.price_delta if chosen else 0
            lines.append(SupplierOrderLine(item.index, int(qty), opt or None, item.price + delta))
        recipient = {
            name: self.get_body_argument(name, "")
            for name in ("rcv_name", "rcv_phone", "rcv_zip", "rcv_addr", "rcv_addr2", "memo")
        }
        order = world.create_order(PLATFORM, ordercode, lines, recipient, "G{serial:010d}")
        world.record_purchase(ordercode)
        self._result("0000", "OK", f"<ordno>{order.key}</ordno>")

    def _cancel(self) -> None:
        world = SupplierWorld(self.state)
        order = world.cancel(PLATFORM, self.get_argument("ordno", ""))
        if order is None:
            self._result("9001", "unknown ordno", status=404)
        elif not order.cancelled:
            self._result("9003", "already shipped (배송중): cannot cancel")
        else:
            self._result("0000", "OK")


def routes(state: SandboxState) -> list[RouteSpec]:
    return [
        (r"/gentrade/shop/proc/product_api\.php", GentradeFeedHandler, {"state": state}),
        (r"/gentrade/shop/proc/order_api\.php", GentradeOrderHandler, {"state": state}),
    ]
