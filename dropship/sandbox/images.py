"""Supplier image hosting in the sandbox: deterministic images, hostile ones included.

Routes (not rate limited, counted under ``/_sandbox/counts`` ``image_fetches`` per path):

* ``GET /images/<supplier>/<index>/<n>.jpg``: the world's catalog images (the supplier sandboxes
  put these URLs in their product records). Product *i*'s image *n* is a pure function of the
  seed: most are ordinary JPEGs or PNGs of 400-1600 px, some are CMYK, palette, EXIF-rotated or
  animated, and a few are broken (truncated, not an image, too small).
* ``GET /images/fixture/<kind>/<name>``: one image of a named kind, for tests and benchmarks:
  ``jpeg`` (``?w=&h=`` up to 6000 px), ``png``, ``alpha``, ``cmyk``, ``palette``, ``exif``
  (orientation 6: stored landscape, shown portrait), ``animated``, ``gray16``, ``truncated``,
  ``corrupt``, ``html``, ``tiny``, ``bomb`` (a 20000x20000 PNG of 100 KB), ``slow``
  (``?delay=`` seconds before the answer), ``oversize`` (streams ``?mb=`` MB without a length),
  ``missing`` (404), ``error`` (503).

Images are rendered in a worker thread (``run_in_executor``) and kept in a small LRU, so a large
one never stalls the IOLoop that serves every other platform.

:func:`inspect_image` is the check the market sandboxes apply to what they receive or fetch.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import random
import struct
import zlib
from typing import Any

import tornado.iostream
import tornado.web
from PIL import Image, ImageDraw

from dropship.sandbox.core import RouteSpec, SandboxState

MAX_FIXTURE_PX = 6000
MAX_INSPECT_PIXELS = 40_000_000

FIXTURE_KINDS = (
    "jpeg",
    "png",
    "alpha",
    "cmyk",
    "palette",
    "exif",
    "animated",
    "gray16",
    "truncated",
    "corrupt",
    "html",
    "tiny",
    "bomb",
    "slow",
    "oversize",
    "missing",
    "error",
)
# The catalog's mix: kind by weight (broken ones rare, as at a real supplier).
CATALOG_MIX: tuple[tuple[str, int], ...] = (
    ("jpeg", 70),
    ("png", 8),
    ("cmyk", 4),
    ("palette", 4),
    ("exif", 4),
    ("animated", 2),
    ("alpha", 2),
    ("truncated", 2),
    ("corrupt", 2),
    ("tiny", 2),
)


def _rng(*parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))


def _picture(key: str, width: int, height: int) -> Image.Image:
    """A product-like picture: a coloured background with a few shapes, from ``key``."""
    rng = _rng("picture", key)
    im = Image.new("RGB", (width, height), tuple(rng.randrange(150, 256) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(1, width // 2 + 2), y0 + rng.randrange(1, height // 2 + 2)
        color = tuple(rng.randrange(0, 200) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=color)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=color)
    return im


def _save(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def _bomb_png(side: int = 20_000) -> bytes:
    """A 1-bit PNG of side x side pixels whose rows are all zero: ~100 KB on the wire,
    400 megapixels (50 MB at 1 bit, 1.2 GB as RGB) once decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


@functools.lru_cache(maxsize=64)
def render(kind: str, key: str, width: int = 0, height: int = 0) -> tuple[bytes, str]:
    """(bytes, content type) of one image; a pure function of its arguments."""
    rng = _rng("size", kind, key)
    w = width or rng.randrange(400, 1601)
    h = height or rng.randrange(400, 1601)
    if kind == "jpeg":
        return _save(_picture(key, w, h), "JPEG", quality=85), "image/jpeg"
    if kind == "png":
        return _save(_picture(key, w, h), "PNG"), "image/png"
    if kind == "alpha":
        im = _picture(key, w, h).convert("RGBA")
        im.putalpha(0)
        inner = _picture(key + "-inner", w // 2, h // 2).convert("RGBA")
        im.paste(inner, (w // 4, h // 4))
        return _save(im, "PNG"), "image/png"
    if kind == "cmyk":
        return _save(_picture(key, w, h).convert("CMYK"), "JPEG", quality=85), "image/jpeg"
    if kind == "palette":
        im = _picture(key, w, h).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
        return _save(im, "PNG"), "image/png"
    if kind == "exif":
        # Stored landscape (wide) with orientation 6: viewers show it rotated to portrait.
        im = _picture(key, max(w, h), min(w, h))
        im.paste((255, 0, 0), (0, 0, im.width // 4, im.height))  # red band on the stored left
        exif = Image.Exif()
        exif[0x0112] = 6
        return _save(im, "JPEG", quality=85, exif=exif.tobytes()), "image/jpeg"
    if kind == "animated":
        frames = [_picture(f"{key}-{n}", w, h).convert("P") for n in range(3)]
        out = io.BytesIO()
        frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
        return out.getvalue(), "image/gif"
    if kind == "gray16":
        im = Image.linear_gradient("L").resize((w, h)).convert("I;16")
        return _save(im, "PNG"), "image/png"
    if kind == "truncated":
        data = render("jpeg", key, w, h)[0]
        return data[: len(data) // 2], "image/jpeg"
    if kind == "corrupt":
        junk = bytearray(render("jpeg", key, w, h)[0][:64])
        junk += _rng("corrupt", key).randbytes(4096)
        junk[0:4] = b"\x00\x13\x37\x00"  # no known signature
        return bytes(junk), "image/jpeg"
    if kind == "html":
        return b"<html><body>Image not found</body></html>", "text/html"
    if kind == "tiny":
        return _save(_picture(key, 40, 30), "JPEG"), "image/jpeg"
    if kind == "bomb":
        return _bomb_png(), "image/png"
    raise ValueError(f"unknown image kind {kind!r}")


def catalog_kind(seed: int, supplier: str, index: int, n: int) -> str:
    roll = _rng(seed, "image-kind", supplier, index, n).randrange(sum(w for _, w in CATALOG_MIX))
    for kind, weight in CATALOG_MIX:
        if roll < weight:
            return kind
        roll -= weight
    return "jpeg"


def inspect_image(data: bytes, max_pixels: int = MAX_INSPECT_PIXELS) -> tuple[str, int, int]:
    """(format, width, height) after a full decode; ValueError saying why it is not an image a
    market could show. Pixel count is checked from the header before decoding."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise ValueError(f"{width}x{height} px is too many pixels")
            im.load()
            return im.format or "?", width, height
    except ValueError:
        raise
    except Exception as exc:  # any decoder error is the same answer: cannot be decoded
        raise ValueError(f"cannot decode image: {type(exc).__name__}: {exc}"[:200]) from None


class _ImageHandler(tornado.web.RequestHandler):
    def initialize(self, state: SandboxState) -> None:
        self.state = state

    def check_xsrf_cookie(self) -> None:
        return None

    async def serve(self, kind: str, key: str, width: int = 0, height: int = 0) -> None:
        self.state.count("image_fetches", self.request.uri)
        if kind == "missing":
            raise tornado.web.HTTPError(404)
        if kind == "error":
            raise tornado.web.HTTPError(503)
        if kind == "slow":
            await asyncio.sleep(float(self.get_query_argument("delay", "3")))
            kind = "jpeg"
        if kind == "oversize":
            await self._stream_junk(int(self.get_query_argument("mb", "32")))
            return
        loop = asyncio.get_running_loop()
        data, content_type = await loop.run_in_executor(None, render, kind, key, width, height)
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "public, max-age=86400")
        self.write(data)

    async def _stream_junk(self, megabytes: int) -> None:
        """A JPEG start followed by ``megabytes`` MB, chunked (no Content-Length)."""
        self.set_header("Content-Type", "image/jpeg")
        block = b"\xff\xd8\xff\xe0" + b"\x00" * (256 * 1024 - 4)
        try:
            for _ in range(megabytes * 4):
                self.write(block)
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return  # the client stopped reading: what a bounded download does


class CatalogImageHandler(_ImageHandler):
    async def get(self, supplier: str, index: str, n: str) -> None:
        seed = self.state.config.seed
        kind = catalog_kind(seed, supplier, int(index), int(n))
        await self.serve(kind, f"{seed}:{supplier}:{index}:{n}")


class FixtureImageHandler(_ImageHandler):
    async def get(self, kind: str, name: str) -> None:
        if kind not in FIXTURE_KINDS:
            raise tornado.web.HTTPError(404)
        try:
            width = min(MAX_FIXTURE_PX, int(self.get_query_argument("w", "0")))
            height = min(MAX_FIXTURE_PX, int(self.get_query_argument("h", "0")))
        except ValueError:
            raise tornado.web.HTTPError(400, reason="w and h must be integers") from None
        await self.serve(kind, hashlib.sha1(name.encode()).hexdigest(), width, height)


def routes(state: SandboxState) -> list[RouteSpec]:
    kw = {"state": state}
    return [
        (r"/images/fixture/([a-z0-9]+)/([^/]+)", FixtureImageHandler, kw),
        (r"/images/([a-z]+)/([0-9]+)/([0-9]+)\.jpg", CatalogImageHandler, kw),
    ]
