"""Image URLs the market sandboxes accept, for connector tests that are not about images:
Coupang downloads every vendorPath (so it must be a real, square, decodable image: the
sandbox's own fixture route), Naver takes only images on its own host (put straight into the
sandbox's Naver store here, so no API call is counted)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from dropship.sandbox.naver import NaverWorld


def coupang_image_urls(sandbox: Any, count: int = 2) -> tuple[str, ...]:
    return tuple(
        f"{sandbox.base_url}/images/fixture/jpeg/listing-{n}.jpg?w=800&h=800" for n in range(count)
    )


def naver_hosted_urls(sandbox: Any, count: int = 1) -> tuple[str, ...]:
    out = io.BytesIO()
    Image.new("RGB", (800, 800), (200, 210, 220)).save(out, "JPEG")
    world = NaverWorld(sandbox.state)
    urls = []
    with sandbox.state.lock:
        for n in range(count):
            number = len(world.store.images) + 1
            world.store.images[number] = (f"test-{n}.jpg", out.getvalue())
            urls.append(f"{sandbox.base_url}/naver/phinf/{number}/test-{n}.jpg")
    return tuple(urls)


def market_image_urls(sandbox: Any, market: str, count: int = 1) -> tuple[str, ...]:
    if market == "naver":
        return naver_hosted_urls(sandbox, count)
    return coupang_image_urls(sandbox, count)
