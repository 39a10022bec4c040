"""The image flow over real HTTP (sandbox supplier images, the stack's image server) and real
PostgreSQL: each URL is fetched once however many products use it, refused images keep their
reason, stored images are content-addressed, and a second run does no work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from dropship.images import services
from dropship.images.config import ImageSettings
from dropship.images.store import S3Store
from tests.images.conftest import HostedStore, fixture_url
from tests.listings.conftest import add_product
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    sandbox,
    sandbox_server,
)


def image_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM images")).all()
    return {r.source_url: dict(r._mapping) for r in rows}


def fetches(box: SandboxFixture) -> dict[str, int]:
    return dict(box.counts().get("image_fetches", {}))


def test_good_images_are_stored_once_and_a_second_run_does_nothing(
    committed_db: Engine,
    sandbox: SandboxFixture,  # noqa: F811
    image_store: HostedStore,
) -> None:
    base = sandbox.base_url
    photo = fixture_url(base, "jpeg", "photo", w=1200, h=900)
    cmyk = fixture_url(base, "cmyk", "print")
    copy = fixture_url(base, "jpeg", "photo", w=1200, h=900, copy=1)  # same bytes, other URL
    with committed_db.begin() as conn:
        ids = [
            add_product(conn, images=[photo, cmyk]),
            add_product(conn, images=[photo]),  # shares an image
            add_product(conn, images=[copy]),
        ]
    assert services.pending_product_ids() == ids
    counts = services.process_products(ids)
    assert counts == {"claimed": 3, "ok": 2, "reused": 1, "failed": 0}
    rows = image_rows(committed_db)
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert rows[photo]["market_key"] == rows[copy]["market_key"]  # stored once, by content
    # Two distinct images, a JPEG and a WebP each; every URL fetched exactly once.
    assert len(image_store.files()) == 4
    assert all(n == 1 for n in fetches(sandbox).values()) and len(fetches(sandbox)) == 3
    # The stored files are served over HTTP by the image server, as the markets fetch them.
    answer = requests.get(f"{image_store.base_url}/{rows[photo]['market_key']}", timeout=5)
    assert answer.status_code == 200 and answer.content[:3] == b"\xff\xd8\xff"

    mtimes = [p.stat().st_mtime_ns for p in image_store.files()]
    assert services.pending_product_ids() == []
    assert services.process_products(ids) == {"claimed": 0, "ok": 0, "reused": 0, "failed": 0}
    assert all(n == 1 for n in fetches(sandbox).values())  # nothing fetched again
    assert [p.stat().st_mtime_ns for p in image_store.files()] == mtimes


def test_hostile_images_are_refused_with_reasons(
    committed_db: Engine,
    sandbox: SandboxFixture,  # noqa: F811
    image_store: HostedStore,
) -> None:
    base = sandbox.base_url
    expected = {
        fixture_url(base, "bomb", "b.png"): ("decompression bomb", False),
        fixture_url(base, "truncated", "t.jpg"): ("corrupt or truncated", False),
        fixture_url(base, "html", "h.jpg"): ("not an image", False),
        fixture_url(base, "tiny", "s.jpg"): ("too small", False),
        fixture_url(base, "oversize", "o.jpg", mb=12): ("too large", False),
        fixture_url(base, "missing", "m.jpg"): ("HTTP 404", False),
        fixture_url(base, "error", "e.jpg"): ("HTTP 503", True),
        fixture_url(base, "slow", "w.jpg", delay=3): ("timed out", True),
        "ftp://example.invalid/x.jpg": ("not an http(s) URL", False),
    }
    with committed_db.begin() as conn:
        product = add_product(conn, images=list(expected))
    counts = services.process_products([product])
    assert counts["failed"] == len(expected) and counts["ok"] == 0
    rows = image_rows(committed_db)
    for url, (reason, transient) in expected.items():
        assert reason in rows[url]["reason"], (url, rows[url]["reason"])
        assert rows[url]["transient"] is transient and rows[url]["status"] == "failed"
    assert image_store.files() == []
    # Only the transient failures are due again on the next run; the others wait 24 h.
    assert services.process_products([product])["claimed"] == 2
    listed = {r["source_url"] for r in services.failed_images(limit=50)}
    assert listed == set(expected)


def test_cli_lists_refused_images_and_waiting_products(
    committed_db: Engine,
    sandbox: SandboxFixture,  # noqa: F811
    image_store: HostedStore,
) -> None:
    from dropship.cli import cli
    from dropship.db import session_scope
    from dropship.listings.rules import Decision

    broken = fixture_url(sandbox.base_url, "truncated", "only.jpg")
    with committed_db.begin() as conn:
        product = add_product(conn, images=[broken])
    services.process_products([product])
    with session_scope() as session:
        (gated,) = services.gate_decisions(
            session, [Decision(product_id=product, listable=True)], "coupang_main"
        )
    assert not gated.listable and gated.code == "images"
    assert gated.reason.startswith("no usable image of 1: only.jpg: corrupt or truncated")
    result = CliRunner().invoke(cli, ["images", "failed"], env=dict(os.environ))
    assert result.exit_code == 0, result.output
    assert "only.jpg" in result.output and "corrupt or truncated" in result.output
    assert str(product) in result.output and "coupang_main" in result.output


@pytest.fixture
def s3_store() -> Iterator[S3Store]:
    """An S3-compatible server on loopback (moto's standalone server: real HTTP, real boto3)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = ImageSettings(
        store="s3",
        s3_endpoint_url=f"http://{host}:{port}",
        s3_bucket="images-test",
        s3_access_key="test",  # type: ignore[arg-type]
        s3_secret_key="test",  # type: ignore[arg-type]
        s3_public_read_acl=True,
    )
    store = S3Store(settings)
    store.client.create_bucket(Bucket="images-test")
    try:
        yield store
    finally:
        server.stop()


def test_s3_backend_stores_by_content_once_and_serves_the_url(
    committed_db: Engine,
    sandbox: SandboxFixture,  # noqa: F811
    image_store: HostedStore,
    s3_store: S3Store,
    tmp_path: Path,
) -> None:
    url = fixture_url(sandbox.base_url, "png", "s3", w=900, h=900)
    with committed_db.begin() as conn:
        ids = [add_product(conn, images=[url]), add_product(conn, images=[url])]
    assert services.process_products(ids, store=s3_store)["ok"] == 1
    key = image_rows(committed_db)[url]["market_key"]
    assert s3_store.exists(key) and not s3_store.put(key, b"ignored")  # present: not rewritten
    listed = s3_store.client.list_objects_v2(Bucket="images-test")["Contents"]
    assert len(listed) == 2  # the JPEG and the WebP
    answer = requests.get(s3_store.url(key), timeout=5)
    assert answer.status_code == 200 and answer.content == s3_store.get(key)
    assert image_store.files() == []  # nothing went to the local folder
