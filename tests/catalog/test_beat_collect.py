"""The collect entries of the beat schedule: every supplier is scheduled, every entry expires
before its next run would pile onto it, the sweep runs often."""

from __future__ import annotations

from itertools import pairwise

from celery.schedules import crontab

from beat_schedule import BEAT_SCHEDULE
from dropship.celery_app import app


def collect_entries() -> dict[str, dict]:
    return {k: v for k, v in BEAT_SCHEDULE.items() if v["task"].startswith("tasks.collect.")}


def interval_s(schedule: object) -> float:
    """Shortest gap between two runs (crontabs here fire every day)."""
    if isinstance(schedule, crontab):
        times = sorted(h * 60 + m for h in schedule.hour for m in schedule.minute)
        gaps = [b - a for a, b in pairwise(times)] + [times[0] + 1440 - times[-1]]
        return min(gaps) * 60.0
    return float(schedule)  # type: ignore[arg-type]


def test_every_supplier_is_collected_and_every_entry_expires_before_its_next_run() -> None:
    entries = collect_entries()
    scheduled = {
        (e["args"][0], e["kwargs"]["mode"])
        for e in entries.values()
        if e["task"] == "tasks.collect.collect_supplier"
    }
    assert {s for s, _ in scheduled} == {"ownerclan", "domeggook", "gentrade"}
    assert ("domeggook", "incremental") not in scheduled  # no modification filter
    for name, entry in entries.items():
        expires = entry["options"]["expires"]
        assert 0 < expires < interval_s(entry["schedule"]), name
        route = app.amqp.router.route({}, entry["task"])
        assert route["queue"].name == "low", name


def test_sweep_runs_every_minute() -> None:
    sweep = BEAT_SCHEDULE["collect-sweep-runs"]
    assert sweep["task"] == "tasks.collect.sweep_runs"
    assert interval_s(sweep["schedule"]) <= 60
