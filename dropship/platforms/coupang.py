"""Coupang Wing Open API connector (marketplace).

Auth: every request is signed on the wire (``auth_hook``, so each retry gets a fresh
signed-date) with ``Authorization: CEA algorithm=HmacSHA256, access-key=.., signed-date=..,
signature=hex(HMAC-SHA256(secret_key, signed-date + METHOD + path + query))``. ``path`` is the
request path relative to the gateway root (the account's ``base_url`` may carry a prefix, as the
sandbox's ``/coupang`` does) and ``query`` the encoded query string exactly as sent, without ``?``.

Identifiers: a listing is a Coupang *seller product* (``market_product_id`` = sellerProductId);
its option items are *vendor items*. An order is a Coupang *order sheet*, i.e. one shipment box
(``market_order_id`` = shipmentBoxId, the unit that acknowledgement and invoices act on; the
buyer-facing orderId is in ``raw["orderId"]``), its items are vendor items
(``market_item_id`` = vendorItemId).

Idempotent registration: every item carries our key in ``externalVendorSku``; ``create_listing``
looks the key up first (``seller-products/external-vendor-sku-codes/{key}``) and returns the
existing listing. Coupang does not refuse a second product with the same key, so this look-up is
the only guard; when duplicates already exist the oldest is used and a warning names the key.

Acknowledgement and invoice upload are safe to repeat: Coupang refuses both for a box that is
no longer in the state they act on, so after an unknown outcome the connector reads the boxes'
states instead of re-sending (see :meth:`CoupangConnector.acknowledge`; docs/PLATFORMS.md
"Coupang contract" has the sources).

Orders: ``iter_orders`` reads ``ordersheets`` per status in windows of at most 23 hours
(``searchType=timeFrame``, minute precision, KST) following ``nextToken``; Coupang filters by
*order* time, not by change time. Order sheets delivered twice (page overlap) are yielded once
per call; across calls the caller's upsert by (market, market_order_id) de-duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from dropship.errors import PermanentError, RateLimitedError, TransientError
from dropship.platforms import _market_common as common
from dropship.platforms import carriers
from dropship.platforms._market_common import KST
from dropship.platforms.config import AccountSettings
from dropship.platforms.http import PlatformHttp
from dropship.platforms.interfaces import (
    BuyerInfo,
    ClaimKind,
    KnownOrderStates,
    MarketClaim,
    MarketListingRequest,
    MarketListingResult,
    MarketListingState,
    MarketOptionState,
    MarketOrder,
    MarketOrderItem,
    OptionStock,
    Page,
    TrackingUpload,
    option_stock_for,
)

log = logging.getLogger(__name__)

MARKET = "coupang"
SELLER_API = "/v2/providers/seller_api/apis/api/v1/marketplace"
OPENAPI_V4 = "/v2/providers/openapi/apis/api/v4/vendors"
DEFAULT_ORDER_STATUSES: tuple[str, ...] = ("ACCEPT", "INSTRUCT")
MAX_PER_PAGE = 50
MAX_ACK_IDS = 50
MAX_INVOICES_PER_CALL = 50
# A window of 23 h leaves room for rounding both ends to whole minutes under Coupang's 24 h cap.
ORDER_WINDOW = timedelta(hours=23)
MAX_PAGES_PER_WINDOW = 2_000  # 100k order sheets per status per window: far beyond real volume
ITEM_CACHE_SIZE = 2_048
# Seller-product list (상품 목록 페이징 조회): maxPerPage default 10, max 100. Each listing then
# costs 1 + items reads, so a page of 20 is about a minute of calls at 100/min.
LISTING_PAGE_SIZE = 20
MAX_LISTING_PAGES = 100_000
# statusName (Korean, as the list and the product answer show it; the codes are accepted too)
# -> our normalised sale state. 승인완료/부분승인완료 are sellable: their items' onSale decides.
_PRODUCT_STATES: dict[str, str] = {
    "임시저장중": "pending",
    "SAVING": "pending",
    "임시저장": "pending",
    "SAVED": "pending",
    "승인대기중": "pending",
    "APPROVING": "pending",
    "승인완료": "approved",
    "APPROVED": "approved",
    "부분승인완료": "approved",
    "PARTIAL_APPROVED": "approved",
    "승인반려": "refused",
    "DENIED": "refused",
    "상품삭제": "deleted",
    "DELETED": "deleted",
}

# Shipment-box states (발주서 상태) from the ordersheets document. Acknowledgement moves ACCEPT
# (결제완료) to INSTRUCT (상품준비중); an invoice moves INSTRUCT to DEPARTURE (배송지시).
ACKNOWLEDGED_STATUSES = frozenset(
    {"INSTRUCT", "DEPARTURE", "DELIVERING", "FINAL_DELIVERY", "NONE_TRACKING"}
)
SHIPPED_STATUSES = frozenset({"DEPARTURE", "DELIVERING", "FINAL_DELIVERY", "NONE_TRACKING"})
# Per-box invoice result codes that re-sending the same invoice cannot fix, whatever
# ``retryRequired`` says (Coupang marks a duplicate invoice number "retry required").
_PERMANENT_INVOICE_CODES = frozenset({"DUPLICATE_INVOICE_NUMBER", "INVALID_INVOICE_NUMBER"})

# Seller-product approval states (statusName) -> sale state; "approved" means the vendor items'
# own sale state decides. Any other value (심사중, 임시저장, 승인대기중, ...) is pending review.
_COUPANG_APPROVAL_STATES: dict[str, Any] = {
    "승인완료": "approved",
    "부분승인완료": "approved",
    "승인반려": "refused",
    "상품삭제": "deleted",
}

# Fields of an order sheet that are buyer personal data: never kept in ``raw``.
_PERSONAL_FIELDS = ("orderer", "receiver", "parcelPrintMessage")


def coupang_authorization(
    access_key: str, secret_key: str, method: str, path: str, query: str, now: datetime
) -> str:
    """The ``Authorization`` header value Coupang expects for one request."""
    signed_date = now.astimezone(UTC).strftime("%y%m%dT%H%M%SZ")
    message = f"{signed_date}{method.upper()}{path}{query}"
    signature = hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).hexdigest()
    return (
        f"CEA algorithm=HmacSHA256, access-key={access_key}, signed-date={signed_date}, "
        f"signature={signature}"
    )


def item_option(item: dict[str, Any]) -> tuple[str | None, str | None]:
    """The option (name, value) a vendor item was registered as: its first attribute; an
    item without attributes ("단일상품") has none."""
    attributes = item.get("attributes")
    if isinstance(attributes, list) and attributes and isinstance(attributes[0], dict):
        first = attributes[0]
        return common.str_or_none(first.get("attributeTypeName")), common.str_or_none(
            first.get("attributeValueName")
        )
    return None, None


def carrier_code(carrier: str) -> str:
    """Coupang's deliveryCompanyCode for a carrier (our id, a name or a code); PermanentError
    naming it when unknown. The table is :mod:`dropship.platforms.carriers`."""
    return carriers.market_code(MARKET, carrier)


def response_ok(body: dict[str, Any]) -> bool:
    """The openapi v4 envelope's ``code`` says OK. The documents' samples show both the string
    ``"200"`` (acknowledgement, invoice upload, single order sheet) and the number ``200``
    (order-sheet lists); the response spec says Number. Accept both."""
    code = body.get("code")
    return code == 200 or code == "200"


class CoupangConnector:
    """:class:`~dropship.platforms.interfaces.MarketConnector` for one Coupang Wing account."""

    market = MARKET

    def __init__(
        self,
        *,
        account: AccountSettings,
        http: PlatformHttp,
        cache: Any = None,
        order_statuses: Sequence[str] = DEFAULT_ORDER_STATUSES,
    ) -> None:
        if account.platform != "coupang":
            raise PermanentError(f"account {account.name!r} is not a coupang account")
        self.account = account
        self.http = http
        self.vendor_id = account.secret("vendor_id")
        self._access_key = account.secret("access_key")
        self._secret_key = account.secret("secret_key")
        self.order_statuses = tuple(order_statuses)
        # Path prefix of base_url (the sandbox mounts Coupang under /coupang); not signed.
        self._base_path = urlsplit(http.base_url).path.rstrip("/")
        # sellerProductId -> vendorItemIds; items of a product never change once created.
        self._item_ids: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def __repr__(self) -> str:
        return f"CoupangConnector(account={self.account.name!r}, vendor_id={self.vendor_id!r})"

    # ------------------------------------------------------------------ transport

    def _sign(self, prepared: requests.PreparedRequest) -> requests.PreparedRequest:
        parts = urlsplit(prepared.url or "")
        path = parts.path
        if self._base_path and path.startswith(self._base_path + "/"):
            path = path[len(self._base_path) :]
        prepared.headers["Authorization"] = coupang_authorization(
            self._access_key,
            self._secret_key,
            prepared.method or "GET",
            path,
            parts.query,
            datetime.now(UTC),
        )
        return prepared

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> tuple[int, dict[str, Any]]:
        response = self.http.request(
            method,
            path,
            params=params,
            json=json,
            auth_hook=self._sign,
            headers={"Content-Type": "application/json;charset=UTF-8"}
            if json is not None
            else None,
            idempotent=idempotent,
            ok_statuses=ok_statuses,
        )
        return response.status_code, common.json_object(response, MARKET, method, _no_query(path))

    def _seller_call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A seller_api call; envelope ``{"code": "SUCCESS"|"ERROR", "message", "data"}``."""
        status, body = self._call(method, path, **kwargs)
        if body.get("code") != "SUCCESS":
            raise PermanentError(
                f"coupang {method} {_no_query(path)} -> {status} {body.get('code')}: "
                f"{_short(body.get('message'))}"
            )
        return body.get("data")

    # ------------------------------------------------------------------ listings

    def find_listing_by_external_sku(self, external_sku: str) -> MarketListingResult | None:
        """The listing carrying ``external_sku`` (the oldest, if several do), or None."""
        if not external_sku:
            raise PermanentError("coupang: external_sku must not be empty")
        code = quote(external_sku, safe="")
        data = self._seller_call(
            "GET", f"{SELLER_API}/seller-products/external-vendor-sku-codes/{code}"
        )
        products = data if isinstance(data, list) else ([data] if isinstance(data, dict) else [])
        matches = [
            common.ListingMatch(
                market_product_id=str(product["sellerProductId"]),
                created_at=common.parse_time(product.get("createdAt")),
                status=product.get("statusName"),
            )
            for product in products
            if isinstance(product, dict) and product.get("sellerProductId") is not None
        ]
        return common.oldest_listing(MARKET, self.account.name, external_sku, matches)

    def create_listing(
        self, request: MarketListingRequest, *, first_attempt: bool = False
    ) -> MarketListingResult:
        """Register the product once per ``external_sku``: an existing listing with that key
        is returned (``already_existed=True``) instead of creating a second one, which Coupang
        would accept. A create that timed out is not repeated here (a non-idempotent POST):
        the task's retry comes back through the look-up and finds it. ``first_attempt=True``
        (the caller knows no create for this key was ever sent) skips the look-up."""
        body = self._product_body(request)  # bad input fails before any call
        if first_attempt:
            return self._create_product(request, body)
        existing = self.find_listing_by_external_sku(request.external_sku)
        if existing is not None:
            log.info(
                "coupang %s: listing %s already exists", self.account.name, request.external_sku
            )
            return existing
        return self._create_product(request, body)

    def _create_product(
        self, request: MarketListingRequest, body: dict[str, Any]
    ) -> MarketListingResult:
        """The create POST, sent once and without a look-up: callers use :meth:`create_listing`."""
        status, answer = self._call(
            "POST", f"{SELLER_API}/seller-products", json=body, ok_statuses=(400,)
        )
        if answer.get("code") == "SUCCESS" and answer.get("data") is not None:
            return MarketListingResult(
                market_product_id=str(answer["data"]), external_sku=request.external_sku
            )
        raise PermanentError(
            f"coupang create listing {request.external_sku} -> HTTP {status} "
            f"{answer.get('code')}: {_short(answer.get('message'))}"
        )

    def _product_body(self, request: MarketListingRequest) -> dict[str, Any]:
        common.check_price(MARKET, request.sale_price, request.external_sku)
        option = self.account.option
        items: list[dict[str, Any]] = []
        variants = request.options or ()
        for variant in variants or (None,):
            price = request.sale_price + (variant.price_delta if variant else 0)
            common.check_price(MARKET, price, request.external_sku)
            items.append(
                {
                    "itemName": f"{variant.name} {variant.value}" if variant else "단일상품",
                    "originalPrice": price,
                    "salePrice": price,
                    "maximumBuyCount": variant.stock if variant else request.stock,
                    "maximumBuyForPerson": 0,
                    "maximumBuyForPersonPeriod": 1,
                    "outboundShippingTimeDay": int(option("outbound_shipping_time_day", "2") or 2),
                    "unitCount": 1,
                    "adultOnly": "EVERYONE",
                    "taxType": "TAX",
                    "parallelImported": "NOT_PARALLEL_IMPORTED",
                    "overseasPurchased": "NOT_OVERSEAS_PURCHASED",
                    "pccNeeded": False,
                    # Our key on every item: the lookup by externalVendorSku finds the product.
                    "externalVendorSku": request.external_sku,
                    "emptyBarcode": True,
                    "emptyBarcodeReason": "위탁판매 상품",
                    "certifications": [
                        {"certificationType": "NOT_REQUIRED", "certificationCode": ""}
                    ],
                    "searchTags": [],
                    "images": [
                        {
                            "imageOrder": n,
                            "imageType": "REPRESENTATION" if n == 0 else "DETAIL",
                            "vendorPath": url,
                        }
                        for n, url in enumerate(request.images[:10])
                    ],
                    "notices": [
                        {
                            "noticeCategoryName": "기타 재화",
                            "noticeCategoryDetailName": "품명 및 모델명",
                            "content": "상세페이지 참조",
                        }
                    ],
                    "attributes": (
                        [{"attributeTypeName": variant.name, "attributeValueName": variant.value}]
                        if variant
                        else []
                    ),
                    "contents": [
                        {
                            "contentsType": "TEXT",
                            "contentDetails": [
                                {
                                    "content": request.description_html or request.name,
                                    "detailType": "TEXT",
                                }
                            ],
                        }
                    ],
                }
            )
        return {
            "displayCategoryCode": int(request.category_id),
            "sellerProductName": request.name[:100],
            "vendorId": self.vendor_id,
            "saleStartedAt": datetime.now(KST).strftime("%Y-%m-%dT%H:%M:%S"),
            "saleEndedAt": "2099-01-01T23:59:59",
            "displayProductName": request.name[:100],
            "brand": request.brand or "",
            "generalProductName": request.name[:100],
            "deliveryMethod": "SEQUENCIAL",  # (sic) Coupang's spelling for ordinary delivery
            "deliveryCompanyCode": option("delivery_company_code", "CJGLS"),
            "deliveryChargeType": "FREE" if request.shipping_fee == 0 else "NOT_FREE",
            "deliveryCharge": request.shipping_fee,
            "freeShipOverAmount": 0,
            "deliveryChargeOnReturn": int(option("return_charge", "3000") or 3000),
            "remoteAreaDeliverable": "N",
            "unionDeliveryType": "NOT_UNION_DELIVERY",
            "returnCenterCode": option("return_center_code", "NO_RETURN_CENTERCODE"),
            "returnChargeName": option("return_charge_name", "반품지"),
            "companyContactNumber": option("company_contact_number", "02-0000-0000"),
            "returnZipCode": option("return_zip_code", "00000"),
            "returnAddress": option("return_address", ""),
            "returnAddressDetail": option("return_address_detail", ""),
            "returnCharge": int(option("return_charge", "3000") or 3000),
            "outboundShippingPlaceCode": option("outbound_shipping_place_code", "0"),
            "vendorUserId": option("vendor_user_id", self.vendor_id),
            "requested": True,  # submit for approval right away
            "items": items,
        }

    def _product(self, market_product_id: str) -> dict[str, Any]:
        data = self._seller_call(
            "GET", f"{SELLER_API}/seller-products/{common.numeric_id(MARKET, market_product_id)}"
        )
        if not isinstance(data, dict) or not isinstance(data.get("items"), list):
            raise TransientError(f"coupang seller product {market_product_id}: malformed response")
        return data

    def _vendor_item_ids(self, market_product_id: str) -> tuple[int, ...]:
        cached = self._item_ids.get(market_product_id)
        if cached is not None:
            self._item_ids.move_to_end(market_product_id)
            return cached
        items = self._product(market_product_id)["items"]
        ids = tuple(int(item["vendorItemId"]) for item in items if item.get("vendorItemId"))
        if not ids:
            raise TransientError(
                f"coupang seller product {market_product_id} has no vendor items yet (not approved)"
            )
        self._remember_items(market_product_id, ids)
        return ids

    def _remember_items(self, market_product_id: str, ids: tuple[int, ...]) -> None:
        self._item_ids[market_product_id] = ids
        self._item_ids.move_to_end(market_product_id)
        while len(self._item_ids) > ITEM_CACHE_SIZE:
            self._item_ids.popitem(last=False)

    def update_price(self, market_product_id: str, sale_price: int) -> None:
        """Set the listing's base price; option items keep their price difference to the
        cheapest item. ``forceSalePriceUpdate`` because our pricing rules already decided."""
        common.check_price(MARKET, sale_price, market_product_id)
        items = [i for i in self._product(market_product_id)["items"] if i.get("vendorItemId")]
        if not items:
            raise TransientError(f"coupang seller product {market_product_id} has no vendor items")
        self._remember_items(market_product_id, tuple(int(i["vendorItemId"]) for i in items))
        base = min(int(i["salePrice"]) for i in items)
        for item in items:
            price = sale_price + int(item["salePrice"]) - base
            self._seller_call(
                "PUT",
                f"{SELLER_API}/vendor-items/{int(item['vendorItemId'])}/prices/{price}",
                params={"forceSalePriceUpdate": "true"},
            )

    def update_stock(self, market_product_id: str, stock: int) -> None:
        """Set the sellable quantity of every item of the listing (does not resume a stopped
        sale; see :meth:`resume_listing`)."""
        common.check_stock(MARKET, stock, market_product_id)
        for vendor_item_id in self._vendor_item_ids(market_product_id):
            self._seller_call(
                "PUT", f"{SELLER_API}/vendor-items/{vendor_item_id}/quantities/{stock}"
            )

    def update_option_stock(self, market_product_id: str, stocks: Sequence[OptionStock]) -> None:
        """Set each vendor item's own quantity (``PUT vendor-items/{id}/quantities/{n}``): the
        item is matched to its option by its attribute (or its ``itemName``, "name value", as
        registered); an item no option names gets 0."""
        for entry in stocks:
            common.check_stock(MARKET, entry.stock, market_product_id)
        items = [i for i in self._product(market_product_id)["items"] if i.get("vendorItemId")]
        if not items:
            raise TransientError(f"coupang seller product {market_product_id} has no vendor items")
        self._remember_items(market_product_id, tuple(int(i["vendorItemId"]) for i in items))
        for item in items:
            name, value = item_option(item)
            quantity = option_stock_for(
                stocks, name=name, value=value, label=common.str_or_none(item.get("itemName"))
            )
            self._seller_call(
                "PUT",
                f"{SELLER_API}/vendor-items/{int(item['vendorItemId'])}/quantities/{quantity or 0}",
            )

    def suspend_listing(self, market_product_id: str) -> None:
        for vendor_item_id in self._vendor_item_ids(market_product_id):
            self._seller_call("PUT", f"{SELLER_API}/vendor-items/{vendor_item_id}/sales/stop")

    def resume_listing(self, market_product_id: str) -> None:
        for vendor_item_id in self._vendor_item_ids(market_product_id):
            self._seller_call("PUT", f"{SELLER_API}/vendor-items/{vendor_item_id}/sales/resume")

    # ------------------------------------------------------------------ read back (sync)

    def get_listing(self, market_product_id: str) -> MarketListingState | None:
        """What Coupang shows for one seller product, or None when Coupang does not know it.

        ``GET seller-products/{sellerProductId}`` gives the approval state (``statusName``) and
        the vendor items; each approved item's sale state, stock and price come from
        ``GET vendor-items/{vendorItemId}/inventories`` (``onSale``, ``amountInStock``,
        ``salePrice``), the read that shows whether a sale stop really took effect. An approved
        product is ``on_sale`` when at least one item is on sale with stock, else ``suspended``.
        """
        number = common.numeric_id(MARKET, market_product_id)
        status, body = self._call(
            "GET", f"{SELLER_API}/seller-products/{number}", ok_statuses=(400, 404)
        )
        data = body.get("data")
        if body.get("code") != "SUCCESS" or not isinstance(data, dict):
            if status in (400, 404):
                return None  # "상품이 존재하지 않습니다": not (or no longer) this vendor's
            raise TransientError(f"coupang seller product {market_product_id}: malformed response")
        items = [i for i in data.get("items") or [] if isinstance(i, dict)]
        sku = next((str(i["externalVendorSku"]) for i in items if i.get("externalVendorSku")), None)
        name = common.str_or_none(data.get("sellerProductName"))
        approval = str(data.get("statusName") or "")
        state = _COUPANG_APPROVAL_STATES.get(approval, "pending")
        item_ids = [int(i["vendorItemId"]) for i in items if i.get("vendorItemId")]
        if state != "approved" or not item_ids:
            # Not approved (yet): no vendor items to read; the product shows nothing on sale.
            prices = [int(i["salePrice"]) for i in items if i.get("salePrice") is not None]
            return MarketListingState(
                market_product_id=str(number),
                external_sku=sku,
                sale_state="pending" if state == "approved" else state,
                sale_price=min(prices) if prices else None,
                stock=None,
                name=name,
                raw={"statusName": approval},
            )
        self._remember_items(str(number), tuple(item_ids))
        on_sale = False
        stock = 0
        prices = []
        options = []
        for item in (i for i in items if i.get("vendorItemId")):
            vendor_item_id = int(item["vendorItemId"])
            inventory = self._seller_call(
                "GET", f"{SELLER_API}/vendor-items/{vendor_item_id}/inventories"
            )
            if not isinstance(inventory, dict):
                raise TransientError(
                    f"coupang vendor item {vendor_item_id}: malformed inventory response"
                )
            amount = int(inventory.get("amountInStock") or 0)
            stock += amount
            if inventory.get("salePrice") is not None:
                prices.append(int(inventory["salePrice"]))
            on_sale = on_sale or (inventory.get("onSale") is True and amount > 0)
            name, value = item_option(item)
            options.append(
                MarketOptionState(
                    option_id=str(vendor_item_id),
                    name=name,
                    value=value,
                    stock=amount,
                    on_sale=inventory.get("onSale") is True,
                    label=common.str_or_none(item.get("itemName")),
                )
            )
        return MarketListingState(
            market_product_id=str(number),
            external_sku=sku,
            sale_state="on_sale" if on_sale else "suspended",
            sale_price=min(prices) if prices else None,
            stock=stock,
            name=name,
            options=tuple(options),
            raw={"statusName": approval},
        )

    # ------------------------------------------------------------------ listings (reconcile)

    def _listing_page_size(self) -> int:
        # The account option ``listings_page_size`` tunes it (a page is one reconcile task).
        return int(self.account.option("listings_page_size", "") or LISTING_PAGE_SIZE)

    def iter_listings(self) -> Iterator[MarketListingState]:
        """Every seller product of the vendor, newest first, each once per call (pages of
        :meth:`listings_page` until its cursor is ``None``). A record that cannot be read raises
        :class:`TransientError` naming it: nothing is guessed, the caller aborts its run."""
        seen: set[str] = set()
        cursors: set[str] = set()
        cursor: str | None = None
        for _ in range(MAX_LISTING_PAGES):
            page = self.listings_page(cursor)
            for state in page.items:
                if state.market_product_id not in seen:  # a list that grew while we read it
                    seen.add(state.market_product_id)
                    yield state
            cursor = page.next_cursor
            if cursor is None:
                return
            if cursor in cursors:
                raise TransientError(f"coupang seller-products: nextToken {cursor} repeated")
            cursors.add(cursor)
        raise TransientError(f"coupang seller-products: more than {MAX_LISTING_PAGES} pages")

    def listings_page(self, cursor: str | None = None) -> Page[MarketListingState]:
        """One page of the seller-product list (``GET .../seller-products?vendorId&maxPerPage
        &nextToken``; ``cursor`` is the ``nextToken`` of the previous page, ``None`` first).

        The list carries no items, so each product is read (its items' ``externalVendorSku``,
        prices, vendor item ids) and, once approved, each vendor item's ``inventories``
        (``onSale``, ``amountInStock``): about ``1 + items`` calls per listing, hence small
        pages (a page is one task's work)."""
        params: dict[str, Any] = {
            "vendorId": self.vendor_id,
            "maxPerPage": self._listing_page_size(),
        }
        if cursor:
            params["nextToken"] = cursor
        path = f"{SELLER_API}/seller-products"
        status, body = self._call("GET", path, params=params)
        if body.get("code") != "SUCCESS":
            raise PermanentError(
                f"coupang GET {path} -> {status} {body.get('code')}: {_short(body.get('message'))}"
            )
        data = body.get("data")
        if not isinstance(data, list):
            raise TransientError(f"coupang GET {path}: 'data' is not a list")
        states = []
        for summary in data:
            product_id = summary.get("sellerProductId") if isinstance(summary, dict) else None
            if product_id is None or not str(product_id).isdigit():
                raise TransientError("coupang seller-products: a summary has no sellerProductId")
            states.append(
                self._listing_state(str(product_id), str(summary.get("statusName") or ""))
            )
        return Page(items=tuple(states), next_cursor=str(body.get("nextToken") or "") or None)

    def _listing_state(self, product_id: str, status_name: str) -> MarketListingState:
        state = _PRODUCT_STATES.get(status_name)
        if state is None:
            raise TransientError(
                f"coupang seller product {product_id}: unknown statusName {_short(status_name, 40)}"
            )
        if state == "deleted":
            return MarketListingState(product_id, None, "deleted", raw={"statusName": status_name})
        product = self._product(product_id)
        items = [i for i in product["items"] if isinstance(i, dict)]
        skus = sorted({str(i["externalVendorSku"]) for i in items if i.get("externalVendorSku")})
        prices = [int(i["salePrice"]) for i in items if i.get("salePrice") is not None]
        raw = {"statusName": status_name, "external_skus": skus}
        sale_state = state
        stock: int | None = None
        if state == "approved":
            item_ids = [int(i["vendorItemId"]) for i in items if i.get("vendorItemId")]
            if not item_ids:
                sale_state = "pending"  # approved but vendor items not issued yet
            else:
                self._remember_items(product_id, tuple(item_ids))
                inventories = [self._item_inventory(item_id) for item_id in item_ids]
                on_sale = [inv for inv in inventories if inv["onSale"] is True]
                stock = sum(int(inv.get("amountInStock") or 0) for inv in on_sale)
                sale_state = "on_sale" if on_sale and stock > 0 else "suspended"
        return MarketListingState(
            market_product_id=product_id,
            # One key on every item is what we register; several keys are not one of ours.
            external_sku=skus[0] if len(skus) == 1 else None,
            sale_state=sale_state,  # type: ignore[arg-type]
            sale_price=min(prices) if prices else None,
            stock=stock,
            name=common.str_or_none(product.get("sellerProductName")),
            raw=raw,
        )

    def _item_inventory(self, vendor_item_id: int) -> dict[str, Any]:
        data = self._seller_call(
            "GET", f"{SELLER_API}/vendor-items/{int(vendor_item_id)}/inventories"
        )
        if not isinstance(data, dict) or not isinstance(data.get("onSale"), bool):
            raise TransientError(f"coupang vendor item {vendor_item_id}: malformed inventory")
        return data

    # ------------------------------------------------------------------ orders

    def iter_orders(
        self,
        changed_since: datetime,
        until: datetime,
        known: KnownOrderStates | None = None,
    ) -> Iterator[MarketOrder]:
        """Order sheets ordered in ``[changed_since, until)`` in the configured statuses, each
        once per call. Raises :class:`TransientError` on a malformed record (never skips one).
        ``known`` is not used: a sheet is the whole order already, no detail read to save."""
        common.check_window(MARKET, changed_since, until)
        seen: set[str] = set()
        window_start = changed_since
        while window_start < until:
            window_end = min(until, window_start + ORDER_WINDOW)
            for status in self.order_statuses:
                for record in self._order_pages(window_start, window_end, status):
                    order = _parse_order_sheet(record)
                    if not changed_since <= order.ordered_at < until:
                        continue  # the query is minute-rounded; keep the exact window
                    if order.market_order_id in seen:
                        continue  # delivered twice (page overlap or status change mid-sweep)
                    seen.add(order.market_order_id)
                    yield order
            window_start = window_end

    def _order_pages(self, start: datetime, end: datetime, status: str) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {
            "createdAtFrom": _minute_floor(start).strftime("%Y-%m-%dT%H:%M"),
            "createdAtTo": _minute_ceil(end).strftime("%Y-%m-%dT%H:%M"),
            "searchType": "timeFrame",
            "status": status,
            "maxPerPage": MAX_PER_PAGE,
        }
        yield from self._token_pages(
            f"{OPENAPI_V4}/{self.vendor_id}/ordersheets", params, f"ordersheets ({status})"
        )

    def _token_pages(
        self, path: str, params: dict[str, Any], what: str
    ) -> Iterator[dict[str, Any]]:
        """The records of an openapi v4 list followed through its ``nextToken`` pages. A
        repeated token or more than ``MAX_PAGES_PER_WINDOW`` pages is an error, never an early
        end: a page silently skipped would be orders or claims never seen."""
        params = dict(params)
        tokens_seen: set[str] = set()
        for _ in range(MAX_PAGES_PER_WINDOW):
            status_code, body = self._call("GET", path, params=params)
            if not response_ok(body):
                raise PermanentError(
                    f"coupang {what} -> {status_code} code {body.get('code')}: "
                    f"{_short(body.get('message'))}"
                )
            records = body.get("data")
            if not isinstance(records, list):
                raise TransientError(f"coupang {what}: 'data' is not a list")
            yield from records
            next_token = str(body.get("nextToken") or "")
            if not next_token:
                return
            if next_token in tokens_seen:
                raise TransientError(f"coupang {what}: nextToken {next_token} repeated")
            tokens_seen.add(next_token)
            params["nextToken"] = next_token
        raise TransientError(f"coupang {what}: more than {MAX_PAGES_PER_WINDOW} pages")

    def _order_sheet(self, shipment_box_id: str) -> dict[str, Any]:
        box_id = common.numeric_id(MARKET, shipment_box_id)
        status, body = self._call("GET", f"{OPENAPI_V4}/{self.vendor_id}/ordersheets/{box_id}")
        data = body.get("data")
        if not response_ok(body) or not isinstance(data, dict):
            raise PermanentError(
                f"coupang ordersheet {shipment_box_id} -> {status} {body.get('code')}"
            )
        return data

    def acknowledge(self, market_order_ids: Iterable[str]) -> None:
        """ACCEPT -> INSTRUCT (상품준비중) for these shipment boxes, 50 per call. Safe to repeat.

        Coupang applies acknowledgement only to ACCEPT boxes and answers any other box with a
        per-box failure (``responseCode`` 99, "배송상태를 변경할 수 없습니다"), so a blind re-send
        after a lost answer would report boxes it had in fact acknowledged as failed. Hence the
        request is never repeated by the HTTP layer; after an unknown outcome (timeout, lost
        answer, 5xx) the boxes' states are read and only boxes still in ACCEPT are sent again,
        and a refused box that already is INSTRUCT (or further) counts as done."""
        box_ids = list(dict.fromkeys(int(common.numeric_id(MARKET, i)) for i in market_order_ids))
        failures: list[_BoxFailure] = []
        for chunk in common.chunks(box_ids, MAX_ACK_IDS):
            failures += self._acknowledge_chunk(chunk)
        _raise_for_box_failures("acknowledgement", failures)

    def _acknowledge_chunk(self, box_ids: list[int]) -> list[_BoxFailure]:
        try:
            results = self._send_boxes("acknowledgement", box_ids)
        except RateLimitedError:
            raise  # refused before anything happened: nothing to look up
        except TransientError:
            log.info(
                "coupang %s: acknowledgement outcome unknown for %d box(es); reading their state",
                self.account.name,
                len(box_ids),
            )
            pending = [
                b for b in box_ids if self._box_status_or_none(b) not in ACKNOWLEDGED_STATUSES
            ]
            if not pending:
                return []
            # Still ACCEPT: the lost call did not reach them. A second unknown outcome raises
            # TransientError: the task's retry comes back here and reads the states again.
            box_ids, results = pending, self._send_boxes("acknowledgement", pending)
        failures: list[_BoxFailure] = []
        for box_id in box_ids:
            result = results.get(box_id)
            if result is not None and result.succeed:
                continue
            # Refused (or not answered): done already if the box is past ACCEPT, e.g. acknowledged
            # by an earlier call whose answer was lost.
            status = self._box_status_or_none(box_id)
            if status in ACKNOWLEDGED_STATUSES:
                continue
            failures.append(_BoxFailure.of(box_id, result, status))
        return failures

    def upload_tracking(self, uploads: Sequence[TrackingUpload]) -> None:
        """Invoice upload (INSTRUCT -> DEPARTURE), one entry per shipment box and vendor item.
        Safe to repeat.

        Coupang takes invoices only for INSTRUCT boxes; a re-send for a box that already got it
        is refused (``INVALID_STATUS``, ``retryRequired: false``). Every box's order sheet is read
        first anyway (it carries the ``orderId`` and vendor items the upload needs), so a box
        that already shows this invoice number is skipped, and an unknown outcome of the upload
        itself is resolved by reading the states again instead of re-sending.

        An upload that carries the box's ``orderId`` (``market_group_id``) and its vendor items,
        as the order sweep stored them, is sent without that first read: one call for up to 50
        boxes instead of 51. Coupang's answer per box decides then; a refused box is read once
        (an earlier upload that got through shows our invoice: done), and a refusal says the
        box's state."""
        dtos_by_box: dict[int, list[dict[str, Any]]] = {}
        wanted_invoice: dict[int, str] = {}
        for upload in uploads:
            if not upload.tracking_number:
                raise PermanentError(f"coupang {upload.market_order_id}: empty tracking number")
            code = carrier_code(upload.carrier)
            if upload.market_group_id and upload.market_item_ids:
                box_id = int(upload.market_order_id)
                if box_id in wanted_invoice:
                    raise PermanentError(
                        f"coupang shipment box {box_id}: more than one tracking upload in one "
                        f"call (split shipping is not supported)"
                    )
                known = {"shipmentBoxId": box_id, "orderId": upload.market_group_id}
                wanted_invoice[box_id] = upload.tracking_number
                dtos_by_box[box_id] = [
                    invoice_dto(known, int(item), code, upload.tracking_number)
                    for item in upload.market_item_ids
                ]
                continue
            sheet = self._order_sheet(upload.market_order_id)
            box_id = int(sheet["shipmentBoxId"])
            if box_id in wanted_invoice:
                # One invoice per box (no split shipping): a second one would replace the first.
                raise PermanentError(
                    f"coupang shipment box {box_id}: more than one tracking upload in one call "
                    f"(split shipping is not supported)"
                )
            status = str(sheet.get("status") or "")
            if status in SHIPPED_STATUSES:
                if str(sheet.get("invoiceNumber") or "") == upload.tracking_number:
                    wanted_invoice[box_id] = upload.tracking_number
                    continue  # uploaded before (an earlier answer may have been lost)
                raise PermanentError(
                    f"coupang shipment box {box_id} is {status} with another invoice number; "
                    f"changing it needs the invoice-update API"
                )
            if status != "INSTRUCT":
                raise PermanentError(
                    f"coupang shipment box {box_id} is {status or 'in no state'}: invoices are "
                    f"accepted only for INSTRUCT boxes (acknowledge the order first)"
                )
            vendor_items = [str(i.get("vendorItemId")) for i in sheet.get("orderItems") or []]
            wanted = list(upload.market_item_ids) or vendor_items
            unknown = [i for i in wanted if i not in vendor_items]
            if unknown:
                raise PermanentError(
                    f"coupang {upload.market_order_id}: vendor items {unknown} are not in this "
                    f"shipment box"
                )
            wanted_invoice[box_id] = upload.tracking_number
            dtos_by_box[box_id] = [
                invoice_dto(sheet, int(item), code, upload.tracking_number) for item in wanted
            ]
        failures: list[_BoxFailure] = []
        box_ids = list(dtos_by_box)
        # All dtos of one box go in the same call (Coupang answers per box).
        for chunk in _box_chunks(box_ids, dtos_by_box, MAX_INVOICES_PER_CALL):
            failures += self._invoice_chunk(chunk, dtos_by_box, wanted_invoice)
        _raise_for_box_failures("invoice upload", failures)

    def _invoice_chunk(
        self,
        box_ids: list[int],
        dtos_by_box: dict[int, list[dict[str, Any]]],
        wanted_invoice: dict[int, str],
    ) -> list[_BoxFailure]:
        def dtos(boxes: list[int]) -> list[dict[str, Any]]:
            return [dto for box in boxes for dto in dtos_by_box[box]]

        def shipped_with_ours(box_id: int) -> tuple[bool, str | None]:
            sheet = self._order_sheet_or_none(box_id)
            if sheet is None:
                return False, None
            status = str(sheet.get("status") or "")
            ours = str(sheet.get("invoiceNumber") or "") == wanted_invoice[box_id]
            return status in SHIPPED_STATUSES and ours, status

        try:
            results = self._send_boxes("invoice upload", dtos(box_ids))
        except RateLimitedError:
            raise  # refused before anything happened: nothing to look up
        except TransientError:
            log.info(
                "coupang %s: invoice upload outcome unknown for %d box(es); reading their state",
                self.account.name,
                len(box_ids),
            )
            pending = [b for b in box_ids if not shipped_with_ours(b)[0]]
            if not pending:
                return []
            box_ids, results = pending, self._send_boxes("invoice upload", dtos(pending))
        failures: list[_BoxFailure] = []
        for box_id in box_ids:
            result = results.get(box_id)
            if result is not None and result.succeed:
                continue
            done, status = shipped_with_ours(box_id)
            if done:
                continue  # refused as INVALID_STATUS because an earlier upload got through
            failure = _BoxFailure.of(box_id, result, status)
            if failure.code in _PERMANENT_INVOICE_CODES:
                failure = replace(failure, retry=False)
            failures.append(failure)
        return failures

    # ------------------------------------------------------------------ claims

    def iter_claims(self, changed_since: datetime, until: datetime) -> Iterator[MarketClaim]:
        """Cancellation (``cancelType=CANCEL``) and return (``status=UC``) receipts created in
        ``[changed_since, until)``: one :class:`MarketClaim` per shipment box and vendor item,
        in windows of at most 23 hours following ``nextToken``."""
        common.check_window(MARKET, changed_since, until)
        window_start = changed_since
        while window_start < until:
            window_end = min(until, window_start + ORDER_WINDOW)
            for query in ({"cancelType": "CANCEL"}, {"cancelType": "RETURN", "status": "UC"}):
                for record in self._receipt_pages(window_start, window_end, query):
                    for claim in _parse_receipt(record):
                        if changed_since <= claim.requested_at < until:
                            yield claim
            window_start = window_end

    def _receipt_pages(
        self, start: datetime, end: datetime, query: dict[str, str]
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {
            "searchType": "timeFrame",
            "createdAtFrom": _minute_floor(start).strftime("%Y-%m-%dT%H:%M"),
            "createdAtTo": _minute_ceil(end).strftime("%Y-%m-%dT%H:%M"),
            "maxPerPage": MAX_PER_PAGE,
            **query,
        }
        yield from self._token_pages(
            f"{OPENAPI_V4}/{self.vendor_id}/returnRequests", params, "returnRequests"
        )

    def confirm_cancel(self, claim: MarketClaim) -> None:
        """출고중지완료 (``PATCH returnRequests/{receiptId}/stoppedShipment``) for a cancellation
        before shipment. Coupang refuses a second one, so a refusal is checked against the box:
        already CANCELED counts as done (an earlier answer was lost); otherwise PermanentError
        with Coupang's message."""
        receipt_id = int(common.numeric_id(MARKET, claim.claim_id))
        path = f"{OPENAPI_V4}/{self.vendor_id}/returnRequests/{receipt_id}/stoppedShipment"
        body = {"vendorId": self.vendor_id, "receiptId": receipt_id, "cancelCount": claim.quantity}
        try:
            status, answer = self._call(
                "PATCH", path, json=body, idempotent=False, ok_statuses=(400,)
            )
        except TransientError:
            if self._box_status_or_none(int(claim.market_order_id)) == "CANCELED":
                return
            raise
        if status == 200 and response_ok(answer):
            return
        if self._box_status_or_none(int(claim.market_order_id)) == "CANCELED":
            return
        raise PermanentError(
            f"coupang stoppedShipment {receipt_id} -> {status}: {_short(answer.get('message'))}"
        )

    def _send_boxes(self, what: str, values: Sequence[Any]) -> dict[int, _BoxResult]:
        """One acknowledgement (box ids) or invoice (dtos) call; the per-box results. Never
        repeated by the HTTP layer: an unknown outcome raises TransientError to the caller,
        which reads the boxes' states."""
        if what == "acknowledgement":
            method, endpoint, body = (
                "PUT",
                "ordersheets/acknowledgement",
                acknowledgement_body(self.vendor_id, values),
            )
        else:
            method, endpoint, body = "POST", "orders/invoices", invoice_body(self.vendor_id, values)
        _, answer = self._call(
            method, f"{OPENAPI_V4}/{self.vendor_id}/{endpoint}", json=body, idempotent=False
        )
        return parse_box_results(answer, what)

    def _box_status_or_none(self, box_id: int) -> str | None:
        sheet = self._order_sheet_or_none(box_id)
        return None if sheet is None else str(sheet.get("status") or "")

    def _order_sheet_or_none(self, box_id: int) -> dict[str, Any] | None:
        """The box's order sheet, or None when Coupang does not know it (a permanent answer);
        a transient failure propagates (the state is unknown, the task retries)."""
        try:
            return self._order_sheet(str(box_id))
        except PermanentError:
            return None


# --------------------------------------------------------------------------- helpers


def _parse_order_sheet(record: Any) -> MarketOrder:
    """One ordersheet record -> MarketOrder; TransientError naming the box when malformed."""
    box = record.get("shipmentBoxId") if isinstance(record, dict) else None
    try:
        if not isinstance(record, dict):
            raise TypeError("order sheet is not an object")
        lines = record["orderItems"]
        if not isinstance(lines, list) or not lines:
            raise ValueError("no orderItems")
        ordered_at = datetime.fromisoformat(record["orderedAt"])
        if ordered_at.tzinfo is None:
            ordered_at = ordered_at.replace(tzinfo=KST)  # Coupang answers in KST, no offset
        items = tuple(
            MarketOrderItem(
                market_item_id=str(line["vendorItemId"]),
                market_product_id=common.str_or_none(line.get("sellerProductId")),
                external_sku=common.str_or_none(line.get("externalVendorSkuCode")),
                name=str(line.get("vendorItemName") or line.get("sellerProductName") or ""),
                quantity=int(line["shippingCount"]),
                unit_price=int(line["salesPrice"]),
                option=common.str_or_none(line.get("sellerProductItemName")),
            )
            for line in lines
        )
        receiver_raw = record.get("receiver") or {}
        receiver = BuyerInfo(
            name=str(receiver_raw.get("name") or ""),
            phone=str(receiver_raw.get("safeNumber") or receiver_raw.get("receiverNumber") or ""),
            address=str(receiver_raw.get("addr1") or ""),
            address_detail=str(receiver_raw.get("addr2") or ""),
            zipcode=str(receiver_raw.get("postCode") or ""),
            message=str(record.get("parcelPrintMessage") or ""),
        )
        total = sum(int(line.get("orderPrice") or 0) for line in lines) + int(
            record.get("shippingPrice") or 0
        )
        return MarketOrder(
            market="coupang",
            market_order_id=str(record["shipmentBoxId"]),
            ordered_at=ordered_at,
            status=str(record["status"]),
            items=items,
            receiver=receiver,
            changed_at=None,
            total_price=total,
            raw={k: v for k, v in record.items() if k not in _PERSONAL_FIELDS},
        )
    except (KeyError, TypeError, ValueError) as exc:
        # Never skip an order silently: fail the sweep, which retries (and the record is
        # usually fine on the next read). The message names the record, not its content.
        raise TransientError(
            f"coupang ordersheets: malformed order sheet (shipmentBoxId={box}): "
            f"{type(exc).__name__} {exc if isinstance(exc, KeyError) else ''}".rstrip()
        ) from None


_OPEN_RECEIPT_STATUSES = frozenset({"RELEASE_STOP_UNCHECKED", "RETURNS_UNCHECKED"})


def _parse_receipt(record: Any) -> list[MarketClaim]:
    """One returnRequests receipt -> a claim per returned item; TransientError when malformed."""
    receipt = record.get("receiptId") if isinstance(record, dict) else None
    try:
        if not isinstance(record, dict):
            raise TypeError("receipt is not an object")
        created = datetime.fromisoformat(str(record["createdAt"]))
        if created.tzinfo is None:
            created = created.replace(tzinfo=KST)
        kind: ClaimKind = "cancel" if record["receiptType"] == "CANCEL" else "return"
        status = str(record["receiptStatus"])
        return [
            MarketClaim(
                market=MARKET,
                kind=kind,
                claim_id=str(record["receiptId"]),
                market_order_id=str(item["shipmentBoxId"]),
                market_item_id=str(item["vendorItemId"]),
                status=status,
                requested_at=created,
                quantity=int(item.get("cancelCount") or 1),
                open=status in _OPEN_RECEIPT_STATUSES,
            )
            for item in record["returnItems"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise TransientError(
            f"coupang returnRequests: malformed receipt (receiptId={receipt}): {type(exc).__name__}"
        ) from None


@dataclass(frozen=True)
class _BoxResult:
    """One ``responseList`` entry of an acknowledgement or invoice answer."""

    succeed: bool
    code: str
    retry_required: bool


@dataclass(frozen=True)
class _BoxFailure:
    box_id: int
    code: str
    retry: bool
    # The box's state as read after the refusal (None: not read, or unknown to Coupang).
    status: str | None = None

    @classmethod
    def of(cls, box_id: int, result: _BoxResult | None, status: str | None) -> _BoxFailure:
        if result is None:
            return cls(box_id, "NOT_ANSWERED", True, status)
        if status is None and result.code == "NOT_FOUND_SHIPMENT_BOX":
            return cls(box_id, result.code, False)  # unknown to Coupang: retrying cannot help
        return cls(box_id, result.code, result.retry_required, status)


def acknowledgement_body(vendor_id: str, box_ids: Sequence[Any]) -> dict[str, Any]:
    """The documented acknowledgement request: ``{"vendorId", "shipmentBoxIds": [...]}``."""
    return {"vendorId": vendor_id, "shipmentBoxIds": [int(b) for b in box_ids]}


def invoice_body(vendor_id: str, dtos: Sequence[Any]) -> dict[str, Any]:
    """The documented invoice request: ``{"vendorId", "orderSheetInvoiceApplyDtos": [...]}``."""
    return {"vendorId": vendor_id, "orderSheetInvoiceApplyDtos": list(dtos)}


def invoice_dto(
    sheet: dict[str, Any], vendor_item_id: int, delivery_company_code: str, invoice_number: str
) -> dict[str, Any]:
    """One ``orderSheetInvoiceApplyDtos`` entry (no split shipping)."""
    return {
        "shipmentBoxId": int(sheet["shipmentBoxId"]),
        "orderId": int(sheet["orderId"]),
        "vendorItemId": int(vendor_item_id),
        "deliveryCompanyCode": delivery_company_code,
        "invoiceNumber": invoice_number,
        "splitShipping": False,
        "preSplitShipped": False,
        "estimatedShippingDate": "",
    }


def parse_box_results(body: dict[str, Any], what: str) -> dict[int, _BoxResult]:
    """``data.responseList`` of an acknowledgement / invoice answer, by shipment box id.
    TransientError when the envelope is not the documented one (a gateway's answer)."""
    data = body.get("data")
    if not response_ok(body) or not isinstance(data, dict):
        raise TransientError(f"coupang {what}: unexpected response (code {body.get('code')})")
    entries = data.get("responseList")
    if not isinstance(entries, list):
        raise TransientError(f"coupang {what}: response has no responseList")
    results: dict[int, _BoxResult] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not str(entry.get("shipmentBoxId", "")).isdigit():
            raise TransientError(f"coupang {what}: malformed responseList entry")
        results[int(entry["shipmentBoxId"])] = _BoxResult(
            succeed=entry.get("succeed") is True,
            code=str(entry.get("resultCode") or ""),
            retry_required=entry.get("retryRequired") is True,
        )
    return results


def _box_chunks(
    box_ids: list[int], dtos_by_box: dict[int, list[dict[str, Any]]], size: int
) -> Iterator[list[int]]:
    """Boxes grouped so one call carries at most ``size`` dtos (a box is never split)."""
    chunk: list[int] = []
    count = 0
    for box_id in box_ids:
        n = len(dtos_by_box[box_id])
        if chunk and count + n > size:
            yield chunk
            chunk, count = [], 0
        chunk.append(box_id)
        count += n
    if chunk:
        yield chunk


def _raise_for_box_failures(what: str, failures: Sequence[_BoxFailure]) -> None:
    """Boxes Coupang refused, by id and result code: TransientError when every one of them
    may succeed on a retry, PermanentError otherwise."""
    if not failures:
        return
    shown = ", ".join(
        f"{f.box_id} ({f.code or 'refused'}{', box is ' + f.status if f.status else ''})"
        for f in failures[:20]
    )
    more = f" (+{len(failures) - 20} more)" if len(failures) > 20 else ""
    message = f"coupang {what} failed for shipment boxes {shown}{more}"
    raise (TransientError if all(f.retry for f in failures) else PermanentError)(message)


def _minute_floor(value: datetime) -> datetime:
    return value.astimezone(KST).replace(second=0, microsecond=0)


def _minute_ceil(value: datetime) -> datetime:
    floor = _minute_floor(value)
    return floor if floor == value else floor + timedelta(minutes=1)


def _short(message: Any, limit: int = 200) -> str:
    text = str(message or "").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _no_query(path: str) -> str:
    return path.split("?", 1)[0]


__all__ = ["CoupangConnector", "carrier_code", "coupang_authorization", "response_ok"]
