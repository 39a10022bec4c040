"""Order fulfilment tasks (queue ``high``): tracking back to the markets, cancellations and
claims, purchase-order sheets. Thin wrappers over :mod:`dropship.orders.tracking`,
:mod:`dropship.orders.claims` and :mod:`dropship.orders.sheets`; each is a sweep that beat runs
on a schedule and that is safe to run again at any time (every step is conditional on the row's
current state, and two sweeps of a kind never run at once).

From a shell::

    from tasks.fulfilment import tracking_sweep, claims_sweep, sheets_sweep
    tracking_sweep.delay(); claims_sweep.delay("naver_main"); sheets_sweep.delay()
"""

from __future__ import annotations

from typing import Any

from dropship.celery_app import DropshipTask, app
from dropship.errors import TransientError
from dropship.orders import claims, sheets, tracking


def _market_accounts() -> list[str]:
    from dropship.listings.services import market_accounts

    return market_accounts()


@app.task(bind=True, name="tasks.fulfilment.tracking_sweep")
def tracking_sweep(self: DropshipTask, limit: int = 2000) -> dict[str, Any]:
    """Shipments from the suppliers (by our keys) -> ``shipped``; uploads to the markets in
    their batch sizes -> ``dispatched``."""
    return tracking.sweep_tracking(self.request.id, limit=limit)


@app.task(bind=True, name="tasks.fulfilment.claims_sweep")
def claims_sweep(self: DropshipTask, account: str | None = None) -> list[dict[str, Any]]:
    """Claims per market account (every one by default); cancellations before shipment
    cancel the purchase and are confirmed at the market. A market that fails transiently is
    reported and tried again by the next sweep (its watermark did not move)."""
    results = []
    for name in [account] if account else _market_accounts():
        try:
            results.append(claims.sweep_claims(name, self.request.id))
        except TransientError as exc:
            results.append({"account": name, "error": str(exc)[:300]})
    return results


@app.task(bind=True, name="tasks.fulfilment.sheets_sweep")
def sheets_sweep(self: DropshipTask) -> dict[str, Any]:
    """Write waiting purchase orders of sheet suppliers into sheets; look the keys of written
    sheets up at the supplier and move the placed ones on."""
    return sheets.sweep_sheets(self.request.id)
