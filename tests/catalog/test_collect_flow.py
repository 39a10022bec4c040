"""The collect flow end to end: real worker processes, real PostgreSQL and Redis, the sandbox
over HTTP. Every valid product lands exactly once, every invalid one in product_rejects with its
reason; a second identical run changes nothing; a removed product, and only it, is marked gone.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.platforms.interfaces import InvalidRecord, SupplierProduct
from tests.catalog.conftest import (
    SandboxFixture,
    product_rows,
    reject_rows,
    staging_count,
    wait_for_run,
)
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.worker

CATALOG = 300


def read_catalog(
    make_connector: Any, supplier: str
) -> tuple[dict[str, SupplierProduct], list[InvalidRecord]]:
    records = list(make_connector(f"{supplier}_main").iter_products())
    valid = {r.supplier_sku: r for r in records if isinstance(r, SupplierProduct)}
    invalid = [r for r in records if isinstance(r, InvalidRecord)]
    return valid, invalid


def collect(
    engine: Engine, worker: WorkerProcess, supplier: str, mode: str = "full"
) -> dict[str, Any]:
    from tasks.collect import collect_supplier

    started = collect_supplier.delay(supplier, f"{supplier}_main", mode).get(timeout=60)
    return wait_for_run(engine, started["run_id"], worker=worker)


def assert_times_are_wall_clock(engine: Engine, run_id: int) -> None:
    """A slice's finish is stamped when it finishes, after the records it stored (not at its
    transaction's start, which is what ``now()`` gives), and the run finishes after its slices:
    operators and the bench read durations from these."""
    with engine.connect() as conn:
        late = conn.execute(
            text(
                "SELECT s.slice_key FROM collect_run_slices s JOIN product_rejects j "
                "ON j.run_id = s.run_id AND j.slice_key = s.slice_key "
                "WHERE s.run_id = :r GROUP BY s.slice_key, s.finished_at "
                "HAVING s.finished_at <= max(j.created_at)"
            ),
            {"r": run_id},
        ).all()
        order = conn.execute(
            text(
                "SELECT bool_and(s.finished_at >= s.started_at AND r.finished_at > s.finished_at) "
                "FROM collect_run_slices s JOIN collect_runs r ON r.id = s.run_id "
                "WHERE r.id = :r"
            ),
            {"r": run_id},
        ).scalar_one()
    assert not late, f"slices stamped finished before their records: {late}"
    assert order is True


def assert_stored(product: dict[str, Any], record: SupplierProduct) -> None:
    assert (product["name"], product["price"], product["shipping_fee"], product["stock"]) == (
        record.name,
        record.cost_price,
        record.shipping_fee,
        record.stock,
    )
    assert (product["status"], product["category"]) == (record.status, record.category)
    assert product["images"] == list(record.images)
    assert [
        (o["name"], o["value"], o["price_delta"], o["stock"], o["supplier_option_code"])
        for o in product["options"]
    ] == [(o.name, o.value, o.price_delta, o.stock, o.supplier_option_code) for o in record.options]
    assert (
        product["open_market_sellable"],
        product["adult_only"],
        product["stock_assumed"],
    ) == (record.open_market_sellable, record.adult_only, record.stock_assumed)


@pytest.mark.parametrize("supplier", ["ownerclan", "domeggook", "gentrade"])
def test_full_collect_is_exact_then_idempotent_then_marks_removed_gone(
    supplier: str,
    frozen_world_clock: SandboxFixture,
    collect_worker: WorkerProcess,
    make_connector: Any,
    committed_db: Engine,
) -> None:
    sandbox = frozen_world_clock
    sandbox.configure_suppliers(catalog_sizes={supplier: CATALOG})
    sandbox.set_faults(supplier, malformed_rate=0.05)
    valid, invalid = read_catalog(make_connector, supplier)
    assert invalid
    if supplier == "domeggook":  # list results leave out sold-out and stopped items
        assert len(valid) + len(invalid) < CATALOG
    else:
        assert len(valid) + len(invalid) == CATALOG

    first = collect(committed_db, collect_worker, supplier)
    assert first["status"] == "succeeded", first
    assert first["complete"] is True
    assert (first["inserted"], first["updated"], first["unchanged"], first["gone"]) == (
        len(valid),
        0,
        0,
        0,
    )
    assert (first["records"], first["rejected"]) == (len(valid), len(invalid))
    assert first["slices_done"] == first["slices_expected"] >= 1
    products = product_rows(committed_db, supplier)
    assert set(products) == set(valid)
    for sku, record in valid.items():
        assert_stored(products[sku], record)
    rejects = reject_rows(committed_db, first["id"])
    assert sorted(str(r["supplier_sku"]) for r in rejects) == sorted(
        str(r.supplier_sku) for r in invalid
    )
    assert all(r["reason"] and r["raw"] and r["slice_key"] for r in rejects)
    assert staging_count(committed_db) == 0
    assert_times_are_wall_clock(committed_db, first["id"])

    second = collect(committed_db, collect_worker, supplier)
    assert second["status"] == "succeeded", second
    assert (second["inserted"], second["updated"], second["unchanged"], second["gone"]) == (
        0,
        0,
        len(valid),
        0,
    )
    # Zentrade records whose bytes are as stored are not parsed again (source fingerprints).
    assert second["unparsed"] == (len(valid) if supplier == "gentrade" else 0)
    unchanged = product_rows(committed_db, supplier)
    assert all(unchanged[sku]["updated_at"] == products[sku]["updated_at"] for sku in valid)

    # The supplier drops its last products: exactly the valid ones among them become gone.
    sandbox.configure_suppliers(catalog_sizes={supplier: CATALOG - 3})
    still, _ = read_catalog(make_connector, supplier)
    removed = set(valid) - set(still)
    assert removed
    third = collect(committed_db, collect_worker, supplier)
    assert third["status"] == "succeeded", third
    assert third["gone"] == len(removed)
    after = product_rows(committed_db, supplier)
    reported_gone = {sku for sku, r in valid.items() if r.status == "gone"}  # discontinued
    assert {sku for sku, p in after.items() if p["status"] == "gone"} == removed | reported_gone
    assert len(after) == len(valid)
