"""COPY of one collect slice into ``staging_products`` and ``product_rejects``.

A slice's records are validated and normalised here, one at a time, and written with psycopg's
``cursor.copy()`` (text format; psycopg escapes every value, so tabs, newlines and backslashes in
supplier names are safe) in chunks of ``collect.copy_chunk_rows`` rows: memory holds one chunk,
whatever the catalog size. Nothing here commits: the caller replaces the slice's rows and marks
the slice done in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from dropship.platforms.interfaces import InvalidRecord, SupplierProduct

INT32_MAX = 2**31 - 1
SKU_MAX = 128
CATEGORY_MAX = 128

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
)
REJECT_COLUMNS = ("run_id", "slice_key", "supplier", "supplier_sku", "reason", "raw")

COPY_STAGING = f"COPY staging_products ({', '.join(STAGING_COLUMNS)}) FROM STDIN"
COPY_REJECTS = f"COPY product_rejects ({', '.join(REJECT_COLUMNS)}) FROM STDIN"


@dataclass
class SliceCounts:
    records: int = 0
    rejected: int = 0


# One encoder for the process: json.dumps with options builds a new JSONEncoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _json(value: Any) -> str:
    text = _ENCODER.encode(value)
    # jsonb refuses the NUL escape; a supplier payload may carry one.
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
    records: Iterable[SupplierProduct | InvalidRecord],
    *,
    chunk_rows: int,
    raw_max_bytes: int,
) -> SliceCounts:
    """COPY ``records`` into staging (valid) and product_rejects (invalid), ``chunk_rows`` at a
    time. A product of another supplier than the run's is a reject, not a silent mix-up."""
    counts = SliceCounts()
    products: list[tuple[Any, ...]] = []
    rejects: list[tuple[Any, ...]] = []

    def flush() -> None:
        with conn.cursor() as cur:
            if products:
                with cur.copy(COPY_STAGING) as copy:
                    for row in products:
                        copy.write_row(row)
                products.clear()
            if rejects:
                with cur.copy(COPY_REJECTS) as copy:
                    for row in rejects:
                        copy.write_row(row)
                rejects.clear()

    for record in records:
        if isinstance(record, InvalidRecord):
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
                images_json, options_json = _json(images), _json(options)
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
                    )
                )
                counts.records += 1
        if len(products) + len(rejects) >= chunk_rows:
            flush()
    flush()
    return counts
