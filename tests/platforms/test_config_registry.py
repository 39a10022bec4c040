"""Platform settings from the environment and the connector registry."""

from __future__ import annotations

import pytest
import redis as redis_lib
from pydantic_settings import BaseSettings, SettingsConfigDict

from dropship.errors import ConfigurationError
from dropship.platforms.config import PlatformSettings
from dropship.platforms.ratelimit import RateLimit
from dropship.platforms.registry import CONNECTOR_CLASSES, connector_class, connector_for


class _EnvSettings(BaseSettings):
    """The shape the application settings mount: ``Settings.platforms``."""

    model_config = SettingsConfigDict(env_prefix="DROPSHIP_", env_nested_delimiter="__")
    platforms: PlatformSettings = PlatformSettings()


def test_accounts_and_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__PLATFORM": "coupang",
        "DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__BASE_URL": "https://api-gateway.coupang.com/",
        "DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__CREDENTIALS__SECRET_KEY": "s3cr3t-value",
        "DROPSHIP_PLATFORMS__ACCOUNTS__COUPANG_MAIN__RATE_LIMIT__CALLS": "30",
        "DROPSHIP_PLATFORMS__RATE_LIMITS__NAVER__CALLS": "120",
        "DROPSHIP_PLATFORMS__HTTP__READ_TIMEOUT_S": "12.5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    platforms = _EnvSettings().platforms
    account = platforms.account("coupang_main")
    assert account.name == "coupang_main" and account.platform == "coupang"
    assert account.base_url == "https://api-gateway.coupang.com"
    assert account.secret("secret_key") == "s3cr3t-value"
    assert "s3cr3t" not in repr(platforms) and "s3cr3t" not in str(account)
    limits = platforms.rate_limit_map()
    assert limits["coupang:coupang_main"] == RateLimit(30, 60.0)
    assert limits["naver"] == RateLimit(120, 60.0)
    assert platforms.http.read_timeout_s == 12.5


def test_clear_errors_for_bad_configuration() -> None:
    with pytest.raises(ValueError, match="base_url"):
        PlatformSettings.model_validate(
            {"accounts": {"x": {"platform": "naver", "base_url": "ftp://nope"}}}
        )
    with pytest.raises(ValueError, match="platform"):
        PlatformSettings.model_validate(
            {"accounts": {"x": {"platform": "myshop", "base_url": "https://a"}}}
        )
    settings = PlatformSettings.model_validate(
        {"accounts": {"naver_main": {"platform": "naver", "base_url": "https://a"}}}
    )
    with pytest.raises(
        ConfigurationError, match="unknown platform account 'nope'; known: naver_main"
    ):
        settings.account("nope")
    with pytest.raises(ConfigurationError, match="CREDENTIALS__CLIENT_SECRET"):
        settings.account("naver_main").secret("client_secret")


def test_every_platform_has_a_connector_class() -> None:
    for platform in CONNECTOR_CLASSES:
        cls = connector_class(platform)
        assert cls.__name__.endswith("Connector")
    with pytest.raises(ConfigurationError, match="myshop"):
        connector_class("myshop")


def test_connector_for_wires_http_limiter_and_cache(
    connector_settings: PlatformSettings, redis_url: str
) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    try:
        supplier = connector_for("ownerclan_main", connector_settings, redis_client=client)
        market = connector_for("naver_second", connector_settings, redis_client=client)
    finally:
        client.close()
    assert type(supplier).__name__ == "OwnerClanConnector"
    assert type(market).__name__ == "NaverConnector"
    with pytest.raises(ConfigurationError, match="unknown platform account"):
        connector_for("nope", connector_settings, redis_client=client)
