"""Account health check: one cheap authenticated call through the account's connector.

Goes through the same limiter, retries and auth as real work, so it answers "can this worker
talk to this account right now?" from Flower or a shell (``tasks.diagnostics.check_account``).
"""

from __future__ import annotations

import time
from typing import Any

from dropship.platforms.config import MARKET_PLATFORMS
from dropship.platforms.registry import connector_for
from dropship.settings import get_settings

# A key no real order or listing has: the lookups below answer "not found" after authenticating.
PROBE_KEY = "dropship-health-probe"


def check_account(account_name: str) -> dict[str, Any]:
    account = get_settings().platforms.account(account_name)
    connector = connector_for(account_name)
    started = time.monotonic()
    if account.platform in MARKET_PLATFORMS:
        connector.find_listing_by_external_sku(PROBE_KEY)
    elif account.platform == "domeggook":
        # Domeggook's order API is not available to us (docs/PLATFORMS.md); item 0 never exists.
        connector.get_product("0")
    else:
        connector.get_shipments([PROBE_KEY])
    return {
        "account": account_name,
        "platform": account.platform,
        "ok": True,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
    }
