"""One memory budget (``DROPSHIP_MEMORY_BUDGET``, ``dropship up --memory-budget 1GB``) sizing
the worker tree: the pool bounds, the per-child recycle limit, the autoscaler's watermarks and
the rows a task holds at once (the collect's COPY chunk and supplier pages, the order sweep's,
listing evaluation's and reconcile's chunks), so the whole tree (both workers, their pools) stays
under the budget while work continues.

The model, from measured idle processes (docs/BENCHMARKS.md, "Worker tree memory"): a worker's
main process is about :data:`PARENT_MB` RSS, each pool child starts near :data:`CHILD_BASE_MB`
and grows with its work. ``dropship up`` runs two workers (``worker-main`` with an autoscaled
pool, ``worker-high`` with one child), so::

    budget = 2 x PARENT_MB + (1 + max_children) x child_allowance

``child_allowance`` aims at :data:`CHILD_TARGET_MB` (a collect slice holding a chunk of rows),
never above the default recycle limit, and becomes ``worker_max_memory_per_child`` (a child past
it is replaced after its task). Its share of that default limit is the ``row_scale`` (at most 1):
every per-task row batch is its default times the scale, so a child with a smaller allowance
holds proportionally fewer rows (COPY chunk, supplier API page, the batches in
:func:`batch_rows`). The autoscaler then reads the budget's free share (the worker
tree's PSS against the budget, see :mod:`dropship.autoscale`) with watermarks that grow the pool
only while one more child's allowance fits, and shrink it when half of one is left. At MIN=1 the
pool never goes below one process: work continues sequentially.

Values set explicitly (``DROPSHIP_CELERY__AUTOSCALE_MAX`` and so on) win over the budget's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dropship.settings import Settings

MB = 1_000_000
PARENT_MB = 120
CHILD_BASE_MB = 100
CHILD_TARGET_MB = 250
CHILD_MAX_MB = 400
MAX_CHILDREN = 8
DEFAULT_CHUNK_ROWS = 2000
MIN_CHUNK_ROWS = 200
# A supplier API page (OwnerClan's allItems answers up to 1000 items with options and images).
DEFAULT_PAGE_ROWS = 1000
MIN_PAGE_ROWS = 200
WORKERS = 2  # worker-main and worker-high
# The smallest budget that runs both workers with one working child each.
MIN_BUDGET_MB = WORKERS * PARENT_MB + 2 * (CHILD_BASE_MB + 30)


class MemoryBudgetError(ValueError):
    pass


@dataclass(frozen=True)
class Sizing:
    budget_bytes: int
    autoscale_min: int
    autoscale_max: int
    child_allowance_mb: int
    worker_max_memory_per_child_kb: int
    memory_high_watermark_pct: float
    memory_low_watermark_pct: float
    copy_chunk_rows: int
    page_rows: int
    row_scale: float


def size_for(budget_bytes: int) -> Sizing:
    budget_mb = budget_bytes / MB
    if budget_mb < MIN_BUDGET_MB:
        raise MemoryBudgetError(
            f"memory budget {budget_mb:.0f} MB is below the {MIN_BUDGET_MB} MB two workers with "
            "one child each need"
        )
    for_children = budget_mb - WORKERS * PARENT_MB
    children = int(for_children // CHILD_TARGET_MB) - 1  # one slot is worker-high's child
    children = max(1, min(MAX_CHILDREN, children))
    allowance = min(CHILD_MAX_MB, for_children / (children + 1))
    share_pct = allowance * 100.0 / budget_mb
    row_scale = allowance / CHILD_MAX_MB
    return Sizing(
        budget_bytes=budget_bytes,
        autoscale_min=1,
        autoscale_max=children,
        child_allowance_mb=int(allowance),
        worker_max_memory_per_child_kb=int(allowance * 1000),
        # Grow while a whole child's allowance (plus a margin) is free; shrink below half of one.
        memory_high_watermark_pct=round(min(90.0, share_pct + 2.0), 1),
        memory_low_watermark_pct=round(share_pct / 2, 1),
        copy_chunk_rows=max(MIN_CHUNK_ROWS, int(DEFAULT_CHUNK_ROWS * row_scale)),
        page_rows=max(MIN_PAGE_ROWS, int(DEFAULT_PAGE_ROWS * row_scale)),
        row_scale=round(row_scale, 3),
    )


def batch_rows(default: int, settings: Settings | None = None) -> int:
    """``default`` rows of a per-task batch scaled by the budget (``row_batch_scale``, 1 without
    a budget); at least 1."""
    if settings is None:
        from dropship.settings import get_settings

        settings = get_settings()
    return max(1, int(default * settings.row_batch_scale))


def apply_memory_budget(settings: Settings) -> Settings:
    """``settings`` with the budget's sizes filled in (explicit values kept); unchanged without
    a budget."""
    if settings.memory_budget is None:
        return settings
    sizing = size_for(int(settings.memory_budget))
    celery_set = settings.celery.model_fields_set
    collect_set = settings.collect.model_fields_set
    celery_updates = {
        name: getattr(sizing, name)
        for name in (
            "autoscale_min",
            "autoscale_max",
            "worker_max_memory_per_child_kb",
            "memory_high_watermark_pct",
            "memory_low_watermark_pct",
        )
        if name not in celery_set
    }
    if "autoscale_min" in celery_set:
        celery_updates["autoscale_max"] = max(
            celery_updates.get("autoscale_max", settings.celery.autoscale_max),
            settings.celery.autoscale_min,
        )
    collect_updates = (
        {} if "copy_chunk_rows" in collect_set else {"copy_chunk_rows": sizing.copy_chunk_rows}
    )
    platforms = settings.platforms
    if "page_rows" not in platforms.model_fields_set:
        platforms = platforms.model_copy(update={"page_rows": sizing.page_rows})
    top: dict[str, object] = {}
    if "row_batch_scale" not in settings.model_fields_set:
        top["row_batch_scale"] = sizing.row_scale
    celery = type(settings.celery).model_validate(
        {**settings.celery.model_dump(exclude_unset=True), **celery_updates}
        | {k: getattr(settings.celery, k) for k in celery_set}
    )
    collect = type(settings.collect).model_validate(
        {**settings.collect.model_dump(exclude_unset=True), **collect_updates}
    )
    return settings.model_copy(
        update={"celery": celery, "collect": collect, "platforms": platforms, **top}
    )
