"""``dropship demo`` end to end, small: its own stack (the test's PostgreSQL server with a fresh
database, the test's Redis db), the sandbox, real workers. It must exit 0 with no duplicate at
the sandbox, no order without a visible next step and none missing, and the business must have
happened: orders arrived, items dispatched with tracking.

While it runs, ``dropship status --json`` and the stack's exporter (``/metrics``) are sampled
again and again: their figures must be the database's (read just before and just after each
sample) and must move with the business (orders appear and change state, task runs grow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from dropship.cli import cli
from dropship.embedded.system import free_port, port_open
from tests.conftest import PROJECT_DIR, SERVICES


@pytest.fixture
def demo_database() -> Iterator[str]:
    assert SERVICES.admin_url
    name = f"dropship_demo_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVICES.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(SERVICES.admin_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(SERVICES.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Sample:
    """One reading of ``dropship status --json`` and ``/metrics``, with the database's orders
    by status read just before and just after it."""

    before: dict[str, int]
    status: dict[str, Any]
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    after: dict[str, int]

    def status_orders(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.status["business"]["orders_by_status"].items()}

    def metric_orders(self) -> dict[str, int]:
        return {
            dict(labels)["status"]: int(v)
            for (name, labels), v in self.metrics.items()
            if name == "dropship_orders"
        }

    def status_runs(self, task: str) -> int:
        return sum(int(r["count"]) for r in self.status["tasks"]["5"] if r["task"] == task)

    def metric_runs(self, task: str) -> float:
        return self.metrics.get(("dropship_task_runs", (("task", task), ("window", "5m"))), 0.0)


def _orders_by_status(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            rows = conn.execute("SELECT status, count(*) FROM orders GROUP BY 1").fetchall()
        except psycopg.errors.UndefinedTable:  # not migrated yet
            return {}
    return {str(s): int(n) for s, n in rows}


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = requests.get(url, timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def _status_json() -> dict[str, Any]:
    # In process, as tests/ops/test_status.py does: the command's own code path without a fresh
    # interpreter per sample (seconds each on a loaded machine).
    result = CliRunner().invoke(cli, ["status", "--json"], terminal_width=200)
    assert result.exit_code == 0, result.output[-3000:]
    data: dict[str, Any] = json.loads(result.output)
    return data


def _sample(database_url: str, metrics_url: str) -> Sample | str:
    """A sample, or why there is none yet (no exporter yet, tables missing, stack stopping)."""
    if not port_open("127.0.0.1", int(metrics_url.rsplit(":", 1)[1].split("/")[0])):
        return "no exporter"
    before = _orders_by_status(database_url)
    status = _status_json()
    try:
        metrics = _scrape(metrics_url)
    except requests.ConnectionError:  # the demo is stopping its stack
        return "exporter gone"
    after = _orders_by_status(database_url)
    if status["errors"] or "orders_by_status" not in status.get("business", {}):
        return f"status errors {status['errors']}"  # the database is not migrated yet
    return Sample(before, status, metrics, after)


@pytest.fixture
def demo_environment(
    demo_database: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """This process's settings pointed at the demo's stack (its database, the Redis db, its data
    folder), as an operator's second terminal has them; the test's own restored afterwards."""
    from dropship import db
    from dropship.settings import get_settings

    data_dir = tmp_path / "demo"
    data_dir.mkdir(mode=0o755)
    monkeypatch.setenv("DROPSHIP_DATABASE_URL", demo_database)
    monkeypatch.setenv("DROPSHIP_REDIS_URL", redis_url)
    monkeypatch.setenv("DROPSHIP_DATA_DIR", str(data_dir))
    # Unset: `dropship status` then uses the demo stack's sandbox accounts (it sets the variable
    # itself; monkeypatch puts the test's value back).
    monkeypatch.delenv("DROPSHIP_PLATFORMS__ACCOUNTS", raising=False)
    get_settings.cache_clear()
    db.reset_engine()
    yield data_dir
    db.reset_engine()
    monkeypatch.undo()
    get_settings.cache_clear()


def _bracketed(before: dict[str, int], seen: dict[str, int], after: dict[str, int]) -> bool:
    """``seen`` was read between ``before`` and ``after``: orders only ever get added, and
    ``dispatched``/``cancelled`` are final, so those counts can only grow in between."""
    total = sum(seen.values())
    if not sum(before.values()) <= total <= sum(after.values()):
        return False
    return all(before.get(s, 0) <= seen.get(s, 0) <= after.get(s, 0) for s in TERMINAL)


TERMINAL = ("dispatched", "cancelled")
SWEEP = "tasks.orders.sweep_orders"


@pytest.mark.worker
def test_demo_runs_the_business_and_exits_zero(
    demo_database: str, redis_url: str, tmp_path: Path, demo_environment: Path
) -> None:
    metrics_port = free_port()
    env = {
        **os.environ,
        "DROPSHIP_DATABASE_URL": demo_database,
        "DROPSHIP_REDIS_URL": redis_url,
        "DROPSHIP_METRICS_PORT": str(metrics_port),
        "COLUMNS": "120",
    }
    env.pop("DROPSHIP_PLATFORMS__ACCOUNTS", None)
    data_dir = demo_environment
    args = ["--catalog", "8", "--rate", "4", "--duration", "4", "--cancel-share", "0.3"]
    args += ["--tracking-delay", "1", "--tick", "1", "--drain", "90", "--data-dir", str(data_dir)]
    log = tmp_path / "demo.log"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    samples: list[Sample] = []
    skipped: list[str] = []
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dropship.cli", "demo", *args],
            cwd=PROJECT_DIR,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                sample = _sample(demo_database, metrics_url)
                if isinstance(sample, Sample):
                    samples.append(sample)
                else:
                    skipped.append(sample)
                    time.sleep(0.5)
            proc.wait(max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    result = json.loads(next(line for line in output.splitlines() if line.startswith('{"dup')))
    assert result["duplicates"] == 0 and result["stuck"] == 0 and result["missing"] == 0
    assert result["arrived"] >= 10
    assert result["orders"].get("dispatched", 0) > 0, result
    # Every order the buyers placed is in the system (the sandbox may add a few of its own).
    assert sum(result["orders"].values()) >= result["arrived"]

    # The screen and the exporter, read while the demo ran.
    assert len(samples) >= 2, sorted(set(skipped))
    for s in samples:
        assert _bracketed(s.before, s.status_orders(), s.after), s
        assert _bracketed(s.before, s.metric_orders(), s.after), s
        assert s.status["queues"].keys() >= {"high", "medium", "low"}
        assert s.metrics[("dropship_snapshot_errors", ())] == 0
    first, last = samples[0], samples[-1]
    workers = {tuple(w["queues"]) for w in last.status["workers"]}
    assert workers >= {("high",), ("low", "medium")}, last.status["workers"]
    assert last.status["memory"]["workers_rss_bytes"] > 0  # the workers' own reports
    # The figures moved with the business: orders came and changed state, sweeps ran.
    assert len({tuple(sorted(s.status_orders().items())) for s in samples}) >= 2
    assert len({tuple(sorted(s.metric_orders().items())) for s in samples}) >= 2
    assert last.status_runs(SWEEP) > first.status_runs(SWEEP)
    assert last.metric_runs(SWEEP) > first.metric_runs(SWEEP)
    assert sum(last.status_orders().values()) > sum(first.status_orders().values())
