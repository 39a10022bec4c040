"""The register flow against the sandbox over HTTP, real PostgreSQL: every sellable product is
listed exactly once per account (sandbox listing counts per external SKU are all 1), also with
the same batch delivered twice at once and with responses lost; refusals are kept with the
market's message; unsellable products get no listing and keep their reason."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dropship.errors import TransientError
from dropship.images import services as images
from dropship.listings import services
from dropship.sandbox.credentials import sandbox_account_config
from dropship.settings import get_settings
from tests.catalog.conftest import worker_env
from tests.conftest import start_worker, stop_worker
from tests.images.conftest import HostedStore, fixture_url, image_store  # noqa: F401
from tests.listings.conftest import add_mapping, add_product, add_rule
from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    SandboxFixture,
    connector_settings,
    make_connector,
    sandbox,
    sandbox_server,
)

OPTIONS = [
    {"name": "색상", "value": "빨강", "price_delta": 0, "stock": 3, "supplier_option_code": "R1"},
    {"name": "색상", "value": "파랑", "price_delta": 900, "stock": 2, "supplier_option_code": "B1"},
]


@pytest.fixture
def accounts(sandbox: SandboxFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    monkeypatch.setenv(
        "DROPSHIP_PLATFORMS__ACCOUNTS", json.dumps(sandbox_account_config(sandbox.base_url))
    )
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def process_images(engine: Engine, box: SandboxFixture) -> None:
    """Registration lists only products with a usable image: give every product a sandbox
    image and process them all first."""
    photo = fixture_url(box.base_url, "jpeg", "register", w=900, h=700)
    with engine.begin() as conn:
        ids = list(conn.execute(text("SELECT id FROM products")).scalars())
        conn.execute(
            text("UPDATE products SET images = jsonb_build_array(CAST(:u AS text))"), {"u": photo}
        )
    assert images.process_products(ids)["failed"] == 0


@pytest.fixture
def catalog(
    rules_db: Engine,
    accounts: None,
    sandbox: SandboxFixture,  # noqa: F811
    image_store: HostedStore,  # noqa: F811
) -> dict[str, list[int]]:
    with rules_db.begin() as conn:
        for market, category in (("coupang", "56137"), ("naver", "50000803")):
            add_rule(conn, market=market, margin="0.2", fee="0.1", min_margin=500)
            add_mapping(conn, market=market, market_category=category)
        sellable = [add_product(conn, price=9000 + 100 * i) for i in range(5)]
        sellable.append(add_product(conn, price=12000, options=OPTIONS))
        unsellable = [
            add_product(conn, category="GARDEN"),  # no mapping
            add_product(conn, status="soldout"),
            add_product(conn, open_market_sellable=False),
        ]
    process_images(rules_db, sandbox)
    return {"sellable": sellable, "unsellable": unsellable}


def listing_rows(engine: Engine, account: str) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT l.* FROM listings l JOIN accounts a ON a.id = l.account_id "
                "WHERE a.name = :a"
            ),
            {"a": account},
        ).all()
    return {row.product_id: dict(row._mapping) for row in rows}


def sku_counts(box: SandboxFixture, skus: list[str]) -> list[int]:
    listed = box.counts()["listings"]
    return [int(listed.get(sku, 0)) for sku in skus]


def register_until_done(
    account: str, ids: list[int], factory: Callable[[str], Any], rounds: int = 12
) -> dict[str, int]:
    for _ in range(rounds):
        try:
            return services.register_listings(account, ids, factory)
        except TransientError:
            continue
    raise AssertionError(f"still failing after {rounds} rounds")


@pytest.mark.parametrize("account", ["coupang_main", "naver_main"])
def test_every_sellable_product_listed_once_unsellable_never(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
    account: str,
) -> None:
    planned = services.plan_registrations(account)
    # Blocked with their reasons: unmapped, not open-market (soldout is not even a candidate).
    assert planned["claimed"] == 6 and planned["blocked"] == 2
    counts = services.register_listings(account, planned["publish"], make_connector)
    assert counts == {"active": 6, "refused": 0, "skipped": 0}
    rows = listing_rows(rules_db, account)
    assert sorted(rows) == sorted(catalog["sellable"])
    assert all(r["status"] == "active" and r["market_product_id"] for r in rows.values())
    skus = [r["external_sku"] for r in rows.values()]
    assert sku_counts(sandbox, skus) == [1] * 6
    # Options keep their prices and supplier option codes on the listing.
    with_options = rows[catalog["sellable"][-1]]
    assert [
        (o["value"], o["supplier_option_code"], o["sale_price"]) for o in with_options["options"]
    ] == [
        ("빨강", "R1", 16000),  # 12000 * 1.2 / 0.9
        ("파랑", "B1", 17200),  # 12900 * 1.2 / 0.9 = 17200
    ]
    # A second sweep claims nothing; the same batch again creates nothing.
    again = services.plan_registrations(account)
    assert again["claimed"] == 0 and again["publish"] == []
    assert services.register_listings(account, planned["publish"], make_connector)["skipped"] == 6
    assert sku_counts(sandbox, skus) == [1] * 6
    with rules_db.connect() as conn:
        reason = conn.execute(
            text("SELECT reason FROM listing_blocks WHERE product_id = :p"),
            {"p": catalog["unsellable"][0]},
        ).scalar_one()
    assert reason.startswith("no category mapping")


def test_same_batch_delivered_twice_at_once(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
) -> None:
    ids = services.plan_registrations("coupang_main")["publish"]
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            results.append(services.register_listings("coupang_main", ids, make_connector))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(r["active"] for r in results) == 6
    skus = [r["external_sku"] for r in listing_rows(rules_db, "coupang_main").values()]
    assert sku_counts(sandbox, skus) == [1] * 6


def _sweeps_at_once(
    accounts: list[str], monkeypatch: pytest.MonkeyPatch, hold_s: float
) -> list[dict[str, Any]]:
    """Run ``plan_registrations`` for each account in its own thread, the first one held inside
    its transaction (in the rule evaluation) for up to ``hold_s`` or until every sweep has
    reached the evaluation too."""
    evaluate = services.evaluate_products
    arrived = threading.Semaphore(0)
    first = threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        arrived.release()
        if not first.is_set():
            first.set()
            deadline = time.monotonic() + hold_s
            while time.monotonic() < deadline and arrived._value < len(accounts):
                time.sleep(0.05)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(services, "evaluate_products", held)
    results: dict[int, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def sweep(i: int, account: str) -> None:
        try:
            results[i] = services.plan_registrations(account)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(0, accounts[0]))]
    threads[0].start()
    assert first.wait(30)
    threads += [
        threading.Thread(target=sweep, args=(i, a)) for i, a in enumerate(accounts[1:], start=1)
    ]
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return [results[i] for i in range(len(accounts))]


def test_sweeps_of_two_accounts_at_once_both_claim_every_product(
    catalog: dict[str, list[int]], rules_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each market account's beat sweep runs in its own worker process: one must not skip the
    # products the other is evaluating (it listed nothing on its account until a later beat).
    first, second = _sweeps_at_once(["coupang_main", "naver_main"], monkeypatch, hold_s=10)
    assert (first["claimed"], second["claimed"]) == (6, 6)
    for account in ("coupang_main", "naver_main"):
        assert sorted(listing_rows(rules_db, account)) == sorted(catalog["sellable"])


def test_two_sweeps_of_one_account_at_once_claim_each_product_once(
    catalog: dict[str, list[int]], rules_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _sweeps_at_once(["coupang_main", "coupang_main"], monkeypatch, hold_s=1)
    assert (first["claimed"], second["claimed"]) == (6, 0)
    assert second["publish"] == []
    assert sorted(listing_rows(rules_db, "coupang_main")) == sorted(catalog["sellable"])


@pytest.mark.parametrize("platform", ["coupang", "naver"])
def test_lost_responses_never_duplicate_a_listing(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],
    make_connector: Callable[[str], Any],  # noqa: F811
    rules_db: Engine,
    platform: str,
) -> None:
    account = f"{platform}_main"
    ids = services.plan_registrations(account)["publish"]
    sandbox.set_faults(platform, lost_response_rate=0.5, lost_response_mode="5xx")
    register_until_done(account, ids, make_connector)
    rows = listing_rows(rules_db, account)
    assert all(r["status"] == "active" for r in rows.values()), rows
    assert sandbox.counts()["lost_responses"], "the fault never fired"
    assert sku_counts(sandbox, [r["external_sku"] for r in rows.values()]) == [1] * 6


def test_market_refusal_is_kept_with_its_message_and_not_retried(
    sandbox: SandboxFixture,  # noqa: F811
    rules_db: Engine,
    accounts: None,
    make_connector: Callable[[str], Any],  # noqa: F811
    image_store: HostedStore,  # noqa: F811
) -> None:
    with rules_db.begin() as conn:
        add_rule(conn, margin="0.2", fee="0.1")
        add_mapping(conn, market_category="not-a-category")
        product = add_product(conn)
    process_images(rules_db, sandbox)
    ids = services.plan_registrations("coupang_main")["publish"]
    assert services.register_listings("coupang_main", ids, make_connector)["refused"] == 1
    row = listing_rows(rules_db, "coupang_main")[product]
    assert row["status"] == "refused" and row["error"]
    assert services.register_listings("coupang_main", ids, make_connector)["skipped"] == 1
    assert services.plan_registrations("coupang_main")["publish"] == []


def test_stale_claims_are_republished(catalog: dict[str, list[int]], rules_db: Engine) -> None:
    first = services.plan_registrations("coupang_main")["publish"]
    assert len(first) == 6
    assert services.plan_registrations("coupang_main")["publish"] == []  # published already
    with rules_db.begin() as conn:  # the message was lost: nobody touched the rows since
        conn.execute(text("UPDATE listings SET updated_at = now() - interval '1 hour'"))
    assert services.plan_registrations("coupang_main")["publish"] == first


@pytest.mark.worker
def test_register_sweep_with_a_real_worker(
    sandbox: SandboxFixture,  # noqa: F811
    catalog: dict[str, list[int]],
    rules_db: Engine,
    tmp_path: Path,
    redis_url: str,
) -> None:
    worker = start_worker(tmp_path, queues="medium", concurrency=2, env=worker_env(sandbox))
    try:
        from tasks.listings import register_sweep

        summary = register_sweep.delay().get(timeout=60)
        assert {s["account"] for s in summary} >= {"coupang_main", "naver_main"}
        deadline = time.monotonic() + 90
        while True:
            rows = {a: listing_rows(rules_db, a) for a in ("coupang_main", "naver_main")}
            if all(
                len(r) == 6 and all(x["status"] == "active" for x in r.values())
                for r in rows.values()
            ):
                break
            assert time.monotonic() < deadline, f"{rows}\n{worker.log()[-3000:]}"
            time.sleep(0.3)
        skus = [x["external_sku"] for r in rows.values() for x in r.values()]
        assert sku_counts(sandbox, skus) == [1] * 12
    finally:
        stop_worker(worker)
