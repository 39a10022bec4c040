"""The sandbox's supplier images: the catalog's image URLs point at the sandbox itself, the same
URL always serves the same bytes, the catalog mixes in hostile kinds, and serving a large image
never stalls the sandbox's IOLoop for other platforms."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter

import requests

from dropship.sandbox.images import catalog_kind
from dropship.sandbox.suppliers import SupplierWorld
from tests.images.conftest import fixture_url
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    sandbox,
    sandbox_server,
)


def test_catalog_images_are_sandbox_urls_with_deterministic_bytes(
    sandbox: SandboxFixture,  # noqa: F811
) -> None:
    world = SupplierWorld(sandbox.state)
    item = world.item("ownerclan", 3)
    assert item is not None and item.images
    assert all(u.startswith(f"{sandbox.base_url}/images/ownerclan/3/") for u in item.images)
    first = requests.get(item.images[0], timeout=10)
    again = requests.get(item.images[0], timeout=10)
    assert first.status_code == 200 and first.content == again.content
    assert sandbox.counts()["image_fetches"][item.images[0].split(sandbox.base_url, 1)[1]] == 2
    # The mix is a pure function of the seed and includes broken and unusual kinds.
    kinds = Counter(catalog_kind(42, "ownerclan", i, 0) for i in range(400))
    assert kinds["jpeg"] > 200 and kinds["truncated"] and kinds["cmyk"] and kinds["animated"]
    assert kinds == Counter(catalog_kind(42, "ownerclan", i, 0) for i in range(400))


def test_a_large_image_does_not_stall_other_requests(
    sandbox: SandboxFixture,  # noqa: F811
) -> None:
    big = fixture_url(sandbox.base_url, "jpeg", "stall-check", w=6000, h=6000)
    done = threading.Event()

    def fetch_big() -> None:
        requests.get(big, timeout=60)
        done.set()

    thread = threading.Thread(target=fetch_big)
    thread.start()
    time.sleep(0.05)  # the big render is under way in the sandbox's thread pool
    started = time.monotonic()
    health = requests.get(f"{sandbox.base_url}/_sandbox/health", timeout=10)
    elapsed = time.monotonic() - started
    thread.join(60)
    assert health.status_code == 200 and done.is_set()
    assert elapsed < 0.5, f"health answered after {elapsed:.2f} s"
    digest = hashlib.sha256(requests.get(big, timeout=60).content).hexdigest()
    assert digest  # served again from the renderer's cache
