"""The contract tests share the connector tests' fixtures: a real sandbox server on loopback,
reset per test, and connectors wired to it."""

from tests.platforms.conftest import (  # noqa: F401  (fixtures)
    connector_settings,
    frozen_world_clock,
    make_connector,
    sandbox,
    sandbox_server,
)
