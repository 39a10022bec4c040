"""``dropship collect``: enqueue and wait with progress, list runs, show rejects (real CLI
subprocess, real worker, sandbox over HTTP)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import Engine, text

from tests.catalog.conftest import SandboxFixture
from tests.conftest import PROJECT_DIR, WorkerProcess

pytestmark = pytest.mark.worker


def dropship(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropship.cli", *args],
        cwd=PROJECT_DIR,
        env={**os.environ, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_collect_wait_runs_and_rejects(
    sandbox: SandboxFixture, collect_worker: WorkerProcess, committed_db: Engine
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 120})
    sandbox.set_faults("gentrade", malformed_rate=0.1)
    waited = dropship("collect", "gentrade", "--wait")
    assert waited.returncode == 0, waited.stdout + waited.stderr + collect_worker.log()[-2000:]
    assert "enqueued" in waited.stdout and "succeeded" in waited.stdout
    # Nothing after a clean run: no result-subscription clean-up failing at interpreter exit.
    assert "Traceback" not in waited.stderr and "Exception ignored" not in waited.stderr, (
        waited.stderr
    )
    with committed_db.connect() as conn:
        run_id, rejected, records = conn.execute(
            text("SELECT id, rejected, records FROM collect_runs")
        ).one()
    assert rejected > 0 and records + rejected == 120

    runs = dropship("collect", "runs")
    assert runs.returncode == 0, runs.stderr
    line = next(row for row in runs.stdout.splitlines() if f" {run_id} " in row)
    assert "gentrade" in line and "succeeded" in line and str(records) in line

    rejects = dropship("collect", "rejects", str(run_id))
    assert rejects.returncode == 0, rejects.stderr
    assert rejects.stdout.count("gentrade") >= rejected  # one row per reject, with its reason
    with committed_db.connect() as conn:
        reason = conn.execute(text("SELECT reason FROM product_rejects LIMIT 1")).scalar_one()
    assert reason[:30] in rejects.stdout.replace("\n", "")

    unknown = dropship("collect", "nosuchsupplier")
    assert unknown.returncode == 1 and "unknown supplier 'nosuchsupplier'" in unknown.stderr
