"""Listing tasks (queue ``medium``): thin wrappers over :mod:`dropship.listings.services`.

From a shell: ``from tasks.listings import register_sweep; register_sweep.delay()`` (every market
account) or ``register_sweep.delay("coupang_main")``. Batches are published only after the
sweep's claims are committed (the service commits before returning); a claim whose message was
lost is re-published by a later sweep once it is stale.

Sync: ``suspend_listings.delay([product_id, ...])`` (queue ``high``),
``update_listings.delay([product_id, ...])`` (``medium``), ``sync_sweep.delay()`` (``high``).
"""

from __future__ import annotations

from typing import Any

from dropship.celery_app import DropshipTask, app
from dropship.listings import services, sync

BATCH_SIZE = 50


def publish_batches(account: str, listing_ids: list[int], batch_size: int = BATCH_SIZE) -> int:
    for start in range(0, len(listing_ids), batch_size):
        register_batch.delay(account, listing_ids[start : start + batch_size])
    return (len(listing_ids) + batch_size - 1) // batch_size


@app.task(bind=True, name="tasks.listings.register_sweep")
def register_sweep(
    self: DropshipTask, account: str | None = None, limit: int = 5000
) -> list[dict[str, Any]]:
    """Claim listings for sellable products not yet listed, per market account, and publish
    their registrations in batches of ids. Returns per account: claimed, blocked, batches."""
    results = []
    for name in [account] if account else services.market_accounts():
        planned = services.plan_registrations(name, limit=limit)
        ids = planned.pop("publish")
        planned["published"] = len(ids)
        planned["batches"] = publish_batches(name, ids)
        results.append(planned)
    return results


@app.task(bind=True, name="tasks.listings.register_batch")
def register_batch(self: DropshipTask, account: str, listing_ids: list[int]) -> dict[str, Any]:
    """Register one batch of claimed listings on ``account`` (idempotent: done ones skip)."""
    return services.register_listings(account, listing_ids)


# --------------------------------------------------------------------------- sync
# Suspensions run on ``high`` (routed by exact name in TASK_ROUTES, ahead of the
# ``tasks.listings.*`` pattern): a sold-out product must never wait behind thousands of
# registrations and price/stock updates on ``medium``. See docs/ARCHITECTURE.md "Sync".

SUSPEND_BATCH_SIZE = 100
UPDATE_BATCH_SIZE = 50


def publish_sync(kind: str, product_ids: list[int]) -> None:
    """Publish sync work for these products in batches of ids (never product rows)."""
    task, size = (
        (suspend_listings, SUSPEND_BATCH_SIZE)
        if kind == "suspend"
        else (update_listings, UPDATE_BATCH_SIZE)
    )
    for start in range(0, len(product_ids), size):
        task.delay(product_ids[start : start + size])


def publish_sync_outbox() -> dict[str, int]:
    """Publish what the collect merge recorded in ``sync_outbox`` (after its commit)."""
    return sync.drain_outbox(publish_sync)


@app.task(
    bind=True,
    name="tasks.listings.suspend_listings",
    # Unconfirmed suspensions come back soon: 1 s, 2 s, 4 s ... (then the sweep's re-send).
    backoff_base_s=1.0,
    backoff_cap_s=30.0,
)
def suspend_listings(self: DropshipTask, product_ids: list[int]) -> dict[str, int]:
    """Suspend every live listing of these products on every market account, each confirmed
    by reading it back (re-sent when the market did not apply it). Idempotent."""
    return sync.suspend_products(product_ids)


@app.task(bind=True, name="tasks.listings.update_listings")
def update_listings(self: DropshipTask, product_ids: list[int]) -> dict[str, int]:
    """Price and stock of these products' listings on every account (pricing rules; a broken
    margin suspends; protected fields are left alone; a stock/margin suspension is resumed)."""
    return sync.update_products(product_ids)


@app.task(bind=True, name="tasks.listings.sync_sweep")
def sync_sweep(self: DropshipTask) -> dict[str, int]:
    """Beat: publish the outbox's leftovers, suspend live listings of unsellable products that
    every other path missed, re-send unconfirmed suspensions."""
    return sync.sweep(publish_sync)
