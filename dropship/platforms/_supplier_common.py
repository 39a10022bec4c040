"""What the three supplier connectors (OwnerClan, Domeggook, gentrade) share.

Only logic that is the same for all of them lives here: how a connector is built (the registry
builds every one as ``cls(account=..., http=..., cache=...)``), the page-size check, the
product-detail cache and the error for a malformed product. Each platform's wire format,
paging and order flow stay in its own module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TypeVar, cast

from dropship.errors import PermanentError
from dropship.platforms.cache import ResponseCache
from dropship.platforms.config import AccountSettings
from dropship.platforms.http import PlatformHttp
from dropship.platforms.interfaces import CollectSlice, InvalidRecord, SupplierProduct

T = TypeVar("T")

# Korean suppliers write local time without an offset.
KST = timezone(timedelta(hours=9))
# Response-cache kind of one product's detail (TTL configured per kind).
PRODUCT_DETAIL = "product_detail"


class SupplierConnectorBase:
    """Construction and small helpers of a supplier connector."""

    supplier: str
    # The largest product page the platform serves; connectors with pages take ``page_size``.
    max_page_size: int | None = None

    def __init__(
        self, *, account: AccountSettings, http: PlatformHttp, cache: ResponseCache | None = None
    ) -> None:
        self.account = account
        self.http = http
        self.cache = cache

    def iter_products(
        self, since: datetime | None = None
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        raise NotImplementedError

    def plan_slices(self, since: datetime | None = None) -> list[CollectSlice]:
        """Default: the whole catalog is one slice read by ``iter_products``. Connectors whose
        platform has addressable pages, categories or time windows override this."""
        params = {"since": since.isoformat()} if since is not None else {}
        return [CollectSlice("all", params)]

    def iter_slice(self, piece: CollectSlice) -> Iterator[SupplierProduct | InvalidRecord]:
        since = piece.params.get("since")
        return self.iter_products(datetime.fromisoformat(since) if since else None)

    def recheck_missing(
        self, skus: Sequence[str], run_started_at: datetime
    ) -> Iterator[SupplierProduct | InvalidRecord]:
        """Products a complete full run did not see: the current record of each one that still
        exists (sold out, say); a SKU not yielded is gone.

        Default: nothing, because a full read of this platform lists every product it has,
        whatever its status, so absence is proof. Platforms whose listings leave products out
        (Domeggook omits sold-out items) or whose slices can miss a product changed during the
        run (OwnerClan's time windows) override this."""
        return iter(())

    def checked_page_size(self, page_size: int, maximum: int) -> int:
        """``page_size`` if the platform accepts it; a clear error naming the account if not."""
        if not 1 <= page_size <= maximum:
            raise PermanentError(
                f"{self.supplier} account {self.account.name!r}: page_size must be within"
                f" 1..{maximum}, got {page_size}"
            )
        return page_size

    def cached_detail(self, key: str, load: Callable[[], T]) -> T:
        """``load()``, through the response cache when the connector has one (a ``None``
        result, "no such product", is not cached)."""
        if self.cache is None:
            return load()
        return cast(T, self.cache.get_or_load(PRODUCT_DETAIL, key, load))

    def malformed_error(self, record: InvalidRecord) -> PermanentError:
        """For ``get_product``: the one product asked for cannot be normalised."""
        return PermanentError(
            f"{self.supplier} product {record.supplier_sku} is malformed: {record.reason}"
        )
