"""Operations tasks (queue ``high``): the alert evaluator must run while bulk queues are
backlogged, which is when it matters."""

from __future__ import annotations

from typing import Any

from dropship.celery_app import DropshipTask, app
from dropship.ops.alerts import evaluate


@app.task(bind=True, name="tasks.ops.evaluate_alerts", ignore_result=True)
def evaluate_alerts(self: DropshipTask) -> dict[str, Any]:
    """Beat: check every alert rule once; returns counts (checked, firing, delivered)."""
    return evaluate()
