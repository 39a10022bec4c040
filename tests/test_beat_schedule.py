"""Every beat entry names a registered task that routes to one of the three queues."""

from __future__ import annotations

from beat_schedule import BEAT_SCHEDULE
from dropship.celery_app import QUEUE_NAMES, app


def test_beat_entries_name_registered_tasks_routed_to_known_queues() -> None:
    app.loader.import_default_modules()
    assert BEAT_SCHEDULE, "the schedule is empty"
    assert app.conf.beat_schedule == BEAT_SCHEDULE
    for entry_name, entry in BEAT_SCHEDULE.items():
        task_name = entry["task"]
        assert task_name in app.tasks, f"{entry_name}: {task_name} is not a registered task"
        route = app.amqp.router.route({}, task_name)
        assert route["queue"].name in QUEUE_NAMES, f"{entry_name} routes to {route['queue']}"
        assert "queue" not in entry.get("options", {}), "queues come from routing, not the schedule"


def test_partition_maintenance_is_scheduled_daily() -> None:
    entry = BEAT_SCHEDULE["ensure-order-partitions"]
    schedule = entry["schedule"]
    assert entry["task"] == "tasks.maintenance.ensure_partitions"
    assert len(schedule.hour) == 1 and len(schedule.day_of_month) == 31
