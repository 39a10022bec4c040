"""Task metrics recorded from Celery signals into Redis, with bounded memory.

Per task name and per minute, one Redis hash field set: ``count``, ``ok``, ``fail``, ``retry``,
the runtime and queue-wait sums, and fixed histogram buckets (:data:`BUCKETS_S`) for both. One
hash per minute (``dropship:metrics:tasks:<minute>``) holds every task name and expires after
:data:`RETENTION_MINUTES`, so memory is bounded by (minutes kept) x (task names) x (fields),
whatever the task rate; nothing is kept per task run. Windows (1, 5, 15, 60 minutes) are sums of
the minute hashes; p95/p99 are read from the bucket counts (linear inside the bucket, as
Prometheus' ``histogram_quantile`` does), so they are estimates within one bucket's width.

Queue wait is the start time minus the publish time (a header stamped by
:func:`dropship.ops.tasksafe.connect_publish_signal`), or minus the ETA for a message published
with a countdown (a retry's wait for its backoff is not queue wait).

Each worker's main process also reports its process tree's RSS and PSS and its pool size every
:data:`REPORT_INTERVAL_S` seconds (a worker bootstep on Celery's timer), to
``dropship:metrics:workers`` with a freshness stamp; ``dropship status``, the exporter and the
alerts read them from there.

Recording never raises into a task: a Redis failure is logged at DEBUG and the figure is lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psutil
import redis

logger = logging.getLogger("dropship.ops.metrics")

KEY_PREFIX = "dropship:metrics"
TASKS_KEY = f"{KEY_PREFIX}:tasks"
LAST_SUCCESS_KEY = f"{KEY_PREFIX}:last_success"
WORKERS_KEY = f"{KEY_PREFIX}:workers"
RETENTION_MINUTES = 65
WINDOWS_MINUTES = (1, 5, 15, 60)
REPORT_INTERVAL_S = 5.0
WORKER_STALE_S = 30.0
# Upper bounds, seconds; the last bucket is +Inf.
BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    math.inf,
)


def bucket_index(seconds: float) -> int:
    for i, bound in enumerate(BUCKETS_S):
        if seconds <= bound:
            return i
    return len(BUCKETS_S) - 1


def minute_of(epoch: float) -> int:
    return int(epoch // 60)


def _client() -> redis.Redis | None:
    from dropship.platforms.registry import redis_client_for
    from dropship.runtime import resolved_redis_url

    url = resolved_redis_url()
    return redis_client_for(url) if url else None


def record(
    client: redis.Redis,
    task_name: str,
    state: str,
    runtime_s: float | None,
    queue_wait_s: float | None,
    now: float | None = None,
) -> None:
    """Count one finished run of ``task_name`` (``state``: SUCCESS, FAILURE or RETRY)."""
    now = time.time() if now is None else now
    key = f"{TASKS_KEY}:{minute_of(now)}"
    outcome = {"SUCCESS": "ok", "FAILURE": "fail", "RETRY": "retry"}.get(state, "other")
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, f"{task_name}|count", 1)
    pipe.hincrby(key, f"{task_name}|{outcome}", 1)
    if runtime_s is not None:
        pipe.hincrbyfloat(key, f"{task_name}|rt_sum", runtime_s)
        pipe.hincrby(key, f"{task_name}|rt_n", 1)
        pipe.hincrby(key, f"{task_name}|rt_b{bucket_index(runtime_s)}", 1)
    if queue_wait_s is not None:
        pipe.hincrbyfloat(key, f"{task_name}|qw_sum", queue_wait_s)
        pipe.hincrby(key, f"{task_name}|qw_n", 1)
        pipe.hincrby(key, f"{task_name}|qw_b{bucket_index(queue_wait_s)}", 1)
    pipe.expire(key, RETENTION_MINUTES * 60)
    if state == "SUCCESS":
        pipe.hset(LAST_SUCCESS_KEY, task_name, f"{now:.3f}")
    pipe.execute()


def quantile(buckets: list[int], q: float) -> float | None:
    """The q-quantile (0..1) from bucket counts, interpolated linearly inside its bucket."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            lower = 0.0 if i == 0 else BUCKETS_S[i - 1]
            upper = BUCKETS_S[i]
            if math.isinf(upper):
                return lower  # beyond the last finite bound: report that bound
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return BUCKETS_S[-2]


@dataclass
class TaskWindow:
    """One task name's figures over one window."""

    name: str
    minutes: int
    count: int = 0
    ok: int = 0
    fail: int = 0
    retry: int = 0
    rt_sum: float = 0.0
    rt_n: int = 0
    qw_sum: float = 0.0
    qw_n: int = 0
    rt_buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))
    qw_buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))

    @property
    def finished(self) -> int:
        return self.ok + self.fail

    @property
    def success_rate(self) -> float | None:
        return self.ok / self.finished if self.finished else None

    @property
    def error_rate(self) -> float | None:
        return self.fail / self.finished if self.finished else None

    @property
    def rate_per_min(self) -> float:
        return self.count / self.minutes

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "task": self.name,
            "window_minutes": self.minutes,
            "count": self.count,
            "succeeded": self.ok,
            "failed": self.fail,
            "retried": self.retry,
            "rate_per_min": round(self.rate_per_min, 3),
            "success_rate": r(self.success_rate),
            "runtime_mean_s": r(self.rt_sum / self.rt_n if self.rt_n else None),
            "runtime_p95_s": r(quantile(self.rt_buckets, 0.95)),
            "runtime_p99_s": r(quantile(self.rt_buckets, 0.99)),
            "queue_wait_mean_s": r(self.qw_sum / self.qw_n if self.qw_n else None),
            "queue_wait_p95_s": r(quantile(self.qw_buckets, 0.95)),
            "queue_wait_p99_s": r(quantile(self.qw_buckets, 0.99)),
        }


def read_windows(
    client: redis.Redis, minutes: int, now: float | None = None
) -> dict[str, TaskWindow]:
    """Every task's figures over the last ``minutes`` minutes (the current one included)."""
    now = time.time() if now is None else now
    current = minute_of(now)
    pipe = client.pipeline(transaction=False)
    for m in range(current - minutes + 1, current + 1):
        pipe.hgetall(f"{TASKS_KEY}:{m}")
    windows: dict[str, TaskWindow] = {}
    for raw in pipe.execute():
        for raw_field, raw_value in raw.items():
            name, _, metric = _text(raw_field).rpartition("|")
            w = windows.setdefault(name, TaskWindow(name, minutes))
            value = float(raw_value)
            if metric.startswith("rt_b"):
                w.rt_buckets[int(metric[4:])] += int(value)
            elif metric.startswith("qw_b"):
                w.qw_buckets[int(metric[4:])] += int(value)
            elif metric in ("rt_sum", "qw_sum"):
                setattr(w, metric, getattr(w, metric) + value)
            elif metric in ("count", "ok", "fail", "retry", "rt_n", "qw_n"):
                setattr(w, metric, getattr(w, metric) + int(value))
    return windows


def last_successes(client: redis.Redis) -> dict[str, float]:
    return {_text(k): float(v) for k, v in client.hgetall(LAST_SUCCESS_KEY).items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- signals ------------------------------------------------------------------------------------

_started: dict[str, tuple[float, float | None]] = {}
MAX_IN_FLIGHT = 10_000  # a run whose postrun never came (killed) must not leak for ever


def _queue_wait(request: Any, started: float) -> float | None:
    headers = getattr(request, "headers", None) or {}
    from dropship.ops.tasksafe import PUBLISHED_AT_HEADER

    published = getattr(request, PUBLISHED_AT_HEADER, None) or headers.get(PUBLISHED_AT_HEADER)
    if published is None:
        return None
    base = float(published)
    eta = getattr(request, "eta", None)
    if eta:
        with contextlib.suppress(ValueError):
            base = max(base, datetime.fromisoformat(str(eta)).timestamp())
    return max(0.0, started - base)


def connect_task_metrics() -> None:
    from celery.signals import task_postrun, task_prerun

    def _prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        try:
            if task_id is None or task is None:
                return
            if len(_started) > MAX_IN_FLIGHT:
                _started.clear()
            now = time.time()
            _started[task_id] = (time.monotonic(), _queue_wait(task.request, now))
        except Exception:
            logger.debug("task metrics: prerun failed", exc_info=True)

    def _postrun(
        task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
    ) -> None:
        try:
            if task_id is None or task is None:
                return
            began = _started.pop(task_id, None)
            runtime = time.monotonic() - began[0] if began else None
            wait = began[1] if began else None
            client = _client()
            if client is not None:
                record(client, task.name, state or "other", runtime, wait)
        except Exception:
            logger.debug("task metrics: not recorded", exc_info=True)

    task_prerun.connect(_prerun, weak=False)
    task_postrun.connect(_postrun, weak=False)


# --- worker memory and pool -----------------------------------------------------------------


@dataclass(frozen=True)
class TreeMemory:
    rss: int
    pss: int | None
    processes: int


def tree_memory(pid: int | None = None) -> TreeMemory:
    """RSS and PSS (bytes) of ``pid`` (default: this process) and all its descendants. PSS
    counts shared pages once across the tree (forked pool children share the parent's); it is
    ``None`` where /proc/<pid>/smaps_rollup is not readable."""
    root = psutil.Process(pid)
    procs = [root]
    with contextlib.suppress(psutil.Error):
        procs += root.children(recursive=True)
    rss = 0
    pss: int | None = 0
    alive = 0
    for proc in procs:
        try:
            if pss is not None:
                try:
                    full = proc.memory_full_info()
                    rss += full.rss
                    pss += getattr(full, "pss", 0)
                    alive += 1
                    continue
                except psutil.AccessDenied:
                    pss = None
            rss += proc.memory_info().rss
            alive += 1
        except psutil.Error:
            continue
    return TreeMemory(rss, pss, alive)


def _consumed_queues(worker: Any) -> list[str]:
    task_consumer = getattr(getattr(worker, "consumer", None), "task_consumer", None)
    return sorted(q.name for q in (getattr(task_consumer, "queues", None) or []))


def report_worker(client: redis.Redis, worker: Any) -> dict[str, Any]:
    """Write this worker's tree memory and pool size (called on the worker's timer)."""
    memory = tree_memory()
    pool = getattr(worker, "pool", None)
    autoscaler = getattr(worker, "autoscaler", None)
    processes = getattr(pool, "num_processes", None)
    info = {
        "hostname": getattr(worker, "hostname", socket.gethostname()),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rss": memory.rss,
        "pss": memory.pss,
        "tree_processes": memory.processes,
        "pool_processes": processes,
        "pool_min": getattr(autoscaler, "min_concurrency", processes),
        "pool_max": getattr(autoscaler, "max_concurrency", processes),
        "queues": _consumed_queues(worker),
        "at": time.time(),
    }
    client.hset(WORKERS_KEY, str(info["hostname"]), json.dumps(info))
    client.expire(WORKERS_KEY, int(WORKER_STALE_S * 20))
    return info


def read_workers(client: redis.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """Fresh worker reports (older than :data:`WORKER_STALE_S` are dropped, and deleted)."""
    now = time.time() if now is None else now
    fresh: list[dict[str, Any]] = []
    stale: list[Any] = []
    for name, raw in client.hgetall(WORKERS_KEY).items():
        try:
            info = json.loads(raw)
            at = float(info.get("at", 0))
        except (ValueError, TypeError, AttributeError):
            stale.append(name)
            continue
        if now - at <= WORKER_STALE_S:
            fresh.append(info)
        else:
            stale.append(name)
    if stale:
        client.hdel(WORKERS_KEY, *stale)
    return sorted(fresh, key=lambda i: str(i.get("hostname")))


def install_worker_reporter(app: Any) -> None:
    """A worker bootstep reporting memory and pool size on Celery's timer (the main process's
    event loop: no thread, so nothing is held across a fork of a pool child)."""
    from celery import bootsteps

    class MemoryReporter(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer", "celery.worker.components:Pool")

        def __init__(self, worker: Any, **kwargs: Any) -> None:
            self.tref: Any = None

        def start(self, worker: Any) -> None:
            def tick() -> None:
                try:
                    client = _client()
                    if client is not None:
                        report_worker(client, worker)
                except Exception:
                    logger.debug("worker report failed", exc_info=True)

            tick()
            self.tref = worker.timer.call_repeatedly(REPORT_INTERVAL_S, tick)

        def stop(self, worker: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
            try:
                client = _client()
                if client is not None:
                    client.hdel(WORKERS_KEY, getattr(worker, "hostname", ""))
            except Exception:
                logger.debug("worker report removal failed", exc_info=True)

    app.steps["worker"].add(MemoryReporter)

    from celery.signals import worker_ready

    def _ready(sender: Any = None, **_: Any) -> None:
        # Once the consumer is up, so the first report already names the consumed queues.
        try:
            client = _client()
            worker = getattr(sender, "controller", None)
            if client is not None and worker is not None:
                report_worker(client, worker)
        except Exception:
            logger.debug("worker report failed", exc_info=True)

    worker_ready.connect(_ready, weak=False)
