"""Editing the catalog rules: pricing rules, category mappings, word lists, banned products.

Every value goes through one validator per field, shared by the single-row functions (CLI
``dropship rules ... add``, the shell) and the CSV import, so both refuse the same input with
the same message. A CSV import runs in one transaction: a bad row (named by line and column)
rolls back the whole file, nothing is half-imported. Adding a row whose key exists replaces it
(an upsert), so importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from dropship.catalog.models import BANNED_WORD_KINDS, BANNED_WORD_MATCHES, MARKETS
from dropship.errors import PermanentError
from dropship.listings.rules import normalise_word
from dropship.platforms.config import SUPPLIER_PLATFORMS

TEXT_MAX = 128


class RuleError(PermanentError):
    """A rule value that cannot be stored; the message names the field (and the CSV line)."""


class _FieldError(Exception):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


# --------------------------------------------------------------------------- field validators


def _required(values: Mapping[str, Any], column: str) -> str:
    value = values.get(column)
    value = "" if value is None else str(value).strip()
    if not value:
        raise _FieldError(column, "is empty")
    return value


def _optional(values: Mapping[str, Any], column: str) -> str | None:
    value = values.get(column)
    value = "" if value is None else str(value).strip()
    return value or None


def _short(column: str, value: str) -> str:
    if len(value) > TEXT_MAX:
        raise _FieldError(column, f"is longer than {TEXT_MAX} characters")
    return value


def _choice(column: str, value: str, allowed: tuple[str, ...]) -> str:
    value = value.lower()
    if value not in allowed:
        raise _FieldError(column, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _rate(values: Mapping[str, Any], column: str, maximum: Decimal, label: str) -> Decimal:
    raw = _required(values, column)
    try:
        rate = Decimal(raw[:-1]) / 100 if raw.endswith("%") else Decimal(raw)
    except InvalidOperation:
        raise _FieldError(column, f"{raw!r} is not a number (0.12 or 12%)") from None
    if not rate.is_finite() or not Decimal(0) <= rate <= maximum:
        raise _FieldError(column, f"{raw} is outside 0..{maximum} ({label})")
    exponent = rate.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        # The column keeps 4 decimals; rounding it silently would change the price.
        raise _FieldError(column, f"{raw} has more than 4 decimals")
    return rate


def _krw(values: Mapping[str, Any], column: str, default: int | None = None) -> int:
    raw = _optional(values, column)
    if raw is None:
        if default is None:
            raise _FieldError(column, "is empty")
        return default
    try:
        amount = int(raw.replace(",", ""))
    except ValueError:
        raise _FieldError(column, f"{raw!r} is not a whole number of KRW") from None
    if not 0 <= amount <= 2_000_000_000:
        raise _FieldError(column, f"{amount} is outside 0..2000000000")
    return amount


def _pricing(values: Mapping[str, Any]) -> dict[str, Any]:
    rounding = _krw(values, "rounding_krw", default=10)
    if rounding < 10 or rounding % 10:
        raise _FieldError("rounding_krw", f"{rounding} is not a positive multiple of 10 KRW")
    category = _optional(values, "category")
    return {
        "market": _choice("market", _required(values, "market"), MARKETS),
        "category": _short("category", category) if category else None,
        # A fee above 50 % is refused: (1 - fee) near 0 makes the price explode.
        "margin_rate": _rate(values, "margin_rate", Decimal(10), "a margin of at most 1000 %"),
        "fee_rate": _rate(values, "fee_rate", Decimal("0.5"), "a market fee of at most 50 %"),
        "min_margin_krw": _krw(values, "min_margin_krw", default=0),
        "rounding_krw": rounding,
    }


def _mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "supplier": _choice("supplier", _required(values, "supplier"), SUPPLIER_PLATFORMS),
        "supplier_category": _short("supplier_category", _required(values, "supplier_category")),
        "market": _choice("market", _required(values, "market"), MARKETS),
        "market_category": _short("market_category", _required(values, "market_category")),
    }


def _word(values: Mapping[str, Any]) -> dict[str, Any]:
    word = normalise_word(_required(values, "word"))
    if not word:
        raise _FieldError("word", "is empty")
    market = _optional(values, "market")
    return {
        "word": _short("word", word),
        "kind": _choice("kind", _optional(values, "kind") or "ban", BANNED_WORD_KINDS),
        "match": _choice("match", _optional(values, "match") or "substring", BANNED_WORD_MATCHES),
        "market": _choice("market", market, MARKETS) if market else None,
        "reason": _optional(values, "reason"),
    }


def _banned_product(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "supplier": _choice("supplier", _required(values, "supplier"), SUPPLIER_PLATFORMS),
        "supplier_sku": _short("supplier_sku", _required(values, "supplier_sku")),
        "reason": _optional(values, "reason"),
    }


# --------------------------------------------------------------------------- the four kinds


@dataclass(frozen=True)
class RuleKind:
    name: str
    columns: tuple[str, ...]  # CSV header, required columns first
    required: tuple[str, ...]
    validate: Callable[[Mapping[str, Any]], dict[str, Any]]
    key: tuple[str, ...]
    upsert: str
    delete: str
    select: str


PRICING = RuleKind(
    name="pricing",
    columns=("market", "category", "margin_rate", "fee_rate", "min_margin_krw", "rounding_krw"),
    required=("market", "margin_rate", "fee_rate"),
    validate=_pricing,
    key=("market", "category"),
    # The ON CONFLICT target differs: the default rule (NULL category) is unique through a
    # partial index, a category rule through the UNIQUE constraint (see _upsert_sql).
    upsert="""
        INSERT INTO pricing_rules
            (market, category, margin_rate, fee_rate, min_margin_krw, rounding_krw)
        VALUES (:market, :category, :margin_rate, :fee_rate, :min_margin_krw, :rounding_krw)
        ON CONFLICT {target} DO UPDATE SET margin_rate = EXCLUDED.margin_rate,
            fee_rate = EXCLUDED.fee_rate, min_margin_krw = EXCLUDED.min_margin_krw,
            rounding_krw = EXCLUDED.rounding_krw
    """,
    delete="DELETE FROM pricing_rules WHERE market = :market "
    "AND category IS NOT DISTINCT FROM CAST(:category AS text)",
    select="SELECT id, market, category, margin_rate, fee_rate, min_margin_krw, rounding_krw "
    "FROM pricing_rules ORDER BY market, category NULLS FIRST",
)

CATEGORY = RuleKind(
    name="category",
    columns=("supplier", "supplier_category", "market", "market_category"),
    required=("supplier", "supplier_category", "market", "market_category"),
    validate=_mapping,
    key=("supplier", "supplier_category", "market"),
    upsert="""
        INSERT INTO category_map (supplier, supplier_category, market, market_category)
        VALUES (:supplier, :supplier_category, :market, :market_category)
        ON CONFLICT (supplier, supplier_category, market)
        DO UPDATE SET market_category = EXCLUDED.market_category
    """,
    delete="DELETE FROM category_map WHERE supplier = :supplier "
    "AND supplier_category = :supplier_category AND market = :market",
    select="SELECT supplier, supplier_category, market, market_category FROM category_map "
    "ORDER BY supplier, supplier_category, market",
)

WORDS = RuleKind(
    name="words",
    columns=("word", "kind", "match", "market", "reason"),
    required=("word",),
    validate=_word,
    key=("kind", "market", "word"),
    upsert="""
        INSERT INTO banned_words (word, kind, match, market, reason)
        VALUES (:word, :kind, :match, :market, :reason)
        ON CONFLICT (kind, (coalesce(market, '')), word)
        DO UPDATE SET match = EXCLUDED.match, reason = EXCLUDED.reason
    """,
    delete="DELETE FROM banned_words WHERE word = :word AND kind = :kind "
    "AND market IS NOT DISTINCT FROM CAST(:market AS text)",
    select="SELECT word, kind, match, market, reason FROM banned_words "
    "ORDER BY kind DESC, market NULLS FIRST, word",
)

BANNED = RuleKind(
    name="banned",
    columns=("supplier", "supplier_sku", "reason"),
    required=("supplier", "supplier_sku"),
    validate=_banned_product,
    key=("supplier", "supplier_sku"),
    upsert="""
        INSERT INTO banned_products (supplier, supplier_sku, reason)
        VALUES (:supplier, :supplier_sku, :reason)
        ON CONFLICT (supplier, supplier_sku) DO UPDATE SET reason = EXCLUDED.reason
    """,
    delete="DELETE FROM banned_products WHERE supplier = :supplier "
    "AND supplier_sku = :supplier_sku",
    select="SELECT supplier, supplier_sku, reason, created_at FROM banned_products "
    "ORDER BY supplier, supplier_sku",
)

KINDS = {kind.name: kind for kind in (PRICING, CATEGORY, WORDS, BANNED)}


def _validate(kind: RuleKind, values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return kind.validate(values)
    except _FieldError as exc:
        raise RuleError(f"{kind.name} rule: {exc.column} {exc.message}") from None


def _upsert_sql(kind: RuleKind, row: Mapping[str, Any]) -> str:
    if kind is PRICING:
        target = (
            "(market) WHERE category IS NULL" if row["category"] is None else "(market, category)"
        )
        return kind.upsert.format(target=target)
    return kind.upsert


def add(session: Session, kind: RuleKind, /, **values: Any) -> dict[str, Any]:
    """Validate and upsert one row; returns the stored values. The caller commits."""
    row = _validate(kind, values)
    session.execute(text(_upsert_sql(kind, row)), row)
    return row


def remove(session: Session, kind: RuleKind, /, **values: Any) -> int:
    """Delete the row with this key; returns how many rows went (0 or 1)."""
    key: dict[str, str | None] = {}
    for column in kind.key:
        value = values.get(column)
        key[column] = (str(value).strip() or None) if value is not None else None
    for column in ("market", "kind", "supplier"):
        value = key.get(column)
        if value is not None:
            key[column] = value.lower()
    if kind is WORDS:
        key["word"] = normalise_word(key["word"] or "")
        key["kind"] = key["kind"] or "ban"
    result = session.execute(text(kind.delete), key)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def list_rows(session: Session, kind: RuleKind) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in session.execute(text(kind.select))]


def import_csv(session: Session, kind: RuleKind, source: Path | str) -> int:
    """Validate every row of a CSV file (header row with ``kind.columns``), then upsert them
    all; the caller's transaction makes it all or nothing. Returns the number of rows."""
    label = str(source)
    try:
        content = Path(source).read_text(encoding="utf-8-sig")  # Excel writes a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{label}: cannot read it as UTF-8 text: {exc}") from None
    reader = csv.DictReader(io.StringIO(content, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [c for c in kind.required if c not in header]
    if missing:
        raise RuleError(
            f"{label} line 1: missing column(s) {', '.join(missing)}; "
            f"expected {','.join(kind.columns)}"
        )
    unknown = [c for c in header if c not in kind.columns]
    if unknown:
        raise RuleError(
            f"{label} line 1: unknown column(s) {', '.join(unknown)}; "
            f"expected {','.join(kind.columns)}"
        )
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if None in record:  # more fields than the header has
                raise RuleError(f"{label} line {line}: more fields than the header's {len(header)}")
            if all(not (v or "").strip() for v in record.values()):
                continue  # blank line
            try:
                row = kind.validate(record)
            except _FieldError as exc:
                raise RuleError(
                    f"{label} line {line}, column {exc.column}: {exc.message}"
                ) from None
            key = tuple(row[c] for c in kind.key)
            if key in seen:
                raise RuleError(
                    f"{label} line {line}: same {'/'.join(kind.key)} as line {seen[key]}"
                )
            seen[key] = line
            rows.append(row)
    except csv.Error as exc:
        raise RuleError(f"{label} line {reader.line_num}: not valid CSV: {exc}") from None
    for row in rows:
        session.execute(text(_upsert_sql(kind, row)), row)
    return len(rows)
