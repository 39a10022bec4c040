"""Checking and normalising one image with Pillow, on the sandbox's deterministic images (the
bytes a supplier would serve): every hostile kind is refused with its reason, every usable kind
comes out as a square market JPEG on white and a detail-page WebP, oriented, RGB, no EXIF."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dropship.images.config import ImageSettings
from dropship.images.process import ImageRefused, process_bytes
from dropship.sandbox.images import render

LIMITS = ImageSettings()


def run(kind: str, width: int = 0, height: int = 0, limits: ImageSettings = LIMITS):  # type: ignore[no-untyped-def]
    return process_bytes(render(kind, f"test-{kind}", width, height)[0], limits)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("truncated", "corrupt or truncated JPEG"),
        ("corrupt", "not an image"),
        ("html", "not an image"),
        ("tiny", "too small: 40x30 px"),
        ("bomb", "decompression bomb"),
    ],
)
def test_hostile_images_are_refused_with_their_reason(kind: str, reason: str) -> None:
    with pytest.raises(ImageRefused) as refused:
        run(kind)
    assert reason in refused.value.reason and not refused.value.transient


def test_a_bomb_under_pillows_own_limit_is_refused_before_decoding() -> None:
    # 5000 x 5000 = 25 MP passes Pillow's default guard but not a tighter setting of ours.
    limits = ImageSettings(max_pixels=20_000_000)
    with pytest.raises(ImageRefused, match=r"decompression bomb: 5000x5000 = 25000000 px"):
        run("jpeg", 5000, 5000, limits)


@pytest.mark.parametrize(
    "kind", ["jpeg", "png", "alpha", "cmyk", "palette", "exif", "animated", "gray16"]
)
def test_usable_kinds_become_square_rgb_jpeg_and_webp(kind: str) -> None:
    result = run(kind, 1200, 700)
    market = Image.open(io.BytesIO(result.market_jpeg))
    assert market.format == "JPEG" and market.mode == "RGB"
    assert market.size == (1000, 1000)  # longest side 1200 -> 1000, padded square
    assert not market.getexif() and "icc_profile" not in market.info
    web = Image.open(io.BytesIO(result.web_webp))
    assert web.format == "WEBP" and max(web.size) == 860
    # Padding is white: the top rows of a landscape image, the left columns of a portrait one.
    edge = (5, 500) if web.height > web.width else (500, 5)
    assert market.convert("RGB").getpixel(edge) == pytest.approx((255, 255, 255), abs=6)


def test_exif_orientation_is_applied_then_stripped() -> None:
    result = run("exif", 1200, 600)  # stored 1200x600 with orientation 6 (shown portrait)
    web = Image.open(io.BytesIO(result.web_webp)).convert("RGB")
    assert web.height > web.width
    # The red band stored on the left edge is on top once rotated.
    red, green, blue = web.getpixel((web.width // 2, 3))
    assert red > 200 and green < 60 and blue < 60
    assert not Image.open(io.BytesIO(result.market_jpeg)).getexif()


def test_transparency_is_flattened_on_white() -> None:
    result = run("alpha", 1000, 1000)  # transparent frame around an opaque centre
    market = Image.open(io.BytesIO(result.market_jpeg)).convert("RGB")
    assert market.getpixel((20, 500)) == pytest.approx((255, 255, 255), abs=6)


def test_small_images_are_padded_up_to_the_strictest_market_minimum() -> None:
    result = run("jpeg", 400, 320)  # Naver shows nothing under 600 px
    assert Image.open(io.BytesIO(result.market_jpeg)).size == (600, 600)


def test_large_jpegs_are_decoded_in_draft_mode() -> None:
    result = run("jpeg", 4000, 3000)
    assert "draft-decoded at 1000x750" in result.notes
    assert result.source_width == 4000 and result.market_px == 1000


def test_animated_images_keep_their_first_frame() -> None:
    result = run("animated", 800, 800)
    assert result.notes == ["animated (3 frames): first frame used"]
