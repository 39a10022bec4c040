"""The two small typed interfaces every platform connector implements, and the normalised,
frozen records they return (never raw JSON).

* :class:`SupplierConnector` — OwnerClan, Domeggook, gentrade.
* :class:`MarketConnector` — Coupang, Naver SmartStore.

Money is ``int`` KRW everywhere. Times are timezone-aware ``datetime`` (platforms answer in KST;
connectors convert). Customer personal data (buyer/receiver name, phone, address) lives only in
:class:`BuyerInfo`, whose ``repr`` is redacted so it cannot leak into logs or tracebacks.

Construction contract (used by :func:`dropship.platforms.registry.connector_for`): a connector
class takes keyword arguments ``account`` (:class:`dropship.platforms.config.AccountSettings`),
``http`` (:class:`dropship.platforms.http.PlatformHttp`, already pointed at the account's base
URL with the account's rate limiter) and ``cache`` (:class:`dropship.platforms.cache.ResponseCache`
or ``None``)::

    class OwnerClanConnector:
        def __init__(self, *, account: AccountSettings, http: PlatformHttp,
                     cache: ResponseCache | None = None) -> None: ...

Owners of the connector modules may add fields to these records *additively* (with defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

ProductStatus = Literal["active", "soldout", "gone"]
PRODUCT_STATUSES: tuple[str, ...] = ("active", "soldout", "gone")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a paged listing; ``next_cursor`` is ``None`` on the last page."""

    items: tuple[T, ...]
    next_cursor: str | None = None


# --------------------------------------------------------------------------- suppliers


@dataclass(frozen=True)
class ProductOption:
    """One purchasable variant, e.g. name="색상", value="빨강", +1000 KRW, 5 in stock."""

    name: str
    value: str
    price_delta: int = 0
    stock: int = 0
    supplier_option_code: str | None = None


@dataclass(frozen=True)
class SupplierProduct:
    supplier: str
    supplier_sku: str
    name: str
    cost_price: int
    shipping_fee: int
    stock: int
    status: ProductStatus
    category: str | None = None
    images: tuple[str, ...] = ()
    options: tuple[ProductOption, ...] = ()
    updated_at: datetime | None = None
    # False when the supplier forbids selling this product on open markets (OwnerClan
    # ``openmarketSellable``, Domeggook ``channel``): such a product must never be listed.
    open_market_sellable: bool = True
    adult_only: bool = False
    # True when ``stock`` is not a count the supplier gave but our configured assumption
    # (Zentrade publishes only a runout flag).
    stock_assumed: bool = False
    # The platform's record as received, kept for product_rejects and debugging. Excluded from
    # equality/hash so two reads of the same product compare equal; never logged whole.
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # Fingerprint of the source bytes this record was parsed from (see UnchangedRecord), when
    # the connector computes one; stored on the product. Not part of the record's value.
    source_fingerprint: str | None = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.status not in PRODUCT_STATUSES:
            raise ValueError(
                f"SupplierProduct {self.supplier}/{self.supplier_sku}: status must be one of "
                f"{PRODUCT_STATUSES}, got {self.status!r}"
            )
        if self.cost_price < 0 or self.shipping_fee < 0:
            raise ValueError(
                f"SupplierProduct {self.supplier}/{self.supplier_sku}: negative price "
                f"(cost_price={self.cost_price}, shipping_fee={self.shipping_fee})"
            )


@dataclass(frozen=True)
class InvalidRecord:
    """A supplier record a connector could not normalise (missing/unreadable price, empty name,
    broken option packing...). Connectors yield it from ``iter_products`` in place of the product
    so the collect service can store it in ``product_rejects`` with the raw payload and the
    reason: nothing is silently dropped. (Added by the SUPPLIERS engineer.)"""

    supplier: str
    supplier_sku: str | None
    reason: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class UnchangedRecord:
    """A record a connector did not parse because its source bytes have the fingerprint of the
    stored product ``supplier_sku`` (the fingerprint covers the bytes and everything the parse
    depends on, versions included): parsing them again would give the stored product. The
    collector stages it as seen, unchanged."""

    supplier: str
    supplier_sku: str
    fingerprint: str


SupplierRecord = SupplierProduct | InvalidRecord

# Given (supplier_sku, fingerprint) pairs, the pairs whose stored product was built from
# exactly those source bytes (a fingerprint-aware connector asks this once per batch).
KnownFingerprints = Callable[[Sequence[tuple[str, str]]], Collection[tuple[str, str]]]


@dataclass(frozen=True)
class CollectSlice:
    """One independently fetchable part of a supplier catalog: a chord header of a collect run.

    ``key`` names the slice uniquely within a run (``"window:2026-11-30T00:00"``,
    ``"category:01_02:pages:1-5"``, ``"feed"``); ``params`` are JSON primitives only, because the
    slice travels in a Celery message. A connector's ``plan_slices`` makes them and its
    ``iter_slice`` reads one back.
    """

    key: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "params": dict(self.params)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CollectSlice:
        return cls(key=str(data["key"]), params=dict(data.get("params") or {}))


@dataclass(frozen=True)
class BuyerInfo:
    """Receiver of a shipment. Personal data: ``repr``/``str`` never show the values."""

    name: str
    phone: str
    address: str
    zipcode: str = ""
    address_detail: str = ""
    message: str = ""

    def __repr__(self) -> str:
        return "BuyerInfo(<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class PurchaseOrderLine:
    supplier_sku: str
    quantity: int
    option: str | None = None  # the supplier's option code / label, if the product has options
    unit_cost: int | None = None


@dataclass(frozen=True)
class PurchaseOrderRequest:
    """A purchase order we place at a supplier. ``order_key`` is our idempotency key: placing the
    same key twice must not buy twice (connectors pass it in the platform's note/memo field and
    look it up before creating)."""

    order_key: str
    lines: tuple[PurchaseOrderLine, ...]
    receiver: BuyerInfo
    note: str = ""

    def __post_init__(self) -> None:
        if not self.order_key:
            raise ValueError("PurchaseOrderRequest.order_key must not be empty")
        if not self.lines:
            raise ValueError(f"PurchaseOrderRequest {self.order_key}: no lines")
        for line in self.lines:
            if line.quantity <= 0:
                raise ValueError(
                    f"PurchaseOrderRequest {self.order_key}: quantity must be positive "
                    f"for {line.supplier_sku}, got {line.quantity}"
                )


@dataclass(frozen=True)
class PurchaseOrderResult:
    order_key: str
    supplier_order_ids: tuple[str, ...]
    # True when the supplier already had an order for this key (a redelivered task).
    already_existed: bool = False
    total_cost: int | None = None
    status: str | None = None


@dataclass(frozen=True)
class ShipmentInfo:
    order_key: str
    carrier: str
    tracking_number: str
    supplier_order_id: str | None = None
    shipped_at: datetime | None = None


@runtime_checkable
class SupplierConnector(Protocol):
    supplier: str

    def iter_products(
        self, since: datetime | None = None
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        """Every product (changed since ``since`` when the platform can filter), paged or
        streamed with bounded memory; records that cannot be normalised come as
        :class:`InvalidRecord` (for ``product_rejects``), never dropped."""
        ...

    def plan_slices(self, since: datetime | None = None) -> list[CollectSlice]:
        """Split the catalog (changed since ``since`` when the platform can filter) into
        slices that can be fetched independently and in any order."""
        ...

    def iter_slice(self, piece: CollectSlice) -> Iterator[SupplierProduct | InvalidRecord]:
        """The records of one slice from :meth:`plan_slices`, with bounded memory."""
        ...

    def recheck_missing(
        self, skus: Sequence[str], run_started_at: datetime
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        """For products a complete full run did not see: the current record of each one that
        still exists; a SKU not yielded is gone. Called before anything is marked gone."""
        ...

    def get_product(self, supplier_sku: str) -> SupplierProduct | None:
        """One product by SKU; ``None`` when the supplier does not know it."""
        ...

    def place_order(self, request: PurchaseOrderRequest) -> PurchaseOrderResult:
        """Place a purchase order, idempotent by ``request.order_key``."""
        ...

    def get_shipments(self, order_keys: Sequence[str]) -> list[ShipmentInfo]:
        """Tracking numbers known so far for these order keys (missing keys: not shipped)."""
        ...

    def cancel_order(self, order_key: str, reason: str = "") -> bool:
        """Cancel a not-yet-shipped purchase order; ``False`` when it can no longer be cancelled."""
        ...


@runtime_checkable
class FingerprintingConnector(Protocol):
    """A supplier connector that can skip the parse of records it read before unchanged
    (optional: the collector falls back to ``iter_slice``)."""

    def iter_slice_fingerprinted(
        self, piece: CollectSlice, known: KnownFingerprints
    ) -> Iterator[SupplierProduct | InvalidRecord | UnchangedRecord]:
        """The records of ``piece`` as :meth:`SupplierConnector.iter_slice` gives them, except
        that a record whose (key, fingerprint) ``known`` reports comes as an
        :class:`UnchangedRecord`, unparsed; parsed products carry their fingerprint."""
        ...


# --------------------------------------------------------------------------- marketplaces


@dataclass(frozen=True)
class MarketListingRequest:
    """A listing to create. ``external_sku`` carries our key (product × account) in the market's
    seller-SKU field, so a retried registration finds the listing instead of duplicating it."""

    external_sku: str
    name: str
    sale_price: int
    stock: int
    category_id: str
    images: tuple[str, ...] = ()
    options: tuple[ProductOption, ...] = ()
    shipping_fee: int = 0
    brand: str | None = None
    description_html: str = ""

    def __post_init__(self) -> None:
        if not self.external_sku:
            raise ValueError("MarketListingRequest.external_sku must not be empty")
        if self.sale_price <= 0:
            raise ValueError(
                f"MarketListingRequest {self.external_sku}: sale_price must be positive, "
                f"got {self.sale_price}"
            )
        if self.stock < 0:
            raise ValueError(
                f"MarketListingRequest {self.external_sku}: stock must not be negative, "
                f"got {self.stock}"
            )


@dataclass(frozen=True)
class MarketListingResult:
    market_product_id: str
    external_sku: str
    already_existed: bool = False
    status: str | None = None


@dataclass(frozen=True)
class OptionStock:
    """The stock to set for one option of a listing, named as it was registered (option
    ``name``/``value`` and the supplier option code the market keeps as the seller's code)."""

    name: str
    value: str
    stock: int
    supplier_option_code: str | None = None

    def __post_init__(self) -> None:
        if self.stock < 0:
            raise ValueError(f"OptionStock {self.name}={self.value}: negative stock {self.stock}")


def option_stock_for(
    stocks: Sequence[OptionStock],
    *,
    name: str | None,
    value: str | None,
    code: str | None = None,
    label: str | None = None,
) -> int | None:
    """The stock meant for one market option: the entry with its seller code when both carry
    one, else the one with its name and value (``name`` None: the value alone, as Naver's
    one-group combinations name it), else the one whose "name value" is ``label`` (a Coupang
    ``itemName``). ``None`` when no entry is that option."""
    if code:
        for entry in stocks:
            if entry.supplier_option_code and entry.supplier_option_code == code:
                return entry.stock
    if value is not None:
        for entry in stocks:
            if entry.value == value and (name is None or entry.name == name):
                return entry.stock
    if label is not None:
        for entry in stocks:
            if f"{entry.name} {entry.value}" == label:
                return entry.stock
    return None


@dataclass(frozen=True)
class MarketOptionState:
    """One option (Coupang vendor item, Naver option combination) as the market shows it."""

    option_id: str
    name: str | None
    value: str | None
    stock: int
    on_sale: bool
    seller_code: str | None = None
    label: str | None = None

    def stock_in(self, stocks: Sequence[OptionStock]) -> int | None:
        """This option's entry in ``stocks`` (see :func:`option_stock_for`)."""
        return option_stock_for(
            stocks, name=self.name, value=self.value, code=self.seller_code, label=self.label
        )


ListingSaleState = Literal["on_sale", "suspended", "pending", "refused", "deleted"]
LISTING_SALE_STATES: tuple[str, ...] = ("on_sale", "suspended", "pending", "refused", "deleted")


@dataclass(frozen=True)
class MarketListingState:
    """What the market shows for one of our listings, read back from the market (never our own
    belief): the sync flow confirms a suspension with it, reconciliation compares it with ours.

    ``sale_state`` is normalised: ``on_sale`` (buyable), ``suspended`` (sale stopped / out of
    stock on the market), ``pending`` (under review), ``refused`` (review rejected), ``deleted``.
    ``stock`` is the total sellable quantity over the listing's items/options; ``options``
    each option's own stock and sale flag where the read shows them (``get_listing``).
    """

    market_product_id: str
    external_sku: str | None
    sale_state: ListingSaleState
    sale_price: int | None = None
    stock: int | None = None
    name: str | None = None
    options: tuple[MarketOptionState, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.sale_state not in LISTING_SALE_STATES:
            raise ValueError(
                f"MarketListingState {self.market_product_id}: sale_state must be one of "
                f"{LISTING_SALE_STATES}, got {self.sale_state!r}"
            )


@dataclass(frozen=True)
class MarketOrderItem:
    market_item_id: str  # Coupang orderItem / Naver productOrderId
    market_product_id: str | None
    external_sku: str | None
    name: str
    quantity: int
    unit_price: int
    option: str | None = None
    # The seller's own code of the chosen option where the market echoes it (Naver
    # ``optionManageCode`` = the ``sellerManagerCode`` we registered: our supplier option code).
    option_code: str | None = None


@dataclass(frozen=True)
class MarketOrder:
    market: str
    market_order_id: str
    ordered_at: datetime
    status: str
    items: tuple[MarketOrderItem, ...]
    # Kept apart from the order facts and redacted in repr (see BuyerInfo).
    receiver: BuyerInfo | None = field(default=None, repr=False)
    changed_at: datetime | None = None
    total_price: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class OrderChange:
    """What a market's change list says of one order before its details are read (Naver's
    ``last-changed-statuses`` entry: product order status and claim status)."""

    market_order_id: str
    status: str
    claim: str | None


# Given a page of changes, the ids whose stored items already have exactly that status and
# claim: a sweep re-reading its overlap need not read their details again.
KnownOrderStates = Callable[[Sequence[OrderChange]], Collection[str]]


@dataclass(frozen=True)
class TrackingUpload:
    market_order_id: str
    market_item_ids: tuple[str, ...]
    carrier: str
    tracking_number: str
    # The customer's whole order at the market (Coupang ``orderId``), as the order sweep stored
    # it: with it and the item ids a Coupang upload needs no read of the box first.
    market_group_id: str | None = None


ClaimKind = Literal["cancel", "return", "exchange"]


@dataclass(frozen=True)
class MarketClaim:
    """A buyer's cancellation/return/exchange request for one of our order units, as the market
    reports it (Coupang ``returnRequests`` receipt, Naver product order claim).

    ``market_order_id``/``market_item_id`` locate our order item (Coupang shipment box + vendor
    item; Naver product order twice). ``claim_id`` is what confirming it needs (Coupang
    ``receiptId``; Naver: the product order id). ``status`` is the market's claim status
    (``RELEASE_STOP_UNCHECKED``, ``CANCEL_REQUEST``, ``RETURN_REQUEST``...); ``open`` is True
    while the market waits for the seller."""

    market: str
    kind: ClaimKind
    claim_id: str
    market_order_id: str
    market_item_id: str
    status: str
    requested_at: datetime
    quantity: int = 1
    open: bool = True


@runtime_checkable
class MarketConnector(Protocol):
    market: str

    def create_listing(
        self, request: MarketListingRequest, *, first_attempt: bool = False
    ) -> MarketListingResult:
        """Create a listing; idempotent by ``request.external_sku``. ``first_attempt=True``:
        the caller guarantees no create for this key was ever sent (its claim had never been
        marked as sending), so the look-up by key is skipped (one call instead of two)."""
        ...

    def find_listing_by_external_sku(self, external_sku: str) -> MarketListingResult | None: ...

    def update_price(self, market_product_id: str, sale_price: int) -> None: ...

    def update_stock(self, market_product_id: str, stock: int) -> None:
        """Set the stock of a listing without options (every item/the product gets ``stock``)."""
        ...

    def update_option_stock(self, market_product_id: str, stocks: Sequence[OptionStock]) -> None:
        """Set each market option's own stock from ``stocks`` (matched by
        :func:`option_stock_for`); a market option no entry names is set to 0: it cannot be
        bought as a supplier option."""
        ...

    def suspend_listing(self, market_product_id: str) -> None: ...

    def get_listing(self, market_product_id: str) -> MarketListingState | None:
        """The market's current view of one listing (``None`` when the market does not know
        it): how a suspension or a price/stock update is confirmed."""
        ...

    def iter_listings(self) -> Iterator[MarketListingState]:
        """Every listing of this account on the market, following the paging (reconciliation)."""
        ...

    def iter_orders(
        self,
        changed_since: datetime,
        until: datetime,
        known: KnownOrderStates | None = None,
    ) -> Iterator[MarketOrder]:
        """Orders created or changed in ``[changed_since, until)``, following the paging.
        Where the market lists changes before their details (Naver), ``known`` is asked per
        page which of them are stored unchanged; those are neither read nor yielded. A market
        whose list already holds whole orders (Coupang) yields them all and ignores it."""
        ...

    def acknowledge(self, market_order_ids: Iterable[str]) -> None:
        """Tell the market we accepted these orders (Coupang: acknowledgement; Naver: confirm)."""
        ...

    def upload_tracking(self, uploads: Sequence[TrackingUpload]) -> None: ...
