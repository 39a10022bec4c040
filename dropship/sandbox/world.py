"""The sandbox's deterministic world: supplier catalogs and order arrivals generated from a seed.

Everything here is a pure function of ``(seed, parameters, platform name)``: two sandboxes with
the same seed serve the same catalog, byte for byte, so tests can assert exact values. Time-based
behaviour (price drift, sell-outs, order arrivals) is a function of the *world clock*
(:meth:`dropship.sandbox.core.SandboxState.now`), which tests can advance through the admin
endpoint instead of sleeping.

Platform modules render these neutral records in their own wire formats (GraphQL, JSON, EUC-KR
XML); they may also keep their own richer data in ``SandboxState.platform_store``.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

CATEGORIES: tuple[tuple[str, str], ...] = (
    ("50000803", "생활용품>수납/정리"),
    ("50000805", "주방용품>조리도구"),
    ("50000167", "패션잡화>가방"),
    ("50000190", "디지털/가전>휴대폰액세서리"),
    ("50000156", "스포츠/레저>캠핑"),
    ("50000008", "식품>간식"),
    ("50000145", "출산/육아>장난감"),
    ("50000100", "가구/인테리어>조명"),
)
_ADJECTIVES = ("프리미엄", "심플", "대용량", "휴대용", "접이식", "무선", "친환경", "미니", "스마트")
_NOUNS = (
    "수납함",
    "텀블러",
    "백팩",
    "충전케이블",
    "캠핑의자",
    "견과믹스",
    "블록세트",
    "무드등",
    "프라이팬",
)
_COLORS = ("블랙", "화이트", "네이비", "베이지", "레드")
_SIZES = ("S", "M", "L", "XL")

# The world's epoch: product timestamps are spread over the 30 days before it.
WORLD_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
# order_arrivals generates at most this window (44,640 world minutes) per call.
MAX_ARRIVAL_WINDOW = timedelta(days=31)


@dataclass(frozen=True)
class WorldOption:
    name: str
    value: str
    price_delta: int
    stock: int
    code: str


@dataclass(frozen=True)
class WorldProduct:
    supplier: str
    sku: str
    name: str
    category_code: str
    category_name: str
    cost_price: int
    shipping_fee: int
    stock: int
    status: str  # "active" | "soldout"
    images: tuple[str, ...]
    options: tuple[WorldOption, ...]
    updated_at: datetime


def _rng(seed: int, *parts: str) -> random.Random:
    # random.Random(str) hashes with SHA-512 internally, stable across runs and platforms
    # (unlike hash(), which PYTHONHASHSEED randomises).
    return random.Random(f"{seed}:" + ":".join(parts))


def generate_catalog(
    seed: int, supplier: str, size: int, soldout_rate: float, sku_prefix: str | None = None
) -> list[WorldProduct]:
    """``size`` products for ``supplier``, identical for identical arguments."""
    if size < 0:
        raise ValueError(f"catalog size must not be negative, got {size}")
    if not 0.0 <= soldout_rate <= 1.0:
        raise ValueError(f"soldout_rate must be within [0, 1], got {soldout_rate}")
    rng = _rng(seed, "catalog", supplier)
    prefix = sku_prefix or supplier[:2].upper()
    products: list[WorldProduct] = []
    for index in range(size):
        category_code, category_name = CATEGORIES[rng.randrange(len(CATEGORIES))]
        cost = rng.randrange(1_000, 150_000, 10)
        soldout = rng.random() < soldout_rate
        options: tuple[WorldOption, ...] = ()
        if rng.random() < 0.4:
            kind = rng.choice(("색상", "사이즈"))
            values = _COLORS if kind == "색상" else _SIZES
            chosen = rng.sample(values, k=rng.randint(2, len(values)))
            options = tuple(
                WorldOption(
                    name=kind,
                    value=value,
                    price_delta=rng.choice((0, 0, 500, 1000, 2000)),
                    stock=0 if soldout else rng.randint(0, 50),
                    code=f"{prefix}{index:07d}-{n + 1}",
                )
                for n, value in enumerate(chosen)
            )
        stock = 0 if soldout else (sum(o.stock for o in options) or rng.randint(1, 500))
        sku = f"{prefix}{index:07d}"
        products.append(
            WorldProduct(
                supplier=supplier,
                sku=sku,
                name=f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {index:05d}",
                category_code=category_code,
                category_name=category_name,
                cost_price=cost,
                shipping_fee=rng.choice((0, 2500, 3000, 3500)),
                stock=stock,
                status="soldout" if soldout else "active",
                images=tuple(
                    f"https://img.sandbox.invalid/{supplier}/{sku}/{n}.jpg"
                    for n in range(rng.randint(1, 3))
                ),
                options=options,
                updated_at=WORLD_EPOCH - timedelta(seconds=rng.randrange(30 * 86_400)),
            )
        )
    return products


def drifted_price(seed: int, product: WorldProduct, price_drift: float, at: datetime) -> int:
    """The product's cost at world time ``at``: every world hour the price moves by up to
    ``price_drift`` (a fraction) in a direction fixed by the seed, rounded to 10 KRW."""
    if price_drift <= 0:
        return product.cost_price
    hours = max(0, math.floor((at - WORLD_EPOCH).total_seconds() / 3600))
    digest = hashlib.sha256(f"{seed}:{product.supplier}:{product.sku}:{hours}".encode()).digest()
    unit = int.from_bytes(digest[:4], "big") / 0xFFFFFFFF  # in [0, 1]
    factor = 1.0 + (unit * 2.0 - 1.0) * price_drift
    return max(10, round(product.cost_price * factor / 10) * 10)


def order_arrivals(
    seed: int, market: str, rate_per_min: float, start: datetime, end: datetime
) -> list[datetime]:
    """Deterministic Poisson arrivals in ``[start, end)``: each world minute has its own seeded
    generator, so any window gives the same orders no matter how it is sliced."""
    if rate_per_min <= 0 or end <= start:
        return []
    # Bound the per-minute loop: after a long clock jump only the last window's orders arrive.
    start = max(start, end - MAX_ARRIVAL_WINDOW)
    arrivals: list[datetime] = []
    minute = start.replace(second=0, microsecond=0)
    while minute < end:
        rng = _rng(seed, "orders", market, minute.isoformat())
        t = 0.0
        while True:
            t += rng.expovariate(rate_per_min)  # minutes until the next order
            if t >= 1.0:
                break
            at = minute + timedelta(minutes=t)
            if start <= at < end:
                arrivals.append(at)
        minute += timedelta(minutes=1)
    return arrivals
