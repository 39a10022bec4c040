"""Reconciliation: each market account's view of its listings against our ``listings`` rows.

A run reads the market's listings one page per call (:func:`reconcile_page`, one Celery task per
page so a long account never holds a worker for long and a rate-limit wait re-schedules one
page, not the whole run) and stores what it saw in ``reconcile_observations``. Only once the
last page has been read does :func:`apply_run` compare and repair, in one transaction:

* a market listing carrying our key (``DS<account id>-<product id>``, see
  :func:`dropship.listings.services.external_sku`) that we have no row for, or whose row has no
  ``market_product_id`` (the create's answer was lost), is **adopted**: the row gets the
  market's id and a status from the market's sale state;
* a listing we think is ``active`` that the market shows suspended, refused or deleted is
  **marked** (status and the reason in ``error``);
* anything else that does not match (no key, another account's key, a key whose product we do
  not have, a second listing with one of our keys, a key that differs from our row's) is
  **reported** in ``listing_discrepancies`` with the reason, never adopted by a guess;
* a listing we hold as live (``active``, ``suspended``, ``suspend_failed``) that the complete
  read did not show at all is read on its own (``get_listing``); only when the market says it
  does not know it (``None``) is it marked ``missing`` and reported (kind ``missing``). A read
  that fails leaves it as it was; a ``missing`` listing the market lists again gets its status
  back from the market's state.

A market error or a record the connector cannot read aborts the run (``reconcile_runs.status =
'failed'`` with the error) before anything of ours changed: a partial or failed read never
deletes or downgrades our record of a live listing. A listing being registered right now (its
advisory lock is held) is left alone and counted as ``busy``.

Results are ids and counts only (they show in Flower).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, text

from dropship import db
from dropship.errors import PermanentError, RateLimitedError, TransientError
from dropship.listings.rules import MarketAccount
from dropship.listings.services import ERROR_MAX, default_connector, ensure_account
from dropship.ops.memory import batch_rows
from dropship.platforms.interfaces import MarketListingState, Page

log = logging.getLogger("dropship.listings.reconcile")

SKU_PATTERN = re.compile(r"^DS(?P<account>[0-9]+)-(?P<product>[0-9]+)$")
APPLY_CHUNK = 500
# A running run whose pages stopped coming this long ago lost its task chain.
STALLED_AFTER_S = 3600
MAX_PAGES = 100_000

# The market's sale state -> our status for an adopted listing.
ADOPTED_STATUS = {
    "on_sale": "active",
    "pending": "active",  # registered, under review: as register records a fresh listing
    "suspended": "suspended",
    "refused": "refused",
    "deleted": "deleted",
}
# Our 'active' listing and what the market shows -> the status we mark it with.
MARK_ACTIVE = {"suspended": "suspended", "refused": "refused", "deleted": "deleted"}
COUNT_KEYS = (
    "seen",
    "matched",
    "adopted",
    "marked_suspended",
    "marked_refused",
    "marked_deleted",
    "marked_missing",
    "missing_unchecked",
    "restored",
    "reported",
    "busy",
)
# Ours and believed to exist at the market: a complete read that does not show one is checked.
LIVE_STATUSES = ("active", "suspended", "suspend_failed")
# At most this many unseen listings are read one by one per run (the rest wait for the next
# run): a list that came back short by a fault must not turn into thousands of reads.
MISSING_CHECKS_PER_RUN = 200


class PagedListings(Protocol):
    def listings_page(self, cursor: str | None = None) -> Page[MarketListingState]: ...

    def get_listing(self, market_product_id: str) -> MarketListingState | None: ...


class RunFailed(PermanentError):
    """The run was aborted; its error is recorded on the run."""


@dataclass(frozen=True)
class RunInfo:
    run_id: int
    account: str
    account_id: int
    status: str


# --------------------------------------------------------------------------- runs


def start_run(account: str, *, supersede: bool = True) -> int | None:
    """A new ``running`` run for ``account`` (committed). An older run of the account that is
    still ``running`` is superseded (failed with that reason) so two never apply at once; with
    ``supersede=False`` (the beat sweep) a running run is left to finish and ``None`` returned."""
    market_account = MarketAccount.from_settings(account)
    with db.session_scope() as session:
        account_id = ensure_account(session, market_account)
        running = session.execute(
            text(
                "SELECT id FROM reconcile_runs WHERE account_id = :a AND status = 'running' "
                "FOR UPDATE"
            ),
            {"a": account_id},
        ).first()
        if running is not None and not supersede:
            return None
        session.execute(
            text(
                "UPDATE reconcile_runs SET status = 'failed', finished_at = now(), "
                "updated_at = now(), error = 'superseded by a newer run' "
                "WHERE account_id = :a AND status = 'running'"
            ),
            {"a": account_id},
        )
        run_id = int(
            session.execute(
                text("INSERT INTO reconcile_runs (account_id) VALUES (:a) RETURNING id"),
                {"a": account_id},
            ).scalar_one()
        )
    return run_id


def _run(conn: Connection, run_id: int, *, lock: bool = False) -> RunInfo | None:
    row = conn.execute(
        text(
            "SELECT r.id, r.status, r.account_id, a.name FROM reconcile_runs r "
            "JOIN accounts a ON a.id = r.account_id WHERE r.id = :id"
            + (" FOR UPDATE OF r" if lock else "")
        ),
        {"id": run_id},
    ).first()
    if row is None:
        return None
    return RunInfo(int(row.id), str(row.name), int(row.account_id), str(row.status))


def fail_run(run_id: int, error: str) -> None:
    """Abort a run: nothing it observed is applied; the error is kept for operators."""
    with db.get_engine().begin() as conn:
        conn.execute(
            text(
                "UPDATE reconcile_runs SET status = 'failed', error = :e, finished_at = now(), "
                "updated_at = now() WHERE id = :id AND status = 'running'"
            ),
            {"id": run_id, "e": error[:ERROR_MAX]},
        )
        conn.execute(text("DELETE FROM reconcile_observations WHERE run_id = :id"), {"id": run_id})
    log.warning("reconcile run %s aborted: %s", run_id, error[:300])


def _note_error(run_id: int, error: str) -> None:
    with db.get_engine().begin() as conn:
        conn.execute(
            text("UPDATE reconcile_runs SET error = :e WHERE id = :id AND status = 'running'"),
            {"id": run_id, "e": error[:ERROR_MAX]},
        )


def reconcile_page(
    run_id: int, cursor: str | None = None, connector: PagedListings | None = None
) -> dict[str, Any]:
    """Read one page of the run's account and store what it shows. Returns ``{"run_id",
    "status", "seen", "next_cursor"}``; ``next_cursor`` is ``None`` after the last page.
    A permanent market error fails the run (and raises :class:`RunFailed`); a transient one
    is raised as is for the caller's retry (the run stays ``running``)."""
    with db.get_engine().connect() as conn:
        info = _run(conn, run_id)
    if info is None or info.status != "running":
        return {
            "run_id": run_id,
            "status": info.status if info else "missing",
            "seen": 0,
            "next_cursor": None,
        }
    paged = connector or _paged(info.account)
    try:
        page = paged.listings_page(cursor)
    except TransientError as exc:
        # Retried by the caller; the run shows why it is not moving meanwhile.
        _note_error(run_id, f"retrying page {cursor or 1}: {type(exc).__name__}: {exc}")
        raise
    except Exception as exc:  # a refusal, a bad answer: the run is over, ours untouched
        error = f"{type(exc).__name__}: {exc}"
        fail_run(run_id, error)
        raise RunFailed(f"reconcile run {run_id} ({info.account}) aborted: {error}") from None
    if page.next_cursor is not None and page.next_cursor == cursor:
        fail_run(run_id, f"paging does not advance (cursor {cursor})")
        raise RunFailed(f"reconcile run {run_id}: paging does not advance")
    rows = [
        {
            "run": run_id,
            "mpid": s.market_product_id,
            "sku": s.external_sku,
            "state": s.sale_state,
            "price": s.sale_price,
            "stock": s.stock,
        }
        for s in page.items
    ]
    with db.get_engine().begin() as conn:
        if rows:
            # A listing seen twice (a list that shifted between pages) keeps its last view.
            conn.execute(
                text(
                    "INSERT INTO reconcile_observations (run_id, market_product_id, "
                    "external_sku, sale_state, sale_price, stock) "
                    "VALUES (:run, :mpid, :sku, :state, :price, :stock) "
                    "ON CONFLICT (run_id, market_product_id) DO UPDATE SET "
                    "external_sku = EXCLUDED.external_sku, sale_state = EXCLUDED.sale_state, "
                    "sale_price = EXCLUDED.sale_price, stock = EXCLUDED.stock"
                ),
                rows,
            )
        conn.execute(
            text(
                "UPDATE reconcile_runs SET pages = pages + 1, updated_at = now(), error = NULL "
                "WHERE id = :id AND status = 'running'"
            ),
            {"id": run_id},
        )
    return {
        "run_id": run_id,
        "status": "running",
        "seen": len(rows),
        "next_cursor": page.next_cursor,
    }


def _paged(account: str) -> PagedListings:
    connector: Any = default_connector(account)
    if not hasattr(connector, "listings_page"):
        raise PermanentError(f"account {account}: its connector cannot page its listings")
    paged: PagedListings = connector
    return paged


# --------------------------------------------------------------------------- apply


def _observations(conn: Connection, run_id: int) -> Iterator[list[Any]]:
    after = ""
    while True:
        chunk = conn.execute(
            text(
                "SELECT market_product_id, external_sku, sale_state, sale_price, stock "
                "FROM reconcile_observations WHERE run_id = :r AND market_product_id > :after "
                "ORDER BY market_product_id LIMIT :n"
            ),
            {"r": run_id, "after": after, "n": batch_rows(APPLY_CHUNK)},
        ).all()
        if not chunk:
            return
        yield list(chunk)
        after = str(chunk[-1].market_product_id)


def _locked(conn: Connection, listing_id: int) -> bool:
    """The listing's advisory lock for this transaction; False while a registration holds it."""
    return bool(
        conn.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"dropship.listing:{listing_id}"},
        ).scalar_one()
    )


def _report(
    conn: Connection,
    account_id: int,
    obs: Any,
    kind: str,
    reason: str,
    listing_id: int | None = None,
) -> None:
    conn.execute(
        text(
            "INSERT INTO listing_discrepancies (account_id, market_product_id, external_sku, "
            "kind, reason, market_state, listing_id) VALUES (:a, :mpid, :sku, :kind, :reason, "
            ":state, :lid) ON CONFLICT (account_id, market_product_id, kind) DO UPDATE SET "
            "reason = EXCLUDED.reason, external_sku = EXCLUDED.external_sku, "
            "market_state = EXCLUDED.market_state, listing_id = EXCLUDED.listing_id, "
            "last_seen_at = now(), resolved_at = NULL"
        ),
        {
            "a": account_id,
            "mpid": obs.market_product_id,
            "sku": obs.external_sku,
            "kind": kind,
            "reason": reason,
            "state": obs.sale_state,
            "lid": listing_id,
        },
    )


_UNSEEN_LIVE = text(
    """
    SELECT l.id, l.market_product_id FROM listings l
    WHERE l.account_id = :a AND l.market_product_id IS NOT NULL AND l.status = ANY(:live)
      AND NOT EXISTS (SELECT 1 FROM reconcile_observations o
                      WHERE o.run_id = :r AND o.market_product_id = l.market_product_id)
    ORDER BY l.id
    """
)


def _confirm_missing(
    run_id: int, connector: PagedListings | None, counts: dict[str, int]
) -> list[tuple[int, str]]:
    """Our live listings the complete read did not show, each read on its own (outside any
    transaction: these are market calls): ``(listing id, market id)`` of those the market
    says it does not know. A failed read (or one the rate limit stops) leaves the listing
    unchecked, counted in ``missing_unchecked``."""
    with db.get_engine().connect() as conn:
        info = _run(conn, run_id)
        if info is None or info.status != "running":
            return []
        unseen = conn.execute(
            _UNSEEN_LIVE, {"a": info.account_id, "r": run_id, "live": list(LIVE_STATUSES)}
        ).all()
    if not unseen:
        return []
    reader = connector or _paged(info.account)
    missing: list[tuple[int, str]] = []
    for n, row in enumerate(unseen):
        if n >= MISSING_CHECKS_PER_RUN:
            counts["missing_unchecked"] += len(unseen) - n
            break
        try:
            state = reader.get_listing(str(row.market_product_id))
        except RateLimitedError:
            counts["missing_unchecked"] += len(unseen) - n  # the rest waits for the next run
            break
        except (TransientError, PermanentError) as exc:
            counts["missing_unchecked"] += 1
            log.warning(
                "reconcile run %s: listing %s not in the list, and reading it failed: %s",
                run_id,
                row.id,
                str(exc)[:200],
            )
            continue
        if state is None:
            missing.append((int(row.id), str(row.market_product_id)))
    return missing


def _mark_missing(
    conn: Connection,
    info: RunInfo,
    missing: Sequence[tuple[int, str]],
    counts: dict[str, int],
) -> None:
    """Mark the confirmed ones ``missing`` (never deleted: the row is our record of what was
    listed and sold) and report them; a listing whose status or market id moved meanwhile, or
    whose lock a registration or sync holds, is left alone."""
    reason = (
        f"reconcile run {info.run_id}: the market no longer has this listing (not in its "
        "complete list, and reading it says it does not exist)"
    )
    for listing_id, market_product_id in missing:
        if not _locked(conn, listing_id):
            counts["busy"] += 1
            continue
        row = conn.execute(
            text(
                "UPDATE listings SET status = 'missing', error = :e, updated_at = now() "
                "WHERE id = :id AND market_product_id = :mpid AND status = ANY(:live) "
                "RETURNING external_sku"
            ),
            {"id": listing_id, "mpid": market_product_id, "e": reason, "live": list(LIVE_STATUSES)},
        ).first()
        if row is None:
            counts["busy"] += 1
            continue
        _report(
            conn,
            info.account_id,
            _Seen(market_product_id, row.external_sku, None),
            "missing",
            reason,
            listing_id,
        )
        counts["marked_missing"] += 1
    # Still missing and still not listed: the report stays open.
    conn.execute(
        text(
            "UPDATE listing_discrepancies d SET last_seen_at = now() FROM listings l "
            "WHERE d.kind = 'missing' AND d.account_id = :a AND d.resolved_at IS NULL "
            "AND l.id = d.listing_id AND l.status = 'missing' AND NOT EXISTS ("
            "SELECT 1 FROM reconcile_observations o WHERE o.run_id = :r "
            "AND o.market_product_id = l.market_product_id)"
        ),
        {"a": info.account_id, "r": info.run_id},
    )


@dataclass(frozen=True)
class _Seen:
    """What ``_report`` needs of an observation, for a listing the market did not show."""

    market_product_id: str
    external_sku: str | None
    sale_state: str | None


def apply_run(run_id: int, connector: PagedListings | None = None) -> dict[str, Any]:
    """Compare the run's observations with our listings and repair, in one transaction; the
    run is then ``succeeded`` with its counts. Our live listings the run did not see are read
    one by one first (``connector.get_listing``; the account's connector when not given).
    Returns ``{"run_id", "account", "status", counts...}``."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    # Only ever after the last page: a failed or partial read never gets here.
    missing = _confirm_missing(run_id, connector, counts)
    with db.get_engine().begin() as conn:
        info = _run(conn, run_id, lock=True)
        if info is None or info.status != "running":
            return {"run_id": run_id, "status": info.status if info else "missing"}
        for chunk in _observations(conn, run_id):
            _apply_chunk(conn, info, chunk, counts)
        _mark_missing(conn, info, missing, counts)
        # Reported earlier and not seen again by this complete read: resolved.
        conn.execute(
            text(
                "UPDATE listing_discrepancies SET resolved_at = now() WHERE account_id = :a "
                "AND resolved_at IS NULL AND last_seen_at < (SELECT started_at "
                "FROM reconcile_runs WHERE id = :r)"
            ),
            {"a": info.account_id, "r": run_id},
        )
        conn.execute(text("DELETE FROM reconcile_observations WHERE run_id = :r"), {"r": run_id})
        conn.execute(
            text(
                "UPDATE reconcile_runs SET status = 'succeeded', counts = CAST(:c AS jsonb), "
                "finished_at = now(), updated_at = now() WHERE id = :r"
            ),
            {"r": run_id, "c": json.dumps(counts)},
        )
    log.info("reconcile run %s (%s): %s", run_id, info.account, counts)
    return {"run_id": run_id, "account": info.account, "status": "succeeded", **counts}


def _apply_chunk(
    conn: Connection, info: RunInfo, chunk: Sequence[Any], counts: dict[str, int]
) -> None:
    counts["seen"] += len(chunk)
    by_mpid = {
        str(r.market_product_id): r
        for r in conn.execute(
            text(
                "SELECT id, product_id, external_sku, market_product_id, status FROM listings "
                "WHERE account_id = :a AND market_product_id = ANY(:ids)"
            ),
            {"a": info.account_id, "ids": [o.market_product_id for o in chunk]},
        )
    }
    skus = [o.external_sku for o in chunk if o.external_sku]
    by_sku: dict[str, Any] = {
        str(r.external_sku): r
        for r in conn.execute(
            text(
                "SELECT id, product_id, external_sku, market_product_id, status FROM listings "
                "WHERE account_id = :a AND external_sku = ANY(:skus)"
            ),
            {"a": info.account_id, "skus": skus},
        )
    }
    for obs in chunk:
        ours = by_mpid.get(str(obs.market_product_id))
        if ours is not None:
            _compare(conn, info, obs, ours, counts)
            continue
        match = SKU_PATTERN.match(obs.external_sku or "")
        if match is None:
            _report(
                conn,
                info.account_id,
                obs,
                "unknown_sku",
                "no external SKU on the market listing"
                if not obs.external_sku
                else "external SKU is not one of our keys",
            )
            counts["reported"] += 1
            continue
        if int(match["account"]) != info.account_id:
            _report(
                conn,
                info.account_id,
                obs,
                "foreign_sku",
                f"external SKU is the key of account id {match['account']}, not this account",
            )
            counts["reported"] += 1
            continue
        row = by_sku.get(str(obs.external_sku))
        if row is not None and row.market_product_id is not None:
            _report(
                conn,
                info.account_id,
                obs,
                "duplicate",
                f"a second market listing with our key; ours is {row.market_product_id}",
                int(row.id),
            )
            counts["reported"] += 1
            continue
        adopted_id = _adopt(conn, info, obs, row, int(match["product"]), counts)
        if adopted_id is not None:
            # A second market listing with this key later in the run is a duplicate.
            by_sku[str(obs.external_sku)] = _Adopted(adopted_id, str(obs.market_product_id))


def _compare(conn: Connection, info: RunInfo, obs: Any, ours: Any, counts: dict[str, int]) -> None:
    if obs.external_sku and obs.external_sku != ours.external_sku:
        _report(
            conn,
            info.account_id,
            obs,
            "sku_mismatch",
            f"market shows external SKU {obs.external_sku}, our listing has {ours.external_sku}",
            int(ours.id),
        )
        counts["reported"] += 1
        return
    if ours.status == "missing":
        _restore(conn, info, obs, ours, counts)
        return
    target = MARK_ACTIVE.get(str(obs.sale_state)) if ours.status == "active" else None
    if target is None:
        counts["matched"] += 1
        return
    changed = _transition(
        conn,
        int(ours.id),
        "active",
        target,
        f"reconcile run {info.run_id}: the market shows this listing {obs.sale_state}",
    )
    if changed is None:
        counts["busy"] += 1
        return
    counts[f"marked_{target}"] += changed
    counts["matched"] += 1 - changed


def _transition(
    conn: Connection, listing_id: int, before: str, after: str, note: str
) -> int | None:
    """Set a listing from ``before`` to ``after`` with ``note`` in ``error``, under its advisory
    lock: 1 when changed, 0 when its status moved meanwhile, None while another holds the lock."""
    if not _locked(conn, listing_id):
        return None
    return int(
        conn.execute(
            text(
                "UPDATE listings SET status = :s, error = :e, updated_at = now() "
                "WHERE id = :id AND status = :before"
            ),
            {"id": listing_id, "s": after, "e": note, "before": before},
        ).rowcount
    )


def _restore(conn: Connection, info: RunInfo, obs: Any, ours: Any, counts: dict[str, int]) -> None:
    """A listing marked ``missing`` that the market lists again: its status from the market's
    state (its ``missing`` report is resolved, not being seen again)."""
    changed = _transition(
        conn,
        int(ours.id),
        "missing",
        ADOPTED_STATUS[str(obs.sale_state)],
        f"reconcile run {info.run_id}: listed by the market again ({obs.sale_state})",
    )
    counts["restored" if changed else "busy"] += 1


@dataclass(frozen=True)
class _Adopted:
    id: int
    market_product_id: str


def _adopt(
    conn: Connection,
    info: RunInfo,
    obs: Any,
    row: Any,
    product_id: int,
    counts: dict[str, int],
) -> int | None:
    """Adopt ``obs`` into ``row`` (or a new row); the listing id adopted, or None."""
    status = ADOPTED_STATUS[str(obs.sale_state)]
    note = f"adopted by reconcile run {info.run_id} (market shows {obs.sale_state})"
    if row is not None:
        if not _locked(conn, int(row.id)):
            counts["busy"] += 1  # its registration is running: it will find the key itself
            return None
        changed = conn.execute(
            text(
                "UPDATE listings SET market_product_id = :mpid, status = :s, error = :e, "
                "last_synced_at = now(), updated_at = now() "
                "WHERE id = :id AND market_product_id IS NULL"
            ),
            {"id": int(row.id), "mpid": obs.market_product_id, "s": status, "e": note},
        ).rowcount
        counts["adopted" if changed else "busy"] += 1
        return int(row.id) if changed else None
    exists = conn.execute(text("SELECT 1 FROM products WHERE id = :p"), {"p": product_id}).first()
    if exists is None:
        _report(
            conn,
            info.account_id,
            obs,
            "unknown_sku",
            f"our key pattern, but product {product_id} does not exist here",
        )
        counts["reported"] += 1
        return None
    inserted = conn.execute(
        text(
            "INSERT INTO listings (product_id, account_id, external_sku, market_product_id, "
            "sale_price, status, error, last_synced_at) VALUES (:p, :a, :sku, :mpid, :price, "
            ":s, :e, now()) ON CONFLICT DO NOTHING RETURNING id"
        ),
        {
            "p": product_id,
            "a": info.account_id,
            "sku": obs.external_sku,
            "mpid": obs.market_product_id,
            "price": obs.sale_price,
            "s": status,
            "e": note,
        },
    ).scalar()
    counts["adopted" if inserted is not None else "busy"] += 1
    return None if inserted is None else int(inserted)


# --------------------------------------------------------------------------- one call


def reconcile_account(account: str, connector: PagedListings | None = None) -> dict[str, Any]:
    """A whole run in this process (CLI, shell): every page, then apply. Returns the summary;
    an aborted run returns ``status="failed"`` with its error."""
    run_id = start_run(account)
    assert run_id is not None  # superseding always starts one
    paged = connector or _paged(account)
    cursor: str | None = None
    try:
        for _ in range(MAX_PAGES):
            cursor = reconcile_page(run_id, cursor, paged)["next_cursor"]
            if cursor is None:
                apply_run(run_id, paged)
                return run_summary(run_id)
        fail_run(run_id, f"more than {MAX_PAGES} pages")
    except RunFailed:
        pass
    except TransientError as exc:
        fail_run(run_id, f"{type(exc).__name__}: {exc}")
    return run_summary(run_id)


def run_summary(run_id: int) -> dict[str, Any]:
    with db.get_engine().connect() as conn:
        row = conn.execute(
            text(
                "SELECT r.id, a.name, r.status, r.counts, r.error, r.pages FROM reconcile_runs r "
                "JOIN accounts a ON a.id = r.account_id WHERE r.id = :id"
            ),
            {"id": run_id},
        ).one()
    return {
        "run_id": int(row.id),
        "account": str(row.name),
        "status": str(row.status),
        "pages": int(row.pages),
        **dict(row.counts or {}),
        **({"error": row.error} if row.error else {}),
    }


def fail_stalled_runs(stalled_after_s: int = STALLED_AFTER_S) -> list[int]:
    """Runs whose page tasks stopped (a lost message, retries exhausted): failed, visibly."""
    with db.get_engine().begin() as conn:
        ids = [
            int(i)
            for i in conn.execute(
                text(
                    "UPDATE reconcile_runs SET status = 'failed', finished_at = now(), "
                    "error = 'stalled: no page read for ' || :s || ' s' WHERE status = 'running' "
                    "AND updated_at < now() - make_interval(secs => :s) RETURNING id"
                ),
                {"s": stalled_after_s},
            ).scalars()
        ]
        if ids:
            conn.execute(
                text("DELETE FROM reconcile_observations WHERE run_id = ANY(:ids)"), {"ids": ids}
            )
    return ids


def discrepancies(
    account: str | None = None, include_resolved: bool = False
) -> list[dict[str, Any]]:
    """Reported market listings (newest first), for the CLI."""
    with db.get_engine().connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.name AS account, d.market_product_id, d.external_sku, d.kind, "
                "d.reason, d.market_state, d.first_seen_at, d.last_seen_at, d.resolved_at "
                "FROM listing_discrepancies d JOIN accounts a ON a.id = d.account_id "
                "WHERE (CAST(:a AS text) IS NULL OR a.name = :a) "
                "AND (:all OR d.resolved_at IS NULL) ORDER BY d.last_seen_at DESC, d.id"
            ),
            {"a": account, "all": include_resolved},
        ).all()
    return [dict(r._mapping) for r in rows]


def latest_runs() -> list[dict[str, Any]]:
    """The latest run per account (status, counts, error)."""
    with db.get_engine().connect() as conn:
        rows = conn.execute(
            text(
                "SELECT DISTINCT ON (r.account_id) a.name AS account, r.id, r.status, r.counts, "
                "r.error, r.started_at, r.finished_at FROM reconcile_runs r "
                "JOIN accounts a ON a.id = r.account_id ORDER BY r.account_id, r.id DESC"
            )
        ).all()
    return [dict(r._mapping) for r in rows]
