"""Worker tree memory under ``DROPSHIP_MEMORY_BUDGET``: a 100,000-product collect on the two
workers ``dropship up`` starts (``stack.worker_commands``), sized by the budget.

    uv run python bench/memory_budget.py \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/13 [--budget 1GB] [--products 100000] \\
        [--suppliers gentrade,ownerclan]

For each case (the budget's own sizing, then the same budget with MAX=1: sequential), it creates
nothing but a fresh database (dropped at the end) and a sandbox process, starts ``worker-main``
(``medium,low``, autoscaled) and ``worker-high`` exactly as ``dropship up`` does, runs a full
collect of each supplier at once while a stream of ``ping`` tasks goes through ``high`` (a
stand-in for order traffic: the order flow has no tasks yet), and samples the RSS and PSS of both
worker trees (main processes and pool children) every 0.2 s. Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.collect import bench_env, fresh_database, start_sandbox  # noqa: E402


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


def run_case(label: str, env: dict[str, str], url: str, suppliers: list[str]) -> dict[str, Any]:
    from dropship.celery_app import app
    from dropship.settings import get_settings
    from dropship.stack import worker_commands
    from tasks.collect import collect_supplier
    from tasks.diagnostics import ping
    from tests import real_workers

    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    workers = [
        real_workers.spawn(f"bench-{label}-{w.name}", w.args, logs, env)
        for w in worker_commands(settings)
    ]
    peak_rss = peak_pss = 0
    peak_children = 0
    pings = 0
    stop = threading.Event()

    def order_stand_in() -> None:
        nonlocal pings
        while not stop.is_set():
            ping.apply_async(args=["order"], queue="high").get(timeout=120)
            pings += 1
            time.sleep(0.2)

    try:
        for w in workers:
            real_workers.wait_ready(w)
        traffic = threading.Thread(target=order_stand_in, daemon=True)
        traffic.start()
        started = time.perf_counter()
        run_ids = [
            collect_supplier.delay(s, f"{s}_main").get(timeout=600)["run_id"] for s in suppliers
        ]
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                rss = pss = children = 0
                for w in workers:
                    r, p = tree(w.proc.pid)
                    rss, pss = rss + r, pss + p
                    children += len(psutil.Process(w.proc.pid).children(recursive=True))
                peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
                peak_children = max(peak_children, children)
                rows = conn.execute(
                    "SELECT supplier, status, records, inserted, rejected FROM collect_runs "
                    "WHERE id = ANY(%s)",
                    (run_ids,),
                ).fetchall()
                if all(r[1] in ("succeeded", "partial", "failed") for r in rows):
                    break
                time.sleep(0.2)
        elapsed = time.perf_counter() - started
        stop.set()
        traffic.join(30)
    finally:
        stop.set()
        for w in workers:
            real_workers.stop(w)
    c = settings.celery
    return {
        "case": label,
        "budget_mb": int(settings.memory_budget or 0) // 1_000_000,
        "autoscale": f"{c.autoscale_min}-{c.autoscale_max}",
        "max_memory_per_child_kb": c.worker_max_memory_per_child_kb,
        "copy_chunk_rows": settings.collect.copy_chunk_rows,
        "seconds": round(elapsed, 1),
        "runs": [
            {"supplier": r[0], "status": r[1], "records": r[2], "inserted": r[3], "rejected": r[4]}
            for r in rows
        ],
        "high_pings": pings,
        "peak_rss_mb": round(peak_rss / 1_000_000),
        "peak_pss_mb": round(peak_pss / 1_000_000),
        "peak_pool_children": peak_children,
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
    args = parser.parse_args()

    admin_url, url = fresh_database(args.database_url)
    sandbox, base_url = start_sandbox(args.products)
    env = bench_env(base_url, url, args.redis_url)
    env["DROPSHIP_MEMORY_BUDGET"] = args.budget
    env["DROPSHIP_LOG_LEVEL"] = "INFO"  # the workers' "ready." line and autoscale decisions
    os.environ.update(env)
    from dropship import migrate

    migrate.upgrade(url)
    suppliers = args.suppliers.split(",")
    try:
        import redis

        cases = {"sized": {}, "sequential": {"DROPSHIP_CELERY__AUTOSCALE_MAX": "1"}}
        for label in args.cases.split(","):
            extra = cases[label]
            redis.Redis.from_url(args.redis_url).flushdb()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "TRUNCATE products, collect_runs, staging_products RESTART IDENTITY CASCADE"
                )
            print(json.dumps(run_case(label, {**env, **extra}, url, suppliers)), flush=True)
    finally:
        sandbox.terminate()
        sandbox.wait(30)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


if __name__ == "__main__":
    main()
