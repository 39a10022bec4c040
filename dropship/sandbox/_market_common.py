"""What the two marketplace sandboxes (Coupang, Naver) share: the request-body check, the
automatic order arrivals, the on-demand order batches of the admin endpoints and the fake buyers.
Wire shapes stay in each platform module."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar

import tornado.web

from dropship.sandbox.core import AdminHandler, SandboxHandler, SandboxState
from dropship.sandbox.credentials import accounts_for
from dropship.sandbox.world import order_arrivals

KST = timezone(timedelta(hours=9), "KST")
# Auto-arrivals materialised per request at most, so a huge clock jump stays bounded.
MAX_ARRIVALS_PER_REQUEST = 5_000
MAX_ADMIN_ORDERS = 1_000

_SURNAMES = ("김", "이", "박", "최", "정", "강", "조", "윤", "장", "임")
_GIVEN = ("민준", "서연", "도윤", "하은", "시우", "지유", "예준", "수아", "주원", "지호")

P = TypeVar("P")


def fake_name(rng: random.Random) -> str:
    return rng.choice(_SURNAMES) + rng.choice(_GIVEN)


class MarketHandler(SandboxHandler):
    """Base of both markets' API handlers: after the core's counting, rate limit and faults,
    :meth:`authenticate` checks the caller the way the market does."""

    async def prepare(self) -> None:
        await super().prepare()
        if not self._finished:
            self.authenticate()

    def authenticate(self) -> None:
        """Check the caller's credentials; answer and ``finish()`` when they are refused."""
        raise NotImplementedError

    def body_object(self) -> dict[str, Any]:
        body = self.json_body()
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, reason="request body must be a JSON object")
        return body


class ArrivalClock(Protocol):
    """The part of a market's store that remembers up to when arrivals were materialised."""

    created_at: datetime
    arrivals_until: datetime | None


def due_arrivals(
    state: SandboxState, platform: str, store: ArrivalClock, products: Sequence[P]
) -> list[tuple[datetime, random.Random, P]]:
    """The orders that arrived (world clock) since the last look, each with the product it is
    for and its own seeded generator; advances the store's arrival clock. Call with
    ``state.lock`` held. ``products`` are the ones that can be ordered, in a stable order."""
    config = state.config
    start = store.arrivals_until or store.created_at
    end = state.now()
    store.arrivals_until = end
    if not products or config.order_rate_per_min <= 0:
        return []
    arrivals = order_arrivals(config.seed, platform, config.order_rate_per_min, start, end)
    due = []
    for at in arrivals[:MAX_ARRIVALS_PER_REQUEST]:
        rng = random.Random(f"{config.seed}:{platform}:arrival:{at.isoformat()}")
        due.append((at, rng, products[rng.randrange(len(products))]))
    return due


def buyer_cancels(state: SandboxState, platform: str, at: datetime) -> datetime | None:
    """When the buyer of the order that arrived by itself at ``at`` asks to cancel it, or None
    (``SandboxConfig.buyer_cancel_share`` of them). Its own seeded generator, so the choice
    never shifts the order's own draws."""
    config = state.config
    if config.buyer_cancel_share <= 0:
        return None
    rng = random.Random(f"{config.seed}:{platform}:buyer-cancel:{at.isoformat()}")
    if rng.random() >= config.buyer_cancel_share:
        return None
    return at + timedelta(seconds=config.buyer_cancel_after_s)


def due_cancels(state: SandboxState, pending: list[tuple[datetime, str]]) -> list[str]:
    """Pops and returns the order ids in ``pending`` whose buyer's cancel time has come (world
    clock). Call with ``state.lock`` held."""
    now = state.now()
    due = [unit for when, unit in pending if when <= now]
    pending[:] = [(when, unit) for when, unit in pending if when > now]
    return due


@dataclass(frozen=True)
class OrderBatch:
    """What ``POST /_sandbox/<market>/orders`` asks for, platform-neutral part."""

    platform: str
    account: str
    count: int
    first: datetime
    spacing: timedelta
    quantity: int

    def slots(self, seed: int) -> Iterator[tuple[datetime, random.Random]]:
        """Each order's time and its own seeded generator (same request, same orders)."""
        for n in range(self.count):
            at = self.first + self.spacing * n
            key = f"{self.platform}:admin:{self.account}:{at.isoformat()}:{n}"
            yield at, random.Random(f"{seed}:{key}")


def parse_order_batch(
    body: dict[str, Any], platform: str, account_key: str, body_key: str, now: datetime
) -> OrderBatch:
    """Read ``count``, the account (``body[body_key]``, default: the platform's main sandbox
    account, matched on ``account_key`` of its credentials), ``ordered_at`` (default ``now``),
    ``spacing_s`` (default 60) and ``quantity`` (default 1); ValueError naming what is wrong."""
    count = int(body.get("count", 1))
    if not 0 < count <= MAX_ADMIN_ORDERS:
        raise ValueError(f"count must be within 1..{MAX_ADMIN_ORDERS}")
    known = [a[account_key] for a in accounts_for(platform)]
    account = str(body.get(body_key) or known[0])
    if account not in known:
        raise ValueError(f"unknown {body_key} {account}")
    first = datetime.fromisoformat(body["ordered_at"]) if "ordered_at" in body else now
    if first.tzinfo is None:
        raise ValueError("ordered_at needs a UTC offset")
    quantity = int(body.get("quantity", 1))
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    spacing = timedelta(seconds=float(body.get("spacing_s", 60)))
    return OrderBatch(platform, account, count, first, spacing, quantity)


class ForgetAdminHandler(AdminHandler):
    """``POST /_sandbox/<market>/forget {<id_field>: N}``: the market no longer has that listing
    at all (deleted in its seller centre, purged): ``forget`` drops it from the list, the key
    look-up and every read. Answers ``{"forgotten": true|false}``."""

    id_field = ""

    def forget(self, number: int) -> bool:
        raise NotImplementedError

    def post(self) -> None:
        body = self._body_dict()
        try:
            number = int(body[self.id_field])
        except (KeyError, TypeError, ValueError) as exc:
            raise tornado.web.HTTPError(400, reason=f"invalid forget request: {exc}") from None
        with self.state.lock:
            forgotten = self.forget(number)
        self.write_json({"forgotten": forgotten})
