"""gentrade connector: a Zentrade-style EUC-KR XML feed, parsed with bounded memory.

* Catalog: ``GET {base_url}/shop/proc/product_api.php?id=ID&m_skey=KEY`` answers the **whole
  catalog** as one XML document declared ``encoding="euc-kr"`` (no paging). We stream it:
  ``response.iter_content`` chunks go into an ``lxml.etree.XMLPullParser`` (libxml2 decodes
  EUC-KR itself; Python's expat-based ``xml.etree`` refuses multi-byte declared encodings) and
  every ``<product>`` is normalised, yielded, then cleared and detached from the root, so memory
  stays flat whatever the catalog size (see ``bench/gentrade_memory.py``, docs/BENCHMARKS.md).
* Options are packed in one text field: ``name:value^^price_delta^^stock`` entries joined by
  ``|`` (``색상:빨강^^0^^10|색상:파랑^^500^^0``), see :func:`parse_packed_options`.
* Orders: ``POST .../order_api.php`` ``mode=order`` with ``ordercode`` = our order key (looked up
  first with ``GET mode=lookup``, so a key is never bought twice), ``mode=cancel``; the lookup
  carries the courier and invoice number once shipped.

Account settings: credentials ``id`` and ``key`` (sent as ``id``/``m_skey``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests
from lxml import etree

from dropship.errors import PermanentError, TransientError
from dropship.platforms._supplier_common import KST, PRODUCT_DETAIL, SupplierConnectorBase
from dropship.platforms.cache import ResponseCache
from dropship.platforms.config import AccountSettings
from dropship.platforms.http import PlatformHttp
from dropship.platforms.interfaces import (
    InvalidRecord,
    ProductOption,
    PurchaseOrderRequest,
    PurchaseOrderResult,
    ShipmentInfo,
    SupplierProduct,
)

log = logging.getLogger(__name__)

SUPPLIER = "gentrade"
FEED_PATH = "/shop/proc/product_api.php"
ORDER_PATH = "/shop/proc/order_api.php"
CHUNK_BYTES = 64 * 1024
_SHIPPED = frozenset({"배송중", "배송완료"})
_CANCELLED = "취소"


def _parser(**kwargs: Any) -> Any:
    # No entity expansion, no network, no DTD: the feed is data, not a document to trust.
    return dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, **kwargs)


def iter_feed(chunks: Iterable[bytes]) -> Iterator[SupplierProduct | InvalidRecord]:
    """Parse a gentrade feed from byte chunks, one product at a time, in bounded memory."""
    parser = etree.XMLPullParser(events=("end",), tag="product", **_parser())
    try:
        for chunk in chunks:
            parser.feed(chunk)
            yield from _drain(parser)
        parser.close()
        yield from _drain(parser)
    except etree.XMLSyntaxError as exc:
        # A cut or corrupt document: the run is incomplete, retry it later.
        raise TransientError(f"gentrade feed is not well-formed XML: {exc.msg}") from None


def _drain(parser: Any) -> Iterator[SupplierProduct | InvalidRecord]:
    for _, element in parser.read_events():
        record = normalise_product(element)
        # Free what we parsed: the element's content, then the (now empty) element and any
        # earlier siblings still attached to the root. Without this the whole tree is kept.
        element.clear(keep_tail=False)
        parent = element.getparent()
        if parent is not None:
            while element.getprevious() is not None:
                del parent[0]
            parent.remove(element)
        yield record


def parse_packed_options(text: str | None) -> tuple[ProductOption, ...]:
    """``"색상:빨강^^0^^10|색상:파랑^^500^^0"`` -> options; ``ValueError`` names the bad entry."""
    if not text or not text.strip():
        return ()
    options = []
    for entry in text.strip().split("|"):
        parts = entry.split("^^")
        label = parts[0]
        name, sep, value = label.partition(":")
        if len(parts) != 3 or not sep or not name.strip() or not value.strip():
            raise ValueError(f"option entry {entry!r} is not 'name:value^^price_delta^^stock'")
        delta_text, stock_text = parts[1].strip(), parts[2].strip()
        try:
            delta, stock = int(delta_text), int(stock_text)
        except ValueError:
            raise ValueError(
                f"option entry {entry!r}: price delta and stock must be integers"
            ) from None
        if stock < 0:
            raise ValueError(f"option entry {entry!r}: negative stock")
        options.append(
            ProductOption(
                name=name.strip(),
                value=value.strip(),
                price_delta=delta,
                stock=stock,
                supplier_option_code=label.strip(),
            )
        )
    return tuple(options)


def _raw(element: Any) -> dict[str, Any]:
    """The product as a small JSON-able dict (for product_rejects / debugging)."""
    raw: dict[str, Any] = {"code": element.get("code"), "status": element.get("status")}
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        if child.attrib:
            raw[child.tag] = dict(child.attrib)
        else:
            raw[child.tag] = child.text or ""
    return raw


def _attr_int(element: Any, child: str, attribute: str) -> int | None:
    node = element.find(child)
    value = node.get(attribute) if node is not None else None
    if value is None or not value.strip().lstrip("-").isdigit():
        return None
    return int(value)


def _kst_datetime(text: str) -> datetime | None:
    """``"2024-12-20 13:05:00"`` (KST) -> aware datetime; None when unreadable. (Sliced by hand:
    ``strptime`` is the slowest step of the per-product work.)"""
    try:
        return datetime(
            int(text[0:4]), int(text[5:7]), int(text[8:10]),
            int(text[11:13]), int(text[14:16]), int(text[17:19]), tzinfo=KST,
        )  # fmt: skip
    except ValueError:
        return None


def normalise_product(element: Any) -> SupplierProduct | InvalidRecord:
    raw = _raw(element)
    code = (element.get("code") or "").strip()
    if not code:
        return InvalidRecord(SUPPLIER, None, "product has no code attribute", raw=raw)

    def invalid(reason: str) -> InvalidRecord:
        return InvalidRecord(SUPPLIER, code, reason, raw=raw)

    name = (element.findtext("prdtname") or "").strip()
    if not name:
        return invalid("prdtname is empty")
    price = _attr_int(element, "price", "buyprice")
    if price is None or price < 0:
        return invalid("price/@buyprice is missing or not a non-negative integer")
    fee = _attr_int(element, "price", "deliveryfee")
    if fee is None or fee < 0:
        fee = 0
    stock = _attr_int(element, "stock", "qty")
    if stock is None or stock < 0:
        return invalid("stock/@qty is missing or not a non-negative integer")
    try:
        options = parse_packed_options(element.findtext("option"))
    except ValueError as exc:
        return invalid(str(exc))
    flag = (element.get("status") or "").strip().upper()
    if flag == "Y":
        status = "active" if stock > 0 else "soldout"
    elif flag == "N":
        status = "soldout"
    else:
        status = "gone"
    base = element.find("baseinfo")
    updated_at = None
    category = None
    if base is not None:
        category = base.get("category") or None
        updated_at = _kst_datetime(base.get("updated") or "")
    images_node = element.find("listimg")
    images: tuple[str, ...] = ()
    if images_node is not None:
        images = tuple(
            url for key in ("url1", "url2", "url3") if (url := (images_node.get(key) or "").strip())
        )
    return SupplierProduct(
        supplier=SUPPLIER,
        supplier_sku=code,
        name=name,
        cost_price=price,
        shipping_fee=fee,
        stock=stock,
        status=status,  # type: ignore[arg-type]
        category=category,
        images=images,
        options=options,
        updated_at=updated_at,
        raw=raw,
    )


def _xml(content: bytes, what: str) -> Any:
    try:
        return etree.fromstring(content, parser=etree.XMLParser(**_parser()))
    except etree.XMLSyntaxError:
        raise TransientError(f"gentrade {what}: response is not well-formed XML") from None


class GentradeConnector(SupplierConnectorBase):
    """:class:`~dropship.platforms.interfaces.SupplierConnector` for the gentrade feed."""

    supplier = SUPPLIER

    def __init__(
        self,
        *,
        account: AccountSettings,
        http: PlatformHttp,
        cache: ResponseCache | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        super().__init__(account=account, http=http, cache=cache)
        self.chunk_bytes = chunk_bytes

    def _auth(self) -> dict[str, str]:
        return {"id": self.account.secret("id"), "m_skey": self.account.secret("key")}

    # ------------------------------------------------------------------ catalog

    def iter_products(
        self, since: datetime | None = None
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        """The whole feed, streamed. ``since`` is ignored: the feed has no filter (unchanged
        rows cost nothing in the collect merge)."""
        response = self.http.get(FEED_PATH, params=self._auth(), stream=True)
        try:
            yield from iter_feed(self._chunks(response))
        finally:
            response.close()  # also when the caller stops early: give the connection back

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_content(chunk_size=self.chunk_bytes)
        except (requests.ConnectionError, requests.Timeout) as exc:
            # ChunkedEncodingError is a ConnectionError: the feed was cut mid-way.
            raise TransientError(f"gentrade feed interrupted: {type(exc).__name__}") from None

    def get_product(self, supplier_sku: str) -> SupplierProduct | None:
        """gentrade has no per-product endpoint: scan the feed (cached per product for the
        cache TTL, so a burst of lookups costs one feed download)."""
        if self.cache is not None:
            cached = self.cache.get(PRODUCT_DETAIL, supplier_sku)
            if cached is not None:
                return _from_cached(cached)
        found: SupplierProduct | None = None
        for record in self.iter_products():
            if isinstance(record, SupplierProduct):
                if self.cache is not None:
                    self.cache.set(PRODUCT_DETAIL, record.supplier_sku, _to_cached(record))
                if record.supplier_sku == supplier_sku:
                    found = record
                    if self.cache is None:
                        break
            elif record.supplier_sku == supplier_sku:
                raise self.malformed_error(record)
        return found

    # ------------------------------------------------------------------ orders

    def _lookup(self, order_key: str) -> list[dict[str, str]]:
        response = self.http.get(
            ORDER_PATH, params={**self._auth(), "mode": "lookup", "ordercode": order_key}
        )
        root = _xml(response.content, "order lookup")
        return [
            dict(node.attrib) for node in root.iter("order") if node.get("ordercode") == order_key
        ]

    def place_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        existing = self._lookup(request.order_key)
        if existing:
            log.info("gentrade: order %s already placed; not buying again", request.order_key)
            return PurchaseOrderResult(
                order_key=request.order_key,
                supplier_order_ids=tuple(o["ordno"] for o in existing),
                already_existed=True,
                status=existing[0].get("status"),
            )
        return self._create_order(request)

    def _create_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        """``mode=order``, sent once and without a look-up: callers use :meth:`place_order`."""
        receiver = request.receiver
        form: list[tuple[str, str]] = [
            *self._auth().items(),
            ("mode", "order"),
            ("ordercode", request.order_key),
        ]
        for line in request.lines:
            form += [
                ("goodsno", line.supplier_sku),
                ("qty", str(line.quantity)),
                ("opt", line.option or ""),
            ]
        form += [
            ("rcv_name", receiver.name),
            ("rcv_phone", receiver.phone),
            ("rcv_zip", receiver.zipcode),
            ("rcv_addr", receiver.address),
            ("rcv_addr2", receiver.address_detail),
            ("memo", request.note or receiver.message),
        ]
        # Sent once: a POST that timed out is not repeated (the task retry looks it up first).
        # The form is sent in EUC-KR, the feed's charset.
        body = "&".join(f"{quote(k)}={quote(v.encode('euc_kr', 'replace'))}" for k, v in form)
        response = self.http.post(
            ORDER_PATH,
            data=body,
            idempotent=False,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=euc-kr"},
            ok_statuses=(400, 404, 409),
        )
        root = _xml(response.content, "order")
        code = root.findtext("code") or ""
        if code != "0000":
            # The message may echo our input; keep only the code.
            raise PermanentError(
                f"gentrade order {request.order_key} refused: code {code or '?'}"
                f" (HTTP {response.status_code})"
            )
        return PurchaseOrderResult(
            order_key=request.order_key,
            supplier_order_ids=(root.findtext("ordno") or "",),
            already_existed=False,
            status="주문접수",
        )

    def get_shipments(self, order_keys: Sequence[str]) -> list[ShipmentInfo]:
        shipments = []
        for key in dict.fromkeys(order_keys):
            for order in self._lookup(key):
                number = (order.get("invoice_no") or "").strip()
                if number and order.get("status") != _CANCELLED:
                    shipments.append(
                        ShipmentInfo(
                            order_key=key,
                            carrier=order.get("delivery_company") or "",
                            tracking_number=number,
                            supplier_order_id=order.get("ordno"),
                        )
                    )
        return shipments

    def cancel_order(self, order_key: str, reason: str = "") -> bool:
        orders = self._lookup(order_key)
        if any(o.get("status") in _SHIPPED for o in orders):
            return False
        for order in orders:
            if order.get("status") == _CANCELLED:
                continue
            response = self.http.post(
                ORDER_PATH,
                data={**self._auth(), "mode": "cancel", "ordno": order["ordno"]},
                idempotent=True,
                ok_statuses=(404,),
            )
            code = _xml(response.content, "cancel").findtext("code") or ""
            if code == "9003":
                return False  # shipped meanwhile
            if code != "0000":
                raise PermanentError(f"gentrade cancel of {order_key} refused: code {code or '?'}")
        return True


def _to_cached(product: SupplierProduct) -> dict[str, Any]:
    return {
        "sku": product.supplier_sku,
        "name": product.name,
        "cost": product.cost_price,
        "fee": product.shipping_fee,
        "stock": product.stock,
        "status": product.status,
        "category": product.category,
        "images": list(product.images),
        "options": [
            [o.name, o.value, o.price_delta, o.stock, o.supplier_option_code]
            for o in product.options
        ],
        "updated_at": product.updated_at.isoformat() if product.updated_at else None,
    }


def _from_cached(data: dict[str, Any]) -> SupplierProduct:
    return SupplierProduct(
        supplier=SUPPLIER,
        supplier_sku=data["sku"],
        name=data["name"],
        cost_price=data["cost"],
        shipping_fee=data["fee"],
        stock=data["stock"],
        status=data["status"],
        category=data["category"],
        images=tuple(data["images"]),
        options=tuple(ProductOption(*o) for o in data["options"]),
        updated_at=datetime.fromisoformat(data["updated_at"]) if data["updated_at"] else None,
    )
