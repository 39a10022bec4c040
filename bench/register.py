"""Register throughput against the markets' rate limits: how much of the allowed call rate the
register flow uses, with real workers, and whether the sandbox saw a single rate-limit violation.

    uv run python bench/register.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/12 [--products 5000] [--concurrency 8]

Creates a fresh database on ``--database-url``'s server (dropped at the end), migrates it, and
inserts ``--products`` sellable products with one pricing rule and one category mapping per
market. Starts the sandbox in this process with its rate limits **on and per account** (as on
the real markets: Coupang per vendorId, Naver per application): by default the design's
figures, Coupang 100 calls/min per vendor (bucket capacity 2) and Naver 2 calls/s with a burst
of 4 per application; the workers' limiter uses the project's defaults for the same accounts
(Coupang 96/min, 4 % under the sandbox's 100/min; Naver 120/min; ``burst=1``). Every sandbox
market account is used: two on Coupang and two on Naver, so every product is registered four
times.

Then one ``--concurrency``-process worker (queue ``medium``) starts, the register sweep claims
every product on every account and publishes the batches (timed separately), and the script
polls the database until no listing of a market is pending. For each market:

* calls: what the sandbox counted for the market (every endpoint, the token included);
* span: from the publish to that market's last listing leaving ``claimed``/``registering``;
* allowed: per-account rate x accounts x span; used = calls / allowed;
* violations: the sandbox's rate-limit violation counter (429s it answered) for the market.

Prints a Markdown table and a JSON line (paste into docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.collect import fresh_database, start_image_store, stop_image_store  # noqa: E402

CATEGORIES = {"coupang": "56137", "naver": "50000803"}


def seed_catalog(url: str, products: int, image_base: str, image_pool: int) -> None:
    """``products`` sellable products whose images are ``image_pool`` distinct sandbox images
    (products sharing an image share its processing and its per-account Naver upload)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO products (supplier, supplier_sku, name, price, shipping_fee, stock, status,
                                  category, options, images, open_market_sellable, adult_only)
            SELECT 'ownerclan', 'BENCH' || n, '벤치 상품 ' || n, 9000 + (n %% 50) * 100, 0, 10,
                   'active', 'KITCHEN', '[]'::jsonb,
                   jsonb_build_array(%s || '/images/ownerclan/' || (n %% %s) || '/0.jpg'),
                   true, false
            FROM generate_series(1, %s) AS n
            """,
            (image_base, image_pool, products),
        )
        for market, category in CATEGORIES.items():
            conn.execute(
                "INSERT INTO pricing_rules (market, margin_rate, fee_rate, min_margin_krw, "
                "rounding_krw) VALUES (%s, 0.2, 0.1, 500, 10)",
                (market,),
            )
            conn.execute(
                "INSERT INTO category_map (supplier, supplier_category, market, market_category) "
                "VALUES ('ownerclan', 'KITCHEN', %s, %s)",
                (market, category),
            )


def pending_by_market(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.platform, count(*) FILTER (WHERE l.status IN ('claimed', 'registering')) "
            "FROM listings l JOIN accounts a ON a.id = l.account_id GROUP BY a.platform"
        ).fetchall()
    return {str(p): int(n) for p, n in rows}


def status_counts(url: str) -> dict[str, dict[str, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.name, l.status, count(*) FROM listings l "
            "JOIN accounts a ON a.id = l.account_id GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    out: dict[str, dict[str, int]] = {}
    for name, status, n in rows:
        out.setdefault(str(name), {})[str(status)] = int(n)
    return out


def machine() -> str:
    import psutil

    return (
        f"{psutil.cpu_count()} vCPU {platform.machine()}, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.system()}, "
        f"Python {platform.python_version()}, load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


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
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8, help="worker processes (medium)")
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument(
        "--image-pool",
        type=int,
        default=20,
        help="distinct images across the catalog (each costs one Naver upload per account)",
    )
    args = parser.parse_args()

    from dropship.sandbox.core import SandboxConfig, SandboxServer
    from dropship.sandbox.credentials import accounts_for, sandbox_account_config

    config = SandboxConfig(per_account_rate_limits=True, order_rate_per_min=0.0)
    sandbox = SandboxServer(config, host="127.0.0.1", port=0).start()
    admin_url, url = fresh_database(args.database_url)
    # Registration needs processed images in a store the markets can fetch from.
    image_server, store_dir, image_env = start_image_store()
    env = {
        **os.environ,
        "DROPSHIP_DATABASE_URL": url,
        "DROPSHIP_REDIS_URL": args.redis_url,
        "DROPSHIP_PLATFORMS__ACCOUNTS": json.dumps(sandbox_account_config(sandbox.base_url)),
        "DROPSHIP_LOG_LEVEL": "WARNING",
        **image_env,
    }
    env.pop("DROPSHIP_RESULT_BACKEND_URL", None)
    os.environ.update(env)
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()  # the bench's own db: limiter state, queues
    from dropship import migrate
    from dropship.celery_app import app
    from dropship.listings import services
    from dropship.platforms.ratelimit import DEFAULT_RATE_LIMITS
    from tasks.listings import interleaved_batches, register_batch

    markets = ("coupang", "naver")
    accounts = {m: len(accounts_for(m)) for m in markets}
    allowed_per_account = {m: sandbox.state.rate_limit(m).rate_per_s for m in markets}
    client_per_account = {
        m: DEFAULT_RATE_LIMITS[m].calls / DEFAULT_RATE_LIMITS[m].period_s for m in markets
    }
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-register-worker.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dropship.celery_app",
            "worker",
            "-Q",
            "medium",
            "-c",
            str(args.concurrency),
            "-n",
            f"bench-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=PROJECT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    result: dict[str, Any] = {
        "products": args.products,
        "concurrency": args.concurrency,
        "machine": machine(),
        "accounts": accounts,
        "allowed_per_account_per_s": allowed_per_account,
        "client_limit_per_account_per_s": client_per_account,
    }
    try:
        migrate.upgrade(url)
        seed_catalog(url, args.products, sandbox.base_url, args.image_pool)
        from dropship.images.services import pending_product_ids, process_products

        images_started = time.perf_counter()
        process_products(pending_product_ids())
        result["images_s"] = round(time.perf_counter() - images_started, 2)
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker not ready:\n{log.read_text()[-3000:]}")
        sweep_started = time.perf_counter()
        # What the register sweep task does: claim per account, then publish the batches
        # one account after another.
        planned = {
            name: services.plan_registrations(name, limit=args.products)["publish"]
            for name in services.market_accounts()
        }
        order = interleaved_batches(planned)
        for name, batch in order:
            register_batch.delay(name, batch)
        batches = len(order)
        published = sum(len(ids) for ids in planned.values())
        if published == 0:
            raise SystemExit(f"the sweep planned no registration: {status_counts(url)}")
        start = time.perf_counter()
        result["sweep_s"] = round(start - sweep_started, 2)
        result["published"] = published
        result["batches"] = batches
        print(
            f"sweep: {published} listings in {batches} batches, {result['sweep_s']} s", flush=True
        )
        done_at: dict[str, float] = {}
        last_print = start
        while len(done_at) < len(markets):
            pending = pending_by_market(url)
            now = time.perf_counter()
            for m in markets:
                if m not in done_at and pending.get(m, 0) == 0:
                    done_at[m] = now
            if now - last_print > 30:
                print(f"{now - start:.0f} s: pending {pending}", flush=True)
                last_print = now
            if now - start > args.timeout:
                raise SystemExit(f"still pending after {args.timeout:.0f} s: {pending}")
            time.sleep(0.5)
        counts = sandbox.state.snapshot()
        result["listings"] = status_counts(url)
        result["sandbox_listing_counts_over_1"] = sum(
            1 for v in counts["listings"].values() if int(v) > 1
        )
        for m in markets:
            span = done_at[m] - start
            calls = sum(counts["calls"].get(m, {}).values())
            allowed = allowed_per_account[m] * accounts[m] * span
            result[m] = {
                "span_s": round(span, 1),
                "calls": calls,
                "calls_by_endpoint": dict(counts["calls"].get(m, {})),
                "rate_per_s": round(calls / span, 3),
                "allowed_per_s": round(allowed_per_account[m] * accounts[m], 3),
                "used": round(calls / allowed, 4),
                "violations": int(counts["rate_limit_violations"][m]),
            }
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        sandbox.stop()
        stop_image_store(image_server, store_dir)
        from dropship import db

        db.reset_engine()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    print_table(result)
    print(json.dumps(result, default=str))
    return 0


def print_table(r: dict[str, Any]) -> None:
    print()
    print(
        "| market | accounts | listings | calls | span | achieved | allowed | used | "
        "rate-limit violations |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in ("coupang", "naver"):
        x = r[m]
        listings = sum(sum(v.values()) for k, v in r["listings"].items() if k.startswith(m))
        print(
            f"| {m} | {r['accounts'][m]} | {listings:,} | {x['calls']:,} | {x['span_s']} s | "
            f"{x['rate_per_s']}/s | {x['allowed_per_s']}/s | {x['used'] * 100:.1f} % | "
            f"{x['violations']} |"
        )
    print(f"\nsweep (claim + publish): {r['sweep_s']} s; {r['machine']}")


if __name__ == "__main__":
    raise SystemExit(main())
