"""The register flow: sellable products become listings on each market account, exactly once.

* :func:`plan_registrations` (the sweep, per market account): selects products not yet listed on
  the account (one sweep per account at a time by an advisory lock; the products share-locked,
  so sweeps of different accounts run side by side and a collect merge waits for them),
  evaluates them with the catalog rules (:mod:`dropship.listings.rules`), and claims a
  ``listings`` row per listable product (status ``claimed``, our key in ``external_sku``, the
  sale price, market category and option prices). It commits, then returns the listing ids to
  publish, plus claimed/registering rows left stale by a lost message or a dead worker.
* :func:`register_listings` (one batch): per listing, a session-level advisory lock makes a
  second delivery of the same batch skip it; the row is marked ``registering`` and committed
  *before* the market call; the connector's ``create_listing`` looks the external SKU up first,
  so a retry after an unknown outcome (timeout, lost response) finds the listing instead of
  creating another. A market refusal leaves the listing ``refused`` with the market's message;
  a transient error leaves it ``registering`` and is raised for Celery's retry.

Both are callable without Celery; ``tasks/listings.py`` wraps them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from dropship import db
from dropship.errors import PermanentError, RateLimitedError, TransientError
from dropship.images.services import gate_decisions, listing_images
from dropship.listings.rules import Decision, MarketAccount, evaluate_products
from dropship.ops.memory import batch_rows
from dropship.platforms.interfaces import (
    MarketConnector,
    MarketListingRequest,
    OptionStock,
    ProductOption,
)
from dropship.settings import get_settings

log = logging.getLogger("dropship.listings")

EVALUATE_CHUNK = 1000
ERROR_MAX = 2000
# A claimed/registering row untouched this long has lost its task: the sweep re-publishes it.
STALE_AFTER_S = 600

ConnectorFactory = Callable[[str], MarketConnector]


def default_connector(account: str) -> MarketConnector:
    from dropship.platforms.registry import connector_for

    connector: MarketConnector = connector_for(account)
    return connector


def market_accounts() -> list[str]:
    from dropship.platforms.config import MARKET_PLATFORMS

    platforms = get_settings().platforms
    return sorted(a.name for p in MARKET_PLATFORMS for a in platforms.accounts_for(p))


def ensure_account(session: Session, account: MarketAccount) -> int:
    """The ``accounts`` row of a configured market account (created on first use); listings
    reference it. Credentials stay in the settings: the row names the settings entry."""
    return int(
        session.execute(
            text(
                "INSERT INTO accounts (name, platform, role, credentials_ref) "
                "VALUES (:n, :p, 'market', :n) ON CONFLICT (name) DO UPDATE "
                "SET platform = EXCLUDED.platform RETURNING id"
            ),
            {"n": account.name, "p": account.market},
        ).scalar_one()
    )


def external_sku(account_id: int, product_id: int) -> str:
    """Our key on the market (seller SKU field): one per product x account."""
    return f"DS{account_id}-{product_id}"


def _option_rows(decision: Decision) -> list[dict[str, Any]]:
    return [
        {
            "name": o.name,
            "value": o.value,
            "supplier_option_code": o.supplier_option_code,
            "price_delta": o.price_delta,
            "sale_price": o.sale_price,
        }
        for o in decision.options
    ]


def plan_registrations(
    account: str | MarketAccount, limit: int = 5000, stale_after_s: int = STALE_AFTER_S
) -> dict[str, Any]:
    """Claim listings for up to ``limit`` products not yet listed on ``account``; returns
    ``{"account", "claimed", "blocked", "publish": [listing ids]}`` after committing."""
    market_account = MarketAccount.from_settings(account) if isinstance(account, str) else account
    blocked = 0
    with db.session_scope() as session:
        account_id = ensure_account(session, market_account)
        # One sweep per account at a time (a second waits, then finds these products listed).
        # The products are only share-locked: sweeps of different accounts evaluate the same
        # products at once (an exclusive SKIP LOCKED made one account's sweep skip every
        # product another account's sweep held), while a collect merge updating them waits.
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"dropship.register_sweep:{account_id}"},
        )
        candidates = [
            int(pid)
            for pid in session.execute(
                text(
                    """
                    SELECT p.id FROM products p
                    WHERE p.status = 'active' AND p.stock > 0 AND p.price > 0
                      AND NOT EXISTS (SELECT 1 FROM listings l
                                      WHERE l.product_id = p.id AND l.account_id = :a)
                    ORDER BY p.id LIMIT :limit
                    FOR SHARE OF p SKIP LOCKED
                    """
                ),
                {"a": account_id, "limit": limit},
            ).scalars()
        ]
        step = batch_rows(EVALUATE_CHUNK)
        for start in range(0, len(candidates), step):
            chunk = candidates[start : start + step]
            decisions = evaluate_products(session, chunk, market_account)
            # A product without a usable image waits (listing_blocks code "images").
            decisions = gate_decisions(session, decisions, market_account.name)
            rows = [
                {
                    "p": d.product_id,
                    "a": account_id,
                    "sku": external_sku(account_id, d.product_id),
                    "price": d.sale_price,
                    "cat": d.market_category,
                    "opts": json.dumps(_option_rows(d), ensure_ascii=False),
                }
                for d in decisions
                if d.listable
            ]
            blocked += len(decisions) - len(rows)
            if rows:
                # The unique (product, account) key makes a second claim impossible even when
                # two sweeps race past the lock (a product inserted meanwhile).
                session.execute(
                    text(
                        "INSERT INTO listings (product_id, account_id, external_sku, sale_price, "
                        "market_category, options, status) VALUES (:p, :a, :sku, :price, :cat, "
                        "CAST(:opts AS jsonb), 'claimed') ON CONFLICT DO NOTHING"
                    ),
                    rows,
                )
        # Rows this transaction inserted (a conflicting claim inserted nothing).
        claimed = int(
            session.execute(
                text("SELECT count(*) FROM listings WHERE account_id = :a AND created_at = now()"),
                {"a": account_id},
            ).scalar_one()
        )
        publish = [
            int(lid)
            for lid in session.execute(
                text(
                    "SELECT id FROM listings WHERE account_id = :a "
                    "AND status IN ('claimed', 'registering') "
                    # now() is this transaction's start: created_at = now() are this sweep's
                    # claims; older untouched rows lost their task (crash before publish).
                    "AND (created_at = now() "
                    "OR updated_at < now() - make_interval(secs => :stale)) ORDER BY id"
                ),
                {"a": account_id, "stale": stale_after_s},
            ).scalars()
        ]
    return {
        "account": market_account.name,
        "claimed": claimed,
        "blocked": blocked,
        "publish": publish,
    }


def _lock(conn: Connection, listing_id: int) -> bool:
    got = conn.execute(
        text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"),
        {"k": f"dropship.listing:{listing_id}"},
    ).scalar_one()
    conn.commit()
    return bool(got)


def _unlock(conn: Connection, listing_id: int) -> None:
    if conn.in_transaction():
        conn.rollback()  # an error mid-way: nothing half-written stays, the lock still goes
    conn.execute(
        text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"),
        {"k": f"dropship.listing:{listing_id}"},
    )
    conn.commit()


def option_stocks(
    listing_options: Sequence[dict[str, Any]], product_options: Sequence[dict[str, Any]]
) -> list[OptionStock]:
    """Each listed option's stock now, in the listing's order: the product's option with the
    same supplier option code (a listed option with a code is that option and no other, as
    orders buy it by that code), else the one with the same name and value. An option the
    supplier no longer has gets 0."""
    by_code = {
        str(o["supplier_option_code"]): o for o in product_options if o.get("supplier_option_code")
    }
    by_label = {(o.get("name"), o.get("value")): o for o in product_options}
    stocks = []
    for o in listing_options:
        code = o.get("supplier_option_code")
        found = by_code.get(str(code)) if code else by_label.get((o.get("name"), o.get("value")))
        stocks.append(
            OptionStock(
                name=str(o.get("name", "")),
                value=str(o.get("value", "")),
                stock=max(0, int((found or {}).get("stock") or 0)),
                supplier_option_code=str(code) if code else None,
            )
        )
    return stocks


def _request(row: Any) -> MarketListingRequest:
    options = tuple(
        ProductOption(
            name=str(o["name"]),
            value=str(o["value"]),
            # The market receives each option as a difference to the listing's price.
            price_delta=int(o["sale_price"]) - int(row.sale_price),
            stock=int(o.get("stock") or 0),
            supplier_option_code=o.get("supplier_option_code"),
        )
        for o in row.listing_options
    )
    return MarketListingRequest(
        external_sku=row.external_sku,
        name=row.name,
        sale_price=int(row.sale_price),
        stock=int(row.stock),
        category_id=str(row.market_category),
        images=tuple(row.images or ()),
        options=options,
        # Shipping is part of the sale price (the pricing rule adds it to the cost).
        shipping_fee=0,
    )


_LISTING = text(
    """
    SELECT l.id, l.product_id, l.status, l.attempts, l.external_sku, l.sale_price,
           l.market_category, l.options AS listing_options, p.name, p.stock, p.images,
           p.options AS product_options
    FROM listings l JOIN products p ON p.id = l.product_id
    WHERE l.id = :id AND l.account_id = (SELECT id FROM accounts WHERE name = :account)
    """
)


def _finish(conn: Connection, listing_id: int, status: str, **fields: Any) -> None:
    conn.execute(
        text(
            "UPDATE listings SET status = :status, market_product_id = coalesce(:mpid, "
            "market_product_id), error = :error, last_synced_at = CASE WHEN :active "
            "THEN now() ELSE last_synced_at END, updated_at = now() WHERE id = :id"
        ),
        {
            "id": listing_id,
            "status": status,
            "active": status == "active",
            "mpid": fields.get("market_product_id"),
            "error": fields.get("error"),
        },
    )
    conn.commit()


def register_listings(
    account: str,
    listing_ids: Sequence[int],
    connector_factory: ConnectorFactory = default_connector,
) -> dict[str, Any]:
    """Register each listing of the batch once. Returns counts; raises the first transient
    error after trying the whole batch (the retry skips what is done)."""
    counts = {"active": 0, "refused": 0, "skipped": 0}
    transient: TransientError | None = None
    connector = connector_factory(account)
    with db.get_engine().connect() as conn:
        for listing_id in dict.fromkeys(int(i) for i in listing_ids):
            if not _lock(conn, listing_id):
                counts["skipped"] += 1  # another delivery of this batch is on it
                continue
            try:
                row = conn.execute(_LISTING, {"id": listing_id, "account": account}).first()
                if row is None or row.status not in ("claimed", "registering"):
                    conn.commit()
                    counts["skipped"] += 1
                    continue
                # Stock per option comes from the product now, not from the claim.
                stocks = option_stocks(row.listing_options, row.product_options or [])
                for o, now in zip(row.listing_options, stocks, strict=True):
                    o["stock"] = now.stock
                # Claimed and committed before the call: after a crash the row says a create
                # may have happened, and the next attempt looks the key up first. Only a claim
                # never marked as sending can skip the look-up: no create for it ever went out
                # (the advisory lock keeps every other delivery away meanwhile).
                first_attempt = row.status == "claimed" and int(row.attempts) == 0
                conn.execute(
                    text(
                        "UPDATE listings SET status = 'registering', attempts = attempts + 1, "
                        "updated_at = now() WHERE id = :id"
                    ),
                    {"id": listing_id},
                )
                conn.commit()
                try:
                    # Only images this market accepts, hosted where it wants them.
                    images = listing_images(account, connector.market, row.product_id, connector)
                    result = connector.create_listing(
                        replace(_request(row), images=images), first_attempt=first_attempt
                    )
                except TransientError as exc:
                    transient = transient or exc
                    conn.execute(
                        text("UPDATE listings SET error = :e WHERE id = :id"),
                        {"id": listing_id, "e": f"{type(exc).__name__}: {exc}"[:ERROR_MAX]},
                    )
                    conn.commit()
                    if isinstance(exc, RateLimitedError):
                        if first_attempt:
                            # Refused before anything was sent (our limiter, or the market's
                            # 429): the claim still never sent a create, so its retry can skip
                            # the look-up too instead of spending a call on it.
                            conn.execute(
                                text(
                                    "UPDATE listings SET status = 'claimed', attempts = "
                                    "attempts - 1 WHERE id = :id AND status = 'registering'"
                                ),
                                {"id": listing_id},
                            )
                            conn.commit()
                        # The account's limiter says wait: the rest of the batch would only
                        # spend calls (look-ups) it cannot follow up. The retry resumes here.
                        break
                    continue
                except (PermanentError, ValueError) as exc:
                    _finish(conn, listing_id, "refused", error=str(exc)[:ERROR_MAX])
                    counts["refused"] += 1
                    log.warning("listing %s refused: %s", row.external_sku, str(exc)[:300])
                    continue
                _finish(conn, listing_id, "active", market_product_id=result.market_product_id)
                counts["active"] += 1
            finally:
                _unlock(conn, listing_id)
    if transient is not None:
        if isinstance(transient, RateLimitedError) and (counts["active"] or counts["refused"]):
            transient.progressed = True  # the retry's rate-limit budget starts again
        raise transient
    return counts


def listing_counts(account: str | None = None) -> list[dict[str, Any]]:
    """Listings per (account, status)."""
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT a.name AS account, l.status, count(*) AS listings FROM listings l "
                "JOIN accounts a ON a.id = l.account_id "
                "WHERE CAST(:a AS text) IS NULL OR a.name = :a "
                "GROUP BY a.name, l.status ORDER BY a.name, l.status"
            ),
            {"a": account},
        ).all()
    return [dict(r._mapping) for r in rows]


def refusal_reasons(account: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
    """The most frequent market messages of refused listings (per account)."""
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT a.name AS account, left(coalesce(l.error, '(no message)'), 160) AS reason, "
                "count(*) AS listings FROM listings l JOIN accounts a ON a.id = l.account_id "
                "WHERE l.status = 'refused' AND (CAST(:a AS text) IS NULL OR a.name = :a) "
                "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT :n"
            ),
            {"a": account, "n": limit},
        ).all()
    return [dict(r._mapping) for r in rows]
