"""The order sweep against the sandbox markets over HTTP, real PostgreSQL: every item stored once
and matched to its listing, product and supplier option; unmatched items kept with the reason;
the watermark moves only after a complete sweep; two sweeps of one account at once store
nothing twice; acknowledgement is repeatable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.errors import TransientError
from dropship.orders import services
from tests.orders.conftest import (
    Catalog,
    SandboxFixture,
    listed_catalog,
    market_orders,
    order_rows,
)


@pytest.fixture
def catalog(
    rules_db: Engine, accounts: None, make_connector: Callable[[str], Any], sandbox: SandboxFixture
) -> Catalog:
    return listed_catalog(rules_db, make_connector)


@pytest.mark.parametrize("account", ["coupang_main", "naver_main"])
def test_sweep_stores_matches_and_keeps_unmatched_with_reason(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
    account: str,
) -> None:
    units = market_orders(sandbox, account, catalog.skus[(account, "plain")], count=2)
    units += market_orders(sandbox, account, catalog.skus[(account, "optioned")], count=3)
    foreign = market_orders(sandbox, account, None, count=1)  # listed outside this system
    result = services.sweep_account(account, make_connector)
    assert (result.seen, result.new, result.unmatched) == (6, 6, 1)
    rows = {r["market_order_id"]: r for r in order_rows(rules_db, account)}
    assert set(rows) == set(units + foreign)
    for unit in units[:2]:
        row = rows[unit]
        assert row["status"] == "new" and row["product_id"] == catalog.products["plain"]
        assert row["supplier_option_code"] is None and row["receiver_name"]
    with rules_db.connect() as conn:
        product_options = conn.execute(
            text("SELECT options FROM products WHERE id = :p"),
            {"p": catalog.products["optioned"]},
        ).scalar_one()
    codes = {o["supplier_option_code"] for o in product_options}
    for unit in units[2:]:
        row = rows[unit]
        assert row["status"] == "new" and row["product_id"] == catalog.products["optioned"]
        assert row["option_label"] and row["supplier_option_code"] in codes
        chosen = next(
            o for o in product_options if o["supplier_option_code"] == row["supplier_option_code"]
        )
        assert chosen["value"] in row["option_label"]
        assert row["unit_cost"] == plain_cost(rules_db, row["product_id"]) + chosen["price_delta"]
    stray = rows[foreign[0]]
    assert stray["status"] == "unmatched" and stray["product_id"] is None
    assert "no listing" in stray["status_reason"] or "no external SKU" in stray["status_reason"]
    assert sorted(result.forward) == sorted(rows[u]["id"] for u in units)
    # Watermark moved to the sweep's end; the sweep state says it succeeded.
    with rules_db.connect() as conn:
        sweep = conn.execute(
            text(
                "SELECT s.last_success_at, s.last_error, a.orders_watermark FROM order_sweeps s "
                "JOIN accounts a ON a.id = s.account_id WHERE a.name = :a"
            ),
            {"a": account},
        ).one()
    assert sweep.last_success_at and sweep.last_error is None and sweep.orders_watermark
    # Again: the overlap re-reads everything, nothing is stored twice.
    again = services.sweep_account(account, make_connector)
    assert again.new == 0 and len(order_rows(rules_db, account)) == 6
    # Acknowledge: once at the market, repeatable.
    ack = services.acknowledge_orders(account, result.acknowledge, make_connector)
    assert ack["acknowledged"] == 5
    assert services.acknowledge_orders(account, result.acknowledge, make_connector) == {
        "acknowledged": 0,
        "skipped": 5,
    }
    assert all(
        rows_now["acknowledged_at"]
        for rows_now in order_rows(rules_db, account)
        if rows_now["status"] == "new"
    )


def plain_cost(engine: Engine, product_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT price FROM products WHERE id = :p"), {"p": product_id}
            ).scalar_one()
        )


def test_two_sweeps_of_one_account_at_once_store_each_item_once(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
) -> None:
    market_orders(sandbox, "naver_main", catalog.skus[("naver_main", "plain")], count=40)
    results: list[services.SweepResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        try:
            barrier.wait(10)
            results.append(services.sweep_account("naver_main", make_connector))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    rows = order_rows(rules_db, "naver_main")
    assert len(rows) == 40
    assert len({r["market_order_id"] for r in rows}) == 40
    assert sum(r.new for r in results) == 40
    # The second one saw the first's lock and stopped (or ran after it and found nothing new).
    assert any(r.skipped or r.new == 0 for r in results)


def test_failed_sweep_keeps_its_watermark_and_records_the_error(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
) -> None:
    services.sweep_account("coupang_main", make_connector)
    with rules_db.connect() as conn:
        mark = conn.execute(
            text("SELECT orders_watermark FROM accounts WHERE name = 'coupang_main'")
        ).scalar_one()
    market_orders(sandbox, "coupang_main", catalog.skus[("coupang_main", "plain")], count=3)
    sandbox.set_faults("coupang", error_rate=1.0)
    with pytest.raises(TransientError):
        services.sweep_account("coupang_main", make_connector)
    with rules_db.connect() as conn:
        row = conn.execute(
            text(
                "SELECT a.orders_watermark, s.last_error FROM accounts a "
                "JOIN order_sweeps s ON s.account_id = a.id WHERE a.name = 'coupang_main'"
            )
        ).one()
    assert row.orders_watermark == mark and row.last_error
    sandbox.set_faults("coupang", error_rate=0.0)
    assert services.sweep_account("coupang_main", make_connector).new == 3


def test_a_unit_the_market_refuses_to_acknowledge_does_not_hold_back_the_others(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
) -> None:
    from dropship.errors import PermanentError
    from dropship.sandbox.naver import NaverWorld

    units = market_orders(sandbox, "naver_main", catalog.skus[("naver_main", "plain")], count=3)
    result = services.sweep_account("naver_main", make_connector)
    # Cancelled at the market between the sweep and the acknowledgement.
    with sandbox.state.lock:
        NaverWorld(sandbox.state).store.product_orders[units[1]].status = "CANCELED"
    with pytest.raises(PermanentError, match=units[1]):
        services.acknowledge_orders("naver_main", result.acknowledge, make_connector)
    acked = {r["market_order_id"]: r["acknowledged_at"] for r in order_rows(rules_db)}
    assert acked[units[1]] is None and acked[units[0]] and acked[units[2]]
    with rules_db.connect() as conn:
        kinds = conn.execute(text("SELECT kind FROM order_events")).scalars().all()
    assert kinds.count("acknowledge_failed") == 1
    # The next sweep sees the cancellation: nothing was bought, so the item is closed.
    services.sweep_account("naver_main", make_connector)
    status = {r["market_order_id"]: r["status"] for r in order_rows(rules_db)}
    assert status[units[1]] == "cancelled"


def test_a_naver_re_read_reads_the_details_of_changed_orders_only(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
) -> None:
    from dropship.sandbox.naver import NaverWorld

    def detail_calls() -> int:
        return int(sandbox.counts()["calls"]["naver"].get("product-orders.query", 0))

    units = market_orders(sandbox, "naver_main", catalog.skus[("naver_main", "plain")], count=4)
    first = services.sweep_account("naver_main", make_connector)
    assert (first.new, first.unchanged) == (4, 0)
    # Every sweep re-reads its overlap: the stored, unchanged ones are not queried again.
    before = detail_calls()
    again = services.sweep_account("naver_main", make_connector)
    assert (again.seen, again.unchanged, again.new) == (0, 4, 0)
    assert detail_calls() == before
    # A claim on one (its status stays PAYED: only the claim status tells it apart) and a
    # status change on another are read, stored and acted on; the other two are not read.
    world = NaverWorld(sandbox.state)
    with sandbox.state.lock:
        claimed = world.store.product_orders[units[0]]
        claimed.claim_type, claimed.claim_status = "CANCEL", "CANCEL_REQUEST"
        world._bump(claimed, "CLAIM_REQUESTED")
        cancelled = world.store.product_orders[units[1]]
        cancelled.status = "CANCELED"
        world._bump(cancelled, "CLAIM_COMPLETED")
    time.sleep(0.01)  # past the 1 ms the inclusive window end leaves to the next sweep
    third = services.sweep_account("naver_main", make_connector)
    assert (third.seen, third.unchanged, third.updated) == (2, 2, 2)
    assert detail_calls() == before + 1
    rows = {r["market_order_id"]: r for r in order_rows(rules_db, "naver_main")}
    assert rows[units[0]]["status"] == "cancel_requested"
    assert rows[units[0]]["market_claim"] == "CANCEL_REQUEST"
    assert rows[units[1]]["status"] == "cancelled"
    assert [rows[u]["status"] for u in units[2:]] == ["new", "new"]


def test_an_order_in_a_month_without_partition_is_stored_after_creating_it(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
) -> None:
    from dropship.maintenance.partitions import Month

    def partitions() -> list[str]:
        with rules_db.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT inhrelid::regclass::text FROM pg_inherits "
                        "WHERE inhparent = 'orders'::regclass"
                    )
                ).scalars()
            )

    # This month without its partition, as if beat's monthly job had not run: the insert is
    # refused, the partition created, the insert retried, nothing lost.
    month = Month.of(datetime.now(UTC)).table
    if month in partitions():
        with rules_db.begin() as conn:
            conn.execute(text(f"ALTER TABLE orders DETACH PARTITION {month}"))
            conn.execute(text(f"DROP TABLE {month}"))
    assert month not in partitions()
    units = market_orders(sandbox, "coupang_main", catalog.skus[("coupang_main", "plain")], 3)
    result = services.sweep_account("coupang_main", make_connector)
    assert result.new == 3
    assert {r["market_order_id"] for r in order_rows(rules_db, "coupang_main")} == set(units)
    assert month in partitions()


def test_a_cancel_request_before_shipment_is_marked_for_the_cancellation_flow(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
) -> None:
    from dropship.orders import forwarding
    from dropship.sandbox.naver import NaverWorld

    units = market_orders(sandbox, "naver_main", catalog.skus[("naver_main", "plain")], count=2)
    ids = services.sweep_account("naver_main", make_connector).forward
    forwarding.forward_orders(ids, connector_factory=lambda s: make_connector(f"{s}_main"))
    world = NaverWorld(sandbox.state)
    with sandbox.state.lock:  # the buyer asks to cancel one of them at the market
        po = world.store.product_orders[units[0]]
        po.product["claimType"], po.product["claimStatus"] = "CANCEL", "CANCEL_REQUEST"
        world._bump(po, "CLAIM_REQUESTED")
    # Naver's window end is inclusive and we stop 1 ms before ours: a change in that last
    # millisecond is read by the next sweep's overlap. Step past it so this sweep reads it.
    time.sleep(0.01)
    result = services.sweep_account("naver_main", make_connector)
    assert result.cancel_requested == 1 and result.new == 0
    rows = {r["market_order_id"]: r for r in order_rows(rules_db)}
    assert rows[units[0]]["status"] == "cancel_requested"
    assert rows[units[0]]["market_claim"] == "CANCEL_REQUEST"
    assert rows[units[1]]["status"] == "forwarded"
    with rules_db.connect() as conn:
        event = conn.execute(
            text(
                "SELECT from_status, to_status FROM order_events "
                "WHERE order_id = :o AND kind = 'market_status'"
            ),
            {"o": rows[units[0]]["id"]},
        ).one()
    assert tuple(event) == ("forwarded", "cancel_requested")


def test_a_database_refusal_of_the_rows_reports_no_receiver_data(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
) -> None:
    from dropship.errors import PermanentError

    units = market_orders(sandbox, "coupang_main", catalog.skus[("coupang_main", "plain")], count=1)
    (sheet,) = [
        s
        for s in sandbox._admin("GET", "coupang/orders")["orders"]
        if str(s["shipmentBoxId"]) == units[0]
    ]
    name, phone = sheet["receiver"]["name"], sheet["receiver"]["safeNumber"]
    services.sweep_account("coupang_main", make_connector)  # creates the month's partition
    with rules_db.begin() as conn:  # the database refuses the rows next time (SQLAlchemy's
        # error text would quote the statement's parameters: receivers' names and phones)
        conn.execute(text("DELETE FROM orders"))
        conn.execute(text("ALTER TABLE orders ADD CONSTRAINT ck_test_refuse CHECK (quantity < 0)"))
    try:
        with pytest.raises(PermanentError) as raised:
            services.sweep_account("coupang_main", make_connector)
    finally:
        with rules_db.begin() as conn:
            conn.execute(text("ALTER TABLE orders DROP CONSTRAINT ck_test_refuse"))
    with rules_db.connect() as conn:
        last_error = conn.execute(text("SELECT last_error FROM order_sweeps")).scalar_one()
    for shown in (str(raised.value), repr(raised.value), last_error):
        assert "CheckViolation" in shown
        assert name not in shown and phone not in shown
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_lost_forward_is_published_again_once_per_stale_period(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
) -> None:
    account = "coupang_main"
    market_orders(sandbox, account, catalog.skus[(account, "plain")], count=2)
    first = services.sweep_account(account, make_connector)
    assert len(first.forward) == 2
    # Their forward messages were lost (never ran): make the items look untouched for long.
    with rules_db.begin() as conn:
        conn.execute(text("UPDATE orders SET updated_at = now() - interval '1 hour'"))
    again = services.sweep_account(account, make_connector)
    assert sorted(again.forward) == sorted(first.forward)  # re-published once...
    # ...and not on every sweep after that while their task waits in a backlog.
    assert services.sweep_account(account, make_connector).forward == []


def test_the_memory_budget_scale_commits_the_sweep_in_smaller_chunks(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep holds at most ``batch_rows(SWEEP_CHUNK)`` items before it commits them: with
    the scale a small budget gives, more, smaller transactions (one ``xmin`` per commit)."""
    from dropship.settings import get_settings

    def commits(units: list[str]) -> int:
        with rules_db.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(DISTINCT xmin::text) FROM orders "
                        "WHERE market_order_id = ANY(:u)"
                    ),
                    {"u": units},
                ).scalar_one()
            )

    sku = catalog.skus[("coupang_main", "plain")]
    first = market_orders(sandbox, "coupang_main", sku, count=6)
    assert services.sweep_account("coupang_main", make_connector).new == 6
    assert commits(first) == 1  # default scale: 500 items per chunk
    monkeypatch.setenv("DROPSHIP_ROW_BATCH_SCALE", "0.004")  # 500 -> 2 items per chunk
    get_settings.cache_clear()
    try:
        # Placed after the first six: the sweep's overlap re-reads those first, in their own
        # chunks, so the new ones are not mixed into them.
        later = (datetime.now(UTC) - timedelta(seconds=100)).isoformat()
        second = market_orders(sandbox, "coupang_main", sku, count=6, ordered_at=later)
        assert services.sweep_account("coupang_main", make_connector).new == 6
    finally:
        monkeypatch.delenv("DROPSHIP_ROW_BATCH_SCALE")
        get_settings.cache_clear()
    assert commits(second) == 3


def test_a_purchase_left_placing_by_a_dead_worker_comes_back_before_the_stale_period(
    sandbox: SandboxFixture,
    catalog: Catalog,
    make_connector: Callable[[str], Any],
    rules_db: Engine,
) -> None:
    """A forward claimed the purchase (``placing``, committed) and its worker died in the
    supplier call: no error recorded, nobody holds the item's forward lock. The sweep publishes
    it again after ``orders.abandoned_after_s`` (2 minutes), not after the 10-minute stale
    period; a purchase whose forward lock is held (a worker is placing it right now) or that
    recorded a transient error (its task is retrying: after 6 claims its backoff may be 128 s)
    is left alone until that retry is overdue."""
    from dropship.orders.forwarding import _lock_all, _unlock_all

    account = "coupang_main"
    market_orders(sandbox, account, catalog.skus[(account, "plain")], count=3)
    ids = sorted(services.sweep_account(account, make_connector).forward)
    assert len(ids) == 3
    with rules_db.begin() as conn:
        keys = {
            int(r.id): r.order_key
            for r in conn.execute(
                text("SELECT id, order_key FROM orders WHERE id = ANY(:i)"), {"i": ids}
            )
        }
        for order_id in ids:
            conn.execute(
                text(
                    "INSERT INTO purchase_orders (order_key, supplier, status, order_id, "
                    "ordered_at, task_id, attempts, updated_at) SELECT order_key, supplier, "
                    "'placing', id, ordered_at, :t, 1, now() - interval '3 minutes' "
                    "FROM orders WHERE id = :id"
                ),
                {"id": order_id, "t": f"task-{order_id}"},
            )
        conn.execute(
            text(
                "UPDATE orders SET status = 'forwarding', "
                "updated_at = now() - interval '3 minutes' WHERE id = ANY(:i)"
            ),
            {"i": ids},
        )
        conn.execute(
            text(
                "UPDATE purchase_orders SET last_error = 'TransientHttpError: 503', "
                "attempts = 6 WHERE order_key = :k"
            ),
            {"k": keys[ids[2]]},
        )
    dead, live, retrying = ids
    with rules_db.connect() as holder:
        assert _lock_all(holder, [keys[live]])  # a live worker placing it right now
        try:
            swept = services.sweep_account(account, make_connector)
        finally:
            _unlock_all(holder, [keys[live]])
    assert swept.forward == [dead]
    assert swept.abandoned_tasks == [f"task-{dead}"]
    # Touched as it is published: not again on the next sweep while its new task waits; the
    # live one, its lock now free, is published once it has been untouched that long.
    again = services.sweep_account(account, make_connector)
    assert again.forward == [live]
    assert services.sweep_account(account, make_connector).forward == []
    # The retrying one once its retry is overdue (120 s past the 128 s backoff): its message
    # went with a killed worker.
    with rules_db.begin() as conn:
        conn.execute(
            text(
                "UPDATE purchase_orders SET updated_at = now() - interval '250 seconds' "
                "WHERE order_key = :k"
            ),
            {"k": keys[retrying]},
        )
    assert services.sweep_account(account, make_connector).forward == [retrying]


def test_the_batch_of_a_forward_task_that_died_is_read_from_the_result_backend(
    redis_url: str,
) -> None:
    """A started forward task's arguments (order ids only) are in the result backend from the
    moment it starts (``task_track_started`` with ``result_extended``, real Redis here): the
    sweep publishes its whole batch again. A finished task, one the backend never saw, or a
    backend that cannot answer adds nothing."""
    from celery.app.task import Context

    from dropship.celery_app import app
    from dropship.orders.forwarding import batches_of
    from tasks.orders import _task_meta

    def started(task_id: str, ids: list[int], state: str = "STARTED") -> None:
        request = Context(
            id=task_id, task="tasks.orders.forward_order", args=[ids], kwargs={}, retries=0
        )
        if state == "RETRY":  # as Celery records a retry: with the exception
            app.backend.mark_as_retry(task_id, TransientError("503"), request=request)
        else:
            app.backend.store_result(task_id, {"pid": 1, "hostname": "w"}, state, request=request)

    started("dead-1", [11, 12, 13])
    started("dead-2", [13, 14], state="RETRY")
    started("done-1", [15], state="SUCCESS")

    def meta(task_id: str) -> dict[str, Any]:
        if task_id == "backend-down":
            raise ConnectionError("redis unavailable")
        return _task_meta(task_id)

    assert batches_of(["dead-1", "done-1", "never-seen", "backend-down", "dead-2"], meta) == [
        11,
        12,
        13,
        14,
    ]
