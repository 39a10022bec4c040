"""A Zentrade full run read in feed shards (``feed_shards``): each slice streams the whole
document and stores only the products of its shard. Together they store every valid product
once and every reject once, duplicates are caught across the whole document, the counts add up,
and a shard that fails leaves the run partial or failed with its reason and nothing marked gone.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, text

from dropship.catalog import services
from dropship.errors import TransientError
from dropship.platforms.gentrade import feed_shard
from dropship.platforms.interfaces import InvalidRecord, SupplierProduct
from dropship.sandbox.credentials import sandbox_account_config
from tests.catalog.conftest import (
    SandboxFixture,
    product_rows,
    reject_rows,
    staging_count,
    wait_for_run,
    worker_env,
)
from tests.conftest import WorkerProcess, start_worker, stop_worker

ACCOUNT = "gentrade_main"


def read_catalog(make_connector: Any) -> tuple[dict[str, SupplierProduct], list[InvalidRecord]]:
    """The catalog as one whole read parses it (``iter_products`` is never sharded)."""
    records = list(make_connector(ACCOUNT).iter_products())
    valid = {r.supplier_sku: r for r in records if isinstance(r, SupplierProduct)}
    assert len(valid) == sum(isinstance(r, SupplierProduct) for r in records)
    return valid, [r for r in records if isinstance(r, InvalidRecord)]


def collect(engine: Engine, worker: WorkerProcess) -> dict[str, Any]:
    from tasks.collect import collect_supplier

    started = collect_supplier.delay("gentrade", ACCOUNT).get(timeout=60)
    return wait_for_run(engine, started["run_id"], worker=worker, timeout=180)


def slice_rows(engine: Engine, run_id: int) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM collect_run_slices WHERE run_id = :r"), {"r": run_id}
        ).all()
    return {row.slice_key: dict(row._mapping) for row in rows}


def reject_counter(rows: list[dict[str, Any]]) -> Counter[tuple[Any, str]]:
    return Counter((r["supplier_sku"], r["reason"]) for r in rows)


@pytest.mark.worker
def test_sharded_collect_of_a_hostile_feed_stores_every_record_once(
    tmp_path: Path,
    frozen_world_clock: SandboxFixture,
    redis_url: str,
    collect_db: Engine,
    make_connector: Any,
) -> None:
    sandbox = frozen_world_clock
    size, shards = 600, 3
    sandbox.configure_suppliers(catalog_sizes={"gentrade": size})
    requests.post(
        f"{sandbox.base_url}/_sandbox/gentrade", json={"hostile_every": 11}, timeout=5
    ).raise_for_status()
    valid, invalid = read_catalog(make_connector)
    duplicates = [r for r in invalid if r.reason.startswith("duplicate product code")]
    assert duplicates and len(invalid) > 40
    accounts = sandbox_account_config(sandbox.base_url)
    accounts[ACCOUNT]["options"] = {"feed_shards": str(shards)}
    env = worker_env(sandbox, DROPSHIP_PLATFORMS__ACCOUNTS=json.dumps(accounts))
    worker = start_worker(tmp_path, queues="low", concurrency=2, name="shards", env=env)
    try:
        first = collect(collect_db, worker)
        assert first["status"] == "succeeded", first
        assert first["slices_expected"] == first["slices_done"] == shards
        assert (first["records"], first["rejected"], first["unparsed"]) == (
            len(valid),
            len(invalid),
            0,
        )
        assert (first["inserted"], first["updated"], first["gone"]) == (len(valid), 0, 0)
        products = product_rows(collect_db, "gentrade")
        assert set(products) == set(valid)
        for sku, product in products.items():
            assert (product["price"], product["stock"], product["status"]) == (
                valid[sku].cost_price,
                valid[sku].stock,
                valid[sku].status,
            )
        rejects = reject_rows(collect_db, first["id"])
        expected_rejects = Counter((r.supplier_sku, r.reason) for r in invalid)
        assert reject_counter(rejects) == expected_rejects  # each once, none lost
        slices = slice_rows(collect_db, first["id"])
        for shard in range(shards):
            key = f"feed:{shard}/{shards}"
            mine = sum(1 for sku in valid if feed_shard(sku, shards) == shard)
            assert slices[key]["records"] == mine > 0, (key, slices[key])
        for reject in rejects:
            if reject["reason"].startswith("duplicate product code"):
                # next to the copy it repeats: the check saw both
                shard = feed_shard(reject["supplier_sku"], shards)
                assert reject["slice_key"] == f"feed:{shard}/{shards}"
            elif "no </product>" in reject["reason"]:
                assert reject["slice_key"] == f"feed:0/{shards}"  # no record: shard 0's
        assert staging_count(collect_db) == 0

        # The second identical run: every valid record taken as unchanged in its own shard,
        # the same rejects once each.
        second = collect(collect_db, worker)
        assert second["status"] == "succeeded", second
        assert (second["inserted"], second["updated"], second["unchanged"], second["gone"]) == (
            0,
            0,
            len(valid),
            0,
        )
        assert (second["records"], second["unparsed"], second["rejected"]) == (
            len(valid),
            len(valid),
            len(invalid),
        )
        assert reject_counter(reject_rows(collect_db, second["id"])) == expected_rejects
    finally:
        stop_worker(worker)


def cut_feed(sandbox: SandboxFixture, after: int | None) -> None:
    requests.post(
        f"{sandbox.base_url}/_sandbox/gentrade", json={"cut_after_products": after}, timeout=5
    ).raise_for_status()


def test_a_failed_shard_leaves_the_run_partial_or_failed_and_nothing_gone(
    frozen_world_clock: SandboxFixture, collect_db: Engine, make_connector: Any
) -> None:
    sandbox, engine = frozen_world_clock, collect_db
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 300})
    run_id = services.open_run("gentrade", ACCOUNT)["run_id"]
    keys = services.plan_run(run_id, make_connector)
    assert keys == ["feed:0/2", "feed:1/2"]
    for key in keys:
        services.run_slice(run_id, key, make_connector)
    assert services.merge_run(run_id, make_connector)["inserted"] == 300
    before = product_rows(engine, "gentrade")

    # The supplier drops 10 products, and the second shard's read of the document is cut.
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 290})
    run_id = services.open_run("gentrade", ACCOUNT)["run_id"]
    keys = services.plan_run(run_id, make_connector)
    services.run_slice(run_id, keys[0], make_connector)
    cut_feed(sandbox, 100)
    with pytest.raises(TransientError, match="cut short"):
        services.run_slice(run_id, keys[1], make_connector)
    assert staging_count(engine, run_id) == slice_rows(engine, run_id)[keys[0]]["records"] > 0
    # What the slice task does once its retries are spent:
    assert services.fail_slice(run_id, keys[1], "TransientError: response body cut short")
    counts = services.merge_run(run_id, make_connector)
    assert (counts["status"], counts["complete"], counts["gone"]) == ("partial", False, 0)
    assert "feed:1/2" in counts["error"] and "cut short" in counts["error"]
    after = product_rows(engine, "gentrade")
    assert set(after) == set(before) and all(p["status"] != "gone" for p in after.values())

    # Every shard cut: the run fails with the reasons, nothing merged, nothing gone.
    run_id = services.open_run("gentrade", ACCOUNT)["run_id"]
    keys = services.plan_run(run_id, make_connector)
    for key in keys:
        with pytest.raises(TransientError):
            services.run_slice(run_id, key, make_connector)
        services.fail_slice(run_id, key, "TransientError: response body cut short")
    counts = services.merge_run(run_id, make_connector)
    assert counts["status"] == "failed"
    run = services.get_run(run_id)
    assert run["status"] == "failed" and "every slice failed" in run["error"]
    assert "feed:0/2" in run["error"] and "feed:1/2" in run["error"]
    assert product_rows(engine, "gentrade") == after
    assert staging_count(engine) == 0

    # Whole again: the removed ones (and only they) are marked gone.
    cut_feed(sandbox, None)
    run_id = services.open_run("gentrade", ACCOUNT)["run_id"]
    for key in services.plan_run(run_id, make_connector):
        services.run_slice(run_id, key, make_connector)
    counts = services.merge_run(run_id, make_connector)
    assert (counts["status"], counts["gone"]) == ("succeeded", 10)


def test_a_run_whose_staged_rows_were_lost_fails_instead_of_marking_them_gone(
    frozen_world_clock: SandboxFixture, collect_db: Engine, make_connector: Any
) -> None:
    """staging_products is UNLOGGED: a database crash between the slices and the merge empties
    it while the slices stay done. The merge must not take that for a catalog gone empty."""
    sandbox = frozen_world_clock
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 120})
    for lose in (False, True):
        run_id = services.open_run("gentrade", ACCOUNT)["run_id"]
        keys = services.plan_run(run_id, make_connector)
        for key in keys:
            services.run_slice(run_id, key, make_connector)
        if lose:  # what crash recovery does to an unlogged table
            with collect_db.begin() as conn:
                conn.execute(
                    text("DELETE FROM staging_products WHERE run_id = :r AND slice_key = :k"),
                    {"r": run_id, "k": keys[1]},
                )
        counts = services.merge_run(run_id, make_connector)
        if not lose:
            assert counts["status"] == "succeeded" and counts["inserted"] == 120
    run = services.get_run(run_id)
    assert run["status"] == "failed" and "feed:1/2" in run["error"], run
    assert "unlogged staging" in run["error"]
    rows = product_rows(collect_db, "gentrade")
    assert len(rows) == 120 and all(p["status"] != "gone" for p in rows.values())
    assert staging_count(collect_db) == 0
