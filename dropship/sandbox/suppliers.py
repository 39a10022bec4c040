"""The suppliers' side of the sandbox world: lazily generated catalogs and purchase orders.

Why not ``SandboxState.catalog()`` (a list): the gentrade feed must serve 100,000 products with
bounded memory, and OwnerClan/Domeggook pages want random access. Here every product is a pure
function of ``(seed, supplier, index)`` and of the world hour (price drift), so a catalog of any
size costs nothing until a page or the feed asks for it, and the same seed gives the same world.
Categories and the world epoch are shared with :mod:`dropship.sandbox.world`.

Mutable supplier data lives in ``state.platform_store("suppliers", ...)`` (dropped by
``POST /_sandbox/reset``): purchase orders placed by our connectors and per-test overrides set
through ``POST /_sandbox/suppliers`` (catalog size per supplier, tracking delay).

Product names only use Hangul syllables of KS X 1001 so they survive the EUC-KR feed unchanged
(Python's ``euc_kr`` codec would otherwise emit 8-byte jamo composition sequences that other
decoders, e.g. libxml2's iconv, do not recompose). An import-time check enforces it.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import tornado.web

from dropship.sandbox.core import RouteSpec, SandboxState, _AdminHandler
from dropship.sandbox.world import CATEGORIES, WORLD_EPOCH

SUPPLIERS = ("ownerclan", "domeggook", "gentrade")

_BRANDS = ("한빛", "미소", "누리", "다온", "하늘", "바른", "초록", "온새미", "가온", "나래")
_ADJECTIVES = (
    "프리미엄",
    "심플",
    "대용량",
    "미니",
    "접이식",
    "휴대용",
    "고급",
    "국산",
    "무선",
    "친환경",
    "튼튼한",
    "가벼운",
    "따뜻한",
    "시원한",
    "부드러운",
)
_NOUNS = (
    "텀블러",
    "수납함",
    "도마",
    "프라이팬",
    "머그컵",
    "우산",
    "양말",
    "장갑",
    "가방",
    "필통",
    "손거울",
    "슬리퍼",
    "쿠션",
    "담요",
    "선풍기",
    "가습기",
    "물병",
    "도시락",
    "빨래바구니",
    "수건",
    "칫솔",
    "방석",
    "모자",
    "목도리",
    "전기포트",
)
_OPTION_AXES = (
    ("색상", ("빨강", "파랑", "검정", "흰색", "회색", "노랑")),
    ("사이즈", ("소", "중", "대", "특대")),
    ("용량", ("350ml", "500ml", "750ml", "1L")),
)
CARRIERS = ("CJ대한통운", "한진택배", "롯데택배", "우체국택배", "로젠택배")


def _check_ks_x_1001(words: tuple[str, ...]) -> None:
    for word in words:
        for char in word:
            if "\uac00" <= char <= "\ud7a3" and len(char.encode("euc_kr")) != 2:
                raise ValueError(f"{word!r}: {char!r} is not a KS X 1001 syllable")


for _words in (_BRANDS, _ADJECTIVES, _NOUNS, CARRIERS, *(v for _, v in _OPTION_AXES)):
    _check_ks_x_1001(_words)
_check_ks_x_1001(tuple(name for _, name in CATEGORIES))


@dataclass(frozen=True)
class CatalogOption:
    name: str
    value: str
    price_delta: int
    stock: int
    code: str


@dataclass(frozen=True)
class CatalogItem:
    supplier: str
    index: int
    name: str
    model: str
    category_code: str
    category_name: str
    price: int  # supplier cost (KRW) at the requested world time, drift applied
    fixed_price: int  # consumer price suggested by the supplier
    shipping_fee: int
    stock: int
    soldout: bool
    vendor: int  # OwnerClan splits an order per vendor
    options: tuple[CatalogOption, ...]
    images: tuple[str, ...]
    updated_at: datetime
    malformed: bool  # the platform module serves this record corrupted


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for these parts."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# Price drift: in each world week a product's price changes at most once, with this
# probability, at an hour of that week fixed by the seed (most products stay put between two
# collections, as in a real catalog). Only this week and the previous one are looked at: a change
# older than that is forgotten and the product is back at its base price and timestamp (a sandbox
# simplification that keeps random access O(1) per product).
PRICE_CHANGE_PER_WEEK = 0.5
_WEEK_HOURS = 168


def _last_price_change_hour(seed: int, supplier: str, index: int, now: datetime) -> int | None:
    hour = math.floor((now - WORLD_EPOCH).total_seconds() / 3600)
    week = hour // _WEEK_HOURS
    for w in (week, week - 1):
        if _unit(seed, supplier, index, "changes", w) < PRICE_CHANGE_PER_WEEK:
            changed = w * _WEEK_HOURS + int(_unit(seed, supplier, index, "at", w) * _WEEK_HOURS)
            if changed <= hour:
                return changed
    return None


def generate_item(
    seed: int,
    supplier: str,
    index: int,
    *,
    now: datetime,
    price_drift: float,
    soldout_rate: float,
    malformed_rate: float = 0.0,
) -> CatalogItem:
    # random.Random(str) seeds through SHA-512: stable across processes (no PYTHONHASHSEED).
    rng = random.Random(f"{seed}:{supplier}:item:{index}")
    name = f"[{rng.choice(_BRANDS)}] {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
    category_code, category_name = rng.choice(CATEGORIES)
    base_price = rng.randrange(1_000, 90_000, 10)
    fixed_price = int(base_price * rng.uniform(1.3, 2.2)) // 10 * 10
    shipping_fee = rng.choice((0, 2500, 3000, 3000, 3500))
    soldout = rng.random() < soldout_rate
    options: list[CatalogOption] = []
    if rng.random() < 0.6:
        axis, values = rng.choice(_OPTION_AXES)
        for n, value in enumerate(rng.sample(values, rng.randint(2, len(values)))):
            options.append(
                CatalogOption(
                    axis,
                    value,
                    rng.choice((0, 0, 500, 1000, 2000)),
                    0 if soldout else rng.randrange(0, 100),
                    f"{index}-{n + 1}",
                )
            )
    stock = 0 if soldout else (sum(o.stock for o in options) or rng.randrange(1, 500))
    images = tuple(
        f"https://img.sandbox.invalid/{supplier}/{index}/{n}.jpg" for n in range(rng.randint(1, 3))
    )
    # Last touched at some point in the 30 days before the world epoch...
    updated_at = WORLD_EPOCH - timedelta(seconds=rng.randrange(60, 30 * 86_400))
    price = base_price
    changed_hour = _last_price_change_hour(seed, supplier, index, now) if price_drift > 0 else None
    if changed_hour is not None:
        # ...unless its price drifted: set to base * (1 ± up to price_drift) at that world hour.
        change = (_unit(seed, supplier, index, "drift", changed_hour) * 2 - 1) * price_drift
        price = max(100, int(base_price * (1 + change)) // 10 * 10)
        updated_at = WORLD_EPOCH + timedelta(hours=changed_hour)
    malformed = malformed_rate > 0 and _unit(seed, supplier, index, "malformed") < malformed_rate
    return CatalogItem(
        supplier=supplier,
        index=index,
        name=name,
        model=f"M-{rng.randrange(10_000, 99_999)}",
        category_code=category_code,
        category_name=category_name,
        price=price,
        fixed_price=fixed_price,
        shipping_fee=shipping_fee,
        stock=stock,
        soldout=soldout,
        vendor=rng.randrange(0, 5),
        options=tuple(options),
        images=images,
        updated_at=updated_at,
        malformed=malformed,
    )


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
    catalog_sizes: dict[str, int] = field(default_factory=dict)
    tracking_delay_s: float | None = None


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

    def item(self, supplier: str, index: int, now: datetime | None = None) -> CatalogItem | None:
        if not 0 <= index < self.size(supplier):
            return None
        config = self.state.config
        return generate_item(
            config.seed,
            supplier,
            index,
            now=now or self.now(),
            price_drift=config.price_drift,
            soldout_rate=config.soldout_rate,
            malformed_rate=self.state.faults[supplier].malformed_rate,
        )

    def items(self, supplier: str, start: int = 0) -> Iterator[CatalogItem]:
        """Every product from ``start`` on, generated one at a time at one world instant."""
        now = self.now()
        size = self.size(supplier)
        config = self.state.config
        malformed_rate = self.state.faults[supplier].malformed_rate
        for index in range(max(0, start), size):
            yield generate_item(
                config.seed,
                supplier,
                index,
                now=now,
                price_drift=config.price_drift,
                soldout_rate=config.soldout_rate,
                malformed_rate=malformed_rate,
            )

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
            return [
                o for o in self.store.orders[supplier].values() if note is None or o.note == note
            ]

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
    ``{"catalog_sizes": {"domeggook": 400}, "tracking_delay_s": 60}``; GET shows the settings.
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
        except ValueError as exc:
            raise tornado.web.HTTPError(400, reason=str(exc)) from None
        with self.state.lock:
            world.store.catalog_sizes.update(sizes)
            if delay is not None:
                world.store.tracking_delay_s = float(delay)
        self.get()


def routes(state: SandboxState) -> list[RouteSpec]:
    return [(r"/_sandbox/suppliers", SupplierAdminHandler, {"state": state})]
