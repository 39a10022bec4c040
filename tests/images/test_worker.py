"""Image work on a real Celery worker consuming ``low``: ``dropship images process --wait``
publishes batches of product ids and follows them to the end; decompression bombs and broken
images are refused without crashing a worker process; memory of the worker tree stays bounded
while 4000 px images are processed by two children; a second sweep finds nothing to do."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from dropship.images import services
from dropship.settings import get_settings
from tests.catalog.conftest import worker_env
from tests.conftest import start_worker, stop_worker
from tests.images.conftest import HostedStore, fixture_url
from tests.listings.conftest import add_product
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    sandbox,
    sandbox_server,
)

# Two children decoding 4000 px images: the worker tree grows by less than this over its idle
# size (draft-mode JPEG decoding, one image decoded at a time per child). Measured on the 2-core
# box: about 140 MB with draft mode, about 330 MB with it switched off.
TREE_GROWTH_LIMIT_MB = 220


def tree_rss_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


@pytest.mark.worker
@pytest.mark.timeout(180)
def test_process_with_a_real_worker_refuses_bombs_without_crashing(
    committed_db: Engine,
    sandbox: SandboxFixture,  # noqa: F811
    image_store: HostedStore,
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DROPSHIP_IMAGES__BATCH_PRODUCTS", "2")
    monkeypatch.setenv("DROPSHIP_IMAGES__READ_TIMEOUT_S", "10")
    get_settings.cache_clear()
    base = sandbox.base_url
    with committed_db.begin() as conn:
        big = [
            add_product(conn, images=[fixture_url(base, "jpeg", f"big{n}", w=4000, h=3000)])
            for n in range(6)
        ]
        hostile = add_product(
            conn,
            images=[
                fixture_url(base, "bomb", "bomb.png"),
                fixture_url(base, "truncated", "cut.jpg"),
                fixture_url(base, "corrupt", "noise.jpg"),
            ],
        )
        after = add_product(conn, images=[fixture_url(base, "png", "after", w=4000, h=2500)])
    worker = start_worker(tmp_path, queues="low", concurrency=2, env=worker_env(sandbox))
    peak = 0.0
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, tree_rss_mb(worker.proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        from dropship.cli import cli

        children_before = {p.pid for p in psutil.Process(worker.proc.pid).children()}
        idle = tree_rss_mb(worker.proc.pid)
        result = CliRunner().invoke(
            cli, ["images", "process", "--wait", "--timeout", "120"], env=dict(os.environ)
        )
        assert result.exit_code == 0, result.output + worker.log()[-3000:]
        assert "8 products with unprocessed images: 4 batches enqueued" in result.output
        assert "10/10" in result.output  # the progress bar reached every image
        with committed_db.connect() as conn:
            rows = dict(
                conn.execute(text("SELECT source_url, coalesce(reason, status) FROM images")).all()
            )
        assert sum(v == "ok" for v in rows.values()) == 7
        refused = sorted(v for v in rows.values() if v != "ok")
        assert refused[0].startswith("corrupt or truncated JPEG")
        assert refused[1].startswith("decompression bomb")
        assert refused[2].startswith("not an image")
        assert services.pending_product_ids() == []
        # No worker process died on the way (a crash shows as a replaced child / lost task).
        log = worker.log()
        assert "WorkerLostError" not in log and "exited with" not in log, log[-3000:]
        assert worker.proc.poll() is None
        assert {p.pid for p in psutil.Process(worker.proc.pid).children()} == children_before
        # A second sweep on the worker finds nothing to do.
        from tasks.images import process_sweep

        assert process_sweep.delay().get(timeout=30) == {"products": 0, "batches": 0}
        assert big and hostile and after
    finally:
        sampling = False
        sampler.join(5)
        stop_worker(worker)
    growth = peak - idle
    assert 0 < growth < TREE_GROWTH_LIMIT_MB, f"worker tree {idle:.0f} MB idle, peak {peak:.0f} MB"
