"""Maintenance services called by tasks and the CLI."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dropship.maintenance.partitions import ensure_partitions
from dropship.settings import get_settings


def run_partition_maintenance(session: Session, months_ahead: int | None = None) -> dict[str, Any]:
    cfg = get_settings().partitions
    report = ensure_partitions(
        session.connection(),
        months_ahead=cfg.months_ahead if months_ahead is None else months_ahead,
        retention_months=cfg.retention_months,
        retention_action=cfg.retention_action,
        lock_timeout_ms=cfg.lock_timeout_ms,
    )
    return report.as_dict()
