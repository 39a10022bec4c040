"""Naver Commerce API (SmartStore) connector (marketplace).

Auth: OAuth2 client credentials. ``POST /external/v1/oauth2/token`` with ``client_id``,
``timestamp`` (ms) and ``client_secret_sign = base64(bcrypt.hashpw(f"{client_id}_{timestamp}",
salt=client_secret))`` — Naver's client secret *is* a bcrypt salt. The token (3 h) is cached per
connector (one connector per account per process, see the registry) and re-issued when less than
``token_refresh_margin_s`` is left, or once when a call is answered ``401`` (revoked, or expired
early by the platform's clock).

Identifiers: a listing is an *origin product* (``market_product_id`` = originProductNo; our key is
its ``sellerManagementCode``). An order is a *product order* (``market_order_id`` = productOrderId):
Naver tracks status, confirmation, dispatch and claims per product order, so that is the unit we
forward and track; the buyer-facing orderId is in ``raw["order"]["orderId"]``.

Idempotent registration: ``create_listing`` first searches the seller management code
(``searchKeywordType=SELLER_CODE``) and returns the listing found. Naver does not refuse a second
product with the same code, so this look-up is the only guard; when duplicates already exist the
oldest is used and a warning names the code.

Orders: ``iter_orders`` reads ``last-changed-statuses`` in windows of at most 24 h, following
``data.more`` (``moreFrom`` + ``moreSequence``), then fetches details with ``query`` (<= 300 ids).
A product order delivered twice (page overlap) is yielded once per call. Rate limiting: the
shared limiter is fed Naver's ``GNCP-GW-RateLimit-*`` headers and 429s by :class:`PlatformHttp`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import bcrypt
import requests
from urllib3 import encode_multipart_formdata

from dropship.errors import PermanentError, TransientError
from dropship.platforms import _market_common as common
from dropship.platforms import carriers
from dropship.platforms._market_common import KST
from dropship.platforms.config import AccountSettings
from dropship.platforms.http import AuthRejectedError, PlatformHttp
from dropship.platforms.interfaces import (
    BuyerInfo,
    ClaimKind,
    KnownOrderStates,
    ListingSaleState,
    MarketClaim,
    MarketListingRequest,
    MarketListingResult,
    MarketListingState,
    MarketOptionState,
    MarketOrder,
    MarketOrderItem,
    OptionStock,
    OrderChange,
    Page,
    TrackingUpload,
    option_stock_for,
)

log = logging.getLogger(__name__)

MARKET = "naver"
TOKEN_PATH = "/external/v1/oauth2/token"
PAY_ORDER = "/external/v1/pay-order/seller/product-orders"
ORDER_WINDOW = timedelta(hours=24)
PAGE_LIMIT = 300  # limitCount maximum
MAX_QUERY_IDS = 300
MAX_DISPATCH = 30
MAX_CONFIRM = 30
MAX_PAGES_PER_WINDOW = 2_000
MAX_OPTIONAL_IMAGES = 9
IMAGE_UPLOAD_PATH = "/external/v1/product-images/upload"
MAX_UPLOAD_IMAGES = 10  # images per upload call
# A seller management code normally matches one listing; a page this size also shows duplicates.
SKU_SEARCH_PAGE_SIZE = 100
# Listing every product (reconcile): products/search pages, oldest product number first.
LISTING_PAGE_SIZE = 100
MAX_LISTING_PAGES = 100_000
# Naver's product statusType -> our normalised sale state.
_PRODUCT_STATES: dict[str, str] = {
    "SALE": "on_sale",
    "OUTOFSTOCK": "suspended",
    "SUSPENSION": "suspended",
    "CLOSE": "suspended",
    "PROHIBITION": "suspended",
    "WAIT": "pending",
    "UNADMISSION": "refused",
    "REJECTION": "refused",
    "DELETE": "deleted",
}

# Origin product statusType -> normalised sale state (see NaverConnector.get_listing).
_NAVER_SALE_STATES: dict[str, ListingSaleState] = {
    "SALE": "on_sale",
    "OUTOFSTOCK": "suspended",
    "SUSPENSION": "suspended",
    "CLOSE": "suspended",
    "WAIT": "pending",
    "PROHIBITION": "refused",
    "UNADMISSION": "refused",
    "REJECTION": "refused",
    "DELETE": "deleted",
}

# lastChangedTo is inclusive (file id 46062719477); asking up to 1 ms before the end keeps our
# windows half-open (Naver's times carry milliseconds), so a change at a window's end is read by
# the next window only.
_INCLUSIVE_END_STEP = timedelta(milliseconds=1)


def client_secret_sign(client_id: str, client_secret: str, timestamp_ms: int) -> str:
    """Naver's token signature: base64 of the bcrypt hash of ``client_id_timestamp`` salted
    with the client secret."""
    try:
        hashed = bcrypt.hashpw(f"{client_id}_{timestamp_ms}".encode(), client_secret.encode())
    except ValueError:
        # bcrypt rejects a secret that is not a salt; say so without echoing it.
        raise PermanentError(
            "naver: client_secret is not a bcrypt salt (expected '$2a$..'); check the account "
            "credentials"
        ) from None
    return base64.b64encode(hashed).decode()


def carrier_code(carrier: str) -> str:
    """Naver's deliveryCompanyCode for a carrier (our id, a name or a code); PermanentError
    naming it when unknown. The table is :mod:`dropship.platforms.carriers`."""
    return carriers.market_code(MARKET, carrier)


def naver_time(value: datetime) -> str:
    return value.astimezone(KST).isoformat(timespec="milliseconds")


class NaverConnector:
    """:class:`~dropship.platforms.interfaces.MarketConnector` for one Naver Commerce account."""

    market = MARKET

    def __init__(
        self,
        *,
        account: AccountSettings,
        http: PlatformHttp,
        cache: Any = None,
        token_refresh_margin_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if account.platform != "naver":
            raise PermanentError(f"account {account.name!r} is not a naver account")
        self.account = account
        self.http = http
        self.client_id = account.secret("client_id")
        self._client_secret = account.secret("client_secret")
        self.token_refresh_margin_s = token_refresh_margin_s
        self._clock = clock
        self._token: str | None = None
        self._token_expires_at = 0.0  # on self._clock
        self._token_lock = threading.Lock()
        self.tokens_issued = 0  # for operators/tests: how often we had to authenticate

    def __repr__(self) -> str:
        return f"NaverConnector(account={self.account.name!r})"

    # ------------------------------------------------------------------ auth

    def _access_token(self, *, force: bool = False) -> str:
        with self._token_lock:
            fresh = self._token is not None and (
                self._clock() < self._token_expires_at - self.token_refresh_margin_s
            )
            if fresh and not force:
                assert self._token is not None
                return self._token
            timestamp_ms = int(time.time() * 1000)
            response = self.http.request(
                "POST",
                TOKEN_PATH,
                data={
                    "client_id": self.client_id,
                    "timestamp": str(timestamp_ms),
                    "client_secret_sign": client_secret_sign(
                        self.client_id, self._client_secret, timestamp_ms
                    ),
                    "grant_type": "client_credentials",
                    "type": "SELF",
                },
                idempotent=True,  # issuing a token has no side effect worth guarding
            )
            body = common.json_object(response, MARKET, "POST", TOKEN_PATH)
            token = body.get("access_token")
            expires_in = body.get("expires_in")
            if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
                raise TransientError("naver token: response lacks access_token/expires_in")
            self._token = token
            self._token_expires_at = self._clock() + float(expires_in)
            self.tokens_issued += 1
            log.info(
                "naver %s: access token issued (expires in %ss)", self.account.name, expires_in
            )
            return token

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> tuple[int, dict[str, Any]]:
        """One API call with the bearer token; re-issues the token once on 401."""
        for attempt in (1, 2):
            token = self._access_token(force=attempt == 2)

            def bearer(
                prepared: requests.PreparedRequest, token: str = token
            ) -> requests.PreparedRequest:
                prepared.headers["Authorization"] = f"Bearer {token}"
                return prepared

            try:
                response = self.http.request(
                    method,
                    path,
                    params=params,
                    json=json,
                    data=data,
                    headers=headers,
                    auth_hook=bearer,
                    idempotent=idempotent,
                    ok_statuses=ok_statuses,
                )
            except AuthRejectedError as exc:
                if exc.status == 401 and attempt == 1:
                    log.info("naver %s: token rejected (401); re-issuing", self.account.name)
                    continue
                raise
            return response.status_code, common.json_object(response, MARKET, method, path)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ images

    def upload_images(self, files: Sequence[tuple[str, bytes]]) -> list[str]:
        """Upload images to Naver's own image host (``POST /external/v1/product-images/upload``,
        multipart ``imageFiles``, at most :data:`MAX_UPLOAD_IMAGES` per call); returns their
        Naver URLs in the order sent. Naver refuses product images hosted anywhere else.
        Repeating an upload only makes a second hosted copy, so it is retried like a read."""
        if not files:
            return []
        if len(files) > MAX_UPLOAD_IMAGES:
            raise PermanentError(
                f"naver image upload: {len(files)} images, at most {MAX_UPLOAD_IMAGES} per call"
            )
        body, content_type = encode_multipart_formdata(
            [("imageFiles", (name, data, "image/jpeg")) for name, data in files]
        )
        status, answer = self._call(
            "POST",
            IMAGE_UPLOAD_PATH,
            data=body,
            headers={"Content-Type": content_type},
            idempotent=True,
            ok_statuses=(400,),
        )
        images = answer.get("images") if status == 200 else None
        urls = [i.get("url") for i in images or [] if isinstance(i, dict)]
        if status != 200 or len(urls) != len(files) or not all(urls):
            raise PermanentError(
                f"naver image upload -> HTTP {status} {answer.get('code')}: "
                f"{str(answer.get('message'))[:200]}"
            )
        return [str(u) for u in urls]

    # ------------------------------------------------------------------ listings

    def find_listing_by_external_sku(self, external_sku: str) -> MarketListingResult | None:
        """The listing carrying ``external_sku`` (the oldest, if several do), or None."""
        if not external_sku:
            raise PermanentError("naver: external_sku must not be empty")
        _, body = self._call(
            "POST",
            "/external/v1/products/search",
            json={
                "searchKeywordType": "SELLER_CODE",
                "sellerManagementCode": external_sku,
                "page": 1,
                "size": SKU_SEARCH_PAGE_SIZE,
            },
            idempotent=True,  # a search
        )
        matches: list[common.ListingMatch] = []
        for content in body.get("contents") or []:
            # One match per origin product, whichever of its channel products shows the code.
            channel = next(
                (
                    c
                    for c in content.get("channelProducts") or []
                    if c.get("sellerManagementCode") == external_sku
                ),
                None,
            )
            if channel is not None:
                matches.append(
                    common.ListingMatch(
                        market_product_id=str(content["originProductNo"]),
                        created_at=common.parse_time(channel.get("regDate")),
                        status=channel.get("statusType"),
                    )
                )
        return common.oldest_listing(MARKET, self.account.name, external_sku, matches)

    def create_listing(
        self, request: MarketListingRequest, *, first_attempt: bool = False
    ) -> MarketListingResult:
        """Register the product once per ``external_sku``: an existing listing with that code
        is returned (``already_existed=True``) instead of creating a second one, which Naver
        would accept. A create that timed out is not repeated here (a non-idempotent POST):
        the task's retry comes back through the look-up and finds it. ``first_attempt=True``
        (the caller knows no create for this key was ever sent) skips the look-up."""
        product = self._product_body(request)  # bad input fails before any call
        if first_attempt:
            return self._create_product(request, product)
        existing = self.find_listing_by_external_sku(request.external_sku)
        if existing is not None:
            log.info("naver %s: listing %s already exists", self.account.name, request.external_sku)
            return existing
        return self._create_product(request, product)

    def _create_product(
        self, request: MarketListingRequest, product: dict[str, Any]
    ) -> MarketListingResult:
        """The create POST, sent once and without a look-up: callers use :meth:`create_listing`."""
        status, body = self._call("POST", "/external/v2/products", json=product, ok_statuses=(400,))
        if status == 200 and body.get("originProductNo") is not None:
            return MarketListingResult(
                market_product_id=str(body["originProductNo"]),
                external_sku=request.external_sku,
                status="SALE" if request.stock > 0 else "OUTOFSTOCK",
            )
        fields = ", ".join(
            str(i.get("name")) for i in body.get("invalidInputs") or [] if isinstance(i, dict)
        )
        raise PermanentError(
            f"naver create listing {request.external_sku} -> HTTP {status} {body.get('code')}"
            + (f" (invalid: {fields})" if fields else "")
        )

    def _product_body(self, request: MarketListingRequest) -> dict[str, Any]:
        common.check_price(MARKET, request.sale_price, request.external_sku)
        if not request.images:
            raise PermanentError(
                f"naver listing {request.external_sku}: at least one image is required"
            )
        option = self.account.option
        detail: dict[str, Any] = {
            "sellerCodeInfo": {"sellerManagementCode": request.external_sku},
            "naverShoppingSearchInfo": {"brandName": request.brand or ""},
            "afterServiceInfo": {
                "afterServiceTelephoneNumber": option("as_telephone", "02-0000-0000"),
                "afterServiceGuideContent": "판매자에게 문의해 주세요.",
            },
            "originAreaInfo": {"originAreaCode": "03", "content": "상세설명에 표시"},
            "minorPurchasable": True,
            "productInfoProvidedNotice": {
                "productInfoProvidedNoticeType": "ETC",
                "etc": {
                    "returnCostReason": "상세페이지 참조",
                    "noRefundReason": "상세페이지 참조",
                    "qualityAssuranceStandard": "상세페이지 참조",
                    "compensationProcedure": "상세페이지 참조",
                    "troubleShootingContents": "상세페이지 참조",
                    "itemName": request.name[:50],
                    "modelName": "상세페이지 참조",
                    "manufacturer": "상세페이지 참조",
                    "afterServiceDirector": option("as_telephone", "02-0000-0000"),
                },
            },
        }
        if request.options:
            group = request.options[0].name
            detail["optionInfo"] = {
                "optionCombinationSortType": "CREATE",
                "optionCombinationGroupNames": {"optionGroupName1": group},
                "optionCombinations": [
                    {
                        "optionName1": o.value,
                        "stockQuantity": o.stock,
                        "price": o.price_delta,
                        "sellerManagerCode": o.supplier_option_code or "",
                        "usable": True,
                    }
                    for o in request.options
                ],
            }
        return {
            "originProduct": {
                "statusType": "SALE",
                "saleType": "NEW",
                "leafCategoryId": request.category_id,
                "name": request.name[:100],
                "detailContent": request.description_html or request.name,
                "images": {
                    "representativeImage": {"url": request.images[0]},
                    "optionalImages": [
                        {"url": u} for u in request.images[1 : 1 + MAX_OPTIONAL_IMAGES]
                    ],
                },
                "salePrice": request.sale_price,
                # With option combinations Naver keeps the product's stock as their sum.
                "stockQuantity": (
                    sum(o.stock for o in request.options) if request.options else request.stock
                ),
                "deliveryInfo": {
                    "deliveryType": "DELIVERY",
                    "deliveryAttributeType": "NORMAL",
                    "deliveryCompany": option("delivery_company_code", "CJGLS"),
                    "deliveryFee": {
                        "deliveryFeeType": "FREE" if request.shipping_fee == 0 else "PAID",
                        "baseFee": request.shipping_fee,
                        "deliveryFeePayType": "PREPAID",
                    },
                    "claimDeliveryInfo": {
                        "returnDeliveryFee": int(option("return_charge", "3000") or 3000),
                        "exchangeDeliveryFee": int(option("return_charge", "3000") or 3000) * 2,
                    },
                },
                "detailAttribute": detail,
            },
            "smartstoreChannelProduct": {
                "naverShoppingRegistration": option("naver_shopping", "false") == "true",
                "channelProductDisplayStatusType": "ON",
            },
        }

    def _origin_product(self, market_product_id: str) -> dict[str, Any]:
        _, body = self._call("GET", _origin_product_path(market_product_id))
        if not isinstance(body.get("originProduct"), dict):
            raise TransientError(f"naver origin product {market_product_id}: malformed response")
        return body

    def _put_origin_product(self, market_product_id: str, product: dict[str, Any]) -> None:
        channel = dict(product.get("smartstoreChannelProduct") or {})
        channel.pop("channelProductNo", None)
        self._call(
            "PUT",
            _origin_product_path(market_product_id),
            json={"originProduct": product["originProduct"], "smartstoreChannelProduct": channel},
        )

    def update_price(self, market_product_id: str, sale_price: int) -> None:
        """Naver edits prices through the whole origin product: read it, change, write back."""
        common.check_price(MARKET, sale_price, market_product_id)
        product = self._origin_product(market_product_id)
        product["originProduct"]["salePrice"] = sale_price
        self._put_origin_product(market_product_id, product)

    def update_stock(self, market_product_id: str, stock: int) -> None:
        """Set the stock. A sold-out listing (OUTOFSTOCK, which Naver sets at zero stock) goes back
        on sale when restocked; a listing we suspended stays suspended."""
        common.check_stock(MARKET, stock, market_product_id)
        product = self._origin_product(market_product_id)
        origin = product["originProduct"]
        origin["stockQuantity"] = stock
        if stock > 0 and origin.get("statusType") == "OUTOFSTOCK":
            origin["statusType"] = "SALE"
        self._put_origin_product(market_product_id, product)

    def update_option_stock(self, market_product_id: str, stocks: Sequence[OptionStock]) -> None:
        """Set each option combination's ``stockQuantity`` through the whole origin product
        (read, change, ``PUT`` with every combination's ``id`` kept): a combination is matched
        by its ``sellerManagerCode`` (our supplier option code), else its value; one no option
        names gets 0. The product's stock is their sum; a sold-out listing (OUTOFSTOCK) with
        stock again goes back on sale, one we suspended stays suspended."""
        for entry in stocks:
            common.check_stock(MARKET, entry.stock, market_product_id)
        product = self._origin_product(market_product_id)
        origin = product["originProduct"]
        combos = _combinations(origin)
        if not combos:
            raise PermanentError(
                f"naver origin product {market_product_id} has no option combinations"
            )
        total = 0
        for combo in combos:
            quantity = option_stock_for(
                stocks,
                name=None,
                value=common.str_or_none(combo.get("optionName1")),
                code=common.str_or_none(combo.get("sellerManagerCode")),
            )
            combo["stockQuantity"] = quantity or 0
            if combo.get("usable", True):
                total += quantity or 0
        origin["stockQuantity"] = total
        if total > 0 and origin.get("statusType") == "OUTOFSTOCK":
            origin["statusType"] = "SALE"
        self._put_origin_product(market_product_id, product)

    def suspend_listing(self, market_product_id: str) -> None:
        self._change_status(market_product_id, {"statusType": "SUSPENSION"})

    def resume_listing(self, market_product_id: str, stock: int) -> None:
        if stock <= 0:
            raise PermanentError(f"naver {market_product_id}: resuming a sale needs stock > 0")
        self._change_status(market_product_id, {"statusType": "SALE", "stockQuantity": stock})

    def _change_status(self, market_product_id: str, change: dict[str, Any]) -> None:
        path = f"{_origin_product_path(market_product_id, api='v1')}/change-status"
        self._call("PUT", path, json=change)

    # ------------------------------------------------------------------ read back (sync)

    def get_listing(self, market_product_id: str) -> MarketListingState | None:
        """What Naver shows for one origin product (``GET /external/v2/products/origin-products/
        {no}``), or None when Naver does not know it (404). ``statusType`` SALE is ``on_sale``
        (``suspended`` when its stock is 0 or the channel product's display is off), OUTOFSTOCK,
        SUSPENSION and CLOSE are ``suspended``, WAIT ``pending``, PROHIBITION / UNADMISSION /
        REJECTION ``refused``, DELETE ``deleted``."""
        status, body = self._call(
            "GET", _origin_product_path(market_product_id), ok_statuses=(404,)
        )
        if status == 404:
            return None
        origin = body.get("originProduct")
        if not isinstance(origin, dict):
            raise TransientError(f"naver origin product {market_product_id}: malformed response")
        status_type = str(origin.get("statusType") or "")
        found = _NAVER_SALE_STATES.get(status_type)
        if found is None:
            raise TransientError(
                f"naver origin product {market_product_id}: unknown statusType {status_type!r}"
            )
        stock = origin.get("stockQuantity")
        stock = int(stock) if isinstance(stock, int | float) else None
        options = tuple(
            MarketOptionState(
                option_id=str(combo.get("id") or ""),
                name=None,
                value=common.str_or_none(combo.get("optionName1")),
                stock=int(combo.get("stockQuantity") or 0),
                on_sale=bool(combo.get("usable", True)),
                seller_code=common.str_or_none(combo.get("sellerManagerCode")),
            )
            for combo in _combinations(origin)
        )
        if options:
            # What a buyer can pick is the usable combinations' stock, whatever the product says.
            stock = sum(o.stock for o in options if o.on_sale)
        channel = body.get("smartstoreChannelProduct")
        display = (channel or {}).get("channelProductDisplayStatusType")
        state: ListingSaleState = found
        if state == "on_sale" and (stock == 0 or display == "SUSPENSION"):
            state = "suspended"
        detail = origin.get("detailAttribute") or {}
        code = ((detail.get("sellerCodeInfo") or {}) if isinstance(detail, dict) else {}).get(
            "sellerManagementCode"
        )
        price = origin.get("salePrice")
        return MarketListingState(
            market_product_id=common.numeric_id(MARKET, market_product_id),
            external_sku=common.str_or_none(code),
            sale_state=state,
            sale_price=int(price) if isinstance(price, int | float) else None,
            stock=stock,
            name=common.str_or_none(origin.get("name")),
            options=options,
            raw={"statusType": status_type},
        )

    # ------------------------------------------------------------------ listings (reconcile)

    def _listing_page_size(self) -> int:
        # The account option ``listings_page_size`` tunes it (a page is one reconcile task).
        return int(self.account.option("listings_page_size", "") or LISTING_PAGE_SIZE)

    def iter_listings(self) -> Iterator[MarketListingState]:
        """Every origin product of the application, each once per call (pages of
        :meth:`listings_page` until ``last``). A record that cannot be read raises
        :class:`TransientError` naming it (the caller aborts its run instead of guessing)."""
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(MAX_LISTING_PAGES):
            page = self.listings_page(cursor)
            for state in page.items:
                if state.market_product_id not in seen:  # moved between pages meanwhile
                    seen.add(state.market_product_id)
                    yield state
            cursor = page.next_cursor
            if cursor is None:
                return
        raise TransientError(f"naver products/search: more than {MAX_LISTING_PAGES} pages")

    def listings_page(self, cursor: str | None = None) -> Page[MarketListingState]:
        """One ``POST /external/v1/products/search`` page (``cursor``: the page number, ``None``
        for the first); the next cursor is ``None`` once the answer says ``last``."""
        page = int(cursor) if cursor else 1
        if page < 1:
            raise PermanentError(f"naver products/search: bad page cursor {cursor!r}")
        _, body = self._call(
            "POST",
            "/external/v1/products/search",
            json={"page": page, "size": self._listing_page_size(), "orderType": "NO"},
            idempotent=True,  # a search
        )
        contents = body.get("contents")
        if not isinstance(contents, list):
            raise TransientError("naver products/search: 'contents' is not a list")
        last = body.get("last")
        if not isinstance(last, bool):
            raise TransientError("naver products/search: answer has no 'last' flag")
        states = tuple(_listing_state(content) for content in contents)
        done = last or not contents
        return Page(items=states, next_cursor=None if done else str(page + 1))

    # ------------------------------------------------------------------ orders

    def iter_orders(
        self,
        changed_since: datetime,
        until: datetime,
        known: KnownOrderStates | None = None,
    ) -> Iterator[MarketOrder]:
        """Product orders last changed in ``[changed_since, until)``, each once per call.
        Raises :class:`TransientError` on a malformed record (never skips one).

        With ``known``, a page's changes whose product order status and claim status (both in
        the change entry, file id 46062719477) the caller already stores are not queried for
        details: a sweep re-reading its overlap every second would otherwise read every order
        of the last minutes again, one ``query`` call per 300."""
        common.check_window(MARKET, changed_since, until)
        seen: set[str] = set()
        window_start = changed_since
        while window_start < until:
            window_end = min(until, window_start + ORDER_WINDOW)
            for changes in self._change_pages(window_start, window_end):
                fresh: dict[str, dict[str, Any]] = {}
                for change in changes:
                    product_order_id = str(change.get("productOrderId") or "")
                    if not product_order_id:
                        raise TransientError("naver last-changed-statuses: a change has no id")
                    if product_order_id in seen or product_order_id in fresh:
                        continue  # delivered twice (page overlap)
                    fresh[product_order_id] = change
                seen.update(fresh)
                if known is not None and fresh:
                    stored = known(
                        [
                            OrderChange(
                                market_order_id=product_order_id,
                                # An entry without a status never matches: its details are read.
                                status=str(change.get("productOrderStatus") or ""),
                                claim=common.str_or_none(change.get("claimStatus")),
                            )
                            for product_order_id, change in fresh.items()
                        ]
                    )
                    fresh = {k: v for k, v in fresh.items() if k not in stored}
                yield from self._details(fresh)
            window_start = window_end

    def iter_claims(self, changed_since: datetime, until: datetime) -> Iterator[MarketClaim]:
        """Product orders with a claim requested in ``[changed_since, until)``
        (``lastChangedType=CLAIM_REQUESTED``), read back with ``query`` for their claim type and
        status: one :class:`MarketClaim` per product order."""
        common.check_window(MARKET, changed_since, until)
        window_start = changed_since
        while window_start < until:
            window_end = min(until, window_start + ORDER_WINDOW)
            for changes in self._change_pages(window_start, window_end, "CLAIM_REQUESTED"):
                ids = list(dict.fromkeys(str(c.get("productOrderId") or "") for c in changes))
                for chunk in common.chunks([i for i in ids if i], MAX_QUERY_IDS):
                    _, body = self._call(
                        "POST",
                        f"{PAY_ORDER}/query",
                        json={"productOrderIds": chunk},
                        idempotent=True,
                    )
                    records = body.get("data")
                    if not isinstance(records, list):
                        raise TransientError("naver product-orders/query: 'data' is not a list")
                    for record in records:
                        claim = _parse_claim(record)
                        if claim is not None:
                            yield claim
            window_start = window_end

    def confirm_cancel(self, claim: MarketClaim) -> None:
        """취소 승인 (``POST product-orders/{id}/claim/cancel/approve``). Naver refuses a second
        approval, so a refusal is checked against the product order: CANCELED counts as done
        (an earlier answer was lost); otherwise PermanentError with Naver's message."""
        product_order_id = common.numeric_id(MARKET, claim.market_order_id)
        path = f"{PAY_ORDER}/{product_order_id}/claim/cancel/approve"
        try:
            status, body = self._call("POST", path, json={}, idempotent=False, ok_statuses=(400,))
        except TransientError:
            if self._product_order_status(product_order_id) == "CANCELED":
                return
            raise
        if status == 200:
            return
        if self._product_order_status(product_order_id) == "CANCELED":
            return
        raise PermanentError(
            f"naver cancel approve {product_order_id} -> {status} {body.get('code')}: "
            f"{str(body.get('message'))[:200]}"
        )

    def _product_order_status(self, product_order_id: str) -> str | None:
        _, body = self._call(
            "POST",
            f"{PAY_ORDER}/query",
            json={"productOrderIds": [product_order_id]},
            idempotent=True,
        )
        for record in body.get("data") or []:
            po = record.get("productOrder") if isinstance(record, dict) else None
            if isinstance(po, dict) and str(po.get("productOrderId")) == product_order_id:
                return str(po.get("productOrderStatus") or "")
        return None

    def _change_pages(
        self, start: datetime, end: datetime, change_type: str | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Changes in ``[start, end)``, one list per page, following ``more`` as documented: the
        next request's ``lastChangedFrom`` is ``more.moreFrom`` and its ``moreSequence`` is
        ``more.moreSequence`` (file id 46062719477)."""
        params: dict[str, Any] = {
            "lastChangedFrom": naver_time(start),
            "lastChangedTo": naver_time(end - _INCLUSIVE_END_STEP),
            "limitCount": PAGE_LIMIT,
        }
        if change_type:
            params["lastChangedType"] = change_type
        cursors_seen: set[tuple[str, str]] = set()
        for _ in range(MAX_PAGES_PER_WINDOW):
            _, body = self._call("GET", f"{PAY_ORDER}/last-changed-statuses", params=params)
            changes, cursor = parse_change_page(body)
            yield changes
            if cursor is None:
                return
            if cursor in cursors_seen:
                raise TransientError("naver last-changed-statuses: paging cursor did not advance")
            cursors_seen.add(cursor)
            params["lastChangedFrom"], params["moreSequence"] = cursor
        raise TransientError(f"naver last-changed-statuses: more than {MAX_PAGES_PER_WINDOW} pages")

    def _details(self, changes: dict[str, dict[str, Any]]) -> Iterator[MarketOrder]:
        ids = list(changes)
        for chunk in common.chunks(ids, MAX_QUERY_IDS):
            _, body = self._call(
                "POST", f"{PAY_ORDER}/query", json={"productOrderIds": chunk}, idempotent=True
            )
            records = body.get("data")
            if not isinstance(records, list):
                raise TransientError("naver product-orders/query: 'data' is not a list")
            by_id: dict[str, MarketOrder] = {}
            for record in records:
                order = _parse_product_order(record, changes)
                by_id[order.market_order_id] = order
            missing = [i for i in chunk if i not in by_id]
            if missing:
                # A changed product order we cannot read: fail the sweep rather than lose it.
                raise TransientError(
                    f"naver product-orders/query: no details for {len(missing)} product order(s), "
                    f"e.g. {missing[0]}"
                )
            for product_order_id in chunk:
                yield by_id[product_order_id]

    def acknowledge(self, market_order_ids: Iterable[str]) -> None:
        """발주확인 (place order confirmation) for these product orders, 30 per call."""
        ids = [str(i) for i in market_order_ids]
        failures: list[str] = []
        for chunk in common.chunks(ids, MAX_CONFIRM):
            _, body = self._call(
                "POST", f"{PAY_ORDER}/confirm", json={"productOrderIds": chunk}, idempotent=True
            )
            failures += _failed_ids(body, "confirm")
        common.raise_for_failures(MARKET, "confirm", "product orders", failures)

    def upload_tracking(self, uploads: Sequence[TrackingUpload]) -> None:
        """발송처리 (dispatch) with carrier and tracking number, at most 30 per call."""
        now = naver_time(datetime.now(KST))
        items: list[dict[str, Any]] = []
        for upload in uploads:
            if not upload.tracking_number:
                raise PermanentError(f"naver {upload.market_order_id}: empty tracking number")
            code = carrier_code(upload.carrier)
            for product_order_id in upload.market_item_ids or (upload.market_order_id,):
                number = upload.tracking_number
                items.append(dispatch_item(str(product_order_id), code, number, now))
        failures: list[str] = []
        for chunk in common.chunks(items, MAX_DISPATCH):
            # Dispatching the same product order with the same invoice again converges.
            _, body = self._call(
                "POST",
                f"{PAY_ORDER}/dispatch",
                json={"dispatchProductOrders": chunk},
                idempotent=True,
            )
            failures += _failed_ids(body, "dispatch")
        common.raise_for_failures(MARKET, "dispatch", "product orders", failures)


# --------------------------------------------------------------------------- helpers

_PERSONAL_ORDER_FIELDS = ("ordererName", "ordererTel", "ordererId", "ordererNo")
_PERSONAL_PRODUCT_ORDER_FIELDS = ("shippingAddress", "shippingMemo", "takingAddress")


def _parse_product_order(record: Any, changes: dict[str, dict[str, Any]]) -> MarketOrder:
    product_order_id = None
    try:
        if not isinstance(record, dict):
            raise TypeError("record is not an object")
        order = record["order"]
        po = record["productOrder"]
        product_order_id = str(po["productOrderId"])
        address = po.get("shippingAddress") or {}
        receiver = BuyerInfo(
            name=str(address.get("name") or ""),
            phone=str(address.get("tel1") or ""),
            address=str(address.get("baseAddress") or ""),
            address_detail=str(address.get("detailedAddress") or ""),
            zipcode=str(address.get("zipCode") or ""),
            message=str(po.get("shippingMemo") or ""),
        )
        item = MarketOrderItem(
            market_item_id=product_order_id,
            market_product_id=common.str_or_none(po.get("originalProductId")),
            external_sku=common.str_or_none(po.get("sellerProductCode")),
            name=str(po.get("productName") or ""),
            quantity=int(po["quantity"]),
            unit_price=int(po["unitPrice"]),
            option=common.str_or_none(po.get("productOption")),
            option_code=common.str_or_none(po.get("optionManageCode")),
        )
        change = changes.get(product_order_id) or {}
        changed_at = (
            datetime.fromisoformat(change["lastChangedDate"])
            if change.get("lastChangedDate")
            else None
        )
        raw = {
            "order": {k: v for k, v in order.items() if k not in _PERSONAL_ORDER_FIELDS},
            "productOrder": {
                k: v for k, v in po.items() if k not in _PERSONAL_PRODUCT_ORDER_FIELDS
            },
            "delivery": record.get("delivery"),
            "lastChangedType": change.get("lastChangedType"),
        }
        return MarketOrder(
            market="naver",
            market_order_id=product_order_id,
            ordered_at=datetime.fromisoformat(order["orderDate"]),
            status=str(po["productOrderStatus"]),
            items=(item,),
            receiver=receiver,
            changed_at=changed_at,
            total_price=int(po.get("totalPaymentAmount") or item.unit_price * item.quantity),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TransientError(
            f"naver product-orders/query: malformed product order ({product_order_id}): "
            f"{type(exc).__name__} {exc if isinstance(exc, KeyError) else ''}".rstrip()
        ) from None


_OPEN_CLAIM_STATUSES = frozenset({"CANCEL_REQUEST", "RETURN_REQUEST", "EXCHANGE_REQUEST"})


def _parse_claim(record: Any) -> MarketClaim | None:
    """A queried product order -> its claim (None when it carries none)."""
    try:
        po = record["productOrder"]
        claim_type = po.get("claimType")
        if not claim_type:
            return None
        detail = record.get(str(claim_type).lower()) or {}
        requested = detail.get("claimRequestDate") or record["order"]["orderDate"]
        kinds: dict[str, ClaimKind] = {"CANCEL": "cancel", "RETURN": "return"}
        kind = kinds.get(str(claim_type), "exchange")
        status = str(po.get("claimStatus") or "")
        return MarketClaim(
            market=MARKET,
            kind=kind,
            claim_id=str(detail.get("claimId") or po["productOrderId"]),
            market_order_id=str(po["productOrderId"]),
            market_item_id=str(po["productOrderId"]),
            status=status,
            requested_at=datetime.fromisoformat(str(requested)),
            quantity=int(po.get("quantity") or 1),
            open=status in _OPEN_CLAIM_STATUSES,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TransientError(
            f"naver product-orders/query: malformed claim record: {type(exc).__name__}"
        ) from None


def dispatch_item(
    product_order_id: str, delivery_company_code: str, tracking_number: str, dispatch_date: str
) -> dict[str, Any]:
    """One ``dispatchProductOrders`` entry of the dispatch page (file id 71060339404): parcel
    delivery (``DELIVERY``) with Naver's carrier code and the tracking number."""
    return {
        "productOrderId": product_order_id,
        "deliveryMethod": "DELIVERY",
        "deliveryCompanyCode": delivery_company_code,
        "trackingNumber": tracking_number,
        "dispatchDate": dispatch_date,
    }


def parse_change_page(body: dict[str, Any]) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """One ``last-changed-statuses`` answer: its changes and the ``(moreFrom, moreSequence)``
    cursor of the next page (None on the last page).

    Naver leaves ``data`` out when nothing changed in the range (file id 71297095581; the
    schema marks it optional, file id 46062719477): that is an empty last page, not an error.
    A ``data`` that is there but not the documented object is a broken answer (TransientError)."""
    if "data" not in body or body["data"] is None:
        return [], None
    data = body["data"]
    if not isinstance(data, dict):
        raise TransientError("naver last-changed-statuses: 'data' is not an object")
    changes = data.get("lastChangeStatuses")
    if changes is None:
        changes = []
    if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
        raise TransientError("naver last-changed-statuses: 'lastChangeStatuses' is not a list")
    more = data.get("more")
    if not more:
        return changes, None
    if not isinstance(more, dict):
        raise TransientError("naver last-changed-statuses: 'more' is not an object")
    cursor = (str(more.get("moreFrom") or ""), str(more.get("moreSequence") or ""))
    if not all(cursor):
        raise TransientError("naver last-changed-statuses: 'more' without a cursor")
    return changes, cursor


def _listing_state(content: Any) -> MarketListingState:
    """One products/search entry -> MarketListingState; TransientError naming it when
    malformed or in a state we do not know."""
    number = content.get("originProductNo") if isinstance(content, dict) else None
    channels = content.get("channelProducts") if isinstance(content, dict) else None
    if number is None or not isinstance(channels, list) or not channels:
        raise TransientError(f"naver products/search: malformed entry (originProductNo={number})")
    channel = channels[0]
    status = str(channel.get("statusType") or "")
    sale_state = _PRODUCT_STATES.get(status)
    if sale_state is None:
        raise TransientError(f"naver product {number}: unknown statusType {status[:40]!r}")
    if sale_state == "on_sale" and channel.get("channelProductDisplayStatusType") == "SUSPENSION":
        sale_state = "suspended"  # on sale but not displayed: nobody can buy it
    price = channel.get("salePrice")
    stock = channel.get("stockQuantity")
    return MarketListingState(
        market_product_id=str(number),
        external_sku=common.str_or_none(channel.get("sellerManagementCode")),
        sale_state=sale_state,  # type: ignore[arg-type]
        sale_price=int(price) if price is not None else None,
        stock=int(stock) if stock is not None else None,
        name=common.str_or_none(channel.get("name")),
        raw={"statusType": status},
    )


def _combinations(origin: dict[str, Any]) -> list[dict[str, Any]]:
    """The origin product's option combinations (the dicts themselves, to edit in place)."""
    detail = origin.get("detailAttribute")
    info = detail.get("optionInfo") if isinstance(detail, dict) else None
    combos = info.get("optionCombinations") if isinstance(info, dict) else None
    return [c for c in combos if isinstance(c, dict)] if isinstance(combos, list) else []


def _origin_product_path(market_product_id: str, api: str = "v2") -> str:
    """Origin products are read and written through v2; their status changes through v1."""
    number = common.numeric_id(MARKET, market_product_id)
    return f"/external/{api}/products/origin-products/{number}"


def _failed_ids(body: dict[str, Any], what: str) -> list[str]:
    data = body.get("data")
    if not isinstance(data, dict):
        raise TransientError(f"naver {what}: response has no 'data' object")
    return [
        str(info.get("productOrderId"))
        for info in data.get("failProductOrderInfos") or []
        if isinstance(info, dict)
    ]


__all__ = [
    "NaverConnector",
    "carrier_code",
    "client_secret_sign",
    "dispatch_item",
    "parse_change_page",
]
