"""DROPSHIP_MEMORY_BUDGET sizes the worker tree; a real worker's autoscaler reads the budget."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from dropship.ops.memory import MIN_BUDGET_MB, batch_rows, size_for
from dropship.settings import Settings, SettingsError, load_settings
from dropship.stack import worker_commands
from tests import real_workers
from tests.conftest import PROJECT_DIR


def test_one_gigabyte_sizes_pools_recycling_watermarks_and_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DROPSHIP_MEMORY_BUDGET", "1GB")
    s = load_settings()
    c = s.celery
    assert (c.autoscale_min, c.autoscale_max) == (1, 2)
    # Two workers' main processes plus three children at their recycle limit fit the budget.
    total_mb = 2 * 120 + (1 + c.autoscale_max) * c.worker_max_memory_per_child_kb / 1000
    assert 900 < total_mb <= 1000
    assert c.memory_low_watermark_pct < c.memory_high_watermark_pct < 50
    assert s.collect.copy_chunk_rows < Settings().collect.copy_chunk_rows
    # The rows a task holds shrink with the child's allowance (253 of 400 MB): the COPY chunk,
    # the supplier page cap, the per-task batches.
    assert s.row_batch_scale == pytest.approx(253.3 / 400, abs=0.01)
    assert s.collect.copy_chunk_rows == int(2000 * s.row_batch_scale)
    assert s.platforms.page_rows == int(1000 * s.row_batch_scale)
    assert batch_rows(500, s) == int(500 * s.row_batch_scale) < 500
    assert batch_rows(500, Settings()) == 500  # no budget: the defaults
    main = worker_commands(s)[0].args
    assert "--autoscale=2,1" in main
    # More memory, more children (never more than 8); the chunk never grows past its default.
    big = size_for(8_000_000_000)
    assert big.autoscale_max == 8 and big.copy_chunk_rows == 2000
    assert big.page_rows == 1000 and big.row_scale == 1.0
    small = size_for(MIN_BUDGET_MB * 1_000_000)
    assert small.page_rows < s.platforms.page_rows and small.row_scale < s.row_batch_scale
    assert size_for(2_000_000_000).autoscale_max > 2


def test_explicit_values_win_and_a_too_small_budget_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DROPSHIP_MEMORY_BUDGET", "1GB")
    monkeypatch.setenv("DROPSHIP_CELERY__AUTOSCALE_MAX", "3")
    monkeypatch.setenv("DROPSHIP_COLLECT__COPY_CHUNK_ROWS", "777")
    monkeypatch.setenv("DROPSHIP_PLATFORMS__PAGE_ROWS", "900")
    monkeypatch.setenv("DROPSHIP_ROW_BATCH_SCALE", "0.5")
    s = load_settings()
    assert s.celery.autoscale_max == 3 and s.collect.copy_chunk_rows == 777
    assert s.platforms.page_rows == 900 and s.row_batch_scale == 0.5
    assert s.celery.worker_max_memory_per_child_kb < 400_000  # still sized by the budget
    monkeypatch.setenv("DROPSHIP_MEMORY_BUDGET", f"{MIN_BUDGET_MB - 1}MB")
    with pytest.raises(SettingsError, match="DROPSHIP_MEMORY_BUDGET"):
        load_settings()


def test_up_refuses_a_bad_budget_naming_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dropship.cli", "up", "--memory-budget", "lots"],
        cwd=PROJECT_DIR,
        env={**os.environ, "DROPSHIP_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "DROPSHIP_MEMORY_BUDGET" in proc.stderr, proc.stderr


@pytest.mark.worker
def test_a_real_worker_scales_by_the_budget_and_logs_the_reading(
    tmp_path: Path, redis_url: str, committed_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DROPSHIP_MEMORY_BUDGET", "500MB")
    s = load_settings()
    args = worker_commands(s)[0].args
    args[args.index("-n") + 1] = f"budget-{os.getpid()}@%h"
    # The worker's own tree (about 110 MB PSS idle) takes over 20% of 500 MB, so with these
    # watermarks the budget reading, not the host's (gigabytes free), holds the pool at MIN=1.
    env = {
        "DROPSHIP_MEMORY_BUDGET": "500MB",
        "DROPSHIP_CELERY__MEMORY_HIGH_WATERMARK_PCT": "85",
        "DROPSHIP_CELERY__MEMORY_LOW_WATERMARK_PCT": "80",
        "DROPSHIP_CELERY__AUTOSCALE_TICK_SECONDS": "0.3",
    }
    worker = real_workers.spawn("budget", args, tmp_path, env)
    try:
        real_workers.wait_ready(worker)
        deadline = time.monotonic() + 20
        while "[memory budget]" not in worker.log():
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
    finally:
        real_workers.stop(worker)
    log = worker.log()
    assert "autoscale: memory budget 500 MB: bounds 1-1" in log
    decision = next(line for line in log.splitlines() if "[memory budget]" in line)
    assert "memory low, already at min" in decision and "bounds 1-1" in decision
