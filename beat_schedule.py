"""The one declarative Celery beat schedule.

Every entry names a registered task; the task's queue comes from routing by name
(``dropship.celery_app.TASK_ROUTES``), never from the schedule. ``tests/test_beat_schedule.py``
checks both.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Daily, plus months ahead, so a missed run (or a week of them) never breaks ingestion.
    "ensure-order-partitions": {
        "task": "tasks.maintenance.ensure_partitions",
        "schedule": crontab(minute=7, hour=3),
        "options": {"expires": 6 * 3600},
    },
}
