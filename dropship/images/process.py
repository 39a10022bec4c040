"""Download one supplier image within bounds, check it, and normalise it with Pillow.

* :func:`download`: http(s) only, connect/read timeouts, a deadline for the whole transfer (a
  server dripping bytes is cut off) and a byte ceiling checked on the announced length *and*
  while streaming (a length that lies, or none). 5xx/429/timeouts are *transient* (tried again
  by the next run); anything else the server says is a permanent refusal.
* :func:`process_bytes`: the format comes from the bytes (Pillow's header sniffing), never from
  the URL. The header is read first: a pixel count over ``max_pixels`` is refused as a
  decompression bomb *before* anything is decoded, and a longest side under ``min_source_px``
  as too small. Large JPEGs are decoded in draft mode (libjpeg's DCT scaling to 1/2, 1/4, 1/8),
  so a 4000 px photo costs a quarter or less of its full-size memory. Then the EXIF orientation
  is applied (and every EXIF/ICC block left behind: nothing is copied to the output), CMYK,
  palette, grey, 16-bit and transparent images become RGB on white, and two outputs are encoded:
  a square JPEG on white for the markets (its side fits every market's rules,
  :mod:`dropship.images.rules`) and a WebP for our own detail pages.

Every failure is an :class:`ImageRefused` with a reason an operator can read; no Pillow error
escapes (a broken image never crashes a worker).
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from PIL import Image, ImageOps, UnidentifiedImageError

from dropship.images.config import ImageSettings
from dropship.images.rules import market_side

SOURCE_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP"})
CHUNK = 64 * 1024
WHITE = (255, 255, 255)
REASON_MAX = 300

# Our own pixel check runs first; Pillow's limit stays on as a second guard (it raises
# DecompressionBombError at twice MAX_IMAGE_PIXELS, which is caught below).
Image.MAX_IMAGE_PIXELS = 40_000_000


class ImageRefused(Exception):
    """This image cannot be used; ``transient`` ones are worth trying again soon."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason[:REASON_MAX])
        self.reason = reason[:REASON_MAX]
        self.transient = transient


@dataclass
class Processed:
    source_sha256: str
    source_format: str
    source_width: int
    source_height: int
    market_jpeg: bytes
    market_px: int
    web_webp: bytes
    web_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)


def download(session: requests.Session, url: str, limits: ImageSettings) -> bytes:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageRefused(f"not an http(s) URL: {url[:120]}")
    started = time.monotonic()
    try:
        response = session.get(
            url, stream=True, timeout=(limits.connect_timeout_s, limits.read_timeout_s)
        )
    except requests.Timeout:
        raise ImageRefused("download timed out", transient=True) from None
    except requests.RequestException as exc:
        raise ImageRefused(f"download failed: {type(exc).__name__}", transient=True) from None
    with response:
        status = response.status_code
        if status >= 500 or status == 429:
            raise ImageRefused(f"download answered HTTP {status}", transient=True)
        if status != 200:
            raise ImageRefused(f"download answered HTTP {status}")
        announced = response.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > limits.max_bytes:
            raise ImageRefused(f"too large: {announced} bytes (limit {limits.max_bytes})")
        buffer = bytearray()
        try:
            for chunk in response.iter_content(CHUNK):
                buffer += chunk
                if len(buffer) > limits.max_bytes:
                    raise ImageRefused(f"too large: over {limits.max_bytes} bytes")
                if time.monotonic() - started > limits.total_timeout_s:
                    raise ImageRefused(
                        f"download slower than {limits.total_timeout_s:g} s", transient=True
                    )
        except requests.RequestException as exc:
            raise ImageRefused(f"download cut: {type(exc).__name__}", transient=True) from None
    if not buffer:
        raise ImageRefused("empty response")
    return bytes(buffer)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any mode to RGB, transparency flattened on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        im = im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif im.mode == "F":
        im = im.convert("L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im if im.mode == "RGB" else im.convert("RGB")


def _fit(im: Image.Image, longest: int) -> Image.Image:
    """``im`` scaled so its longest side is ``longest`` (up or down)."""
    scale = longest / max(im.size)
    if scale == 1:
        return im
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    # reducing_gap: a cheap box reduction first, then Lanczos over the last factor of 2.
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _square(im: Image.Image) -> Image.Image:
    side = max(im.size)
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return canvas


def process_bytes(data: bytes, limits: ImageSettings) -> Processed:
    digest = hashlib.sha256(data).hexdigest()
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageRefused(f"decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageRefused("not an image (unrecognised bytes)") from None
    try:
        fmt = im.format or "?"
        width, height = im.size
        if fmt not in SOURCE_FORMATS:
            raise ImageRefused(f"unsupported format {fmt}")
        if width * height > limits.max_pixels:
            raise ImageRefused(
                f"decompression bomb: {width}x{height} = {width * height} px "
                f"(limit {limits.max_pixels})"
            )
        if max(width, height) < limits.min_source_px:
            raise ImageRefused(
                f"too small: {width}x{height} px (longest side under {limits.min_source_px})"
            )
        notes: list[str] = []
        frames = int(getattr(im, "n_frames", 1))
        if frames > 1:
            notes.append(f"animated ({frames} frames): first frame used")
        if fmt == "JPEG":
            # DCT scaling: decode at the smallest 1/n that still covers the larger output.
            need = max(limits.market_px, limits.web_px)
            longest = max(width, height)
            if longest > need:
                want = (max(1, width * need // longest), max(1, height * need // longest))
                im.draft("RGB" if im.mode in ("RGB", "YCbCr") else None, want)
                if im.size != (width, height):
                    notes.append(f"draft-decoded at {im.size[0]}x{im.size[1]}")
        try:
            im.load()
            oriented = ImageOps.exif_transpose(im)
            rgb = _to_rgb(oriented if oriented is not None else im)
        except Image.DecompressionBombError as exc:
            raise ImageRefused(f"decompression bomb: {exc}") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
            raise ImageRefused(f"corrupt or truncated {fmt}: {exc}") from None
        # One resize from the decoded image; the smaller web copy comes from that result.
        low, high = market_side(limits.market_px)
        fitted = _fit(rgb, min(max(max(rgb.size), low), high))
        square = _square(fitted)
        market = io.BytesIO()
        square.save(market, "JPEG", quality=limits.jpeg_quality, optimize=True)
        source = fitted if max(fitted.size) <= max(rgb.size) else rgb  # never upscale for web
        web_image = _fit(source, limits.web_px) if max(source.size) > limits.web_px else source
        web = io.BytesIO()
        # method 1: libwebp's fast setting (method 4 took about 3.5 times as long here).
        web_image.save(web, "WEBP", quality=limits.webp_quality, method=1)
        return Processed(
            source_sha256=digest,
            source_format=fmt,
            source_width=width,
            source_height=height,
            market_jpeg=market.getvalue(),
            market_px=square.width,
            web_webp=web.getvalue(),
            web_size=web_image.size,
            notes=notes,
        )
    finally:
        im.close()
