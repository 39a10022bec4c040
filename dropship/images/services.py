"""The image flow: products' supplier URLs become stored, market-ready images, once.

* :func:`pending_product_ids`: active products with at least one image not yet settled (never
  seen, a transient failure, a refusal older than ``retry_failed_after_s``, a stale claim).
* :func:`process_products` (one batch of product ids): their URLs get an ``images`` row each
  (one per URL, however many products share it); the unsettled ones are *claimed*
  (``processing``, committed) so two workers never fetch the same URL, then downloaded with
  bounded concurrency (a sliding window: at most ``download_concurrency`` transfers in flight
  and as many finished buffers waiting) and processed one at a time in the calling thread, so
  at most one image is decoded at once per task. Same source bytes behind another URL reuse the
  stored outputs. Outputs go to the content-addressed store (a put of an existing key does
  nothing). A re-run over settled images does no work at all.
* :func:`accepted_images` / :func:`missing_images_reason`: what a listing may carry, and why a
  product waits when nothing is usable.
* :func:`listing_images` (register time): Coupang gets our hosted URLs; Naver gets URLs on its
  own image host, uploaded in batches of at most 10 and cached per account in
  ``image_uploads`` (an upload whose answer was lost is repeated: Naver offers no idempotency
  key, and a second hosted copy is harmless).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import text
from sqlalchemy.orm import Session

from dropship import db
from dropship.errors import PermanentError, TransientError
from dropship.images.config import ImageSettings
from dropship.images.process import ImageRefused, Processed, download, process_bytes
from dropship.images.rules import MARKET_RULES
from dropship.images.store import ImageStore, content_key, open_store
from dropship.settings import get_settings

log = logging.getLogger("dropship.images")

IMAGES_CODE = "images"  # listing_blocks.code of a product waiting for usable images
REASON_URLS = 3  # failed URLs named in a waiting product's reason

_UNSETTLED = """(
    i.status = 'pending'
    OR (i.status = 'failed' AND (i.transient
        OR i.checked_at < now() - make_interval(secs => :retry)))
    OR (i.status = 'processing' AND i.claimed_at < now() - make_interval(secs => :stale))
)"""


def _limits() -> ImageSettings:
    return get_settings().images


def _timing(limits: ImageSettings) -> dict[str, int]:
    return {"retry": limits.retry_failed_after_s, "stale": limits.stale_claim_s}


def pending_product_ids(limit: int = 100_000) -> list[int]:
    limits = _limits()
    with db.session_scope() as session:
        return [
            int(pid)
            for pid in session.execute(
                text(
                    f"""
                    SELECT p.id FROM products p
                    WHERE p.status = 'active' AND EXISTS (
                        SELECT 1 FROM jsonb_array_elements_text(p.images) AS u(url)
                        LEFT JOIN images i ON i.source_url = u.url
                        WHERE i.id IS NULL OR {_UNSETTLED})
                    ORDER BY p.id LIMIT :limit
                    """
                ),
                {"limit": limit, **_timing(limits)},
            ).scalars()
        ]


def _claim(session: Session, product_ids: Sequence[int], limits: ImageSettings) -> list[str]:
    session.execute(
        text(
            "INSERT INTO images (source_url) SELECT DISTINCT u.url FROM products p, "
            "jsonb_array_elements_text(p.images) AS u(url) WHERE p.id = ANY(:ids) "
            "ORDER BY 1 ON CONFLICT (source_url) DO NOTHING"
        ),
        {"ids": list(product_ids)},
    )
    return [
        str(url)
        for url in session.execute(
            text(
                f"""
                UPDATE images SET status = 'processing', claimed_at = now(),
                       attempts = attempts + 1
                WHERE id IN (
                    SELECT i.id FROM images i
                    WHERE i.source_url IN (
                        SELECT u.url FROM products p,
                               jsonb_array_elements_text(p.images) AS u(url)
                        WHERE p.id = ANY(:ids))
                      AND {_UNSETTLED}
                    ORDER BY i.id FOR UPDATE SKIP LOCKED)
                RETURNING source_url
                """
            ),
            {"ids": list(product_ids), **_timing(limits)},
        ).scalars()
    ]


def _fail(url: str, refused: ImageRefused) -> None:
    with db.session_scope() as session:
        session.execute(
            text(
                "UPDATE images SET status = 'failed', reason = :r, transient = :t, "
                "checked_at = now(), claimed_at = NULL WHERE source_url = :u"
            ),
            {"u": url, "r": refused.reason, "t": refused.transient},
        )


def _succeed(url: str, fields: dict[str, Any]) -> None:
    with db.session_scope() as session:
        session.execute(
            text(
                "UPDATE images SET status = 'ok', reason = NULL, transient = false, "
                "notes = :notes, source_sha256 = :sha, source_format = :fmt, "
                "source_width = :w, source_height = :h, market_key = :mk, market_px = :mpx, "
                "web_key = :wk, checked_at = now(), claimed_at = NULL WHERE source_url = :u"
            ),
            {"u": url, **fields},
        )


def _reuse(sha: str) -> dict[str, Any] | None:
    with db.session_scope() as session:
        row = session.execute(
            text(
                "SELECT notes, source_format AS fmt, source_width AS w, source_height AS h, "
                "market_key AS mk, market_px AS mpx, web_key AS wk FROM images "
                "WHERE source_sha256 = :sha AND status = 'ok' LIMIT 1"
            ),
            {"sha": sha},
        ).first()
    return None if row is None else {**row._mapping, "sha": sha}


def _store(store: ImageStore, processed: Processed) -> dict[str, Any]:
    market_key = content_key(processed.market_jpeg, "jpg")
    web_key = content_key(processed.web_webp, "webp")
    store.put(market_key, processed.market_jpeg)
    store.put(web_key, processed.web_webp)
    return {
        "notes": "; ".join(processed.notes) or None,
        "sha": processed.source_sha256,
        "fmt": processed.source_format,
        "w": processed.source_width,
        "h": processed.source_height,
        "mk": market_key,
        "mpx": processed.market_px,
        "wk": web_key,
    }


def _settle(url: str, data: bytes, store: ImageStore, limits: ImageSettings) -> str:
    """Process one downloaded image and record the outcome; returns ok/reused/failed."""
    import hashlib

    reused = _reuse(hashlib.sha256(data).hexdigest())
    if reused is not None:
        _succeed(url, reused)
        return "reused"
    try:
        processed = process_bytes(data, limits)
    except ImageRefused as refused:
        _fail(url, refused)
        return "failed"
    except MemoryError:
        _fail(url, ImageRefused("out of memory while decoding", transient=True))
        return "failed"
    except Exception as exc:  # a decoder bug must not take the batch (or the worker) down
        log.exception("image %s: unexpected error", url[:200])
        _fail(url, ImageRefused(f"unexpected {type(exc).__name__}: {exc}"))
        return "failed"
    del data
    try:
        fields = _store(store, processed)
    except Exception as exc:  # the store is down: try again next run
        _fail(url, ImageRefused(f"store: {type(exc).__name__}: {exc}", transient=True))
        return "failed"
    _succeed(url, fields)
    return "ok"


def process_products(
    product_ids: Iterable[int],
    store: ImageStore | None = None,
    session: requests.Session | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> dict[str, int]:
    """Fetch, check, normalise and store the unsettled images of these products. Returns
    ``{"claimed", "ok", "reused", "failed"}``; never raises for a bad image."""
    limits = _limits()
    ids = sorted({int(i) for i in product_ids})
    counts = {"claimed": 0, "ok": 0, "reused": 0, "failed": 0}
    if not ids:
        return counts
    with db.session_scope() as db_session:
        urls = _claim(db_session, ids, limits)
    counts["claimed"] = len(urls)
    if not urls:
        return counts
    store = store or open_store(limits)
    http = session or requests.Session()
    todo = iter(urls)
    inflight: dict[Future[bytes], str] = {}
    try:
        with ThreadPoolExecutor(limits.download_concurrency, "image-download") as pool:

            def refill() -> None:
                while len(inflight) < limits.download_concurrency:
                    url = next(todo, None)
                    if url is None:
                        return
                    inflight[pool.submit(download, http, url, limits)] = url

            refill()
            while inflight:
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for future in done:
                    url = inflight.pop(future)
                    try:
                        outcome = _settle(url, future.result(), store, limits)
                    except ImageRefused as refused:
                        _fail(url, refused)
                        outcome = "failed"
                    except Exception as exc:  # e.g. a URL requests cannot even parse
                        _fail(url, ImageRefused(f"download failed: {type(exc).__name__}"))
                        outcome = "failed"
                    counts[outcome] += 1
                    if progress is not None:
                        progress(url, outcome)
                refill()
    finally:
        if session is None:
            http.close()
    return counts


# --------------------------------------------------------------------------- per listing


@dataclass(frozen=True)
class ProductImage:
    url: str
    status: str | None  # None: no row yet (never looked at)
    reason: str | None
    market_key: str | None


def product_images(session: Session, product_ids: Sequence[int]) -> dict[int, list[ProductImage]]:
    """Each product's images in its own order, with what became of them."""
    rows = session.execute(
        text(
            """
            SELECT p.id, u.url, u.n, i.status, i.reason, i.market_key
            FROM products p
            CROSS JOIN LATERAL jsonb_array_elements_text(p.images) WITH ORDINALITY AS u(url, n)
            LEFT JOIN images i ON i.source_url = u.url
            WHERE p.id = ANY(:ids) ORDER BY p.id, u.n
            """
        ),
        {"ids": list(product_ids)},
    ).all()
    out: dict[int, list[ProductImage]] = {int(pid): [] for pid in product_ids}
    for row in rows:
        out[int(row.id)].append(ProductImage(row.url, row.status, row.reason, row.market_key))
    return out


def accepted_keys(images: Sequence[ProductImage], market: str) -> list[str]:
    """Stored market images of one product, in order, each once, at most the market's count."""
    keys = list(dict.fromkeys(i.market_key for i in images if i.status == "ok" and i.market_key))
    return keys[: MARKET_RULES[market].max_images]


def missing_images_reason(images: Sequence[ProductImage]) -> str:
    if not images:
        return "no images: the supplier gave none"
    unsettled = [i for i in images if i.status in (None, "pending", "processing")]
    if unsettled:
        return f"images not processed yet ({len(unsettled)} of {len(images)})"
    failed = [i for i in images if i.status == "failed"]
    named = "; ".join(f"{i.url.rsplit('/', 1)[-1][:60]}: {i.reason}" for i in failed[:REASON_URLS])
    more = f" (+{len(failed) - REASON_URLS} more)" if len(failed) > REASON_URLS else ""
    return f"no usable image of {len(images)}: {named}{more}"[:1000]


def listing_images(
    account: str,
    market: str,
    product_id: int,
    connector: Any,
    store: ImageStore | None = None,
) -> tuple[str, ...]:
    """The image URLs a listing of ``product_id`` on ``account`` carries: only images the
    market accepts, hosted where it wants them. PermanentError naming the reason when none."""
    with db.session_scope() as session:
        images = product_images(session, [product_id])[product_id]
    keys = accepted_keys(images, market)
    if not keys:
        raise PermanentError(f"images: {missing_images_reason(images)}")
    store = store or open_store()
    if market != "naver":
        return tuple(store.url(k) for k in keys)
    return tuple(naver_urls(account, keys, connector, store))


def naver_urls(account: str, keys: Sequence[str], connector: Any, store: ImageStore) -> list[str]:
    """Naver-hosted URLs for stored images, uploading only those this account has not got."""
    batch = MARKET_RULES["naver"].upload_batch or 10
    with db.session_scope() as session:
        cached: dict[str, str] = dict(
            session.execute(
                text(
                    "SELECT market_key, market_url FROM image_uploads "
                    "WHERE account = :a AND market_key = ANY(:k)"
                ),
                {"a": account, "k": list(keys)},
            ).all()
        )
    missing = [k for k in keys if k not in cached]
    for start in range(0, len(missing), batch):
        chunk = missing[start : start + batch]
        try:
            files = [(k.rsplit("/", 1)[-1], store.get(k)) for k in chunk]
        except Exception as exc:  # the store is unreachable: worth a retry, not a refusal
            raise TransientError(f"image store: {type(exc).__name__}: {exc}") from None
        urls = connector.upload_images(files)
        if len(urls) != len(chunk):
            raise PermanentError(f"naver image upload: {len(chunk)} sent, {len(urls)} returned")
        # Recorded per batch right after the call: a later failure never re-uploads these.
        with db.session_scope() as session:
            session.execute(
                text(
                    "INSERT INTO image_uploads (account, market_key, market_url) "
                    "VALUES (:a, :k, :u) ON CONFLICT DO NOTHING"
                ),
                [{"a": account, "k": k, "u": u} for k, u in zip(chunk, urls, strict=True)],
            )
        cached.update(zip(chunk, urls, strict=True))
    return [str(cached[k]) for k in keys]


def gate_decisions(session: Session, decisions: Sequence[Any], account: str) -> list[Any]:
    """Listable decisions whose product has no usable image become blocked (code
    ``images``, with the reason, recorded in listing_blocks); the others pass unchanged."""
    from dataclasses import replace

    from dropship.listings.rules import record_blocks

    listable = [d.product_id for d in decisions if d.listable]
    if not listable:
        return list(decisions)
    images = product_images(session, listable)
    out, blocked = [], []
    for decision in decisions:
        if decision.listable and not [i for i in images[decision.product_id] if i.status == "ok"]:
            decision = replace(
                decision,
                listable=False,
                code=IMAGES_CODE,
                reason=missing_images_reason(images[decision.product_id]),
            )
            blocked.append(decision)
        out.append(decision)
    if blocked:
        record_blocks(session, account, blocked)
    return out


# --------------------------------------------------------------------------- reporting


def image_counts() -> dict[str, int]:
    with db.session_scope() as session:
        rows = session.execute(text("SELECT status, count(*) FROM images GROUP BY status")).all()
        waiting = session.execute(
            text("SELECT count(DISTINCT product_id) FROM listing_blocks WHERE code = :c"),
            {"c": IMAGES_CODE},
        ).scalar_one()
    counts = {s: 0 for s in ("pending", "processing", "ok", "failed")}
    counts.update({str(s): int(n) for s, n in rows})
    counts["products_waiting"] = int(waiting)
    return counts


def failed_images(limit: int = 20) -> list[dict[str, Any]]:
    """Refused images, newest first, with how many products use each."""
    with db.session_scope() as session:
        rows = session.execute(
            text(
                """
                SELECT i.source_url, i.reason, i.transient, i.attempts, i.checked_at,
                       (SELECT count(*) FROM products p
                        WHERE p.images @> jsonb_build_array(i.source_url)) AS products
                FROM images i WHERE i.status = 'failed'
                ORDER BY i.checked_at DESC NULLS LAST, i.id LIMIT :limit
                """
            ),
            {"limit": limit},
        ).all()
    return [dict(r._mapping) for r in rows]


def waiting_products(limit: int = 20) -> list[dict[str, Any]]:
    """Products that wait for a usable image, per market account, with the reason."""
    with db.session_scope() as session:
        rows = session.execute(
            text(
                "SELECT b.product_id, b.account, b.reason, b.evaluated_at FROM listing_blocks b "
                "WHERE b.code = :c ORDER BY b.evaluated_at DESC, b.product_id LIMIT :limit"
            ),
            {"c": IMAGES_CODE, "limit": limit},
        ).all()
    return [dict(r._mapping) for r in rows]


def batch_progress(product_ids: Sequence[int], since: Any) -> dict[str, int]:
    """How far the images of these products are, for a progress bar: ``done`` counts images
    settled (stored, or refused and not due again) plus any looked at since ``since``."""
    limits = _limits()
    with db.session_scope() as session:
        row = session.execute(
            text(
                f"""
                WITH urls AS (
                    SELECT DISTINCT u.url FROM products p,
                           jsonb_array_elements_text(p.images) AS u(url)
                    WHERE p.id = ANY(:ids))
                SELECT count(*) AS total,
                       count(*) FILTER (WHERE i.status = 'ok' OR (i.status = 'failed'
                           AND (i.checked_at >= :since OR NOT {_UNSETTLED}))) AS done,
                       count(*) FILTER (WHERE i.status = 'ok') AS ok,
                       count(*) FILTER (WHERE i.status = 'failed') AS failed
                FROM urls LEFT JOIN images i ON i.source_url = urls.url
                """
            ),
            {"ids": list(product_ids), "since": since, **_timing(limits)},
        ).one()
    return {k: int(v) for k, v in row._mapping.items()}
