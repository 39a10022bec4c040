"""Memory-aware autoscaling for Celery's prefork pool.

Celery's stock ``Autoscaler`` grows the pool whenever messages are reserved. On a small box that
is how a collector gets OOM-killed: each child holds a page of products. This subclass grows only
when there is queued work *and* available memory is above the high watermark, and shrinks
(down to ``--autoscale`` MIN, which may be 1: sequential processing) while available memory is
below the low watermark. Use with ``worker_autoscaler`` and ``--autoscale=MAX,MIN``.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
from celery.worker.autoscale import Autoscaler

from dropship.settings import get_settings

# psutil.virtual_memory() reads /proc/meminfo; maybe_scale runs on every task message, so the
# reading is cached for a short while.
READING_TTL_SECONDS = 2.0


class MemoryAwareAutoscaler(Autoscaler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = get_settings().celery
        self.high_watermark_pct = cfg.memory_high_watermark_pct
        self.low_watermark_pct = cfg.memory_low_watermark_pct
        self._reading: float | None = None
        self._read_at = 0.0

    def available_memory_pct(self) -> float:
        now = time.monotonic()
        if self._reading is None or now - self._read_at > READING_TTL_SECONDS:
            memory = psutil.virtual_memory()
            self._reading = memory.available * 100.0 / memory.total
            self._read_at = now
        return self._reading

    def desired_processes(self, queued: int, processes: int, available_pct: float) -> int:
        """Pure decision, kept separate so it can be tested with any memory reading."""
        if available_pct < self.low_watermark_pct:
            return max(self.min_concurrency, processes - 1)
        wanted = min(max(queued, self.min_concurrency), self.max_concurrency)
        if wanted > processes and available_pct < self.high_watermark_pct:
            return processes  # work is waiting, but memory is too tight to add a child
        return wanted

    def _maybe_scale(self, req: Any = None) -> bool | None:
        procs = self.processes
        target = self.desired_processes(self.qty, procs, self.available_memory_pct())
        if target > procs:
            self.scale_up(target - procs)
            return True
        if target < procs:
            self.scale_down(procs - target)
            return True
        return None
