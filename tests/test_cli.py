"""The dropship command against the test database and Redis (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys

from dropship.migrate import head_revision
from tests.conftest import PROJECT_DIR


def _dropship(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dropship.cli", *args],
        cwd=PROJECT_DIR,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_upgrade_is_idempotent_and_reports_head() -> None:
    first = _dropship("db", "upgrade")
    assert first.returncode == 0, first.stderr
    second = _dropship("db", "upgrade")
    assert second.returncode == 0, second.stderr
    assert f"schema at {head_revision()}" in second.stdout
    assert "partitions created: []" in second.stdout
    current = _dropship("db", "current")
    assert f"applied: {head_revision()}" in current.stdout


def test_partitions_list_shows_current_and_next_months() -> None:
    ensure = _dropship("partitions", "ensure")
    assert ensure.returncode == 0, ensure.stderr
    listed = _dropship("partitions", "list")
    assert listed.returncode == 0, listed.stderr
    assert len([line for line in listed.stdout.splitlines() if line.startswith("orders_")]) >= 4


def test_status_shows_the_three_queues() -> None:
    status = _dropship("status")
    assert status.returncode == 0, status.stderr
    for queue in ("high", "medium", "low"):
        assert queue in status.stdout
