"""The fixed credentials each sandbox platform accepts.

These are *sandbox-only* values: they open nothing outside the sandbox and are safe to keep in
source. Tests and the embedded stack point connector accounts at the sandbox with them
(``tests/platforms/conftest.py`` builds the settings). Every platform module verifies them the
way the real platform does, so a wrong secret is rejected with the platform's own error.

Shapes follow the real platforms' credentials:

* ``ownerclan``: seller ``username`` / ``password`` posted to the auth endpoint (returns a JWT).
* ``domeggook``: an ``api_key`` sent as the ``aid`` query parameter.
* ``gentrade``: a member ``id`` and an API ``key`` sent as query parameters.
* ``coupang``: ``vendor_id``, ``access_key`` and ``secret_key`` for the ``CEA`` HMAC-SHA256 header.
* ``naver``: ``client_id`` and ``client_secret``; Naver's client secret *is a bcrypt salt*
  (``$2a$...``), used as ``bcrypt(client_id + "_" + timestamp_ms, salt=client_secret)``.
  Cost 04 keeps sandbox token issuance fast; the algorithm is the same at any cost.

``SANDBOX_SECOND_ACCOUNTS`` holds one more account for the platforms where the system runs
several accounts (two seller accounts on a marketplace), so multi-account paths are testable.
"""

from __future__ import annotations

from typing import Final

SANDBOX_CREDENTIALS: Final[dict[str, dict[str, str]]] = {
    "ownerclan": {
        "username": "sandbox-seller",
        "password": "sandbox-ownerclan-pw",
    },
    "domeggook": {
        "api_key": "sandbox-domeggook-aid-0123456789abcdef",
    },
    "gentrade": {
        "id": "sandbox-gentrade",
        "key": "sandbox-gentrade-key-0123456789",
    },
    "coupang": {
        "vendor_id": "A00012345",
        "access_key": "sandbox-coupang-access-key",
        "secret_key": "sandbox-coupang-secret-key-0123456789abcdef",
    },
    "naver": {
        "client_id": "sandboxNaverClientId01",
        "client_secret": "$2a$04$cyBkHP8/nYRQosFCYcFAvu",
    },
}

SANDBOX_SECOND_ACCOUNTS: Final[dict[str, dict[str, str]]] = {
    "coupang": {
        "vendor_id": "A00067890",
        "access_key": "sandbox-coupang-access-key-2",
        "secret_key": "sandbox-coupang-secret-key-2-fedcba9876543210",
    },
    "naver": {
        "client_id": "sandboxNaverClientId02",
        "client_secret": "$2a$04$Q0dEOyVn1aFnMBh3ZkXa2e",
    },
}

PLATFORMS: Final[tuple[str, ...]] = ("ownerclan", "domeggook", "gentrade", "coupang", "naver")


def accounts_for(platform: str) -> list[dict[str, str]]:
    """Every sandbox account of ``platform`` (the main one first)."""
    if platform not in SANDBOX_CREDENTIALS:
        raise KeyError(f"unknown sandbox platform {platform!r}; known: {', '.join(PLATFORMS)}")
    accounts = [SANDBOX_CREDENTIALS[platform]]
    if platform in SANDBOX_SECOND_ACCOUNTS:
        accounts.append(SANDBOX_SECOND_ACCOUNTS[platform])
    return accounts


def sandbox_account_config(base_url: str) -> dict[str, dict[str, object]]:
    """Connector account settings (``DROPSHIP_PLATFORMS__ACCOUNTS`` shape) for every sandbox
    account at ``base_url``: ``<platform>_main`` for each platform, ``<platform>_second`` where a
    second account exists. Used by the test suite and by ``dropship up`` when no accounts are
    configured."""
    base_url = base_url.rstrip("/")
    accounts: dict[str, dict[str, object]] = {}

    def add(name: str, platform: str, credentials: dict[str, str]) -> None:
        options = {"auth_url": f"{base_url}/ownerclan/auth"} if platform == "ownerclan" else {}
        accounts[name] = {
            "platform": platform,
            "base_url": f"{base_url}/{platform}",
            "credentials": dict(credentials),
            "options": options,
        }

    for platform in PLATFORMS:
        add(f"{platform}_main", platform, SANDBOX_CREDENTIALS[platform])
    for platform, credentials in SANDBOX_SECOND_ACCOUNTS.items():
        add(f"{platform}_second", platform, credentials)
    return accounts
