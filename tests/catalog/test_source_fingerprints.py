"""Source fingerprints: a collect does not parse a record whose bytes a stored product was built
from, and keeps every guarantee of a full parse.

The reader tests compare the two modes record for record on hostile documents; the run tests
drive the collect services in this process (real PostgreSQL, the Zentrade connector over HTTP
against the sandbox) with a probe counting ``parse_record`` calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from dropship.catalog import services, staging
from dropship.platforms import gentrade
from dropship.platforms.gentrade import FeedReader
from dropship.platforms.interfaces import (
    CollectSlice,
    InvalidRecord,
    SupplierProduct,
    UnchangedRecord,
)
from dropship.sandbox.gentrade import product_code, render_feed
from dropship.sandbox.world import iter_catalog
from tests.catalog.conftest import SandboxFixture, product_rows, reject_rows, staging_count

pytestmark = pytest.mark.usefixtures("frozen_world_clock")

ACCOUNT = "gentrade_main"
CATALOG = 200


# --------------------------------------------------------------------------- the reader


def hostile_document(size: int, every: int) -> list[bytes]:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    items = iter_catalog(42, "gentrade", size, now=now, price_drift=0, soldout_rate=0.2)
    return list(render_feed(items, 42, now=now, hostile_every=every))


def rechunk(chunks: list[bytes], size: int) -> Iterator[bytes]:
    data = b"".join(chunks)
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read(chunks: Iterator[bytes], known: Any, batch_records: int = 1000) -> list[Any]:
    return list(FeedReader(chunks, known=known, batch_records=batch_records))


@pytest.mark.parametrize(("chunk_size", "batch_records"), [(65_536, 1000), (4096, 7), (997, 1)])
def test_reader_skips_exactly_the_known_records_and_yields_the_same_rejects(
    chunk_size: int, batch_records: int
) -> None:
    document = hostile_document(400, every=5)
    plain = list(FeedReader(rechunk(document, chunk_size)))
    first = read(rechunk(document, chunk_size), lambda pairs: set(), batch_records)
    assert [type(r) for r in first] == [type(r) for r in plain]
    assert first == plain  # products compare by value; rejects by sku and reason
    stored = {
        (r.supplier_sku, r.source_fingerprint)
        for r in first
        if isinstance(r, SupplierProduct) and r.source_fingerprint
    }
    assert len(stored) == sum(isinstance(r, SupplierProduct) for r in plain) > 300

    asked: list[int] = []

    def known(pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        asked.append(len(pairs))
        return {pair for pair in pairs if pair in stored}

    second = read(rechunk(document, chunk_size), known, batch_records)
    assert max(asked) <= batch_records
    assert len(second) == len(plain)
    for before, after in zip(plain, second, strict=True):
        if isinstance(before, SupplierProduct):
            assert isinstance(after, UnchangedRecord), (before, after)
            assert after.supplier_sku == before.supplier_sku
        else:  # every reject as before: reason, key and raw bytes
            assert isinstance(after, InvalidRecord)
            assert (after.supplier_sku, after.reason, after.raw) == (
                before.supplier_sku,
                before.reason,
                before.raw,
            )


def test_reader_fingerprint_covers_the_bytes_the_settings_and_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = hostile_document(20, every=0)

    def fingerprints(**settings: Any) -> dict[str, str]:
        records = FeedReader(iter(document), known=lambda pairs: set(), **settings)
        return {r.supplier_sku: r.source_fingerprint for r in records}

    base = fingerprints()
    assert len(set(base.values())) == len(base) == 20
    assert fingerprints() == base
    for changed in (fingerprints(assumed_stock=3), fingerprints(shipping_fee=2500)):
        assert not set(changed.values()) & set(base.values())
    monkeypatch.setattr(gentrade, "PARSE_VERSION", gentrade.PARSE_VERSION + 1)
    assert not set(fingerprints().values()) & set(base.values())


# --------------------------------------------------------------------------- runs


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A probe: the code of every record ``parse_record`` is called for."""
    calls: list[str] = []
    real = gentrade.parse_record

    def counting(product: Any, **kw: Any) -> SupplierProduct:
        calls.append(str(product.get("code")))
        return real(product, **kw)

    monkeypatch.setattr(gentrade, "parse_record", counting)
    return calls


def collect(make_connector: Any, parses: list[str], mode: str = "full") -> dict[str, Any]:
    parses.clear()
    opened = services.open_run("gentrade", ACCOUNT, mode)
    keys = services.plan_run(opened["run_id"], make_connector)
    for key in keys:
        services.run_slice(opened["run_id"], key, make_connector)
    counts = services.merge_run(opened["run_id"], make_connector)
    assert counts["status"] == "succeeded", counts
    return counts


def read_catalog(make_connector: Any) -> tuple[dict[str, Any], list[InvalidRecord]]:
    """The catalog as the connector parses it, with each product's fingerprint."""
    records = list(
        make_connector(ACCOUNT).iter_slice_fingerprinted(CollectSlice("feed"), lambda p: set())
    )
    valid = {r.supplier_sku: r for r in records if isinstance(r, SupplierProduct)}
    return valid, [r for r in records if isinstance(r, InvalidRecord)]


def rejects_of(engine: Engine, run_id: int) -> list[tuple[Any, str]]:
    return sorted((r["supplier_sku"], r["reason"]) for r in reject_rows(engine, run_id))


def test_second_run_parses_nothing_and_a_removed_product_goes_once(
    sandbox: SandboxFixture, collect_db: Engine, make_connector: Any, parses: list[str]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": CATALOG})
    sandbox.set_faults("gentrade", malformed_rate=0.05)
    valid, invalid = read_catalog(make_connector)
    assert invalid and len(valid) + len(invalid) == CATALOG

    first = collect(make_connector, parses)
    assert (first["inserted"], first["unparsed"], first["rejected"]) == (
        len(valid),
        0,
        len(invalid),
    )
    assert len(parses) == CATALOG
    stored = product_rows(collect_db, "gentrade")
    assert {sku: p["source_fingerprint"] for sku, p in stored.items()} == {
        sku: staging.stored_fingerprint(r.source_fingerprint) for sku, r in valid.items()
    }

    second = collect(make_connector, parses)
    assert (second["inserted"], second["updated"], second["unchanged"], second["gone"]) == (
        0,
        0,
        len(valid),
        0,
    )
    assert (second["records"], second["unparsed"]) == (len(valid), len(valid))
    # Only the rejected records (no products row) were parsed again, and rejected again.
    assert sorted(parses) == sorted(str(r.supplier_sku) for r in invalid)
    assert rejects_of(collect_db, second["run_id"]) == rejects_of(collect_db, first["run_id"])
    after = product_rows(collect_db, "gentrade")
    assert all(after[sku]["updated_at"] == stored[sku]["updated_at"] for sku in valid)
    assert staging_count(collect_db) == 0

    # The supplier drops its last products: those are marked gone, once.
    sandbox.configure_suppliers(catalog_sizes={"gentrade": CATALOG - 5})
    still, _ = read_catalog(make_connector)
    removed = set(valid) - set(still)
    assert removed
    third = collect(make_connector, parses)
    assert (third["gone"], third["unparsed"]) == (len(removed), len(still))
    assert set(parses) <= {str(r.supplier_sku) for r in invalid}
    rows = product_rows(collect_db, "gentrade")
    assert {sku for sku, p in rows.items() if p["status"] == "gone"} == removed
    fourth = collect(make_connector, parses)
    assert (fourth["gone"], fourth["updated"], fourth["unparsed"]) == (0, 0, len(still))

    # They come back with the same bytes: a gone product is parsed (not taken as unchanged) and
    # its product back as it was.
    sandbox.configure_suppliers(catalog_sizes={"gentrade": CATALOG})
    fifth = collect(make_connector, parses)
    assert (fifth["updated"], fifth["unparsed"]) == (len(removed), len(still))
    assert set(removed) <= set(parses)
    back = product_rows(collect_db, "gentrade")
    assert all(back[sku]["status"] == valid[sku].status for sku in removed)


def test_changed_records_are_parsed_again_and_updated(
    sandbox: SandboxFixture, collect_db: Engine, make_connector: Any, parses: list[str]
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": CATALOG})
    before, _ = read_catalog(make_connector)
    collect(make_connector, parses)

    # Three products sell out at the supplier (and any price drift of a week lands).
    sandbox.configure_suppliers(sold_out={"gentrade": [3, 50, 120]})
    sandbox.advance_clock(7 * 24 * 3600)
    after, invalid = read_catalog(make_connector)
    assert set(after) == set(before)
    changed = {s for s in after if after[s].source_fingerprint != before[s].source_fingerprint}
    different = {s for s in after if after[s] != before[s]}
    sold = {product_code(i) for i in (3, 50, 120)}
    assert all(after[s].status == "soldout" for s in sold)
    assert {s for s in sold if before[s].status == "active"} <= different
    assert different and changed >= different and len(changed) < len(after)

    second = collect(make_connector, parses)
    assert sorted(parses) == sorted(changed | {str(r.supplier_sku) for r in invalid})
    assert (second["unparsed"], second["updated"]) == (len(after) - len(changed), len(different))
    stored = product_rows(collect_db, "gentrade")
    for sku, record in after.items():
        assert (stored[sku]["price"], stored[sku]["status"], stored[sku]["stock"]) == (
            record.cost_price,
            record.status,
            record.stock,
        )
        assert stored[sku]["source_fingerprint"] == staging.stored_fingerprint(
            record.source_fingerprint
        )


@pytest.mark.parametrize("module", [gentrade, staging], ids=["parse", "staging"])
def test_a_version_bump_parses_everything_again_and_updates_nothing(
    module: Any,
    monkeypatch: pytest.MonkeyPatch,
    sandbox: SandboxFixture,
    collect_db: Engine,
    make_connector: Any,
    parses: list[str],
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 60})
    first = collect(make_connector, parses)
    stored = product_rows(collect_db, "gentrade")
    name = "PARSE_VERSION" if module is gentrade else "STAGING_VERSION"
    monkeypatch.setattr(module, name, getattr(module, name) + 1)

    second = collect(make_connector, parses)
    assert len(parses) == 60
    assert (second["unparsed"], second["updated"], second["unchanged"]) == (0, 0, 60)
    after = product_rows(collect_db, "gentrade")
    for sku, row in after.items():  # new fingerprints stored, the products as they were
        assert row["source_fingerprint"] != stored[sku]["source_fingerprint"]
        assert (row["content_hash"], row["updated_at"]) == (
            stored[sku]["content_hash"],
            stored[sku]["updated_at"],
        )
    third = collect(make_connector, parses)
    assert (len(parses), third["unparsed"]) == (0, 60)
    assert first["inserted"] == 60


def test_setting_off_parses_every_record(
    monkeypatch: pytest.MonkeyPatch,
    sandbox: SandboxFixture,
    collect_db: Engine,
    make_connector: Any,
    parses: list[str],
) -> None:
    sandbox.configure_suppliers(catalog_sizes={"gentrade": 30})
    collect(make_connector, parses)
    monkeypatch.setenv("DROPSHIP_COLLECT__SKIP_UNCHANGED_PARSE", "false")
    from dropship.settings import get_settings

    get_settings.cache_clear()
    try:
        second = collect(make_connector, parses)
    finally:
        monkeypatch.delenv("DROPSHIP_COLLECT__SKIP_UNCHANGED_PARSE")
        get_settings.cache_clear()
    assert (len(parses), second["unparsed"], second["unchanged"]) == (30, 0, 30)
    with collect_db.connect() as conn:  # the fingerprints are kept up to date all the same
        assert (
            conn.execute(
                text("SELECT count(*) FROM products WHERE source_fingerprint IS NOT NULL")
            ).scalar_one()
            == 30
        )
    third = collect(make_connector, parses)
    assert (len(parses), third["unparsed"]) == (0, 30)


def store_fingerprint(conn: psycopg.Connection[Any], sku: str, fingerprint: str) -> None:
    conn.execute(
        "INSERT INTO products (supplier, supplier_sku, name, price, source_fingerprint) "
        "VALUES ('gentrade', %s, 'x', 1, %s)",
        (sku, staging.stored_fingerprint(fingerprint)),
    )
    conn.commit()


def test_no_batch_is_looked_up_while_no_fingerprint_is_stored(collect_db: Engine) -> None:
    """A first collect asks once whether the supplier has any stored fingerprint, and looks no
    batch up when it has none. A fingerprint stored meanwhile is only missed (the record is
    parsed), never taken for one that is not there."""
    url = collect_db.url.render_as_string(hide_password=False).replace("+psycopg", "")
    with psycopg.connect(url) as conn:
        known = staging.known_fingerprints(conn, "gentrade")
        assert known([("1", "1:x")]) == set()
        store_fingerprint(conn, "1", "1:x")
        assert known([("1", "1:x")]) == set()  # decided at the first batch of the slice
        again = staging.known_fingerprints(conn, "gentrade")  # the next slice
        assert again([("1", "1:x"), ("1", "1:z"), ("2", "1:x")]) == {("1", "1:x")}


def test_the_lookup_is_never_prepared(collect_db: Engine) -> None:
    """A prepared look-up keeps the generic plan PostgreSQL made for it on that connection, one
    made while products was empty (a scan per probe) until the table is analyzed: the first
    re-run after a first run took seconds per batch. It is planned on every call instead."""
    url = collect_db.url.render_as_string(hide_password=False).replace("+psycopg", "")
    with psycopg.connect(url) as conn:
        store_fingerprint(conn, "stored", "1:y")  # or no batch is looked up at all
        known = staging.known_fingerprints(conn, "gentrade")
        for n in range(10):
            assert known([(f"{n}", "1:x")]) == set()
        prepared = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%unnest%'"
        ).fetchone()
    assert prepared == (0,)


def test_a_product_sold_out_by_a_supplier_refusal_is_set_back_by_the_next_collect(
    sandbox: SandboxFixture, collect_db: Engine, make_connector: Any, parses: list[str]
) -> None:
    """A purchase refused for stock marks the product sold out on our side only
    (``request_listing_suspension``); the supplier's record is unchanged, so the next collect
    must parse it again rather than skip it, and set the product back in stock."""
    from dropship import db
    from dropship.orders.forwarding import request_listing_suspension

    sandbox.configure_suppliers(catalog_sizes={"gentrade": CATALOG})
    collect(make_connector, parses)
    before = product_rows(collect_db, "gentrade")
    sku = next(s for s, row in before.items() if row["status"] == "active")
    with collect_db.connect() as conn:
        product_id = int(
            conn.execute(
                text("SELECT id FROM products WHERE supplier = 'gentrade' AND supplier_sku = :s"),
                {"s": sku},
            ).scalar_one()
        )
    with db.session_scope() as session:
        request_listing_suspension(session, product_id, "test: supplier refused (stock)")
    assert product_rows(collect_db, "gentrade")[sku]["status"] == "soldout"

    second = collect(make_connector, parses)
    assert sku in parses and second["updated"] == 1, (second, parses[:5])
    after = product_rows(collect_db, "gentrade")[sku]
    assert (after["status"], after["stock"]) == (before[sku]["status"], before[sku]["stock"])
