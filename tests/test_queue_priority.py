"""Orders never wait behind bulk work: no worker that runs bulk tasks consumes ``high``.

With ``--autoscale`` Celery sets the prefetch count to MAX, so a worker on ``high,medium,low``
whose pool cannot grow (memory tight) reserves order messages behind a child busy with bulk work.
The real test starts the workers exactly as ``dropship up`` does (``stack.worker_commands``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import yaml

from dropship.celery_app import app
from dropship.settings import get_settings
from dropship.stack import worker_commands
from tests import real_workers
from tests.probe_tasks import probe_events

ROOT = Path(__file__).resolve().parent.parent

BULK_SECONDS = 8.0
ORDERS = 4
# The bound. The order-before-bulk-end assertion is the load-proof one; measured start
# latency is 0.02-0.1 s (0.7-1.5 s before the worker loaded the DB driver ahead of forking).
ORDER_START_BOUND_SECONDS = 1.0


def _queues(args: list[str]) -> str:
    return args[args.index("-Q") + 1]


def _compose_workers() -> dict[str, list[str]]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return {
        name: svc["command"]
        for name, svc in services.items()
        if "worker" in svc.get("command", []) and "celery" in svc["command"]
    }


def _k8s_workers() -> dict[str, list[str]]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "workers.yaml").read_text())
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["command"]
        for d in docs
        if d
    }


def test_high_has_its_own_workers_in_every_deployment() -> None:
    stack = {w.name: w.args for w in worker_commands(get_settings())}
    assert {name: _queues(args) for name, args in stack.items()} == {
        "worker-main": "medium,low",
        "worker-high": "high",
    }
    compose, k8s = _compose_workers(), _k8s_workers()
    assert {n: _queues(a) for n, a in compose.items()} == {
        "worker-high": "high",
        "worker-bulk": "medium,low",
    }
    assert {n: _queues(a) for n, a in k8s.items()} == {
        "dropship-worker-high": "high",
        "dropship-worker-bulk": "medium,low",
    }
    # The same shape everywhere: bulk workers autoscale, high workers have a fixed pool.
    for bulk in (stack["worker-main"], compose["worker-bulk"], k8s["dropship-worker-bulk"]):
        assert any(arg.startswith("--autoscale=") for arg in bulk)
        assert bulk[bulk.index("-A") + 1] == "dropship.celery_app"
    for high in (stack["worker-high"], compose["worker-high"], k8s["dropship-worker-high"]):
        assert not any(arg.startswith("--autoscale") for arg in high)
        assert "-c" in high


@pytest.fixture
def stack_workers(
    tmp_path: Path, redis_client: redis_lib.Redis
) -> Iterator[dict[str, tuple[real_workers.RunningWorker, str]]]:
    """``worker-main`` and ``worker-high`` started from ``dropship up``'s own command lines.

    Memory is "tight" (between the watermarks, via the autoscaler's test-only reading file), so
    ``worker-main`` keeps its one process: the situation in which a worker that also consumed
    ``high`` would hold an order behind bulk work."""
    reading = tmp_path / "available-memory-pct"
    cfg = get_settings().celery
    reading.write_text(f"{(cfg.memory_low_watermark_pct + cfg.memory_high_watermark_pct) / 2}\n")
    env = {"DROPSHIP_CELERY__MEMORY_READING_FILE": str(reading)}
    workers = [
        real_workers.spawn(w.name, [*w.args, *real_workers.PROBE_INCLUDE], tmp_path, env)
        for w in worker_commands(get_settings())
    ]
    try:
        for worker in workers:
            real_workers.wait_ready(worker)
        main, high = workers
        yield {
            "worker-main": (main, real_workers.node_name(app, "main")),
            "worker-high": (high, real_workers.node_name(app, "high")),
        }
    finally:
        for worker in workers:
            real_workers.stop(worker)


def _wait_events(
    client: redis_lib.Redis, tag: str, done: Any, timeout: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    events = probe_events(client, tag)
    while time.monotonic() < deadline and not done(events):
        time.sleep(0.05)
        events = probe_events(client, tag)
    return events


@pytest.mark.worker
@pytest.mark.slow
def test_order_starts_within_a_second_behind_long_bulk_work(
    stack_workers: dict[str, tuple[real_workers.RunningWorker, str]],
    redis_client: redis_lib.Redis,
) -> None:
    (main, main_node) = stack_workers["worker-main"]
    (high, high_node) = stack_workers["worker-high"]
    # A pool child's first task must not spend a second importing the DB driver: the worker's
    # main process loads it before forking (celery_app's worker_init handler).
    for worker in (main, high):
        maps = Path(f"/proc/{worker.proc.pid}/maps").read_text()
        assert "psycopg" in maps, f"{worker.name} forks its pool without the DB driver loaded"
    bulk_tag, order_tag = uuid.uuid4().hex, uuid.uuid4().hex
    # One long bulk task running, more bulk queued behind it.
    for n in range(3):
        app.send_task("tasks.diagnostics.probe_bulk", [bulk_tag, BULK_SECONDS], {"n": n})
    started = _wait_events(
        redis_client, bulk_tag, lambda ev: any(e["event"] == "start" for e in ev), 30.0
    )
    assert started, "the bulk task never started"
    assert real_workers.pool_size(app, main_node) == 1  # memory tight: cannot grow

    enqueued: dict[int, float] = {}
    for n in range(ORDERS):
        enqueued[n] = time.time()
        app.send_task("tasks.orders.probe_order", args=[order_tag], kwargs={"n": n})
    orders = _wait_events(redis_client, order_tag, lambda ev: len(ev) == ORDERS, 3 * BULK_SECONDS)
    bulk = probe_events(redis_client, bulk_tag)

    first_bulk_end = min((e["t"] for e in bulk if e["event"] == "end"), default=float("inf"))
    starts = {e["n"]: e for e in orders}
    assert sorted(starts) == list(range(ORDERS)), (orders, bulk)
    latencies = {n: round(starts[n]["t"] - enqueued[n], 3) for n in starts}
    for entry in starts.values():
        # Holds on any machine load: no order waited for the bulk task, and only the high
        # worker ran orders (a bulk worker holding one would run it after its bulk task).
        assert entry["t"] < first_bulk_end, (latencies, bulk)
        assert entry["queue"] == "high" and entry["hostname"] == high_node
    # The one-process high worker runs the burst one after another; the first order is the
    # "order enqueued behind a long bulk task" of the issue.
    assert latencies[0] < ORDER_START_BOUND_SECONDS, latencies
