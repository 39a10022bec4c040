"""The order tasks with two real worker processes consuming ``high`` against the sandbox (one
test, so the workers start once): the same ``forward_order`` message handed to both workers at
the same instant buys once; then the sweep task stores, acknowledges and forwards every matched
item once; no receiver's name, phone or address reaches a worker log or a task result."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from dropship.orders import services
from tests.catalog.conftest import worker_env
from tests.conftest import WorkerProcess, start_worker, stop_worker
from tests.orders.conftest import (
    Catalog,
    SandboxFixture,
    listed_catalog,
    market_orders,
    order_rows,
    purchase_counts,
)

pytestmark = pytest.mark.worker


@pytest.fixture
def catalog(rules_db: Engine, accounts: None, make_connector: Callable[[str], Any]) -> Catalog:
    return listed_catalog(rules_db, make_connector)


def wait_until(
    check: Callable[[], bool], what: Callable[[], Any], workers: list[WorkerProcess]
) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"{what()}\n" + "\n".join(
            w.log()[-3000:] for w in workers
        )
        time.sleep(0.2)


def test_order_tasks_with_two_real_workers(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
    tmp_path: Path,
    redis_url: str,
) -> None:
    from tasks.orders import forward_order, sweep_order_accounts

    market_orders(sandbox, "coupang_main", catalog.skus[("coupang_main", "plain")], count=4)
    ids = services.sweep_account("coupang_main", make_connector).forward
    assert len(ids) == 4
    env = worker_env(sandbox)
    workers = [
        # Each also consumes a queue of its own: the two copies of the message are handed one
        # to each worker (on one shared queue, one worker may reserve both).
        start_worker(tmp_path, queues=f"high,only-w{n}", concurrency=1, name=f"w{n}", env=env)
        for n in range(2)
    ]
    try:
        # --- the same message to both workers at once (slow supplier: they overlap for sure)
        sandbox.set_faults("ownerclan", slow_ms=200)
        results = [forward_order.apply_async([ids], queue=f"only-w{n}") for n in range(2)]
        outcomes = [r.get(timeout=60) for r in results]
        assert sum(o["placed"] for o in outcomes) == 4, outcomes
        # Each delivery accounts for every item: bought it, found it busy, or found it done.
        assert all(sum(o.values()) == 4 for o in outcomes), outcomes
        for worker, result in zip(workers, results, strict=True):  # one copy each ...
            assert result.id in worker.log(), worker.log()
        # ... at the same time: one met the other's lock, or each bought part of the batch.
        assert any(o["busy"] for o in outcomes) or all(o["placed"] for o in outcomes), outcomes
        first = order_rows(rules_db)
        assert purchase_counts(sandbox, [r["order_key"] for r in first]) == [1] * 4
        assert {r["status"] for r in first} == {"forwarded"}
        sandbox.set_faults("ownerclan", slow_ms=0)

        # --- the sweep task: store, match, acknowledge and forward on both markets
        ours: set[str] = set()
        for account in ("coupang_main", "naver_main"):
            ours.update(market_orders(sandbox, account, catalog.skus[(account, "plain")], count=2))
            ours.update(
                market_orders(sandbox, account, catalog.skus[(account, "optioned")], count=2)
            )
            ours.update(market_orders(sandbox, account, None, count=1))
        # Beat's entry: one sweep task per account, each in whichever worker takes it.
        summary = sweep_order_accounts.delay().get(timeout=60)
        assert set(summary) >= {"coupang_main", "naver_main"}

        # (The sandbox markets also let orders arrive by themselves for listed products: those
        # are forwarded like ours.)
        def done() -> bool:
            rows = order_rows(rules_db)
            return ours <= {r["market_order_id"] for r in rows} and all(
                r["status"] == "forwarded" and r["acknowledged_at"]
                for r in rows
                if r["status"] != "unmatched"
            )

        def state() -> tuple[Any, ...]:
            rows = order_rows(rules_db)
            return summary, [
                (r["id"], r["market"], r["status"], r["acknowledged_at"]) for r in rows
            ]

        wait_until(done, state, workers)
        rows = order_rows(rules_db)
        mine = [r for r in rows if r["market_order_id"] in ours]
        assert len(mine) == 10 and [r["status"] for r in mine].count("unmatched") == 2
        keys = [r["order_key"] for r in rows if r["status"] == "forwarded"]
        assert len(keys) >= 12 and purchase_counts(sandbox, keys) == [1] * len(keys)
        # At the markets: acknowledged (Coupang INSTRUCT, Naver placeOrderStatus OK).
        forwarded = {r["market_order_id"] for r in rows if r["status"] == "forwarded"}
        sheets = sandbox._admin("GET", "coupang/orders")["orders"]
        assert all(
            s["status"] == "INSTRUCT" for s in sheets if str(s["shipmentBoxId"]) in forwarded
        )
        naver = sandbox._admin("GET", "naver/orders")["productOrders"]
        assert all(
            p["productOrder"]["placeOrderStatus"] == "OK"
            for p in naver
            if p["productOrder"]["productOrderId"] in forwarded
        )
        # Nothing personal in the workers' logs or in what the tasks returned.
        logs = "".join(w.log() for w in workers)
        returned = f"{summary} {outcomes}"
        for r in rows:
            for field in ("receiver_name", "receiver_phone", "receiver_address"):
                assert r[field] and r[field] not in logs and r[field] not in returned, field
    finally:
        for w in workers:
            stop_worker(w)
