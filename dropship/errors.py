"""Error vocabulary shared by services, connectors and the Celery base task.

The base task (``dropship.celery_app.DropshipTask``) maps these to Celery behaviour:

* ``TransientError``     -> retry with exponential backoff and jitter (network, 5xx, DB blips)
* ``RateLimitedError``   -> retry after ``retry_after`` seconds (its own budget of 100, apart from
                            the transient one), instead of waiting inside a worker slot
* ``BudgetExhaustedError`` -> re-schedule until the budget resets, counted in neither budget
* ``PermanentError``     -> fail fast, no retry (bad request, auth rejected, invalid input)
* a spent retry budget   -> ``RetriesExhaustedError`` (state FAILURE, message names the budget)

Messages must never contain credentials or customer personal data: callers build them from
ids, platform names and status codes only.
"""

from __future__ import annotations

from datetime import datetime


class DropshipError(Exception):
    """Base of every error this project raises on purpose."""


class TransientError(DropshipError):
    """Worth retrying later: the same call may succeed."""


class RateLimitedError(TransientError):
    """The platform (or our own limiter) says wait ``retry_after`` seconds before calling again.

    ``progressed`` is set by a batch task that got some of its work done before the wait: its
    rate-limit budget then starts again (the budget bounds waits that achieve nothing, not the
    length of a batch that shares a busy account with other batches)."""

    def __init__(self, message: str, retry_after: float, progressed: bool = False) -> None:
        super().__init__(message)
        self.retry_after = max(0.0, float(retry_after))
        self.progressed = progressed


class BudgetExhaustedError(RateLimitedError):
    """A platform's call budget for a longer period (Domeggook: 15,000 calls a day) is spent.

    ``resets_at`` is when the budget refills. Work that hits it should stop cleanly and resume
    after the reset (a collect run pauses) rather than retry every few seconds.
    """

    def __init__(self, message: str, retry_after: float, resets_at: datetime) -> None:
        super().__init__(message, retry_after)
        self.resets_at = resets_at


class PermanentError(DropshipError):
    """Retrying will not help: fix the input, the configuration or the credentials."""


class RetriesExhaustedError(DropshipError):
    """A task spent its retry budget (transient failures, rate-limit waits or daily-budget
    waits); the message names the task, the budget and the last error's class and message."""


class ConfigurationError(PermanentError):
    """Settings or account configuration are missing or invalid."""


class MissingPartitionError(TransientError):
    """A row targets a month that has no ``orders`` partition yet; ensure it, then retry."""

    def __init__(self, table: str, month: str) -> None:
        super().__init__(f"no partition of {table} for month {month}; run ensure_partitions")
        self.table = table
        self.month = month


class OrderingNotSupportedError(PermanentError):
    """The supplier has no API to create (or cancel) purchase orders: they go out another way
    (Zentrade: a purchase-order sheet uploaded on its site, then followed by our order key)."""
