"""The collect flow: supplier catalogs into ``products``, callable without Celery.

A run (``collect_runs``) is opened, its slices are planned by the connector
(``plan_slices``) and recorded one row per slice key (``collect_run_slices``); each slice is
fetched, validated and COPY'd into the unlogged staging table by :func:`run_slice`; when every
slice is done (or failed) :func:`merge_run` merges staging into ``products`` in one set-based
statement. :func:`sweep_runs` finds runs whose chord body never ran, that stalled, or whose
pause is over. ``tasks/collect.py`` wraps these in Celery tasks and publishes the chords; every
function here commits its own transactions and returns JSON-ready counts.

Idempotence, so a redelivered or re-published task changes nothing twice:

* a slice locks its row (``FOR UPDATE``) for the whole fetch, deletes its own staging and reject
  rows, COPYs, and marks itself done in the same transaction; a second execution of a done slice
  returns its counts; run counts are recomputed from the slice rows, never incremented;
* the merge locks the run row and only merges a ``running`` run, so it runs once; two runs of
  one supplier never merge at once (advisory lock per supplier).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from dropship import db
from dropship.catalog.staging import copy_slice, known_fingerprints
from dropship.errors import BudgetExhaustedError, ConfigurationError
from dropship.platforms.config import SUPPLIER_PLATFORMS
from dropship.platforms.interfaces import (
    CollectSlice,
    FingerprintingConnector,
    InvalidRecord,
    SupplierConnector,
    SupplierProduct,
    UnchangedRecord,
)
from dropship.settings import CollectSettings, get_settings

log = logging.getLogger("dropship.catalog")

MODES = ("full", "incremental")
# Suppliers whose API filters by modification time (OwnerClan dateFrom/dateTo) or can report
# new items (Zentrade opendate). Others fall back to full runs, on a slower beat schedule.
MODIFICATION_FILTER = frozenset({"ownerclan", "gentrade"})
ERROR_MAX = 2000

ConnectorFactory = Callable[[str], SupplierConnector]


def _now() -> datetime:
    return datetime.now(UTC)


def _settings() -> CollectSettings:
    return get_settings().collect


def default_connector(account: str) -> SupplierConnector:
    from dropship.platforms.registry import connector_for

    connector: SupplierConnector = connector_for(account)
    return connector


def default_account(supplier: str) -> str:
    """The first enabled account of ``supplier`` in the settings."""
    if supplier not in SUPPLIER_PLATFORMS:
        raise ConfigurationError(
            f"unknown supplier {supplier!r}; known: {', '.join(sorted(SUPPLIER_PLATFORMS))}"
        )
    accounts = get_settings().platforms.accounts_for(supplier)
    if not accounts:
        raise ConfigurationError(
            f"no enabled {supplier} account configured (DROPSHIP_PLATFORMS__ACCOUNTS)"
        )
    return accounts[0].name


def _lock_key(session: Session, name: str) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": name})


# --------------------------------------------------------------------------- open and plan


def open_run(supplier: str, account: str | None = None, mode: str = "full") -> dict[str, Any]:
    """Open a run for ``supplier`` (its first account unless ``account``), or return the run
    already active for that account (a second click, a redelivered task, an overlapping beat).

    ``mode="incremental"`` asks for changes since the account's watermark minus the overlap; a
    supplier without a modification filter, or an account without a watermark, gets a full run.
    """
    if mode not in MODES:
        raise ConfigurationError(f"collect mode must be one of {MODES}, got {mode!r}")
    account = account or default_account(supplier)
    with db.session_scope() as session:
        _lock_key(session, f"dropship.collect.open:{account}")
        active = session.execute(
            text(
                "SELECT id, status, mode FROM collect_runs WHERE account = :a "
                "AND status IN ('planned', 'running', 'paused') ORDER BY id DESC LIMIT 1"
            ),
            {"a": account},
        ).first()
        if active is not None:
            return {"run_id": active.id, "status": active.status, "mode": active.mode, "new": False}
        since: datetime | None = None
        if mode == "incremental":
            watermark = session.execute(
                text("SELECT watermark FROM collect_watermarks WHERE account = :a"), {"a": account}
            ).scalar()
            if supplier in MODIFICATION_FILTER and watermark is not None:
                since = watermark - timedelta(seconds=_settings().incremental_overlap_s)
            else:
                mode = "full"
        run_id = session.execute(
            text(
                "INSERT INTO collect_runs (supplier, account, mode, since, status, heartbeat_at) "
                "VALUES (:s, :a, :m, :since, 'planned', now()) RETURNING id"
            ),
            {"s": supplier, "a": account, "m": mode, "since": since},
        ).scalar_one()
    return {"run_id": run_id, "status": "planned", "mode": mode, "new": True}


def plan_run(run_id: int, connector_factory: ConnectorFactory = default_connector) -> list[str]:
    """Ask the connector for the run's slices and record them; the run becomes ``running``.
    Returns the keys of the new slices (none when the run was planned already). A spent budget
    pauses the run before any slice exists."""
    with db.session_scope() as session:
        run = session.execute(
            text("SELECT id, supplier, account, status, since FROM collect_runs WHERE id = :r"),
            {"r": run_id},
        ).first()
        if run is None:
            raise ConfigurationError(f"collect run {run_id} does not exist")
        if run.status != "planned":
            # Planned already (a second collect_supplier raced this one): its chord is out;
            # stalled slices are the sweep's job, not a second chord's.
            return []
    connector = connector_factory(run.account)
    try:
        slices = connector.plan_slices(run.since)
    except BudgetExhaustedError as exc:
        _pause(run_id, None, exc)
        return []
    keys = [piece.key for piece in slices]
    if len(set(keys)) != len(keys):
        fail_run(run_id, f"{run.supplier} plan_slices returned duplicate slice keys")
        return []
    if not keys and run.since is None:
        # A full run of nothing would mark the whole catalog gone: refuse it.
        fail_run(run_id, f"{run.supplier} plan_slices returned no slice for a full run")
        return []
    with db.session_scope() as session:
        status = session.execute(
            text("SELECT status FROM collect_runs WHERE id = :r FOR UPDATE"), {"r": run_id}
        ).scalar_one()
        if status != "planned":  # planned twice at once: the first one won
            return []
        conn = _psycopg(session)
        copy_sql = "COPY collect_run_slices (run_id, slice_key, params) FROM STDIN"
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for piece in slices:
                copy.write_row((run_id, piece.key, _params_json(piece)))
        session.execute(
            text(
                "UPDATE collect_runs SET status = 'running', slices_expected = :n, "
                "heartbeat_at = now() WHERE id = :r"
            ),
            {"n": len(keys), "r": run_id},
        )
    return keys


def _params_json(piece: CollectSlice) -> str:
    import json

    return json.dumps(piece.params, separators=(",", ":"), default=str)


def _psycopg(session: Session) -> psycopg.Connection[Any]:
    raw = session.connection().connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


def _unfinished_keys(session: Session, run_id: int) -> list[str]:
    return list(
        session.execute(
            text(
                "SELECT slice_key FROM collect_run_slices WHERE run_id = :r "
                "AND status IN ('pending', 'paused') ORDER BY slice_key"
            ),
            {"r": run_id},
        ).scalars()
    )


# --------------------------------------------------------------------------- one slice


def _refresh_run_counts(session: Session, run_id: int) -> None:
    """Run counts from the slice rows: recomputed, so a slice that runs twice counts once.

    The run row is locked first, by its own statement: two slices finishing at once would
    otherwise each sum the slice rows as of their UPDATE's snapshot, taken before the other
    committed, and the second writer would store counts without the first slice (READ
    COMMITTED re-reads only the locked row after the wait, not the subquery)."""
    session.execute(text("SELECT 1 FROM collect_runs WHERE id = :r FOR UPDATE"), {"r": run_id})
    session.execute(
        text(
            "UPDATE collect_runs r SET heartbeat_at = clock_timestamp(), slices_done = c.done, "
            "records = c.records, rejected = c.rejected, unparsed = c.unparsed FROM ("
            "  SELECT count(*) FILTER (WHERE status = 'done') AS done,"
            "         coalesce(sum(records), 0) AS records, coalesce(sum(rejected), 0) AS rejected,"
            "         coalesce(sum(unparsed), 0) AS unparsed"
            "  FROM collect_run_slices WHERE run_id = :r) c WHERE r.id = :r"
        ),
        {"r": run_id},
    )


def run_slice(
    run_id: int, slice_key: str, connector_factory: ConnectorFactory = default_connector
) -> dict[str, Any]:
    """Fetch one slice into staging and rejects; returns only counts.

    Holds the slice row's lock while fetching, so a redelivered copy of the same slice waits and
    then finds it done. Any error rolls the slice's rows back (the retry starts clean); a spent
    daily budget pauses the run instead of failing it.
    """
    settings = _settings()
    result: dict[str, Any] = {"run_id": run_id, "slice": slice_key}
    with db.session_scope() as session:
        # Visible progress (attempts, started_at) even while the slow part below holds a lock.
        session.execute(
            text(
                "UPDATE collect_run_slices SET attempts = attempts + 1, started_at = now() "
                "WHERE run_id = :r AND slice_key = :k AND status = 'pending'"
            ),
            {"r": run_id, "k": slice_key},
        )
    try:
        with db.session_scope() as session:
            piece = session.execute(
                text(
                    "SELECT s.status, s.params, s.records, s.rejected, s.unparsed, "
                    "r.status AS run_status, "
                    "r.supplier, r.account FROM collect_run_slices s "
                    "JOIN collect_runs r ON r.id = s.run_id "
                    "WHERE s.run_id = :r AND s.slice_key = :k FOR UPDATE OF s"
                ),
                {"r": run_id, "k": slice_key},
            ).first()
            if piece is None:
                return {**result, "skipped": "no such slice"}
            if piece.status == "done":
                return {
                    **result,
                    "skipped": "already done",
                    "records": piece.records,
                    "rejected": piece.rejected,
                    "unparsed": piece.unparsed,
                }
            if piece.run_status != "running" or piece.status != "pending":
                return {**result, "skipped": f"run {piece.run_status}, slice {piece.status}"}
            params = {"r": run_id, "k": slice_key}
            session.execute(
                text("DELETE FROM staging_products WHERE run_id = :r AND slice_key = :k"), params
            )
            session.execute(
                text("DELETE FROM product_rejects WHERE run_id = :r AND slice_key = :k"), params
            )
            connector = connector_factory(piece.account)
            conn = _psycopg(session)
            collect_slice = CollectSlice(slice_key, dict(piece.params or {}))
            records: Iterator[SupplierProduct | InvalidRecord | UnchangedRecord]
            if isinstance(connector, FingerprintingConnector):
                # Records whose source bytes a stored product was built from are not parsed;
                # with the setting off every record is, and the fingerprints are still stored.
                known = (
                    known_fingerprints(conn, piece.supplier)
                    if settings.skip_unchanged_parse
                    else _nothing_known
                )
                records = connector.iter_slice_fingerprinted(collect_slice, known)
            else:
                records = connector.iter_slice(collect_slice)
            counts = copy_slice(
                conn,
                run_id,
                slice_key,
                piece.supplier,
                records,
                chunk_rows=settings.copy_chunk_rows,
                raw_max_bytes=settings.reject_raw_max_bytes,
            )
            session.execute(
                text(
                    "UPDATE collect_run_slices SET status = 'done', records = :n, rejected = :j, "
                    "unparsed = :u, error = NULL, finished_at = clock_timestamp() "
                    "WHERE run_id = :r AND slice_key = :k"
                ),
                {**params, "n": counts.records, "j": counts.rejected, "u": counts.unparsed},
            )
            _refresh_run_counts(session, run_id)
    except BudgetExhaustedError as exc:
        resets_at = _pause(run_id, slice_key, exc)
        return {**result, "paused": True, "resets_at": resets_at.isoformat()}
    return {
        **result,
        "records": counts.records,
        "rejected": counts.rejected,
        "unparsed": counts.unparsed,
    }


def _nothing_known(pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    return set()


def _pause(run_id: int, slice_key: str | None, exc: BudgetExhaustedError) -> datetime:
    resets_at = exc.resets_at if exc.resets_at.tzinfo else exc.resets_at.replace(tzinfo=UTC)
    with db.session_scope() as session:
        if slice_key is not None:
            session.execute(
                text(
                    "UPDATE collect_run_slices SET status = 'paused', error = :e "
                    "WHERE run_id = :r AND slice_key = :k AND status = 'pending'"
                ),
                {"r": run_id, "k": slice_key, "e": str(exc)[:ERROR_MAX]},
            )
        session.execute(
            text(
                "UPDATE collect_runs SET status = 'paused', error = :e, heartbeat_at = now(), "
                "paused_until = greatest(coalesce(paused_until, :t), :t) "
                "WHERE id = :r AND status IN ('planned', 'running', 'paused')"
            ),
            {"r": run_id, "t": resets_at, "e": f"paused: {exc}"[:ERROR_MAX]},
        )
    log.info("collect run %s paused until %s (%s)", run_id, resets_at.isoformat(), slice_key)
    return resets_at


def fail_slice(run_id: int, slice_key: str, reason: str) -> bool:
    """Record a slice that will not succeed (retries spent, permanent error). Returns True when
    the run has no slice left to run, i.e. it should be merged now."""
    with db.session_scope() as session:
        session.execute(
            text(
                "UPDATE collect_run_slices SET status = 'failed', error = :e, "
                "finished_at = clock_timestamp() "
                "WHERE run_id = :r AND slice_key = :k AND status <> 'done'"
            ),
            {"r": run_id, "k": slice_key, "e": reason[:ERROR_MAX]},
        )
        _refresh_run_counts(session, run_id)
        left = session.execute(
            text(
                "SELECT count(*) FROM collect_run_slices WHERE run_id = :r "
                "AND status IN ('pending', 'paused')"
            ),
            {"r": run_id},
        ).scalar_one()
    return bool(left == 0)


def fail_run(run_id: int, reason: str) -> None:
    with db.session_scope() as session:
        _fail_locked(session, run_id, reason)


def _fail_locked(session: Session, run_id: int, reason: str) -> None:
    session.execute(
        text(
            "UPDATE collect_runs SET status = 'failed', error = :e, "
            "finished_at = clock_timestamp() "
            "WHERE id = :r AND status IN ('planned', 'running', 'paused')"
        ),
        {"r": run_id, "e": reason[:ERROR_MAX]},
    )
    session.execute(text("DELETE FROM staging_products WHERE run_id = :r"), {"r": run_id})
    log.warning("collect run %s failed: %s", run_id, reason)


# --------------------------------------------------------------------------- merge

_MERGE = """
WITH latest AS (
    -- the last staged row of each product; a source_unchanged one (not parsed: its bytes are
    -- those the stored product was built from) is seen and unchanged, nothing to write
    SELECT DISTINCT ON (supplier_sku)
        supplier, supplier_sku, name, price, shipping_fee, stock, status, category, images,
        options, content_hash, open_market_sellable, adult_only, stock_assumed,
        source_fingerprint, source_unchanged
    FROM staging_products
    WHERE run_id = :r
    ORDER BY supplier_sku, id DESC
), src AS (
    SELECT * FROM latest WHERE NOT source_unchanged
), old AS (
    -- the rows as they were before this statement (every CTE sees the same snapshot), for
    -- the sync outbox and the counts below
    SELECT p.id, p.price, p.shipping_fee, p.stock, p.status, p.options, p.content_hash
    FROM products p JOIN src ON p.supplier = src.supplier AND p.supplier_sku = src.supplier_sku
), up AS (
    INSERT INTO products AS p (
        supplier, supplier_sku, name, price, shipping_fee, stock, status, category, images,
        options, content_hash, open_market_sellable, adult_only, stock_assumed,
        source_fingerprint
    )
    SELECT supplier, supplier_sku, name, price, shipping_fee, stock, status, category, images,
        options, content_hash, open_market_sellable, adult_only, stock_assumed,
        source_fingerprint
    FROM src
    ON CONFLICT (supplier, supplier_sku) DO UPDATE SET
        name = EXCLUDED.name,
        price = EXCLUDED.price,
        shipping_fee = EXCLUDED.shipping_fee,
        stock = EXCLUDED.stock,
        status = EXCLUDED.status,
        category = EXCLUDED.category,
        images = EXCLUDED.images,
        options = EXCLUDED.options,
        content_hash = EXCLUDED.content_hash,
        open_market_sellable = EXCLUDED.open_market_sellable,
        adult_only = EXCLUDED.adult_only,
        stock_assumed = EXCLUDED.stock_assumed,
        source_fingerprint = EXCLUDED.source_fingerprint,
        -- a row written only for its new source fingerprint (same content: a parser version
        -- bump, bytes that changed outside the stored fields) keeps its times
        last_seen_at = CASE WHEN (p.content_hash, p.status)
            IS DISTINCT FROM (EXCLUDED.content_hash, EXCLUDED.status)
            THEN now() ELSE p.last_seen_at END,
        updated_at = CASE WHEN (p.content_hash, p.status)
            IS DISTINCT FROM (EXCLUDED.content_hash, EXCLUDED.status)
            THEN now() ELSE p.updated_at END
    -- unchanged rows are not written at all (no dead tuple, no WAL)
    -- a product marked gone for being absent comes back even when its record is as before;
    -- one the supplier itself reports gone (OwnerClan discontinued) stays as it is
    WHERE p.content_hash IS DISTINCT FROM EXCLUDED.content_hash
       OR (p.status = 'gone' AND EXCLUDED.status <> 'gone')
       OR p.source_fingerprint IS DISTINCT FROM EXCLUDED.source_fingerprint
    RETURNING (xmax = 0) AS inserted, p.id, p.price, p.shipping_fee, p.stock, p.status,
        p.options, p.content_hash
), sync AS (
    -- Sync work in the merge's own transaction (published after commit): a listed product
    -- whose cost, shipping, stock, status or options changed (an option sold out while the
    -- others took its stock leaves the product's stock as it was). Not sellable any more ->
    -- suspend (its own task, ahead of other listing work); sellable -> price/stock update.
    INSERT INTO sync_outbox (product_id, kind)
    SELECT up.id, CASE WHEN up.status = 'active' AND up.stock > 0 THEN 'update' ELSE 'suspend' END
    FROM up JOIN old ON old.id = up.id
    WHERE (old.price, old.shipping_fee, old.stock, old.status, old.options)
          IS DISTINCT FROM (up.price, up.shipping_fee, up.stock, up.status, up.options)
      AND EXISTS (SELECT 1 FROM listings l WHERE l.product_id = up.id)
    RETURNING kind
)
SELECT
    count(*) FILTER (WHERE up.inserted) AS inserted,
    -- a row rewritten only for its fingerprint is not an update of the product
    count(*) FILTER (WHERE NOT up.inserted
        AND (old.content_hash, old.status) IS DISTINCT FROM (up.content_hash, up.status))
        AS updated,
    (SELECT count(*) FROM latest) AS staged,
    (SELECT count(*) FROM sync) AS sync_changes
FROM up LEFT JOIN old ON old.id = up.id
"""

# Done slices that counted records but have no staging row left. A crash resets an UNLOGGED
# table as a whole, so one probe of the staging index per slice finds it (counting the rows
# instead would read the whole staging heap of the run inside the merge).
_LOST_STAGING = """
SELECT s.slice_key FROM collect_run_slices s
WHERE s.run_id = :r AND s.status = 'done' AND coalesce(s.records, 0) > 0
  AND NOT EXISTS (
      SELECT 1 FROM staging_products t WHERE t.run_id = s.run_id AND t.slice_key = s.slice_key)
ORDER BY s.slice_key
"""

# Products of the supplier this run did not see (neither staged nor rejected): before anything
# is marked gone the connector rechecks them (``recheck_missing``), because some listings leave
# products out (Domeggook omits sold-out items) or can miss one changed while the run read.
_UNSEEN = """
SELECT p.supplier_sku FROM products p
WHERE p.supplier = :s AND p.status <> 'gone'
  AND NOT EXISTS (
      SELECT 1 FROM staging_products s WHERE s.run_id = :r AND s.supplier_sku = p.supplier_sku)
  AND NOT EXISTS (
      SELECT 1 FROM product_rejects j WHERE j.run_id = :r AND j.supplier_sku = p.supplier_sku)
ORDER BY p.supplier_sku
"""
RECHECK_SLICE = "recheck"

# Products of the supplier this complete full run did not see, after the recheck. A product
# rejected in this run was seen (its record is broken, it did not disappear): left as it was.
# Each listed product marked gone is recorded for suspension in the same statement.
_MARK_GONE = """
WITH gone AS (
    UPDATE products p SET status = 'gone', updated_at = now()
    WHERE p.supplier = :s AND p.status <> 'gone'
      AND NOT EXISTS (
          SELECT 1 FROM staging_products s WHERE s.run_id = :r AND s.supplier_sku = p.supplier_sku)
      AND NOT EXISTS (
          SELECT 1 FROM product_rejects j WHERE j.run_id = :r AND j.supplier_sku = p.supplier_sku)
    RETURNING p.id
), sync AS (
    INSERT INTO sync_outbox (product_id, kind)
    SELECT gone.id, 'suspend' FROM gone
    WHERE EXISTS (SELECT 1 FROM listings l WHERE l.product_id = gone.id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS gone, (SELECT count(*) FROM sync) AS sync_changes
"""


def _recheck_unseen(session: Session, run: Any, connector_factory: ConnectorFactory) -> int:
    """Stage the current records of the products this complete full run did not see, as the
    connector reports them (``recheck_missing``), under the slice key ``recheck``; returns how
    many were still there. What it does not report is then marked gone by the merge."""
    params = {"r": run.id, "s": run.supplier}
    unseen = [row[0] for row in session.execute(text(_UNSEEN), params)]
    if not unseen:
        return 0
    session.execute(
        text("DELETE FROM staging_products WHERE run_id = :r AND slice_key = :k"),
        {"r": run.id, "k": RECHECK_SLICE},
    )
    settings = _settings()
    counts = copy_slice(
        _psycopg(session),
        run.id,
        RECHECK_SLICE,
        run.supplier,
        connector_factory(run.account).recheck_missing(unseen, run.started_at),
        chunk_rows=settings.copy_chunk_rows,
        raw_max_bytes=settings.reject_raw_max_bytes,
    )
    log.info(
        "collect run %s: %d products unseen, %d still at the supplier (%d rejected)",
        run.id,
        len(unseen),
        counts.records,
        counts.rejected,
    )
    return counts.records + counts.rejected


def merge_run(
    run_id: int, connector_factory: ConnectorFactory = default_connector
) -> dict[str, Any]:
    """Merge a run whose slices are all done or failed; no-op for any other run.

    All done: ``succeeded`` (a full run first rechecks the supplier's products it did not see,
    then marks those the supplier no longer has gone, and sets the watermark). Some failed: the
    done slices are merged, nothing is marked gone, the run is ``partial`` (``failed`` when none
    succeeded), with the failed slices' reasons.
    """
    with db.session_scope() as session:
        run = session.execute(
            text(
                "SELECT id, supplier, account, mode, status, started_at FROM collect_runs "
                "WHERE id = :r FOR UPDATE"
            ),
            {"r": run_id},
        ).first()
        if run is None:
            return {"run_id": run_id, "skipped": "no such run"}
        if run.status != "running":
            return {"run_id": run_id, "skipped": f"run is {run.status}"}
        by_status: dict[str, int] = dict(
            session.execute(
                text(
                    "SELECT status, count(*) FROM collect_run_slices WHERE run_id = :r "
                    "GROUP BY status"
                ),
                {"r": run_id},
            ).all()
        )
        waiting = by_status.get("pending", 0) + by_status.get("paused", 0)
        if waiting:
            return {"run_id": run_id, "skipped": f"{waiting} slices not finished"}
        failed = by_status.get("failed", 0)
        done = by_status.get("done", 0)
        if failed and not done:
            reasons = _failed_reasons(session, run_id)
            _fail_locked(session, run_id, f"every slice failed: {reasons}")
            return {"run_id": run_id, "status": "failed"}
        lost = session.execute(text(_LOST_STAGING), {"r": run_id}).scalars().all()
        if lost:
            # staging_products is UNLOGGED: a database crash empties it while the slices stay
            # done. Merging what is left would mark the missing products gone.
            shown = ", ".join(lost[:5]) + (" ..." if len(lost) > 5 else "")
            _fail_locked(
                session,
                run_id,
                f"the staged rows of {len(lost)} done slices are gone ({shown}): the database "
                "lost its unlogged staging table (a crash or restart?); collect again",
            )
            return {"run_id": run_id, "status": "failed"}
        # Two runs of one supplier (two accounts, or a retried merge) never merge at once.
        _lock_key(session, f"dropship.collect.merge:{run.supplier}")
        complete = failed == 0
        rechecked = 0
        if complete and run.mode == "full":
            rechecked = _recheck_unseen(session, run, connector_factory)
        merged = session.execute(text(_MERGE), {"r": run_id}).one()
        inserted, updated, staged = int(merged.inserted), int(merged.updated), int(merged.staged)
        sync_changes = int(merged.sync_changes)
        gone = 0
        if complete and run.mode == "full":
            marked = session.execute(text(_MARK_GONE), {"r": run_id, "s": run.supplier}).one()
            gone = int(marked.gone)
            sync_changes += int(marked.sync_changes)
        session.execute(text("DELETE FROM staging_products WHERE run_id = :r"), {"r": run_id})
        _refresh_run_counts(session, run_id)
        status = "succeeded" if complete else "partial"
        error = None if complete else f"{failed} slices failed: {_failed_reasons(session, run_id)}"
        session.execute(
            text(
                "UPDATE collect_runs SET status = :st, complete = :c, inserted = :i, "
                "updated = :u, unchanged = :n, gone = :g, error = :e, "
                "finished_at = clock_timestamp() "
                "WHERE id = :r"
            ),
            {
                "r": run_id,
                "st": status,
                "c": complete,
                "i": inserted,
                "u": updated,
                "n": staged - inserted - updated,
                "g": gone,
                "e": error,
            },
        )
        if complete:
            # Changes after the run started are read again next time (with the overlap).
            session.execute(
                text(
                    "INSERT INTO collect_watermarks (account, supplier, watermark, run_id) "
                    "VALUES (:a, :s, :w, :r) ON CONFLICT (account) DO UPDATE SET "
                    "watermark = EXCLUDED.watermark, run_id = EXCLUDED.run_id, updated_at = now()"
                ),
                {"a": run.account, "s": run.supplier, "w": run.started_at, "r": run_id},
            )
        counts = {
            **run_counts(session, run_id),
            "rechecked": rechecked,
            # Listed products whose sync work this merge recorded (sync_outbox).
            "sync_changes": sync_changes,
        }
    log.info("collect run %s %s: %s", run_id, status, counts)
    return counts


def _failed_reasons(session: Session, run_id: int, limit: int = 5) -> str:
    rows = session.execute(
        text(
            "SELECT slice_key, error FROM collect_run_slices WHERE run_id = :r "
            "AND status = 'failed' ORDER BY slice_key LIMIT :n"
        ),
        {"r": run_id, "n": limit},
    ).all()
    return "; ".join(f"{row.slice_key}: {row.error}" for row in rows)[:ERROR_MAX]


# --------------------------------------------------------------------------- sweep


def sweep_runs(now: datetime | None = None, stall_timeout_s: int | None = None) -> dict[str, Any]:
    """Decide what each active run needs; the caller publishes it after this commits.

    Returns ``{"merge": [run ids], "resubmit": {run id: [slice keys]}, "plan": [run ids],
    "failed": [run ids]}``:

    * running, no slice left (the chord body was lost) -> merge;
    * running, no slice finished for ``stall_timeout_s`` (lost header, killed worker) ->
      re-publish its unfinished slices, at most ``max_resubmits`` times, then fail with a reason;
    * paused past ``paused_until`` -> running again, its unfinished slices re-published;
    * planned for longer than the stall timeout (crash between commit and publish) -> re-plan.
    """
    settings = _settings()
    now = now or _now()
    stall = timedelta(
        seconds=stall_timeout_s if stall_timeout_s is not None else settings.stall_timeout_s
    )
    actions: dict[str, Any] = {"merge": [], "resubmit": {}, "plan": [], "failed": []}
    with db.session_scope() as session:
        runs = session.execute(
            text(
                "SELECT id, status, resubmits, paused_until, "
                "coalesce(heartbeat_at, started_at) AS beat FROM collect_runs "
                "WHERE status IN ('planned', 'running', 'paused') ORDER BY id "
                "FOR UPDATE SKIP LOCKED"
            )
        ).all()
        for run in runs:
            if run.status == "planned":
                if run.beat < now - stall:
                    session.execute(
                        text("UPDATE collect_runs SET heartbeat_at = now() WHERE id = :r"),
                        {"r": run.id},
                    )
                    actions["plan"].append(run.id)
                continue
            if run.status == "paused":
                if run.paused_until is not None and run.paused_until <= now:
                    session.execute(
                        text(
                            "UPDATE collect_run_slices SET status = 'pending' "
                            "WHERE run_id = :r AND status = 'paused'"
                        ),
                        {"r": run.id},
                    )
                    planned = session.execute(
                        text("SELECT slices_expected FROM collect_runs WHERE id = :r"),
                        {"r": run.id},
                    ).scalar()
                    # Paused while planning: nothing to resume but the plan itself.
                    next_status = "running" if planned is not None else "planned"
                    session.execute(
                        text(
                            "UPDATE collect_runs SET status = :st, paused_until = NULL, "
                            "error = NULL, heartbeat_at = now() WHERE id = :r"
                        ),
                        {"r": run.id, "st": next_status},
                    )
                    if planned is None:
                        actions["plan"].append(run.id)
                    else:
                        actions["resubmit"][run.id] = _unfinished_keys(session, run.id)
                continue
            keys = _unfinished_keys(session, run.id)
            if not keys:
                actions["merge"].append(run.id)
            elif run.beat < now - stall:
                if run.resubmits < settings.max_resubmits:
                    session.execute(
                        text(
                            "UPDATE collect_runs SET resubmits = resubmits + 1, "
                            "heartbeat_at = now() WHERE id = :r"
                        ),
                        {"r": run.id},
                    )
                    actions["resubmit"][run.id] = keys
                else:
                    shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
                    _fail_locked(
                        session,
                        run.id,
                        f"stalled: {len(keys)} slices never finished after {run.resubmits} "
                        f"re-publications ({shown})",
                    )
                    actions["failed"].append(run.id)
    return actions


# --------------------------------------------------------------------------- reading


RUN_FIELDS = (
    "id, supplier, account, mode, status, slices_expected, slices_done, records, unparsed, "
    "inserted, updated, unchanged, rejected, gone, complete, error, started_at, finished_at, "
    "paused_until"
)


def _run_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["run_id"] = data.pop("id")
    for key in ("started_at", "finished_at", "paused_until"):
        if data.get(key) is not None:
            data[key] = data[key].isoformat()
    return data


def run_counts(session: Session, run_id: int) -> dict[str, Any]:
    row = session.execute(
        text(f"SELECT {RUN_FIELDS} FROM collect_runs WHERE id = :r"), {"r": run_id}
    ).first()
    if row is None:
        raise ConfigurationError(f"collect run {run_id} does not exist")
    return _run_dict(row)


def get_run(run_id: int) -> dict[str, Any]:
    with db.session_scope() as session:
        return run_counts(session, run_id)


def recent_runs(limit: int = 20, supplier: str | None = None) -> list[dict[str, Any]]:
    with db.session_scope() as session:
        rows = session.execute(
            text(
                f"SELECT {RUN_FIELDS} FROM collect_runs "
                "WHERE (CAST(:s AS text) IS NULL OR supplier = :s) ORDER BY id DESC LIMIT :n"
            ),
            {"s": supplier, "n": limit},
        ).all()
    return [_run_dict(r) for r in rows]


def iter_rejects(run_id: int | None = None, limit: int = 100) -> Iterator[dict[str, Any]]:
    """Rejected records, newest first (of one run, or of every run)."""
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT id, run_id, slice_key, supplier, supplier_sku, reason, raw, created_at "
                "FROM product_rejects WHERE (CAST(:r AS bigint) IS NULL OR run_id = :r) "
                "ORDER BY id DESC LIMIT :n"
            ),
            {"r": run_id, "n": limit},
        ).all()
    for row in rows:
        yield dict(row._mapping)
