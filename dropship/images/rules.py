"""Each market's published image rules, and the one market variant we derive from them.

Sources and what rests on one secondary source are in docs/PLATFORMS.md "Images". The sandbox
enforces the same tables (``dropship/sandbox/images.py``), so a rule broken here is refused there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MarketImageRules:
    market: str
    min_px: int  # each side at least
    max_px: int | None  # each side at most (None: no published maximum)
    max_bytes: int
    formats: frozenset[str]  # Pillow format names the market accepts
    max_images: int  # representative + additional images on one listing
    square_representative: bool
    upload_batch: int | None = None  # images per upload call, where the market hosts them


COUPANG = MarketImageRules(
    market="coupang",
    min_px=100,
    max_px=5000,
    max_bytes=5 * 1024 * 1024,
    formats=frozenset({"JPEG", "PNG"}),
    max_images=10,  # one REPRESENTATION + up to 9 DETAIL
    square_representative=True,
)
NAVER = MarketImageRules(
    market="naver",
    min_px=600,
    max_px=None,
    max_bytes=20 * 1024 * 1024,
    formats=frozenset({"JPEG", "GIF", "PNG", "BMP"}),
    max_images=10,  # representativeImage + up to 9 optionalImages
    square_representative=True,
    upload_batch=10,
)
MARKET_RULES: dict[str, MarketImageRules] = {r.market: r for r in (COUPANG, NAVER)}

# Coupang refuses a vendorPath longer than this (create-seller-product document).
COUPANG_VENDOR_PATH_MAX = 150


def market_side(target_px: int) -> tuple[int, int]:
    """(smallest, largest) side of our one market JPEG that every market accepts: at least the
    strictest minimum, at most the smallest maximum, and no larger than ``target_px``."""
    low = max(r.min_px for r in MARKET_RULES.values())
    highs = [r.max_px for r in MARKET_RULES.values() if r.max_px is not None]
    high = min([target_px, *highs])
    return low, max(low, high)


def violations(rules: MarketImageRules, fmt: str, width: int, height: int, size: int) -> list[str]:
    """Why ``rules.market`` would refuse this image (empty: it accepts it)."""
    problems = []
    if fmt not in rules.formats:
        problems.append(f"format {fmt} not in {sorted(rules.formats)}")
    if min(width, height) < rules.min_px:
        problems.append(f"{width}x{height} px is under {rules.min_px} px")
    if rules.max_px is not None and max(width, height) > rules.max_px:
        problems.append(f"{width}x{height} px is over {rules.max_px} px")
    if size > rules.max_bytes:
        problems.append(f"{size} bytes is over {rules.max_bytes}")
    return problems
