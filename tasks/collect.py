"""Collect tasks (queue ``low``): thin wrappers over :mod:`dropship.catalog.services`.

From a shell: ``from tasks.collect import collect_supplier; collect_supplier.delay("ownerclan")``.
Every task returns the run's counts (visible in Flower's task results); no product row ever
travels in a message or a result. Chords are published only after the rows they need are
committed (the services commit before returning).
"""

from __future__ import annotations

from typing import Any

from celery import chord

from dropship.catalog import services
from dropship.celery_app import DropshipTask, app
from dropship.settings import get_settings


def publish_slices(run_id: int, keys: list[str]) -> str | None:
    """A chord of one header task per slice key, the merge as its body. With no keys, the merge
    alone (it is a no-op unless the run has nothing left to fetch). Returns the chord's id."""
    if not keys:
        merge_run.delay(run_id)
        return None
    header = [collect_slice.si(run_id, key) for key in keys]
    result = chord(header)(merge_run.si(run_id))
    return str(result.id)


def _start(run_id: int) -> dict[str, Any]:
    keys = services.plan_run(run_id)
    run = services.get_run(run_id)
    if run["status"] == "running":
        publish_slices(run_id, keys)
    return run


@app.task(bind=True, name="tasks.collect.collect_supplier")
def collect_supplier(
    self: DropshipTask, supplier: str, account: str | None = None, mode: str = "full"
) -> dict[str, Any]:
    """Open a collect run for ``supplier`` (``mode`` "full" or "incremental"), plan its slices
    and start the chord. A run already active for the account is returned, not duplicated."""
    opened = services.open_run(supplier, account, mode)
    if opened["status"] == "planned":
        return _start(opened["run_id"])
    return services.get_run(opened["run_id"])


@app.task(bind=True, name="tasks.collect.start_run")
def start_run(self: DropshipTask, run_id: int) -> dict[str, Any]:
    """Plan and publish a run left ``planned`` (the sweep sends this after a crash)."""
    return _start(run_id)


class SliceTask(DropshipTask):
    """A slice whose retries are spent (or that failed permanently) is recorded as failed, and
    the run is merged as soon as none of its slices is left to run."""

    abstract = True

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        run_id = kwargs.get("run_id", args[0] if args else None)
        slice_key = kwargs.get("slice_key", args[1] if len(args) > 1 else None)
        if run_id is None or slice_key is None:
            return
        if services.fail_slice(int(run_id), str(slice_key), f"{type(exc).__name__}: {exc}"):
            merge_run.delay(int(run_id))


# One slice can be a whole feed (Zentrade's catalog is one document): its own, longer limits,
# still below the broker visibility timeout (checked by the settings).
_SLICE_LIMIT_S = get_settings().collect.slice_time_limit_s


@app.task(
    bind=True,
    base=SliceTask,
    name="tasks.collect.collect_slice",
    soft_time_limit=_SLICE_LIMIT_S,
    time_limit=_SLICE_LIMIT_S + 60,
)
def collect_slice(self: DropshipTask, run_id: int, slice_key: str) -> dict[str, Any]:
    """Fetch one slice into staging; returns ``{records, rejected}`` (or why it was skipped)."""
    return services.run_slice(run_id, slice_key)


@app.task(bind=True, name="tasks.collect.merge_run")
def merge_run(self: DropshipTask, run_id: int) -> dict[str, Any]:
    """The chord body: merge the run's staging rows into ``products``; returns the counts."""
    counts = services.merge_run(run_id)
    if counts.get("sync_changes"):
        # The merge recorded sync work in its transaction, which has committed: publish it now
        # (the sync sweep publishes whatever a crash here leaves behind).
        from tasks.listings import publish_sync_outbox

        counts["sync_published"] = publish_sync_outbox()
    return counts


@app.task(bind=True, name="tasks.collect.sweep_runs")
def sweep_runs(self: DropshipTask) -> dict[str, Any]:
    """Beat: merge runs whose chord body never ran, re-publish or fail stalled runs, resume
    paused runs whose budget has reset, re-plan runs that never started."""
    actions = services.sweep_runs()
    for run_id in actions["merge"]:
        merge_run.delay(run_id)
    for run_id, keys in actions["resubmit"].items():
        publish_slices(run_id, keys)
    for run_id in actions["plan"]:
        start_run.delay(run_id)
    return {**actions, "resubmit": {str(k): len(v) for k, v in actions["resubmit"].items()}}
