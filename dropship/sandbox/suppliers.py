"""The suppliers' side of the sandbox: their catalogs at the world time, and purchase orders.

The products themselves come from :mod:`dropship.sandbox.world` (:func:`generate_item`, lazily,
one at a time: random access for OwnerClan/Domeggook pages, bounded memory for the 100,000-product
gentrade feed). :class:`SupplierWorld` reads them at the state's world time with the state's
configuration, faults and per-test catalog sizes.

Mutable supplier data lives in ``state.platform_store("suppliers", ...)`` (dropped by
``POST /_sandbox/reset``): purchase orders placed by our connectors and per-test overrides set
through ``POST /_sandbox/suppliers`` (catalog size per supplier, tracking delay).
"""

from __future__ import annotations

import math
import random
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import tornado.web

from dropship.sandbox.core import RouteSpec, SandboxState, _AdminHandler
from dropship.sandbox.world import (
    WORLD_EPOCH,
    CatalogItem,
    check_ks_x_1001,
    generate_item,
    iter_catalog,
)

SUPPLIERS = ("ownerclan", "domeggook", "gentrade")

CARRIERS = ("CJ대한통운", "한진택배", "롯데택배", "우체국택배", "로젠택배")
check_ks_x_1001(CARRIERS)  # the gentrade order lookup answers them in EUC-KR


# --------------------------------------------------------------------------- purchase orders


@dataclass
class SupplierOrderLine:
    product_index: int
    quantity: int
    option: str | None
    unit_price: int


@dataclass
class SupplierOrder:
    supplier: str
    key: str
    note: str  # our order key
    created_at: datetime  # world time
    lines: list[SupplierOrderLine]
    carrier: str
    tracking_number: str
    recipient: dict[str, Any] = field(repr=False)  # personal data: never logged
    cancelled: bool = False

    def shipped(self, now: datetime, tracking_delay_s: float) -> bool:
        return not self.cancelled and (now - self.created_at).total_seconds() >= tracking_delay_s


@dataclass
class SupplierStore:
    """Mutable supplier data of one sandbox state (guarded by ``state.lock``)."""

    orders: dict[str, dict[str, SupplierOrder]] = field(
        default_factory=lambda: {s: {} for s in SUPPLIERS}
    )
    serial: int = 0
    catalog_sizes: dict[str, int] = field(default_factory=dict)
    tracking_delay_s: float | None = None
    # Per supplier: (inputs, updatedAt in epoch ms of every product), see SupplierWorld.
    updated_index: dict[str, tuple[tuple[Any, ...], array[int]]] = field(default_factory=dict)


class SupplierWorld:
    """What the supplier platform modules read and change; a thin view over the state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.store = state.platform_store("suppliers", SupplierStore)

    @property
    def lock(self) -> threading.RLock:
        return self.state.lock

    def now(self) -> datetime:
        return self.state.now()

    def size(self, supplier: str) -> int:
        with self.lock:
            return self.store.catalog_sizes.get(supplier, self.state.config.catalog_size)

    @property
    def tracking_delay_s(self) -> float:
        with self.lock:
            if self.store.tracking_delay_s is not None:
                return self.store.tracking_delay_s
            return self.state.config.tracking_delay_s

    def item(self, supplier: str, index: int) -> CatalogItem | None:
        if not 0 <= index < self.size(supplier):
            return None
        config = self.state.config
        return generate_item(
            config.seed,
            supplier,
            index,
            now=self.now(),
            price_drift=config.price_drift,
            soldout_rate=config.soldout_rate,
            malformed_rate=self.state.faults[supplier].malformed_rate,
            image_base=self.state.image_base,
        )

    def items(self, supplier: str, start: int = 0) -> Iterator[CatalogItem]:
        """Every product from ``start`` on, generated one at a time at one world instant."""
        config = self.state.config
        return iter_catalog(
            config.seed,
            supplier,
            self.size(supplier),
            now=self.now(),
            price_drift=config.price_drift,
            soldout_rate=config.soldout_rate,
            malformed_rate=self.state.faults[supplier].malformed_rate,
            start=start,
            image_base=self.state.image_base,
        )

    def items_updated_within(
        self, supplier: str, start: int, low_ms: int | None, high_ms: int | None
    ) -> Iterator[CatalogItem]:
        """Products from ``start`` on whose ``updatedAt`` (epoch ms) lies in ``[low, high]``
        (either bound open when ``None``), at one world instant.

        A real supplier answers a modification-time filter from an index; generating every
        product to test its timestamp made each time-window query cost the whole catalog (a
        100,000-product OwnerClan full run is ~50 windows: minutes of sandbox CPU that looked
        like collect time). The timestamps of the whole catalog are computed once per world
        hour (a product's ``updatedAt`` moves only at a price-change hour) and kept per state;
        only the matching products are generated."""
        now = self.now()
        config = self.state.config
        stamps = self._updated_stamps(supplier, now)
        for index in range(max(0, start), len(stamps)):
            stamp = stamps[index]
            if (low_ms is None or stamp >= low_ms) and (high_ms is None or stamp <= high_ms):
                yield generate_item(
                    config.seed,
                    supplier,
                    index,
                    now=now,
                    price_drift=config.price_drift,
                    soldout_rate=config.soldout_rate,
                    malformed_rate=self.state.faults[supplier].malformed_rate,
                    image_base=self.state.image_base,
                )

    def _updated_stamps(self, supplier: str, now: datetime) -> array[int]:
        config = self.state.config
        hour = math.floor((now - WORLD_EPOCH).total_seconds() / 3600)
        # Everything generate_item's updatedAt depends on (the sold-out rate changes how many
        # random draws come before it).
        inputs = (config.seed, self.size(supplier), config.soldout_rate, config.price_drift, hour)
        with self.lock:
            cached = self.store.updated_index.get(supplier)
            if cached is not None and cached[0] == inputs:
                return cached[1]
            stamps = array(
                "q",
                (
                    int(item.updated_at.timestamp() * 1000)
                    for item in iter_catalog(
                        config.seed,
                        supplier,
                        inputs[1],
                        now=now,
                        price_drift=config.price_drift,
                        soldout_rate=config.soldout_rate,
                    )
                ),
            )
            self.store.updated_index[supplier] = (inputs, stamps)
            return stamps

    # ---- orders: recorded as asked, duplicates included, like a real supplier

    def create_order(
        self,
        supplier: str,
        note: str,
        lines: list[SupplierOrderLine],
        recipient: dict[str, Any],
        key_format: str,
    ) -> SupplierOrder:
        with self.lock:
            self.store.serial += 1
            serial = self.store.serial
            rng = random.Random(f"{self.state.config.seed}:{supplier}:order:{serial}")
            order = SupplierOrder(
                supplier=supplier,
                key=key_format.format(serial=serial),
                note=note,
                created_at=self.now(),
                lines=lines,
                carrier=rng.choice(CARRIERS),
                tracking_number=str(rng.randrange(10**11, 10**12)),
                recipient=recipient,
            )
            self.store.orders[supplier][order.key] = order
        return order

    def record_purchase(self, note: str) -> None:
        """Count one purchase request (however the supplier splits it) under our order key:
        a connector that buys twice shows up as 2 in ``/_sandbox/counts`` ``purchase_orders``."""
        self.state.count("purchase_orders", note)

    def order(self, supplier: str, key: str) -> SupplierOrder | None:
        with self.lock:
            return self.store.orders[supplier].get(key)

    def orders(self, supplier: str, note: str | None = None) -> list[SupplierOrder]:
        with self.lock:
            return [
                o for o in self.store.orders[supplier].values() if note is None or o.note == note
            ]

    def cancel(self, supplier: str, key: str) -> SupplierOrder | None:
        """Cancel unless already shipped; returns the order (None when unknown)."""
        with self.lock:
            order = self.store.orders[supplier].get(key)
            if order is not None and not order.shipped(self.now(), self.tracking_delay_s):
                order.cancelled = True
            return order


# --------------------------------------------------------------------------- admin route


class SupplierAdminHandler(_AdminHandler):
    """``POST /_sandbox/suppliers`` with e.g.
    ``{"catalog_sizes": {"domeggook": 400}, "tracking_delay_s": 60}``; GET shows the settings.
    Not counted, not rate limited (like the other ``/_sandbox`` endpoints); undone by reset."""

    def get(self) -> None:
        world = SupplierWorld(self.state)
        self.write_json(
            {
                "catalog_sizes": {s: world.size(s) for s in SUPPLIERS},
                "tracking_delay_s": world.tracking_delay_s,
            }
        )

    def post(self) -> None:
        body = self._body_dict()
        world = SupplierWorld(self.state)
        try:
            sizes = body.get("catalog_sizes", {})
            if not isinstance(sizes, dict):
                raise ValueError("catalog_sizes must be an object {supplier: size}")
            for supplier, size in sizes.items():
                if supplier not in SUPPLIERS:
                    raise ValueError(f"unknown supplier {supplier!r}; known: {SUPPLIERS}")
                if not isinstance(size, int) or size < 0:
                    raise ValueError(f"catalog size of {supplier} must be an int >= 0")
            delay = body.get("tracking_delay_s")
            if delay is not None and (not isinstance(delay, int | float) or delay < 0):
                raise ValueError("tracking_delay_s must be a number >= 0")
        except ValueError as exc:
            raise tornado.web.HTTPError(400, reason=str(exc)) from None
        with self.state.lock:
            world.store.catalog_sizes.update(sizes)
            if delay is not None:
                world.store.tracking_delay_s = float(delay)
        self.get()


def routes(state: SandboxState) -> list[RouteSpec]:
    return [(r"/_sandbox/suppliers", SupplierAdminHandler, {"state": state})]
