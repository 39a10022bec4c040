"""The one declarative Celery beat schedule.

Every entry names a registered task; the task's queue comes from routing by name
(``dropship.celery_app.TASK_ROUTES``), never from the schedule. ``tests/test_beat_schedule.py``
checks both.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Daily, plus months ahead, so a missed run (or a week of them) never breaks ingestion.
    "ensure-order-partitions": {
        "task": "tasks.maintenance.ensure_partitions",
        "schedule": crontab(minute=7, hour=3),
        "options": {"expires": 6 * 3600},
    },
    # --- images (queue low): fetch, check and store new products' images ahead of the
    # register sweep (which lists only products with a usable image).
    "images-process-sweep": {
        "task": "tasks.images.process_sweep",
        "schedule": 240.0,
        "options": {"expires": 230},
    },
    # --- listings (queue medium): claim and publish registrations of sellable products not
    # yet listed on each market account; also re-publishes claims whose message was lost.
    "listings-register-sweep": {
        "task": "tasks.listings.register_sweep",
        "schedule": 300.0,
        "options": {"expires": 290},
    },
    # --- listing sync (queue high): publish outbox leftovers, suspend live listings of products
    # that are not sellable, re-send unconfirmed suspensions. Its interval bounds how late a
    # sell-out whose publish was lost reaches the markets.
    "listings-sync-sweep": {
        "task": "tasks.listings.sync_sweep",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    # --- orders (queue high): pull new and changed orders per market account, store and match
    # them, then publish forwards and acknowledgements (and re-publish lost forwards). One
    # sweep task per account, each in its own worker process.
    "orders-sweep": {
        "task": "tasks.orders.sweep_order_accounts",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # Receivers' personal data past DROPSHIP_ORDERS__PII_RETENTION_DAYS, erased daily.
    "orders-erase-expired-pii": {
        "task": "tasks.orders.erase_expired_pii",
        "schedule": crontab(minute=20, hour=4),
        "options": {"expires": 6 * 3600},
    },
    # --- order operations (queue high): purchase-order sheets written and followed by key,
    # shipments from the suppliers to the markets, cancellations/claims per market account.
    "fulfilment-sheets-sweep": {
        "task": "tasks.fulfilment.sheets_sweep",
        "schedule": 120.0,
        "options": {"expires": 110},
    },
    "fulfilment-tracking-sweep": {
        "task": "tasks.fulfilment.tracking_sweep",
        "schedule": 120.0,
        "options": {"expires": 110},
    },
    "fulfilment-claims-sweep": {
        "task": "tasks.fulfilment.claims_sweep",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # Reconciliation (queue medium): each market account's listings against ours, hourly; a
    # run is a chain of page tasks: an account still being read is skipped, a stalled run failed.
    "listings-reconcile-sweep": {
        "task": "tasks.listings.reconcile_sweep",
        "schedule": crontab(minute=35),
        "options": {"expires": 50 * 60},
    },
    # --- collect (queue low). The sweep keeps every run moving: a lost chord body is merged,
    # a stalled run re-published or failed with a reason, a paused run resumed after its reset.
    "collect-sweep-runs": {
        "task": "tasks.collect.sweep_runs",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # OwnerClan filters by modification time (dateFrom/dateTo): frequent incremental runs, and a
    # daily full run that also finds removed products.
    "collect-ownerclan-incremental": {
        "task": "tasks.collect.collect_supplier",
        "schedule": crontab(minute="*/30"),
        "args": ["ownerclan"],
        "kwargs": {"mode": "incremental"},
        "options": {"expires": 25 * 60},
    },
    "collect-ownerclan-full": {
        "task": "tasks.collect.collect_supplier",
        "schedule": crontab(minute=15, hour=2),
        "args": ["ownerclan"],
        "kwargs": {"mode": "full"},
        "options": {"expires": 6 * 3600},
    },
    # Zentrade: one feed document; incremental runs pick up new items (opendate) and runouts.
    "collect-gentrade-incremental": {
        "task": "tasks.collect.collect_supplier",
        "schedule": crontab(minute=40),
        "args": ["gentrade"],
        "kwargs": {"mode": "incremental"},
        "options": {"expires": 50 * 60},
    },
    "collect-gentrade-full": {
        "task": "tasks.collect.collect_supplier",
        "schedule": crontab(minute=45, hour=3),
        "args": ["gentrade"],
        "kwargs": {"mode": "full"},
        "options": {"expires": 6 * 3600},
    },
    # Domeggook has no modification filter and a 15,000-call daily budget: full runs on a
    # slower schedule (twice a day).
    "collect-domeggook-full": {
        "task": "tasks.collect.collect_supplier",
        "schedule": crontab(minute=5, hour="1,13"),
        "args": ["domeggook"],
        "kwargs": {"mode": "full"},
        "options": {"expires": 6 * 3600},
    },
    # --- operations (queue high): alert rules, each at most once per cooldown.
    "ops-evaluate-alerts": {
        "task": "tasks.ops.evaluate_alerts",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
}
