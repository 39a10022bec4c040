"""``connector_for(account_name)``: the configured connector for one platform account.

Maps the account's platform to its connector class (imported lazily, so a worker only loads the
platforms it uses), and wires it with a :class:`PlatformHttp` pointed at the account's base URL,
the process-wide Redis rate limiter and, for suppliers, the response cache. Connectors are cached
per (account, process) when they come from the application settings: one pooled session and one
token cache per account per process.
"""

from __future__ import annotations

import importlib
import inspect
import os
import threading
from typing import Any

import redis

from dropship.errors import ConfigurationError
from dropship.platforms.cache import ResponseCache
from dropship.platforms.config import SUPPLIER_PLATFORMS, AccountSettings, PlatformSettings
from dropship.platforms.http import PlatformHttp
from dropship.platforms.interfaces import MarketConnector, SupplierConnector
from dropship.platforms.ratelimit import RateLimiter

# platform -> "module:ClassName". The class name is a hint: if the module names its connector
# differently, the one class in it whose name ends with "Connector" is used.
CONNECTOR_CLASSES: dict[str, str] = {
    "ownerclan": "dropship.platforms.ownerclan:OwnerClanConnector",
    "domeggook": "dropship.platforms.domeggook:DomeggookConnector",
    "gentrade": "dropship.platforms.gentrade:GentradeConnector",
    "coupang": "dropship.platforms.coupang:CoupangConnector",
    "naver": "dropship.platforms.naver:NaverConnector",
}

Connector = SupplierConnector | MarketConnector

_lock = threading.Lock()
_redis_clients: dict[tuple[str, int], redis.Redis] = {}
_connectors: dict[tuple[str, int], Any] = {}


def connector_class(platform: str) -> type:
    try:
        target = CONNECTOR_CLASSES[platform]
    except KeyError:
        raise ConfigurationError(
            f"no connector for platform {platform!r}; known: {', '.join(sorted(CONNECTOR_CLASSES))}"
        ) from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigurationError(f"connector module {module_name} is not installed") from None
        raise
    cls = getattr(module, class_name, None)
    if isinstance(cls, type):
        return cls
    candidates = [
        obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and name.endswith("Connector") and obj.__module__ == module_name
    ]
    if len(candidates) != 1:
        raise ConfigurationError(
            f"{module_name} must define {class_name} (found {[c.__name__ for c in candidates]})"
        )
    return candidates[0]


def redis_client_for(url: str) -> redis.Redis:
    """One Redis client (connection pool) per URL per process."""
    key = (url, os.getpid())
    with _lock:
        client = _redis_clients.get(key)
        if client is None:
            client = _redis_clients[key] = redis.Redis.from_url(url)
        return client


def _platform_settings(settings: Any) -> PlatformSettings:
    if isinstance(settings, PlatformSettings):
        return settings
    platforms = getattr(settings, "platforms", None)
    if not isinstance(platforms, PlatformSettings):
        raise ConfigurationError("settings have no 'platforms' section (DROPSHIP_PLATFORMS__...)")
    return platforms


def build_http(
    account: AccountSettings, platforms: PlatformSettings, limiter: RateLimiter | None
) -> PlatformHttp:
    http = platforms.http
    return PlatformHttp(
        account.platform,
        account.name,
        account.base_url,
        limiter,
        timeout=(http.connect_timeout_s, http.read_timeout_s),
        max_attempts=http.max_attempts,
        max_retry_time_s=http.max_retry_time_s,
        backoff_initial_s=http.backoff_initial_s,
        backoff_max_s=http.backoff_max_s,
        max_wait_s=http.max_wait_s,
    )


def build_connector(
    account: AccountSettings, platforms: PlatformSettings, redis_client: redis.Redis | None
) -> Any:
    """A new connector for ``account`` (no caching); ``redis_client=None`` means no limiter
    and no cache (only for one-off tools: workers always share the limiter)."""
    limiter = (
        RateLimiter(redis_client, platforms.rate_limit_map(), max_wait_s=platforms.http.max_wait_s)
        if redis_client is not None
        else None
    )
    if limiter is not None and redis_client is not None:
        # A daily call budget (Domeggook: 15,000/day), charged on every call the account sends.
        from dropship.platforms.budget import BudgetedRateLimiter, budget_for

        budget = budget_for(account, platforms, redis_client)
        if budget is not None:
            limiter = BudgetedRateLimiter(limiter, budget)
    cache = None
    if (
        redis_client is not None
        and platforms.cache.enabled
        and account.platform in SUPPLIER_PLATFORMS
    ):
        cache = ResponseCache(
            redis_client,
            account.name,
            ttl_s=platforms.cache.ttl_s,
            default_ttl_s=platforms.cache.default_ttl_s,
            lru_size=platforms.cache.lru_size,
            lru_ttl_s=platforms.cache.lru_ttl_s,
        )
    cls = connector_class(account.platform)
    extra: dict[str, int] = {}
    largest = getattr(cls, "max_page_size", None)
    if platforms.page_rows is not None and largest is not None:
        # Rows one page holds in a worker: the memory budget's cap, never above the platform's.
        extra["page_size"] = min(platforms.page_rows, largest)
    return cls(account=account, http=build_http(account, platforms, limiter), cache=cache, **extra)


def connector_for(
    account_name: str, settings: Any = None, *, redis_client: redis.Redis | None = None
) -> Any:
    """The connector of ``account_name`` from ``settings`` (default: the application settings;
    either ``Settings`` with a ``platforms`` section or a ``PlatformSettings``). Redis comes from
    ``redis_client`` or the settings' ``redis_url``."""
    use_process_cache = settings is None  # explicit settings (tests, tools): always fresh
    url: str | None = None
    if settings is None:
        from dropship.runtime import resolved_redis_url
        from dropship.settings import get_settings

        settings = get_settings()
        # The configured URL, or the one the running `dropship up` stack published.
        url = resolved_redis_url()
    platforms = _platform_settings(settings)
    account = platforms.account(account_name)
    if redis_client is None:
        if url is None:
            url_of = getattr(settings, "redis_url_value", None)
            url = url_of() if callable(url_of) else None
        if url:
            redis_client = redis_client_for(url)
    if redis_client is None:
        raise ConfigurationError(
            f"account {account_name!r}: no Redis for the shared rate limiter "
            "(set DROPSHIP_REDIS_URL, or start the stack with `dropship up`)"
        )
    if not use_process_cache:
        return build_connector(account, platforms, redis_client)
    key = (account_name, os.getpid())
    with _lock:
        connector = _connectors.get(key)
    if connector is None:
        connector = build_connector(account, platforms, redis_client)
        with _lock:
            connector = _connectors.setdefault(key, connector)
    return connector


def clear_connector_cache() -> None:
    with _lock:
        _connectors.clear()
