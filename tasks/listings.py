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


def interleaved_batches(
    planned: dict[str, list[int]], batch_size: int = BATCH_SIZE
) -> list[tuple[str, list[int]]]:
    """Every account's batches, taking one from each account in turn. Each account has its own
    rate limit: published account after account, the workers would all work on the first
    account (queue order) and wait for its limiter while the others' limits went unused."""
    queues = {
        account: [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
        for account, ids in planned.items()
    }
    batches: list[tuple[str, list[int]]] = []
    for round_ in range(max((len(q) for q in queues.values()), default=0)):
        batches += [(a, q[round_]) for a, q in queues.items() if round_ < len(q)]
    return batches


@app.task(bind=True, name="tasks.listings.register_sweep")
def register_sweep(
    self: DropshipTask, account: str | None = None, limit: int = 5000
) -> list[dict[str, Any]]:
    """Claim listings for sellable products not yet listed, per market account, and publish
    their registrations in batches of ids. Returns per account: claimed, blocked, batches."""
    results = []
    ids_by_account: dict[str, list[int]] = {}
    for name in [account] if account else services.market_accounts():
        planned = services.plan_registrations(name, limit=limit)  # commits before publishing
        ids_by_account[name] = planned.pop("publish")
        planned["published"] = len(ids_by_account[name])
        planned["batches"] = (planned["published"] + BATCH_SIZE - 1) // BATCH_SIZE
        results.append(planned)
    for name, batch in interleaved_batches(ids_by_account):
        register_batch.delay(name, batch)
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


# --------------------------------------------------------------------------- reconciliation
# ``from tasks.listings import reconcile_sweep; reconcile_sweep.delay()`` (every market account)
# or ``reconcile_sweep.delay("naver_main")``. A run is one task per page of the market's list
# (each page re-publishes the next), then one apply; see dropship.listings.reconcile.


@app.task(bind=True, name="tasks.listings.reconcile_sweep")
def reconcile_sweep(self: DropshipTask, account: str | None = None) -> list[dict[str, Any]]:
    """Start a reconciliation run per market account (the first page task of each), after
    failing runs that stalled; an account whose run is still reading is skipped. Returns
    ``[{"account", "run_id"}]`` (``run_id`` None: skipped)."""
    from dropship.listings import reconcile

    reconcile.fail_stalled_runs()
    started = []
    for name in [account] if account else services.market_accounts():
        # Committed before the page task is published.
        run_id = reconcile.start_run(name, supersede=False)
        if run_id is not None:
            reconcile_page.delay(run_id, None)
        started.append({"account": name, "run_id": run_id})
    return started


@app.task(bind=True, name="tasks.listings.reconcile_page")
def reconcile_page(self: DropshipTask, run_id: int, cursor: str | None = None) -> dict[str, Any]:
    """Read one page of the run's market listings; publish the next page, or apply the run
    after the last one. Idempotent: a page read twice stores the same observations."""
    from dropship.listings import reconcile

    page = reconcile.reconcile_page(run_id, cursor)
    if page["status"] != "running":
        return page
    if page["next_cursor"] is not None:
        reconcile_page.delay(run_id, page["next_cursor"])
        return page
    return reconcile.apply_run(run_id)
