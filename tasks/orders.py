"""Order tasks (queue ``high``): thin wrappers over :mod:`dropship.orders`.

Arguments and results are ids and counts only: Flower shows both, and receivers' personal data
never leaves the ``orders`` rows. From a shell::

    from tasks.orders import sweep_order_accounts, sweep_orders, forward_order, retry_order
    sweep_order_accounts.delay()          # one sweep task per account (beat, every minute)
    sweep_orders.delay()                  # every market account in turn, results together
    sweep_orders.delay("coupang_main")
    forward_order.delay([101, 102])       # order item ids; idempotent per order key
    retry_order.delay(101)                # a failed or unmatched item, one call

Work is published only after the rows it needs are committed (every service commits before
returning); the sweep also re-publishes items whose forward task was lost, once they are stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dropship.celery_app import DropshipTask, app
from dropship.orders import forwarding, retention, services
from dropship.settings import get_settings

ACK_BATCH = 300  # ids per acknowledgement task (the connectors split by the market's own limit)


def _market_accounts() -> list[str]:
    from dropship.listings.services import market_accounts

    return market_accounts()


def publish_forwards(order_ids: Sequence[int], batch_size: int | None = None) -> int:
    """``forward_order`` tasks for ``order_ids`` in batches; returns how many were sent."""
    size = batch_size or get_settings().orders.forward_batch_size
    ids = list(order_ids)
    for start in range(0, len(ids), size):
        forward_order.delay(ids[start : start + size])
    return (len(ids) + size - 1) // size


@app.task(bind=True, name="tasks.orders.sweep_order_accounts")
def sweep_order_accounts(self: DropshipTask) -> list[str]:
    """Publish one ``sweep_orders`` per market account (beat's order sweep): each account's
    sweep runs in its own worker process, so a slow or large market does not hold back the
    other's new orders, as one task sweeping the accounts in turn did. The per-account tasks
    carry this task's expiry. Returns the accounts."""
    names = _market_accounts()
    expires = self.request.expires
    if isinstance(expires, str):
        expires = datetime.fromisoformat(expires)
    for name in names:
        sweep_orders.apply_async((name,), expires=expires)
    return names


@app.task(bind=True, name="tasks.orders.sweep_orders")
def sweep_orders(self: DropshipTask, account: str | None = None) -> list[dict[str, Any]]:
    """Sweep each market account (or one), then publish forwards and acknowledgements. A failing
    account does not stop the others; the first error is raised at the end (the task retries,
    its watermark has not moved)."""
    results: list[dict[str, Any]] = []
    first_error: BaseException | None = None
    for name in [account] if account else _market_accounts():
        try:
            result = services.sweep_account(name)
        except Exception as exc:
            first_error = first_error or exc
            continue
        summary = result.as_dict()
        forward = [*result.forward, *forwarding.batches_of(result.abandoned_tasks, _task_meta)]
        summary["forward_tasks"] = publish_forwards(list(dict.fromkeys(forward)))
        for start in range(0, len(result.acknowledge), ACK_BATCH):
            acknowledge_orders.delay(name, result.acknowledge[start : start + ACK_BATCH])
        results.append(summary)
    if first_error is not None:
        raise first_error
    return results


def _task_meta(task_id: str) -> dict[str, Any]:
    meta: dict[str, Any] = app.backend.get_task_meta(task_id)
    return meta


class ForwardTask(DropshipTask):
    """A forward batch whose retries are spent (or that failed unexpectedly) leaves its items in
    ``failed`` with the reason, never silently in ``forwarding``."""

    abstract = True

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        ids = args[0] if args else kwargs.get("order_ids", [])
        forwarding.give_up_forwarding(ids, f"{type(exc).__name__}: {exc}", task_id)


@app.task(bind=True, base=ForwardTask, name="tasks.orders.forward_order")
def forward_order(self: DropshipTask, order_ids: list[int]) -> dict[str, int]:
    """Place one purchase order per order item, exactly once (claim, then the supplier call with
    the order key). Returns counts by outcome."""
    result = forwarding.forward_orders(order_ids, task_id=self.request.id)
    if result.get("failed"):
        # A stock refusal wrote a suspension into the sync outbox (committed): publish it now
        # rather than at the next sync sweep. Only refusals write there, so a batch that bought
        # everything skips the outbox read.
        from tasks.listings import publish_sync_outbox

        publish_sync_outbox()
    return result


@app.task(bind=True, name="tasks.orders.acknowledge_orders")
def acknowledge_orders(self: DropshipTask, account: str, order_ids: list[int]) -> dict[str, int]:
    """Acknowledge (Coupang) / confirm (Naver) these items at the market; safe to repeat."""
    return services.acknowledge_orders(account, order_ids, task_id=self.request.id)


@app.task(bind=True, name="tasks.orders.retry_order")
def retry_order(self: DropshipTask, order_id: int) -> dict[str, Any]:
    """Retry a failed item (or re-match an unmatched one) and publish its forward."""
    result = forwarding.retry_order(order_id, task_id=self.request.id)
    if result["forward"]:
        forward_order.delay([order_id])
    return result


@app.task(bind=True, name="tasks.orders.erase_expired_pii")
def erase_expired_pii(self: DropshipTask) -> dict[str, int]:
    """Erase receivers' personal data past the retention period; counts only."""
    return retention.erase_expired_pii()
