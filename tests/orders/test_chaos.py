"""Chaos run of the order flow (marker ``chaos``): real workers on ``high`` against the sandbox,
a test-owned PostgreSQL and Redis, sweeps published the way ``dropship up``'s beat publishes them
(every two seconds here), while

* workers are SIGKILLed mid-forward (a whole worker with its pool, and one pool child),
* the Redis broker is killed and started again empty (queued and unacked messages are gone),
* PostgreSQL is shut down with SIGQUIT (immediate, no checkpoint) and started again,
* OwnerClan loses the answers of half its mutations (createOrder, cancelOrder carried out, the
  answer lost) and is slow, and both markets answer 5xx to a fifth of the requests,
* buyers cancel some orders before shipment.

Then the faults stop and the sweeps alone must bring every order to a visible end: exactly one
purchase per order key at the sandbox supplier, every shipped order's tracking at its market,
every cancellation before shipment cancelled at the supplier and confirmed at the market, no
``orders``/``purchase_orders`` row left in an in-flight state (``new``, ``forwarding``,
``pending``, ``placing``, ``cancel_requested`` without an operator reason, ``shipped``).

``uv run pytest -m chaos`` runs it alone (about two minutes)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis as redis_lib
from celery import Celery
from kombu import Exchange, Queue
from sqlalchemy import Engine, create_engine, text

from dropship import db, migrate
from dropship.celery_app import QUEUE_NAMES, TASK_ROUTES
from dropship.embedded.postgres import EmbeddedPostgres, reachable_install
from dropship.embedded.redis import EmbeddedRedis
from dropship.embedded.system import service_user
from dropship.maintenance.partitions import ensure_partitions
from dropship.orders.claims import OPERATOR
from dropship.settings import get_settings
from tests.catalog.conftest import worker_env
from tests.conftest import WorkerProcess, start_worker, stop_worker
from tests.orders.conftest import (
    Catalog,
    SandboxFixture,
    insert_product,
    list_products,
    market_orders,
    sandbox_items,
    sellable,
)
from tests.own_redis import kill as kill_redis
from tests.own_redis import own_redis_server

pytestmark = [pytest.mark.worker, pytest.mark.chaos, pytest.mark.slow]

SWEEP_EVERY_S = 2.0
TRACKING_DELAY_S = 25.0  # purchase -> tracking at the sandbox supplier (world = wall time)
RECOVERY_S = 150.0
# Statuses an order item may end in; anything else is in flight.
ORDER_DONE = ("dispatched", "cancelled")
PURCHASE_IN_FLIGHT = ("pending", "placing", "cancel_requested")


# --------------------------------------------------------------------------- own servers


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    # Persistent like the stack's Redis (`dropship up`): a restart keeps queued messages.
    yield from own_redis_server(persist=True)


@dataclass
class OwnPostgres:
    server: EmbeddedPostgres
    url: str
    engine: Engine

    def outage(self, seconds: float) -> None:
        """Immediate shutdown (SIGQUIT: every backend dies, no checkpoint, crash recovery at
        the next start), ``seconds`` without a server, then the same server again."""
        proc = self.server.process
        assert proc is not None
        proc.send_signal(signal.SIGQUIT)
        proc.wait(20)
        time.sleep(seconds)
        self.server.start()


@pytest.fixture
def own_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnPostgres]:
    """A PostgreSQL server of this test only (it is shut down mid-run), migrated; this process
    and the workers use it through ``DROPSHIP_DATABASE_URL``."""
    run_as = service_user()
    tmp = Path(tempfile.mkdtemp(prefix="dropship-chaos-pg-"))
    tmp.chmod(0o755)
    server = EmbeddedPostgres(
        tmp / "pg", run_as, reachable_install(run_as, []), log_file=tmp / "pg.log"
    )
    server.start()
    url = server.url()
    try:
        migrate.upgrade(url)
        monkeypatch.setenv("DROPSHIP_DATABASE_URL", url)
        get_settings.cache_clear()
        db.reset_engine()
        engine = create_engine(db.normalise_url(url), pool_pre_ping=True)
        with engine.begin() as conn:
            ensure_partitions(conn)
        yield OwnPostgres(server, url, engine)
        engine.dispose()
    finally:
        db.reset_engine()
        get_settings.cache_clear()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the beat stand-in


class Beat:
    """Publishes the order sweeps every ``SWEEP_EVERY_S`` to the test's own broker, as beat
    would (same task names, queue ``high``, ``expires``); a publish while Redis is down is
    skipped, as beat's tick would be."""

    TASKS = (
        "tasks.orders.sweep_order_accounts",
        "tasks.fulfilment.tracking_sweep",
        "tasks.fulfilment.claims_sweep",
    )

    def __init__(self, broker_url: str) -> None:
        exchange = Exchange("dropship", type="direct")
        # Not the current app: later tests' AsyncResult(...) without an app must still find
        # the project's app and its result backend.
        self.app = Celery("chaos-beat", broker=broker_url, set_as_current=False)
        self.app.conf.update(
            task_queues=[Queue(n, exchange, routing_key=n) for n in QUEUE_NAMES],
            task_routes=TASK_ROUTES,
            task_default_exchange="dropship",
            task_serializer="json",
            broker_connection_retry_on_startup=True,
        )
        self.published = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in self.TASKS:
                try:
                    self.app.send_task(name, queue="high", expires=30, retry=False)
                    self.published += 1
                except Exception:  # broker down: this tick is lost, the next one is not
                    self.skipped += 1
            self._stop.wait(SWEEP_EVERY_S)

    def __enter__(self) -> Beat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.app.close()


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def chaos_catalog(
    own_postgres: OwnPostgres,
    sandbox: SandboxFixture,
    accounts: None,
    make_connector: Callable[[str], Any],
) -> Catalog:
    engine = own_postgres.engine
    plain = sandbox_items(make_connector, lambda p: sellable(p) and not p.options, 2)
    optioned = sandbox_items(make_connector, lambda p: sellable(p) and len(p.options) >= 2, 1)[0]
    products = {f"plain{i}": insert_product(engine, p) for i, p in enumerate(plain)}
    products["optioned"] = insert_product(engine, optioned)
    return list_products(engine, make_connector, products)


class Workers:
    """Real workers on ``high``; killed and replaced during the run."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.running: list[WorkerProcess] = []
        self.dead: list[WorkerProcess] = []
        self.serial = 0

    def start(self) -> WorkerProcess:
        self.serial += 1
        worker = start_worker(
            self.tmp_path, queues="high", concurrency=2, name=f"w{self.serial}", env=self.env
        )
        self.running.append(worker)
        return worker

    def kill_worker(self) -> None:
        """SIGKILL a whole worker (main process and pool) and start another in its place:
        its reserved and running messages stay unacked at the broker."""
        worker = self.running.pop(0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(10)
        self.dead.append(worker)
        self.start()

    def kill_child(self) -> None:
        """SIGKILL one pool process of a worker: its main process sees the child lost
        (``task_reject_on_worker_lost``) and starts a new child."""
        children = psutil.Process(self.running[-1].proc.pid).children()
        assert children, "worker has no pool processes"
        children[0].send_signal(signal.SIGKILL)

    def stop(self) -> None:
        for worker in self.running:
            stop_worker(worker)

    def logs(self) -> str:
        return "\n".join(
            f"--- {w.log_path.name}\n{w.log()[-4000:]}" for w in [*self.dead, *self.running]
        )


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    except Exception:  # the server is down right now
        return None


def placing(engine: Engine) -> bool:
    return bool(scalar(engine, "SELECT count(*) FROM purchase_orders WHERE status = 'placing'"))


def sandbox_view(box: SandboxFixture) -> dict[str, Any]:
    counts = box.counts()
    supplier = box._admin("GET", "suppliers/orders?supplier=ownerclan")["orders"]
    coupang = {str(o["shipmentBoxId"]): o for o in box._admin("GET", "coupang/orders")["orders"]}
    naver = {
        str(o["productOrder"]["productOrderId"]): o
        for o in box._admin("GET", "naver/orders")["productOrders"]
    }
    return {
        "bought": counts.get("purchase_orders") or {},
        "invoices": counts.get("coupang_invoices") or {},
        "supplier": {o["order_key"]: o for o in supplier},
        "coupang": coupang,
        "naver": naver,
    }


def market_tracking(view: dict[str, Any], market: str, unit: str) -> str | None:
    if market == "coupang":
        return view["coupang"][unit].get("invoiceNumber")
    delivery = view["naver"][unit].get("delivery") or {}
    return delivery.get("trackingNumber")


def market_cancelled(view: dict[str, Any], market: str, unit: str) -> bool:
    if market == "coupang":
        return bool(view["coupang"][unit]["status"] == "CANCELED")
    return bool(view["naver"][unit]["productOrder"].get("productOrderStatus") == "CANCELED")


def problems(
    engine: Engine, box: SandboxFixture, units: dict[str, str], cancelled: set[str]
) -> list[str]:
    """Every broken invariant (empty when the run has converged)."""
    try:
        with engine.connect() as conn:
            orders = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM orders"))]
            purchases = {
                r.order_key: dict(r._mapping)
                for r in conn.execute(text("SELECT * FROM purchase_orders"))
            }
    except Exception as exc:
        return [f"database unreadable: {type(exc).__name__}"]
    view = sandbox_view(box)
    found: list[str] = []
    supplier_orders = box._admin("GET", "suppliers/orders?supplier=ownerclan")["orders"]
    for key, n in view["bought"].items():
        if n > 1:  # what happened to it, for the failure message
            made = [o["created_at"] for o in supplier_orders if o["order_key"] == key]
            found.append(f"{key}: supplier orders created at {made}")
            with engine.connect() as conn:
                for e in conn.execute(
                    text(
                        "SELECT e.* FROM order_events e JOIN orders o ON o.id = e.order_id "
                        "WHERE o.order_key = :k ORDER BY e.id"
                    ),
                    {"k": key},
                ):
                    found.append(f"  event {dict(e._mapping)}")
    by_unit = {(o["market"], o["market_order_id"]): o for o in orders}
    for unit, market in units.items():
        if (market, unit) not in by_unit:
            found.append(f"{market} {unit}: never ingested")
    for key, n in view["bought"].items():
        if n != 1:
            found.append(f"{key}: bought {n} times at the supplier")
    for unit, n in view["invoices"].items():
        if n != 1:
            found.append(f"coupang {unit}: {n} invoices uploaded")
    for o in orders:
        key, status, reason = o["order_key"], o["status"], o["status_reason"] or ""
        tag = f"order {o['id']} {o['market']} {o['market_order_id']} ({status}, {reason!r})"
        po = purchases.get(key)
        bought = int(view["bought"].get(key, 0))
        supplier_order = view["supplier"].get(key)
        if po is not None and po["status"] in PURCHASE_IN_FLIGHT:
            found.append(
                f"{tag}: purchase order still {po['status']} (attempts {po['attempts']}, "
                f"task {po['task_id']}, error {po['last_error']!r}, updated {po['updated_at']})"
            )
        if o["market_order_id"] in cancelled:
            if status == "cancelled":
                if supplier_order is not None and not supplier_order["cancelled"]:
                    found.append(f"{tag}: cancelled, but the supplier's order is not")
                if not market_cancelled(view, o["market"], o["market_order_id"]):
                    found.append(f"{tag}: cancelled, but not at the market")
            elif not (reason.startswith(OPERATOR) and supplier_order and supplier_order["shipped"]):
                found.append(f"{tag}: cancellation requested, not carried out")
            continue
        if status not in ORDER_DONE:
            found.append(f"{tag}: not done")
            continue
        if bought != 1:
            found.append(f"{tag}: {bought} purchases at the supplier")
        if status == "dispatched":
            at_market = market_tracking(view, o["market"], o["market_order_id"])
            expected = supplier_order["tracking_number"] if supplier_order else None
            if not at_market or at_market != o["tracking_number"] or at_market != expected:
                found.append(
                    f"{tag}: tracking ours {o['tracking_number']}, market {at_market}, "
                    f"supplier {expected}"
                )
    return found


# --------------------------------------------------------------------------- the run


def test_orders_survive_killed_workers_restarted_servers_and_faults(
    tmp_path: Path,
    sandbox: SandboxFixture,
    own_postgres: OwnPostgres,
    own_redis: EmbeddedRedis,
    chaos_catalog: Catalog,
) -> None:
    engine = own_postgres.engine
    box = sandbox
    box.configure_suppliers(tracking_delay_s=TRACKING_DELAY_S)
    broker = own_redis.url(0)
    env = worker_env(
        box,
        DROPSHIP_DATABASE_URL=own_postgres.url,
        DROPSHIP_REDIS_URL=broker,
        # Defaults otherwise: a lost message comes back after the stale period (10 minutes) or
        # the visibility timeout (an hour), longer than this run. What a killed worker left in
        # flight must come back through the abandoned-purchase path, sooner than its default
        # 2 minutes here (the longest supplier call in this run is a 5 s timeout).
        DROPSHIP_ORDERS__ABANDONED_AFTER_S="15",
        DROPSHIP_ORDERS__FORWARD_BATCH_SIZE="3",
        DROPSHIP_PLATFORMS__HTTP__READ_TIMEOUT_S="5",
    )
    units: dict[str, str] = {}  # market unit id -> market
    cancelled: set[str] = set()

    def arrive(per_account: int) -> list[str]:
        new: list[str] = []
        for account in ("coupang_main", "naver_main"):
            for name in chaos_catalog.products:
                got = market_orders(
                    box, account, chaos_catalog.skus[(account, name)], count=per_account
                )
                units.update(dict.fromkeys(got, account.split("_")[0]))
                new.extend(got)
        return new

    def cancel(unit: str) -> None:
        if units[unit] == "coupang":
            box._admin("POST", "coupang/cancel_requests", {"shipmentBoxId": int(unit)})
        else:
            box._admin("POST", "naver/cancel_requests", {"productOrderId": unit})
        cancelled.add(unit)

    def forwarded_units() -> list[str]:
        with contextlib.suppress(Exception), engine.connect() as conn:
            return [
                str(u)
                for u in conn.execute(
                    text("SELECT market_order_id FROM orders WHERE status = 'forwarded'")
                ).scalars()
            ]
        return []

    workers = Workers(tmp_path, env)
    workers.start()
    workers.start()
    try:
        box.set_faults("ownerclan", lost_response_rate=0.5, slow_ms=250)
        for market in ("coupang", "naver"):
            box.set_faults(
                market, error_rate=0.15, lost_response_rate=0.3, duplicate_order_rate=0.3
            )
        with Beat(broker) as beat:
            first = arrive(2)
            # 1. a whole worker killed while a purchase is being placed
            wait_for(lambda: placing(engine), 60, "a purchase being placed")
            workers.kill_worker()
            # 2. a buyer cancels before anything was bought; another after the purchase
            cancel(first[-1])
            unit = wait_for(
                lambda: next((u for u in forwarded_units() if u not in cancelled), None),
                60,
                "a forwarded order",
            )
            cancel(unit)
            second = arrive(1)
            # 3. one pool process killed mid-forward
            wait_for(lambda: placing(engine), 60, "a purchase being placed")
            workers.kill_child()
            # 4. the broker killed and started again empty
            kill_redis(own_redis)
            time.sleep(2)
            own_redis.start()
            cancel(second[0])
            third = arrive(1)
            # 5. PostgreSQL down while purchases are being placed
            wait_for(lambda: placing(engine), 60, "a purchase being placed")
            own_postgres.outage(3)
            # 6. another whole worker killed mid-forward
            wait_for(lambda: placing(engine), 60, "a purchase being placed")
            workers.kill_worker()
            cancel(third[-1])
            # 7. a worker killed while tracking goes to the markets (still under faults)
            wait_for(
                lambda: scalar(engine, "SELECT count(*) FROM orders WHERE status = 'dispatched'"),
                90,
                "a dispatched order",
            )
            workers.kill_worker()

            # Recovery: faults off, the sweeps alone finish the work.
            for platform in ("ownerclan", "coupang", "naver"):
                box.set_faults(
                    platform, lost_response_rate=0, error_rate=0, slow_ms=0, duplicate_order_rate=0
                )
            recovery = time.monotonic()
            deadline = recovery + RECOVERY_S
            found = problems(engine, box, units, cancelled)
            while found and time.monotonic() < deadline:
                time.sleep(2)
                found = problems(engine, box, units, cancelled)
            print(f"converged {time.monotonic() - recovery:.0f} s after the faults stopped")
            assert not found, (
                f"{len(found)} problem(s) after recovery:\n"
                + "\n".join(found[:40])
                + f"\nbeat published {beat.published}, skipped {beat.skipped}\n"
                + workers.logs()
            )
        counts = box.counts()
        # The faults did hit: answers were lost and the markets failed requests.
        assert counts.get("lost_responses"), counts
        assert len(units) == 24 and len(cancelled) == 4
    finally:
        workers.stop()
        with contextlib.suppress(Exception):
            redis_lib.Redis.from_url(broker).close()
