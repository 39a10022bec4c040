"""The sync flow against the sandbox over HTTP and real PostgreSQL: the collect merge records
sync work in its own transaction (outbox), a sell-out is suspended on both markets and confirmed
by reading the listing back even when the market drops the first request, a price change
propagates, a margin break suspends instead of selling, protected fields are left alone, a
product back in stock is resumed; with a real worker the whole path runs from the merge task."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.catalog import services as collect
from dropship.errors import TransientError
from dropship.listings import services, sync
from dropship.sandbox.credentials import sandbox_account_config
from dropship.settings import get_settings
from tests.catalog.conftest import collect_db, worker_env  # noqa: F401  (fixture)
from tests.catalog.test_services import FakeConnector, product
from tests.conftest import start_worker, stop_worker
from tests.images.conftest import HostedStore, image_store  # noqa: F401  (fixture)
from tests.listings.conftest import add_mapping, add_rule
from tests.listings.test_register import process_images
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    connector_settings,
    make_connector,
    sandbox,
    sandbox_server,
)

ACCOUNTS = ("coupang_main", "naver_main")
SUPPLIER = "ownerclan"
# margin 0.2, fee 0.1, minimum 500 KRW: sale = ceil(cost * 1.2 / 0.9 / 10) * 10, and the margin
# (0.2 x cost) misses the minimum below a cost of 2,500 KRW.
BASE = {"a": 9000, "b": 9000, "c": 9000, "d": 9000, "e": 9000}


def item(sku: str, cost: int = 9000, stock: int = 10, **kw: Any) -> Any:
    return product(
        SUPPLIER,
        sku,
        cost_price=cost,
        shipping_fee=0,
        stock=stock,
        category="KITCHEN",
        images=("https://img.example/t.jpg",),
        **kw,
    )


def collect_run(records: list[Any], mode: str = "full") -> dict[str, Any]:
    """One complete collect run of ``records`` through the real staging and merge."""
    fake = FakeConnector(SUPPLIER, {"all": records})
    run_id = collect.open_run(SUPPLIER, "ownerclan_main", mode=mode)["run_id"]
    collect.plan_run(run_id, fake.factory)
    collect.run_slice(run_id, "all", fake.factory)
    return collect.merge_run(run_id, fake.factory)


@pytest.fixture
def accounts(sandbox: SandboxFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    monkeypatch.setenv(
        "DROPSHIP_PLATFORMS__ACCOUNTS", json.dumps(sandbox_account_config(sandbox.base_url))
    )
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def listed(
    collect_db: Engine,  # noqa: F811
    accounts: None,
    make_connector: Callable[[str], Any],  # noqa: F811
    sandbox: SandboxFixture,  # noqa: F811
    image_store: HostedStore,  # noqa: F811
) -> dict[str, int]:
    """Five products collected and listed on both market accounts; sku -> product id."""
    with collect_db.begin() as conn:
        for market, category in (("coupang", "56137"), ("naver", "50000803")):
            add_rule(conn, market=market, margin="0.2", fee="0.1", min_margin=500)
            add_mapping(conn, market=market, market_category=category)
    collect_run([item(sku, cost) for sku, cost in BASE.items()])
    # Registration lists only products with a usable, processed image.
    process_images(collect_db, sandbox)
    for account in ACCOUNTS:
        planned = services.plan_registrations(account)
        assert services.register_listings(account, planned["publish"], make_connector)[
            "active"
        ] == len(BASE)
    with collect_db.connect() as conn:
        rows = conn.execute(text("SELECT supplier_sku, id FROM products")).all()
    return {str(r.supplier_sku): int(r.id) for r in rows}


def listings_of(engine: Engine, product_id: int) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.name AS account, l.* FROM listings l JOIN accounts a "
                "ON a.id = l.account_id WHERE l.product_id = :p"
            ),
            {"p": product_id},
        ).all()
    return {row.account: dict(row._mapping) for row in rows}


def market_state(connect: Callable[[str], Any], row: dict[str, Any]) -> Any:
    return connect(row["account"]).get_listing(row["market_product_id"])


def outbox(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT product_id, kind FROM sync_outbox WHERE published_at IS NULL")
        ).all()
    return sorted((int(r.product_id), str(r.kind)) for r in rows)


def test_merge_records_sync_work_in_its_transaction(
    listed: dict[str, int],
    collect_db: Engine,  # noqa: F811
) -> None:
    # a sold out, b cheaper, c unchanged, d missing from the full run (gone), e restocked only
    merged = collect_run(
        [
            item("a", stock=0, status="soldout"),
            item("b", cost=8000),
            item("c"),
            item("e", stock=3),
        ]
    )
    assert merged["gone"] == 1 and merged["sync_changes"] == 4
    ids = listed
    assert outbox(collect_db) == sorted(
        [(ids["a"], "suspend"), (ids["b"], "update"), (ids["d"], "suspend"), (ids["e"], "update")]
    )
    published: list[tuple[str, list[int]]] = []
    counts = sync.drain_outbox(lambda kind, pids: published.append((kind, pids)))
    assert counts == {"suspend": 2, "update": 2}
    assert published == [
        ("suspend", sorted([ids["a"], ids["d"]])),
        ("update", sorted([ids["b"], ids["e"]])),
    ]
    assert outbox(collect_db) == []
    assert sync.drain_outbox(lambda kind, pids: published.append((kind, pids))) == {
        "suspend": 0,
        "update": 0,
    }


def test_sell_out_is_suspended_and_confirmed_on_both_markets_despite_dropped_requests(
    listed: dict[str, int],
    collect_db: Engine,  # noqa: F811
    sandbox: SandboxFixture,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
) -> None:
    for market in ("coupang", "naver"):
        sandbox.set_faults(market, drop_suspensions=1)
    collect_run(
        [item(sku, cost) for sku, cost in BASE.items() if sku != "a"] + [item("a", stock=0)]
    )
    product_id = listed["a"]
    counts = sync.suspend_products([product_id], make_connector, confirm_delay_s=0)
    assert counts["confirmed"] == 2
    assert sandbox.counts()["dropped_suspensions"] == {"coupang": 1, "naver": 1}
    for account, row in listings_of(collect_db, product_id).items():
        assert (row["status"], row["suspend_reason"], row["suspend_attempts"]) == (
            "suspended",
            "soldout",
            2,
        ), account
        assert row["suspend_confirmed_at"] is not None
        assert market_state(make_connector, row).sale_state == "suspended"
    # Delivered again: nothing to do, nothing sent.
    assert sync.suspend_products([product_id], make_connector, confirm_delay_s=0) == {
        "confirmed": 0,
        "unconfirmed": 0,
        "failed": 0,
        "skipped": 0,
    }


def test_unconfirmed_suspension_ends_visible_and_an_operator_retry_confirms_it(
    listed: dict[str, int],
    collect_db: Engine,  # noqa: F811
    sandbox: SandboxFixture,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sync, "MAX_SUSPEND_ATTEMPTS", 4)
    sandbox.set_faults("naver", drop_suspensions=100)
    collect_run(
        [item(sku, cost) for sku, cost in BASE.items() if sku != "b"] + [item("b", stock=0)]
    )
    product_id = listed["b"]
    with pytest.raises(TransientError):  # 3 sends this run, still on sale: the task retries
        sync.suspend_products([product_id], make_connector, confirm_delay_s=0)
    rows = listings_of(collect_db, product_id)
    assert rows["coupang_main"]["status"] == "suspended"
    assert (rows["naver_main"]["status"], rows["naver_main"]["suspend_attempts"]) == (
        "suspending",
        3,
    )
    counts = sync.suspend_products([product_id], make_connector, confirm_delay_s=0)
    assert counts["failed"] == 1  # the bounded attempts are spent
    naver = listings_of(collect_db, product_id)["naver_main"]
    assert naver["status"] == "suspend_failed" and "on sale after 4" in naver["error"]
    assert [r["id"] for r in sync.suspensions()] == [naver["id"]]
    sandbox.set_faults("naver", drop_suspensions=0)
    assert sync.retry_suspensions() == [product_id]
    assert sync.suspend_products([product_id], make_connector, confirm_delay_s=0)["confirmed"] == 1
    assert (
        market_state(make_connector, listings_of(collect_db, product_id)["naver_main"]).sale_state
        == "suspended"
    )
    assert sync.suspensions() == []


def test_price_change_propagates_margin_break_suspends_protected_price_stays(
    listed: dict[str, int],
    collect_db: Engine,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
) -> None:
    protected = listings_of(collect_db, listed["c"])["coupang_main"]
    assert sync.protect(protected["id"], "price") == ["price"]
    # b: 9000 -> 10500 (new price 14000), c: 9000 -> 9500 on a protected Coupang price (12000
    # still keeps 12000 * 0.9 - 9500 = 1300 >= 500), d: 9000 -> 2000 (margin 400 < 500:
    # suspended, never sold at that price), e: stock only.
    changes = {"b": 10_500, "c": 9500, "d": 2000}
    collect_run(
        [
            item(sku, changes.get(sku, cost), stock=4 if sku == "e" else 10)
            for sku, cost in BASE.items()
        ]
    )
    ids = [listed[s] for s in "bcde"]
    counts = sync.update_products(ids, make_connector, confirm_delay_s=0)
    assert counts["suspended"] == 2 and counts["skipped"] == 0, counts
    for account in ACCOUNTS:
        b = listings_of(collect_db, listed["b"])[account]
        assert b["sale_price"] == 14_000 and b["status"] == "active"  # 10500 * 1.2 / 0.9
        state = market_state(make_connector, b)
        assert (state.sale_state, state.sale_price) == ("on_sale", 14_000)
        d = listings_of(collect_db, listed["d"])[account]
        assert (d["status"], d["suspend_reason"]) == ("suspended", "below_min_margin")
        assert "below the minimum" in d["error"]
        assert market_state(make_connector, d).sale_state == "suspended"
        e = listings_of(collect_db, listed["e"])[account]
        assert market_state(make_connector, e).stock == 4
    c = listings_of(collect_db, listed["c"])
    assert c["coupang_main"]["sale_price"] == 12_000  # protected: 9000 * 1.2 / 0.9
    assert market_state(make_connector, c["coupang_main"]).sale_price == 12_000
    assert market_state(make_connector, c["naver_main"]).sale_price == 12_670  # 9500 * 1.2 / 0.9
    # A cost the protected price cannot carry (margin 12000 * 0.9 - 11000 = -200) suspends it.
    collect_run([item(sku, 11_000 if sku == "c" else cost) for sku, cost in BASE.items()])
    sync.update_products([listed["c"]], make_connector, confirm_delay_s=0)
    c = listings_of(collect_db, listed["c"])
    assert (c["coupang_main"]["status"], c["coupang_main"]["sale_price"]) == ("suspended", 12_000)
    assert c["naver_main"]["status"] == "active"
    assert market_state(make_connector, c["coupang_main"]).sale_price == 12_000


def test_product_back_in_stock_is_resumed(
    listed: dict[str, int],
    collect_db: Engine,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
) -> None:
    product_id = listed["e"]
    collect_run([item(sku, cost, stock=0 if sku == "e" else 10) for sku, cost in BASE.items()])
    assert sync.suspend_products([product_id], make_connector, confirm_delay_s=0)["confirmed"] == 2
    collect_run([item(sku, cost, stock=6 if sku == "e" else 10) for sku, cost in BASE.items()])
    assert sync.update_products([product_id], make_connector)["resumed"] == 2
    for row in listings_of(collect_db, product_id).values():
        assert (row["status"], row["suspend_reason"], row["stock"]) == ("active", None, 6)
        state = market_state(make_connector, row)
        assert (state.sale_state, state.stock) == ("on_sale", 6)
    # Gone (discontinued) is not lifted by sync: an operator decides.
    collect_run([item(sku, cost) for sku, cost in BASE.items() if sku != "e"])
    assert sync.suspend_products([product_id], make_connector, confirm_delay_s=0)["confirmed"] == 2
    collect_run([item(sku, cost) for sku, cost in BASE.items()])
    assert sync.update_products([product_id], make_connector)["resumed"] == 0
    assert {r["suspend_reason"] for r in listings_of(collect_db, product_id).values()} == {"gone"}


def test_sweep_publishes_leftovers_missed_and_stale_suspensions(
    listed: dict[str, int],
    collect_db: Engine,  # noqa: F811
) -> None:
    collect_run([item(sku, cost, stock=0 if sku == "a" else 10) for sku, cost in BASE.items()])
    published: list[tuple[str, list[int]]] = []
    summary = sync.sweep(lambda kind, pids: published.append((kind, pids)))
    # The outbox row (never published: a crash after the merge's commit), and the same product
    # found again as a live listing of an unsellable product.
    assert published == [("suspend", [listed["a"]]), ("suspend", [listed["a"]])]
    assert (summary["suspend"], summary["missed"], summary["resent"]) == (1, 1, 0)
    with collect_db.begin() as conn:  # a suspension whose task was lost
        conn.execute(
            text(
                "UPDATE listings SET status = 'suspending', updated_at = now() - interval '1 hour' "
                "WHERE product_id = :p"
            ),
            {"p": listed["b"]},
        )
    published.clear()
    summary = sync.sweep(lambda kind, pids: published.append((kind, pids)))
    assert published == [("suspend", sorted([listed["a"], listed["b"]]))]
    assert summary["resent"] == 1


def test_protect_refuses_unknown_fields_and_stock(
    listed: dict[str, int],
    collect_db: Engine,  # noqa: F811
) -> None:
    row = listings_of(collect_db, listed["a"])["naver_main"]
    assert sync.protect(row["id"], "name") == ["name"]
    assert sync.protect(row["id"], "price") == ["name", "price"]
    assert sync.protect(row["id"], "name") == ["name", "price"]
    assert sync.protect(row["id"], "name", on=False) == ["price"]
    with pytest.raises(Exception, match="stock is never protected"):
        sync.protect(row["id"], "stock")


@pytest.mark.worker
def test_sync_with_real_workers_from_the_merge_task(
    listed: dict[str, int],
    collect_db: Engine,  # noqa: F811
    sandbox: SandboxFixture,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    tmp_path: Path,
    redis_url: str,
) -> None:
    """The merge task (queue low) publishes after its commit; suspension (high) and update
    (medium) run on their own workers, as deployed: a sell-out ends suspended and confirmed on
    both markets although each drops the first request, a margin break is suspended, a
    protected price stays and an unprotected one propagates."""
    for market in ("coupang", "naver"):
        sandbox.set_faults(market, drop_suspensions=1)
    protected = listings_of(collect_db, listed["c"])["naver_main"]
    sync.protect(protected["id"], "price")
    changes = {"a": (9000, 0), "b": (2000, 10), "c": (9500, 10), "d": (10_500, 10)}
    records = [item(sku, *changes.get(sku, (cost, 10))) for sku, cost in BASE.items()]
    fake = FakeConnector(SUPPLIER, {"all": records})
    run_id = collect.open_run(SUPPLIER, "ownerclan_main")["run_id"]
    collect.plan_run(run_id, fake.factory)
    collect.run_slice(run_id, "all", fake.factory)
    env = worker_env(sandbox)
    high = start_worker(tmp_path, queues="high", concurrency=1, name="high", env=env)
    bulk = start_worker(tmp_path, queues="medium,low", concurrency=2, name="bulk", env=env)
    try:
        from tasks.collect import merge_run

        merged = merge_run.delay(run_id).get(timeout=60)
        assert merged["sync_published"] == {"suspend": 1, "update": 3}

        def done() -> bool:
            rows = {s: listings_of(collect_db, listed[s]) for s in "abcd"}
            return (
                all(r["status"] == "suspended" for s in "ab" for r in rows[s].values())
                and all(r["sale_price"] == 14_000 for r in rows["d"].values())
                and rows["c"]["coupang_main"]["sale_price"] == 12_670
            )

        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, high.log()[-3000:] + bulk.log()[-3000:]
            time.sleep(0.2)
        assert sandbox.counts()["dropped_suspensions"] == {"coupang": 1, "naver": 1}
        for sku, reason in (("a", "soldout"), ("b", "below_min_margin")):
            for row in listings_of(collect_db, listed[sku]).values():
                assert row["suspend_reason"] == reason and row["suspend_confirmed_at"]
                assert market_state(make_connector, row).sale_state == "suspended"
        c = listings_of(collect_db, listed["c"])
        assert c["naver_main"]["sale_price"] == 12_000
        assert market_state(make_connector, c["naver_main"]).sale_price == 12_000
        assert market_state(make_connector, c["coupang_main"]).sale_price == 12_670
        # Suspension ran on the high worker only (the banner lists every task: match receipts).
        received = "tasks.listings.suspend_listings["
        assert received in high.log() and received not in bulk.log()
    finally:
        stop_worker(high)
        stop_worker(bulk)


def test_suspension_and_its_sweep_are_routed_to_high_updates_to_medium() -> None:
    from dropship.celery_app import app

    router = app.amqp.router
    assert router.route({}, "tasks.listings.suspend_listings")["queue"].name == "high"
    assert router.route({}, "tasks.listings.sync_sweep")["queue"].name == "high"
    assert router.route({}, "tasks.listings.update_listings")["queue"].name == "medium"
    assert router.route({}, "tasks.listings.register_batch")["queue"].name == "medium"


def test_operator_commands_protect_list_and_retry(
    listed: dict[str, int],
    collect_db: Engine,  # noqa: F811
    redis_url: str,
) -> None:
    from typer.testing import CliRunner

    from dropship.cli import cli

    def dropship(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env={"COLUMNS": "250"})

    row = listings_of(collect_db, listed["a"])["coupang_main"]
    result = dropship("listings", "protect", str(row["id"]), "--field", "price")
    assert result.exit_code == 0 and "protected price" in result.output, result.output
    assert listings_of(collect_db, listed["a"])["coupang_main"]["protected_fields"] == ["price"]
    assert dropship("listings", "protect", str(row["id"]), "--field", "stock").exit_code != 0
    result = dropship("listings", "unprotect", str(row["id"]), "--field", "price")
    assert result.exit_code == 0 and "protected (none)" in result.output, result.output
    assert "every suspension is confirmed" in dropship("listings", "suspensions").output
    with collect_db.begin() as conn:
        conn.execute(
            text(
                "UPDATE listings SET status = 'suspend_failed', suspend_reason = 'soldout', "
                "error = 'market still shows it' WHERE id = :id"
            ),
            {"id": row["id"]},
        )
    shown = dropship("listings", "suspensions").output
    assert "suspend_failed" in shown and "market still shows it" in shown, shown
    result = dropship("listings", "retry-suspend", str(row["id"]))
    assert result.exit_code == 0 and "1 product(s)" in result.output, result.output
    assert listings_of(collect_db, listed["a"])["coupang_main"]["status"] == "suspending"
    import redis as redis_lib

    queued = redis_lib.Redis.from_url(redis_url).lrange("high", 0, -1)
    assert any(b"tasks.listings.suspend_listings" in m for m in queued)
