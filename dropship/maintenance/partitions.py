"""Monthly partitions of ``orders``: create ahead, detach or drop behind.

Why it is shaped like this:
* Partitions are created as plain tables (``CREATE TABLE ... (LIKE orders INCLUDING ALL)``) and
  then attached. Creating a partition directly with ``PARTITION OF`` takes an ACCESS EXCLUSIVE lock
  on the parent for the whole statement; ``ATTACH PARTITION`` only needs SHARE UPDATE EXCLUSIVE, so
  order ingestion keeps writing while we work. A CHECK constraint matching the bounds is added first
  so the attach does not have to scan the new table.
* ``lock_timeout`` bounds how long we queue behind a long transaction: failing and retrying later is
  better than making every writer queue behind *us*.
* A transaction-level advisory lock serialises concurrent runs (two beat instances, a manual run
  and the daily run), which makes the service idempotent in practice as well as in principle.
* Months ahead are created every day, so a missed day (or a week) never breaks ingestion.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

PARENT_TABLE = "orders"
# Stable 64-bit key for pg_advisory_xact_lock; any constant works as long as it is unique to us.
ADVISORY_LOCK_KEY = 0x6472_6F70_7061_7274  # "droppart"
PARTITION_NAME = re.compile(r"^orders_(\d{4})_(\d{2})$")


@dataclass(frozen=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, value: date | datetime) -> Month:
        return cls(value.year, value.month)

    def shift(self, months: int) -> Month:
        index = self.year * 12 + (self.month - 1) + months
        return Month(index // 12, index % 12 + 1)

    @property
    def start(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def table(self) -> str:
        return f"{PARENT_TABLE}_{self.year:04d}_{self.month:02d}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass
class PartitionReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "created": self.created,
            "existing": self.existing,
            "detached": self.detached,
            "dropped": self.dropped,
        }


def attached_partitions(conn: Connection) -> list[str]:
    rows = conn.execute(
        text(
            """
            SELECT c.relname FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_class p ON p.oid = i.inhparent
            WHERE p.relname = :parent AND p.relnamespace = current_schema()::regnamespace
            ORDER BY c.relname
            """
        ),
        {"parent": PARENT_TABLE},
    )
    return [r[0] for r in rows]


def _bounds_literal(month: Month) -> tuple[str, str]:
    # Bounds are midnight UTC: order times are stored as timestamptz and bucketed in UTC so a
    # partition's range never depends on the session time zone.
    lower = f"{month.start.isoformat()} 00:00:00+00"
    upper = f"{month.shift(1).start.isoformat()} 00:00:00+00"
    return lower, upper


def _create_partition(conn: Connection, month: Month) -> None:
    name = month.table
    lower, upper = _bounds_literal(month)
    conn.execute(
        text(
            f'CREATE TABLE IF NOT EXISTS "{name}" '
            f"(LIKE {PARENT_TABLE} INCLUDING ALL EXCLUDING IDENTITY)"
        )
    )
    conn.execute(
        text(
            f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_bounds" '
            f"CHECK (ordered_at IS NOT NULL AND ordered_at >= '{lower}' AND ordered_at < '{upper}')"
        )
    )
    conn.execute(
        text(
            f'ALTER TABLE {PARENT_TABLE} ATTACH PARTITION "{name}" '
            f"FOR VALUES FROM ('{lower}') TO ('{upper}')"
        )
    )
    # The constraint only existed to let ATTACH skip its validation scan.
    conn.execute(text(f'ALTER TABLE "{name}" DROP CONSTRAINT "{name}_bounds"'))


def ensure_partitions(
    conn: Connection,
    *,
    months_ahead: int = 3,
    retention_months: int = 0,
    retention_action: str = "detach",
    lock_timeout_ms: int = 2000,
    today: date | None = None,
    extra_months: list[Month] | None = None,
) -> PartitionReport:
    """Make sure partitions exist for this month and the next ``months_ahead`` months (plus any
    ``extra_months``, e.g. the month of an order that just failed to insert), and apply retention.

    Runs inside the caller's transaction; commit it to publish the changes. Idempotent.
    """
    if months_ahead < 0:
        raise ValueError("months_ahead must be >= 0")
    if retention_action not in ("detach", "drop"):
        raise ValueError("retention_action must be 'detach' or 'drop'")
    current = Month.of(today or datetime.now(UTC).date())
    wanted = {current.shift(i) for i in range(months_ahead + 1)}
    wanted.update(extra_months or [])

    conn.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})

    report = PartitionReport()
    present = set(attached_partitions(conn))
    for month in sorted(wanted, key=lambda m: (m.year, m.month)):
        if month.table in present:
            report.existing.append(month.table)
            continue
        _create_partition(conn, month)
        report.created.append(month.table)
        log.info("created partition %s for %s", month.table, month)

    if retention_months > 0:
        oldest_kept = current.shift(-retention_months)
        for name in sorted(present):
            match = PARTITION_NAME.match(name)
            if not match:
                continue
            month = Month(int(match.group(1)), int(match.group(2)))
            if (month.year, month.month) >= (oldest_kept.year, oldest_kept.month):
                continue
            conn.execute(text(f'ALTER TABLE {PARENT_TABLE} DETACH PARTITION "{name}"'))
            report.detached.append(name)
            if retention_action == "drop":
                conn.execute(text(f'DROP TABLE "{name}"'))
                report.dropped.append(name)
            log.info(
                "retention: %s partition %s (older than %s)", retention_action, name, oldest_kept
            )
    return report
