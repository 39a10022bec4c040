"""Task metrics: fixed buckets in per-minute Redis hashes (bounded whatever the rate), filled by a
real worker's signals; worker memory reports; ``dropship status --json`` shows them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import Engine
from typer.testing import CliRunner

from dropship.cli import cli
from dropship.ops import taskmetrics
from dropship.ops.taskmetrics import BUCKETS_S, quantile, read_windows, record
from tests.conftest import start_worker, stop_worker

NOW = 1_800_000_000.0  # a fixed minute, so the test never straddles a minute boundary


def test_quantiles_come_from_the_buckets() -> None:
    buckets = [0] * len(BUCKETS_S)
    assert quantile(buckets, 0.95) is None
    i = BUCKETS_S.index(1.0)
    buckets[i] = 100  # 100 runs between 0.5 s and 1 s
    assert quantile(buckets, 0.5) == pytest.approx(0.75)
    assert quantile(buckets, 0.95) == pytest.approx(0.975)
    buckets[BUCKETS_S.index(10.0)] = 5  # 5 slow runs (5-10 s) move p99, not p50
    assert 5.0 < (quantile(buckets, 0.99) or 0) <= 10.0
    assert (quantile(buckets, 0.5) or 0) < 1.0


def test_windows_sum_minutes_and_memory_is_bounded_by_minutes_not_runs(
    redis_client: redis_lib.Redis,
) -> None:
    for minute in range(3):
        for n in range(500):  # 1,500 runs of one task, a few failures
            state = "FAILURE" if n % 100 == 0 else "SUCCESS"
            record(redis_client, "tasks.x.a", state, 0.02, 0.3, now=NOW - minute * 60)
    record(redis_client, "tasks.x.b", "RETRY", 3.0, None, now=NOW)
    keys = redis_client.keys(f"{taskmetrics.TASKS_KEY}:*")
    assert len(keys) == 3  # one hash per minute, whatever the number of runs
    for key in keys:
        assert redis_client.hlen(key) <= 2 * (6 + 2 * len(BUCKETS_S))
        assert 0 < redis_client.ttl(key) <= taskmetrics.RETENTION_MINUTES * 60

    one = read_windows(redis_client, 1, now=NOW)
    five = read_windows(redis_client, 5, now=NOW)
    assert one["tasks.x.a"].count == 500 and five["tasks.x.a"].count == 1500
    a = five["tasks.x.a"].as_dict()
    assert (a["succeeded"], a["failed"]) == (1485, 15)
    assert a["success_rate"] == pytest.approx(0.99)
    assert a["runtime_mean_s"] == pytest.approx(0.02)
    assert 0.01 < a["runtime_p95_s"] <= 0.025 and 0.25 < a["queue_wait_p95_s"] <= 0.5
    b = one["tasks.x.b"].as_dict()
    assert (b["retried"], b["succeeded"], b["queue_wait_p95_s"]) == (1, 0, None)
    assert 2.5 < b["runtime_p99_s"] <= 5.0


def _status_json() -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["status", "--json"], terminal_width=200)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


@pytest.mark.worker
def test_a_real_worker_records_its_tasks_and_reports_its_memory(
    tmp_path: Path, redis_url: str, committed_db: Engine
) -> None:
    from tasks.diagnostics import ping

    worker = start_worker(tmp_path, queues="low", concurrency=1, name="metrics")
    try:
        for r in [ping.delay(f"m{n}") for n in range(8)]:
            r.get(timeout=30)
        deadline = time.monotonic() + 20
        while True:
            status = _status_json()
            workers = status["workers"]
            assert isinstance(workers, list)
            if any(str(w["hostname"]).startswith("metrics-") and w["queues"] for w in workers):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
    finally:
        stop_worker(worker)
    tasks = {row["task"]: row for row in status["tasks"]["5"]}
    ping_row = tasks["tasks.diagnostics.ping"]
    assert ping_row["count"] == 8 and ping_row["succeeded"] == 8
    assert ping_row["runtime_p95_s"] is not None and ping_row["runtime_p95_s"] < 5
    assert ping_row["queue_wait_p95_s"] is not None  # the publish-time header reached the worker
    report = next(w for w in workers if str(w["hostname"]).startswith("metrics-"))
    assert report["queues"] == ["low"] and report["pool_processes"] == 1
    assert report["tree_processes"] >= 2  # the worker and its pool child
    assert report["rss"] > 20_000_000 and 0 < (report["pss"] or 0) <= report["rss"]
    assert status["queues"] == {"high": 0, "medium": 0, "low": 0}
    business = status["business"]
    assert isinstance(business, dict) and business["orders_waiting_to_forward"] == 0
