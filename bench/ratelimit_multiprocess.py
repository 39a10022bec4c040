"""Shared Redis limiter vs per-process limiting, N processes calling one sandbox platform flat out.

    uv run python bench/ratelimit_multiprocess.py --processes 4 --limit 20 --seconds 3

Modes (each in its own fresh sandbox bucket and Redis key):

* ``shared``      — the project's path: one GCRA limiter in Redis for the account.
* ``per-process`` — what Celery's ``rate_limit`` gives: each process paces itself at the limit
  (its own key), so together they go N times too fast and the platform answers 429.

Prints calls, achieved rate vs the limit, and the sandbox's rate-limit violations per mode.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
import requests

from dropship.embedded.redis import EmbeddedRedis, find_redis_server
from dropship.embedded.system import service_user
from dropship.errors import DropshipError
from dropship.platforms.http import PlatformHttp
from dropship.platforms.ratelimit import RateLimit, RateLimiter
from dropship.sandbox.core import SandboxConfig, SandboxServer


def worker(
    redis_url: str, base_url: str, account: str, limit: int, seconds: float, barrier: Any, out: Any
) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = RateLimiter(client, {"coupang": RateLimit(limit, 1.0)}, max_wait_s=1.0)
    http = PlatformHttp("coupang", account, base_url, limiter, timeout=(2, 5), max_attempts=1)
    ok = rejected = 0
    barrier.wait(30)
    started = time.time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            http.get("/_echo")
            ok += 1
        except DropshipError:
            rejected += 1
    # The last call may have waited for a slot past the deadline: the rate is measured over
    # the span the calls really took, not the nominal run length.
    out.put((ok, rejected, started, time.time()))
    client.close()


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    run_as = service_user()
    with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp:
        Path(tmp).chmod(0o755)
        server = EmbeddedRedis(
            Path(tmp) / "redis", run_as, find_redis_server(run_as, []), persist=False
        )
        server.start()
        try:
            yield server.url(0)
        finally:
            server.stop()


def run_mode(mode: str, args: argparse.Namespace, server: SandboxServer) -> dict[str, Any]:
    requests.post(f"{server.base_url}/_sandbox/reset", timeout=5).raise_for_status()
    requests.post(
        f"{server.base_url}/_sandbox/rate_limits",
        json={"coupang": {"calls": args.limit, "period_s": 1, "burst": args.limit // 2}},
        timeout=5,
    ).raise_for_status()
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(args.processes), ctx.Queue()
    run_id = uuid.uuid4().hex[:8]
    procs = []
    for n in range(args.processes):
        account = f"bench-{run_id}" if mode == "shared" else f"bench-{run_id}-{n}"
        procs.append(
            ctx.Process(
                target=worker,
                args=(
                    args.redis_url,
                    f"{server.base_url}/coupang",
                    account,
                    args.limit,
                    args.seconds,
                    barrier,
                    out,
                ),
            )
        )
    for proc in procs:
        proc.start()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(10)
    counts = requests.get(f"{server.base_url}/_sandbox/counts", timeout=5).json()
    served = sum(r[0] for r in results)
    span = max(r[3] for r in results) - min(r[2] for r in results)
    return {
        "mode": mode,
        "calls_ok": served,
        "rate": served / span,
        "violations": counts["rate_limit_violations"]["coupang"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url", default=None, help="default: start an embedded Redis for the run"
    )
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--limit", type=int, default=20, help="calls per second")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    logging.getLogger("tornado.access").setLevel(logging.ERROR)  # one line per 429 otherwise
    with contextlib.ExitStack() as stack:
        if args.redis_url is None:
            args.redis_url = stack.enter_context(embedded_redis())
        server = stack.enter_context(SandboxServer(SandboxConfig()))
        print(f"{args.processes} processes, limit {args.limit}/s, {args.seconds:.0f}s per mode")
        for mode in ("shared", "per-process"):
            r = run_mode(mode, args, server)
            print(
                f"{r['mode']:>12}: {r['calls_ok']:5d} calls ok, {r['rate']:6.1f}/s "
                f"({r['rate'] / args.limit:5.0%} of the limit), violations {r['violations']}"
            )


if __name__ == "__main__":
    main()
