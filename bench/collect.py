"""Collect throughput: the chord/COPY path end to end against the comparisons, in one run.

    uv run python bench/collect.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/15 [--supplier gentrade] [--products 100000] \\
        [--naive-products 10000] [--concurrency 2]

Creates a fresh database on ``--database-url``'s server (dropped at the end) and migrates it,
starts the sandbox as its own process (``--catalog-size``, rate limits lifted, world clock
frozen so two runs read the same catalog, no injected latency), then measures:

1. **source only**: the connector reading the whole catalog in this process (sandbox generation,
   HTTP and parsing; nothing stored), then again once the gentrade sandbox resends the document
   it cached (frozen clock): the connector's own ceiling, and what the collect runs read;
2. **collect, first run**: ``collect_supplier.delay(...)`` until the run is ``succeeded``, with
   ``--concurrency`` worker processes (queue ``low``), products inserted; peak RSS and PSS of
   the worker tree (parent + pool children) sampled every 0.2 s;
3. **collect, second identical run** (updates nothing);
4. **bare COPY** of the same rows (read back from ``products``) into an unindexed table: the
   database's physical limit for these rows;
5. **executemany**: psycopg ``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` of the same
   rows into a copy of ``products`` (same indexes and unique key);
6. **naive**: one Celery task per product with an ORM upsert (``bench/collect_naive.py``) for
   the first ``--naive-products`` products, same worker count, from an empty ``products``.

Prints a Markdown table and a JSON line (paste into docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

PRODUCT_COLUMNS = (
    "supplier, supplier_sku, name, price, shipping_fee, stock, status, category, images, "
    "options, content_hash, open_market_sellable, adult_only, stock_assumed"
)
# The same, with the jsonb columns as their JSON text (what COPY and the upsert are given).
SELECT_AS_TEXT = PRODUCT_COLUMNS.replace("images,", "images::text,").replace(
    "options,", "options::text,"
)


def start_sandbox(size: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dropship.sandbox", "--port", "0", "--catalog-size", str(size)],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"sandbox did not start: {line!r}")
    base_url = line.rsplit(" ", 1)[1]
    limits = {p: {"calls": 100_000, "period_s": 1, "burst": 100_000} for p in PLATFORMS}
    requests.post(f"{base_url}/_sandbox/rate_limits", json=limits, timeout=5).raise_for_status()
    # Domeggook's per-key minute and daily limits are the platform's own (HTTP 429 beyond),
    # counted apart from the generic limits above: lifted too, or they set the pace.
    requests.post(
        f"{base_url}/_sandbox/domeggook",
        json={"per_minute": 1_000_000, "daily": 1_000_000_000},
        timeout=5,
    ).raise_for_status()
    requests.post(f"{base_url}/_sandbox/clock", json={"freeze": True}, timeout=5).raise_for_status()
    return process, base_url


PLATFORMS = ("ownerclan", "domeggook", "gentrade", "coupang", "naver")


def start_image_store() -> tuple[Any, Path, dict[str, str]]:
    """A local image store served over HTTP, as ``dropship up`` runs it: registration needs
    processed images the markets can fetch (the Coupang sandbox downloads every vendorPath).
    Returns the server, its folder (for :func:`stop_image_store`) and the settings env."""
    from dropship.images.server import ImageServer

    store_dir = Path(tempfile.mkdtemp(prefix="dropship-bench-images-"))
    server = ImageServer(store_dir).start()
    return (
        server,
        store_dir,
        {
            "DROPSHIP_IMAGES__STORE": "local",
            "DROPSHIP_IMAGES__LOCAL_DIR": str(store_dir),
            "DROPSHIP_IMAGES__PUBLIC_BASE_URL": server.base_url,
        },
    )


def stop_image_store(server: Any, store_dir: Path) -> None:
    server.stop()
    shutil.rmtree(store_dir, ignore_errors=True)


def bench_env(base_url: str, database_url: str, redis_url: str) -> dict[str, str]:
    from dropship.sandbox.credentials import sandbox_account_config

    env = {
        **os.environ,
        "DROPSHIP_DATABASE_URL": database_url,
        "DROPSHIP_REDIS_URL": redis_url,
        "DROPSHIP_PLATFORMS__ACCOUNTS": json.dumps(sandbox_account_config(base_url)),
        "DROPSHIP_PLATFORMS__HTTP__READ_TIMEOUT_S": "300",
        "DROPSHIP_LOG_LEVEL": "WARNING",
    }
    env.pop("DROPSHIP_RESULT_BACKEND_URL", None)
    for p in PLATFORMS:
        env[f"DROPSHIP_PLATFORMS__RATE_LIMITS__{p.upper()}__CALLS"] = "100000"
        env[f"DROPSHIP_PLATFORMS__RATE_LIMITS__{p.upper()}__PERIOD_S"] = "1"
    return env


class Worker:
    def __init__(self, env: dict[str, str], queues: str, concurrency: int, log: Path) -> None:
        args = [
            sys.executable, "-m", "celery", "-A", "dropship.celery_app", "worker",
            "-Q", queues, "-c", str(concurrency), "-n", f"bench-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel", os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING"),
            "--without-gossip", "--without-mingle",
            "-I", "bench.collect_naive",
        ]  # fmt: skip
        self.log = log
        self.proc = subprocess.Popen(
            args, cwd=PROJECT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
        )
        self.peak_rss = 0
        self.peak_pss = 0

    def wait_ready(self, app: Any) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"worker exited:\n{self.log.read_text()[-3000:]}")
            if app.control.ping(timeout=0.5):
                return
        raise SystemExit("worker not ready in 60 s")

    def sample(self) -> None:
        try:
            parent = psutil.Process(self.proc.pid)
            rss = pss = 0
            for proc in [parent, *parent.children(recursive=True)]:
                info = proc.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
        except psutil.Error:
            return
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def fresh_database(server_url: str) -> tuple[str, str]:
    from sqlalchemy.engine import make_url

    name = f"dropship_bench_{uuid.uuid4().hex[:8]}"
    url = make_url(server_url).set(drivername="postgresql")
    admin = url.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin, url.set(database=name).render_as_string(hide_password=False)


def collect_run(engine_url: str, supplier: str, worker: Worker) -> tuple[float, dict[str, Any]]:
    from tasks.collect import collect_supplier

    started = time.perf_counter()
    result = collect_supplier.delay(supplier, f"{supplier}_main")
    run_id = result.get(timeout=600)["run_id"]
    with psycopg.connect(engine_url, autocommit=True) as conn:
        while True:
            worker.sample()
            row = conn.execute(
                "SELECT status, inserted, updated, unchanged, rejected, gone, records, unparsed, "
                "error "
                "FROM collect_runs WHERE id = %s",
                (run_id,),
            ).fetchone()
            assert row is not None
            if row[0] in ("succeeded", "partial", "failed"):
                break
            time.sleep(0.2)
    elapsed = time.perf_counter() - started
    keys = (
        "status",
        "inserted",
        "updated",
        "unchanged",
        "rejected",
        "gone",
        "records",
        "unparsed",
        "error",
    )
    return elapsed, {**dict(zip(keys, row, strict=True)), "phases": run_phases(engine_url, run_id)}


def run_phases(engine_url: str, run_id: int) -> dict[str, Any]:
    """Where a run's time went, from its own rows: planning (run opened to the first slice
    started), the slices (first start to last finish, and the longest slice), and the merge
    (last slice finished to the run finished)."""
    with psycopg.connect(engine_url, autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT extract(epoch FROM min(s.started_at) - r.started_at),
                   extract(epoch FROM max(s.finished_at) - min(s.started_at)),
                   extract(epoch FROM max(s.finished_at - s.started_at)),
                   extract(epoch FROM r.finished_at - max(s.finished_at)),
                   count(*), max(s.records)
            FROM collect_runs r JOIN collect_run_slices s ON s.run_id = r.id
            WHERE r.id = %s GROUP BY r.id
            """,
            (run_id,),
        ).fetchone()
    if row is None:
        return {}
    names = ("planning_s", "slices_s", "longest_slice_s", "merge_s", "slices", "largest_slice")
    return {
        name: (round(float(v), 2) if v is not None else None)
        for name, v in zip(names, row, strict=True)
    }


def feed_cache_hits(base_url: str, supplier: str) -> int | None:
    """How many reads the gentrade sandbox served from its cached document so far."""
    if supplier != "gentrade":
        return None
    answer = requests.get(f"{base_url}/_sandbox/gentrade", timeout=5)
    answer.raise_for_status()
    hits: int = answer.json()["feed_cache_hits"]
    return hits


def source_only(base_url: str, supplier: str) -> tuple[float, int]:
    from dropship.platforms.config import AccountSettings
    from dropship.platforms.http import PlatformHttp
    from dropship.platforms.registry import connector_class
    from dropship.sandbox.credentials import sandbox_account_config

    config = sandbox_account_config(base_url)[f"{supplier}_main"]
    account = AccountSettings.model_validate({"name": f"{supplier}_main", **config})
    http = PlatformHttp(supplier, account.name, account.base_url, None, timeout=(3, 300))
    connector = connector_class(supplier)(account=account, http=http)
    started = time.perf_counter()
    count = sum(1 for _ in connector.iter_products())
    return time.perf_counter() - started, count


def db_comparisons(url: str) -> dict[str, Any]:
    """Bare COPY and executemany of the rows the collect stored."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT {SELECT_AS_TEXT} FROM products").fetchall()
        conn.execute(f"CREATE TABLE bench_bare AS SELECT {PRODUCT_COLUMNS} FROM products LIMIT 0")
        conn.execute(
            "CREATE TABLE bench_products (LIKE products INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY bench_bare ({PRODUCT_COLUMNS}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
        bare = time.perf_counter() - started
        placeholders = ", ".join(["%s"] * 8 + ["%s::jsonb"] * 2 + ["%s"] * 4)
        updates = ", ".join(
            f"{c.strip()} = EXCLUDED.{c.strip()}" for c in PRODUCT_COLUMNS.split(",")[2:]
        )
        sql = (
            f"INSERT INTO bench_products ({PRODUCT_COLUMNS}) VALUES ({placeholders}) "
            f"ON CONFLICT (supplier, supplier_sku) DO UPDATE SET {updates}"
        )
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(sql, rows)
        conn.commit()
        many = time.perf_counter() - started
        conn.execute("DROP TABLE bench_bare, bench_products")
        conn.commit()
        stage, merge_unchanged, merge_insert = storage_path(conn, rows)
    return {
        "rows": len(rows),
        "bare_copy_s": bare,
        "executemany_s": many,
        "stage_copy_s": stage,
        "merge_unchanged_s": merge_unchanged,
        "merge_insert_s": merge_insert,
    }


def storage_path(conn: psycopg.Connection[Any], rows: list[Any]) -> tuple[float, float, float]:
    """The project's storage path alone, on the same rows: validation + hash + COPY into
    staging (``copy_slice``), then the merge statement over products that already hold every
    row (all unchanged) and over an empty products table (all inserted)."""
    from dropship.catalog.services import _MERGE
    from dropship.catalog.staging import copy_slice
    from dropship.platforms.interfaces import ProductOption, SupplierProduct

    records = [
        SupplierProduct(
            supplier=r[0],
            supplier_sku=r[1],
            name=r[2],
            cost_price=r[3],
            shipping_fee=r[4],
            stock=r[5],
            status=r[6],
            category=r[7],
            images=tuple(json.loads(r[8])),
            options=tuple(ProductOption(**o) for o in json.loads(r[9])),
            open_market_sellable=r[11],
            adult_only=r[12],
            stock_assumed=r[13],
        )
        for r in rows
    ]
    supplier = records[0].supplier
    started = time.perf_counter()
    copy_slice(conn, 0, "bench", supplier, iter(records), chunk_rows=2000, raw_max_bytes=8192)
    conn.commit()
    stage = time.perf_counter() - started
    timings = []
    for truncate in (False, True):
        if truncate:
            conn.execute("TRUNCATE products CASCADE")
            conn.commit()
        started = time.perf_counter()
        conn.execute(_MERGE.replace(":r", "0"))
        conn.commit()
        timings.append(time.perf_counter() - started)
    conn.execute("DELETE FROM staging_products WHERE run_id = 0")
    conn.commit()
    return stage, timings[0], timings[1]


def naive(url: str, supplier: str, count: int) -> tuple[float, int]:
    from bench.collect_naive import upsert_product

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT {PRODUCT_COLUMNS} FROM products ORDER BY supplier_sku LIMIT %s", (count,)
        ).fetchall()
        conn.execute("TRUNCATE products CASCADE")
        conn.commit()
    names = [c.strip() for c in PRODUCT_COLUMNS.split(",")]
    payloads = [dict(zip(names, row, strict=True)) for row in rows]
    for payload in payloads:
        payload["price"] = int(payload["price"])
    started = time.perf_counter()
    results = [upsert_product.delay(payload) for payload in payloads]
    inserted = sum(1 for r in results if r.get(timeout=1200))
    return time.perf_counter() - started, inserted


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
    parser.add_argument("--supplier", default="gentrade")
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--naive-products", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--skip-source",
        action="store_true",
        help="skip the source-only read (it also warms the sandbox's document cache: without "
        "it the first collect includes the sandbox generating the feed)",
    )
    args = parser.parse_args()

    admin_url, url = fresh_database(args.database_url)
    sandbox, base_url = start_sandbox(args.products)
    env = bench_env(base_url, url, args.redis_url)
    os.environ.update(env)
    from dropship import migrate
    from dropship.celery_app import app

    migrate.upgrade(url)
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    result: dict[str, Any] = {"supplier": args.supplier, "products": args.products}
    try:
        if not args.skip_source:
            seconds, count = source_only(base_url, args.supplier)
            result["source_only"] = {"seconds": seconds, "records": count}
            print(f"source only: {count} records in {seconds:.1f} s", flush=True)
            if feed_cache_hits(base_url, args.supplier) is not None:
                # Again, now that the sandbox resends its cached document (what the collect
                # runs below read): the connector's own ceiling.
                seconds, count = source_only(base_url, args.supplier)
                result["source_only_cached"] = {"seconds": seconds, "records": count}
                print(f"source only, cached feed: {count} records in {seconds:.1f} s", flush=True)
        worker = Worker(env, "low", args.concurrency, logs / "bench-collect-worker.log")
        try:
            worker.wait_ready(app)
            for label in ("first", "second"):
                hits = feed_cache_hits(base_url, args.supplier)
                seconds, run = collect_run(url, args.supplier, worker)
                result[f"collect_{label}"] = {"seconds": seconds, **run}
                if hits is not None:
                    # Whether the sandbox resent its cached document or generated it again.
                    served = (feed_cache_hits(base_url, args.supplier) or 0) - hits
                    result[f"collect_{label}"]["sandbox_cache_hits"] = served
                print(f"collect {label}: {seconds:.1f} s {run}", flush=True)
            result["worker_peak_rss_mb"] = worker.peak_rss / 2**20
            result["worker_peak_pss_mb"] = worker.peak_pss / 2**20
        finally:
            worker.stop()
        result["db"] = db_comparisons(url)
        print(f"db comparisons: {result['db']}", flush=True)
        naive_worker = Worker(env, "medium", args.concurrency, logs / "bench-naive-worker.log")
        try:
            naive_worker.wait_ready(app)
            seconds, inserted = naive(url, args.supplier, args.naive_products)
            result["naive"] = {
                "seconds": seconds,
                "products": args.naive_products,
                "inserted": inserted,
            }
            print(f"naive: {result['naive']}", flush=True)
        finally:
            naive_worker.stop()
    finally:
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
    n = r["products"]
    first = r["collect_first"]
    second = r["collect_second"]
    e2e = first["records"] / first["seconds"]
    rows = []
    if "source_only" in r:
        s = r["source_only"]
        rows.append(
            (
                "source only (sandbox + HTTP + parse, nothing stored)",
                s["records"],
                s["seconds"],
                s["records"] / s["seconds"],
            )
        )
    if "source_only_cached" in r:
        s = r["source_only_cached"]
        rows.append(
            (
                "source only, sandbox resending its cached document (HTTP + parse)",
                s["records"],
                s["seconds"],
                s["records"] / s["seconds"],
            )
        )
    rows.append(
        (
            "**collect, first run** (chord + COPY + merge, end to end)",
            first["records"],
            first["seconds"],
            e2e,
        )
    )
    rows.append(
        (
            "collect, second identical run (updates nothing)",
            second["records"],
            second["seconds"],
            second["records"] / second["seconds"],
        )
    )
    db = r["db"]
    rows.append(
        (
            "bare COPY of the same rows (database only)",
            db["rows"],
            db["bare_copy_s"],
            db["rows"] / db["bare_copy_s"],
        )
    )
    rows.append(
        (
            "psycopg executemany upsert (database only)",
            db["rows"],
            db["executemany_s"],
            db["rows"] / db["executemany_s"],
        )
    )
    rows.append(
        (
            "storage path only: validate + hash + COPY into staging",
            db["rows"],
            db["stage_copy_s"],
            db["rows"] / db["stage_copy_s"],
        )
    )
    rows.append(
        (
            "storage path only: merge, every row unchanged",
            db["rows"],
            db["merge_unchanged_s"],
            db["rows"] / db["merge_unchanged_s"],
        )
    )
    rows.append(
        (
            "storage path only: merge into empty products",
            db["rows"],
            db["merge_insert_s"],
            db["rows"] / db["merge_insert_s"],
        )
    )
    nv = r["naive"]
    rows.append(
        (
            "naive: one Celery task + ORM upsert per product",
            nv["products"],
            nv["seconds"],
            nv["products"] / nv["seconds"],
        )
    )
    print(f"\n{r['supplier']}, {n:,} products in the sandbox catalog\n")
    print("| path | products | seconds | products/s | collect first run is |")
    print("|---|---:|---:|---:|---:|")
    for label, count, seconds, rate in rows:
        print(f"| {label} | {count:,} | {seconds:.1f} | {rate:,.0f} | {e2e / rate:.2f}x |")
    print(
        f"\nfirst/second run time: {first['seconds'] / second['seconds']:.2f}x; second run: "
        f"inserted {second['inserted']}, updated {second['updated']}, unchanged "
        f"{second['unchanged']} (not parsed: {second['unparsed']}); worker tree peak RSS "
        f"{r['worker_peak_rss_mb']:.0f} MB, "
        f"PSS {r['worker_peak_pss_mb']:.0f} MB ({platform.node()}, {os.cpu_count()} CPUs)"
    )
    hits = [r[k].get("sandbox_cache_hits") for k in ("collect_first", "collect_second")]
    if hits != [None, None]:
        print(
            f"collect runs served from the sandbox's cached document: first {hits[0]}, "
            f"second {hits[1]} (1 = the document was resent, 0 = generated)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
