"""Orders throughput and latency: marketplace arrival -> purchase order -> tracking back, with real
workers, against the one-order-per-round-trip script, in one run.

    uv run python bench/orders.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/15 [--orders 10000] [--rate 250] \\
        [--sweep-interval 1] [--concurrency 2] [--naive-orders 200]

Creates a fresh database on ``--database-url``'s server (dropped at the end), starts the sandbox
as its own process (rate limits lifted, tracking after ``--tracking-delay`` s), collects a small
OwnerClan catalog and registers it on ``coupang_main`` and ``naver_main`` with the project's own
tasks, then:

1. **the project's path**: ``--orders`` orders arrive at the sandbox markets at ``--rate`` per
   second (half Coupang, half Naver, admin endpoints in small batches; the arrival time of an
   order is the moment its batch was created). One worker process tree on queue ``high``
   (``--concurrency`` processes) does the work; this script only publishes what beat would:
   ``sweep_order_accounts`` (one ``sweep_orders`` per account) every ``--sweep-interval`` s
   and ``tracking_sweep`` every ``--tracking-interval`` s. Measured: purchase
   orders per second (orders / (last purchase placed - first arrival)), arrival-to-purchase
   latency p50/p95/p99 (``purchase_orders.placed_at`` minus arrival), and the time until every
   order's tracking is at its market (``dispatched``).
2. **one order per round trip**: what a simple script does: read the market's open orders,
   take the first one not bought yet, buy it at the supplier, repeat; ``--naive-orders`` orders
   arriving at the same rate, in this process, same sandbox.

Prints a Markdown table and a JSON line (paste into docs/BENCHMARKS.md). Naver shows a product
order in ``last-changed-statuses`` from its payment time, 3 s after the order: a floor under the
Naver half's latency that the sandbox reproduces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.collect import (  # noqa: E402
    Worker,
    bench_env,
    fresh_database,
    start_image_store,
    start_sandbox,
    stop_image_store,
)

MARKET_ACCOUNTS = {"coupang": "coupang_main", "naver": "naver_main"}
BATCH = 25  # orders per admin call


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def setup_catalog(url: str, base_url: str, catalog: int) -> list[tuple[str, str]]:
    """Collect OwnerClan and register it on both markets with the project's tasks; returns the
    listed (market, external_sku)."""
    from tasks.collect import collect_supplier
    from tasks.listings import register_sweep

    requests.post(
        f"{base_url}/_sandbox/suppliers", json={"catalog_sizes": {"ownerclan": catalog}}, timeout=5
    ).raise_for_status()
    collect_supplier.delay("ownerclan", mode="full").forget()
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 300
        while not conn.execute(
            "SELECT 1 FROM collect_runs WHERE status IN ('succeeded', 'partial')"
        ).fetchone():
            if time.monotonic() > deadline:
                raise SystemExit("collect did not finish")
            time.sleep(0.5)
        for market, category in (("coupang", "56137"), ("naver", "50000803")):
            conn.execute(
                "INSERT INTO pricing_rules (market, category, margin_rate, fee_rate, "
                "min_margin_krw, rounding_krw) VALUES (%s, NULL, 0.2, 0.1, 0, 10)",
                (market,),
            )
            conn.execute(
                "INSERT INTO category_map (supplier, supplier_category, market, market_category) "
                "SELECT DISTINCT supplier, category, %s, %s FROM products "
                "WHERE category IS NOT NULL ON CONFLICT DO NOTHING",
                (market, category),
            )
        # Registration lists only products with processed images.
        from dropship.images.services import pending_product_ids, process_products

        process_products(pending_product_ids())
        for account in MARKET_ACCOUNTS.values():
            register_sweep.delay(account).forget()
        deadline = time.monotonic() + float(os.environ.get("BENCH_SETUP_TIMEOUT_S", "300"))
        while True:
            # Coupang listed (the naive script buys there), nothing in flight.
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE l.status = 'active' AND a.platform = 'coupang'), "
                "count(*) FILTER (WHERE l.status IN ('claimed', 'registering')) "
                "FROM listings l JOIN accounts a ON a.id = l.account_id"
            ).fetchone()
            assert row is not None
            if row[0] and not row[1]:
                break
            if time.monotonic() > deadline:
                states = conn.execute(
                    "SELECT a.platform, l.status, left(coalesce(l.error, ''), 200), count(*) "
                    "FROM listings l JOIN accounts a ON a.id = l.account_id GROUP BY 1, 2, 3"
                ).fetchall()
                blocks = conn.execute(
                    "SELECT account, code, count(*) FROM listing_blocks GROUP BY 1, 2"
                ).fetchall()
                raise SystemExit(
                    f"registration did not finish: listings {states}, blocked {blocks}"
                )
            time.sleep(0.5)
        listed = conn.execute(
            "SELECT a.platform, l.external_sku FROM listings l JOIN accounts a ON a.id = "
            "l.account_id JOIN products p ON p.id = l.product_id WHERE l.status = 'active' "
            "AND a.name = ANY(%s) AND p.stock > 0 AND p.options = '[]'::jsonb ORDER BY l.id",
            (list(MARKET_ACCOUNTS.values()),),
        ).fetchall()
    by_market = {m: sum(1 for x, _ in listed if x == m) for m in MARKET_ACCOUNTS}
    print(f"listed for the run by market: {by_market}", flush=True)
    return [(str(m), str(s)) for m, s in listed]


def post_orders(base_url: str, market: str, sku: str, count: int) -> list[str]:
    if market == "coupang":
        body = {"count": count, "external_sku": sku, "spacing_s": 0}
        answer = requests.post(f"{base_url}/_sandbox/coupang/orders", json=body, timeout=30)
        answer.raise_for_status()
        return [str(i) for i in answer.json()["shipmentBoxIds"]]
    body = {"count": count, "seller_management_code": sku, "spacing_s": 0}
    answer = requests.post(f"{base_url}/_sandbox/naver/orders", json=body, timeout=30)
    answer.raise_for_status()
    return [str(i) for i in answer.json()["productOrderIds"]]


# Naver lists a product order from its payment, which the sandbox puts 3 s after the order
# (paymentDate): nothing can be bought before it.
NAVER_PAYMENT_AFTER_S = 3.0


def arrive(
    base_url: str, listed: list[tuple[str, str]], total: int, rate: float
) -> tuple[dict[str, float], float, dict[str, str]]:
    """Create ``total`` orders at ``rate``/s in batches; unit id -> wall-clock arrival, the
    seconds it took, unit id -> market."""
    arrivals: dict[str, float] = {}
    markets: dict[str, str] = {}
    started = time.time()
    sent = 0
    n = 0
    while sent < total:
        due = started + sent / rate
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        market, sku = listed[n % len(listed)]
        n += 1
        count = min(BATCH, total - sent)
        at = time.time()
        for unit in post_orders(base_url, market, sku, count):
            if unit in arrivals:
                raise SystemExit(f"unit id {unit} given twice (by {markets[unit]} and {market})")
            arrivals[unit] = at
            markets[unit] = market
        sent += count
    return arrivals, time.time() - started, markets


class CpuMeter:
    """CPU seconds used by each part of the pipeline while it runs: the sandbox process, each
    worker tree, and the PostgreSQL backends connected to the bench database (sampled every
    0.5 s; a process's CPU since the previous sample is added to its part). On a machine other
    jobs share, CPU per order is the steadier figure: wall-clock rates move with their load."""

    def __init__(self, url: str, parts: dict[str, int]) -> None:
        self.url = url
        self.parts = parts  # part -> root pid (its children count too)
        self.used: dict[str, float] = {p: 0.0 for p in [*parts, "postgres"]}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self, conn: psycopg.Connection[Any]) -> dict[int, str]:
        pids: dict[int, str] = {}
        for part, root in self.parts.items():
            try:
                proc = psutil.Process(root)
                for p in [proc, *proc.children(recursive=True)]:
                    pids[p.pid] = part
            except psutil.Error:
                continue
        database = self.url.rsplit("/", 1)[1]
        for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ):
            pids[int(pid)] = "postgres"
        return pids

    def _sample(self, conn: psycopg.Connection[Any]) -> None:
        for pid, part in self._pids(conn).items():
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            now = t.user + t.system
            self.used[part] += now - self._last.get(pid, now)
            self._last[pid] = now

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            self._sample(conn)  # a baseline: CPU before the start is not counted
            while not self._stop.wait(0.5):
                self._sample(conn)
            self._sample(conn)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(10)
        return {part: round(seconds, 2) for part, seconds in self.used.items()}


def publish_loop(
    stop: threading.Event, interval: float, tracking_interval: float, expire: bool = False
) -> None:
    """Publish the sweeps every ``interval`` / ``tracking_interval`` s; with ``expire``, each
    expires before the next one is due, as beat's entries do (a busy worker then skips the
    sweeps it could not start in time instead of running a backlog of them)."""
    from tasks.fulfilment import tracking_sweep
    from tasks.orders import sweep_order_accounts

    next_tracking = 0.0
    while not stop.is_set():
        sweep_order_accounts.apply_async(expires=0.9 * interval if expire else None).forget()
        if time.monotonic() >= next_tracking:
            tracking_sweep.apply_async(expires=0.9 * tracking_interval if expire else None).forget()
            next_tracking = time.monotonic() + tracking_interval
        stop.wait(interval)


def project_path(
    url: str,
    base_url: str,
    listed: list[tuple[str, str]],
    args: argparse.Namespace,
    meter: CpuMeter,
) -> dict[str, Any]:
    stop = threading.Event()
    publisher = threading.Thread(
        target=publish_loop, args=(stop, args.sweep_interval, args.tracking_interval)
    )
    publisher.start()
    meter.start()
    cpu: dict[str, float] = {}
    try:
        arrivals, arrive_s, markets = arrive(base_url, listed, args.orders, args.rate)
        print(f"{len(arrivals)} orders arrived in {arrive_s:.1f} s", flush=True)
        placed: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                rows = conn.execute(
                    "SELECT o.market_order_id, extract(epoch FROM po.placed_at) FROM "
                    "purchase_orders po JOIN orders o ON o.order_key = po.order_key "
                    "WHERE po.status = 'placed'"
                ).fetchall()
                placed = {str(u): float(t) for u, t in rows if str(u) in arrivals}
                if len(placed) >= len(arrivals):
                    break
                time.sleep(1)
            purchases_done = time.time()
            cpu = meter.stop()  # arrival to the last purchase: the rate's window
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM orders WHERE status = 'dispatched'"
                ).fetchone()
                if row and row[0] >= len(arrivals):
                    break
                time.sleep(1)
            dispatched = conn.execute(
                "SELECT count(*), extract(epoch FROM max(dispatched_at)) FROM orders "
                "WHERE status = 'dispatched'"
            ).fetchone()
            statuses: dict[str, int] = dict(
                conn.execute("SELECT status, count(*) FROM orders GROUP BY 1").fetchall()
            )
            stray = conn.execute(
                "SELECT market, market_order_id, status FROM orders "
                "WHERE NOT (market_order_id = ANY(%s))",
                (list(arrivals),),
            ).fetchall()
    finally:
        stop.set()
        publisher.join()
    first = min(arrivals.values())
    latencies = [placed[u] - arrivals[u] for u in placed]
    by_market: dict[str, dict[str, float]] = {}
    for market in sorted(set(markets.values())):
        mine = [placed[u] - arrivals[u] for u in placed if markets[u] == market]
        # From the moment the market lists the order for us (Naver: its payment).
        payable = [x - (NAVER_PAYMENT_AFTER_S if market == "naver" else 0.0) for x in mine]
        by_market[market] = {
            "orders": len(mine),
            "p50_s": percentile(mine, 0.50),
            "p95_s": percentile(mine, 0.95),
            "p95_from_payment_s": percentile(payable, 0.95),
        }
    listed_latencies = [
        placed[u] - arrivals[u] - (NAVER_PAYMENT_AFTER_S if markets[u] == "naver" else 0.0)
        for u in placed
    ]
    last_placed = max(placed.values()) if placed else purchases_done
    assert dispatched is not None
    return {
        "orders": len(arrivals),
        "placed": len(placed),
        "arrival_seconds": arrive_s,
        "orders_per_s": len(placed) / (last_placed - first) if placed else 0.0,
        "p50_s": percentile(latencies, 0.50),
        "p95_s": percentile(latencies, 0.95),
        "p99_s": percentile(latencies, 0.99),
        # From the moment the market lists the order (Naver: its payment, 3 s after the order).
        "p50_from_listed_s": percentile(listed_latencies, 0.50),
        "p95_from_listed_s": percentile(listed_latencies, 0.95),
        "p99_from_listed_s": percentile(listed_latencies, 0.99),
        "dispatched": int(dispatched[0]),
        "all_tracked_after_s": (float(dispatched[1]) - first) if dispatched[1] else None,
        "statuses": statuses,
        "by_market": by_market,
        # Order rows the run did not create (should be none).
        "stray_orders": [tuple(map(str, r)) for r in stray[:5]],
        # CPU seconds of each part from the first arrival to the last purchase, and per order.
        "cpu_s": cpu,
        "cpu_ms_per_order": {
            part: round(1000 * seconds / max(1, len(placed)), 2) for part, seconds in cpu.items()
        },
    }


def naive_script(
    base_url: str, listed: list[tuple[str, str]], count: int, rate: float
) -> dict[str, Any]:
    """One order per sweep-and-call round trip: read the open orders, buy the first one not
    bought yet, repeat (a simple script's loop), on Coupang only."""
    if count <= 0:
        return {"orders": 0, "placed": 0, "skipped": "--naive-orders 0"}
    from dropship.platforms.interfaces import BuyerInfo, PurchaseOrderLine, PurchaseOrderRequest
    from dropship.platforms.registry import connector_for

    market = connector_for("coupang_main")
    supplier = connector_for("ownerclan_main")
    coupang = [sku for m, sku in listed if m == "coupang"]
    sku_of: dict[str, str] = {}
    with psycopg.connect(os.environ["DROPSHIP_DATABASE_URL"], autocommit=True) as conn:
        for external_sku, supplier_sku in conn.execute(
            "SELECT l.external_sku, p.supplier_sku FROM listings l JOIN products p "
            "ON p.id = l.product_id WHERE l.external_sku = ANY(%s)",
            (coupang,),
        ).fetchall():
            sku_of[str(external_sku)] = str(supplier_sku)
    arrivals: dict[str, float] = {}
    stop = threading.Event()

    def buyers() -> None:
        started = time.time()
        for n in range(count):
            pause = started + n / rate - time.time()
            if pause > 0:
                time.sleep(pause)
            sku = coupang[n % len(coupang)]
            (unit,) = post_orders(base_url, "coupang", sku, 1)
            arrivals[unit] = time.time()
        stop.set()

    thread = threading.Thread(target=buyers)
    since = datetime.now(UTC) - timedelta(minutes=5)
    thread.start()
    bought: dict[str, float] = {}
    receiver = BuyerInfo(name="구매자", phone="010-0000-0000", address="서울특별시")
    deadline = time.monotonic() + 600
    while len(bought) < count and time.monotonic() < deadline:
        todo = None
        for order in market.iter_orders(since, datetime.now(UTC) + timedelta(minutes=1)):
            if order.market_order_id in arrivals and order.market_order_id not in bought:
                todo = order
                break
        if todo is None:
            time.sleep(0.05)
            continue
        item = todo.items[0]
        supplier.place_order(
            PurchaseOrderRequest(
                order_key=f"naive:{todo.market_order_id}",
                lines=(PurchaseOrderLine(sku_of[str(item.external_sku)], item.quantity),),
                receiver=receiver,
            )
        )
        bought[todo.market_order_id] = time.time()
    thread.join()
    first = min(arrivals.values())
    latencies = [bought[u] - arrivals[u] for u in bought]
    return {
        "orders": count,
        "placed": len(bought),
        "orders_per_s": len(bought) / (max(bought.values()) - first) if bought else 0.0,
        "p50_s": percentile(latencies, 0.50),
        "p95_s": percentile(latencies, 0.95),
        "p99_s": percentile(latencies, 0.99),
    }


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
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=250.0, help="orders arriving per second")
    parser.add_argument("--sweep-interval", type=float, default=1.0)
    parser.add_argument("--tracking-interval", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--catalog", type=int, default=40)
    parser.add_argument("--tracking-delay", type=float, default=5.0)
    parser.add_argument("--naive-orders", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    admin_url, url = fresh_database(args.database_url)
    sandbox, base_url = start_sandbox(args.catalog)
    requests.post(
        f"{base_url}/_sandbox/clock", json={"freeze": False}, timeout=5
    ).raise_for_status()
    requests.post(
        f"{base_url}/_sandbox/suppliers",
        json={"tracking_delay_s": args.tracking_delay},
        timeout=5,
    ).raise_for_status()
    env = bench_env(base_url, url, args.redis_url)
    env["DROPSHIP_ORDERS__PRICE_CHECK"] = "false"  # same supplier calls as the naive script
    # Registration needs processed images the markets can fetch (see start_image_store).
    image_server, store_dir, image_env = start_image_store()
    env.update(image_env)
    os.environ.update(env)
    from dropship import migrate
    from dropship.celery_app import app
    from dropship.maintenance.partitions import ensure_partitions

    migrate.upgrade(url)
    from sqlalchemy import create_engine, pool

    from dropship.db import normalise_url

    engine = create_engine(normalise_url(url), poolclass=pool.NullPool)
    with engine.begin() as conn:
        ensure_partitions(conn)
    engine.dispose()
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {psutil.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB, {platform.platform()}",
        "args": vars(args),
    }
    try:
        bulk = Worker(env, "medium,low", 2, logs / "bench-orders-bulk.log")
        high = Worker(env, "high", args.concurrency, logs / "bench-orders-high.log")
        try:
            bulk.wait_ready(app)
            high.wait_ready(app)
            listed = setup_catalog(url, base_url, args.catalog)
            print(f"{len(listed)} listings", flush=True)
            meter = CpuMeter(
                url, {"sandbox": sandbox.pid, "high worker": high.proc.pid, "bulk": bulk.proc.pid}
            )
            result["project"] = project_path(url, base_url, listed, args, meter)
            print(f"project: {result['project']}", flush=True)
        finally:
            high.stop()
            bulk.stop()
        result["naive"] = naive_script(base_url, listed, args.naive_orders, args.rate)
        print(f"naive: {result['naive']}", flush=True)
    finally:
        stop_image_store(image_server, store_dir)
        sandbox.terminate()
        sandbox.wait(30)
        from dropship import db

        db.reset_engine()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    print_table(result)
    print(json.dumps(result, default=str))
    return 0


def print_table(r: dict[str, Any]) -> None:
    p, n = r["project"], r["naive"]
    print("| path | orders | placed | orders/s | p50 s | p95 s | p99 s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, row in (("sweep + batched forwards (workers)", p), ("one order per round trip", n)):
        if "orders_per_s" not in row:
            continue  # not run (--naive-orders 0)
        print(
            f"| {label} | {row['orders']} | {row['placed']} | {row['orders_per_s']:.1f} | "
            f"{row['p50_s']:.2f} | {row['p95_s']:.2f} | {row['p99_s']:.2f} |"
        )
    print(
        f"\nall tracking at the markets {p['all_tracked_after_s']} s after the first arrival; "
        f"statuses {p['statuses']}"
    )
    print(
        f"from the market listing the order (Naver: payment): p50 {p['p50_from_listed_s']:.2f} s, "
        f"p95 {p['p95_from_listed_s']:.2f} s, p99 {p['p99_from_listed_s']:.2f} s"
    )
    print(f"CPU ms per order placed (first arrival to last purchase): {p['cpu_ms_per_order']}")
    print(f"by market: {p['by_market']}; stray order rows: {p['stray_orders']}")


if __name__ == "__main__":
    raise SystemExit(main())
