"""A faithful, deterministic sandbox of the five platform APIs (see docs/PLATFORMS.md).

Test and tooling code only: production code paths never import this package.
"""

from dropship.sandbox.core import (
    FaultConfig,
    SandboxConfig,
    SandboxHandler,
    SandboxRateLimit,
    SandboxServer,
    SandboxState,
    build_app,
)
from dropship.sandbox.credentials import SANDBOX_CREDENTIALS

__all__ = [
    "SANDBOX_CREDENTIALS",
    "FaultConfig",
    "SandboxConfig",
    "SandboxHandler",
    "SandboxRateLimit",
    "SandboxServer",
    "SandboxState",
    "build_app",
]
