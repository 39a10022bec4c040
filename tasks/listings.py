"""Listing tasks (queue ``medium``): thin wrappers over :mod:`dropship.listings.services`.

From a shell: ``from tasks.listings import register_sweep; register_sweep.delay()`` (every market
account) or ``register_sweep.delay("coupang_main")``. Batches are published only after the
sweep's claims are committed (the service commits before returning); a claim whose message was
lost is re-published by a later sweep once it is stale.
"""

from __future__ import annotations

from typing import Any

from dropship.celery_app import DropshipTask, app
from dropship.listings import services

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
