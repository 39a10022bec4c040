"""The Celery application: queues, routing, reliability settings and the base task class.

Start a worker with ``celery -A dropship.celery_app worker -Q high,medium,low``; ``dropship up``
does this for you.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from celery.utils.log import get_task_logger
from kombu import Exchange, Queue
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dropship import db
from dropship.errors import PermanentError, RateLimitedError, TransientError
from dropship.runtime import resolved_redis_url, resolved_result_backend_url
from dropship.settings import get_settings

QUEUE_NAMES = ("high", "medium", "low")

# Route by task name, never by per-message priority (DESIGN.md "Queues and workers").
# Glob patterns are matched in order; a task module's name says which business area it is.
TASK_ROUTES: dict[str, dict[str, str]] = {
    "tasks.orders.*": {"queue": "high"},
    "tasks.maintenance.*": {"queue": "high"},
    "tasks.listings.*": {"queue": "medium"},
    "tasks.register.*": {"queue": "medium"},
    "tasks.collect.*": {"queue": "low"},
    "tasks.reports.*": {"queue": "low"},
    "tasks.diagnostics.*": {"queue": "low"},
}

TASK_MODULES = ["tasks.maintenance", "tasks.diagnostics", "tasks.collect"]

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 600.0
# Waiting for a rate limit is not a failure, so it gets its own, larger budget.
MAX_RATE_LIMIT_RETRIES = 100


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with full jitter: spreads retries so a recovering platform is not
    hit by every worker at the same instant."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * (2**retries))
    return random.uniform(ceiling / 2, ceiling)


class DropshipTask(Task):
    """Base class of every task.

    * Owns one database session per task run: ``self.session`` inside ``run``; committed when
      the task returns, rolled back when it raises, closed always.
    * Turns transient errors (``TransientError``, dropped DB connections) into retries with
      exponential backoff and jitter, rate limits into a retry after the advised delay, and lets
      ``PermanentError`` fail at once so the failure is visible in Flower.
    * Logs with the task id (``worker_task_log_format``).
    """

    abstract = True
    max_retries = 8
    _session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("task session used outside of a task run")
        return self._session

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            with db.session_scope() as session:
                self._session = session
                return self.run(*args, **kwargs)
        except RateLimitedError as exc:
            raise self.retry(
                exc=exc,
                countdown=exc.retry_after + random.uniform(0, 1),
                max_retries=MAX_RATE_LIMIT_RETRIES,
            ) from None
        except TransientError as exc:
            raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from None
        except PermanentError:
            raise
        except OperationalError as exc:
            # Connection lost, server restarting, lock timeout: worth another go. The message
            # names only the error class: the driver's text can include the connection URL.
            raise self.retry(
                exc=TransientError(f"database unavailable: {type(exc.orig).__name__}"),
                countdown=backoff_seconds(self.request.retries),
            ) from None
        finally:
            self._session = None


def _configure(app: Celery) -> None:
    settings = get_settings()
    broker = resolved_redis_url()
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
_configure(app)


@worker_process_init.connect
def _fresh_engine_after_fork(**_: Any) -> None:
    # Pool children inherit the parent's engine; sockets must not be shared across processes.
    db.reset_engine()


task_logger = get_task_logger("dropship.tasks")
logging.getLogger("dropship").setLevel(get_settings().log_level)
