"""The collect services against the real database, with a small in-process connector: daily
budget pause and resume, stalled runs, partial runs, incremental runs, COPY escaping, rejects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.catalog import services
from dropship.errors import BudgetExhaustedError, PermanentError
from dropship.platforms.interfaces import (
    CollectSlice,
    InvalidRecord,
    ProductOption,
    SupplierProduct,
)
from tests.catalog.conftest import product_rows, reject_rows, run_row, staging_count


def product(supplier: str, sku: str, **kw: Any) -> SupplierProduct:
    fields: dict[str, Any] = dict(
        supplier=supplier,
        supplier_sku=sku,
        name=f"상품 {sku}",
        cost_price=1000,
        shipping_fee=2500,
        stock=5,
        status="active",
    )
    fields.update(kw)
    return SupplierProduct(**fields)


class FakeConnector:
    """Slices of fixed records; ``fail`` maps a slice key to an error raised after the slice's
    first record (once), as a platform would mid-way through a slice."""

    def __init__(
        self, supplier: str, slices: dict[str, list[Any]], fail: dict[str, Exception] | None = None
    ) -> None:
        self.supplier = supplier
        self.slices = slices
        self.fail = dict(fail or {})
        self.since_seen: list[datetime | None] = []
        # What recheck_missing reports for products a full run did not see.
        self.still_there: dict[str, SupplierProduct] = {}
        self.rechecked: list[tuple[list[str], datetime]] = []

    def plan_slices(self, since: datetime | None = None) -> list[CollectSlice]:
        self.since_seen.append(since)
        return [CollectSlice(key, {"i": i}) for i, key in enumerate(self.slices)]

    def iter_slice(self, piece: CollectSlice) -> Iterator[Any]:
        for n, record in enumerate(self.slices[piece.key]):
            if n == 1 and piece.key in self.fail:
                raise self.fail.pop(piece.key)
            yield record

    def recheck_missing(self, skus: Any, run_started_at: datetime) -> Iterator[Any]:
        self.rechecked.append((list(skus), run_started_at))
        for sku in skus:
            if sku in self.still_there:
                yield self.still_there[sku]

    def factory(self, account: str) -> Any:
        return self


def catalog(supplier: str, keys: str = "abc", per_slice: int = 10) -> dict[str, list[Any]]:
    return {key: [product(supplier, f"{key}{n}") for n in range(per_slice)] for key in keys}


def run_all(run_id: int, keys: list[str], fake: FakeConnector) -> list[dict[str, Any]]:
    return [services.run_slice(run_id, key, fake.factory) for key in keys]


def test_spent_daily_budget_pauses_the_run_and_the_sweep_resumes_it(collect_db: Engine) -> None:
    resets_at = datetime.now(UTC) + timedelta(hours=3)
    fake = FakeConnector(
        "domeggook",
        catalog("domeggook"),
        fail={"b": BudgetExhaustedError("domeggook daily budget spent", 10_800, resets_at)},
    )
    run_id = services.open_run("domeggook", "domeggook_main")["run_id"]
    keys = services.plan_run(run_id, fake.factory)
    assert keys == ["a", "b", "c"]
    a, b, c = run_all(run_id, keys, fake)
    assert a["records"] == 10 and b["paused"] is True and "skipped" in c
    run = run_row(collect_db, run_id)
    assert run["status"] == "paused" and run["paused_until"] == resets_at
    assert staging_count(collect_db, run_id) == 10  # b's first record was rolled back
    assert services.merge_run(run_id)["skipped"] == "run is paused"  # the chord body

    assert services.sweep_runs(now=resets_at - timedelta(minutes=1), stall_timeout_s=0) == {
        "merge": [],
        "resubmit": {},
        "plan": [],
        "failed": [],
    }
    actions = services.sweep_runs(now=resets_at + timedelta(seconds=1))
    assert actions["resubmit"] == {run_id: ["b", "c"]}
    assert run_row(collect_db, run_id)["status"] == "running"
    run_all(run_id, ["b", "c"], fake)
    merged = services.merge_run(run_id)
    assert (merged["status"], merged["inserted"], merged["slices_done"]) == ("succeeded", 30, 3)


def test_stalled_run_is_republished_then_failed_with_a_reason(collect_db: Engine) -> None:
    fake = FakeConnector("gentrade", catalog("gentrade", keys="ab"))
    run_id = services.open_run("gentrade", "gentrade_main")["run_id"]
    services.plan_run(run_id, fake.factory)
    services.run_slice(run_id, "a", fake.factory)
    for _ in range(2):  # collect.max_resubmits
        assert services.sweep_runs(stall_timeout_s=0)["resubmit"] == {run_id: ["b"]}
    assert services.sweep_runs(stall_timeout_s=0)["failed"] == [run_id]
    run = run_row(collect_db, run_id)
    assert run["status"] == "failed"
    assert "stalled: 1 slices never finished after 2 re-publications (b)" in run["error"]
    assert staging_count(collect_db, run_id) == 0
    # A late slice or chord body of the failed run changes nothing.
    assert "skipped" in services.run_slice(run_id, "b", fake.factory)
    assert services.merge_run(run_id)["skipped"] == "run is failed"
    assert product_rows(collect_db, "gentrade") == {}


def test_full_run_rechecks_unseen_products_before_marking_any_gone(collect_db: Engine) -> None:
    """A product a listing leaves out is not gone until the supplier says so: one the recheck
    finds sold out is stored sold out (stock 0), one it does not find is gone."""
    fake = FakeConnector("domeggook", catalog("domeggook"))
    first = services.open_run("domeggook", "domeggook_main")["run_id"]
    run_all(first, services.plan_run(first, fake.factory), fake)
    assert services.merge_run(first, fake.factory)["gone"] == 0
    assert fake.rechecked == []  # nothing unseen, nothing asked

    # The listing now leaves out a0 (sold out at the supplier) and a1 (withdrawn).
    fake.slices["a"] = fake.slices["a"][2:]
    fake.still_there = {"a0": product("domeggook", "a0", stock=0, status="soldout")}
    second = services.open_run("domeggook", "domeggook_main")["run_id"]
    run_all(second, services.plan_run(second, fake.factory), fake)
    merged = services.merge_run(second, fake.factory)
    assert (merged["status"], merged["gone"], merged["updated"], merged["rechecked"]) == (
        "succeeded",
        1,
        1,
        1,
    )
    ((asked, started),) = fake.rechecked
    assert sorted(asked) == ["a0", "a1"] and started == run_row(collect_db, second)["started_at"]
    rows = product_rows(collect_db, "domeggook")
    assert (rows["a0"]["status"], rows["a0"]["stock"]) == ("soldout", 0)
    assert rows["a1"]["status"] == "gone"
    assert staging_count(collect_db) == 0


def test_run_with_a_failed_slice_merges_the_rest_and_marks_nothing_gone(
    collect_db: Engine,
) -> None:
    fake = FakeConnector("ownerclan", catalog("ownerclan"))
    first = services.open_run("ownerclan", "ownerclan_main")["run_id"]
    run_all(first, services.plan_run(first, fake.factory), fake)
    assert services.merge_run(first)["status"] == "succeeded"

    fake.fail["b"] = PermanentError("ownerclan allItems: HTTP 400")
    second = services.open_run("ownerclan", "ownerclan_main")["run_id"]
    keys = services.plan_run(second, fake.factory)
    with pytest.raises(PermanentError):
        run_all(second, keys, fake)
    assert services.fail_slice(second, "b", "PermanentError: ownerclan allItems: HTTP 400") is False
    services.run_slice(second, "c", fake.factory)
    merged = services.merge_run(second)
    assert (merged["status"], merged["complete"], merged["gone"]) == ("partial", False, 0)
    assert "b: PermanentError: ownerclan allItems: HTTP 400" in merged["error"]
    assert all(p["status"] == "active" for p in product_rows(collect_db, "ownerclan").values())


def test_incremental_asks_since_the_watermark_and_never_marks_gone(collect_db: Engine) -> None:
    fake = FakeConnector("ownerclan", catalog("ownerclan", keys="w"))
    opened = services.open_run("ownerclan", "ownerclan_main", mode="incremental")
    assert opened["mode"] == "full"  # no watermark yet: a full run first
    run_all(opened["run_id"], services.plan_run(opened["run_id"], fake.factory), fake)
    services.merge_run(opened["run_id"])
    started = run_row(collect_db, opened["run_id"])["started_at"]

    fake.slices["w"] = fake.slices["w"][:5]  # half of them are not in the changed window
    opened = services.open_run("ownerclan", "ownerclan_main", mode="incremental")
    assert opened["mode"] == "incremental"
    run_all(opened["run_id"], services.plan_run(opened["run_id"], fake.factory), fake)
    merged = services.merge_run(opened["run_id"])
    assert fake.since_seen[-1] == started - timedelta(seconds=600)
    assert (merged["status"], merged["unchanged"], merged["gone"]) == ("succeeded", 5, 0)
    # Domeggook has no modification filter: incremental falls back to full.
    assert services.open_run("domeggook", "domeggook_main", "incremental")["mode"] == "full"


def test_open_run_returns_the_active_run_instead_of_a_second_one(collect_db: Engine) -> None:
    first = services.open_run("gentrade", "gentrade_main")
    again = services.open_run("gentrade", "gentrade_main")
    assert (again["run_id"], again["new"]) == (first["run_id"], False)


def test_copy_keeps_awkward_text_exact_and_rejects_what_cannot_be_stored(
    collect_db: Engine,
) -> None:
    awkward = 'tab\there\nnew line \\N back\\slash "quoted" 한글 \r end'
    big_raw = {"blob": "x" * 50_000, "nul": "a\x00b"}
    records = [
        product(
            "gentrade",
            "G1",
            name=awkward,
            category="a\\b",
            images=("https://img/1.jpg?a=1&b=\t2",),
            options=(ProductOption("색상", "빨강\t\\", 500, 3, "G1-1"),),
            open_market_sellable=False,
            adult_only=True,
            stock_assumed=True,
        ),
        product("gentrade", "G2", name="nul\x00inside"),
        product("ownerclan", "O1"),
        InvalidRecord("gentrade", "G3", "price is not a number", raw=big_raw),
        product("gentrade", "G4", stock=2**31),
    ]
    fake = FakeConnector("gentrade", {"feed": records})
    run_id = services.open_run("gentrade", "gentrade_main")["run_id"]
    run_all(run_id, services.plan_run(run_id, fake.factory), fake)
    merged = services.merge_run(run_id)
    assert (merged["inserted"], merged["rejected"]) == (1, 4)
    stored = product_rows(collect_db, "gentrade")["G1"]
    assert (stored["name"], stored["category"]) == (awkward, "a\\b")
    assert stored["images"] == ["https://img/1.jpg?a=1&b=\t2"]
    assert stored["options"][0]["value"] == "빨강\t\\"
    assert (stored["open_market_sellable"], stored["adult_only"], stored["stock_assumed"]) == (
        False,
        True,
        True,
    )
    rejects = {r["supplier_sku"]: r for r in reject_rows(collect_db, run_id)}
    assert "NUL" in rejects["G2"]["reason"]
    assert "supplier 'ownerclan'" in rejects["O1"]["reason"]
    assert "outside" in rejects["G4"]["reason"]
    bounded = rejects["G3"]["raw"]
    assert bounded["truncated"] is True and bounded["bytes"] > 50_000
    assert len(json.dumps(bounded).encode()) <= 8192 + 200
    assert rejects["G3"]["reason"] == "price is not a number"


def test_rerun_of_a_slice_replaces_its_rows(collect_db: Engine) -> None:
    fake = FakeConnector("gentrade", catalog("gentrade", keys="a", per_slice=4))
    run_id = services.open_run("gentrade", "gentrade_main")["run_id"]
    services.plan_run(run_id, fake.factory)
    with collect_db.begin() as conn:  # rows of an earlier, interrupted attempt of the slice
        conn.execute(
            text(
                "INSERT INTO staging_products (run_id, slice_key, supplier, supplier_sku, name, "
                "price, shipping_fee, stock, status, images, options, content_hash, "
                "open_market_sellable, adult_only, stock_assumed) VALUES (:r, 'a', 'gentrade', "
                "'stale', 'x', 1, 0, 0, 'active', '[]', '[]', 'h', true, false, false)"
            ),
            {"r": run_id},
        )
    services.run_slice(run_id, "a", fake.factory)
    assert staging_count(collect_db, run_id) == 4
    assert "stale" not in product_rows(collect_db, "gentrade")
    services.merge_run(run_id)
    assert set(product_rows(collect_db, "gentrade")) == {"a0", "a1", "a2", "a3"}


def test_budget_spent_while_planning_pauses_then_the_sweep_replans(collect_db: Engine) -> None:
    resets_at = datetime.now(UTC) + timedelta(hours=1)
    fake = FakeConnector("domeggook", catalog("domeggook", keys="ab"))
    real_plan = fake.plan_slices
    calls: list[int] = []

    def plan_once_spent(since: datetime | None = None) -> list[CollectSlice]:
        calls.append(1)
        if len(calls) == 1:
            raise BudgetExhaustedError("domeggook daily budget spent", 3600, resets_at)
        return real_plan(since)

    fake.plan_slices = plan_once_spent  # type: ignore[method-assign]
    run_id = services.open_run("domeggook", "domeggook_main")["run_id"]
    assert services.plan_run(run_id, fake.factory) == []
    run = run_row(collect_db, run_id)
    assert (run["status"], run["slices_expected"]) == ("paused", None)
    actions = services.sweep_runs(now=resets_at + timedelta(seconds=1))
    assert actions["plan"] == [run_id] and run_row(collect_db, run_id)["status"] == "planned"
    assert services.plan_run(run_id, fake.factory) == ["a", "b"]
    # Planned twice (a racing collect_supplier, a late start_run): no second set of slices.
    assert services.plan_run(run_id, fake.factory) == []
    run_all(run_id, ["a", "b"], fake)
    assert services.merge_run(run_id)["inserted"] == 20
