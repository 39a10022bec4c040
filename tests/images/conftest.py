"""Fixtures for the image tests: a local image store served over HTTP by the stack's image
server (real loopback HTTP, as the markets download from it), with short download limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dropship.images.server import ImageServer
from dropship.settings import get_settings


@dataclass
class HostedStore:
    root: Path
    base_url: str

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())


@pytest.fixture
def image_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostedStore]:
    """``DROPSHIP_IMAGES__*`` pointing at a fresh folder served on a free port; also seen by
    worker processes started after it (they inherit the environment)."""
    root = tmp_path / "image-store"
    server = ImageServer(root).start()
    for name, value in {
        "STORE": "local",
        "LOCAL_DIR": str(root),
        "PUBLIC_BASE_URL": server.base_url,
        "READ_TIMEOUT_S": "1.0",
        "CONNECT_TIMEOUT_S": "1.0",
        "TOTAL_TIMEOUT_S": "4.0",
        "MAX_BYTES": str(8 * 1024 * 1024),
    }.items():
        monkeypatch.setenv(f"DROPSHIP_IMAGES__{name}", value)
    get_settings.cache_clear()
    try:
        yield HostedStore(root, server.base_url)
    finally:
        server.stop()
        get_settings.cache_clear()


def fixture_url(base_url: str, kind: str, name: str, **query: object) -> str:
    """A sandbox image of ``kind`` (dropship/sandbox/images.py)."""
    suffix = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{base_url}/images/fixture/{kind}/{name}" + (f"?{suffix}" if suffix else "")
