"""The sync flow: listings follow their product's cost, shipping, stock and status.

Where the work comes from: the collect merge records a ``sync_outbox`` row (product id + kind)
for every listed product whose cost, shipping fee, stock or status it changed, in the merge's own
transaction (``dropship.catalog.services``); after that transaction commits the rows are published
(:func:`drain_outbox`, called by the merge task and by the sweep) as tasks carrying product ids.

* ``suspend`` (queue ``high``, :func:`suspend_products`): a product that sold out, was
  discontinued or disappeared is suspended on every market account. Each listing is marked
  ``suspending`` (committed) before the market call; the suspension is then **confirmed by reading
  the listing back** (``MarketConnector.get_listing``). A market that answered 200 and did not
  apply it (the classic overselling bug) is sent the suspension again, up to
  ``RESENDS_PER_RUN`` times per run and ``MAX_SUSPEND_ATTEMPTS`` in all; after that the listing
  is ``suspend_failed`` with the reason (``dropship listings suspensions`` lists them,
  ``retry-suspend`` sends them again). Unconfirmed ``suspending`` rows are re-sent by the sweep.
* ``update`` (queue ``medium``, :func:`update_products`): price (from the pricing rules) and stock
  on every account; a price that would break the minimum margin suspends the listing instead
  (reason ``below_min_margin``); a listing we suspended for stock (``soldout``) or margin comes
  back on sale once the product is sellable at a price that keeps the margin. Operator-protected
  fields (``listings.protected_fields``: ``name``, ``price``) are never written; a protected
  price is still checked against the margin (a cost rise under it suspends).

Per listing, the same session-level advisory lock as registration (``dropship.listing:<id>``)
serialises suspension, update and registration of one listing. Callable without Celery.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from dropship import db
from dropship.errors import ConfigurationError, PermanentError, RateLimitedError, TransientError
from dropship.listings import rules
from dropship.listings.rules import MarketAccount, evaluate_products, load_pricing_rules
from dropship.listings.services import (
    ERROR_MAX,
    ConnectorFactory,
    default_connector,
    option_stocks,
)
from dropship.platforms.interfaces import MarketConnector, MarketListingState, OptionStock
from dropship.platforms.ratelimit import LimiterUnavailableError

log = logging.getLogger("dropship.listings.sync")

# Send-and-read-back cycles per listing in one run, and in all before ``suspend_failed``.
RESENDS_PER_RUN = 3
MAX_SUSPEND_ATTEMPTS = 9
# Pause between a suspension and its read-back: markets apply a status change asynchronously.
CONFIRM_DELAY_S = 0.2
# A ``suspending`` listing untouched this long lost its task (or waits for a retry): the sweep
# sends it again.
RESEND_AFTER_S = 30
# How long a suspension's market call may wait for its rate-limit slot (see ``_patient``).
SUSPEND_MAX_WAIT_S = 5.0
# How long a suspension waits for another task holding the listing's lock (an update mid-call).
LOCK_WAIT_MS = 15_000
# Reasons sync itself lifts once the product is sellable at a price that keeps the margin;
# ``gone`` (discontinued / disappeared) and operator suspensions are lifted by hand.
RESUMABLE_REASONS = ("soldout", rules.BELOW_MIN_MARGIN)
PROTECTABLE_FIELDS = ("name", "price")
OUTBOX_KEEP_S = 24 * 3600

PublishFn = Callable[[str, list[int]], None]


def _lock_key(listing_id: int) -> str:
    return f"dropship.listing:{listing_id}"


def _lock(conn: Connection, listing_id: int, wait: bool) -> bool:
    """The listing's advisory lock (shared with registration). ``wait``: block up to
    ``LOCK_WAIT_MS`` for a holder to finish (a suspension must not be skipped)."""
    if wait:
        conn.execute(text(f"SET lock_timeout = {int(LOCK_WAIT_MS)}"))
        try:
            conn.execute(
                text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"),
                {"k": _lock_key(listing_id)},
            )
            got = True
        except OperationalError as exc:  # lock_timeout: the holder is still at it
            if "lock timeout" not in str(exc.orig).lower():
                raise
            conn.rollback()
            got = False
        conn.execute(text("SET lock_timeout = 0"))
        conn.commit()
        return got
    got = conn.execute(
        text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"), {"k": _lock_key(listing_id)}
    ).scalar_one()
    conn.commit()
    return bool(got)


def _unlock(conn: Connection, listing_id: int) -> None:
    if conn.in_transaction():
        conn.rollback()
    conn.execute(
        text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": _lock_key(listing_id)}
    )
    conn.commit()


# --------------------------------------------------------------------------- outbox


def drain_outbox(publish: PublishFn, limit: int = 20_000) -> dict[str, int]:
    """Publish unpublished ``sync_outbox`` rows: ``publish(kind, product_ids)`` once per kind
    (suspensions first), then mark them published and commit. Rows another drain holds are
    skipped (``SKIP LOCKED``); a publish that fails rolls back and the rows stay for the sweep.
    A commit lost after publishing re-publishes them: the tasks are idempotent."""
    counts = {"suspend": 0, "update": 0}
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT id, product_id, kind FROM sync_outbox WHERE published_at IS NULL "
                "ORDER BY kind, id LIMIT :n FOR UPDATE SKIP LOCKED"
            ),
            {"n": limit},
        ).all()
        if not rows:
            return counts
        by_kind: dict[str, list[int]] = {"suspend": [], "update": []}
        for row in rows:
            by_kind[row.kind].append(int(row.product_id))
        suspended = set(by_kind["suspend"])
        for kind in ("suspend", "update"):
            # A product both suspended and updated in one drain: the suspension decides (the
            # update re-reads the product anyway, but need not run twice).
            ids = list(dict.fromkeys(by_kind[kind]))
            if kind == "update":
                ids = [i for i in ids if i not in suspended]
            if ids:
                publish(kind, ids)
            counts[kind] = len(ids)
        session.execute(
            text("UPDATE sync_outbox SET published_at = now() WHERE id = ANY(:ids)"),
            {"ids": [int(r.id) for r in rows]},
        )
        session.execute(
            text("DELETE FROM sync_outbox WHERE published_at < now() - make_interval(secs => :s)"),
            {"s": OUTBOX_KEEP_S},
        )
    return counts


# --------------------------------------------------------------------------- suspension


def _product_reason(status: str) -> str:
    return "gone" if status == "gone" else "soldout"


def request_suspensions(product_ids: Iterable[int]) -> int:
    """Mark the live listings of these products ``suspending`` if the product is still not
    sellable (it may be back by now); returns how many were newly marked. Committed before any
    market call, so a crash leaves a visible row the sweep re-sends."""
    ids = sorted({int(i) for i in product_ids})
    if not ids:
        return 0
    with db.session_scope() as session:
        marked = session.execute(
            text(
                """
                UPDATE listings l SET status = 'suspending',
                    suspend_reason = CASE WHEN p.status = 'gone' THEN 'gone' ELSE 'soldout' END,
                    suspend_attempts = 0, suspend_requested_at = now(),
                    suspend_confirmed_at = NULL, error = NULL, updated_at = now()
                FROM products p
                WHERE p.id = l.product_id AND l.product_id = ANY(:ids)
                  AND NOT (p.status = 'active' AND p.stock > 0)
                  AND l.status = 'active' AND l.market_product_id IS NOT NULL
                """
            ),
            {"ids": ids},
        )
    return int(getattr(marked, "rowcount", 0))


@dataclass(frozen=True)
class _Pending:
    id: int
    account: str
    market_product_id: str
    external_sku: str
    # Why it is suspended, kept in ``error`` once confirmed (e.g. the margin that broke).
    note: str | None = None


_PENDING = text(
    """
    SELECT l.id, a.name AS account, l.market_product_id, l.external_sku
    FROM listings l JOIN accounts a ON a.id = l.account_id
    WHERE l.product_id = ANY(:ids) AND l.status = 'suspending'
    ORDER BY a.name, l.id
    """
)


def suspend_products(
    product_ids: Sequence[int],
    connector_factory: ConnectorFactory = default_connector,
    resends: int = RESENDS_PER_RUN,
    confirm_delay_s: float = CONFIRM_DELAY_S,
) -> dict[str, int]:
    """Suspend every live listing of these (not sellable) products on every market account and
    confirm each by reading it back. Raises ``TransientError`` when some are still unconfirmed
    (the task retries; the sweep re-sends them too)."""
    request_suspensions(product_ids)
    with db.session_scope() as session:
        pending = [
            _Pending(int(r.id), r.account, str(r.market_product_id), r.external_sku)
            for r in session.execute(_PENDING, {"ids": sorted({int(i) for i in product_ids})})
        ]
    return confirm_suspensions(pending, connector_factory, resends, confirm_delay_s)


def confirm_suspensions(
    pending: Sequence[_Pending],
    connector_factory: ConnectorFactory = default_connector,
    resends: int = RESENDS_PER_RUN,
    confirm_delay_s: float = CONFIRM_DELAY_S,
) -> dict[str, int]:
    """Send and confirm each pending suspension. Accounts run side by side (one thread each):
    every account has its own rate limit, so Naver never waits for Coupang's calls."""
    by_account: dict[str, list[_Pending]] = {}
    for item in pending:
        by_account.setdefault(item.account, []).append(item)
    # Connectors are made here, one per account, and each used by one thread only.
    connectors = {account: connector_factory(account) for account in by_account}
    results: list[tuple[dict[str, int], TransientError | None]]
    if len(by_account) <= 1:
        results = [
            _confirm_account(items, connectors[a], resends, confirm_delay_s)
            for a, items in by_account.items()
        ]
    else:
        with ThreadPoolExecutor(max_workers=len(by_account)) as pool:
            futures = [
                pool.submit(_confirm_account, items, connectors[a], resends, confirm_delay_s)
                for a, items in by_account.items()
            ]
            results = [f.result() for f in futures]
    counts = {"confirmed": 0, "unconfirmed": 0, "failed": 0, "skipped": 0}
    first_error: TransientError | None = None
    for part, error in results:
        for key, value in part.items():
            counts[key] += value
        first_error = first_error or error
    if counts["unconfirmed"]:
        raise first_error or TransientError(
            f"{counts['unconfirmed']} suspension(s) not confirmed by the market yet"
        )
    return counts


def _confirm_account(
    items: Sequence[_Pending], connector: MarketConnector, resends: int, confirm_delay_s: float
) -> tuple[dict[str, int], TransientError | None]:
    counts = {"confirmed": 0, "unconfirmed": 0, "failed": 0, "skipped": 0}
    first_error: TransientError | None = None
    with db.get_engine().connect() as conn:
        for item in items:
            if not _lock(conn, item.id, wait=True):
                counts["unconfirmed"] += 1
                continue
            try:
                outcome = _suspend_one(conn, connector, item, resends, confirm_delay_s)
            except TransientError as exc:
                first_error = first_error or exc
                _note_error(conn, item.id, exc)
                outcome = "unconfirmed"
            finally:
                _unlock(conn, item.id)
            counts[outcome] += 1
    return counts, first_error


def _suspend_one(
    conn: Connection,
    connector: MarketConnector,
    item: _Pending,
    resends: int,
    confirm_delay_s: float,
) -> str:
    status = conn.execute(
        text("SELECT status, suspend_attempts FROM listings WHERE id = :id"), {"id": item.id}
    ).one()
    conn.commit()
    if status.status != "suspending":
        return "skipped"  # confirmed (or resumed) by another delivery meanwhile
    attempts = int(status.suspend_attempts)
    for _ in range(max(1, resends)):
        if attempts >= MAX_SUSPEND_ATTEMPTS:
            break
        attempts += 1
        # Counted before the call: a crash mid-call still spends the attempt.
        conn.execute(
            text("UPDATE listings SET suspend_attempts = :n, updated_at = now() WHERE id = :id"),
            {"id": item.id, "n": attempts},
        )
        conn.commit()
        try:
            with _patient(connector):
                connector.suspend_listing(item.market_product_id)
        except PermanentError as exc:
            _fail(conn, item.id, f"suspension refused: {exc}")
            return "failed"
        except (RateLimitedError, LimiterUnavailableError):
            # Not sent: the attempt is given back (only requests the market saw count).
            conn.execute(
                text("UPDATE listings SET suspend_attempts = :n WHERE id = :id"),
                {"id": item.id, "n": attempts - 1},
            )
            conn.commit()
            raise
        if confirm_delay_s:
            time.sleep(confirm_delay_s)
        with _patient(connector):
            state = connector.get_listing(item.market_product_id)
        if state is None or state.sale_state in ("suspended", "deleted"):
            final = "deleted" if state is None or state.sale_state == "deleted" else "suspended"
            conn.execute(
                text(
                    "UPDATE listings SET status = :st, suspend_confirmed_at = now(), "
                    "last_synced_at = now(), error = :note, updated_at = now() WHERE id = :id"
                ),
                {"id": item.id, "st": final, "note": item.note},
            )
            conn.commit()
            return "confirmed"
        log.warning(
            "listing %s: suspension %d accepted but %s still shows %s; sending it again",
            item.external_sku,
            attempts,
            item.account,
            state.sale_state,
        )
        conn.execute(
            text("UPDATE listings SET error = :e WHERE id = :id"),
            {
                "id": item.id,
                "e": f"suspension {attempts} not applied: market shows {state.sale_state}",
            },
        )
        conn.commit()
    if attempts >= MAX_SUSPEND_ATTEMPTS:
        _fail(
            conn,
            item.id,
            f"market still shows the listing on sale after {attempts} suspension requests",
        )
        return "failed"
    return "unconfirmed"


@contextmanager
def _patient(connector: MarketConnector) -> Iterator[None]:
    """Let the connector's calls wait in the call up to ``SUSPEND_MAX_WAIT_S`` for their
    rate-limit slot instead of re-scheduling the task after ``max_wait_s`` (1 s): while bulk
    updates hold the account's limiter the next free slot is often just over a second away, and
    a re-scheduled suspension loses far more than that. The ``high`` worker runs one task at a
    time, so the wait holds no one else's slot."""
    http = getattr(connector, "http", None)
    before = getattr(http, "max_wait_s", None)
    if http is None or not isinstance(before, int | float) or before >= SUSPEND_MAX_WAIT_S:
        yield
        return
    http.max_wait_s = SUSPEND_MAX_WAIT_S
    try:
        yield
    finally:
        http.max_wait_s = before


def _fail(conn: Connection, listing_id: int, reason: str) -> None:
    conn.execute(
        text(
            "UPDATE listings SET status = 'suspend_failed', error = :e, updated_at = now() "
            "WHERE id = :id"
        ),
        {"id": listing_id, "e": reason[:ERROR_MAX]},
    )
    conn.commit()
    log.error("listing %s: suspension failed: %s", listing_id, reason[:300])


def _note_error(conn: Connection, listing_id: int, exc: BaseException) -> None:
    if conn.in_transaction():
        conn.rollback()
    conn.execute(
        text("UPDATE listings SET error = :e WHERE id = :id"),
        {"id": listing_id, "e": f"{type(exc).__name__}: {exc}"[:ERROR_MAX]},
    )
    conn.commit()


# --------------------------------------------------------------------------- price / stock


_UPDATE_ROWS = text(
    """
    SELECT l.id, l.product_id, l.status, l.market_product_id, l.external_sku, l.sale_price,
           l.stock AS listed_stock, l.protected_fields, l.suspend_reason,
           l.options AS listing_options, p.options AS product_options,
           p.price AS cost, p.shipping_fee, p.stock, p.status AS product_status
    FROM listings l JOIN products p ON p.id = l.product_id
    WHERE l.id = :id
    """
)


def update_products(
    product_ids: Sequence[int],
    connector_factory: ConnectorFactory = default_connector,
    confirm_delay_s: float = CONFIRM_DELAY_S,
) -> dict[str, int]:
    """Bring the price and stock of every listing of these products in line on every market
    account (see the module docstring). Returns counts; raises the first transient error after
    trying the whole batch (the retry redoes only what still differs)."""
    ids = sorted({int(i) for i in product_ids})
    counts = {
        "updated": 0,
        "resumed": 0,
        "suspended": 0,
        "unchanged": 0,
        "skipped": 0,
    }
    if not ids:
        return counts
    with db.session_scope() as session:
        listings = session.execute(
            text(
                "SELECT l.id, l.product_id, a.name AS account, a.platform FROM listings l "
                "JOIN accounts a ON a.id = l.account_id WHERE l.product_id = ANY(:ids) "
                "AND l.status IN ('active', 'suspended') AND l.market_product_id IS NOT NULL "
                "ORDER BY a.name, l.id"
            ),
            {"ids": ids},
        ).all()
        by_account: dict[str, list[Any]] = {}
        for row in listings:
            by_account.setdefault(row.account, []).append(row)
        decisions: dict[tuple[str, int], rules.Decision] = {}
        pricing: dict[str, dict[str | None, rules.PricingRule]] = {}
        for account, rows in by_account.items():
            market_account = _market_account(account, rows[0].platform)
            for d in evaluate_products(
                session, [r.product_id for r in rows], market_account, record=False
            ):
                decisions[(account, d.product_id)] = d
            pricing[account] = load_pricing_rules(session, market_account.market)
    transient: TransientError | None = None
    with db.get_engine().connect() as conn:
        for account, rows in by_account.items():
            connector = connector_factory(account)
            for listing in rows:
                if not _lock(conn, listing.id, wait=False):
                    counts["skipped"] += 1  # a suspension or another update is on it
                    continue
                try:
                    outcome = _update_one(
                        conn,
                        connector,
                        listing.id,
                        decisions[(account, listing.product_id)],
                        pricing[account],
                        confirm_delay_s,
                    )
                    counts[outcome] += 1
                except TransientError as exc:
                    transient = transient or exc
                    _note_error(conn, listing.id, exc)
                finally:
                    _unlock(conn, listing.id)
    if transient is not None:
        raise transient
    return counts


def _market_account(name: str, platform: str) -> MarketAccount:
    """The account as the rules see it (``allow_adult`` from the settings when configured)."""
    try:
        return MarketAccount.from_settings(name)
    except ConfigurationError:
        return MarketAccount(name=name, market=platform)


def _update_one(
    conn: Connection,
    connector: MarketConnector,
    listing_id: int,
    decision: rules.Decision,
    pricing: dict[str | None, rules.PricingRule],
    confirm_delay_s: float,
) -> str:
    row = conn.execute(_UPDATE_ROWS, {"id": listing_id}).one()
    conn.commit()
    if row.status not in ("active", "suspended"):
        return "skipped"  # a suspension started meanwhile: it decides
    protected = set(row.protected_fields or ())
    price = int(row.sale_price) if row.sale_price is not None else None
    reason: str | None = None  # set: the listing must not sell
    message = ""
    if not decision.listable:
        if decision.code in (rules.NO_STOCK, rules.NOT_ACTIVE):
            reason, message = _product_reason(row.product_status), decision.reason or ""
        elif decision.code == rules.BELOW_MIN_MARGIN:
            reason, message = rules.BELOW_MIN_MARGIN, decision.reason or ""
        else:
            # A catalog rule (word list, mapping, ban) now blocks it: not sync's decision to
            # take the listing down; recorded on the listing for the operator.
            conn.execute(
                text("UPDATE listings SET error = :e WHERE id = :id"),
                {"id": listing_id, "e": f"not listable now ({decision.code}): {decision.reason}"},
            )
            conn.commit()
            return "unchanged"
    elif "price" in protected and price is not None:
        # The operator's price stays; it must still keep the minimum margin at today's cost.
        rule = pricing.get(decision.market_category) or pricing.get(None)
        cost = int(row.cost) + int(row.shipping_fee)
        if rule is not None and rule.margin(price, cost) < rule.min_margin_krw:
            reason = rules.BELOW_MIN_MARGIN
            message = (
                f"protected price {price} KRW is below the minimum margin "
                f"{rule.min_margin_krw} KRW at cost {cost} KRW"
            )
    else:
        price = decision.sale_price
    listed_options: list[dict[str, Any]] = [dict(o) for o in row.listing_options or []]
    # An option listing: each market option gets its own supplier option's stock.
    targets = option_stocks(listed_options, row.product_options or [])
    if reason is None and targets and not any(t.stock for t in targets):
        # In stock, but none of it in an option this listing sells (options replaced).
        reason = "soldout"
        message = "none of the listed options is in stock at the supplier"
    if reason is not None:
        if row.status == "suspended":
            return "unchanged"  # already off sale (its first reason kept)
        _start_suspension(conn, listing_id, reason, message)
        pending = _Pending(
            listing_id, "", str(row.market_product_id), row.external_sku, message[:ERROR_MAX]
        )
        outcome = _suspend_one(conn, connector, pending, RESENDS_PER_RUN, confirm_delay_s)
        if outcome == "unconfirmed":
            raise TransientError(f"listing {row.external_sku}: suspension not confirmed yet")
        return "suspended"
    if row.status == "suspended" and row.suspend_reason not in RESUMABLE_REASONS:
        return "unchanged"  # suspended for a reason only an operator lifts
    mpid = str(row.market_product_id)
    stock = sum(t.stock for t in targets) if targets else int(row.stock)
    changed = False
    if price is not None and price != row.sale_price and "price" not in protected:
        connector.update_price(mpid, price)
        changed = True
    resumed = row.status == "suspended"
    # Options whose stock differs from the last one sent (all of them before the first sync).
    moved = [t for o, t in zip(listed_options, targets, strict=True) if o.get("stock") != t.stock]
    if resumed:
        _resume(connector, mpid, stock, targets)
    elif targets and (moved or row.listed_stock is None):
        connector.update_option_stock(mpid, targets)
        changed = True
    elif not targets and (row.listed_stock is None or stock != int(row.listed_stock)):
        connector.update_stock(mpid, stock)
        changed = True
    sent = targets if resumed or row.listed_stock is None else moved
    if any(t.stock == 0 for t in sent):
        # An option sold out at the supplier must not stay buyable: read it back.
        _confirm_option_stock(
            conn, connector, listing_id, row.external_sku, mpid, targets, confirm_delay_s
        )
    for o, t in zip(listed_options, targets, strict=True):
        o["stock"] = t.stock
    conn.execute(
        text(
            "UPDATE listings SET sale_price = :price, stock = :stock, status = 'active', "
            "options = CAST(:options AS jsonb), suspend_reason = NULL, error = NULL, "
            "last_synced_at = now(), updated_at = now() "
            "WHERE id = :id AND status IN ('active', 'suspended')"
        ),
        {
            "id": listing_id,
            "price": price,
            "stock": stock,
            "options": json.dumps(listed_options, ensure_ascii=False),
        },
    )
    conn.commit()
    if resumed:
        return "resumed"
    return "updated" if changed else "unchanged"


def _start_suspension(conn: Connection, listing_id: int, reason: str, message: str) -> None:
    conn.execute(
        text(
            "UPDATE listings SET status = 'suspending', suspend_reason = :r, "
            "suspend_attempts = 0, suspend_requested_at = now(), suspend_confirmed_at = NULL, "
            "error = :e, updated_at = now() WHERE id = :id"
        ),
        {"id": listing_id, "r": reason, "e": message[:ERROR_MAX] or None},
    )
    conn.commit()
    log.info("listing %s: suspending (%s)", listing_id, reason)


def _resume(
    connector: MarketConnector,
    market_product_id: str,
    stock: int,
    targets: Sequence[OptionStock] = (),
) -> None:
    """Back on sale with ``stock``: Naver sets status and stock in one call, Coupang needs the
    stock first, then the sale resumed per vendor item. An option listing gets each option's
    stock first (on Naver the combinations hold the stock; the status call only resumes)."""
    resume = getattr(connector, "resume_listing", None)
    if resume is None:
        raise PermanentError(f"{connector.market}: the connector cannot resume a listing")
    if targets:
        connector.update_option_stock(market_product_id, targets)
    if connector.market == "naver":
        resume(market_product_id, stock)
    else:
        if not targets:
            connector.update_stock(market_product_id, stock)
        resume(market_product_id)


def _still_buyable(state: MarketListingState | None, targets: Sequence[OptionStock]) -> list[str]:
    """Market options on sale with stock that the supplier no longer has (their target is 0,
    or no listed option names them)."""
    if state is None or state.sale_state != "on_sale":
        return []
    return [
        f"{o.value or o.label or o.option_id} ({o.stock} on sale)"
        for o in state.options
        if o.on_sale and o.stock > 0 and not o.stock_in(targets)
    ]


def _confirm_option_stock(
    conn: Connection,
    connector: MarketConnector,
    listing_id: int,
    external_sku: str,
    market_product_id: str,
    targets: Sequence[OptionStock],
    confirm_delay_s: float,
) -> None:
    """Read the listing back after an option stock write; an option still buyable that the
    supplier sold out is sent again (up to ``RESENDS_PER_RUN`` times), then the run raises
    ``TransientError`` with the options named in the listing's ``error`` (the task retries)."""
    for attempt in range(1, RESENDS_PER_RUN + 1):
        if confirm_delay_s:
            time.sleep(confirm_delay_s)
        with _patient(connector):
            left = _still_buyable(connector.get_listing(market_product_id), targets)
        if not left:
            return
        log.warning(
            "listing %s: option stock write %d accepted but the market still sells %s",
            external_sku,
            attempt,
            ", ".join(left)[:300],
        )
        if attempt < RESENDS_PER_RUN:
            connector.update_option_stock(market_product_id, targets)
    message = f"sold-out option(s) still on sale at the market: {', '.join(left)}"
    conn.execute(
        text("UPDATE listings SET error = :e, updated_at = now() WHERE id = :id"),
        {"id": listing_id, "e": message[:ERROR_MAX]},
    )
    conn.commit()
    raise TransientError(f"listing {external_sku}: {message}"[:ERROR_MAX])


# --------------------------------------------------------------------------- sweep


def sweep(publish: PublishFn, resend_after_s: int = RESEND_AFTER_S) -> dict[str, int]:
    """Beat: publish what the outbox still holds (a crash between the merge's commit and its
    publish), suspend live listings whose product is not sellable (whatever path missed them,
    e.g. a registration that finished after the sell-out), re-send unconfirmed suspensions
    untouched for ``resend_after_s``, update listings suspended for stock whose product is
    back in stock (so they are resumed), and update live listings with an option the supplier
    sold out whose zero the market never confirmed (the update's retries ran out)."""
    drained = drain_outbox(publish)
    with db.session_scope() as session:
        missed = [
            int(pid)
            for pid in session.execute(
                text(
                    "SELECT DISTINCT l.product_id FROM listings l JOIN products p "
                    "ON p.id = l.product_id WHERE l.status = 'active' "
                    "AND l.market_product_id IS NOT NULL "
                    "AND NOT (p.status = 'active' AND p.stock > 0) ORDER BY 1"
                )
            ).scalars()
        ]
        stale = [
            int(pid)
            for pid in session.execute(
                text(
                    "SELECT DISTINCT product_id FROM listings WHERE status = 'suspending' "
                    "AND updated_at < now() - make_interval(secs => :s) ORDER BY 1"
                ),
                {"s": resend_after_s},
            ).scalars()
        ]
        # Suspended for stock while the product is back: the update that would resume it found
        # the suspension still running (and skipped it).
        back = [
            int(pid)
            for pid in session.execute(
                text(
                    "SELECT DISTINCT l.product_id FROM listings l JOIN products p "
                    "ON p.id = l.product_id WHERE l.status = 'suspended' "
                    "AND l.suspend_reason = 'soldout' AND p.status = 'active' AND p.stock > 0 "
                    "ORDER BY 1"
                )
            ).scalars()
        ]
        # A listed option sold out (or gone) at the supplier whose zero was never confirmed at
        # the market (the update's retries ran out while the market kept selling it).
        options = [
            int(pid)
            for pid in session.execute(_OPTION_ZERO_UNSENT, {"s": resend_after_s}).scalars()
        ]
    again = sorted(set(missed) | set(stale))
    if again:
        publish("suspend", again)
    updates = sorted(set(back) | set(options))
    if updates:
        publish("update", updates)
    return {
        **drained,
        "missed": len(missed),
        "resent": len(stale),
        "resume": len(back),
        "option_zero": len(options),
    }


_OPTION_ZERO_UNSENT = text(
    """
    SELECT DISTINCT l.product_id
    FROM listings l JOIN products p ON p.id = l.product_id
    CROSS JOIN LATERAL jsonb_array_elements(l.options) AS lo
    WHERE l.status = 'active' AND l.market_product_id IS NOT NULL
      AND jsonb_typeof(l.options) = 'array' AND jsonb_array_length(l.options) > 0
      AND l.updated_at < now() - make_interval(secs => :s)
      AND coalesce(lo->>'stock', '') <> '0'
      AND NOT EXISTS (
          SELECT 1 FROM jsonb_array_elements(p.options) AS po
          WHERE CASE WHEN coalesce(lo->>'supplier_option_code', '') <> ''
                     THEN po->>'supplier_option_code' = lo->>'supplier_option_code'
                     ELSE po->>'name' = lo->>'name' AND po->>'value' = lo->>'value' END
            AND coalesce((po->>'stock')::int, 0) > 0)
    ORDER BY 1
    """
)


# --------------------------------------------------------------------------- operators


def protect(listing_id: int, field: str, on: bool = True) -> list[str]:
    """Protect (or release) a listing field from sync; returns the listing's protected fields."""
    if field not in PROTECTABLE_FIELDS:
        raise PermanentError(
            f"field {field!r} cannot be protected; one of {', '.join(PROTECTABLE_FIELDS)} "
            "(stock is never protected: a sell-out must always reach the market)"
        )
    with db.session_scope() as session:
        sql = (
            "UPDATE listings SET protected_fields = CASE WHEN :f = ANY(protected_fields) "
            "THEN protected_fields ELSE array_append(protected_fields, CAST(:f AS varchar)) END"
            if on
            else "UPDATE listings SET protected_fields = "
            "array_remove(protected_fields, CAST(:f AS varchar))"
        )
        fields = session.execute(
            text(f"{sql}, updated_at = now() WHERE id = :id RETURNING protected_fields"),
            {"id": listing_id, "f": field},
        ).scalar_one_or_none()
    if fields is None:
        raise PermanentError(f"no listing {listing_id}")
    return list(fields)


def suspensions(limit: int = 50) -> list[dict[str, Any]]:
    """Listings whose suspension is not confirmed (``suspending``) or gave up
    (``suspend_failed``), oldest request first."""
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT l.id, a.name AS account, l.product_id, l.external_sku, "
                "l.market_product_id, l.status, l.suspend_reason, l.suspend_attempts, "
                "l.suspend_requested_at, l.error FROM listings l "
                "JOIN accounts a ON a.id = l.account_id "
                "WHERE l.status IN ('suspending', 'suspend_failed') "
                "ORDER BY l.suspend_requested_at NULLS FIRST, l.id LIMIT :n"
            ),
            {"n": limit},
        ).all()
    return [dict(r._mapping) for r in rows]


def retry_suspensions(listing_ids: Sequence[int] | None = None) -> list[int]:
    """Put ``suspend_failed`` listings (these, or all) back to ``suspending`` with a fresh
    attempt budget; returns their product ids for the caller to publish."""
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "UPDATE listings SET status = 'suspending', suspend_attempts = 0, "
                "suspend_requested_at = now(), updated_at = now() "
                "WHERE status = 'suspend_failed' "
                "AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(:ids)) RETURNING product_id"
            ),
            {"ids": list(listing_ids) if listing_ids else None},
        ).scalars()
        return sorted({int(p) for p in rows})
