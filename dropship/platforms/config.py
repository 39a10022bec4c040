"""Platform settings: accounts (several per platform), base URLs, credentials, limits, HTTP, cache.

Mounted on the application settings as ``Settings.platforms`` (env ``DROPSHIP_PLATFORMS__...``).
Examples::

    # an account: name "coupang_main" (the key), platform, base URL, secrets
    DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__PLATFORM=coupang
    DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__BASE_URL=https://api-gateway.coupang.com
    DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__CREDENTIALS__ACCESS_KEY=...
    DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__CREDENTIALS__SECRET_KEY=...
    DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__CREDENTIALS__VENDOR_ID=A00012345
    # or all accounts at once as JSON
    DROPSHIP_PLATFORMS__ACCOUNTS='{"coupang_main": {"platform": "coupang", ...}}'
    # a platform's limit (unset fields keep the default), one account's own limit
    DROPSHIP_PLATFORMS__RATE_LIMITS__COUPANG__CALLS=50
    DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__RATE_LIMIT__CALLS=30
    DROPSHIP_PLATFORMS__HTTP__READ_TIMEOUT_S=20
    # a daily call budget (platform default, one account's own; 0 = none)
    DROPSHIP_PLATFORMS__DAILY_LIMITS='{"domeggook": 15000}'
    DROPSHIP_PLATFORMS__ACCOUNTS__DOMEGGOOK_MAIN__DAILY_LIMIT=12000
    DROPSHIP_PLATFORMS__CACHE__TTL_S__PRODUCT_DETAIL=900
    # a market account allowed to sell adult-only products (off by default)
    DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__ALLOW_ADULT=true

Credentials are ``SecretStr``: they print as ``**********`` and are read only through
:meth:`AccountSettings.secret`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from dropship.errors import ConfigurationError
from dropship.platforms.ratelimit import DEFAULT_RATE_LIMITS, RateLimit

PlatformName = Literal["ownerclan", "domeggook", "gentrade", "coupang", "naver"]
SUPPLIER_PLATFORMS: tuple[str, ...] = ("ownerclan", "domeggook", "gentrade")
MARKET_PLATFORMS: tuple[str, ...] = ("coupang", "naver")


class RateLimitSettings(BaseModel):
    """Unset fields take the platform's default (see ``DEFAULT_RATE_LIMITS``)."""

    calls: int | None = Field(None, gt=0)
    period_s: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)

    def resolve(self, platform: str) -> RateLimit:
        default = DEFAULT_RATE_LIMITS[platform]
        return RateLimit(
            calls=self.calls or default.calls,
            period_s=self.period_s or default.period_s,
            burst=self.burst or default.burst,
        )


class RateLimitTable(BaseModel):
    ownerclan: RateLimitSettings = RateLimitSettings()
    domeggook: RateLimitSettings = RateLimitSettings()
    gentrade: RateLimitSettings = RateLimitSettings()
    coupang: RateLimitSettings = RateLimitSettings()
    naver: RateLimitSettings = RateLimitSettings()

    def for_platform(self, platform: str) -> RateLimit:
        settings: RateLimitSettings = getattr(self, platform)
        return settings.resolve(platform)


class AccountSettings(BaseModel):
    name: str = ""  # filled from the key under ``accounts``
    platform: PlatformName
    base_url: str
    credentials: dict[str, SecretStr] = {}
    # Non-secret, platform-specific extras (e.g. ownerclan ``auth_url``).
    options: dict[str, str] = {}
    rate_limit: RateLimitSettings | None = None
    # Calls a day for this account (see dropship.platforms.budget): None = the platform's
    # default in ``PlatformSettings.daily_limits``, 0 = no daily budget.
    daily_limit: int | None = Field(None, ge=0)
    enabled: bool = True
    # Market accounts only: whether this seller account may sell adult-only products (the
    # market grants it per seller, after adult-sales verification). Off unless set, so an
    # adult-only product is never listed by accident (dropship.listings.rules).
    allow_adult: bool = False

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @property
    def limiter_key(self) -> str:
        return f"{self.platform}:{self.name}"

    def secret(self, key: str) -> str:
        """One credential's value; a clear error naming the account and the missing *key*
        (never a value)."""
        value = self.credentials.get(key)
        if value is None or not value.get_secret_value():
            raise ConfigurationError(
                f"account {self.name!r} ({self.platform}) has no credential {key!r}; set "
                f"DROPSHIP_PLATFORMS__ACCOUNTS__{self.name.upper()}__CREDENTIALS__{key.upper()}"
            )
        return value.get_secret_value()

    def option(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)


class HttpSettings(BaseModel):
    connect_timeout_s: float = Field(3.05, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(4, ge=1, le=10)
    max_retry_time_s: float = Field(20.0, gt=0)
    backoff_initial_s: float = Field(0.2, ge=0)
    backoff_max_s: float = Field(3.0, ge=0)
    # A task waits at most this long in-process for a rate-limit slot; longer -> re-scheduled.
    max_wait_s: float = Field(1.0, ge=0)


class CacheSettings(BaseModel):
    enabled: bool = True
    ttl_s: dict[str, int] = {
        "product_detail": 600,  # supplier product detail: prices/stock move, 10 min is fresh enough
        "product_list": 120,
        "category": 86_400,
    }
    default_ttl_s: int = Field(300, gt=0)
    lru_size: int = Field(256, ge=0, description="0 disables the in-process LRU")
    lru_ttl_s: float = Field(5.0, ge=0)


class PlatformSettings(BaseModel):
    accounts: dict[str, AccountSettings] = {}
    rate_limits: RateLimitTable = RateLimitTable()
    http: HttpSettings = HttpSettings()
    cache: CacheSettings = CacheSettings()
    # Daily call budgets per platform (dropship.platforms.budget), counted per account in KST
    # days. Domeggook: 15,000 calls/day per API key (openapi.domeggook.com guide).
    daily_limits: dict[str, int] = {"domeggook": 15_000}
    # Most records one supplier API page may hold (each platform's own maximum still applies;
    # None: the platform's maximum). DROPSHIP_MEMORY_BUDGET sets it (dropship/ops/memory.py).
    page_rows: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _name_accounts(self) -> PlatformSettings:
        for key, account in self.accounts.items():
            if account.name and account.name != key:
                raise ValueError(f"account {key!r} has a different name {account.name!r}")
            account.name = key
        return self

    def account(self, name: str) -> AccountSettings:
        try:
            account = self.accounts[name]
        except KeyError:
            known = ", ".join(sorted(self.accounts)) or "(none configured)"
            raise ConfigurationError(f"unknown platform account {name!r}; known: {known}") from None
        if not account.enabled:
            raise ConfigurationError(f"platform account {name!r} is disabled")
        return account

    def accounts_for(self, platform: str) -> list[AccountSettings]:
        return [a for a in self.accounts.values() if a.platform == platform and a.enabled]

    def daily_limit_for(self, account: AccountSettings) -> int | None:
        """The account's daily call budget, or ``None`` when it has none."""
        if account.daily_limit is not None:
            return account.daily_limit or None
        return self.daily_limits.get(account.platform) or None

    def rate_limit_map(self) -> dict[str, RateLimit]:
        """Limits for the limiter: per platform, plus ``"<platform>:<account>"`` overrides."""
        limits: dict[str, RateLimit] = {
            p: self.rate_limits.for_platform(p) for p in DEFAULT_RATE_LIMITS
        }
        for account in self.accounts.values():
            if account.rate_limit is not None:
                base = limits[account.platform]
                own = account.rate_limit
                limits[account.limiter_key] = RateLimit(
                    calls=own.calls or base.calls,
                    period_s=own.period_s or base.period_s,
                    burst=own.burst or base.burst,
                )
        return limits
