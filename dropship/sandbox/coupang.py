"""Coupang Wing Open API, the subset the dropship system uses (served under ``/coupang``).

Faithful to the real gateway where it matters to a client:

* **Auth**: every call carries ``Authorization: CEA algorithm=HmacSHA256, access-key=..,
  signed-date=yyMMdd'T'HHmmss'Z', signature=..`` where the signature is
  ``hex(HMAC-SHA256(secret_key, signed-date + METHOD + path + query))``; ``path`` is the path
  without our ``/coupang`` prefix and ``query`` the raw query string without ``?``. A bad
  signature, an unknown access key or a signed-date more than
  ``SandboxConfig.coupang_signature_max_skew_s`` away from the *wall* clock is a ``401``.
  (The world clock offset that tests add is business time, not transport time.)
* **Products** (``/v2/providers/seller_api/apis/api/v1/marketplace``): ``seller-products``
  create / get, lookup by ``external-vendor-sku-codes/{code}``, and per vendor item
  ``prices/{price}``, ``quantities/{qty}``, ``sales/stop`` / ``sales/resume``, ``inventories``
  (read: ``amountInStock``, ``salePrice``, ``onSale``).
  Like the real API, a second product carrying an ``externalVendorSku`` the vendor already uses
  is created all the same (a duplicate listing); the lookup then answers every product with
  that key, oldest first. ``counts.listings`` counts products per key, so a client that
  registers twice shows up as 2.
* **Orders** (``/v2/providers/openapi/apis/api/v4/vendors/{vendorId}``): ``ordersheets`` with
  ``createdAtFrom``/``createdAtTo`` (daily ``yyyy-MM-dd`` or ``searchType=timeFrame`` with
  ``yyyy-MM-ddTHH:mm``, KST), ``status``, ``maxPerPage`` (<= 50) and ``nextToken`` paging;
  ``ordersheets/{shipmentBoxId}``; ``ordersheets/acknowledgement`` (<= 50 ids, PUT or PATCH)
  moves **only ACCEPT** boxes to INSTRUCT (others: ``responseCode`` 99 and the document's
  message); ``orders/invoices`` takes invoices **only for INSTRUCT** boxes (others:
  ``INVALID_STATUS``, ``retryRequired: false``), one result per box. A blind re-send after a lost
  answer is therefore refused, as on Coupang. ``code`` is 200 (number) in lists and "200" elsewhere,
  as the documents' samples show.
* **Images**: creating a product downloads every ``vendorPath`` (asynchronously, 10 s timeout,
  5 MB at most) and decodes it in a worker thread; the product is refused when one cannot be
  fetched or decoded, is not JPG/PNG, is outside 100-5000 px, or a REPRESENTATION image is not
  square; a vendorPath is at most 150 characters (``counts.coupang_image_fetches`` per URL).
* **Throttling** per vendor: the core's token bucket answers excess with 429; sustained excess
  blocks the vendor for minutes of world time (:class:`ThrottlePolicy`,
  ``/_sandbox/coupang/throttle``).

Orders arrive by themselves at ``SandboxConfig.order_rate_per_min`` (deterministic Poisson
arrivals from the seed, for products the vendor has listed), and tests create them on demand with
``POST /_sandbox/coupang/orders``. Faults: ``duplicate_order_rate`` re-delivers the last order of
a page at the start of the next one; ``malformed_rate`` drops a required field from an order;
``drop_suspensions`` (a count) answers that many ``sales/stop`` or ``quantities/0`` requests as
done without applying them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import random
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import tornado.httpclient
import tornado.web

from dropship.sandbox._market_common import (
    KST,
    ForgetAdminHandler,
    MarketHandler,
    buyer_cancels,
    due_arrivals,
    due_cancels,
    fake_name,
    parse_order_batch,
)
from dropship.sandbox.core import AdminHandler, RateDecision, RouteSpec, SandboxState
from dropship.sandbox.credentials import accounts_for
from dropship.sandbox.images import inspect_image

PLATFORM = "coupang"
SELLER_API = "/v2/providers/seller_api/apis/api/v1/marketplace"
OPENAPI_V4 = "/v2/providers/openapi/apis/api/v4/vendors"
ORDER_STATUSES = (
    "ACCEPT",
    "INSTRUCT",
    "DEPARTURE",
    "DELIVERING",
    "FINAL_DELIVERY",
    "NONE_TRACKING",
)
MAX_PER_PAGE = 50
MAX_ACK_IDS = 50
# Coupang's deliveryCompanyCode table (developer site "택배사 코드", crawl in
# halion125-co/populer125 docs/coupang_openapi_ko.md; invoice-upload-processing.document.ts), with
# the names order sheets show in ``deliveryCompanyName``. Struck-through (merged or closed)
# carriers such as KOREX are absent: an invoice naming them is refused.
DELIVERY_COMPANIES: dict[str, str] = {
    "HYUNDAI": "롯데택배",
    "KGB": "로젠택배",
    "EPOST": "우체국",
    "HANJIN": "한진택배",
    "CJGLS": "CJ 대한통운",
    "KDEXP": "경동택배",
    "DIRECT": "업체직송",
    "ILYANG": "일양택배",
    "CHUNIL": "천일특송",
    "AJOU": "아주택배",
    "CSLOGIS": "SC로지스",
    "DAESIN": "대신택배",
    "CVS": "CVS택배",
    "HDEXP": "합동택배",
    "DHL": "DHL",
    "UPS": "UPS",
    "FEDEX": "FEDEX",
    "REGISTPOST": "우편등기",
    "EMS": "우체국 EMS",
    "TNT": "TNT",
    "USPS": "USPS",
    "KUNYOUNG": "건영택배",
    "SLX": "SLX택배",
    "HONAM": "호남택배",
}
# Wording of the acknowledgement document (product-preparation-processing.document.ts) for a box
# that is not in ACCEPT, and of the invoice document's result-code table.
NOT_ACCEPT_MESSAGE = "배송상태를 변경할 수 없습니다. 주문내역을 확인해주세요."
INVALID_STATUS_MESSAGE = "배송진행상태가 유효하지 않습니다."

_AUTH_RE = re.compile(
    r"^CEA algorithm=(?P<algorithm>[^,]+), access-key=(?P<access_key>[^,]+), "
    r"signed-date=(?P<signed_date>[^,]+), signature=(?P<signature>[0-9a-fA-F]+)$"
)
_STREETS = ("테헤란로", "세종대로", "올림픽로", "해운대로", "중앙대로", "월드컵로")
_CITIES = ("서울특별시 강남구", "서울특별시 종로구", "부산광역시 해운대구", "대전광역시 서구")


def signed_date_to_datetime(signed_date: str) -> datetime:
    """``yyMMdd'T'HHmmss'Z'`` (UTC) -> aware datetime; ValueError when malformed."""
    return datetime.strptime(signed_date, "%y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def coupang_signature(secret_key: str, signed_date: str, method: str, path: str, query: str) -> str:
    message = f"{signed_date}{method}{path}{query}"
    return hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).hexdigest()


def kst(value: datetime) -> str:
    """Coupang renders times in KST without an offset: ``2025-01-01T10:00:00``."""
    return value.astimezone(KST).strftime("%Y-%m-%dT%H:%M:%S")


def fake_receiver(rng: random.Random) -> dict[str, Any]:
    return {
        "name": fake_name(rng),
        "safeNumber": f"0502-{rng.randrange(1000, 9999)}-{rng.randrange(1000, 9999)}",
        "receiverNumber": None,
        "addr1": f"{rng.choice(_CITIES)} {rng.choice(_STREETS)} {rng.randrange(1, 500)}",
        "addr2": f"{rng.randrange(101, 1999)}호",
        "postCode": f"{rng.randrange(10000, 63999):05d}",
    }


# --------------------------------------------------------------------------- store


@dataclass
class CoupangItem:
    vendor_item_id: int
    seller_product_item_id: int
    item_name: str
    original_price: int
    sale_price: int
    quantity: int
    external_vendor_sku: str | None
    on_sale: bool = True
    # The option the item is: [{"attributeTypeName", "attributeValueName"}], as posted.
    attributes: list[dict[str, str]] = field(default_factory=list)

    def render(self) -> dict[str, Any]:
        return {
            "sellerProductItemId": self.seller_product_item_id,
            "vendorItemId": self.vendor_item_id,
            "itemName": self.item_name,
            "attributes": [dict(a) for a in self.attributes],
            "originalPrice": self.original_price,
            "salePrice": self.sale_price,
            "maximumBuyCount": self.quantity,
            "externalVendorSku": self.external_vendor_sku,
            "saleStatus": "ON_SALE" if self.on_sale else "STOP_SALE",
        }


@dataclass
class CoupangProduct:
    seller_product_id: int
    vendor_id: str
    name: str
    display_category_code: int
    brand: str
    created_at: datetime
    items: list[CoupangItem]
    status_name: str = "승인완료"

    def render(self) -> dict[str, Any]:
        return {
            "sellerProductId": self.seller_product_id,
            "sellerProductName": self.name,
            "displayCategoryCode": self.display_category_code,
            "vendorId": self.vendor_id,
            "brand": self.brand,
            "statusName": self.status_name,
            "createdAt": kst(self.created_at),
            "items": [item.render() for item in self.items],
        }


@dataclass
class OrderSheet:
    shipment_box_id: int
    order_id: int
    vendor_id: str
    ordered_at: datetime
    status: str
    lines: list[dict[str, Any]]
    receiver: dict[str, Any]
    orderer_name: str
    shipping_price: int = 0
    delivery_company_code: str | None = None
    invoice_number: str | None = None
    invoice_uploaded_at: datetime | None = None
    # Items held by a buyer's cancel request (출고중지요청) and items cancelled.
    hold_for_cancel: int = 0
    cancelled_count: int = 0

    def render(self) -> dict[str, Any]:
        return {
            "shipmentBoxId": self.shipment_box_id,
            "orderId": self.order_id,
            "orderedAt": kst(self.ordered_at),
            "paidAt": kst(self.ordered_at + timedelta(seconds=5)),
            "status": self.status,
            "orderer": {
                "name": self.orderer_name,
                "email": None,
                "safeNumber": None,
                "ordererNumber": None,
            },
            "receiver": dict(self.receiver),
            "shippingPrice": self.shipping_price,
            "remotePrice": 0,
            "remoteArea": False,
            "parcelPrintMessage": "문 앞에 놓아주세요",
            "splitShipping": False,
            "ableSplitShipping": False,
            "orderItems": [_render_line(line, self) for line in self.lines],
            "overseaShippingInfoDto": {
                "personalCustomsClearanceCode": None,
                "ordererSsn": "",
                "ordererPhoneNumber": "",
            },
            # The order sheet names the carrier (e.g. "CJ 대한통운"), not its code.
            "deliveryCompanyName": (
                DELIVERY_COMPANIES.get(self.delivery_company_code, self.delivery_company_code)
                if self.delivery_company_code
                else None
            ),
            "invoiceNumber": self.invoice_number,
            "inTrasitDateTime": None,  # (sic) Coupang's spelling
            "deliveredDate": None,
            "refer": "PC웹",
            "shipmentType": "THIRD_PARTY",
        }


def _render_line(line: dict[str, Any], sheet: OrderSheet) -> dict[str, Any]:
    """One ``orderItems`` entry with the documented fields around the ones we keep."""
    uploaded = sheet.invoice_uploaded_at
    return {
        "vendorItemPackageId": 0,
        "vendorItemPackageName": line["sellerProductName"],
        "productId": line["sellerProductId"] + 7_000_000_000,
        **line,
        "etcInfoHeader": None,
        "etcInfoValue": None,
        "etcInfoValues": [],
        "firstSellerProductItemName": line["sellerProductItemName"],
        "cancelCount": sheet.cancelled_count,
        "holdCountForCancel": sheet.hold_for_cancel,
        "estimatedShippingDate": (sheet.ordered_at + timedelta(days=2))
        .astimezone(KST)
        .strftime("%Y-%m-%d"),
        "plannedShippingDate": "",
        "invoiceNumberUploadDate": kst(uploaded) if uploaded else "",
        "extraProperties": {},
        "pricingBadge": False,
        "usedProduct": False,
        "confirmDate": None,
        "deliveryChargeTypeName": "무료" if sheet.shipping_price == 0 else "유료",
        "canceled": sheet.status == "CANCELED",
    }


# A cancel on a box not yet shipped waits for the seller's 출고중지완료 (stoppedShipment); on a
# shipped box it becomes a return request (반품접수).
RELEASE_STOP_UNCHECKED = "RELEASE_STOP_UNCHECKED"
RETURNS_UNCHECKED = "RETURNS_UNCHECKED"
# Return-request list ``status`` values of the document (RU 출고중지요청, UC 반품접수,
# CC 반품완료, PR 쿠팡확인요청): required unless ``cancelType=CANCEL``.
RETURN_LIST_STATUSES = {"RU": RELEASE_STOP_UNCHECKED, "UC": RETURNS_UNCHECKED}


@dataclass
class CancelReceipt:
    receipt_id: int
    vendor_id: str
    order_id: int
    shipment_box_id: int
    vendor_item_ids: list[int]
    receipt_type: str  # CANCEL or RETURN
    status: str
    created_at: datetime
    count: int = 1
    modified_at: datetime | None = None

    def render(self, sheet: OrderSheet | None) -> dict[str, Any]:
        lines = {int(line["vendorItemId"]): line for line in (sheet.lines if sheet else [])}
        return {
            "receiptId": self.receipt_id,
            "orderId": self.order_id,
            "paymentId": self.order_id + 5_000_000_000,
            "receiptType": self.receipt_type,
            "receiptStatus": self.status,
            "createdAt": kst(self.created_at),
            "modifiedAt": kst(self.modified_at or self.created_at),
            "requesterName": sheet.orderer_name if sheet else None,
            "cancelReasonCategory1": "고객변심",
            "cancelReasonCategory2": "단순변심",
            "cancelReason": "",
            "cancelCountSum": self.count * len(self.vendor_item_ids),
            "returnDeliveryId": None,
            "returnDeliveryType": "연동택배",
            "releaseStopStatus": "미처리" if self.status == RELEASE_STOP_UNCHECKED else "처리",
            "returnItems": [
                {
                    "vendorItemPackageId": 0,
                    "vendorItemId": item,
                    "vendorItemName": (lines.get(item) or {}).get("vendorItemName"),
                    "shipmentBoxId": self.shipment_box_id,
                    "purchaseCount": (lines.get(item) or {}).get("shippingCount", 1),
                    "cancelCount": self.count,
                    "releaseStatus": "N" if self.receipt_type == "CANCEL" else "Y",
                }
                for item in self.vendor_item_ids
            ],
        }


@dataclass
class ThrottlePolicy:
    """How the sandbox blocks a vendor, after Coupang's rate-limit notices (developer site
    articles 20414599556889 and 23902034110617, 2023-10-12; crawl in halion125-co/populer125
    docs/coupang_openapi_ko.md): the limit applies per vendorId ("초당 10회 이상 ... 판매자ID"),
    excess is answered 429 "Too Many Requests" and blocked, and the block is lifted "within
    minutes to tens of minutes" once the call rate is back within the limit.

    The notices give no exact figures for "sustained" or for the block, so the sandbox decides
    (docs/PLATFORMS.md): ``excess_calls`` refused calls within ``excess_window_s`` seconds (wall
    clock: the rate is about real requests) block the vendor for ``block_s`` seconds of *world*
    time (tests move past it with the sandbox clock); a call during the block is refused too and,
    if such calls are themselves excessive, extends the block."""

    excess_calls: int = 20
    excess_window_s: float = 10.0
    block_s: float = 300.0

    def __post_init__(self) -> None:
        if self.excess_calls < 1 or self.excess_window_s <= 0 or self.block_s < 0:
            raise ValueError(
                "throttle needs excess_calls >= 1, excess_window_s > 0 and block_s >= 0"
            )


@dataclass
class CoupangStore:
    created_at: datetime
    products: dict[int, CoupangProduct] = field(default_factory=dict)
    items: dict[int, int] = field(default_factory=dict)  # vendorItemId -> sellerProductId
    # (vendor, sku) -> sellerProductIds carrying it, oldest first (duplicates are allowed)
    by_sku: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    orders: dict[int, OrderSheet] = field(default_factory=dict)  # shipmentBoxId -> sheet
    next_product_id: int = 1_000_000_001
    next_item_id: int = 70_000_000_001
    next_order_id: int = 20_000_000_001
    next_box_id: int = 600_000_001
    # Cancellation / return receipts (returnRequests), receiptId -> receipt
    receipts: dict[int, CancelReceipt] = field(default_factory=dict)
    next_receipt_id: int = 300_000_001
    arrivals_until: datetime | None = None
    # Buyers' cancel requests still to come: (world time, shipmentBoxId)
    pending_cancels: list[tuple[datetime, str]] = field(default_factory=list)
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    # vendor -> wall-clock (monotonic) times of its recently refused calls
    refused: dict[str, deque[float]] = field(default_factory=dict)
    blocked_until: dict[str, datetime] = field(default_factory=dict)  # vendor -> world time

    def __post_init__(self) -> None:
        self.arrivals_until = self.created_at


class CoupangWorld:
    """Coupang's mutable data inside one :class:`SandboxState` (dropped by reset)."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.store = state.platform_store(PLATFORM, lambda: CoupangStore(created_at=state.now()))

    # ---- products

    def create_product(self, vendor_id: str, body: dict[str, Any]) -> CoupangProduct:
        items_in = body["items"]
        with self.state.lock:
            store = self.store
            product_id = store.next_product_id
            store.next_product_id += 1
            items: list[CoupangItem] = []
            for item in items_in:
                item_id = store.next_item_id
                store.next_item_id += 1
                items.append(
                    CoupangItem(
                        vendor_item_id=item_id,
                        seller_product_item_id=item_id + 5_000_000_000,
                        item_name=str(item["itemName"]),
                        original_price=int(item.get("originalPrice") or item["salePrice"]),
                        sale_price=int(item["salePrice"]),
                        quantity=int(item.get("maximumBuyCount") or 0),
                        external_vendor_sku=item.get("externalVendorSku") or None,
                        attributes=[
                            {
                                "attributeTypeName": str(a.get("attributeTypeName") or ""),
                                "attributeValueName": str(a.get("attributeValueName") or ""),
                            }
                            for a in item.get("attributes") or []
                            if isinstance(a, dict)
                        ],
                    )
                )
                store.items[item_id] = product_id
            product = CoupangProduct(
                seller_product_id=product_id,
                vendor_id=vendor_id,
                name=str(body["sellerProductName"]),
                display_category_code=int(body["displayCategoryCode"]),
                brand=str(body.get("brand") or ""),
                created_at=self.state.now(),
                items=items,
            )
            store.products[product_id] = product
            # One listing per distinct key (every item of a product may carry the same one).
            skus = sorted({i.external_vendor_sku for i in items if i.external_vendor_sku})
            for sku in skus:
                store.by_sku.setdefault((vendor_id, sku), []).append(product_id)
        for sku in skus:
            self.state.count("listings", sku)
        return product

    def product(self, vendor_id: str, product_id: int) -> CoupangProduct | None:
        with self.state.lock:
            product = self.store.products.get(product_id)
            return product if product is not None and product.vendor_id == vendor_id else None

    def products_by_sku(self, vendor_id: str, sku: str) -> list[CoupangProduct]:
        """Every product of the vendor carrying ``sku``, oldest first."""
        with self.state.lock:
            return [self.store.products[i] for i in self.store.by_sku.get((vendor_id, sku), [])]

    def vendor_item(self, vendor_id: str, vendor_item_id: int) -> CoupangItem | None:
        with self.state.lock:
            product_id = self.store.items.get(vendor_item_id)
            product = None if product_id is None else self.store.products[product_id]
            if product is None or product.vendor_id != vendor_id:
                return None
            return next(i for i in product.items if i.vendor_item_id == vendor_item_id)

    # ---- throttling (see ThrottlePolicy)

    def blocked_for_s(self, vendor_id: str) -> float:
        """Seconds (world time) the vendor stays blocked; 0 when it is not."""
        with self.state.lock:
            until = self.store.blocked_until.get(vendor_id)
            if until is None:
                return 0.0
            left = (until - self.state.now()).total_seconds()
            if left <= 0:
                del self.store.blocked_until[vendor_id]
                return 0.0
            return left

    def note_refused(self, vendor_id: str) -> float:
        """Record a refused call; start (or extend) the block when refusals are sustained.
        Returns the seconds the vendor is now blocked for (0: not blocked)."""
        with self.state.lock:
            policy = self.store.throttle
            now = time.monotonic()
            refused = self.store.refused.setdefault(vendor_id, deque())
            refused.append(now)
            while refused and refused[0] < now - policy.excess_window_s:
                refused.popleft()
            if len(refused) >= policy.excess_calls and policy.block_s > 0:
                self.store.blocked_until[vendor_id] = self.state.now() + timedelta(
                    seconds=policy.block_s
                )
                refused.clear()
                self.state.count("coupang_blocks", vendor_id)
            return self.blocked_for_s(vendor_id)

    # ---- orders

    def add_order(
        self,
        vendor_id: str,
        ordered_at: datetime,
        rng: random.Random,
        status: str = "ACCEPT",
        product: CoupangProduct | None = None,
        quantity: int = 1,
    ) -> OrderSheet:
        with self.state.lock:
            store = self.store
            if product is not None:
                item = product.items[rng.randrange(len(product.items))]
                line = {
                    "vendorItemId": item.vendor_item_id,
                    "vendorItemName": f"{product.name}, {item.item_name}",
                    "sellerProductId": product.seller_product_id,
                    "sellerProductName": product.name,
                    "sellerProductItemName": item.item_name,
                    "externalVendorSkuCode": item.external_vendor_sku,
                    "shippingCount": quantity,
                    "salesPrice": item.sale_price,
                    "orderPrice": item.sale_price * quantity,
                    "discountPrice": 0,
                }
            else:  # an order for a product listed outside this system
                vendor_item_id = 79_000_000_000 + rng.randrange(1_000_000)
                price = rng.randrange(1_000, 90_000, 10)
                line = {
                    "vendorItemId": vendor_item_id,
                    "vendorItemName": "외부 등록 상품",
                    "sellerProductId": 1_999_000_000 + rng.randrange(1_000_000),
                    "sellerProductName": "외부 등록 상품",
                    "sellerProductItemName": "단일상품",
                    "externalVendorSkuCode": None,
                    "shippingCount": quantity,
                    "salesPrice": price,
                    "orderPrice": price * quantity,
                    "discountPrice": 0,
                }
            receiver = fake_receiver(rng)
            sheet = OrderSheet(
                shipment_box_id=store.next_box_id,
                order_id=store.next_order_id,
                vendor_id=vendor_id,
                ordered_at=ordered_at,
                status=status,
                lines=[line],
                receiver=receiver,
                orderer_name=receiver["name"],
            )
            store.next_box_id += 1
            store.next_order_id += 1
            store.orders[sheet.shipment_box_id] = sheet
            return sheet

    def materialise_arrivals(self) -> None:
        """Create the orders that arrived (world clock) since the last look, for listed products."""
        with self.state.lock:
            products = sorted(self.store.products.values(), key=lambda p: p.seller_product_id)
            for at, rng, product in due_arrivals(self.state, PLATFORM, self.store, products):
                sheet = self.add_order(product.vendor_id, at, rng, product=product)
                cancel_at = buyer_cancels(self.state, PLATFORM, at)
                if cancel_at is not None:
                    self.store.pending_cancels.append((cancel_at, str(sheet.shipment_box_id)))
            for box_id in due_cancels(self.state, self.store.pending_cancels):
                with contextlib.suppress(
                    ValueError
                ):  # cancelled meanwhile: nothing left to ask for
                    self.request_cancel(int(box_id))

    def orders_between(
        self, vendor_id: str, status: str, start: datetime, end: datetime
    ) -> list[OrderSheet]:
        with self.state.lock:
            found = [
                o
                for o in self.store.orders.values()
                if o.vendor_id == vendor_id and o.status == status and start <= o.ordered_at < end
            ]
        return sorted(found, key=lambda o: (o.ordered_at, o.shipment_box_id))

    def order(self, vendor_id: str, box_id: int) -> OrderSheet | None:
        with self.state.lock:
            sheet = self.store.orders.get(box_id)
            return sheet if sheet is not None and sheet.vendor_id == vendor_id else None

    def request_cancel(self, box_id: int) -> CancelReceipt:
        """The buyer asks to cancel a box: a CANCEL receipt waiting for the seller while it is
        not shipped (ACCEPT/INSTRUCT), a RETURN receipt once it is."""
        with self.state.lock:
            sheet = self.store.orders.get(box_id)
            if sheet is None or sheet.status == "CANCELED":
                raise ValueError(f"no cancellable shipment box {box_id}")
            shipped = sheet.status not in ("ACCEPT", "INSTRUCT")
            receipt = CancelReceipt(
                receipt_id=self.store.next_receipt_id,
                vendor_id=sheet.vendor_id,
                order_id=sheet.order_id,
                shipment_box_id=box_id,
                vendor_item_ids=[int(line["vendorItemId"]) for line in sheet.lines],
                receipt_type="RETURN" if shipped else "CANCEL",
                status=RETURNS_UNCHECKED if shipped else RELEASE_STOP_UNCHECKED,
                created_at=self.state.now(),
            )
            self.store.next_receipt_id += 1
            self.store.receipts[receipt.receipt_id] = receipt
            if not shipped:
                sheet.hold_for_cancel = receipt.count
            return receipt

    def receipts_between(
        self, vendor_id: str, receipt_type: str, status: str | None, start: datetime, end: datetime
    ) -> list[CancelReceipt]:
        with self.state.lock:
            found = [
                r
                for r in self.store.receipts.values()
                if r.vendor_id == vendor_id
                and r.receipt_type == receipt_type
                and (status is None or r.status == status)
                and start <= r.created_at < end
            ]
        return sorted(found, key=lambda r: (r.created_at, r.receipt_id))


# --------------------------------------------------------------------------- handlers


class CoupangHandler(MarketHandler):
    """Verifies the CEA HMAC signature before any endpoint runs."""

    platform = PLATFORM
    vendor_id: str
    world: CoupangWorld

    _claimed_vendor: str | None = None

    async def prepare(self) -> None:
        # Coupang throttles per vendorId: name the vendor from the access key before anything
        # else (unverified: a blocked vendor is refused whatever its signature).
        self._claimed_vendor = self._vendor_of_access_key()
        if self._claimed_vendor is not None:
            world = CoupangWorld(self.state)
            blocked_s = world.blocked_for_s(self._claimed_vendor)
            if blocked_s > 0:
                self.state.record_call(PLATFORM, self.call_name())
                with self.state.lock:
                    self.state.violations[PLATFORM] += 1
                blocked_s = world.note_refused(self._claimed_vendor) or blocked_s
                self._write_too_many(blocked_s, blocked=True)
                self.finish()
                return
        await super().prepare()

    def rate_limit_account(self) -> str | None:
        # Coupang limits per vendorId (see ThrottlePolicy).
        return self._claimed_vendor

    def _vendor_of_access_key(self) -> str | None:
        match = _AUTH_RE.match(self.request.headers.get("Authorization", "").strip())
        if match is None:
            return None
        account = next(
            (a for a in accounts_for(PLATFORM) if a["access_key"] == match["access_key"]), None
        )
        return None if account is None else account["vendor_id"]

    def write_rate_limited(self, decision: RateDecision) -> None:
        """The core's bucket refused this call: Coupang's 429, and a block once sustained."""
        blocked_s = 0.0
        if self._claimed_vendor is not None:
            blocked_s = CoupangWorld(self.state).note_refused(self._claimed_vendor)
        if blocked_s > 0:
            self._write_too_many(blocked_s, blocked=True)
        else:
            self._write_too_many(decision.retry_after_s, blocked=False)

    def _write_too_many(self, retry_after_s: float, *, blocked: bool) -> None:
        self.set_header("Retry-After", str(max(1, math.ceil(retry_after_s))))
        message = "Too Many Requests"
        if blocked:
            message += "; the vendor is blocked for exceeding the call rate"
        self.write_json({"code": "ERROR", "message": message, "data": None}, status=429)

    def authenticate(self) -> None:
        vendor_id = self._verified_vendor()
        if vendor_id is None:
            return
        self.vendor_id = vendor_id
        self.world = CoupangWorld(self.state)

    def _verified_vendor(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        match = _AUTH_RE.match(header.strip())
        if match is None:
            return self._reject("Authorization header is missing or not in CEA format.")
        if match["algorithm"] != "HmacSHA256":
            return self._reject("Unsupported algorithm; use HmacSHA256.")
        account = next(
            (a for a in accounts_for(PLATFORM) if a["access_key"] == match["access_key"]), None
        )
        if account is None:
            return self._reject("Invalid access key.")
        try:
            signed_at = signed_date_to_datetime(match["signed_date"])
        except ValueError:
            return self._reject("signed-date must be formatted as yyMMdd'T'HHmmss'Z'.")
        skew = abs((datetime.now(UTC) - signed_at).total_seconds())
        if skew > self.state.config.coupang_signature_max_skew_s:
            return self._reject("Specified signature is expired.")
        expected = coupang_signature(
            account["secret_key"],
            match["signed_date"],
            self.request.method or "",
            self.platform_path,
            self.request.query,
        )
        if not hmac.compare_digest(expected, match["signature"].lower()):
            return self._reject("Invalid signature.")
        return account["vendor_id"]

    def _reject(self, message: str) -> str | None:
        """Answer 401 in Coupang's error shape; returns None (no vendor) for the caller."""
        self.write_json({"code": "ERROR", "message": message, "data": None}, status=401)
        self.finish()
        return None

    # ---- response shapes

    def seller_ok(self, data: Any, message: str = "") -> None:
        self.write_json({"code": "SUCCESS", "message": message, "data": data})

    def seller_error(self, status: int, message: str) -> None:
        self.write_json({"code": "ERROR", "message": message, "data": None}, status=status)

    def v4_ok(self, data: Any, code: int | str = 200, **extra: Any) -> None:
        """The openapi v4 envelope. ``code`` follows the documents' samples: the number 200 in
        order-sheet lists, the string "200" elsewhere (clients must accept both)."""
        self.write_json({"code": code, "message": "OK", "data": data, **extra})

    def v4_error(self, status: int, message: str) -> None:
        self.write_json({"code": status, "message": message}, status=status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.write_json(
            {"code": "ERROR", "message": self._reason, "data": None}, status=status_code
        )

    def check_vendor(self, vendor_id: str) -> bool:
        if vendor_id != self.vendor_id:
            self.v4_error(403, f"vendorId {vendor_id} does not belong to this access key")
            return False
        return True

    def vendor_item_or_error(self, vendor_item_id: str) -> CoupangItem | None:
        """The vendor's item, or None after answering Wing's "no such option" error."""
        item = self.world.vendor_item(self.vendor_id, _int_arg(vendor_item_id, "vendorItemId"))
        if item is None:
            self.seller_error(400, f"vendorItemId {vendor_item_id} 옵션이 존재하지 않습니다.")
        return item


def _int_arg(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise tornado.web.HTTPError(400, reason=f"{name} must be a number, got {raw!r}") from None


# Image rules (docs/PLATFORMS.md "Images"), kept apart from dropship.images.rules on purpose.
MAX_ITEM_IMAGES = 10  # one REPRESENTATION + up to 9 DETAIL
MAX_VENDOR_PATH = 150
MAX_IMAGE_BYTES = 5 * 1024 * 1024
IMAGE_FORMATS = frozenset({"JPEG", "PNG"})
MIN_IMAGE_PX = 100
MAX_IMAGE_PX = 5000
IMAGE_FETCH_TIMEOUT_S = 10.0

_REQUIRED_PRODUCT_FIELDS = ("displayCategoryCode", "sellerProductName", "vendorId", "items")
_REQUIRED_ITEM_FIELDS = ("itemName", "salePrice", "maximumBuyCount")


def _option_problem(items: list[dict[str, Any]]) -> str | None:
    """Several items are the product's options: each names its option in ``attributes``
    (type and value), and no two items are the same option."""
    if len(items) < 2:
        return None
    seen: set[tuple[str, str]] = set()
    for n, item in enumerate(items):
        attributes = item.get("attributes")
        if not isinstance(attributes, list) or not attributes:
            return f"items[{n}].attributes: 옵션 상품의 아이템은 옵션 속성이 필요합니다."
        key = tuple(
            (str(a.get("attributeTypeName") or ""), str(a.get("attributeValueName") or ""))
            for a in attributes
            if isinstance(a, dict)
        )
        if not key or any(not t or not v for t, v in key):
            return f"items[{n}].attributes: attributeTypeName과 attributeValueName은 필수입니다."
        if key[0] in seen:
            return f"items[{n}].attributes: 같은 옵션의 아이템이 이미 있습니다."
        seen.add(key[0])
    return None


class SellerProductsHandler(CoupangHandler):
    endpoint = "seller-products.create"

    async def post(self) -> None:
        body = self.body_object()
        missing = [f for f in _REQUIRED_PRODUCT_FIELDS if body.get(f) in (None, "", [])]
        if missing:
            return self.seller_error(400, f"필수 항목 누락: {', '.join(missing)}")
        if body["vendorId"] != self.vendor_id:
            return self.seller_error(400, f"vendorId {body['vendorId']} does not match access key")
        items = body["items"]
        if not isinstance(items, list):
            return self.seller_error(400, "items must be a list")
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                return self.seller_error(400, f"items[{n}] must be an object")
            missing = [f for f in _REQUIRED_ITEM_FIELDS if item.get(f) in (None, "")]
            if missing:
                return self.seller_error(400, f"items[{n}] 필수 항목 누락: {', '.join(missing)}")
            price = item["salePrice"]
            if not isinstance(price, int) or price <= 0 or price % 10:
                return self.seller_error(
                    400, f"items[{n}].salePrice must be a positive multiple of 10, got {price!r}"
                )
        problem = _option_problem(items) or await self.image_problem(items)
        if problem:
            return self.seller_error(400, problem)
        try:
            product = self.world.create_product(self.vendor_id, body)
        except (KeyError, TypeError, ValueError) as exc:
            return self.seller_error(400, f"invalid product: {exc}")
        self.seller_ok(product.seller_product_id, "상품이 등록되었습니다.")

    async def image_problem(self, items: list[dict[str, Any]]) -> str | None:
        """Coupang downloads every ``vendorPath`` into its CDN and refuses the product when one
        cannot be fetched or decoded, or breaks its image rules. Fetched asynchronously and
        decoded in a worker thread, so the IOLoop keeps serving meanwhile."""
        paths: dict[str, bool] = {}  # url -> is a representative image
        for n, item in enumerate(items):
            images = item.get("images")
            if not isinstance(images, list) or not images:
                return f"items[{n}].images: 대표이미지는 필수입니다."
            if len(images) > MAX_ITEM_IMAGES:
                return f"items[{n}].images: 이미지는 최대 {MAX_ITEM_IMAGES}개입니다."
            kinds = [i.get("imageType") for i in images if isinstance(i, dict)]
            if kinds.count("REPRESENTATION") != 1:
                return f"items[{n}].images: REPRESENTATION 이미지는 1개여야 합니다."
            for image in images:
                path = image.get("vendorPath") if isinstance(image, dict) else None
                if not isinstance(path, str) or not path.startswith(("http://", "https://")):
                    return f"items[{n}].images: vendorPath가 올바르지 않습니다: {str(path)[:80]}"
                if len(path) > MAX_VENDOR_PATH:
                    return f"vendorPath 최대 길이({MAX_VENDOR_PATH})를 넘었습니다: {path[:80]}"
                paths[path] = paths.get(path, False) or image.get("imageType") == "REPRESENTATION"
        client = tornado.httpclient.AsyncHTTPClient(
            force_instance=True, max_body_size=MAX_IMAGE_BYTES + 1
        )
        loop = asyncio.get_running_loop()
        try:
            for url, representative in paths.items():
                self.count("coupang_image_fetches", url)
                try:
                    response = await client.fetch(
                        url, request_timeout=IMAGE_FETCH_TIMEOUT_S, raise_error=False
                    )
                except Exception as exc:  # too large, connection refused, bad host
                    return f"이미지를 다운로드할 수 없습니다: {url[:100]} ({type(exc).__name__})"
                if response.code != 200 or response.body is None:
                    return f"이미지를 다운로드할 수 없습니다: {url[:100]} (HTTP {response.code})"
                data = response.body
                try:
                    fmt, width, height = await loop.run_in_executor(None, inspect_image, data)
                except ValueError as exc:
                    return f"이미지를 읽을 수 없습니다: {url[:100]} ({exc})"
                if fmt not in IMAGE_FORMATS:
                    return f"지원하지 않는 이미지 형식입니다: {url[:100]} ({fmt})"
                if not MIN_IMAGE_PX <= min(width, height) <= max(width, height) <= MAX_IMAGE_PX:
                    return f"이미지 크기가 규격을 벗어났습니다: {url[:100]} ({width}x{height})"
                if representative and width != height:
                    return f"대표이미지는 정사각형이어야 합니다: {url[:100]} ({width}x{height})"
        finally:
            client.close()
        return None


# Coupang's seller-product status names (statusName) by status code, from the list document
# (lookup-seller-product-list-paging.document.ts).
PRODUCT_STATUS_NAMES: dict[str, str] = {
    "SAVING": "임시저장중",
    "SAVED": "임시저장",
    "APPROVING": "승인대기중",
    "APPROVED": "승인완료",
    "PARTIAL_APPROVED": "부분승인완료",
    "DENIED": "승인반려",
    "DELETED": "상품삭제",
}
LIST_MAX_PER_PAGE = 100  # the list document: default 10, max 100


class SellerProductListHandler(SellerProductsHandler):
    """``GET .../seller-products?vendorId&nextToken&maxPerPage[&status]`` (상품 목록 페이징 조회):
    newest first, ``nextToken`` a page number ("" on the last page), summaries without items,
    as the document's sample shows. ``POST`` on the same path creates (the parent class)."""

    def call_name(self) -> str:
        return "seller-products.list" if self.request.method == "GET" else "seller-products.create"

    def get(self) -> None:
        vendor_id = self.get_query_argument("vendorId", "")
        if not vendor_id:
            return self.seller_error(400, "vendorId는 필수입니다.")
        if vendor_id != self.vendor_id:
            return self.seller_error(400, f"vendorId {vendor_id} does not match access key")
        per_page = _int_arg(self.get_query_argument("maxPerPage", "10"), "maxPerPage")
        if not 1 <= per_page <= LIST_MAX_PER_PAGE:
            return self.seller_error(400, f"maxPerPage must be within 1..{LIST_MAX_PER_PAGE}")
        page = _int_arg(self.get_query_argument("nextToken", "") or "1", "nextToken")
        if page < 1:
            return self.seller_error(400, "nextToken must be a page number >= 1")
        status = self.get_query_argument("status", "")
        if status and status not in PRODUCT_STATUS_NAMES:
            return self.seller_error(400, f"unknown status {status}")
        with self.state.lock:
            products = sorted(
                (
                    p
                    for p in self.world.store.products.values()
                    if p.vendor_id == vendor_id
                    and (not status or p.status_name == PRODUCT_STATUS_NAMES[status])
                ),
                key=lambda p: -p.seller_product_id,
            )
            chunk = products[(page - 1) * per_page : page * per_page]
            summaries = [
                {k: v for k, v in product.render().items() if k != "items"}
                | {
                    "categoryId": product.display_category_code % 10_000,
                    "productId": None,
                    "mdId": None,
                    "mdName": None,
                    "saleStartedAt": kst(product.created_at),
                    "saleEndedAt": "2099-01-01T23:59:59",
                }
                for product in chunk
            ]
        more = page * per_page < len(products)
        self.write_json(
            {
                "code": "SUCCESS",
                "message": "",
                "nextToken": str(page + 1) if more else "",
                "data": summaries,
            }
        )


class VendorItemInventoryHandler(CoupangHandler):
    """``GET .../vendor-items/{vendorItemId}/inventories`` (상품 아이템별 수량/가격/상태 조회)."""

    endpoint = "vendor-items.inventories"

    def get(self, vendor_item_id: str) -> None:
        item = self.vendor_item_or_error(vendor_item_id)
        if item is None:
            return
        with self.state.lock:
            data = {
                "sellerItemId": item.seller_product_item_id,
                "vendorItemId": item.vendor_item_id,
                "amountInStock": item.quantity,
                "salePrice": item.sale_price,
                "onSale": item.on_sale,
                "bestPriceGuaranteed3P": False,
            }
        self.seller_ok(data)


class SellerProductHandler(CoupangHandler):
    endpoint = "seller-products.get"

    def get(self, product_id: str) -> None:
        product = self.world.product(self.vendor_id, _int_arg(product_id, "sellerProductId"))
        if product is None:
            return self.seller_error(400, f"sellerProductId {product_id} 상품이 존재하지 않습니다.")
        with self.state.lock:
            self.seller_ok(product.render())


class ExternalSkuHandler(CoupangHandler):
    endpoint = "seller-products.by-external-sku"

    def get(self, code: str) -> None:
        products = self.world.products_by_sku(self.vendor_id, code)
        with self.state.lock:
            summaries = [product.render() for product in products]
        self.seller_ok(summaries)


class VendorItemPriceHandler(CoupangHandler):
    endpoint = "vendor-items.price"

    def put(self, vendor_item_id: str, price: str) -> None:
        item = self.vendor_item_or_error(vendor_item_id)
        if item is None:
            return
        new_price = _int_arg(price, "price")
        if new_price <= 0 or new_price % 10:
            return self.seller_error(400, f"price must be a positive multiple of 10, got {price}")
        force = self.get_query_argument("forceSalePriceUpdate", "false") == "true"
        with self.state.lock:
            # Like Wing: a change of more than 50% needs forceSalePriceUpdate=true.
            if not force and abs(new_price - item.sale_price) > item.sale_price * 0.5:
                return self.seller_error(
                    400, "가격 변경 범위(50%)를 초과했습니다. forceSalePriceUpdate=true 필요"
                )
            item.sale_price = new_price
        self.seller_ok(None, "가격 변경을 완료했습니다.")


class VendorItemQuantityHandler(CoupangHandler):
    endpoint = "vendor-items.quantity"

    def put(self, vendor_item_id: str, quantity: str) -> None:
        item = self.vendor_item_or_error(vendor_item_id)
        if item is None:
            return
        qty = _int_arg(quantity, "quantity")
        if qty < 0:
            return self.seller_error(400, f"quantity must not be negative, got {quantity}")
        # The drop_suspensions fault: a stock-zero request answered as done and not applied.
        if not (qty == 0 and self.state.drop_suspension(PLATFORM)):
            with self.state.lock:
                item.quantity = qty
        self.seller_ok(None, "재고 변경을 완료했습니다.")


class VendorItemSalesHandler(CoupangHandler):
    endpoint = "vendor-items.sales"

    def put(self, vendor_item_id: str, action: str) -> None:
        item = self.vendor_item_or_error(vendor_item_id)
        if item is None:
            return
        # The drop_suspensions fault: a sale stop answered as done and not applied.
        if not (action == "stop" and self.state.drop_suspension(PLATFORM)):
            with self.state.lock:
                item.on_sale = action == "resume"
        self.seller_ok(None, "판매 재개 완료" if action == "resume" else "판매 중지 완료")


def _parse_window(
    created_from: str, created_to: str, time_frame: bool
) -> tuple[datetime, datetime]:
    """Coupang's createdAt window in KST. Daily mode: both days inclusive, at most 31 days.
    ``searchType=timeFrame``: minute precision, ``[from, to)``, at most 24 hours."""
    fmt = "%Y-%m-%dT%H:%M" if time_frame else "%Y-%m-%d"
    try:
        start = datetime.strptime(created_from, fmt).replace(tzinfo=KST)
        end = datetime.strptime(created_to, fmt).replace(tzinfo=KST)
    except ValueError:
        shape = "yyyy-MM-ddTHH:mm" if time_frame else "yyyy-MM-dd"
        raise ValueError(f"createdAtFrom/createdAtTo must be formatted as {shape}") from None
    if not time_frame:
        end += timedelta(days=1)
    if end <= start:
        raise ValueError("createdAtTo must be after createdAtFrom")
    limit = timedelta(hours=24) if time_frame else timedelta(days=31)
    if end - start > limit:
        raise ValueError(
            f"the createdAt window must not exceed {'24 hours' if time_frame else '31 days'}"
        )
    return start, end


class OrderSheetsHandler(CoupangHandler):
    endpoint = "ordersheets.list"

    def get(self, vendor_id: str) -> None:
        if not self.check_vendor(vendor_id):
            return
        created_from = self.get_query_argument("createdAtFrom", "")
        created_to = self.get_query_argument("createdAtTo", "")
        status = self.get_query_argument("status", "")
        if not created_from or not created_to or not status:
            return self.v4_error(400, "createdAtFrom, createdAtTo and status are required")
        if status not in ORDER_STATUSES:
            return self.v4_error(400, f"status must be one of {', '.join(ORDER_STATUSES)}")
        time_frame = self.get_query_argument("searchType", "") == "timeFrame"
        try:
            start, end = _parse_window(created_from, created_to, time_frame)
        except ValueError as exc:
            return self.v4_error(400, str(exc))
        max_per_page = _int_arg(self.get_query_argument("maxPerPage", "50"), "maxPerPage")
        if not 1 <= max_per_page <= MAX_PER_PAGE:
            return self.v4_error(400, f"maxPerPage must be within 1..{MAX_PER_PAGE}")
        token = self.get_query_argument("nextToken", "")
        offset = _int_arg(token, "nextToken") if token else 0
        if offset < 0:
            return self.v4_error(400, "invalid nextToken")

        self.world.materialise_arrivals()
        sheets = self.world.orders_between(vendor_id, status, start, end)
        page = sheets[offset : offset + max_per_page]
        next_offset = offset + len(page)
        if next_offset < len(sheets) and len(page) >= 2 and self.fault_hit("duplicate_order_rate"):
            # Duplicated delivery: the next page starts with this page's last order again.
            next_offset -= 1
        with self.state.lock:
            rendered = [sheet.render() for sheet in page]
        for record in rendered:
            if self.fault_hit("malformed_rate"):
                record.pop("orderItems", None)
        next_token = str(next_offset) if next_offset < len(sheets) else ""
        self.v4_ok(rendered, nextToken=next_token)


class OrderSheetHandler(CoupangHandler):
    endpoint = "ordersheets.get"

    def get(self, vendor_id: str, box_id: str) -> None:
        if not self.check_vendor(vendor_id):
            return
        sheet = self.world.order(vendor_id, _int_arg(box_id, "shipmentBoxId"))
        if sheet is None:
            return self.v4_error(400, f"shipmentBoxId {box_id} 발주서가 존재하지 않습니다.")
        with self.state.lock:
            self.v4_ok(sheet.render(), code="200")


def _result(
    box_id: Any, succeed: bool, message: str | None, code: str = "OK", retry: bool = False
) -> dict[str, Any]:
    """One ``responseList`` entry, as both documents show it."""
    return {
        "shipmentBoxId": box_id,
        "succeed": succeed,
        "resultCode": code if not succeed else "OK",
        "retryRequired": retry,
        "resultMessage": message,
    }


def _response_code(results: list[dict[str, Any]]) -> int:
    """0 all succeeded, 1 partial errors, 99 all failed (both documents' tables)."""
    ok = sum(1 for r in results if r["succeed"])
    return 0 if ok == len(results) else (1 if ok else 99)


class AcknowledgementHandler(CoupangHandler):
    """상품준비중 처리 (product-preparation-processing.document.ts): only ACCEPT boxes move to
    INSTRUCT; any other box fails with the document's message and the call's responseCode is 99
    when no box succeeded. A re-sent acknowledgement is therefore refused, as on Coupang. The
    document lists PATCH (older) and PUT; both are served."""

    endpoint = "ordersheets.acknowledgement"

    def put(self, vendor_id: str) -> None:
        if not self.check_vendor(vendor_id):
            return
        body = self.body_object()
        box_ids = body.get("shipmentBoxIds")
        if not isinstance(box_ids, list) or not box_ids:
            return self.v4_error(400, "shipmentBoxIds must be a non-empty list")
        if len(box_ids) > MAX_ACK_IDS:
            return self.v4_error(400, f"at most {MAX_ACK_IDS} shipmentBoxIds per call")
        if body.get("vendorId") not in (None, vendor_id):
            return self.v4_error(400, f"vendorId {body.get('vendorId')} does not match the path")
        results = []
        with self.state.lock:
            for raw_id in box_ids:
                sheet = self.world.order(vendor_id, raw_id) if isinstance(raw_id, int) else None
                if sheet is None:
                    results.append(
                        _result(
                            raw_id,
                            False,
                            f"shipmentBoxId ({raw_id}) is not found.",
                            "NOT_FOUND_SHIPMENT_BOX",
                            retry=True,  # as the document's sample answers
                        )
                    )
                elif sheet.status == "ACCEPT":
                    sheet.status = "INSTRUCT"
                    results.append(_result(raw_id, True, "request succeeded."))
                    self.count("coupang_acknowledgements", str(raw_id))
                else:
                    results.append(_result(raw_id, False, NOT_ACCEPT_MESSAGE, "INVALID_STATUS"))
        code = _response_code(results)
        summary = {0: "All succeeded.", 1: "Partial errors.", 99: "All Failed."}[code]
        self.v4_ok(
            {
                # A request key (the document's sample shows a large signed number).
                "responseKey": int(hashlib.sha256(repr(box_ids).encode()).hexdigest()[:15], 16),
                "responseCode": code,
                "responseMessage": f"apply instructStatus result - {summary}",
                "responseList": results,
            },
            code="200",
        )

    patch = put


_INVOICE_FIELDS = (
    "shipmentBoxId",
    "orderId",
    "vendorItemId",
    "deliveryCompanyCode",
    "invoiceNumber",
    "splitShipping",
    "preSplitShipped",
    "estimatedShippingDate",
)


class InvoicesHandler(CoupangHandler):
    """송장업로드 처리 (invoice-upload-processing.document.ts): invoices only for INSTRUCT boxes
    ("상품준비중 상태의 주문에 대해서만 송장업로드가 가능합니다"); any other state is
    ``INVALID_STATUS`` with ``retryRequired: false``, so a re-sent invoice is refused. One result
    per shipment box; every vendor item of the box must be in the upload (no split shipping:
    ``NOT_FOUND_VENDOR_ITEM``); an invoice number already used by another box is
    ``DUPLICATE_INVOICE_NUMBER``; a carrier code outside Coupang's table is refused with 400."""

    endpoint = "orders.invoices"

    def post(self, vendor_id: str) -> None:
        if not self.check_vendor(vendor_id):
            return
        body = self.body_object()
        if body.get("vendorId") != vendor_id:
            return self.v4_error(400, "vendorId is required and must match the path")
        dtos = body.get("orderSheetInvoiceApplyDtos")
        if not isinstance(dtos, list) or not dtos:
            return self.v4_error(400, "orderSheetInvoiceApplyDtos must be a non-empty list")
        by_box: dict[Any, list[dict[str, Any]]] = {}
        for dto in dtos:
            if not isinstance(dto, dict):
                return self.v4_error(400, "each invoice must be an object")
            missing = [f for f in _INVOICE_FIELDS if f not in dto or dto[f] is None]
            if missing:
                return self.v4_error(400, f"invoice missing {', '.join(missing)}")
            if dto["deliveryCompanyCode"] not in DELIVERY_COMPANIES:
                return self.v4_error(
                    400, f"지원하지 않는 택배사 코드입니다: {str(dto['deliveryCompanyCode'])[:20]}"
                )
            if not dto["invoiceNumber"]:
                return self.v4_error(400, "invoiceNumber is required without split shipping")
            by_box.setdefault(dto["shipmentBoxId"], []).append(dto)
        results = []
        with self.state.lock:
            used = {
                o.invoice_number: o.shipment_box_id
                for o in self.world.store.orders.values()
                if o.invoice_number
            }
            for box_id, box_dtos in by_box.items():
                results.append(self._apply(vendor_id, box_id, box_dtos, used))
        code = _response_code(results)
        message = {0: "SUCCESS", 1: "PARTIAL_ERROR", 99: "FAILED"}[code]
        self.v4_ok(
            {"responseCode": code, "responseMessage": message, "responseList": results},
            code="200",
        )

    def _apply(
        self,
        vendor_id: str,
        box_id: Any,
        dtos: list[dict[str, Any]],
        used: dict[str, int],
    ) -> dict[str, Any]:
        """One box's invoice; call with the state lock held."""
        sheet = self.world.order(vendor_id, box_id) if isinstance(box_id, int) else None
        if sheet is None or any(d["orderId"] != sheet.order_id for d in dtos):
            return _result(box_id, False, "존재하지 않는 송장번호입니다.", "NOT_FOUND_SHIPMENT_BOX")
        if sheet.status != "INSTRUCT":
            return _result(box_id, False, INVALID_STATUS_MESSAGE, "INVALID_STATUS")
        items = {int(line["vendorItemId"]) for line in sheet.lines}
        given = {d["vendorItemId"] for d in dtos}
        if given != items:
            return _result(
                box_id, False, "합포장건 중 누락된 상품이 있습니다.", "NOT_FOUND_VENDOR_ITEM"
            )
        numbers = {str(d["invoiceNumber"]) for d in dtos}
        codes = {str(d["deliveryCompanyCode"]) for d in dtos}
        if len(numbers) != 1 or len(codes) != 1:
            return _result(
                box_id, False, "송장번호가 유효하지 않습니다.", "INVALID_INVOICE_NUMBER", True
            )
        (number,), (company,) = numbers, codes
        if used.get(number, box_id) != box_id:
            return _result(
                box_id, False, "이미 저장된 송장번호가 있습니다.", "DUPLICATE_INVOICE_NUMBER", True
            )
        sheet.status = "DEPARTURE"
        sheet.delivery_company_code = company
        sheet.invoice_number = number
        sheet.invoice_uploaded_at = self.state.now()
        used[number] = box_id
        self.count("coupang_invoices", str(box_id))
        return _result(box_id, True, None)


class ReturnRequestsHandler(CoupangHandler):
    """반품/취소 요청 목록 조회 (lookup-return-request-list, v4 path): receipts created in the
    window (``searchType=timeFrame``: minute precision, at most 24 h), ``cancelType=CANCEL`` for
    cancellations, otherwise returns with a required ``status`` (RU or UC here), ``maxPerPage``
    (<= 50) and ``nextToken`` paging."""

    endpoint = "returnRequests.list"

    def get(self, vendor_id: str) -> None:
        if not self.check_vendor(vendor_id):
            return
        created_from = self.get_query_argument("createdAtFrom", "")
        created_to = self.get_query_argument("createdAtTo", "")
        if not created_from or not created_to:
            return self.v4_error(400, "createdAtFrom and createdAtTo are required")
        cancel_type = self.get_query_argument("cancelType", "RETURN")
        if cancel_type not in ("CANCEL", "RETURN"):
            return self.v4_error(400, "cancelType must be CANCEL or RETURN")
        status: str | None = None
        if cancel_type == "RETURN":
            code = self.get_query_argument("status", "")
            if code not in RETURN_LIST_STATUSES:
                return self.v4_error(400, "status (RU, UC, CC, PR) is required for returns")
            status = RETURN_LIST_STATUSES[code]
        time_frame = self.get_query_argument("searchType", "") == "timeFrame"
        try:
            start, end = _parse_window(created_from, created_to, time_frame)
        except ValueError as exc:
            return self.v4_error(400, str(exc))
        max_per_page = _int_arg(self.get_query_argument("maxPerPage", "50"), "maxPerPage")
        if not 1 <= max_per_page <= MAX_PER_PAGE:
            return self.v4_error(400, f"maxPerPage must be within 1..{MAX_PER_PAGE}")
        token = self.get_query_argument("nextToken", "")
        offset = _int_arg(token, "nextToken") if token else 0
        self.world.materialise_arrivals()  # buyers' cancel requests come due with the clock
        receipts = self.world.receipts_between(vendor_id, cancel_type, status, start, end)
        page = receipts[offset : offset + max_per_page]
        next_offset = offset + len(page)
        with self.state.lock:
            rendered = [r.render(self.world.store.orders.get(r.shipment_box_id)) for r in page]
        self.v4_ok(rendered, nextToken=str(next_offset) if next_offset < len(receipts) else "")


class StoppedShipmentHandler(CoupangHandler):
    """출고중지완료 처리 (stop-shipping-complete-processing): only for a receipt in
    RELEASE_STOP_UNCHECKED whose box is not shipped; the box is cancelled (no invoice is taken
    for it afterwards) and the receipt becomes CANCEL_DONE. ``cancelCount`` must equal the
    receipt's count. Anything else: 400 with the reason (a re-send is refused too)."""

    endpoint = "returnRequests.stoppedShipment"

    def patch(self, vendor_id: str, receipt_id: str) -> None:
        if not self.check_vendor(vendor_id):
            return
        body = self.body_object()
        if body.get("vendorId") != vendor_id or body.get("receiptId") != int(receipt_id):
            return self.v4_error(400, "vendorId and receiptId must match the path")
        with self.state.lock:
            receipt = self.world.store.receipts.get(int(receipt_id))
            if receipt is None or receipt.vendor_id != vendor_id:
                return self.v4_error(400, f"취소 접수건이 존재하지 않습니다: {receipt_id}")
            if body.get("cancelCount") != receipt.count:
                return self.v4_error(400, "cancelCount does not match the receipt")
            sheet = self.world.store.orders.get(receipt.shipment_box_id)
            if receipt.status != RELEASE_STOP_UNCHECKED or sheet is None:
                return self.v4_error(400, "출고중지요청 상태가 아닙니다.")
            if sheet.status not in ("ACCEPT", "INSTRUCT"):
                return self.v4_error(400, "이미 출고된 주문입니다.")
            sheet.status = "CANCELED"
            sheet.cancelled_count, sheet.hold_for_cancel = sheet.hold_for_cancel, 0
            receipt.status = "CANCEL_DONE"
            receipt.modified_at = self.state.now()
        self.count("coupang_cancels_confirmed", str(receipt.shipment_box_id))
        self.v4_ok({"resultCode": "SUCCESS", "resultMessage": ""}, code="200")


# --------------------------------------------------------------------------- admin


class CoupangCancelAdminHandler(AdminHandler):
    """``POST /_sandbox/coupang/cancel_requests`` ``{"shipmentBoxId": 600000001}``: the buyer
    asks to cancel that box (a CANCEL receipt before shipment, a RETURN receipt after).
    Answers ``{"receiptId", "receiptType"}``."""

    def post(self) -> None:
        body = self._body_dict()
        try:
            receipt = CoupangWorld(self.state).request_cancel(int(body["shipmentBoxId"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise tornado.web.HTTPError(400, reason=f"invalid cancel request: {exc}") from None
        self.write_json({"receiptId": receipt.receipt_id, "receiptType": receipt.receipt_type})


class CoupangOrdersAdminHandler(AdminHandler):
    """``POST /_sandbox/coupang/orders`` creates orders on demand::

        {"count": 3, "ordered_at": "2024-03-01T10:00:00+09:00", "spacing_s": 60,
         "vendor_id": "A00012345", "external_sku": "key-1", "status": "ACCEPT", "quantity": 1}

    Everything but ``count`` is optional (defaults: now, 60 s apart, the main sandbox vendor, a
    product listed outside the system, ACCEPT). With ``external_sku`` the orders are for the
    oldest product carrying it. Answers ``{"shipmentBoxIds": [...]}``.
    Not counted and not rate limited, like every ``/_sandbox`` endpoint."""

    def post(self) -> None:
        body = self._body_dict()
        world = CoupangWorld(self.state)
        try:
            batch = parse_order_batch(body, PLATFORM, "vendor_id", "vendor_id", self.state.now())
            status = str(body.get("status", "ACCEPT"))
            if status not in ORDER_STATUSES:
                raise ValueError(f"status must be one of {ORDER_STATUSES}")
            sku = body.get("external_sku")
            products = world.products_by_sku(batch.account, str(sku)) if sku else []
            if sku and not products:
                raise ValueError(
                    f"no listing with externalVendorSku {sku} for vendor {batch.account}"
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise tornado.web.HTTPError(400, reason=f"invalid order request: {exc}") from None
        product = products[0] if products else None
        created = [
            world.add_order(batch.account, at, rng, status, product, batch.quantity).shipment_box_id
            for at, rng in batch.slots(self.state.config.seed)
        ]
        self.write_json({"shipmentBoxIds": created})

    def get(self) -> None:
        """Every order sheet (admin view, e.g. to check statuses and invoices in tests)."""
        world = CoupangWorld(self.state)
        with self.state.lock:
            sheets = [s.render() | {"vendorId": s.vendor_id} for s in world.store.orders.values()]
        self.write_json({"orders": sheets})


class CoupangForgetAdminHandler(ForgetAdminHandler):
    """``POST /_sandbox/coupang/forget {"sellerProductId": N}``: gone from Coupang (reads answer
    ``상품이 존재하지 않습니다``)."""

    id_field = "sellerProductId"

    def forget(self, number: int) -> bool:
        store = CoupangWorld(self.state).store
        product = store.products.pop(number, None)
        if product is None:
            return False
        for item in product.items:
            store.items.pop(item.vendor_item_id, None)
        for ids in store.by_sku.values():
            if number in ids:
                ids.remove(number)
        return True


class CoupangThrottleAdminHandler(AdminHandler):
    """``GET /_sandbox/coupang/throttle``: the policy and each blocked vendor's remaining
    seconds (world time); ``POST`` ``{"excess_calls": 5, "excess_window_s": 10, "block_s": 300}``
    changes the policy (until the next reset)."""

    def get(self) -> None:
        world = CoupangWorld(self.state)
        with self.state.lock:
            vendors = list(world.store.blocked_until)
            policy = asdict(world.store.throttle)
        blocked = {v: world.blocked_for_s(v) for v in vendors}
        self.write_json({"policy": policy, "blocked_s": {v: s for v, s in blocked.items() if s}})

    def post(self) -> None:
        body = self._body_dict()
        world = CoupangWorld(self.state)
        try:
            with self.state.lock:
                current = asdict(world.store.throttle)
                unknown = set(body) - set(current)
                if unknown:
                    raise ValueError(f"unknown throttle setting(s) {sorted(unknown)}")
                current.update(body)
                world.store.throttle = ThrottlePolicy(
                    excess_calls=int(current["excess_calls"]),
                    excess_window_s=float(current["excess_window_s"]),
                    block_s=float(current["block_s"]),
                )
        except (TypeError, ValueError) as exc:
            raise tornado.web.HTTPError(400, reason=f"invalid throttle: {exc}") from None
        self.get()


def _iter_routes(state: SandboxState) -> Iterator[RouteSpec]:
    kw = {"state": state}
    p = "/" + PLATFORM
    yield (rf"{p}{SELLER_API}/seller-products", SellerProductListHandler, kw)
    yield (
        rf"{p}{SELLER_API}/seller-products/external-vendor-sku-codes/([^/]+)",
        ExternalSkuHandler,
        kw,
    )
    yield (rf"{p}{SELLER_API}/seller-products/([0-9]+)", SellerProductHandler, kw)
    yield (rf"{p}{SELLER_API}/vendor-items/([0-9]+)/prices/(-?[0-9]+)", VendorItemPriceHandler, kw)
    yield (
        rf"{p}{SELLER_API}/vendor-items/([0-9]+)/quantities/(-?[0-9]+)",
        VendorItemQuantityHandler,
        kw,
    )
    yield (
        rf"{p}{SELLER_API}/vendor-items/([0-9]+)/inventories",
        VendorItemInventoryHandler,
        kw,
    )
    yield (
        rf"{p}{SELLER_API}/vendor-items/([0-9]+)/sales/(stop|resume)",
        VendorItemSalesHandler,
        kw,
    )
    yield (rf"{p}{OPENAPI_V4}/([^/]+)/ordersheets", OrderSheetsHandler, kw)
    yield (rf"{p}{OPENAPI_V4}/([^/]+)/ordersheets/acknowledgement", AcknowledgementHandler, kw)
    yield (rf"{p}{OPENAPI_V4}/([^/]+)/ordersheets/([0-9]+)", OrderSheetHandler, kw)
    yield (rf"{p}{OPENAPI_V4}/([^/]+)/orders/invoices", InvoicesHandler, kw)
    yield (rf"{p}{OPENAPI_V4}/([^/]+)/returnRequests", ReturnRequestsHandler, kw)
    yield (
        rf"{p}{OPENAPI_V4}/([^/]+)/returnRequests/([0-9]+)/stoppedShipment",
        StoppedShipmentHandler,
        kw,
    )
    yield (r"/_sandbox/coupang/cancel_requests", CoupangCancelAdminHandler, kw)
    yield (r"/_sandbox/coupang/orders", CoupangOrdersAdminHandler, kw)
    yield (r"/_sandbox/coupang/throttle", CoupangThrottleAdminHandler, kw)
    yield (r"/_sandbox/coupang/forget", CoupangForgetAdminHandler, kw)


def routes(state: SandboxState) -> list[RouteSpec]:
    return list(_iter_routes(state))
