"""The memory-aware autoscaler: its pure decision, and a real ``celery worker --autoscale`` whose
memory reading the test controls while tasks keep arriving."""

from __future__ import annotations

import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests

from dropship.autoscale import (
    ABOVE_MAX,
    BELOW_MIN,
    IDLE,
    MEMORY_LOW,
    MEMORY_LOW_AT_MIN,
    MEMORY_TIGHT,
    STEADY,
    WORK_QUEUED,
    Decision,
    MemoryAwareAutoscaler,
    cgroup_available_pct,
    decide,
)
from dropship.celery_app import app
from dropship.embedded.system import free_port
from dropship.settings import Settings, get_settings
from dropship.stack import worker_commands
from tests import real_workers

LOW, HIGH = 15.0, 30.0


def _decide(processes: int, queued: int, available: float, lo: int = 1, hi: int = 4) -> Decision:
    return decide(
        processes=processes,
        queued=queued,
        available_pct=available,
        min_concurrency=lo,
        max_concurrency=hi,
        low_watermark_pct=LOW,
        high_watermark_pct=HIGH,
    )


# --- the pure decision -----------------------------------------------------------------------


def test_grows_one_child_at_a_time_with_queued_work_and_plenty_of_memory() -> None:
    assert _decide(1, queued=3, available=80) == Decision(2, WORK_QUEUED)
    assert _decide(3, queued=10, available=80) == Decision(4, WORK_QUEUED)
    assert _decide(4, queued=10, available=80) == Decision(4, STEADY)


def test_does_not_grow_unless_memory_is_above_the_high_watermark() -> None:
    assert _decide(2, queued=10, available=(LOW + HIGH) / 2) == Decision(2, MEMORY_TIGHT)
    assert _decide(2, queued=10, available=HIGH) == Decision(2, MEMORY_TIGHT)


def test_low_memory_shrinks_one_child_now_but_never_below_min() -> None:
    assert _decide(3, queued=10, available=LOW - 1) == Decision(2, MEMORY_LOW, force=True)
    assert _decide(2, queued=10, available=1, lo=2) == Decision(2, MEMORY_LOW_AT_MIN)
    assert _decide(1, queued=0, available=1) == Decision(1, MEMORY_LOW_AT_MIN)


def test_idle_shrink_keeps_celerys_keepalive_rule_and_bounds_are_enforced_now() -> None:
    assert _decide(4, queued=0, available=80) == Decision(1, IDLE, force=False)
    assert _decide(5, queued=10, available=80) == Decision(4, ABOVE_MAX, force=True)
    assert _decide(1, queued=0, available=1, lo=3) == Decision(3, BELOW_MIN, force=True)


def test_reading_is_cached_and_real_without_an_override() -> None:
    pool: Any = type("P", (), {"num_processes": 1})()
    scaler = MemoryAwareAutoscaler(pool, 4, 1, worker=None, mutex=threading.Lock())
    assert scaler.reading_file is None  # production default: always psutil
    first = scaler.available_memory_pct()
    assert 0 < first <= 100
    assert scaler.available_memory_pct() == first
    assert scaler.info()["memory_reading"] == "psutil"


def test_override_is_unset_by_default() -> None:
    assert Settings().celery.memory_reading_file is None


# --- a real worker -----------------------------------------------------------------------------

MAX, MIN = 4, 2
TICK = "0.5"


class MemoryFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, pct: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{pct}\n")
        tmp.replace(self.path)  # atomic: the worker never reads half a number


class Feeder:
    """Keeps short bulk tasks arriving (queue ``low``) from a thread until stopped."""

    def __init__(self, tag: str, every: float = 0.25, seconds: float = 0.3) -> None:
        self.tag, self.every, self.seconds = tag, every, seconds
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            app.send_task("tasks.diagnostics.probe_bulk", args=[self.tag, self.seconds])
            self.sent += 1
            self._stop.wait(self.every)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _burst(tag: str, count: int, seconds: float = 1.5) -> None:
    for _ in range(count):
        app.send_task("tasks.diagnostics.probe_bulk", args=[tag, seconds])


def _sample_until(
    node: str, done: Callable[[int], bool], samples: list[int], timeout: float = 60.0
) -> int:
    """Poll the real pool size (``inspect stats`` pool processes) until ``done(size)``."""
    deadline = time.monotonic() + timeout
    size = -1
    while time.monotonic() < deadline:
        size = real_workers.pool_size(app, node)
        samples.append(size)
        if done(size):
            return size
        time.sleep(0.3)
    raise AssertionError(f"pool size stuck at {size}; samples {samples[-40:]}")


def _wait_for_log(worker: real_workers.RunningWorker, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in worker.log():
            return
        time.sleep(0.2)
    raise AssertionError(f"worker never logged {text!r}:\n{worker.log()[-4000:]}")


def _hold(node: str, seconds: float, samples: list[int]) -> list[int]:
    seen: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(real_workers.pool_size(app, node))
        time.sleep(0.3)
    samples.extend(seen)
    return seen


@pytest.fixture
def autoscaled_worker(
    tmp_path: Path, redis_client: redis_lib.Redis
) -> Iterator[tuple[real_workers.RunningWorker, str, MemoryFile]]:
    """``worker-main`` exactly as ``dropship up`` starts it (bounds MAX,MIN), with its memory
    reading taken from a file, a fast tick, and Celery's keepalive long enough that the stock
    rule could never shrink during the test."""
    memory = MemoryFile(tmp_path / "available-memory-pct")
    memory.set(80)
    base = get_settings()
    settings = base.model_copy(
        update={
            "celery": base.celery.model_copy(update={"autoscale_max": MAX, "autoscale_min": MIN})
        }
    )
    (main,) = [w for w in worker_commands(settings) if w.name == "worker-main"]
    worker = real_workers.spawn(
        "worker-main",
        [*main.args, *real_workers.PROBE_INCLUDE],
        tmp_path,
        env={
            "DROPSHIP_CELERY__MEMORY_READING_FILE": str(memory.path),
            "DROPSHIP_CELERY__AUTOSCALE_TICK_SECONDS": TICK,
            "AUTOSCALE_KEEPALIVE": "600",
        },
    )
    try:
        real_workers.wait_ready(worker)
        yield worker, real_workers.node_name(app, "main"), memory
    finally:
        real_workers.stop(worker)


@pytest.mark.worker
@pytest.mark.slow
def test_pool_shrinks_to_min_under_low_memory_while_tasks_keep_arriving(
    autoscaled_worker: tuple[real_workers.RunningWorker, str, MemoryFile],
) -> None:
    worker, node, memory = autoscaled_worker
    tag = uuid.uuid4().hex
    samples: list[int] = []
    assert real_workers.pool_size(app, node) == MIN

    # Queued work and plenty of memory: the pool grows to MAX and no further.
    _burst(tag, 3 * MAX)
    _sample_until(node, lambda size: size == MAX, samples)

    with Feeder(tag) as feeder:
        # Work keeps arriving, the pool has idle children, memory is plentiful: Celery's rule
        # (no shrink within keepalive of the last task) keeps MAX.
        assert set(_hold(node, 3.0, samples)) == {MAX}
        # Memory pressure: shrink now, one child at a time, to MIN and never below.
        memory.set(5)
        _sample_until(node, lambda size: size == MIN, samples)
        # The autoscaler itself says it stopped at MIN; the pool stays there while tasks arrive.
        _wait_for_log(worker, f"hold at {MIN} processes (memory low, already at min")
        assert set(_hold(node, 3.0, samples)) == {MIN}
        sent_under_pressure = feeder.sent
        # Memory recovers and work is queued: grows back to MAX.
        memory.set(80)
        _burst(tag, 3 * MAX)
        _sample_until(node, lambda size: size == MAX, samples)
        assert feeder.sent > sent_under_pressure  # tasks really kept arriving throughout

    assert min(samples) >= MIN and max(samples) <= MAX, samples
    log = worker.log()
    assert "memory reading taken from" in log  # the override announces itself
    shrinks = re.findall(r"autoscale: shrink (\d) -> (\d) processes \(memory low; (.*?)\)", log)
    assert [(int(a), int(b)) for a, b, _ in shrinks] == [(4, 3), (3, 2)], log[-4000:]
    assert all("available memory 5.0% [file]" in detail for _, _, detail in shrinks)
    # Logged when the decision changes, not on every tick (the hold lasted many ticks).
    assert log.count("hold at 2 processes (memory low, already at min") == 1, log[-4000:]
    grows = re.findall(r"autoscale: grow (\d) -> (\d) processes \(work queued; (.*?)\)", log)
    assert [(int(a), int(b)) for a, b, _ in grows][-2:] == [(2, 3), (3, 4)]
    assert "available memory 80.0% [file]" in grows[-1][2]


@pytest.mark.worker
@pytest.mark.slow
def test_control_autoscale_changes_the_bounds_the_autoscaler_respects(
    autoscaled_worker: tuple[real_workers.RunningWorker, str, MemoryFile],
) -> None:
    worker, node, memory = autoscaled_worker
    tag = uuid.uuid4().hex
    samples: list[int] = []

    # What `celery control autoscale 3 3` and Flower's autoscale form send.
    reply = app.control.autoscale(3, 3, destination=[node], reply=True, timeout=5.0)
    assert reply == [{node: {"ok": "autoscale now max=3 min=3"}}]
    info = real_workers.stats(app, node)["autoscaler"]
    assert (info["max"], info["min"]) == (3, 3)
    _sample_until(node, lambda size: size == 3, samples)  # raised MIN grows the pool

    with Feeder(tag):
        # Low memory, but MIN is now 3: the pool stays at 3.
        memory.set(5)
        _wait_for_log(worker, "hold at 3 processes (memory low, already at min")
        assert set(_hold(node, 3.0, samples)) == {3}
        # Lower MIN at run time: the pressure shrink goes down to it.
        reply = app.control.autoscale(3, 1, destination=[node], reply=True, timeout=5.0)
        assert reply == [{node: {"ok": "autoscale now max=3 min=1"}}]
        _sample_until(node, lambda size: size == 1, samples)
        # Memory recovers with work queued: grows to the new MAX of 3, never to the old 4.
        memory.set(80)
        _burst(tag, 4 * MAX)
        _sample_until(node, lambda size: size == 3, samples)
        assert set(_hold(node, 3.0, samples)) == {3}

    assert max(samples) <= 3, samples
    assert "bounds now min=1 max=3 by control command" in worker.log()


@pytest.mark.worker
@pytest.mark.slow
def test_flowers_autoscale_form_reaches_the_autoscaler(
    autoscaled_worker: tuple[real_workers.RunningWorker, str, MemoryFile], tmp_path: Path
) -> None:
    """Flower's worker page posts to its API; the autoscaler takes the new bounds. Its pool
    grow/shrink buttons are refused by Celery itself while autoscaling is on."""
    worker, node, _memory = autoscaled_worker
    port = free_port()
    flower = real_workers.spawn(
        "flower",
        [
            *(sys.executable, "-m", "celery", "-A", "dropship.celery_app", "flower"),
            *(f"--port={port}", "--address=127.0.0.1", "--persistent=False"),
        ],
        tmp_path,
        env={"FLOWER_BASIC_AUTH": "ops:flower-test"},
    )
    base, auth = f"http://127.0.0.1:{port}", ("ops", "flower-test")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                workers = requests.get(
                    f"{base}/api/workers", params={"refresh": "1"}, auth=auth, timeout=10
                )
                if workers.status_code == 200 and node in workers.json():
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, flower.log()[-3000:]
            time.sleep(0.5)

        reply = requests.post(
            f"{base}/api/worker/pool/autoscale/{node}",
            params={"min": 3, "max": 3},
            auth=auth,
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        info = real_workers.stats(app, node)["autoscaler"]
        assert (info["max"], info["min"]) == (3, 3)
        _sample_until(node, lambda size: size == 3, [])
        refused = requests.post(f"{base}/api/worker/pool/grow/{node}", auth=auth, timeout=10)
        assert refused.status_code == 403 and "autoscale" in refused.text
    finally:
        real_workers.stop(flower)
    assert "bounds now min=3 max=3 by control command" in worker.log()


# --- the cgroup reading (containers) -----------------------------------------------------------


def _cgroup_tree(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    proc = tmp_path / "self-cgroup"
    proc.write_text(self_cgroup)
    return root, proc


def test_cgroup_v2_limit_counts_working_set_not_page_cache(tmp_path: Path) -> None:
    gib = 1 << 30
    root, proc = _cgroup_tree(
        tmp_path,
        "0::/\n",
        {
            "memory.max": f"{gib}\n",
            "memory.current": f"{gib * 9 // 10}\n",
            "memory.stat": f"anon 1\ninactive_file {gib // 10}\nactive_file 5\n",
        },
    )
    # 0.9 GiB used of which 0.1 GiB reclaimable cache: 0.8 GiB working set, 20 % available.
    assert cgroup_available_pct(root, proc) == pytest.approx(20.0)


def test_cgroup_v1_limit_and_unlimited_groups(tmp_path: Path) -> None:
    root, proc = _cgroup_tree(
        tmp_path,
        "4:memory:/docker/abc\n0::/\n",
        {
            "memory/docker/abc/memory.limit_in_bytes": "1000\n",
            "memory/docker/abc/memory.usage_in_bytes": "950\n",
            "memory/docker/abc/memory.stat": "total_inactive_file 50\n",
        },
    )
    assert cgroup_available_pct(root, proc) == pytest.approx(10.0)
    (root / "memory/docker/abc/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_available_pct(root, proc) is None
    assert cgroup_available_pct(tmp_path / "absent", proc) is None
    v2_unlimited, proc2 = _cgroup_tree(tmp_path / "u", "0::/\n", {"memory.max": "max\n"})
    assert cgroup_available_pct(v2_unlimited, proc2) is None
