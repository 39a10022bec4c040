"""Worker tree memory under ``DROPSHIP_MEMORY_BUDGET``: a 100,000-product collect on the two
workers ``dropship up`` starts (``stack.worker_commands``), sized by the budget.

    uv run python bench/memory_budget.py \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/13 [--budget 1GB] [--products 100000] \\
        [--suppliers gentrade,ownerclan]

For each case (the budget's own sizing, then the same budget with MAX=1: sequential), it creates
a fresh database (dropped at the end) and a sandbox process of its own, starts ``worker-main``
(``medium,low``, autoscaled) and ``worker-high`` exactly as ``dropship up`` does, and:

1. sets up the order flow as ``bench/orders.py`` does: a small OwnerClan catalog
   (``--order-catalog``) collected, its images processed into a local store served over HTTP,
   registered on ``coupang_main`` and ``naver_main`` (the workers do the collect and register);
2. then, with the OwnerClan catalog back at ``--products``, runs a full collect of each supplier
   at once while real order traffic goes through the order flow: sandbox market orders arriving
   at ``--order-rate`` per second (half Coupang, half Naver), ``sweep_order_accounts``
   published every ``--sweep-interval`` s (acknowledge, ``forward_order`` to OwnerClan) and
   ``tracking_sweep`` every 10 s, each expiring before the next is due as beat's entries do, all on
   ``worker-high``;
3. samples the RSS and PSS of both worker trees (main processes and pool children) every 0.2 s
   from the start of set-up until the collect is over, and counts the orders by state.

Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.collect import (  # noqa: E402
    bench_env,
    fresh_database,
    start_image_store,
    start_sandbox,
    stop_image_store,
)
from bench.orders import arrive, publish_loop, setup_catalog  # noqa: E402


def tree(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        parent = psutil.Process(pid)
        for proc in [parent, *parent.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    except psutil.Error:
        pass
    return rss, pss


class Sampler:
    """Peak RSS/PSS of the worker trees, sampled every 0.2 s in a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_rss = self.peak_pss = self.peak_children = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            rss = pss = children = 0
            for pid in self.pids:
                r, p = tree(pid)
                rss, pss = rss + r, pss + p
                with contextlib.suppress(psutil.Error):
                    children += len(psutil.Process(pid).children(recursive=True))
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_children = max(self.peak_children, children)
            self.stop.wait(0.2)


def run_case(
    label: str, env: dict[str, str], url: str, base_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    from dropship.celery_app import app
    from dropship.settings import get_settings
    from dropship.stack import worker_commands
    from tasks.collect import collect_supplier
    from tests import real_workers

    suppliers = args.suppliers.split(",")
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    workers = [
        real_workers.spawn(f"bench-{label}-{w.name}", w.args, logs, env)
        for w in worker_commands(settings)
    ]
    sampler = Sampler([w.proc.pid for w in workers])
    stop = threading.Event()
    arrived: dict[str, float] = {}
    refused = 0
    publisher = threading.Thread(
        target=publish_loop, args=(stop, args.sweep_interval, 10.0, True), daemon=True
    )

    def buyers() -> None:
        # Orders keep arriving, in one-second rounds, until the collect is over.
        nonlocal refused
        while not stop.is_set():
            try:
                got, _ = arrive(base_url, listed, max(1, round(args.order_rate)), args.order_rate)
            except requests.RequestException:
                # The sandbox serves the collect's pages too: a slow admin call is skipped, the
                # next round goes on.
                refused += 1
            else:
                arrived.update(got)
            stop.wait(1.0)

    try:
        for w in workers:
            real_workers.wait_ready(w)
        sampler.thread.start()
        set_up = time.perf_counter()
        listed = setup_catalog(url, base_url, args.order_catalog)
        if not listed:
            raise SystemExit("no listing to order from")
        set_up_s = time.perf_counter() - set_up
        requests.post(
            f"{base_url}/_sandbox/suppliers",
            json={"catalog_sizes": {s: args.products for s in suppliers}},
            timeout=5,
        ).raise_for_status()
        traffic = threading.Thread(target=buyers, daemon=True)
        publisher.start()
        traffic.start()
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            before = conn.execute("SELECT coalesce(max(id), 0) FROM collect_runs").fetchone()
            assert before is not None
            for s in suppliers:
                collect_supplier.delay(s, f"{s}_main", mode="full").forget()
            while True:
                rows = conn.execute(
                    "SELECT supplier, status, records, inserted, rejected FROM collect_runs "
                    "WHERE id > %s",
                    (before[0],),
                ).fetchall()
                if len(rows) == len(suppliers) and all(
                    r[1] in ("succeeded", "partial", "failed") for r in rows
                ):
                    break
                time.sleep(0.5)
            elapsed = time.perf_counter() - started
            stop.set()
            traffic.join(60)
            publisher.join(30)
            statuses: dict[str, int] = dict(
                conn.execute("SELECT status, count(*) FROM orders GROUP BY 1").fetchall()
            )
            placed = conn.execute(
                "SELECT count(*) FROM purchase_orders WHERE status = 'placed'"
            ).fetchone()
    finally:
        stop.set()
        sampler.stop.set()
        for w in workers:
            real_workers.stop(w)
    c = settings.celery
    return {
        "case": label,
        "budget_mb": int(settings.memory_budget or 0) // 1_000_000,
        "autoscale": f"{c.autoscale_min}-{c.autoscale_max}",
        "max_memory_per_child_kb": c.worker_max_memory_per_child_kb,
        "copy_chunk_rows": settings.collect.copy_chunk_rows,
        "set_up_seconds": round(set_up_s, 1),
        "listings": len(listed),
        "seconds": round(elapsed, 1),
        "runs": [
            {"supplier": r[0], "status": r[1], "records": r[2], "inserted": r[3], "rejected": r[4]}
            for r in rows
        ],
        "orders_arrived": len(arrived),
        "order_rounds_timed_out": refused,
        "orders_by_status": statuses,
        "purchase_orders_placed": placed[0] if placed else 0,
        "peak_rss_mb": round(sampler.peak_rss / 1_000_000),
        "peak_pss_mb": round(sampler.peak_pss / 1_000_000),
        "peak_pool_children": sampler.peak_children,
        "app": app.main,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--budget", default="1GB")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--suppliers", default="gentrade,ownerclan")
    parser.add_argument("--cases", default="sized,sequential", help="sized, sequential or both")
    parser.add_argument("--order-catalog", type=int, default=40, help="OwnerClan products listed")
    parser.add_argument("--order-rate", type=float, default=3.0, help="orders arriving per second")
    parser.add_argument(
        "--sweep-interval", type=float, default=5.0, help="seconds between order sweeps"
    )
    args = parser.parse_args()

    cases = {"sized": {}, "sequential": {"DROPSHIP_CELERY__AUTOSCALE_MAX": "1"}}
    for label in args.cases.split(","):
        print(json.dumps(one_case(label, cases[label], args), default=str), flush=True)


def one_case(label: str, extra: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """A case on a database, sandbox and image store of its own (orders and listings of one case
    never meet the next)."""
    import redis

    admin_url, url = fresh_database(args.database_url)
    sandbox, base_url = start_sandbox(args.products)
    # The order flow needs a moving clock (Naver's payment delay, tracking after a delay).
    requests.post(
        f"{base_url}/_sandbox/clock", json={"freeze": False}, timeout=5
    ).raise_for_status()
    requests.post(
        f"{base_url}/_sandbox/suppliers", json={"tracking_delay_s": 5.0}, timeout=5
    ).raise_for_status()
    image_server, store_dir, image_env = start_image_store()
    env = bench_env(base_url, url, args.redis_url)
    env["DROPSHIP_MEMORY_BUDGET"] = args.budget
    env["DROPSHIP_LOG_LEVEL"] = "INFO"  # the workers' "ready." line and autoscale decisions
    env.update(image_env)
    os.environ.update(env)
    from sqlalchemy import create_engine, pool

    from dropship import db, migrate
    from dropship.db import normalise_url
    from dropship.maintenance.partitions import ensure_partitions

    try:
        migrate.upgrade(url)
        engine = create_engine(normalise_url(url), poolclass=pool.NullPool)
        with engine.begin() as conn:
            ensure_partitions(conn)
        engine.dispose()
        db.reset_engine()
        redis.Redis.from_url(args.redis_url).flushdb()
        return run_case(label, {**env, **extra}, url, base_url, args)
    finally:
        stop_image_store(image_server, store_dir)
        sandbox.terminate()
        sandbox.wait(30)
        db.reset_engine()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


if __name__ == "__main__":
    main()
