"""Recovery: a worker killed with SIGKILL mid-slice, a chord body that never runs, the same
slice executed twice at once. Each run still ends merged (or failed with a reason), with no
product lost or duplicated."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from celery import group
from sqlalchemy import Engine, text

from dropship.catalog import services
from dropship.platforms.interfaces import SupplierProduct
from tests.catalog.conftest import (
    SandboxFixture,
    product_rows,
    run_row,
    staging_count,
    wait_for_run,
    worker_env,
)
from tests.conftest import WorkerProcess, start_worker, stop_worker

pytestmark = pytest.mark.worker


def valid_skus(make_connector: Any, account: str) -> set[str]:
    return {
        r.supplier_sku
        for r in make_connector(account).iter_products()
        if isinstance(r, SupplierProduct)
    }


def test_worker_killed_mid_slice_then_sweep_finishes_the_run(
    tmp_path: Path,
    frozen_world_clock: SandboxFixture,
    redis_url: str,
    committed_db: Engine,
    make_connector: Any,
) -> None:
    from tasks.collect import collect_supplier, publish_slices

    sandbox = frozen_world_clock
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 2000})
    expected = valid_skus(make_connector, "gentrade_main")
    # Every feed request waits 4 s before answering: the slices (one per feed shard, one
    # worker process each) are surely in flight when killed.
    sandbox.set_faults("gentrade", slow_ms=4000)
    env = worker_env(sandbox)
    doomed = start_worker(tmp_path, queues="low", concurrency=2, name="doomed", env=env)
    try:
        started = collect_supplier.delay("gentrade", "gentrade_main").get(timeout=60)
        run_id = started["run_id"]
        with committed_db.connect() as conn:
            deadline = time.monotonic() + 30
            while not conn.execute(
                text("SELECT bool_and(attempts > 0) FROM collect_run_slices WHERE run_id = :r"),
                {"r": run_id},
            ).scalar():
                assert time.monotonic() < deadline, doomed.log()[-3000:]
                time.sleep(0.1)
                conn.rollback()
        os.killpg(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait(10)
    finally:
        stop_worker(doomed)
    assert run_row(committed_db, run_id)["status"] == "running"
    assert staging_count(committed_db, run_id) == 0  # the killed slices' rows rolled back

    # The lost message would come back only after the broker's visibility timeout (an hour);
    # the sweep sees the run stalled and publishes its unfinished slices again.
    sandbox.set_faults("gentrade", slow_ms=0)
    actions = services.sweep_runs(stall_timeout_s=0)
    assert list(actions["resubmit"]) == [run_id]
    rescuer = start_worker(tmp_path, queues="low", concurrency=2, name="rescuer", env=env)
    try:
        for key in actions["resubmit"].values():
            publish_slices(run_id, key)
        run = wait_for_run(committed_db, run_id, worker=rescuer)
    finally:
        stop_worker(rescuer)
    assert run["status"] == "succeeded", run
    assert run["resubmits"] == 1
    assert run["inserted"] == len(expected) == run["records"]
    assert set(product_rows(committed_db, "gentrade")) == expected
    assert staging_count(committed_db) == 0


def test_lost_chord_body_is_merged_by_the_sweep(
    frozen_world_clock: SandboxFixture,
    collect_worker: WorkerProcess,
    committed_db: Engine,
    make_connector: Any,
) -> None:
    from tasks.collect import collect_slice, sweep_runs

    sandbox = frozen_world_clock
    sandbox.configure_suppliers(catalog_sizes={"ownerclan": 200})
    expected = valid_skus(make_connector, "ownerclan_main")
    run_id = services.open_run("ownerclan", "ownerclan_main")["run_id"]
    keys = services.plan_run(run_id, make_connector)
    # The header without its body: as if the chord's body message or counter were lost.
    group(collect_slice.si(run_id, key) for key in keys).apply_async().get(timeout=60)
    run = run_row(committed_db, run_id)
    assert (run["status"], run["slices_done"]) == ("running", len(keys))
    assert product_rows(committed_db, "ownerclan") == {}

    sweep = sweep_runs.delay().get(timeout=30)
    assert sweep["merge"] == [run_id]
    run = wait_for_run(committed_db, run_id, worker=collect_worker)
    assert run["status"] == "succeeded", run
    assert run["inserted"] == len(expected)
    assert set(product_rows(committed_db, "ownerclan")) == expected
    # Merging again (a late chord body, a second sweep) changes nothing.
    assert services.merge_run(run_id)["skipped"] == "run is succeeded"


def test_same_slice_twice_at_once_is_staged_once(
    frozen_world_clock: SandboxFixture, committed_db: Engine, make_connector: Any
) -> None:
    sandbox = frozen_world_clock
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 400})
    sandbox.set_faults("gentrade", slow_ms=500)
    run_id = services.open_run("gentrade", "gentrade_main")["run_id"]
    keys = services.plan_run(run_id, make_connector)
    results: list[dict[str, Any]] = []

    def redelivered(key: str) -> None:
        results.append(services.run_slice(run_id, key, make_connector))

    threads = [threading.Thread(target=redelivered, args=(k,)) for k in keys for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(1 for r in results if r.get("skipped") == "already done") == len(keys)
    run = run_row(committed_db, run_id)
    expected = valid_skus(make_connector, "gentrade_main")
    assert run["records"] == len(expected) == staging_count(committed_db, run_id)
    assert services.merge_run(run_id)["inserted"] == len(expected)


def test_slice_failing_for_good_ends_the_run_failed_with_its_reason(
    tmp_path: Path, sandbox: SandboxFixture, redis_url: str, committed_db: Engine
) -> None:
    from dropship.sandbox.credentials import sandbox_account_config
    from tasks.collect import collect_supplier

    accounts = sandbox_account_config(sandbox.base_url)
    accounts["gentrade_main"]["credentials"] = {"id": "dropship", "key": "not-the-key-1234"}
    env = worker_env(sandbox, DROPSHIP_PLATFORMS__ACCOUNTS=json.dumps(accounts))
    worker = start_worker(tmp_path, queues="low", concurrency=1, name="badkey", env=env)
    try:
        run_id = collect_supplier.delay("gentrade", "gentrade_main").get(timeout=60)["run_id"]
        # The permanent error fails the slice at once (no retries); the slice task's failure
        # handler records it and publishes the merge, which fails the run with the reason.
        run = wait_for_run(committed_db, run_id, worker=worker)
    finally:
        stop_worker(worker)
    assert run["status"] == "failed", run
    assert re.match(r"every slice failed: [\w:/]+: PermanentError", run["error"]), run["error"]
    assert "not-the-key-1234" not in run["error"]
    assert staging_count(committed_db) == 0 and product_rows(committed_db, "gentrade") == {}
