"""The Celery application: queues, routing, reliability settings and the base task class.

Start workers with ``celery -A dropship.celery_app worker -Q high`` and ``... -Q medium,low
--autoscale=4,1`` (never ``high`` with another queue, see ``stack.worker_commands``);
``dropship up`` does this for you.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests
from celery import Celery, Task
from celery.signals import worker_init, worker_process_init
from celery.utils.log import get_task_logger
from kombu import Exchange, Queue
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dropship import db
from dropship.errors import (
    BudgetExhaustedError,
    PermanentError,
    RateLimitedError,
    RetriesExhaustedError,
    TransientError,
)
from dropship.logsafe import connect_celery_signals
from dropship.ops.tasksafe import connect_publish_signal, safe_repr, safe_result
from dropship.runtime import (
    UNCONFIGURED_BROKER_URL,
    resolved_redis_url,
    resolved_result_backend_url,
)
from dropship.settings import SettingsError, get_settings

QUEUE_NAMES = ("high", "medium", "low")

# Route by task name, never by per-message priority (DESIGN.md "Queues and workers").
# Glob patterns are matched in order; a task module's name says which business area it is.
TASK_ROUTES: dict[str, dict[str, str]] = {
    "tasks.orders.*": {"queue": "high"},
    "tasks.maintenance.*": {"queue": "high"},
    # Exact names are matched before patterns: a suspension (sold out, discontinued, gone) and
    # its sweep never wait behind registrations and updates on medium.
    "tasks.listings.suspend_listings": {"queue": "high"},
    "tasks.listings.sync_sweep": {"queue": "high"},
    # The alert evaluator: small, and must run while the bulk queues are backlogged.
    "tasks.ops.*": {"queue": "high"},
    "tasks.fulfilment.*": {"queue": "high"},
    "tasks.listings.*": {"queue": "medium"},
    "tasks.register.*": {"queue": "medium"},
    "tasks.collect.*": {"queue": "low"},
    "tasks.images.*": {"queue": "low"},
    "tasks.reports.*": {"queue": "low"},
    "tasks.diagnostics.*": {"queue": "low"},
}

TASK_MODULES = [
    "tasks.maintenance",
    "tasks.diagnostics",
    "tasks.collect",
    "tasks.listings",
    "tasks.images",
    "tasks.ops",
    "tasks.orders",
    "tasks.fulfilment",
]

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 600.0
# Waiting for a rate limit is not a failure, so it gets its own, larger budget: 1,000 waits
# in a row without progress, about half an hour at the usual 1-2 s each. A batch can be
# refused its account's next slot for minutes while other processes' batches chain
# reservations on it (the register bench saw 100 waits spent that way under load); only a
# platform that never lets a call through should use it up.
MAX_RATE_LIMIT_RETRIES = 1000
# A spent daily budget (BudgetExhaustedError) re-schedules until the reset without spending
# either budget; this only stops a budget that never refills from looping forever (at most one
# hop per half visibility timeout, i.e. 48 hops a day with the default 3600 s).
MAX_BUDGET_WAITS = 200

# Message headers carrying the two budgets' counts. Celery's own ``request.retries`` counts every
# re-schedule of any kind (Flower shows it as the total); our budgets are kept apart in headers,
# which ``Task.retry`` copies to the re-sent message (Celery 5 ``Context.headers``, proven by
# tests/test_retries.py with a real worker).
RATE_LIMIT_RETRIES_HEADER = "dropship_rate_limit_retries"
TRANSIENT_RETRIES_HEADER = "dropship_transient_retries"
BUDGET_WAITS_HEADER = "dropship_budget_waits"


def backoff_seconds(
    transient_retries: int, base: float = BACKOFF_BASE_SECONDS, cap: float = BACKOFF_CAP_SECONDS
) -> float:
    """Exponential backoff with full jitter: spreads retries so a recovering platform is not
    hit by every worker at the same instant. ``transient_retries`` counts transient failures
    only: rate-limit re-schedules do not make the next backoff longer."""
    ceiling = min(cap, base * (2 ** min(transient_retries, 62)))
    return random.uniform(ceiling / 2, ceiling)


def _driver_failure(exc: BaseException) -> TransientError | None:
    """A transient error for a dropped connection of a driver used outside our wrappers, else
    ``None``. The message names only the error class: driver texts carry hosts, ports, users and
    URLs."""
    if isinstance(exc, OperationalError):  # SQLAlchemy: connection lost, server restarting...
        return TransientError(f"database unavailable: {type(exc.orig).__name__}")
    if isinstance(exc, psycopg.OperationalError):  # psycopg used directly (no SQLAlchemy)
        return TransientError(f"database unavailable: {type(exc).__name__}")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return TransientError(f"redis unavailable: {type(exc).__name__}")
    if isinstance(
        exc,
        requests.ConnectionError
        | requests.Timeout
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError,
    ):
        # Normally PlatformHttp maps these; a body read outside it (a streamed response
        # consumed by a connector) can still raise them.
        return TransientError(f"HTTP connection failed: {type(exc).__name__}")
    return None


class DropshipTask(Task):
    """Base class of every task.

    * Owns one database session per task run: ``self.session`` inside ``run``; committed when
      the task returns, rolled back when it raises, closed always.
    * Turns transient errors (``TransientError``, dropped DB/Redis/HTTP connections) into retries
      with exponential backoff and jitter, rate limits into a retry after the advised delay, and
      lets ``PermanentError`` fail at once so the failure is visible in Flower.
    * Two separate budgets: ``max_retries`` (8) transient failures, ``max_rate_limit_retries``
      (1,000) rate-limit re-schedules in a row without progress (a ``RateLimitedError`` with
      ``progressed`` set starts the count again); a spent daily budget waits for its reset
      without spending either. A spent budget fails the task with
      :class:`RetriesExhaustedError` naming it.
    * Logs with the task id (``worker_task_log_format``).
    """

    abstract = True
    max_retries = 8
    max_rate_limit_retries = MAX_RATE_LIMIT_RETRIES
    max_budget_waits = MAX_BUDGET_WAITS
    backoff_base_s = BACKOFF_BASE_SECONDS
    backoff_cap_s = BACKOFF_CAP_SECONDS
    rate_limit_jitter_s = 1.0
    _session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("task session used outside of a task run")
        return self._session

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # The failure is only recorded inside the except clauses and acted on after them, so the
        # retry or the final error is raised with no __context__: a driver exception (whose text
        # can hold the host, user or URL) is never chained to what the result backend stores.
        failure: TransientError
        try:
            with db.session_scope() as session:
                self._session = session
                result = self.run(*args, **kwargs)
            # What the backend stores and Flower shows: ids and counts (dropship/ops/tasksafe.py).
            return safe_result(result)
        except PermanentError:
            raise
        except TransientError as exc:  # incl. RateLimitedError, BudgetExhaustedError
            failure = exc
        except Exception as exc:
            mapped = _driver_failure(exc)
            if mapped is None:
                raise
            failure = mapped
        finally:
            self._session = None
        raise self._reschedule(failure)

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        # Flower shows argsrepr/kwargsrepr (and the task-sent event's copy of them): ids and
        # counts only, never a secret or customer data.
        options.setdefault("argsrepr", safe_repr(tuple(args or ())))
        options.setdefault("kwargsrepr", safe_repr(dict(kwargs or {})))
        return super().apply_async(args, kwargs, *rest, **options)

    # ---- retry budgets

    def retry_counts(self) -> dict[str, int]:
        """This run's budget counts, read from the message headers (0 when absent)."""
        headers = self.request.headers or {}
        counts = {}
        for name in (RATE_LIMIT_RETRIES_HEADER, TRANSIENT_RETRIES_HEADER, BUDGET_WAITS_HEADER):
            try:
                counts[name] = max(0, int(headers.get(name) or 0))
            except (TypeError, ValueError):
                counts[name] = 0
        return counts

    def _reschedule(self, failure: TransientError) -> BaseException:
        """The ``Retry`` to raise for ``failure``, or a :class:`RetriesExhaustedError` when the
        failure's budget is spent."""
        counts = self.retry_counts()
        if isinstance(failure, BudgetExhaustedError):
            header, limit, kind = BUDGET_WAITS_HEADER, self.max_budget_waits, "daily-budget waits"
            countdown = max(1.0, failure.retry_after) + random.uniform(0, self.rate_limit_jitter_s)
        elif isinstance(failure, RateLimitedError):
            header, limit, kind = (
                RATE_LIMIT_RETRIES_HEADER,
                self.max_rate_limit_retries,
                "rate-limit retries",
            )
            countdown = failure.retry_after + random.uniform(0, self.rate_limit_jitter_s)
            if failure.progressed:
                # Part of the batch got done before the wait: 100 busy-account waits across a
                # long batch are not 100 waits that achieved nothing.
                counts[header] = 0
        else:
            header, limit, kind = TRANSIENT_RETRIES_HEADER, self.max_retries, "transient retries"
            countdown = backoff_seconds(
                counts[TRANSIENT_RETRIES_HEADER], self.backoff_base_s, self.backoff_cap_s
            )
        if limit is not None and counts[header] >= limit:
            return RetriesExhaustedError(
                f"{self.name}: gave up after {counts[header]} {kind}; last error: "
                f"{type(failure).__name__}: {failure}"
            )
        # A countdown held past the broker's visibility timeout makes Redis hand the waiting
        # message to a second worker: wake earlier and ask again.
        countdown = min(countdown, get_settings().celery.visibility_timeout / 2)
        counts[header] += 1
        headers = {**(self.request.headers or {}), **counts}
        return self.retry(
            exc=failure,
            countdown=countdown,
            # Celery's own limit would count every kind of re-schedule: our budgets decide.
            max_retries=sum(
                n
                for n in (self.max_retries, self.max_rate_limit_retries, self.max_budget_waits)
                if n is not None
            )
            + self.request.retries
            + 1,
            headers=headers,
        )


def _configure(app: Celery) -> None:
    settings = get_settings()
    # No URL and no running stack: a broker that fails with a message naming the variable,
    # instead of Celery's default amqp://localhost (which may well be someone else's RabbitMQ).
    broker = resolved_redis_url() or UNCONFIGURED_BROKER_URL
    backend = resolved_result_backend_url()
    exchange = Exchange("dropship", type="direct")
    app.conf.update(
        broker_url=broker,
        result_backend=backend,
        task_queues=[Queue(name, exchange, routing_key=name) for name in QUEUE_NAMES],
        task_default_queue="medium",
        task_default_exchange="dropship",
        task_default_routing_key="medium",
        task_routes=TASK_ROUTES,
        # JSON only: a pickled message is refused by the worker (arbitrary code execution).
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A task is acknowledged after it ran; if the worker dies mid-task it is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.celery.soft_time_limit,
        task_time_limit=settings.celery.hard_time_limit,
        broker_transport_options={
            "visibility_timeout": settings.celery.visibility_timeout,
            # With one worker on several queues, consult them in the listed order (high first)
            # instead of round-robin.
            "queue_order_strategy": "priority",
        },
        result_backend_transport_options={"visibility_timeout": settings.celery.visibility_timeout},
        result_expires=24 * 3600,
        result_extended=True,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_max_memory_per_child=settings.celery.worker_max_memory_per_child_kb,
        worker_autoscaler="dropship.autoscale:MemoryAwareAutoscaler",
        worker_hijack_root_logger=False,
        worker_task_log_format=(
            "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
        ),
        timezone="UTC",
        enable_utc=True,
        beat_schedule=_beat_schedule(),
    )


def _beat_schedule() -> dict[str, Any]:
    from beat_schedule import BEAT_SCHEDULE

    return BEAT_SCHEDULE


app = Celery("dropship", task_cls=DropshipTask, include=TASK_MODULES)
try:
    _configure(app)
except SettingsError as exc:
    if Path(sys.argv[0]).name in ("celery", "__main__.py") and "celery" in sys.argv[0]:
        # `celery -A dropship.celery_app ...`: the variable's name, not Celery's traceback.
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    raise
connect_celery_signals()
connect_publish_signal()


@worker_init.connect
def _load_db_driver_before_fork(**_: Any) -> None:
    # Creating the first engine imports psycopg and SQLAlchemy's dialect (about a second on a
    # busy box). Done once here in the worker's main process, every pool child inherits the
    # modules, so a new child's first task (an order, say) does not pay for it. No connection
    # is opened; each child still makes its own engine after fork.
    from dropship.errors import ConfigurationError

    with contextlib.suppress(ConfigurationError):
        db.get_engine()


@worker_process_init.connect
def _fresh_engine_after_fork(**_: Any) -> None:
    # Pool children inherit the parent's engine; sockets must not be shared across processes.
    db.reset_engine()


task_logger = get_task_logger("dropship.tasks")
logging.getLogger("dropship").setLevel(get_settings().log_level)


# Task metrics and worker memory reports (dropship/ops/taskmetrics.py).
from dropship.ops.taskmetrics import connect_task_metrics, install_worker_reporter  # noqa: E402

connect_task_metrics()
install_worker_reporter(app)
