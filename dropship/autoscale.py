"""Memory-aware autoscaling for Celery's prefork pool.

Celery's stock ``Autoscaler`` grows the pool whenever messages are reserved and shrinks it only
after ``keepalive`` seconds (``AUTOSCALE_KEEPALIVE``, 30 s) without a new task, i.e. never while
work keeps arriving. On a small box that is how a collector gets OOM-killed: each child holds a
page of products. This subclass, used with ``worker_autoscaler`` and ``--autoscale=MAX,MIN``:

* shrinks **now** while available memory is below the low watermark, one child per check,
  bypassing ``keepalive`` (an idle child is stopped; if every child is busy, the next check
  tries again), never below MIN (which may be 1: sequential processing);
* grows only while work is queued **and** available memory is above the high watermark, one
  child per check, re-measuring after each change;
* keeps Celery's idle rule (shrink to the queued amount after ``keepalive`` without tasks) and
  enforces the MIN/MAX bounds, including bounds changed at run time by ``celery control
  autoscale`` / Flower's autoscale form (``Autoscaler.update``);
* logs each decision with its reading when something changes, never on every tick.

The reading is the available share of memory: the host's (psutil), or the cgroup limit's when
that is lower (containers: compose ``memory: 1g``, k8s limits).

Checks run on every task message and every ``autoscale_tick_seconds`` (2 s). Celery's event loop
uses the autoscaler's ``keepalive`` as its tick, so this class sets ``keepalive`` to the tick and
keeps Celery's keepalive as ``idle_keepalive`` for the idle rule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from celery.utils.log import get_logger
from celery.worker.autoscale import AUTOSCALE_KEEPALIVE, Autoscaler

from dropship.settings import get_settings

# A child of Celery's logger, so worker log handlers apply (worker_hijack_root_logger=False).
logger = get_logger("dropship.autoscale")

# psutil.virtual_memory() reads /proc/meminfo; checks also run on every task message, so the
# reading is cached for a short while (and dropped after every pool change).
READING_TTL_SECONDS = 1.0

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as a huge page-aligned number.
_UNLIMITED_BYTES = 1 << 60
_CGROUP_FILES = {
    # version: (limit, usage, reclaimable page cache in memory.stat)
    "v2": ("memory.max", "memory.current", "inactive_file"),
    "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}


def cgroup_available_pct(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """Available share of this process's cgroup memory limit, or None without a limit.

    In a container (compose ``memory: 1g``, a k8s limit) the OOM killer acts on the cgroup's
    limit while ``psutil.virtual_memory()`` reports the host's memory, so the host reading alone
    would never see the pressure. Usage counts page cache; like the kubelet's working set we
    subtract inactive file pages, which the kernel reclaims before it kills.
    """
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    candidates: list[tuple[Path, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.strip().lstrip("/")
        if controllers == "":
            candidates += [(root / rel, "v2"), (root, "v2")]
        elif "memory" in controllers.split(","):
            candidates += [(root / "memory" / rel, "v1"), (root / "memory", "v1")]
    for directory, version in candidates:
        limit_name, usage_name, inactive_name = _CGROUP_FILES[version]
        try:
            raw_limit = (directory / limit_name).read_text().strip()
        except OSError:
            continue
        try:
            if raw_limit == "max" or int(raw_limit) >= _UNLIMITED_BYTES:
                return None
            limit = int(raw_limit)
            usage = int((directory / usage_name).read_text().strip())
            inactive = 0
            for stat in (directory / "memory.stat").read_text().splitlines():
                key, _, value = stat.partition(" ")
                if key == inactive_name:
                    inactive = int(value)
        except (OSError, ValueError):
            return None
        if limit <= 0:
            return None
        working_set = max(0, usage - inactive)
        return max(0.0, (limit - working_set) * 100.0 / limit)
    return None


# Decision reasons. The "hold" ones are logged once when they begin, not on every check.
ABOVE_MAX = "above max"
BELOW_MIN = "below min"
MEMORY_LOW = "memory low"
MEMORY_LOW_AT_MIN = "memory low, already at min"
MEMORY_LOW_ALL_BUSY = "memory low, every child busy (retrying)"
MEMORY_TIGHT = "work queued, memory below high watermark"
WORK_QUEUED = "work queued"
IDLE = "idle"
STEADY = "steady"
_HOLDS = {MEMORY_LOW_AT_MIN, MEMORY_LOW_ALL_BUSY, MEMORY_TIGHT}


@dataclass(frozen=True)
class Decision:
    target: int
    reason: str
    # True: act now, ignoring keepalive (memory pressure, bounds). False: Celery's idle rule.
    force: bool = False


def decide(
    *,
    processes: int,
    queued: int,
    available_pct: float,
    min_concurrency: int,
    max_concurrency: int,
    low_watermark_pct: float,
    high_watermark_pct: float,
) -> Decision:
    """The pure decision: how many pool processes we want next, and why."""
    hi = max_concurrency
    lo = min(min_concurrency, hi)
    if processes > hi:
        return Decision(hi, ABOVE_MAX, force=True)
    if processes < lo:
        return Decision(lo, BELOW_MIN, force=True)
    if available_pct < low_watermark_pct:
        if processes <= lo:
            return Decision(processes, MEMORY_LOW_AT_MIN)
        return Decision(processes - 1, MEMORY_LOW, force=True)
    wanted = min(max(queued, lo), hi)
    if wanted > processes:
        if available_pct > high_watermark_pct:
            return Decision(processes + 1, WORK_QUEUED)
        return Decision(processes, MEMORY_TIGHT)
    if wanted < processes:
        return Decision(wanted, IDLE)
    return Decision(processes, STEADY)


class MemoryAwareAutoscaler(Autoscaler):
    def __init__(
        self,
        pool: Any,
        max_concurrency: int,
        min_concurrency: int = 0,
        worker: Any = None,
        keepalive: float = AUTOSCALE_KEEPALIVE,
        mutex: Any = None,
    ) -> None:
        cfg = get_settings().celery
        super().__init__(pool, max_concurrency, min_concurrency, worker, keepalive, mutex)
        self.idle_keepalive = keepalive
        # Celery's event loop calls maybe_scale every `self.keepalive` seconds.
        self.keepalive = cfg.autoscale_tick_seconds
        self.high_watermark_pct = cfg.memory_high_watermark_pct
        self.low_watermark_pct = cfg.memory_low_watermark_pct
        self.reading_file: Path | None = cfg.memory_reading_file
        settings = get_settings()
        budget = settings.memory_budget
        self.memory_budget: int | None = int(budget) if budget else None
        self._reading: float | None = None
        self._read_at = 0.0
        self._reading_source = "psutil"
        self._override_warned = False
        self._last_reason: str | None = None
        if self.memory_budget is not None:
            logger.info(
                "autoscale: memory budget %d MB: bounds %d-%d, watermarks low %.1f%% / high "
                "%.1f%% of the budget free, max memory per child %d KB, rows per task: COPY "
                "chunk %d, supplier page cap %s, batch scale %.3f",
                self.memory_budget // 1_000_000,
                self.min_concurrency,
                self.max_concurrency,
                self.low_watermark_pct,
                self.high_watermark_pct,
                cfg.worker_max_memory_per_child_kb,
                settings.collect.copy_chunk_rows,
                settings.platforms.page_rows,
                settings.row_batch_scale,
            )
        if self.reading_file is not None:
            logger.warning(
                "autoscale: memory reading taken from %s instead of psutil "
                "(DROPSHIP_CELERY__MEMORY_READING_FILE is for tests only)",
                self.reading_file,
            )

    # --- the reading ---------------------------------------------------------------------

    def available_memory_pct(self) -> float:
        now = time.monotonic()
        if self._reading is None or now - self._read_at > READING_TTL_SECONDS:
            override = self._read_override()
            if override is not None:
                self._reading, self._reading_source = override, "file"
            else:
                memory = psutil.virtual_memory()
                self._reading = memory.available * 100.0 / memory.total
                self._reading_source = "psutil"
                in_cgroup = cgroup_available_pct()
                if in_cgroup is not None and in_cgroup < self._reading:
                    self._reading, self._reading_source = in_cgroup, "cgroup limit"
                in_budget = self.budget_available_pct()
                if in_budget is not None and in_budget < self._reading:
                    self._reading, self._reading_source = in_budget, "memory budget"
            self._read_at = now
        return self._reading

    def budget_available_pct(self) -> float | None:
        """Free share of DROPSHIP_MEMORY_BUDGET: the budget minus this worker's tree (PSS, RSS
        where PSS is unreadable) and the trees other workers on this host last reported
        (dropship/ops/taskmetrics.py). None without a budget."""
        if self.memory_budget is None:
            return None
        import socket

        from dropship.ops import taskmetrics

        own = taskmetrics.tree_memory()
        used = own.pss if own.pss is not None else own.rss
        me = getattr(self.worker, "hostname", None)
        try:
            client = taskmetrics._client()
            for report in taskmetrics.read_workers(client) if client is not None else []:
                if report.get("host") == socket.gethostname() and report.get("hostname") != me:
                    used += int(report.get("pss") or report.get("rss") or 0)
        except Exception:  # Redis down: own tree only, never a failed check
            logger.debug("autoscale: other workers' memory unknown", exc_info=True)
        return max(0.0, (self.memory_budget - used) * 100.0 / self.memory_budget)

    def _read_override(self) -> float | None:
        if self.reading_file is None:
            return None
        try:
            value = float(self.reading_file.read_text().strip())
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"{value} is not a percentage")
        except (OSError, ValueError) as exc:
            if not self._override_warned:
                logger.warning(
                    "autoscale: cannot use memory reading file %s (%s); measuring with psutil",
                    self.reading_file,
                    exc,
                )
                self._override_warned = True
            return None
        self._override_warned = False
        return value

    # --- decisions -----------------------------------------------------------------------

    def decide(self, queued: int, processes: int, available_pct: float) -> Decision:
        return decide(
            processes=processes,
            queued=queued,
            available_pct=available_pct,
            min_concurrency=self.min_concurrency,
            max_concurrency=self.max_concurrency,
            low_watermark_pct=self.low_watermark_pct,
            high_watermark_pct=self.high_watermark_pct,
        )

    def desired_processes(self, queued: int, processes: int, available_pct: float) -> int:
        return self.decide(queued, processes, available_pct).target

    def _maybe_scale(self, req: Any = None) -> bool | None:
        before = self.processes
        queued = self.qty
        reading = self.available_memory_pct()
        decision = self.decide(queued, before, reading)
        stopping = False
        if decision.target > before:
            self.scale_up(decision.target - before)
        elif decision.target < before and self._shrink_in_progress():
            stopping = True  # the child stopped last time is still exiting: decide again next
        elif decision.target < before:
            if decision.force:
                self._shrink(before - decision.target)
            else:
                self.scale_down(before - decision.target)
        after = self.processes
        reason = decision.reason
        if reason == MEMORY_LOW and after == before and not stopping:
            reason = MEMORY_LOW_ALL_BUSY  # billiard stops only idle children
        self._report(reason, before, after, queued, reading)
        if after != before:
            self._reading = None  # the pool changed: the next decision measures afresh
            return True
        return None

    def _shrink_in_progress(self) -> bool:
        """True while a child told to stop is still in the pool's process list.

        billiard's ``shrink`` stops an *inactive* child, and a child that is exiting counts as
        inactive: shrinking again before it is gone would "stop" the same child twice, lowering
        the pool's target while the real process count stays (seen with two checks 30 ms apart).
        """
        children = getattr(getattr(self.pool, "_pool", None), "_pool", None)
        if children is None:  # not a prefork pool: nothing to wait for
            return False
        return len(children) > self.processes

    def scale_down(self, n: int) -> None:
        """Celery's idle rule, with Celery's keepalive (``self.keepalive`` is our tick)."""
        stamps = [t for t in (self._last_scale_up, self._last_task_received) if t is not None]
        if stamps and time.monotonic() - max(stamps) > self.idle_keepalive:
            self._shrink(n)

    def update(self, max: int | None = None, min: int | None = None) -> tuple[int, int]:
        """``celery control autoscale`` / Flower: new bounds, enforced from the next check."""
        bounds: tuple[int, int] = super().update(max, min)
        logger.info(
            "autoscale: bounds now min=%s max=%s by control command (%s processes)",
            bounds[1],
            bounds[0],
            self.processes,
        )
        self._last_reason = None
        return bounds

    def _report(self, reason: str, before: int, after: int, queued: int, reading: float) -> None:
        previous, self._last_reason = self._last_reason, reason
        # No change: a hold is worth one line when it begins, and so is the end of a hold.
        if after == before and (
            reason == previous or (reason not in _HOLDS and previous not in _HOLDS)
        ):
            return
        what = (
            f"{'grow' if after > before else 'shrink'} {before} -> {after} processes"
            if after != before
            else (f"hold at {after} processes" if reason in _HOLDS else f"{after} processes")
        )
        logger.info(
            "autoscale: %s (%s; available memory %.1f%% [%s], watermarks low %.1f%% / "
            "high %.1f%%; reserved %d; bounds %d-%d)",
            what,
            reason,
            reading,
            self._reading_source,
            self.low_watermark_pct,
            self.high_watermark_pct,
            queued,
            self.min_concurrency,
            self.max_concurrency,
        )
        self._last_reason = reason

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = super().info()
        data.update(
            available_memory_pct=round(self.available_memory_pct(), 1),
            memory_reading=self._reading_source,
            low_watermark_pct=self.low_watermark_pct,
            high_watermark_pct=self.high_watermark_pct,
            idle_keepalive=self.idle_keepalive,
        )
        return data
