"""The sandbox's deterministic world: supplier catalogs and order arrivals generated from a seed.

Everything here is a pure function of ``(seed, parameters, platform name)``: two sandboxes with
the same seed serve the same catalog, byte for byte, so tests can assert exact values. Time-based
behaviour (price drift, order arrivals) is a function of the *world clock*
(:meth:`dropship.sandbox.core.SandboxState.now`), which tests can advance (or freeze) through the
admin endpoint instead of sleeping.

**Catalogs are generated lazily, one product at a time.** Product *i* of a supplier is a pure
function of ``(seed, supplier, i)`` and of the world time (:func:`generate_item`), so a catalog of
any size costs nothing until a page or a feed asks for it, paging has random access, and the
streamed gentrade feed serves 100,000 products in bounded memory (:func:`iter_catalog`). There is
deliberately no list-building generator: it would not scale and would drift from this one.

Product names only use Hangul syllables of KS X 1001 so they survive the EUC-KR feed unchanged
(Python's ``euc_kr`` codec would otherwise emit 8-byte jamo composition sequences that other
decoders, e.g. libxml2's iconv, do not recompose). An import-time check enforces it.

Platform modules render these neutral records in their own wire formats (GraphQL, JSON, EUC-KR
XML); they may also keep their own richer data in ``SandboxState.platform_store``.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
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

# The world's epoch: product timestamps are spread over the 30 days before it.
WORLD_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
# Where catalog images are hosted: the sandbox's own image routes once a server is listening
# (``SandboxState.image_base``), this unreachable host otherwise.
DEFAULT_IMAGE_BASE = "https://img.sandbox.invalid"
# order_arrivals generates at most this window (44,640 world minutes) per call.
MAX_ARRIVAL_WINDOW = timedelta(days=31)


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


def check_ks_x_1001(words: tuple[str, ...]) -> None:
    for word in words:
        for char in word:
            if "\uac00" <= char <= "\ud7a3" and len(char.encode("euc_kr")) != 2:
                raise ValueError(f"{word!r}: {char!r} is not a KS X 1001 syllable")


for _words in (_BRANDS, _ADJECTIVES, _NOUNS, *(v for _, v in _OPTION_AXES)):
    check_ks_x_1001(_words)
check_ks_x_1001(tuple(name for _, name in CATEGORIES))


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

    def option(self, name: str, value: str) -> CatalogOption | None:
        return next((o for o in self.options if (o.name, o.value) == (name, value)), None)


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
    image_base: str = DEFAULT_IMAGE_BASE,
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
    images = tuple(f"{image_base}/{supplier}/{index}/{n}.jpg" for n in range(rng.randint(1, 3)))
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


def iter_catalog(
    seed: int,
    supplier: str,
    size: int,
    *,
    now: datetime,
    price_drift: float,
    soldout_rate: float,
    malformed_rate: float = 0.0,
    start: int = 0,
    image_base: str = DEFAULT_IMAGE_BASE,
) -> Iterator[CatalogItem]:
    """Products ``start..size-1`` of ``supplier`` at world time ``now``, generated one at a time
    (nothing is kept: memory does not grow with ``size``)."""
    if size < 0:
        raise ValueError(f"catalog size must not be negative, got {size}")
    if not 0.0 <= soldout_rate <= 1.0:
        raise ValueError(f"soldout_rate must be within [0, 1], got {soldout_rate}")
    for index in range(max(0, start), size):
        yield generate_item(
            seed,
            supplier,
            index,
            now=now,
            price_drift=price_drift,
            soldout_rate=soldout_rate,
            malformed_rate=malformed_rate,
            image_base=image_base,
        )


def _rng(seed: int, *parts: str) -> random.Random:
    # random.Random(str) hashes with SHA-512 internally, stable across runs and platforms
    # (unlike hash(), which PYTHONHASHSEED randomises).
    return random.Random(f"{seed}:" + ":".join(parts))


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
