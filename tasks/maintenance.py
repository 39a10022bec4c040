"""Maintenance tasks (queue ``high``): partitions must exist before orders arrive."""

from __future__ import annotations

from typing import Any

from dropship.celery_app import DropshipTask, app
from dropship.maintenance.services import run_partition_maintenance


@app.task(bind=True, name="tasks.maintenance.ensure_partitions")
def ensure_partitions(self: DropshipTask, months_ahead: int | None = None) -> dict[str, Any]:
    """Create this month's and the next N months' ``orders`` partitions; apply retention.

    Idempotent: a second run reports every partition as existing and changes nothing.
    """
    return run_partition_maintenance(self.session, months_ahead=months_ahead)
