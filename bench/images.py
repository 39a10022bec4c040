"""Image processing throughput and memory: the project's path against a naive loop, one run.

    uv run python bench/images.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/15 [--images 2000] [--concurrency 2]

Renders ``--images`` supplier images once into a folder (kept between runs, keyed by count and
seed: the sandbox's own generator, mixed sizes up to 4000 px: 55 % 500-1200 px, 30 % 1200-2500,
15 % 2500-4000, as JPEG and some PNG) and serves them with the stack's static image server in
its own process, so rendering costs nothing during the measurements. Products reference them
(1-3 images each, 10 % of the references shared with another product). Then, on a fresh
database:

1. **project, first run**: ``publish_batches`` of every product id to a worker consuming
   ``low`` with ``--concurrency`` children, until every image is settled; images/s, and peak
   RSS and PSS of the worker tree (parent + children) sampled every 0.1 s;
2. **project, second run**: ``process_sweep`` again: it must find nothing to do (the time is
   the sweep's query and an empty publish);
3. **naive loop** in a separate process: for each URL, download, ``Image.open``, convert,
   resize to fit 1000 px, save a JPEG; one at a time, no cache, no dedup; peak RSS sampled.

Prints a Markdown table and a JSON line (paste into docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "bench"))

from collect import Worker, fresh_database  # noqa: E402  (bench/collect.py)

SEED = 7


def image_specs(count: int) -> list[tuple[str, int, int, str]]:
    """(name, width, height, kind) of every source image, from the seed."""
    rng = random.Random(f"{SEED}:images:{count}")
    specs = []
    for n in range(count):
        roll = rng.random()
        low, high = (500, 1200) if roll < 0.55 else (1200, 2500) if roll < 0.85 else (2500, 4000)
        width, height = rng.randint(low, high), rng.randint(low, high)
        kind = "png" if rng.random() < 0.1 else "jpeg"
        specs.append((f"src-{n:05d}.{'png' if kind == 'png' else 'jpg'}", width, height, kind))
    return specs


def render_sources(folder: Path, count: int) -> list[str]:
    from dropship.sandbox.images import render

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    started = time.perf_counter()
    for n, (name, width, height, kind) in enumerate(image_specs(count)):
        path = folder / name
        if not path.exists():
            data, _ = render(kind, f"bench-{n}", width, height)
            render.cache_clear()  # keep the renderer's memory flat over 2,000 images
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        names.append(name)
    print(f"sources ready in {time.perf_counter() - started:.1f} s ({folder})", flush=True)
    return names


def start_file_server(folder: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dropship.images.server", "--dir", str(folder), "--port", "0"],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"file server did not start: {line!r}")
    return process, line.split("listening on ", 1)[1].split(" ", 1)[0]


def insert_products(url: str, image_urls: list[str]) -> list[int]:
    rng = random.Random(f"{SEED}:products")
    rows, position = [], 0
    while position < len(image_urls):
        take = rng.randint(1, 3)
        own = image_urls[position : position + take]
        position += take
        if rng.random() < 0.1:  # shares one image of another product
            own = [*own, image_urls[rng.randrange(len(image_urls))]]
        rows.append(own)
    with psycopg.connect(url, autocommit=True) as conn:
        ids = []
        for n, own in enumerate(rows):
            ids.append(
                conn.execute(
                    "INSERT INTO products (supplier, supplier_sku, name, price, shipping_fee, "
                    "stock, status, category, options, images) VALUES ('ownerclan', %s, "
                    "'bench', 9000, 0, 5, 'active', 'KITCHEN', '[]', %s) RETURNING id",
                    (f"IMG{n}", json.dumps(own)),
                ).fetchone()[0]  # type: ignore[index]
            )
    return ids


def project_run(ids: list[int], worker: Worker, timeout: float) -> dict[str, Any]:
    from datetime import UTC, datetime

    from dropship.images import services
    from tasks.images import publish_batches

    since = datetime.now(UTC)
    started = time.perf_counter()
    batches = publish_batches(ids)
    state: dict[str, int] = {}
    while time.perf_counter() - started < timeout:
        worker.sample()
        state = services.batch_progress(ids, since)
        if state["done"] >= state["total"]:
            break
        # The progress query itself costs database CPU: look once a second, sample RSS between.
        for _ in range(10):
            worker.sample()
            time.sleep(0.1)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "batches": batches, **state}


NAIVE_CHILD = """
import io, sys, time, pathlib, requests
from PIL import Image
urls = sys.stdin.read().split()
out = pathlib.Path(sys.argv[1])
ok = failed = 0
started = time.perf_counter()
for n, url in enumerate(urls):
    try:
        data = requests.get(url, timeout=30).content
        im = Image.open(io.BytesIO(data)).convert("RGB")
        im.thumbnail((1000, 1000))
        im.save(out / f"{n}.jpg", "JPEG", quality=88)
        ok += 1
    except Exception:
        failed += 1
print(f"{time.perf_counter() - started} {ok} {failed}")
"""


def naive_run(urls: list[str], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", NAIVE_CHILD, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("\n".join(urls))
    process.stdin.close()
    peak = 0
    ps = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.1)
    seconds, ok, failed = process.stdout.read().split()
    return {
        "seconds": float(seconds),
        "ok": int(ok),
        "failed": int(failed),
        "peak_rss_mb": peak / 2**20,
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
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    scratch = Path(tempfile.gettempdir()) / "dropship-bench-images"
    sources = scratch / f"sources-{args.images}-{SEED}"
    names = render_sources(sources, args.images)
    server, base = start_file_server(sources)
    urls = [f"{base}/{name}" for name in names]
    store_dir = scratch / f"store-{uuid.uuid4().hex[:6]}"
    store_server, store_base = start_file_server(store_dir)
    admin_url, url = fresh_database(args.database_url)
    env = {
        **os.environ,
        "DROPSHIP_DATABASE_URL": url,
        "DROPSHIP_REDIS_URL": args.redis_url,
        "DROPSHIP_LOG_LEVEL": "WARNING",
        "DROPSHIP_IMAGES__LOCAL_DIR": str(store_dir),
        "DROPSHIP_IMAGES__PUBLIC_BASE_URL": store_base,
    }
    env.pop("DROPSHIP_RESULT_BACKEND_URL", None)
    os.environ.update(env)
    from dropship import migrate
    from dropship.celery_app import app

    migrate.upgrade(url)
    result: dict[str, Any] = {
        "images": args.images,
        "concurrency": args.concurrency,
        "machine": f"{platform.machine()} {psutil.cpu_count()} cpu, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
    }
    try:
        ids = insert_products(url, urls)
        result["products"] = len(ids)
        worker = Worker(env, "low", args.concurrency, scratch / "bench-images-worker.log")
        try:
            worker.wait_ready(app)
            worker.peak_rss = worker.peak_pss = 0
            first = project_run(ids, worker, args.timeout)
            first["peak_rss_mb"] = worker.peak_rss / 2**20
            first["peak_pss_mb"] = worker.peak_pss / 2**20
            result["project_first"] = first
            print(f"project, first run: {first}", flush=True)
            from tasks.images import process_sweep

            started = time.perf_counter()
            sweep = process_sweep.delay().get(timeout=120)
            files_before = sum(1 for p in store_dir.rglob("*") if p.is_file())
            result["project_second"] = {
                "seconds": time.perf_counter() - started,
                **sweep,
                "stored_files": files_before,
            }
            print(f"project, second run: {result['project_second']}", flush=True)
        finally:
            worker.stop()
        if not args.skip_naive:
            result["naive"] = naive_run(urls, scratch / f"naive-{uuid.uuid4().hex[:6]}")
            print(f"naive loop: {result['naive']}", flush=True)
    finally:
        for proc in (server, store_server):
            proc.terminate()
            proc.wait(30)
        from dropship import db

        db.reset_engine()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    print_table(result)
    print(json.dumps(result, default=str))
    return 0


def print_table(r: dict[str, Any]) -> None:
    n = r["images"]
    first, second = r["project_first"], r["project_second"]
    print(f"\n{n} source images, {r['products']} products, {r['machine']}\n")
    print("| path | seconds | images/s | peak RSS (MB) | notes |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| project, first run ({r['concurrency']} worker children) | {first['seconds']:.1f} | "
        f"{first['total'] / first['seconds']:.1f} | {first['peak_rss_mb']:.0f} (PSS "
        f"{first['peak_pss_mb']:.0f}) | {first['ok']} stored, {first['failed']} refused, "
        f"{first['total']} distinct URLs |"
    )
    print(
        f"| project, second run | {second['seconds']:.2f} | - | - | "
        f"{second['products']} products to do, {second['batches']} batches |"
    )
    if "naive" in r:
        naive = r["naive"]
        print(
            f"| naive loop (1 process) | {naive['seconds']:.1f} | "
            f"{(naive['ok'] + naive['failed']) / naive['seconds']:.1f} | "
            f"{naive['peak_rss_mb']:.0f} | {naive['ok']} saved, {naive['failed']} failed |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
