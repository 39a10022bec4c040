"""Reconciliation against the sandbox over HTTP, real PostgreSQL, and real workers for the task
chain: a listing whose create answer was lost is adopted by its key, a market listing with a key
that is not ours is reported, one we think is active but the market suspended is marked, and a
market error while paging changes nothing of ours (the run shows the error instead)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship import db
from dropship.errors import TransientError
from dropship.images.services import listing_images
from dropship.listings import reconcile, services
from dropship.platforms import coupang as coupang_module
from dropship.platforms import naver as naver_module
from dropship.platforms.interfaces import MarketListingRequest
from dropship.sandbox.credentials import sandbox_account_config
from tests.catalog.conftest import worker_env
from tests.conftest import start_worker, stop_worker
from tests.images.conftest import image_store  # noqa: F401  (fixture)
from tests.listings.conftest import add_product
from tests.listings.test_register import (  # noqa: F401  (fixtures)
    accounts,
    catalog,
    listing_rows,
    register_until_done,
)
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    connector_settings,
    make_connector,
    sandbox,
    sandbox_server,
)
from tests.platforms.hosted_images import market_image_urls

pytestmark = pytest.mark.timeout(120)


_BOX: list[Any] = []


@pytest.fixture(autouse=True)
def _market_images_box(sandbox: Any) -> None:  # noqa: F811
    """The sandbox whose markets the requests go to: their images must be ones it accepts
    (Coupang downloads every vendorPath; Naver takes only its own host's URLs)."""
    _BOX[:] = [sandbox]


def create(connector: Any, req: MarketListingRequest) -> Any:
    """``create_listing`` with images the connector's market accepts."""
    return connector.create_listing(
        replace(req, images=market_image_urls(_BOX[0], connector.market))
    )


def foreign(sku: str) -> MarketListingRequest:
    return MarketListingRequest(
        external_sku=sku,
        name="손으로 올린 상품",
        sale_price=19_900,
        stock=3,
        category_id="56137",
        images=("https://img.example.test/hand.jpg",),
    )


def lose_one_create(
    box: SandboxFixture, account: str, factory: Callable[[str], Any]
) -> dict[str, Any]:
    """Register every claimed listing of ``account``, with the first create's answer lost:
    that row stays ``registering`` without a market id while the market has the listing."""
    platform = account.split("_")[0]
    ids = services.plan_registrations(account)["publish"]
    # Its images first (a Naver registration uploads them, cached per account), so the fault
    # below hits the create itself.
    with db.session_scope() as session:
        product_id = session.execute(
            text("SELECT product_id FROM listings WHERE id = :i"), {"i": ids[0]}
        ).scalar_one()
    connector = factory(account)
    listing_images(account, connector.market, int(product_id), connector)
    box.set_faults(platform, lost_response_rate=1.0, lost_response_mode="5xx")
    with pytest.raises(TransientError):
        services.register_listings(account, ids[:1], factory)
    box.set_faults(platform, lost_response_rate=0.0)
    services.register_listings(account, ids[1:], factory)
    return {"lost": ids[0], "rest": ids[1:]}


def rows_by_id(engine: Engine, account: str) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in listing_rows(engine, account).values()}


def scenario(
    box: SandboxFixture, account: str, factory: Callable[[str], Any], engine: Engine
) -> dict[str, Any]:
    """Lost create + a foreign listing + a market-side suspension + one of our keys for a
    product we never listed (made by hand on the market)."""
    lost = lose_one_create(box, account, factory)
    rows = rows_by_id(engine, account)
    assert rows[lost["lost"]]["status"] == "registering"
    assert rows[lost["lost"]]["market_product_id"] is None
    connector = factory(account)
    foreign_id = create(connector, foreign("HANDMADE-1")).market_product_id
    suspended = rows[lost["rest"][0]]
    connector.suspend_listing(suspended["market_product_id"])
    with engine.begin() as conn:
        unlisted = add_product(conn, category="GARDEN")
        account_id = conn.execute(
            text("SELECT id FROM accounts WHERE name = :a"), {"a": account}
        ).scalar_one()
    ours_by_hand = create(
        connector, foreign(services.external_sku(account_id, unlisted))
    ).market_product_id
    return {
        **lost,
        "foreign_id": foreign_id,
        "suspended": suspended["id"],
        "unlisted": unlisted,
        "ours_by_hand": ours_by_hand,
    }


def check_repaired(engine: Engine, account: str, made: dict[str, Any], box: SandboxFixture) -> None:
    rows = rows_by_id(engine, account)
    adopted = rows[made["lost"]]
    assert adopted["status"] == "active" and adopted["market_product_id"]
    assert "adopted by reconcile" in adopted["error"]
    marked = rows[made["suspended"]]
    assert marked["status"] == "suspended" and "suspended" in marked["error"]
    assert all(rows[i]["status"] == "active" for i in made["rest"][1:])
    by_product = listing_rows(engine, account)
    assert by_product[made["unlisted"]]["market_product_id"] == made["ours_by_hand"]
    reported = reconcile.discrepancies(account)
    assert [(d["market_product_id"], d["kind"]) for d in reported] == [
        (made["foreign_id"], "unknown_sku")
    ]
    assert reported[0]["reason"] == "external SKU is not one of our keys"
    # Nothing was registered twice by the repair: one market listing per key.
    listed = box.counts()["listings"]
    assert all(int(listed[r["external_sku"]]) == 1 for r in rows.values())


@pytest.mark.parametrize("account", ["coupang_main", "naver_main"])
def test_reconcile_adopts_reports_and_marks(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
    account: str,
) -> None:
    made = scenario(sandbox, account, make_connector, rules_db)
    module = coupang_module if account.startswith("coupang") else naver_module
    monkeypatch.setattr(module, "LISTING_PAGE_SIZE", 3)  # several pages
    summary = reconcile.reconcile_account(account, make_connector(account))
    assert summary["status"] == "succeeded" and summary["pages"] >= 3
    assert summary["seen"] == 8  # 6 registered (one answer lost) + foreign + ours by hand
    assert (summary["adopted"], summary["marked_suspended"], summary["reported"]) == (2, 1, 1)
    check_repaired(rules_db, account, made, sandbox)
    # A second run finds nothing left to repair and keeps the report open.
    again = reconcile.reconcile_account(account, make_connector(account))
    assert (again["adopted"], again["marked_suspended"], again["reported"]) == (0, 0, 1)
    assert again["matched"] == 7


def test_market_error_mid_paging_leaves_every_record_untouched(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = "coupang_main"
    made = scenario(sandbox, account, make_connector, rules_db)
    before = rows_by_id(rules_db, account)
    monkeypatch.setattr(coupang_module, "LISTING_PAGE_SIZE", 3)
    connector = make_connector(account)
    run_id = reconcile.start_run(account)
    assert run_id is not None
    first = reconcile.reconcile_page(run_id, None, connector)
    assert first["seen"] == 3 and first["next_cursor"]
    sandbox.set_faults("coupang", error_rate=1.0)  # the market fails from page 2 on
    with pytest.raises(TransientError):
        reconcile.reconcile_page(run_id, first["next_cursor"], connector)
    # The run shows why it is stuck; nothing of ours moved.
    assert "retrying page 2" in (reconcile.run_summary(run_id).get("error") or "")
    assert rows_by_id(rules_db, account) == before
    assert reconcile.discrepancies(account) == []
    # The whole-run call aborts visibly, still without touching a record.
    summary = reconcile.reconcile_account(account, connector)
    assert summary["status"] == "failed" and "attempt(s)" in summary["error"]
    assert rows_by_id(rules_db, account) == before
    sandbox.set_faults("coupang", error_rate=0.0)
    assert reconcile.reconcile_account(account, connector)["status"] == "succeeded"
    check_repaired(rules_db, account, made, sandbox)


def test_a_listing_being_registered_is_left_to_its_registration(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
) -> None:
    account = "naver_main"
    made = lose_one_create(sandbox, account, make_connector)
    with rules_db.connect() as holder:
        # What register_listings holds while it works on the listing.
        holder.execute(
            text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"),
            {"k": f"dropship.listing:{made['lost']}"},
        )
        holder.commit()
        summary = reconcile.reconcile_account(account, make_connector(account))
        assert (summary["busy"], summary["adopted"]) == (1, 0)
        assert rows_by_id(rules_db, account)[made["lost"]]["market_product_id"] is None
        holder.execute(
            text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"),
            {"k": f"dropship.listing:{made['lost']}"},
        )
        holder.commit()
    assert reconcile.reconcile_account(account, make_connector(account))["adopted"] == 1


def test_sweep_skips_an_account_whose_run_is_still_reading(
    rules_db: Engine,
    accounts: None,  # noqa: F811
) -> None:
    first = reconcile.start_run("coupang_main", supersede=False)
    assert first is not None
    assert reconcile.start_run("coupang_main", supersede=False) is None
    second = reconcile.start_run("coupang_main")  # an operator's run supersedes it
    assert second is not None and second != first
    assert reconcile.run_summary(first)["status"] == "failed"
    with rules_db.begin() as conn:
        conn.execute(text("UPDATE reconcile_runs SET updated_at = now() - interval '2 hours'"))
    assert reconcile.fail_stalled_runs() == [second]
    assert "stalled" in reconcile.run_summary(second)["error"]


@pytest.mark.worker
def test_reconcile_sweep_with_a_real_worker_through_a_market_outage(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
    tmp_path: Path,
    redis_url: str,
) -> None:
    account = "naver_main"
    made = scenario(sandbox, account, make_connector, rules_db)
    before = rows_by_id(rules_db, account)
    config = sandbox_account_config(sandbox.base_url)
    config[account]["options"] = {"listings_page_size": "2"}  # four page tasks (8 listings)
    env = worker_env(sandbox, DROPSHIP_PLATFORMS__ACCOUNTS=json.dumps(config))
    sandbox.set_faults("naver", error_rate=1.0)
    worker = start_worker(tmp_path, queues="medium", concurrency=2, env=env)
    try:
        from tasks.listings import reconcile_sweep

        started = reconcile_sweep.delay(account).get(timeout=30)
        run_id = started[0]["run_id"]
        deadline = time.monotonic() + 30
        while "retrying page 1" not in (reconcile.run_summary(run_id).get("error") or ""):
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
        assert rows_by_id(rules_db, account) == before  # the outage changed nothing
        sandbox.set_faults("naver", error_rate=0.0)
        deadline = time.monotonic() + 60
        while (summary := reconcile.run_summary(run_id))["status"] == "running":
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.3)
        assert summary["status"] == "succeeded" and summary["pages"] == 4, summary
        assert "error" not in summary
        check_repaired(rules_db, account, made, sandbox)
    finally:
        stop_worker(worker)


def test_a_second_market_listing_with_one_of_our_keys_is_reported_not_adopted(
    sandbox: SandboxFixture,  # noqa: F811
    accounts: None,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
) -> None:
    account = "coupang_main"
    with rules_db.begin() as conn:
        product = add_product(conn)
    run = reconcile.start_run(account)  # creates the account row (its id is in our key)
    assert run is not None
    with rules_db.connect() as conn:
        account_id = conn.execute(
            text("SELECT id FROM accounts WHERE name = :a"), {"a": account}
        ).scalar_one()
    connector = make_connector(account)
    request = replace(
        foreign(services.external_sku(account_id, product)),
        images=market_image_urls(_BOX[0], connector.market),
    )
    # Two raw creates with one key (the market accepts both, as the real one does).
    first, second = (
        connector._create_product(request, connector._product_body(request)).market_product_id
        for _ in range(2)
    )
    summary = reconcile.reconcile_account(account, connector)
    assert (summary["adopted"], summary["reported"]) == (1, 1), summary
    adopted = listing_rows(rules_db, account)[product]["market_product_id"]
    (report,) = reconcile.discrepancies(account)
    assert report["kind"] == "duplicate" and {adopted, report["market_product_id"]} == {
        first,
        second,
    }
    assert f"ours is {adopted}" in report["reason"]


# --------------------------------------------------------------------------- gone from the market


def forget(box: SandboxFixture, account: str, market_product_id: str) -> None:
    """The market no longer has the listing at all (deleted in its seller centre)."""
    platform = account.split("_")[0]
    key = "sellerProductId" if platform == "coupang" else "originProductNo"
    assert box._admin("POST", f"{platform}/forget", {key: int(market_product_id)})["forgotten"]


def registered(account: str, factory: Callable[[str], Any], engine: Engine) -> list[int]:
    """Every claimable listing of ``account`` registered; their ids, all active."""
    ids = services.plan_registrations(account)["publish"]
    register_until_done(account, ids, factory)
    rows = rows_by_id(engine, account)
    assert all(rows[i]["status"] == "active" for i in ids)
    return ids


def missing_reports(account: str) -> list[tuple[str, str]]:
    return [
        (d["market_product_id"], d["reason"])
        for d in reconcile.discrepancies(account)
        if d["kind"] == "missing"
    ]


@pytest.mark.parametrize("account", ["coupang_main", "naver_main"])
def test_a_listing_the_market_no_longer_has_is_marked_missing_after_a_complete_read(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
    account: str,
) -> None:
    module = coupang_module if account.startswith("coupang") else naver_module
    monkeypatch.setattr(module, "LISTING_PAGE_SIZE", 2)  # several pages
    connector = make_connector(account)
    ids = registered(account, make_connector, rules_db)
    gone, suspended_gone = ids[0], ids[1]
    rows = rows_by_id(rules_db, account)
    with rules_db.begin() as conn:  # a listing we hold as suspended counts as live too
        conn.execute(
            text("UPDATE listings SET status = 'suspended' WHERE id = :i"), {"i": suspended_gone}
        )
    for listing_id in (gone, suspended_gone):
        forget(sandbox, account, rows[listing_id]["market_product_id"])
    # Read completely, but the single reads fail (a market outage right after the list): a
    # failed read changes nothing.
    run_id = reconcile.start_run(account)
    assert run_id is not None
    cursor: str | None = None
    while True:
        cursor = reconcile.reconcile_page(run_id, cursor, connector)["next_cursor"]
        if cursor is None:
            break
    sandbox.set_faults(account.split("_")[0], error_rate=1.0)
    summary = reconcile.apply_run(run_id, connector)
    sandbox.set_faults(account.split("_")[0], error_rate=0.0)
    assert (summary["status"], summary["marked_missing"], summary["missing_unchecked"]) == (
        "succeeded",
        0,
        2,
    )
    assert {i: r["status"] for i, r in rows_by_id(rules_db, account).items()}[gone] == "active"
    assert missing_reports(account) == []
    # The next complete run confirms each with its own read and marks it; nothing deleted.
    summary = reconcile.reconcile_account(account, connector)
    assert (summary["status"], summary["marked_missing"], summary["seen"]) == (
        "succeeded",
        2,
        len(ids) - 2,
    )
    after = rows_by_id(rules_db, account)
    assert len(after) == len(rows)
    for listing_id in (gone, suspended_gone):
        assert after[listing_id]["status"] == "missing"
        assert "no longer has this listing" in after[listing_id]["error"]
    assert all(after[i]["status"] == "active" for i in ids[2:])
    assert sorted(m for m, _ in missing_reports(account)) == sorted(
        rows[i]["market_product_id"] for i in (gone, suspended_gone)
    )
    counts = {(r["status"]): r["listings"] for r in services.listing_counts(account)}
    assert counts["missing"] == 2 and counts["active"] == len(ids) - 2
    # A later run keeps the reports open and does not read the listings again.
    again = reconcile.reconcile_account(account, connector)
    assert (again["marked_missing"], again["missing_unchecked"]) == (0, 0)
    assert len(missing_reports(account)) == 2
    # The operator sees them.
    from typer.testing import CliRunner

    from dropship.cli import cli

    shown = CliRunner().invoke(
        cli, ["listings", "discrepancies", "--account", account], env={"COLUMNS": "250"}
    )
    assert shown.exit_code == 0 and shown.output.count("missing") >= 2, shown.output


def test_a_page_through_failing_midway_marks_nothing_missing(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = "naver_main"
    monkeypatch.setattr(naver_module, "LISTING_PAGE_SIZE", 2)
    connector = make_connector(account)
    ids = registered(account, make_connector, rules_db)
    forget(sandbox, account, rows_by_id(rules_db, account)[ids[0]]["market_product_id"])
    before = rows_by_id(rules_db, account)
    run_id = reconcile.start_run(account)
    assert run_id is not None
    first = reconcile.reconcile_page(run_id, None, connector)
    assert first["next_cursor"]  # listings on the pages not read are unseen, not missing
    sandbox.set_faults("naver", error_rate=1.0)
    with pytest.raises(TransientError):
        reconcile.reconcile_page(run_id, first["next_cursor"], connector)
    summary = reconcile.reconcile_account(account, connector)
    assert summary["status"] == "failed"
    assert rows_by_id(rules_db, account) == before
    assert missing_reports(account) == []
    sandbox.set_faults("naver", error_rate=0.0)
    assert reconcile.reconcile_account(account, connector)["marked_missing"] == 1
    assert rows_by_id(rules_db, account)[ids[0]]["status"] == "missing"


def test_a_missing_listing_the_market_lists_again_gets_its_status_back(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
) -> None:
    account = "coupang_main"
    ids = registered(account, make_connector, rules_db)
    with rules_db.begin() as conn:
        conn.execute(text("UPDATE listings SET status = 'missing' WHERE id = :i"), {"i": ids[0]})
    summary = reconcile.reconcile_account(account, make_connector(account))
    assert (summary["restored"], summary["marked_missing"]) == (1, 0)
    row = rows_by_id(rules_db, account)[ids[0]]
    assert row["status"] == "active" and "listed by the market again" in row["error"]


def test_a_listing_registered_after_the_read_is_read_back_not_marked(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
) -> None:
    account = "naver_main"
    connector = make_connector(account)
    ids = services.plan_registrations(account)["publish"]
    register_until_done(account, ids[:-1], make_connector)
    run_id = reconcile.start_run(account)
    assert run_id is not None
    assert reconcile.reconcile_page(run_id, None, connector)["next_cursor"] is None
    # Registered while the run was between its last page and its apply: not in the list, but
    # the market has it, as its own read shows.
    register_until_done(account, ids[-1:], make_connector)
    summary = reconcile.apply_run(run_id, connector)
    assert (summary["marked_missing"], summary["missing_unchecked"]) == (0, 0), summary
    assert all(r["status"] == "active" for r in rows_by_id(rules_db, account).values())
    assert missing_reports(account) == []
