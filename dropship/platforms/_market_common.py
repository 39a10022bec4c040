"""Rules both marketplace connectors (Coupang, Naver) follow, kept in one place: input checks,
batching, failure reports and picking the listing that owns an external SKU. Carrier codes live
in :mod:`dropship.platforms.carriers`; request and response shapes stay in each connector."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import requests

from dropship.errors import PermanentError, TransientError
from dropship.platforms.interfaces import MarketListingResult

log = logging.getLogger(__name__)

KST = timezone(timedelta(hours=9), "KST")
# Ids listed in one failure message at most (the rest are counted).
MAX_IDS_IN_MESSAGE = 20

T = TypeVar("T")


@dataclass(frozen=True)
class ListingMatch:
    """One listing the market found for an external SKU."""

    market_product_id: str
    created_at: datetime | None  # None when the market did not say
    status: str | None


def oldest_listing(
    market: str, account: str, external_sku: str, matches: Sequence[ListingMatch]
) -> MarketListingResult | None:
    """The listing that owns ``external_sku``: the only match, or the oldest of several.

    Neither market refuses a second product with the same key, so duplicates can exist (made by
    an earlier bug, by hand, or by two registrations racing). Every later call must keep acting
    on the same one, hence the oldest (by creation time, then by id: both markets number
    listings in creation order); the others are reported, for an operator to delete."""
    if not matches:
        return None
    oldest = min(matches, key=_age)
    if len(matches) > 1:
        log.warning(
            "%s %s: %d listings carry external SKU %s; using the oldest (%s)",
            market,
            account,
            len(matches),
            external_sku,
            oldest.market_product_id,
        )
    return MarketListingResult(
        market_product_id=oldest.market_product_id,
        external_sku=external_sku,
        already_existed=True,
        status=oldest.status,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _age(match: ListingMatch) -> tuple[bool, datetime, int]:
    """Sort key, oldest first; a listing of unknown age sorts after the dated ones."""
    created = match.created_at
    number = int(match.market_product_id) if match.market_product_id.isdigit() else 0
    if created is None or created.tzinfo is None:
        return (True, _EPOCH, number)
    return (False, created, number)


def parse_time(value: Any, default_tz: timezone = KST) -> datetime | None:
    """An ISO-8601 time as a market renders it (no offset means ``default_tz``); None when
    absent or unreadable (only used to order things, never to decide on money or orders)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=default_tz)


def json_object(response: requests.Response, market: str, method: str, path: str) -> dict[str, Any]:
    """The response's JSON object; TransientError (a broken gateway answer) otherwise."""
    try:
        body = response.json()
    except ValueError:
        raise TransientError(
            f"{market} {method} {path}: response is not JSON (HTTP {response.status_code})"
        ) from None
    if not isinstance(body, dict):
        raise TransientError(f"{market} {method} {path}: response is not a JSON object")
    return body


def check_price(market: str, price: int, what: str) -> None:
    if price <= 0 or price % 10:
        raise PermanentError(
            f"{market} {what}: price must be a positive multiple of 10 KRW, got {price}"
        )


def check_stock(market: str, stock: int, what: str) -> None:
    if stock < 0:
        raise PermanentError(f"{market} {what}: stock must not be negative, got {stock}")


def check_window(market: str, since: datetime, until: datetime) -> None:
    if since.tzinfo is None or until.tzinfo is None:
        raise PermanentError(
            f"{market} iter_orders: changed_since and until must be timezone-aware"
        )
    if until <= since:
        raise PermanentError(
            f"{market} iter_orders: until ({until}) must be after changed_since ({since})"
        )


def numeric_id(market: str, value: str) -> str:
    if not str(value).isdigit():
        raise PermanentError(f"{market}: expected a numeric id, got {value!r}")
    return str(value)


def str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def chunks(values: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def raise_for_failures(
    market: str, what: str, unit: str, failures: Sequence[str], *, retry: bool = False
) -> None:
    """Report the ids a batch call refused: TransientError when the market asked for a retry,
    PermanentError otherwise. Ids only (never buyer data)."""
    if not failures:
        return
    shown = ", ".join(failures[:MAX_IDS_IN_MESSAGE])
    more = len(failures) - MAX_IDS_IN_MESSAGE
    message = f"{market} {what} failed for {unit} {shown}"
    if more > 0:
        message += f" (+{more} more)"
    raise (TransientError if retry else PermanentError)(message)
