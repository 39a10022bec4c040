"""Naver Commerce API (SmartStore), the subset the dropship system uses (served under ``/naver``).

* **Token**: ``POST /external/v1/oauth2/token`` with ``client_id``, ``timestamp`` (ms),
  ``grant_type=client_credentials``, ``type=SELF`` and
  ``client_secret_sign = base64(bcrypt.hashpw(f"{client_id}_{timestamp}", salt=client_secret))``.
  The sandbox recomputes the bcrypt hash with the client's secret (a bcrypt salt) exactly like
  Naver; a wrong sign or unknown client is ``401 GW.AUTHN``, a timestamp more than 5 minutes from
  the wall clock ``400``. Tokens live ``SandboxConfig.token_ttls_s["naver"]`` (3 h) of *world*
  time, so tests expire them by advancing the world clock. Like Naver, asking again while the
  current token has more than 30 minutes left returns the same token with its remaining
  ``expires_in``.
* Every other call needs ``Authorization: Bearer <token>``; unknown or expired tokens get
  ``401 GW.AUTHN``. Rate limiting (``429 GW.RATE_LIMIT`` + ``GNCP-GW-RateLimit-*``) comes from
  :class:`~dropship.sandbox.core.SandboxHandler`.
* **Products**: ``POST /external/v2/products`` (``originProduct`` + ``smartstoreChannelProduct``,
  our key in ``originProduct.detailAttribute.sellerCodeInfo.sellerManagementCode``),
  ``GET``/``PUT /external/v2/products/origin-products/{no}``,
  ``PUT /external/v1/products/origin-products/{no}/change-status`` and
  ``POST /external/v1/products/search`` (``searchKeywordType=SELLER_CODE``). Like Naver, a
  second product with a seller management code already in use is created all the same (a
  duplicate listing; the search then finds both). ``counts.listings`` counts products per code,
  so a client that registers twice shows up as 2.
* **Images**: ``POST /external/v1/product-images/upload`` (multipart ``imageFiles``, 1-10 per
  call, JPG/GIF/PNG/BMP decoded from the bytes, <= 20 MB, >= 600 px) answers URLs on the
  sandbox's Naver image host (``/naver/phinf/<no>/<name>``); product create and update refuse
  any image URL that is not on that host (``counts.naver_image_uploads`` counts uploads).
* **Orders**: ``GET .../product-orders/last-changed-statuses`` (``lastChangedFrom``/``To`` ISO-8601,
  both inclusive, at most 24 h, ``limitCount`` <= 300, continuation through ``data.more.moreFrom``
  / ``moreSequence``; an empty range is answered without ``data``), ``POST
  .../product-orders/query`` (<= 300 ids), ``.../confirm`` and ``.../dispatch`` (<= 30 product
  orders per call; carrier codes from Naver's table only, ``LOTTE`` is a ``TypeMismatch``).

Faults: ``duplicate_order_rate`` makes the next page start with this page's last change again;
``malformed_rate`` drops ``productOrder`` from a ``query`` result; ``drop_suspensions`` (a count)
answers that many ``SUSPENSION``/``OUTOFSTOCK``/zero-stock writes (change-status or the origin
product ``PUT``) as done without applying them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import bcrypt
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
from dropship.sandbox.core import AdminHandler, RouteSpec, SandboxState
from dropship.sandbox.credentials import accounts_for
from dropship.sandbox.images import inspect_image

PLATFORM = "naver"
EXT = "/external"
PAY_ORDER = f"{EXT}/v1/pay-order/seller/product-orders"
TIMESTAMP_MAX_SKEW_S = 300
TOKEN_REUSE_MIN_REMAINING_S = 1800
MAX_LIMIT_COUNT = 300
MAX_QUERY_IDS = 300
MAX_DISPATCH = 30
MAX_CONFIRM = 30
# Image rules (docs/PLATFORMS.md "Images"): the upload API's count, formats and size, and the
# smallest side shown; kept here, apart from dropship.images.rules, so a mistake there is caught.
MAX_UPLOAD_IMAGES = 10
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_FORMATS = frozenset({"JPEG", "GIF", "PNG", "BMP"})
MIN_IMAGE_PX = 600
MAX_OPTIONAL_IMAGES = 9
PRODUCT_STATUSES_SETTABLE = ("SALE", "OUTOFSTOCK", "SUSPENSION")
# Naver's delivery-company codes (택배사 코드) the sandbox accepts in dispatch and product
# delivery info: the domestic part of the dispatch page's code table (a copy of
# seller-dispatch-product-orders-pay-order-seller, file id 71060339404; stricter than Naver by
# leaving the rarer codes out). Lotte is ``HYUNDAI`` (its former owner's name); ``LOTTE`` is not
# a code and Naver refuses it with ``TypeMismatch`` (file id 71297095581).
DELIVERY_COMPANY_CODES = frozenset(
    {
        "CJGLS",
        "HYUNDAI",
        "HANJIN",
        "KGB",
        "EPOST",
        "REGISTPOST",
        "CUPARCEL",
        "CVSNET",
        "KDEXP",
        "DAESIN",
        "ILYANG",
        "CHUNIL",
        "HDEXP",
        "KUNYOUNG",
        "NONGHYUP",
        "HONAM",
        "SLX",
        "YONGMA",
        "HOMEPICK",
        "HANDEX",
        "HPL",
        "CH1",
        "DHL",
        "EMS",
        "FEDEX",
        "UPS",
        "TNT",
        "USPS",
    }
)
_CITIES = ("서울특별시 마포구", "경기도 성남시 분당구", "인천광역시 연수구", "광주광역시 북구")
_STREETS = ("양화로", "판교역로", "컨벤시아대로", "첨단과기로", "불정로")


def naver_time(value: datetime) -> str:
    """``2025-01-01T10:00:00.000+09:00``, as Naver renders times."""
    return value.astimezone(KST).isoformat(timespec="milliseconds")


def client_secret_sign(client_id: str, client_secret: str, timestamp_ms: int) -> str:
    password = f"{client_id}_{timestamp_ms}".encode()
    return base64.b64encode(bcrypt.hashpw(password, client_secret.encode())).decode()


# --------------------------------------------------------------------------- store


@dataclass
class NaverProduct:
    origin_product_no: int
    channel_product_no: int
    client_id: str
    seller_management_code: str | None
    origin_product: dict[str, Any]  # as posted (and updated); statusType/stock/price live here
    channel_product: dict[str, Any]
    created_at: datetime

    @property
    def status(self) -> str:
        return str(self.origin_product.get("statusType", "SALE"))

    def summary(self) -> dict[str, Any]:
        o = self.origin_product
        return {
            "originProductNo": self.origin_product_no,
            "channelProducts": [
                {
                    "originProductNo": self.origin_product_no,
                    "channelProductNo": self.channel_product_no,
                    "channelServiceType": "STOREFARM",
                    "name": o.get("name"),
                    "sellerManagementCode": self.seller_management_code,
                    "statusType": self.status,
                    "channelProductDisplayStatusType": self.channel_product.get(
                        "channelProductDisplayStatusType", "ON"
                    ),
                    "salePrice": o.get("salePrice"),
                    "stockQuantity": o.get("stockQuantity"),
                    "regDate": naver_time(self.created_at),
                }
            ],
        }


@dataclass
class ProductOrder:
    product_order_id: str
    order_id: str
    client_id: str
    ordered_at: datetime
    status: str  # PAYED, DELIVERING, DELIVERED, PURCHASE_DECIDED, CANCELED, ...
    place_order_status: str  # NOT_YET / OK
    changed_at: datetime
    change_type: str  # PAYED, DISPATCHED, ...
    seq: int
    product: dict[str, Any]
    receiver: dict[str, Any]
    orderer_name: str
    delivery: dict[str, Any] | None = None
    # Claim of the product order (claimType CANCEL/RETURN, claimStatus CANCEL_REQUEST...).
    claim_type: str | None = None
    claim_status: str | None = None
    claim_requested_at: datetime | None = None

    def change(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "productOrderId": self.product_order_id,
            "orderId": self.order_id,
            "lastChangedDate": naver_time(self.changed_at),
            "lastChangedType": self.change_type,
            "productOrderStatus": self.status,
            "paymentDate": naver_time(self.ordered_at + timedelta(seconds=3)),
            "receiverAddressChanged": False,
        }
        # claimType/claimStatus are part of the entry when the product order has a claim
        # (last-changed-statuses schema, file id 46062719477), the same as its detail says.
        claim_type, claim_status = self.claim()
        if claim_type:
            entry["claimType"] = claim_type
        if claim_status:
            entry["claimStatus"] = claim_status
        return entry

    def claim(self) -> tuple[str | None, str | None]:
        """(claimType, claimStatus): a claim made through the admin endpoint, else one a test
        set on the product."""
        return (
            self.claim_type or self.product.get("claimType"),
            self.claim_status or self.product.get("claimStatus"),
        )

    def detail(self) -> dict[str, Any]:
        return {
            "order": {
                "orderId": self.order_id,
                "orderDate": naver_time(self.ordered_at),
                "paymentDate": naver_time(self.ordered_at + timedelta(seconds=3)),
                "ordererName": self.orderer_name,
                "ordererTel": self.receiver["tel1"],
                "payLocationType": "MOBILE",
            },
            "productOrder": {
                "productOrderId": self.product_order_id,
                "productOrderStatus": self.status,
                "placeOrderStatus": self.place_order_status,
                **self.product,
                "shippingAddress": dict(self.receiver),
                "shippingMemo": "부재 시 경비실에 맡겨주세요",
                "claimType": self.claim()[0],
                "claimStatus": self.claim()[1],
            },
            "delivery": dict(self.delivery) if self.delivery else None,
            **self._claim_detail(),
        }

    def _claim_detail(self) -> dict[str, Any]:
        """The ``cancel`` / ``return`` object of the product order detail, when claimed."""
        if self.claim_type is None or self.claim_requested_at is None:
            return {}
        return {
            self.claim_type.lower(): {
                "claimId": self.product_order_id,
                "claimStatus": self.claim_status,
                "claimRequestDate": naver_time(self.claim_requested_at),
                "requestChannel": "구매자",
                "cancelReason" if self.claim_type == "CANCEL" else "returnReason": (
                    "INTENT_CHANGED"
                ),
            }
        }


def _order_option(origin: dict[str, Any], rng: random.Random) -> tuple[str, str | None, int] | None:
    """A buyer's pick among a product's usable option combinations: its ``productOption`` text,
    ``optionManageCode`` and price difference; None for a product without options."""
    info = (origin.get("detailAttribute") or {}).get("optionInfo") or {}
    combos = [c for c in info.get("optionCombinations") or [] if c.get("usable", True)]
    if not combos:
        return None
    combo = combos[rng.randrange(len(combos))]
    group = (info.get("optionCombinationGroupNames") or {}).get("optionGroupName1") or "옵션"
    code = combo.get("sellerManagerCode") or None
    return f"{group}: {combo.get('optionName1')}", code, int(combo.get("price") or 0)


def _combinations(origin: dict[str, Any]) -> list[dict[str, Any]]:
    info = (origin.get("detailAttribute") or {}).get("optionInfo") or {}
    combos = info.get("optionCombinations")
    return [c for c in combos if isinstance(c, dict)] if isinstance(combos, list) else []


def _derive_stock(origin: dict[str, Any]) -> None:
    """Like Naver: a product with option combinations has their (usable ones') stock in sum,
    whatever ``stockQuantity`` the request carried."""
    combos = _combinations(origin)
    if combos:
        origin["stockQuantity"] = sum(
            int(c.get("stockQuantity") or 0) for c in combos if c.get("usable", True)
        )


def _validate_combinations(
    origin: dict[str, Any], known_ids: set[int] | None = None
) -> tuple[str, str] | None:
    """Each combination needs a value, a stock count and a price difference; on an update an
    ``id`` must be one of the product's (a combination without one is a new option)."""
    info = (origin.get("detailAttribute") or {}).get("optionInfo")
    if info is None:
        return None
    combos = info.get("optionCombinations") if isinstance(info, dict) else None
    if not isinstance(combos, list):
        return "originProduct.detailAttribute.optionInfo.optionCombinations", "목록이어야 합니다."
    values: set[str] = set()
    for n, combo in enumerate(combos):
        where = f"originProduct.detailAttribute.optionInfo.optionCombinations[{n}]"
        if not isinstance(combo, dict):
            return where, "옵션 조합은 객체여야 합니다."
        value = combo.get("optionName1")
        if not isinstance(value, str) or not value.strip():
            return f"{where}.optionName1", "옵션값은 필수입니다."
        if value in values:
            return f"{where}.optionName1", f"옵션값이 중복되었습니다: {value[:40]}"
        values.add(value)
        stock = combo.get("stockQuantity")
        if not isinstance(stock, int) or isinstance(stock, bool) or stock < 0:
            return f"{where}.stockQuantity", "옵션 재고 수량은 0 이상이어야 합니다."
        if not isinstance(combo.get("price", 0), int):
            return f"{where}.price", "옵션가는 정수여야 합니다."
        option_id = combo.get("id")
        if option_id is not None and (known_ids is None or option_id not in known_ids):
            return f"{where}.id", f"옵션을 찾을 수 없습니다: {option_id}"
    return None


def _zeroes_stock(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """A write that takes the product or one of its options to zero stock (or suspends it):
    what the ``drop_suspensions`` fault answers without applying."""
    if int(after.get("stockQuantity") or 0) == 0 or after.get("statusType") == "SUSPENSION":
        return True
    old = {c.get("id"): int(c.get("stockQuantity") or 0) for c in _combinations(before)}
    return any(
        int(c.get("stockQuantity") or 0) == 0 and old.get(c.get("id"), 0) > 0
        for c in _combinations(after)
    )


@dataclass
class NaverStore:
    created_at: datetime
    tokens: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # token -> (client, exp)
    products: dict[int, NaverProduct] = field(default_factory=dict)
    # (client, code) -> originProductNos carrying it, oldest first (duplicates are allowed)
    by_code: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    product_orders: dict[str, ProductOrder] = field(default_factory=dict)
    next_origin_no: int = 10_000_000_001
    next_option_id: int = 27_000_000_001  # optionCombinations[].id, unique across products
    next_order_no: int = 2025_0000_0001
    seq: int = 0
    arrivals_until: datetime | None = None
    # Buyers' cancel requests still to come: (world time, productOrderId)
    pending_cancels: list[tuple[datetime, str]] = field(default_factory=list)
    # Naver's own image host: number -> (file name, bytes) of each uploaded image.
    images: dict[int, tuple[str, bytes]] = field(default_factory=dict)


class NaverWorld:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.store = state.platform_store(PLATFORM, lambda: NaverStore(created_at=state.now()))

    # ---- tokens

    def issue_token(self, client_id: str) -> tuple[str, int]:
        now = self.state.now()
        ttl = int(self.state.config.token_ttls_s.get(PLATFORM, 3 * 3600))
        with self.state.lock:
            for token, (owner, expires) in self.store.tokens.items():
                remaining = (expires - now).total_seconds()
                if owner == client_id and remaining > TOKEN_REUSE_MIN_REMAINING_S:
                    return token, int(remaining)
            token = secrets.token_urlsafe(24)
            self.store.tokens[token] = (client_id, now + timedelta(seconds=ttl))
            return token, ttl

    def client_of(self, token: str) -> str | None:
        with self.state.lock:
            entry = self.store.tokens.get(token)
        if entry is None or entry[1] <= self.state.now():
            return None
        return entry[0]

    # ---- products

    def create_product(
        self, client_id: str, origin: dict[str, Any], channel: dict[str, Any]
    ) -> NaverProduct:
        code = ((origin.get("detailAttribute") or {}).get("sellerCodeInfo") or {}).get(
            "sellerManagementCode"
        ) or None
        with self.state.lock:
            store = self.store
            number = store.next_origin_no
            store.next_origin_no += 1
            for combo in _combinations(origin):
                combo["id"] = store.next_option_id
                store.next_option_id += 1
            _derive_stock(origin)
            if int(origin.get("stockQuantity") or 0) == 0:
                origin["statusType"] = "OUTOFSTOCK"
            product = NaverProduct(
                origin_product_no=number,
                channel_product_no=number + 500_000_000,
                client_id=client_id,
                seller_management_code=code,
                origin_product=origin,
                channel_product=channel,
                created_at=self.state.now(),
            )
            store.products[number] = product
            if code:
                store.by_code.setdefault((client_id, code), []).append(number)
        if code:
            self.state.count("listings", code)
        return product

    def product(self, client_id: str, number: int) -> NaverProduct | None:
        with self.state.lock:
            product = self.store.products.get(number)
        return product if product is not None and product.client_id == client_id else None

    def products_by_code(self, client_id: str, code: str) -> list[NaverProduct]:
        """Every product of the client carrying ``code``, oldest first."""
        with self.state.lock:
            return [self.store.products[n] for n in self.store.by_code.get((client_id, code), [])]

    # ---- orders

    def _bump(self, order: ProductOrder, change_type: str) -> None:
        self.store.seq += 1
        order.seq = self.store.seq
        order.changed_at = self.state.now()
        order.change_type = change_type

    def add_order(
        self,
        client_id: str,
        ordered_at: datetime,
        rng: random.Random,
        product: NaverProduct | None = None,
        quantity: int = 1,
        items: int = 1,
        status: str = "PAYED",
    ) -> list[str]:
        with self.state.lock:
            store = self.store
            order_id = str(store.next_order_no)
            store.next_order_no += 1
            name = fake_name(rng)
            receiver = {
                "name": name,
                "tel1": f"010-{rng.randrange(1000, 9999)}-{rng.randrange(1000, 9999)}",
                "baseAddress": (
                    f"{rng.choice(_CITIES)} {rng.choice(_STREETS)} {rng.randrange(1, 300)}"
                ),
                "detailedAddress": f"{rng.randrange(101, 1999)}호",
                "zipCode": f"{rng.randrange(10000, 63999):05d}",
                "addressType": "DOMESTIC",
            }
            created = []
            for n in range(items):
                if product is not None:
                    o = product.origin_product
                    unit_price = int(o.get("salePrice") or 0)
                    product_info = {
                        "productId": str(product.channel_product_no),
                        "originalProductId": str(product.origin_product_no),
                        "productName": o.get("name"),
                        "sellerProductCode": product.seller_management_code,
                    }
                    option = _order_option(o, rng)
                    if option is not None:
                        # Naver names the option "group: value" and echoes its seller code.
                        unit_price += int(option[2])
                        product_info["productOption"] = option[0]
                        product_info["optionManageCode"] = option[1]
                else:
                    unit_price = rng.randrange(1_000, 90_000, 10)
                    product_info = {
                        "productId": str(8_000_000_000 + rng.randrange(1_000_000)),
                        "originalProductId": str(7_000_000_000 + rng.randrange(1_000_000)),
                        "productName": "외부 등록 상품",
                        "sellerProductCode": None,
                    }
                product_info.setdefault("productOption", None)
                product_info |= {
                    "quantity": quantity,
                    "unitPrice": unit_price,
                    "totalPaymentAmount": unit_price * quantity,
                    "deliveryFeeAmount": 0,
                }
                store.seq += 1
                po = ProductOrder(
                    product_order_id=f"{order_id}{n + 1:02d}",
                    order_id=order_id,
                    client_id=client_id,
                    ordered_at=ordered_at,
                    status=status,
                    place_order_status="NOT_YET",
                    changed_at=ordered_at + timedelta(seconds=3),
                    change_type="PAYED" if status == "PAYED" else status,
                    seq=store.seq,
                    product=product_info,
                    receiver=receiver,
                    orderer_name=name,
                )
                store.product_orders[po.product_order_id] = po
                created.append(po.product_order_id)
            return created

    def materialise_arrivals(self) -> None:
        """Create the orders that arrived (world clock) since the last look, for products on
        sale."""
        with self.state.lock:
            products = sorted(self.store.products.values(), key=lambda p: p.origin_product_no)
            on_sale = [p for p in products if p.status == "SALE"]
            for at, rng, product in due_arrivals(self.state, PLATFORM, self.store, on_sale):
                created = self.add_order(product.client_id, at, rng, product=product)
                cancel_at = buyer_cancels(self.state, PLATFORM, at)
                if cancel_at is not None:
                    self.store.pending_cancels.extend((cancel_at, po) for po in created)
            for product_order_id in due_cancels(self.state, self.store.pending_cancels):
                with contextlib.suppress(
                    ValueError
                ):  # cancelled or claimed meanwhile: nothing left to ask for
                    self.request_claim(product_order_id)

    def changes(
        self,
        client_id: str,
        start: datetime,
        end: datetime,
        after: tuple[datetime, int] | None,
        change_type: str | None,
    ) -> list[ProductOrder]:
        with self.state.lock:
            found = [
                po
                for po in self.store.product_orders.values()
                if po.client_id == client_id
                and start <= po.changed_at <= end  # both ends inclusive, as Naver documents
                and (after is None or (po.changed_at, po.seq) >= after)
                and (change_type is None or po.change_type == change_type)
            ]
        return sorted(found, key=lambda po: (po.changed_at, po.seq))

    def product_order(self, client_id: str, product_order_id: str) -> ProductOrder | None:
        with self.state.lock:
            po = self.store.product_orders.get(product_order_id)
        return po if po is not None and po.client_id == client_id else None

    def request_claim(self, product_order_id: str) -> ProductOrder:
        """The buyer asks to cancel: a CANCEL_REQUEST before dispatch, a RETURN_REQUEST after
        (change type CLAIM_REQUESTED either way)."""
        with self.state.lock:
            po = self.store.product_orders.get(product_order_id)
            if po is None or po.claim_status is not None or po.status == "CANCELED":
                raise ValueError(f"no claimable product order {product_order_id}")
            before = po.status == "PAYED"
            po.claim_type = "CANCEL" if before else "RETURN"
            po.claim_status = "CANCEL_REQUEST" if before else "RETURN_REQUEST"
            po.claim_requested_at = self.state.now()
            self._bump(po, "CLAIM_REQUESTED")
            return po


# --------------------------------------------------------------------------- handlers


class NaverHandler(MarketHandler):
    platform = PLATFORM
    requires_token = True
    client_id: str
    world: NaverWorld

    def authenticate(self) -> None:
        self.world = NaverWorld(self.state)
        if not self.requires_token:
            return
        header = self.request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        client_id = self.world.client_of(token) if token else None
        if client_id is None:
            self.naver_error(401, "GW.AUTHN", "인증 토큰이 유효하지 않거나 만료되었습니다.")
            self.finish()
            return
        self.client_id = client_id

    def rate_limit_account(self) -> str | None:
        # Naver limits per authenticated application: the token's client (the token endpoint:
        # the client_id it names).
        if not self.requires_token:
            return self.get_argument("client_id", "") or None
        header = self.request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        return NaverWorld(self.state).client_of(token) if token else None

    def naver_error(
        self, status: int, code: str, message: str, invalid: list[dict[str, str]] | None = None
    ) -> None:
        body: dict[str, Any] = {
            "code": code,
            "message": message,
            "timestamp": naver_time(self.state.now()),
            "traceId": secrets.token_hex(8),
        }
        if invalid:
            body["invalidInputs"] = invalid
        self.write_json(body, status=status)

    def bad_input(self, name: str, message: str, kind: str = "NotValid") -> None:
        self.naver_error(
            400,
            "BadRequest",
            "요청 값이 올바르지 않습니다.",
            [{"name": name, "type": kind, "message": message}],
        )

    def envelope(self, data: Any) -> None:
        """Naver's success envelope; ``data=None`` leaves ``data`` out (an empty result)."""
        body: dict[str, Any] = {
            "timestamp": naver_time(self.state.now()),
            "traceId": secrets.token_hex(8),
        }
        if data is not None:
            body["data"] = data
        self.write_json(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.naver_error(status_code, "BadRequest" if status_code == 400 else "Error", self._reason)

    def image_host(self) -> str:
        return f"{self.request.protocol}://{self.request.host}/{PLATFORM}/phinf/"

    def foreign_images(self, origin: dict[str, Any]) -> tuple[str, str] | None:
        """Naver shows only images on its own image host (uploaded through the image API):
        any other URL in ``images`` is refused."""
        images = origin.get("images") or {}
        urls = [("representativeImage", (images.get("representativeImage") or {}).get("url"))]
        optional = images.get("optionalImages") or []
        if not isinstance(optional, list) or len(optional) > MAX_OPTIONAL_IMAGES:
            return "originProduct.images.optionalImages", "추가 이미지는 최대 9개입니다."
        urls += [(f"optionalImages[{n}]", (o or {}).get("url")) for n, o in enumerate(optional)]
        host = self.image_host()
        for name, url in urls:
            number = str(url or "")[len(host) :].split("/", 1)[0]
            with self.state.lock:
                known = number.isdigit() and int(number) in self.world.store.images
            if not str(url or "").startswith(host) or not known:
                return (
                    f"originProduct.images.{name}.url",
                    "네이버 이미지 서버에 업로드된 이미지만 사용할 수 있습니다.",
                )
        return None

    def product_order_ids(self, maximum: int) -> list[str] | None:
        """``productOrderIds`` of the body, or None after answering Naver's bad-input error."""
        ids = self.body_object().get("productOrderIds")
        if not isinstance(ids, list) or not ids:
            message = "productOrderIds는 비어 있지 않은 목록이어야 합니다."
        elif len(ids) > maximum:
            message = f"productOrderIds는 최대 {maximum}개까지 요청할 수 있습니다."
        else:
            return [str(i) for i in ids]
        self.bad_input("productOrderIds", message)
        return None


class TokenHandler(NaverHandler):
    endpoint = "oauth2.token"
    requires_token = False
    mutating_methods = frozenset()  # issuing a token changes nothing worth losing an answer of

    def post(self) -> None:
        client_id = self.get_argument("client_id", "")
        raw_timestamp = self.get_argument("timestamp", "")
        sign = self.get_argument("client_secret_sign", "")
        grant_type = self.get_argument("grant_type", "")
        token_type = self.get_argument("type", "")
        for name, value in (
            ("client_id", client_id),
            ("timestamp", raw_timestamp),
            ("client_secret_sign", sign),
            ("grant_type", grant_type),
            ("type", token_type),
        ):
            if not value:
                return self.bad_input(name, f"{name} 항목은 필수입니다.")
        if grant_type != "client_credentials":
            return self.bad_input("grant_type", "grant_type은 client_credentials여야 합니다.")
        if token_type not in ("SELF", "SELLER"):
            return self.bad_input("type", "type은 SELF 또는 SELLER여야 합니다.")
        try:
            timestamp_ms = int(raw_timestamp)
        except ValueError:
            return self.bad_input("timestamp", "timestamp는 밀리초 단위 정수여야 합니다.")
        if abs(time.time() * 1000 - timestamp_ms) > TIMESTAMP_MAX_SKEW_S * 1000:
            return self.bad_input("timestamp", "timestamp가 유효 시간(5분)을 벗어났습니다.")
        account = next((a for a in accounts_for(PLATFORM) if a["client_id"] == client_id), None)
        if account is None or not self._sign_matches(account, timestamp_ms, sign):
            return self.naver_error(
                401, "GW.AUTHN", "client_id 또는 client_secret_sign이 유효하지 않습니다."
            )
        token, expires_in = self.world.issue_token(client_id)
        self.write_json({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})

    @staticmethod
    def _sign_matches(account: dict[str, str], timestamp_ms: int, sign: str) -> bool:
        try:
            presented = base64.b64decode(sign, validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = bcrypt.hashpw(
            f"{account['client_id']}_{timestamp_ms}".encode(), account["client_secret"].encode()
        )
        return hmac.compare_digest(expected, presented)


class ImageUploadHandler(NaverHandler):
    """``POST /external/v1/product-images/upload``: multipart ``imageFiles`` (1 to 10 per call;
    JPG, GIF, PNG or BMP, checked from the bytes by a full decode, at most 20 MB each); answers
    ``{"images": [{"url": ...}]}`` with URLs on Naver's own image host, in the order sent."""

    endpoint = "product-images.upload"

    def post(self) -> None:
        files = self.request.files.get("imageFiles") or []
        if not files:
            return self.bad_input("imageFiles", "imageFiles 항목은 필수입니다.")
        if len(files) > MAX_UPLOAD_IMAGES:
            return self.bad_input(
                "imageFiles", f"이미지는 한 번에 최대 {MAX_UPLOAD_IMAGES}개까지 올릴 수 있습니다."
            )
        for n, upload in enumerate(files):
            problem = _image_problem(upload["body"])
            if problem:
                return self.bad_input(f"imageFiles[{n}]", problem)
        urls = []
        with self.state.lock:
            store = self.world.store
            for upload in files:
                number = len(store.images) + 1
                name = str(upload.get("filename") or "image.jpg").rsplit("/", 1)[-1][:80]
                store.images[number] = (name, upload["body"])
                urls.append(f"{self.image_host()}{number}/{name}")
        self.count("naver_image_uploads", amount=len(files))
        self.write_json({"images": [{"url": u} for u in urls]})


def _image_problem(data: bytes) -> str | None:
    if len(data) > MAX_UPLOAD_BYTES:
        return f"이미지 용량은 {MAX_UPLOAD_BYTES // (1024 * 1024)}MB 이하여야 합니다."
    try:
        fmt, width, height = inspect_image(data)
    except ValueError as exc:
        return f"이미지를 읽을 수 없습니다: {exc}"
    if fmt not in UPLOAD_FORMATS:
        return f"지원하지 않는 이미지 형식입니다: {fmt} (JPG, GIF, PNG, BMP)"
    if min(width, height) < MIN_IMAGE_PX:
        return f"이미지는 {MIN_IMAGE_PX}x{MIN_IMAGE_PX} 이상이어야 합니다: {width}x{height}"
    return None


class HostedImageHandler(tornado.web.RequestHandler):
    """``GET /naver/phinf/<no>/<name>``: Naver's image host serving what was uploaded."""

    def initialize(self, state: SandboxState) -> None:
        self.state = state

    def get(self, number: str, name: str) -> None:
        store = NaverWorld(self.state).store
        with self.state.lock:
            found = store.images.get(int(number))
        if found is None or found[0] != name:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "image/jpeg")
        self.write(found[1])


_REQUIRED_ORIGIN = ("statusType", "leafCategoryId", "name", "images", "salePrice", "stockQuantity")


class ProductsHandler(NaverHandler):
    endpoint = "products.create"

    def post(self) -> None:
        body = self.body_object()
        origin = body.get("originProduct")
        channel = body.get("smartstoreChannelProduct")
        if not isinstance(origin, dict):
            return self.bad_input("originProduct", "originProduct 항목은 필수입니다.")
        if not isinstance(channel, dict):
            return self.bad_input(
                "smartstoreChannelProduct", "smartstoreChannelProduct 항목은 필수입니다."
            )
        problem = (
            _validate_origin(origin)
            or _validate_combinations(origin, known_ids=set())
            or self.foreign_images(origin)
            or _validate_channel(channel)
        )
        if problem:
            return self.bad_input(*problem)
        product = self.world.create_product(self.client_id, origin, channel)
        self.write_json(
            {
                "originProductNo": product.origin_product_no,
                "smartstoreChannelProductNo": product.channel_product_no,
            }
        )


def _validate_origin(origin: dict[str, Any]) -> tuple[str, str] | None:
    for name in _REQUIRED_ORIGIN:
        if origin.get(name) in (None, "", {}):
            return f"originProduct.{name}", f"{name} 항목은 필수입니다."
    if origin["statusType"] not in ("SALE", "WAIT", "OUTOFSTOCK", "SUSPENSION"):
        return "originProduct.statusType", "statusType 값이 올바르지 않습니다."
    price, stock = origin["salePrice"], origin["stockQuantity"]
    if not isinstance(price, int) or price <= 0 or price % 10:
        return "originProduct.salePrice", "salePrice는 10원 단위 양수여야 합니다."
    if not isinstance(stock, int) or stock < 0:
        return "originProduct.stockQuantity", "stockQuantity는 0 이상이어야 합니다."
    images = origin["images"]
    if not isinstance(images, dict) or not (images.get("representativeImage") or {}).get("url"):
        return "originProduct.images.representativeImage.url", "대표 이미지는 필수입니다."
    company = (origin.get("deliveryInfo") or {}).get("deliveryCompany")
    if company is not None and company not in DELIVERY_COMPANY_CODES:
        return "originProduct.deliveryInfo.deliveryCompany", f"{str(company)[:20]}: TypeMismatch"
    return None


def _validate_channel(channel: dict[str, Any]) -> tuple[str, str] | None:
    if channel.get("channelProductDisplayStatusType") not in ("ON", "SUSPENSION"):
        return (
            "smartstoreChannelProduct.channelProductDisplayStatusType",
            "ON 또는 SUSPENSION만 입력할 수 있습니다.",
        )
    if not isinstance(channel.get("naverShoppingRegistration"), bool):
        return "smartstoreChannelProduct.naverShoppingRegistration", "필수 항목입니다."
    return None


class OriginProductHandler(NaverHandler):
    endpoint = "origin-products"

    def _find(self, number: str) -> NaverProduct | None:
        product = self.world.product(self.client_id, int(number))
        if product is None:
            self.naver_error(404, "NotFound", f"원상품 {number}이(가) 존재하지 않습니다.")
        return product

    def get(self, number: str) -> None:
        product = self._find(number)
        if product is None:
            return
        with self.state.lock:
            self.write_json(
                {
                    "originProduct": dict(product.origin_product),
                    "smartstoreChannelProduct": dict(product.channel_product)
                    | {"channelProductNo": product.channel_product_no},
                }
            )

    def put(self, number: str) -> None:
        product = self._find(number)
        if product is None:
            return
        body = self.body_object()
        origin = body.get("originProduct")
        channel = body.get("smartstoreChannelProduct")
        if not isinstance(origin, dict) or not isinstance(channel, dict):
            return self.bad_input(
                "originProduct", "originProduct와 smartstoreChannelProduct는 필수입니다."
            )
        with self.state.lock:
            known = {c.get("id") for c in _combinations(product.origin_product)}
        problem = (
            _validate_origin(origin)
            or _validate_combinations(origin, known_ids={i for i in known if isinstance(i, int)})
            or self.foreign_images(origin)
            or _validate_channel(channel)
        )
        if problem:
            return self.bad_input(*problem)
        _derive_stock(origin)
        # The drop_suspensions fault: a write taking the product or one of its options to zero
        # stock, or suspending it, answered and not applied.
        with self.state.lock:
            zeroes = _zeroes_stock(product.origin_product, origin)
        if zeroes and self.state.drop_suspension(PLATFORM):
            return self.write_json(
                {
                    "originProductNo": product.origin_product_no,
                    "smartstoreChannelProductNo": product.channel_product_no,
                }
            )
        with self.state.lock:
            store = self.world.store
            for combo in _combinations(origin):
                if combo.get("id") is None:  # a new option
                    combo["id"] = store.next_option_id
                    store.next_option_id += 1
            if int(origin["stockQuantity"]) == 0:
                origin["statusType"] = "OUTOFSTOCK"
            product.origin_product = origin
            product.channel_product = {k: v for k, v in channel.items() if k != "channelProductNo"}
        self.write_json(
            {
                "originProductNo": product.origin_product_no,
                "smartstoreChannelProductNo": product.channel_product_no,
            }
        )


class ChangeStatusHandler(NaverHandler):
    endpoint = "origin-products.change-status"

    def put(self, number: str) -> None:
        product = self.world.product(self.client_id, int(number))
        if product is None:
            return self.naver_error(404, "NotFound", f"원상품 {number}이(가) 존재하지 않습니다.")
        body = self.body_object()
        target = body.get("statusType")
        if target not in PRODUCT_STATUSES_SETTABLE:
            return self.bad_input(
                "statusType", "SALE, OUTOFSTOCK, SUSPENSION만 입력할 수 있습니다."
            )
        stock = body.get("stockQuantity")
        if stock is not None and (not isinstance(stock, int) or stock < 0):
            return self.bad_input("stockQuantity", "stockQuantity는 0 이상이어야 합니다.")
        if (target in ("SUSPENSION", "OUTOFSTOCK") or stock == 0) and self.state.drop_suspension(
            PLATFORM
        ):
            # The drop_suspensions fault: answered as done, not applied.
            return self.write_json(
                {"originProductNo": product.origin_product_no, "statusType": target}
            )
        with self.state.lock:
            current = product.status
            if target == "SALE" and current in ("OUTOFSTOCK", "SUSPENSION") and not stock:
                return self.bad_input(
                    "stockQuantity", "판매중으로 변경할 때 재고 수량은 필수입니다."
                )
            if target == "OUTOFSTOCK" and current not in ("SALE", "OUTOFSTOCK"):
                return self.naver_error(
                    400, "InvalidStatus", f"{current} 상태에서 OUTOFSTOCK으로 변경할 수 없습니다."
                )
            if stock is not None and not _combinations(product.origin_product):
                product.origin_product["stockQuantity"] = stock
            # With option combinations the stock is theirs (set through the product PUT).
            if target == "SALE" and (
                stock == 0 or int(product.origin_product.get("stockQuantity") or 0) == 0
            ):
                target = "OUTOFSTOCK"  # like Naver: zero stock forces OUTOFSTOCK
            product.origin_product["statusType"] = target
        self.write_json({"originProductNo": product.origin_product_no, "statusType": target})


class ProductSearchHandler(NaverHandler):
    endpoint = "products.search"
    mutating_methods = frozenset()  # a search sent as POST

    def post(self) -> None:
        body = self.body_object()
        page = int(body.get("page") or 1)
        size = int(body.get("size") or 50)
        if page < 1 or not 1 <= size <= 500:
            return self.bad_input("size", "page >= 1, 1 <= size <= 500")
        code = body.get("sellerManagementCode")
        if body.get("searchKeywordType") == "SELLER_CODE" and not code:
            return self.bad_input("sellerManagementCode", "SELLER_CODE 검색에는 필수입니다.")
        with self.state.lock:
            found = [
                p
                for p in sorted(
                    self.world.store.products.values(), key=lambda p: p.origin_product_no
                )
                if p.client_id == self.client_id and (not code or p.seller_management_code == code)
            ]
            total = len(found)
            contents = [p.summary() for p in found[(page - 1) * size : page * size]]
        self.write_json(
            {
                "contents": contents,
                "page": page,
                "size": size,
                "totalElements": total,
                "totalPages": (total + size - 1) // size,
                "first": page == 1,
                "last": page * size >= total,
            }
        )


def _parse_time(raw: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name} must be ISO-8601 like 2025-01-01T00:00:00.000+09:00") from None
    if value.tzinfo is None:
        raise ValueError(f"{name} needs a UTC offset, e.g. +09:00")
    return value


class LastChangedStatusesHandler(NaverHandler):
    endpoint = "product-orders.last-changed-statuses"

    def get(self) -> None:
        raw_from = self.get_query_argument("lastChangedFrom", "")
        if not raw_from:
            return self.bad_input("lastChangedFrom", "lastChangedFrom 항목은 필수입니다.")
        try:
            start = _parse_time(raw_from, "lastChangedFrom")
            raw_to = self.get_query_argument("lastChangedTo", "")
            end = _parse_time(raw_to, "lastChangedTo") if raw_to else start + timedelta(hours=24)
        except ValueError as exc:
            return self.bad_input("lastChangedFrom", str(exc))
        if end <= start or end - start > timedelta(hours=24):
            return self.bad_input("lastChangedTo", "조회 기간은 24시간 이내여야 합니다.")
        try:
            limit = int(self.get_query_argument("limitCount", str(MAX_LIMIT_COUNT)))
            raw_seq = self.get_query_argument("moreSequence", "")
            sequence = int(raw_seq) if raw_seq else None
        except ValueError:
            return self.bad_input("limitCount", "limitCount와 moreSequence는 숫자여야 합니다.")
        if not 1 <= limit <= MAX_LIMIT_COUNT:
            return self.bad_input("limitCount", f"limitCount는 1~{MAX_LIMIT_COUNT}이어야 합니다.")
        change_type = self.get_query_argument("lastChangedType", "") or None

        self.world.materialise_arrivals()
        after = (start, sequence) if sequence is not None else None
        changes = self.world.changes(self.client_id, start, end, after, change_type)
        if not changes:
            # Naver answers an empty range with no ``data`` at all, only timestamp and traceId
            # (file id 71297095581: "0건일 때는 data 필드 자체가 없다"; the page's schema marks
            # ``data`` optional, file id 46062719477).
            self.envelope(None)
            return
        page = changes[:limit]
        data: dict[str, Any] = {}
        with self.state.lock:
            data["lastChangeStatuses"] = [po.change() for po in page]
        data["count"] = len(page)
        if len(changes) > len(page):
            nxt = changes[len(page)]
            if len(page) >= 2 and self.fault_hit("duplicate_order_rate"):
                nxt = page[-1]  # duplicated delivery: the next page repeats this page's last
            data["more"] = {"moreFrom": naver_time(nxt.changed_at), "moreSequence": str(nxt.seq)}
        self.envelope(data)


NOT_FOUND_MESSAGE = "상품 주문을 찾을 수 없음"


def _invalid_status(product_order_id: str, message: str, found: bool = True) -> dict[str, str]:
    """One entry of ``failProductOrderInfos``, with the order-claim error codes of Naver's
    "주문-클레임 처리 반환 구조체" (100001: product order not found; 9999: other)."""
    code = "9999" if found else "100001"
    return {"productOrderId": product_order_id, "code": code, "message": message}


class QueryHandler(NaverHandler):
    endpoint = "product-orders.query"
    mutating_methods = frozenset()  # a read sent as POST

    def post(self) -> None:
        ids = self.product_order_ids(MAX_QUERY_IDS)
        if ids is None:
            return
        result = []
        for product_order_id in ids:
            po = self.world.product_order(self.client_id, product_order_id)
            if po is None:
                continue  # Naver omits unknown ids
            with self.state.lock:
                detail = po.detail()
            if self.fault_hit("malformed_rate"):
                detail.pop("productOrder", None)
            result.append(detail)
        self.envelope(result)


class ConfirmHandler(NaverHandler):
    endpoint = "product-orders.confirm"

    def post(self) -> None:
        ids = self.product_order_ids(MAX_CONFIRM)
        if ids is None:
            return
        success, fail = [], []
        with self.state.lock:
            for product_order_id in ids:
                po = self.world.product_order(self.client_id, product_order_id)
                if po is None:
                    fail.append(_invalid_status(product_order_id, NOT_FOUND_MESSAGE, False))
                    continue
                if po.status != "PAYED":
                    fail.append(_invalid_status(product_order_id, "발주확인할 수 없는 상태입니다."))
                    continue
                po.place_order_status = "OK"
                success.append(
                    {"productOrderId": product_order_id, "isReceiverAddressChanged": False}
                )
        self.envelope({"successProductOrderInfos": success, "failProductOrderInfos": fail})


class DispatchHandler(NaverHandler):
    endpoint = "product-orders.dispatch"

    def post(self) -> None:
        body = self.body_object()
        items = body.get("dispatchProductOrders")
        if not isinstance(items, list) or not items:
            return self.bad_input("dispatchProductOrders", "비어 있지 않은 목록이어야 합니다.")
        if len(items) > MAX_DISPATCH:
            return self.bad_input(
                "dispatchProductOrders",
                f"한 번에 최대 {MAX_DISPATCH}건까지 발송처리할 수 있습니다.",
            )
        for item in items:
            if not isinstance(item, dict):
                return self.bad_input("dispatchProductOrders", "each item must be an object")
            code = item.get("deliveryCompanyCode")
            if code and code not in DELIVERY_COMPANY_CODES:
                return self.bad_input(
                    "dispatchProductOrders.deliveryCompanyCode",
                    f"{str(code)[:20]}은(는) 택배사 코드가 아닙니다.",
                    kind="TypeMismatch",
                )
            for name in (
                "productOrderId",
                "deliveryMethod",
                "deliveryCompanyCode",
                "trackingNumber",
                "dispatchDate",
            ):
                if not item.get(name):
                    return self.bad_input(
                        f"dispatchProductOrders.{name}", f"{name} 항목은 필수입니다."
                    )
        self.count("naver_dispatch_batch_sizes", str(len(items)))
        success, fail = [], []
        with self.state.lock:
            for item in items:
                product_order_id = str(item["productOrderId"])
                po = self.world.product_order(self.client_id, product_order_id)
                if po is None:
                    fail.append(_invalid_status(product_order_id, NOT_FOUND_MESSAGE, False))
                    continue
                if po.status not in ("PAYED", "DELIVERING") or po.claim_status == "CANCEL_REQUEST":
                    fail.append(_invalid_status(product_order_id, "발송처리할 수 없는 상태입니다."))
                    continue
                if po.status == "PAYED":
                    po.status = "DELIVERING"
                    po.place_order_status = "OK"
                    self.world._bump(po, "DISPATCHED")
                po.delivery = {
                    "deliveryMethod": item["deliveryMethod"],
                    "deliveryCompany": item["deliveryCompanyCode"],
                    "trackingNumber": item["trackingNumber"],
                    "sendDate": item["dispatchDate"],
                    "deliveryStatus": "DELIVERING",
                }
                success.append(product_order_id)
        self.envelope({"successProductOrderIds": success, "failProductOrderInfos": fail})


class CancelApproveHandler(NaverHandler):
    """취소 요청 승인 (``POST .../product-orders/{productOrderId}/claim/cancel/approve``): only
    for a product order whose claim is CANCEL_REQUEST; it becomes CANCELED / CANCEL_DONE
    (change type CLAIM_COMPLETED). Anything else is refused with 400, a re-send included."""

    endpoint = "product-orders.claim.cancel.approve"

    def post(self, product_order_id: str) -> None:
        with self.state.lock:
            po = self.world.product_order(self.client_id, product_order_id)
            if po is None:
                return self.naver_error(404, "104105", NOT_FOUND_MESSAGE)
            if po.claim_status != "CANCEL_REQUEST":
                return self.naver_error(400, "104110", "취소 승인할 수 없는 상태입니다.")
            po.status = "CANCELED"
            po.claim_status = "CANCEL_DONE"
            self.world._bump(po, "CLAIM_COMPLETED")
        self.count("naver_cancels_approved", product_order_id)
        self.envelope({"productOrderId": product_order_id})


# --------------------------------------------------------------------------- admin


class NaverCancelAdminHandler(AdminHandler):
    """``POST /_sandbox/naver/cancel_requests`` ``{"productOrderId": "..."}``: the buyer asks
    to cancel (CANCEL_REQUEST before dispatch, RETURN_REQUEST after)."""

    def post(self) -> None:
        body = self._body_dict()
        try:
            po = NaverWorld(self.state).request_claim(str(body["productOrderId"]))
        except (KeyError, ValueError) as exc:
            raise tornado.web.HTTPError(400, reason=f"invalid cancel request: {exc}") from None
        self.write_json({"productOrderId": po.product_order_id, "claimType": po.claim_type})


class NaverForgetAdminHandler(ForgetAdminHandler):
    """``POST /_sandbox/naver/forget {"originProductNo": N}``: gone from Naver (reads: 404)."""

    id_field = "originProductNo"

    def forget(self, number: int) -> bool:
        store = NaverWorld(self.state).store
        product = store.products.pop(number, None)
        for numbers in store.by_code.values():
            if number in numbers:
                numbers.remove(number)
        return product is not None


class NaverOrdersAdminHandler(AdminHandler):
    """``POST /_sandbox/naver/orders`` creates orders on demand::

        {"count": 3, "ordered_at": "2024-03-01T10:00:00+09:00", "spacing_s": 60,
         "client_id": "...", "seller_management_code": "key-1", "items_per_order": 1}

    Everything but ``count`` is optional. With ``seller_management_code`` the orders are for the
    oldest product carrying it. Answers ``{"productOrderIds": [...]}``. The change time of a new
    product order is its order time + 3 s (payment). GET lists every product order.
    """

    def post(self) -> None:
        body = self._body_dict()
        world = NaverWorld(self.state)
        try:
            batch = parse_order_batch(body, PLATFORM, "client_id", "client_id", self.state.now())
            items = int(body.get("items_per_order", 1))
            if not 1 <= items <= 20:
                raise ValueError("items_per_order must be 1..20")
            code = body.get("seller_management_code")
            products = world.products_by_code(batch.account, str(code)) if code else []
            if code and not products:
                raise ValueError(f"no product with sellerManagementCode {code}")
        except (KeyError, TypeError, ValueError) as exc:
            raise tornado.web.HTTPError(400, reason=f"invalid order request: {exc}") from None
        product = products[0] if products else None
        created: list[str] = []
        for at, rng in batch.slots(self.state.config.seed):
            created += world.add_order(batch.account, at, rng, product, batch.quantity, items)
        self.write_json({"productOrderIds": created})

    def get(self) -> None:
        world = NaverWorld(self.state)
        with self.state.lock:
            orders = [
                po.detail() | {"clientId": po.client_id, "lastChange": po.change()}
                for po in world.store.product_orders.values()
            ]
        self.write_json({"productOrders": orders})


def _iter_routes(state: SandboxState) -> Iterator[RouteSpec]:
    kw = {"state": state}
    p = "/" + PLATFORM
    yield (rf"{p}{EXT}/v1/oauth2/token", TokenHandler, kw)
    yield (rf"{p}{EXT}/v2/products", ProductsHandler, kw)
    yield (rf"{p}{EXT}/v1/product-images/upload", ImageUploadHandler, kw)
    yield (rf"{p}/phinf/([0-9]+)/([^/]+)", HostedImageHandler, kw)
    yield (rf"{p}{EXT}/v2/products/origin-products/([0-9]+)", OriginProductHandler, kw)
    yield (rf"{p}{EXT}/v1/products/origin-products/([0-9]+)/change-status", ChangeStatusHandler, kw)
    yield (rf"{p}{EXT}/v1/products/search", ProductSearchHandler, kw)
    yield (rf"{p}{PAY_ORDER}/last-changed-statuses", LastChangedStatusesHandler, kw)
    yield (rf"{p}{PAY_ORDER}/query", QueryHandler, kw)
    yield (rf"{p}{PAY_ORDER}/confirm", ConfirmHandler, kw)
    yield (rf"{p}{PAY_ORDER}/dispatch", DispatchHandler, kw)
    yield (rf"{p}{PAY_ORDER}/([0-9]+)/claim/cancel/approve", CancelApproveHandler, kw)
    yield (r"/_sandbox/naver/cancel_requests", NaverCancelAdminHandler, kw)
    yield (r"/_sandbox/naver/orders", NaverOrdersAdminHandler, kw)
    yield (r"/_sandbox/naver/forget", NaverForgetAdminHandler, kw)


def routes(state: SandboxState) -> list[RouteSpec]:
    return list(_iter_routes(state))


__all__ = ["client_secret_sign", "routes"]
