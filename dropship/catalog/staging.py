"""COPY of one collect slice into ``staging_products`` and ``product_rejects``.

A slice's records are validated and normalised here, one at a time, and written with psycopg's
``cursor.copy()`` (text format; psycopg escapes every value, so tabs, newlines and backslashes in
supplier names are safe) in chunks of ``collect.copy_chunk_rows`` rows: memory holds one chunk,
whatever the catalog size. Nothing here commits: the caller replaces the slice's rows and marks
the slice done in one transaction.

Source fingerprints: a connector that can (:class:`FingerprintingConnector`, gentrade) asks
:func:`known_fingerprints` per batch which records' source bytes a stored product was built
from, and yields those as :class:`UnchangedRecord` without parsing them; they are staged as
key-only "source unchanged" rows (the merge counts them unchanged, the gone-marking sees them).
A parsed product's fingerprint is staged with it and stored by the merge.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from dropship.platforms.interfaces import InvalidRecord, SupplierProduct, UnchangedRecord

INT32_MAX = 2**31 - 1
SKU_MAX = 128
CATEGORY_MAX = 128
# Part of every stored source fingerprint: bump it with any change to what a parsed record
# becomes here (the checks of _problem, the JSON, the content hash), so the next collect parses
# every record again. Connectors version their own parse inside their fingerprint.
STAGING_VERSION = 1

STAGING_COLUMNS = (
    "run_id",
    "slice_key",
    "supplier",
    "supplier_sku",
    "name",
    "price",
    "shipping_fee",
    "stock",
    "status",
    "category",
    "images",
    "options",
    "content_hash",
    "open_market_sellable",
    "adult_only",
    "stock_assumed",
    "source_fingerprint",
)
UNCHANGED_COLUMNS = ("run_id", "slice_key", "supplier", "supplier_sku", "source_unchanged")
REJECT_COLUMNS = ("run_id", "slice_key", "supplier", "supplier_sku", "reason", "raw")

COPY_STAGING = f"COPY staging_products ({', '.join(STAGING_COLUMNS)}) FROM STDIN"
COPY_UNCHANGED = f"COPY staging_products ({', '.join(UNCHANGED_COLUMNS)}) FROM STDIN"
COPY_REJECTS = f"COPY product_rejects ({', '.join(REJECT_COLUMNS)}) FROM STDIN"


@dataclass
class SliceCounts:
    records: int = 0
    rejected: int = 0
    unparsed: int = 0  # of records: source unchanged, staged without parsing


def stored_fingerprint(fingerprint: str) -> str:
    """A connector's source fingerprint as stored on products (with the staging version)."""
    return f"{STAGING_VERSION}:{fingerprint}"


# The (sku, fingerprint) pairs of a batch whose stored product was built from those bytes. A
# product marked gone is not taken as unchanged: it is parsed, and the merge brings it back.
# One probe of the products key per pair: OFFSET 0 keeps the LATERAL subquery from being
# flattened into a join, which the planner may hash with a scan of all of products when the
# table has no statistics yet (right after a first run filled it).
_KNOWN = """
SELECT k.sku, k.fp FROM unnest(%s::text[], %s::text[]) AS k(sku, fp)
CROSS JOIN LATERAL (
    SELECT 1 FROM products p
    WHERE p.supplier = %s AND p.supplier_sku = k.sku
      AND p.source_fingerprint = k.fp AND p.status <> 'gone'
    OFFSET 0
) AS hit
"""


_ANY_STORED = """
SELECT EXISTS (
    SELECT 1 FROM products
    WHERE supplier = %s AND source_fingerprint IS NOT NULL AND status <> 'gone'
)
"""


def known_fingerprints(
    conn: psycopg.Connection[Any], supplier: str
) -> Callable[[Sequence[tuple[str, str]]], set[tuple[str, str]]]:
    """The look-up a fingerprinting connector calls once per batch (one indexed query on the
    products key; memory holds one batch, never the stored fingerprints of a catalog).

    The first call asks whether the supplier has any stored fingerprint at all; when it has
    none (a first collect) no batch is looked up: a first run of 100,000 records spent about
    a tenth of its slice time on look-ups that could not match. A fingerprint stored by
    another run meanwhile is only missed, so a record is parsed that need not be (never the
    other way round)."""
    prefix = len(stored_fingerprint(""))
    any_stored: list[bool] = []

    def known(pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not any_stored:
            row = conn.execute(_ANY_STORED, (supplier,), prepare=False).fetchone()
            any_stored.append(bool(row and row[0]))
        if not any_stored[0]:
            return set()
        skus = [sku for sku, _ in pairs]
        stored = [stored_fingerprint(fp) for _, fp in pairs]
        with conn.cursor() as cur:
            # Never prepared: psycopg prepares a statement run 5 times, and the generic plan
            # PostgreSQL then caches for it on that connection can date from when products was
            # empty (a scan per probe); it lasts until the table is analyzed. Planned each time
            # (~0.5 ms a batch), the plan fits the table as it is.
            cur.execute(_KNOWN, (skus, stored, supplier), prepare=False)
            return {(sku, fp[prefix:]) for sku, fp in cur.fetchall()}

    return known


# One encoder for the process: json.dumps with options builds a new JSONEncoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _json(value: Any) -> str:
    text = _ENCODER.encode(value)
    # jsonb refuses the NUL escape; a supplier payload may carry one.
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text


# The images and options of every staged product go through this: CPython's C encoder made
# once, with no check for circular references (a product document is lists of strings and flat
# dicts). ``JSONEncoder.encode`` builds a new C encoder on every call, which was half of the
# ~4 us of encoding a product. The text is byte for byte that of ``_json`` (content hashes and
# fingerprints do not change; tests/catalog/test_staging_checks.py compares them).
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_DOCUMENT_ENCODER = (
    _C_MAKE_ENCODER(None, str, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _C_MAKE_ENCODER is not None
    else None
)


def document_json(value: list[Any]) -> str:
    """``_json`` of a product document part (a list of strings or of flat dicts)."""
    if _DOCUMENT_ENCODER is None:
        return _json(value)
    text = "".join(_DOCUMENT_ENCODER(value, 0))
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text


def bounded_raw(raw: Any, max_bytes: int) -> str:
    """The raw payload as JSON, or, when longer than ``max_bytes``, a marker with its prefix:
    one oversized record cannot bloat the reject table or the transaction."""
    text = _json(raw)
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    prefix = text.encode("utf-8")[: max(0, max_bytes - 100)].decode("utf-8", "ignore")
    return _json({"truncated": True, "bytes": len(text.encode("utf-8")), "prefix": prefix})


def _problem(product: SupplierProduct) -> str | None:
    """Why ``product`` cannot be stored (the database's limits), or ``None``."""
    if not product.supplier_sku or len(product.supplier_sku) > SKU_MAX:
        return f"supplier_sku must be 1..{SKU_MAX} characters"
    if not product.name.strip():
        return "name is empty"
    if product.category is not None and len(product.category) > CATEGORY_MAX:
        return f"category is longer than {CATEGORY_MAX} characters"
    if not (
        0 <= product.cost_price <= INT32_MAX
        and 0 <= product.shipping_fee <= INT32_MAX
        and 0 <= product.stock <= INT32_MAX
    ):  # the common case passes with one test; the loop below names the field
        for label, amount in (
            ("cost_price", product.cost_price),
            ("shipping_fee", product.shipping_fee),
            ("stock", product.stock),
        ):
            if not 0 <= amount <= INT32_MAX:
                return f"{label} {amount} is outside 0..{INT32_MAX}"
    if (
        "\x00" in product.supplier_sku
        or "\x00" in product.name
        or (product.category is not None and "\x00" in product.category)
        or any("\x00" in image for image in product.images)
        or any(
            "\x00" in o.name or "\x00" in o.value or "\x00" in (o.supplier_option_code or "")
            for o in product.options
        )
    ):
        return "a text field contains a NUL character"
    return None


def product_document(product: SupplierProduct) -> tuple[list[str], list[dict[str, Any]]]:
    images = list(product.images)
    options = [
        {
            "name": o.name,
            "value": o.value,
            "price_delta": o.price_delta,
            "stock": o.stock,
            "supplier_option_code": o.supplier_option_code,
        }
        for o in product.options
    ]
    return images, options


def content_hash(product: SupplierProduct, images_json: str, options_json: str) -> str:
    """Hash of every stored field: a merge skips a product whose hash did not change."""
    parts = (
        product.supplier_sku,
        product.name,
        str(product.cost_price),
        str(product.shipping_fee),
        str(product.stock),
        product.status,
        product.category or "",
        images_json,
        options_json,
        "1" if product.open_market_sellable else "0",
        "1" if product.adult_only else "0",
        "1" if product.stock_assumed else "0",
    )
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).hexdigest()


def _reject_row(
    run_id: int, slice_key: str, supplier: str, sku: str | None, reason: str, raw: Any, limit: int
) -> tuple[Any, ...]:
    if sku is not None:
        sku = sku.replace("\x00", "")[:SKU_MAX] or None
    return (run_id, slice_key, supplier, sku, reason.replace("\x00", ""), bounded_raw(raw, limit))


def copy_slice(
    conn: psycopg.Connection[Any],
    run_id: int,
    slice_key: str,
    supplier: str,
    records: Iterable[SupplierProduct | InvalidRecord | UnchangedRecord],
    *,
    chunk_rows: int,
    raw_max_bytes: int,
) -> SliceCounts:
    """COPY ``records`` into staging (valid) and product_rejects (invalid), ``chunk_rows`` at a
    time. A product of another supplier than the run's is a reject, not a silent mix-up. An
    :class:`UnchangedRecord` is staged as a key-only ``source_unchanged`` row."""
    counts = SliceCounts()
    products: list[tuple[Any, ...]] = []
    unchanged: list[tuple[Any, ...]] = []
    rejects: list[tuple[Any, ...]] = []

    def flush() -> None:
        with conn.cursor() as cur:
            if products:
                with cur.copy(COPY_STAGING) as copy:
                    for row in products:
                        copy.write_row(row)
                products.clear()
            if unchanged:
                with cur.copy(COPY_UNCHANGED) as copy:
                    for row in unchanged:
                        copy.write_row(row)
                unchanged.clear()
            if rejects:
                with cur.copy(COPY_REJECTS) as copy:
                    for row in rejects:
                        copy.write_row(row)
                rejects.clear()

    for record in records:
        if isinstance(record, UnchangedRecord):
            if record.supplier != supplier:
                rejects.append(
                    _reject_row(
                        run_id,
                        slice_key,
                        supplier,
                        record.supplier_sku,
                        f"record of supplier {record.supplier!r} in a {supplier} run",
                        {"fingerprint": record.fingerprint},
                        raw_max_bytes,
                    )
                )
                counts.rejected += 1
            else:
                unchanged.append((run_id, slice_key, supplier, record.supplier_sku, True))
                counts.records += 1
                counts.unparsed += 1
        elif isinstance(record, InvalidRecord):
            rejects.append(
                _reject_row(
                    run_id,
                    slice_key,
                    supplier,
                    record.supplier_sku,
                    record.reason,
                    record.raw,
                    raw_max_bytes,
                )
            )
            counts.rejected += 1
        else:
            problem = _problem(record)
            if problem is None and record.supplier != supplier:
                problem = f"record of supplier {record.supplier!r} in a {supplier} run"
            if problem is not None:
                rejects.append(
                    _reject_row(
                        run_id,
                        slice_key,
                        supplier,
                        record.supplier_sku,
                        problem,
                        record.raw,
                        raw_max_bytes,
                    )
                )
                counts.rejected += 1
            else:
                images, options = product_document(record)
                images_json, options_json = document_json(images), document_json(options)
                products.append(
                    (
                        run_id,
                        slice_key,
                        supplier,
                        record.supplier_sku,
                        record.name,
                        record.cost_price,
                        record.shipping_fee,
                        record.stock,
                        record.status,
                        record.category,
                        images_json,
                        options_json,
                        content_hash(record, images_json, options_json),
                        record.open_market_sellable,
                        record.adult_only,
                        record.stock_assumed,
                        None
                        if record.source_fingerprint is None
                        else stored_fingerprint(record.source_fingerprint),
                    )
                )
                counts.records += 1
        if len(products) + len(unchanged) + len(rejects) >= chunk_rows:
            flush()
    flush()
    return counts
