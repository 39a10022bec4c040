"""A collect worker's memory does not grow with the catalog: 10 times the products, same peak
RSS of the pool process (real worker, sandbox over HTTP)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import Engine

from tests.catalog.conftest import SandboxFixture, wait_for_run, worker_env
from tests.conftest import start_worker, stop_worker

pytestmark = pytest.mark.worker

SMALL, LARGE = 2_000, 20_000
# Measured: +0.3 MB with the default 2000-row COPY chunks; +22 MB when one chunk holds the
# whole catalog (DROPSHIP_COLLECT__COPY_CHUNK_ROWS=100000), which is what this must catch.
ALLOWED_GROWTH_MB = 8


def pool_peak_rss(worker_pid: int, done: threading.Event, peaks: list[int]) -> None:
    peak = 0
    while not done.is_set():
        try:
            for child in psutil.Process(worker_pid).children(recursive=True):
                peak = max(peak, child.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    peaks.append(peak)


def collect_with_peak(engine: Engine, worker: Any, size: int, sandbox: SandboxFixture) -> int:
    from tasks.collect import collect_supplier

    sandbox.configure_suppliers(catalog_sizes={"gentrade": size})
    done, peaks = threading.Event(), []  # type: ignore[var-annotated]
    sampler = threading.Thread(target=pool_peak_rss, args=(worker.proc.pid, done, peaks))
    sampler.start()
    try:
        run_id = collect_supplier.delay("gentrade", "gentrade_main").get(timeout=60)["run_id"]
        run = wait_for_run(engine, run_id, timeout=300, worker=worker)
    finally:
        done.set()
        sampler.join()
    assert run["status"] == "succeeded" and run["records"] + run["rejected"] == size, run
    return int(peaks[0])


def test_collect_worker_rss_is_flat_in_catalog_size(
    tmp_path: Path, sandbox: SandboxFixture, redis_url: str, committed_db: Engine
) -> None:
    worker = start_worker(tmp_path, queues="low", concurrency=1, env=worker_env(sandbox))
    try:
        collect_with_peak(committed_db, worker, 200, sandbox)  # imports, connections, caches
        small = collect_with_peak(committed_db, worker, SMALL, sandbox)
        large = collect_with_peak(committed_db, worker, LARGE, sandbox)
    finally:
        stop_worker(worker)
    growth_mb = (large - small) / 2**20
    assert growth_mb < ALLOWED_GROWTH_MB, f"{SMALL}: {small >> 20} MB, {LARGE}: {large >> 20} MB"
