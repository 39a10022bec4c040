"""The order tasks with real worker processes consuming ``high`` against the sandbox: the sweep
task stores, acknowledges and forwards every matched item once; the same ``forward_order``
message handed to two workers at the same instant buys once; no receiver's name, phone or
address reaches a worker log or a task result."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.catalog.conftest import worker_env
from tests.conftest import start_worker, stop_worker
from tests.orders.conftest import (
    Catalog,
    SandboxFixture,
    insert_product,
    list_products,
    market_orders,
    order_rows,
    purchase_counts,
    sandbox_items,
    sellable,
)

pytestmark = pytest.mark.worker


@pytest.fixture
def catalog(rules_db: Engine, accounts: None, make_connector: Callable[[str], Any]) -> Catalog:
    plain = sandbox_items(make_connector, lambda p: sellable(p) and not p.options, 1)[0]
    optioned = sandbox_items(make_connector, lambda p: sellable(p) and len(p.options) >= 2, 1)[0]
    return list_products(
        rules_db,
        make_connector,
        {"plain": insert_product(rules_db, plain), "optioned": insert_product(rules_db, optioned)},
    )


def wait_until(check: Callable[[], bool], what: str, log: Callable[[], str], timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}\n{log()[-4000:]}"
        time.sleep(0.2)


def test_sweep_task_acknowledges_and_forwards_each_item_once_without_pii_in_logs(
    sandbox: SandboxFixture,
    catalog: Catalog,
    rules_db: Engine,
    tmp_path: Path,
    redis_url: str,
) -> None:
    for account in ("coupang_main", "naver_main"):
        market_orders(sandbox, account, catalog.skus[(account, "plain")], count=3)
        market_orders(sandbox, account, catalog.skus[(account, "optioned")], count=3)
        market_orders(sandbox, account, None, count=1)
    worker = start_worker(tmp_path, queues="high", concurrency=2, env=worker_env(sandbox))
    try:
        from tasks.orders import sweep_orders

        summary = sweep_orders.delay().get(timeout=60)
        assert {s["account"] for s in summary} >= {"coupang_main", "naver_main"}

        def done() -> bool:
            rows = [r for r in order_rows(rules_db) if r["status"] != "unmatched"]
            return len(rows) == 12 and all(
                r["status"] == "forwarded" and r["acknowledged_at"] for r in rows
            )

        wait_until(done, "not all forwarded and acknowledged", worker.log)
        rows = order_rows(rules_db)
        assert sorted(r["status"] for r in rows).count("unmatched") == 2
        keys = [r["order_key"] for r in rows if r["status"] == "forwarded"]
        assert purchase_counts(sandbox, keys) == [1] * 12
        # At the markets: acknowledged (Coupang INSTRUCT, Naver placeOrderStatus OK).
        sheets = sandbox._admin("GET", "coupang/orders")["orders"]
        ours = {r["market_order_id"] for r in rows if r["status"] == "forwarded"}
        assert all(s["status"] == "INSTRUCT" for s in sheets if str(s["shipmentBoxId"]) in ours)
        naver = sandbox._admin("GET", "naver/orders")["productOrders"]
        assert all(
            p["productOrder"]["placeOrderStatus"] == "OK"
            for p in naver
            if p["productOrder"]["productOrderId"] in ours
        )
        # Nothing personal in the worker's log or in what the tasks returned.
        log = worker.log()
        with rules_db.connect() as conn:
            results = " ".join(
                str(v)
                for v in conn.execute(
                    text("SELECT task_id FROM order_events WHERE task_id IS NOT NULL")
                ).scalars()
            )
        assert results  # events name the tasks that made them
        for r in rows:
            for field in ("receiver_name", "receiver_phone", "receiver_address"):
                assert r[field] and r[field] not in log, field
            assert r["receiver_phone"] not in str(summary)
    finally:
        stop_worker(worker)


def test_same_forward_message_to_two_workers_at_once_buys_once(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
    tmp_path: Path,
    redis_url: str,
) -> None:
    from dropship.orders import services

    market_orders(sandbox, "coupang_main", catalog.skus[("coupang_main", "plain")], count=4)
    ids = services.sweep_account("coupang_main", make_connector).forward
    assert len(ids) == 4
    # Slow supplier answers: the two deliveries overlap for certain.
    sandbox.set_faults("ownerclan", slow_ms=300)
    env = worker_env(sandbox)
    workers = [
        start_worker(tmp_path, queues="high", concurrency=1, name=f"w{n}", env=env)
        for n in range(2)
    ]
    try:
        from tasks.orders import forward_order

        results = [forward_order.delay(ids), forward_order.delay(ids)]
        outcomes = [r.get(timeout=60) for r in results]
        assert sum(o["placed"] for o in outcomes) == 4, outcomes
        assert sum(o["busy"] + o["already_placed"] for o in outcomes) == 4, outcomes
        # One message each, at the same time: each worker ran one of them.
        for worker, result in zip(workers, results, strict=True):
            other = results[1] if result is results[0] else results[0]
            assert (result.id in worker.log()) != (other.id in worker.log()), worker.log()
        assert sum(o["busy"] for o in outcomes) >= 1, outcomes  # they overlapped
        keys = [r["order_key"] for r in order_rows(rules_db)]
        assert purchase_counts(sandbox, keys) == [1] * 4
        assert {r["status"] for r in order_rows(rules_db)} == {"forwarded"}
    finally:
        for w in workers:
            stop_worker(w)
