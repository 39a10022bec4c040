"""Sold-out latency: from a supplier sell-out seen by collect to the listing suspended and
confirmed on every market, while ordinary listing updates are queued at the same time.

    uv run python bench/soldout.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/11 [--updates 1000] [--soldouts 20] [--spacing 3] \\
        [--drop-first]

Creates a fresh database on ``--database-url``'s server (dropped at the end), starts the sandbox
as its own process (its rate limits lifted, so it never answers 429; the *client's* limiter keeps
the production defaults for Coupang and Naver in the workers) and:

1. collects ``--updates / 2 + --soldouts`` products (the real staging and merge, an in-bench
   supplier connector) and registers each on ``coupang_main`` and ``naver_main`` from this process
   (limits lifted here: set-up only);
2. starts the workers as deployed: one single-process worker on ``high`` and one bulk worker
   (``medium,low``, two processes), both with the default market rate limits;
3. one collect run changes the cost of ``--updates / 2`` products: the merge records the sync work
   and its publish queues ``--updates`` ordinary listing updates (two accounts) on ``medium``;
4. then ``--soldouts`` times, ``--spacing`` seconds apart, a collect run in which one more product
   sells out (stock 0); the merge records it and publishes its suspension. Latency per sell-out =
   the latest ``suspend_confirmed_at`` over its listings (the market read back and showed it
   suspended) minus the ``sync_outbox.created_at`` of its merge (the moment collect saw it);
   both from the database clock. With ``--drop-first`` each market answers the first suspension
   request of every sell-out 200 and does not apply it (the sandbox's ``drop_suspensions``).

Prints a Markdown table and a JSON line (for docs/BENCHMARKS.md), including how many ordinary
updates were still queued when the last sell-out was confirmed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.collect import (  # noqa: E402
    PLATFORMS,
    Worker,
    fresh_database,
    start_image_store,
    start_sandbox,
    stop_image_store,
)
from bench.orders import percentile  # noqa: E402

SUPPLIER = "ownerclan"
MARKETS = (("coupang", "56137"), ("naver", "50000803"))


class BenchSupplier:
    """A supplier connector over a dict of records (one slice), for the real collect path."""

    def __init__(self, records: list[Any]) -> None:
        self.supplier = SUPPLIER
        self.records = records

    def plan_slices(self, since: datetime | None = None) -> list[Any]:
        from dropship.platforms.interfaces import CollectSlice

        return [CollectSlice("all", {})]

    def iter_slice(self, piece: Any) -> Iterator[Any]:
        yield from self.records

    def recheck_missing(self, skus: Any, run_started_at: datetime) -> Iterator[Any]:
        return iter(())

    def factory(self, account: str) -> Any:
        return self


IMAGE_POOL = 20  # distinct sandbox images across the products (processed once each)
IMAGE_BASE: list[str] = []  # the sandbox's base URL, once started


def record(sku: str, cost: int, stock: int = 50) -> Any:
    from dropship.platforms.interfaces import SupplierProduct

    # Registration lists only products with a processed image the markets accept.
    image = f"{IMAGE_BASE[0]}/images/ownerclan/{sum(map(ord, sku)) % IMAGE_POOL}/0.jpg"
    return SupplierProduct(
        supplier=SUPPLIER,
        supplier_sku=sku,
        name=f"벤치 상품 {sku}",
        cost_price=cost,
        shipping_fee=0,
        stock=stock,
        status="active",
        category="KITCHEN",
        images=(image,),
    )


def collect(records: list[Any], mode: str = "incremental") -> dict[str, Any]:
    from dropship.catalog import services

    fake = BenchSupplier(records)
    run_id = services.open_run(SUPPLIER, "ownerclan_main", mode=mode)["run_id"]
    services.plan_run(run_id, fake.factory)
    services.run_slice(run_id, "all", fake.factory)
    return services.merge_run(run_id, fake.factory)


def merge_and_publish(records: list[Any]) -> dict[str, Any]:
    """What the merge task does: merge, then publish the recorded sync work after commit."""
    from tasks.listings import publish_sync_outbox

    merged = collect(records)
    merged["published"] = publish_sync_outbox()
    return merged


def worker_env(base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    for market in ("COUPANG", "NAVER"):  # production defaults for the markets in the workers
        env.pop(f"DROPSHIP_PLATFORMS__RATE_LIMITS__{market}__CALLS", None)
        env.pop(f"DROPSHIP_PLATFORMS__RATE_LIMITS__{market}__PERIOD_S", None)
    env["DROPSHIP_PLATFORMS__HTTP__READ_TIMEOUT_S"] = "20"
    return env


def bench_env(base_url: str, database_url: str, redis_url: str) -> dict[str, str]:
    from dropship.sandbox.credentials import sandbox_account_config

    env = {
        **os.environ,
        "DROPSHIP_DATABASE_URL": database_url,
        "DROPSHIP_REDIS_URL": redis_url,
        "DROPSHIP_PLATFORMS__ACCOUNTS": json.dumps(sandbox_account_config(base_url)),
        "DROPSHIP_LOG_LEVEL": "WARNING",
    }
    env.pop("DROPSHIP_RESULT_BACKEND_URL", None)
    for p in PLATFORMS:
        env[f"DROPSHIP_PLATFORMS__RATE_LIMITS__{p.upper()}__CALLS"] = "100000"
        env[f"DROPSHIP_PLATFORMS__RATE_LIMITS__{p.upper()}__PERIOD_S"] = "1"
    return env


def latency(conn: psycopg.Connection[Any], product_id: int) -> float | None:
    """Seconds from the merge that saw the sell-out to the last confirmation, once every
    listing of the product is confirmed suspended; None before."""
    row = conn.execute(
        """
        SELECT bool_and(l.status = 'suspended' AND l.suspend_confirmed_at IS NOT NULL),
               extract(epoch FROM max(l.suspend_confirmed_at) - (
                   SELECT min(o.created_at) FROM sync_outbox o
                   WHERE o.product_id = %(p)s AND o.kind = 'suspend'))
        FROM listings l WHERE l.product_id = %(p)s
        """,
        {"p": product_id},
    ).fetchone()
    assert row is not None
    return float(row[1]) if row[0] else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DROPSHIP_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("DROPSHIP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    parser.add_argument("--updates", type=int, default=1000, help="listing updates queued")
    parser.add_argument("--soldouts", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=3.0, help="seconds between sell-outs")
    parser.add_argument("--drop-first", action="store_true")
    parser.add_argument("--timeout", type=float, default=120.0, help="per sell-out")
    args = parser.parse_args()

    admin_url, url = fresh_database(args.database_url)
    sandbox, base_url = start_sandbox(100)
    IMAGE_BASE[:] = [base_url]
    image_server, store_dir, image_env = start_image_store()
    env = {**bench_env(base_url, url, args.redis_url), **image_env}
    os.environ.update(env)
    from dropship import migrate
    from dropship.celery_app import app
    from dropship.listings import services

    migrate.upgrade(url)
    redis.Redis.from_url(args.redis_url).flushdb()
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    update_products = args.updates // len(MARKETS)
    result: dict[str, Any] = {
        "updates_queued": update_products * len(MARKETS),
        "soldouts": args.soldouts,
        "spacing_s": args.spacing,
        "drop_first": args.drop_first,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
    }
    workers: list[Worker] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for market, category in MARKETS:
                conn.execute(
                    "INSERT INTO pricing_rules (market, margin_rate, fee_rate, min_margin_krw) "
                    "VALUES (%s, 0.2, 0.1, 500)",
                    (market,),
                )
                conn.execute(
                    "INSERT INTO category_map (supplier, supplier_category, market, "
                    "market_category) VALUES (%s, 'KITCHEN', %s, %s)",
                    (SUPPLIER, market, category),
                )
        skus = [f"U{n:05d}" for n in range(update_products)]
        sold = [f"S{n:05d}" for n in range(args.soldouts)]
        started = time.perf_counter()
        collect([record(s, 9000) for s in skus + sold], mode="full")
        from dropship.images.services import pending_product_ids, process_products

        process_products(pending_product_ids())
        for account in ("coupang_main", "naver_main"):
            ids = services.plan_registrations(account)["publish"]
            for start in range(0, len(ids), 200):
                services.register_listings(account, ids[start : start + 200])
        result["setup_s"] = round(time.perf_counter() - started, 1)
        print(f"set-up: {result['setup_s']} s", flush=True)
        with psycopg.connect(url, autocommit=True) as conn:
            product_ids: dict[str, int] = {
                str(sku): int(pid)
                for sku, pid in conn.execute("SELECT supplier_sku, id FROM products").fetchall()
            }
            listed = conn.execute("SELECT count(*) FROM listings WHERE status = 'active'")
            result["listings"] = int(listed.fetchone()[0])  # type: ignore[index]
        expected = (update_products + args.soldouts) * len(MARKETS)
        if result["listings"] != expected:
            raise SystemExit(f"set-up listed {result['listings']} of {expected} listings")
        wenv = worker_env(env)
        workers.append(Worker(wenv, "high", 1, logs / "bench-soldout-high.log"))
        workers.append(Worker(wenv, "medium,low", 2, logs / "bench-soldout-bulk.log"))
        for w in workers:
            w.wait_ready(app)
        merged = merge_and_publish([record(s, 9500) for s in skus])
        print(f"queued updates: {merged['published']}", flush=True)
        broker = redis.Redis.from_url(args.redis_url)
        latencies: list[float] = []
        with psycopg.connect(url, autocommit=True) as conn:
            for n, sku in enumerate(sold):
                if args.drop_first:
                    requests.post(
                        f"{base_url}/_sandbox/faults",
                        json={"coupang": {"drop_suspensions": 1}, "naver": {"drop_suspensions": 1}},
                        timeout=5,
                    ).raise_for_status()
                queued = broker.llen("medium")
                merge_and_publish([record(sku, 9000, stock=0)])
                deadline = time.monotonic() + args.timeout
                seconds = None
                while seconds is None:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"sell-out {sku} not confirmed in {args.timeout} s")
                    time.sleep(0.05)
                    seconds = latency(conn, product_ids[sku])
                latencies.append(seconds)
                print(
                    f"sell-out {n + 1}/{len(sold)}: {seconds:.2f} s "
                    f"(medium queue before: {queued} messages)",
                    flush=True,
                )
                time.sleep(max(0.0, args.spacing - seconds))
            pending = conn.execute(
                "SELECT count(*) FROM listings l JOIN products p ON p.id = l.product_id "
                "WHERE p.supplier_sku LIKE 'U%%' AND l.sale_price <> 12670"
            ).fetchone()
        result["updates_not_done_at_end"] = int(pending[0]) if pending else None
        result["medium_queue_at_end"] = int(broker.llen("medium"))
        if args.drop_first:
            counts = requests.get(f"{base_url}/_sandbox/counts", timeout=5).json()
            result["dropped_suspensions"] = counts.get("dropped_suspensions", {})
        result["latency_s"] = {
            "p50": round(statistics.median(latencies), 2),
            "p95": round(percentile(latencies, 0.95), 2),
            "max": round(max(latencies), 2),
            "min": round(min(latencies), 2),
        }
    finally:
        for w in workers:
            w.stop()
        sandbox.terminate()
        sandbox.wait(30)
        stop_image_store(image_server, store_dir)
        from dropship import db

        db.reset_engine()
        if os.environ.get("DROPSHIP_BENCH_KEEP_DB"):
            print(f"kept database {url.rsplit('/', 1)[1]}", flush=True)
        else:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    lat = result["latency_s"]
    print(
        "\n| sell-outs | listing updates queued | drop first | p50 | p95 | max |"
        "\n|---|---|---|---|---|---|"
        f"\n| {args.soldouts} | {result['updates_queued']} | {'yes' if args.drop_first else 'no'} "
        f"| {lat['p50']} s | {lat['p95']} s | {lat['max']} s |"
    )
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
