"""The memory-aware autoscaler's decisions, on a real pool-less Autoscaler instance."""

from __future__ import annotations

import threading
from typing import Any

from dropship.autoscale import MemoryAwareAutoscaler


class _CountingPool:
    """Not a mock of anything external: the smallest object Autoscaler drives (grow/shrink)."""

    def __init__(self, size: int) -> None:
        self.num_processes = size

    def grow(self, n: int) -> None:
        self.num_processes += n

    def shrink(self, n: int) -> None:
        self.num_processes -= n


def _scaler(max_c: int = 4, min_c: int = 1) -> MemoryAwareAutoscaler:
    pool: Any = _CountingPool(min_c)
    worker: Any = type("W", (), {"consumer": None})()
    return MemoryAwareAutoscaler(pool, max_c, min_c, worker=worker, mutex=threading.Lock())


def test_grows_with_queued_work_when_memory_is_plentiful() -> None:
    scaler = _scaler()
    assert scaler.desired_processes(queued=3, processes=1, available_pct=80) == 3
    assert scaler.desired_processes(queued=10, processes=1, available_pct=80) == 4


def test_does_not_grow_when_memory_is_below_high_watermark() -> None:
    scaler = _scaler()
    between = (scaler.low_watermark_pct + scaler.high_watermark_pct) / 2
    assert scaler.desired_processes(queued=10, processes=2, available_pct=between) == 2


def test_shrinks_towards_min_when_memory_is_low() -> None:
    scaler = _scaler()
    low = scaler.low_watermark_pct / 2
    assert scaler.desired_processes(queued=10, processes=3, available_pct=low) == 2
    assert scaler.desired_processes(queued=10, processes=1, available_pct=low) == 1


def test_reading_is_cached_and_real() -> None:
    scaler = _scaler()
    first = scaler.available_memory_pct()
    assert 0 < first <= 100
    assert scaler.available_memory_pct() == first
