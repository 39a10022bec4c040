"""Stock per option against the sandbox over HTTP and real PostgreSQL (and real workers from
the merge task): an option sold out at the supplier while the others stay in stock reaches both
markets as that option's zero, the others keep theirs, the first zero write dropped by the
market is noticed by reading the listing back and sent again; an option the supplier no longer
offers goes to zero; every listed option sold out suspends the listing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.catalog import services as collect
from dropship.errors import PermanentError, TransientError
from dropship.listings import services, sync
from dropship.platforms.interfaces import OptionStock, ProductOption
from tests.catalog.conftest import collect_db, worker_env  # noqa: F401  (fixture)
from tests.catalog.test_services import FakeConnector
from tests.conftest import start_worker, stop_worker
from tests.images.conftest import HostedStore, image_store  # noqa: F401  (fixture)
from tests.listings.conftest import add_mapping, add_rule
from tests.listings.test_register import process_images
from tests.listings.test_sync import (  # noqa: F401  (fixtures)
    ACCOUNTS,
    BASE,
    SUPPLIER,
    accounts,
    collect_run,
    item,
    listings_of,
    market_state,
    outbox,
)
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    connector_settings,
    make_connector,
    sandbox,
    sandbox_server,
)

SIZES = {"S": 5, "M": 5, "L": 5}


def sized(stocks: dict[str, int]) -> Any:
    """The option product "o": one option per size, supplier option code "<size>-1"."""
    options = tuple(
        ProductOption(name="사이즈", value=size, stock=n, supplier_option_code=f"{size}-1")
        for size, n in stocks.items()
    )
    return item("o", stock=sum(stocks.values()), options=options)


def records(stocks: dict[str, int]) -> list[Any]:
    return [item(sku, cost) for sku, cost in BASE.items()] + [sized(stocks)]


@pytest.fixture
def optioned(
    collect_db: Engine,  # noqa: F811
    accounts: None,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    sandbox: SandboxFixture,  # noqa: F811
    image_store: HostedStore,  # noqa: F811
) -> int:
    """The products of the sync tests plus "o" with three sizes, listed on both accounts and
    synced once (the stock sent is on the listing); returns the product id of "o"."""
    with collect_db.begin() as conn:
        for market, category in (("coupang", "56137"), ("naver", "50000803")):
            add_rule(conn, market=market, margin="0.2", fee="0.1", min_margin=500)
            add_mapping(conn, market=market, market_category=category)
    collect_run(records(SIZES))
    process_images(collect_db, sandbox)
    for account in ACCOUNTS:
        planned = services.plan_registrations(account)
        assert (
            services.register_listings(account, planned["publish"], make_connector)["active"]
            == len(BASE) + 1
        )
    with collect_db.connect() as conn:
        product_id = int(
            conn.execute(text("SELECT id FROM products WHERE supplier_sku = 'o'")).scalar_one()
        )
    for row in listings_of(collect_db, product_id).values():
        assert option_stock(make_connector, row) == SIZES, row["account"]
    return product_id


def option_stock(connect: Callable[[str], Any], row: dict[str, Any]) -> dict[str, int]:
    """What the market sells of each option: its stock, 0 when its sale is stopped."""
    state = market_state(connect, row)
    assert state is not None and len(state.options) == len(SIZES), state
    return {str(o.value): o.stock if o.on_sale else 0 for o in state.options}


def listed_option_stock(row: dict[str, Any]) -> dict[str, int]:
    return {o["value"]: o.get("stock") for o in row["options"]}


def test_one_option_sold_out_is_zero_at_both_markets_others_unchanged(
    optioned: int,
    collect_db: Engine,  # noqa: F811
    sandbox: SandboxFixture,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
) -> None:
    # L sells out while M takes its stock: the product's own stock stays 15, only its
    # options changed. The merge still records the update (options are compared too).
    now = {"S": 5, "M": 10, "L": 0}
    merged = collect_run(records(now))
    assert merged["sync_changes"] == 1
    assert outbox(collect_db) == [(optioned, "update")]
    sync.drain_outbox(lambda kind, ids: None)
    # Each market answers the first zero write without applying it: the read-back sees L
    # still on sale and sends it again.
    for market in ("coupang", "naver"):
        sandbox.set_faults(market, drop_suspensions=1)
    counts = sync.update_products([optioned], make_connector, confirm_delay_s=0)
    assert counts["updated"] == 2, counts
    assert sandbox.counts()["dropped_suspensions"] == {"coupang": 1, "naver": 1}
    for account, row in listings_of(collect_db, optioned).items():
        assert option_stock(make_connector, row) == now, account
        assert (row["status"], row["stock"], row["error"]) == ("active", 15, None)
        assert listed_option_stock(row) == now
        state = market_state(make_connector, row)
        assert (state.sale_state, state.stock) == ("on_sale", 15)
    # Delivered again: nothing differs, nothing sent.
    assert sync.update_products([optioned], make_connector, confirm_delay_s=0)["unchanged"] == 2
    # The supplier drops S altogether: no option of the supplier is S any more -> 0.
    collect_run(records({"M": 10, "L": 2}))
    assert outbox(collect_db) == [(optioned, "update")]
    assert sync.update_products([optioned], make_connector, confirm_delay_s=0)["updated"] == 2
    for account, row in listings_of(collect_db, optioned).items():
        assert option_stock(make_connector, row) == {"S": 0, "M": 10, "L": 2}, account


def test_every_listed_option_sold_out_suspends_and_restock_resumes_per_option(
    optioned: int,
    collect_db: Engine,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
) -> None:
    # The product still has stock, but only in an option the listing never had.
    collect_run([item(sku, cost) for sku, cost in BASE.items()] + [sized({"XL": 7})])
    counts = sync.update_products([optioned], make_connector, confirm_delay_s=0)
    assert counts["suspended"] == 2, counts
    for row in listings_of(collect_db, optioned).values():
        assert (row["status"], row["suspend_reason"]) == ("suspended", "soldout")
        assert market_state(make_connector, row).sale_state == "suspended"
    back = {"S": 0, "M": 3, "L": 1}
    collect_run(records(back))
    assert sync.update_products([optioned], make_connector, confirm_delay_s=0)["resumed"] == 2
    for account, row in listings_of(collect_db, optioned).items():
        assert row["status"] == "active" and listed_option_stock(row) == back, account
        assert market_state(make_connector, row).sale_state == "on_sale"
        assert option_stock(make_connector, row) == back, account


def test_a_market_that_keeps_selling_a_sold_out_option_is_retried_not_trusted(
    optioned: int,
    collect_db: Engine,  # noqa: F811
    sandbox: SandboxFixture,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
) -> None:
    collect_run(records({"S": 5, "M": 5, "L": 0}))
    sandbox.set_faults("naver", drop_suspensions=100)
    with pytest.raises(TransientError, match="still on sale"):
        sync.update_products([optioned], make_connector, confirm_delay_s=0)
    rows = listings_of(collect_db, optioned)
    assert option_stock(make_connector, rows["coupang_main"])["L"] == 0
    naver = rows["naver_main"]
    assert "L (5 on sale)" in naver["error"]
    # Not recorded as sent: the retry sends it again, and the market applies it this time.
    assert listed_option_stock(naver)["L"] != 0  # None: never sent
    # Should the task's retries run out, the sweep finds the unconfirmed zero and queues the
    # update again (the Coupang listing, confirmed, is not among them).
    sync.drain_outbox(lambda kind, ids: None)
    published: list[tuple[str, list[int]]] = []
    assert sync.sweep(lambda kind, ids: published.append((kind, ids)))["option_zero"] == 0
    with collect_db.begin() as conn:
        conn.execute(
            text("UPDATE listings SET updated_at = now() - interval '1 minute' WHERE id = :i"),
            {"i": naver["id"]},
        )
    assert sync.sweep(lambda kind, ids: published.append((kind, ids)))["option_zero"] == 1
    assert published == [("update", [optioned])]
    sandbox.set_faults("naver", drop_suspensions=0)
    assert sync.update_products([optioned], make_connector, confirm_delay_s=0)["updated"] == 1
    assert option_stock(make_connector, listings_of(collect_db, optioned)["naver_main"])["L"] == 0
    with collect_db.begin() as conn:
        conn.execute(text("UPDATE listings SET updated_at = now() - interval '1 minute'"))
    published.clear()
    assert sync.sweep(lambda kind, ids: published.append((kind, ids)))["option_zero"] == 0


def test_naver_sandbox_keeps_option_stock_and_refuses_unknown_option_ids(
    optioned: int,
    collect_db: Engine,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
) -> None:
    row = listings_of(collect_db, optioned)["naver_main"]
    connector = make_connector("naver_main")
    # The product's own stock is the options' sum on Naver: setting it alone changes nothing
    # a buyer can pick (why option listings go through update_option_stock).
    connector.update_stock(row["market_product_id"], 0)
    assert option_stock(make_connector, row) == SIZES
    product = connector._origin_product(row["market_product_id"])
    combos = product["originProduct"]["detailAttribute"]["optionInfo"]["optionCombinations"]
    assert all(isinstance(c["id"], int) for c in combos)
    combos[0]["id"] = 1  # not one of this product's options
    combos[0]["stockQuantity"] = 0
    with pytest.raises(PermanentError, match="HTTP 400"):  # 옵션을 찾을 수 없습니다
        connector._put_origin_product(row["market_product_id"], product)
    assert option_stock(make_connector, row) == SIZES
    connector.update_option_stock(
        row["market_product_id"],
        [OptionStock("사이즈", "M", 2, "M-1"), OptionStock("사이즈", "S", 1, "S-1")],
    )
    # L is named by no entry: 0.
    assert option_stock(make_connector, row) == {"S": 1, "M": 2, "L": 0}


@pytest.mark.worker
def test_option_sell_out_from_the_merge_task_with_real_workers(
    optioned: int,
    collect_db: Engine,  # noqa: F811
    sandbox: SandboxFixture,  # noqa: F811
    make_connector: Callable[[str], Any],  # noqa: F811
    tmp_path: Path,
    redis_url: str,
) -> None:
    now = {"S": 5, "M": 10, "L": 0}
    fake = FakeConnector(SUPPLIER, {"all": records(now)})
    run_id = collect.open_run(SUPPLIER, "ownerclan_main")["run_id"]
    collect.plan_run(run_id, fake.factory)
    collect.run_slice(run_id, "all", fake.factory)
    for market in ("coupang", "naver"):
        sandbox.set_faults(market, drop_suspensions=1)
    env = worker_env(sandbox)
    high = start_worker(tmp_path, queues="high", concurrency=1, name="high", env=env)
    bulk = start_worker(tmp_path, queues="medium,low", concurrency=2, name="bulk", env=env)
    try:
        from tasks.collect import merge_run

        merged = merge_run.delay(run_id).get(timeout=60)
        assert merged["sync_published"] == {"suspend": 0, "update": 1}
        deadline = time.monotonic() + 60
        while not all(
            listed_option_stock(r) == now for r in listings_of(collect_db, optioned).values()
        ):
            assert time.monotonic() < deadline, high.log()[-3000:] + bulk.log()[-3000:]
            time.sleep(0.2)
        for account, row in listings_of(collect_db, optioned).items():
            assert option_stock(make_connector, row) == now, account
        assert sandbox.counts()["dropped_suspensions"] == {"coupang": 1, "naver": 1}
    finally:
        stop_worker(high)
        stop_worker(bulk)
