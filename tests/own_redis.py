"""``own_redis``: a Redis server started for one test, which that test may kill and restart.

Never the machine's Redis or the suite's: tests that kill a server must own it. A test module
makes it a fixture with ``yield from own_redis_server()``.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dropship.embedded.redis import EmbeddedRedis, find_redis_server
from dropship.embedded.system import service_user


def kill(server: EmbeddedRedis) -> None:
    """SIGKILL: the server dies at once, mid-command, without closing connections cleanly."""
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()


def own_redis_server(persist: bool = False) -> Iterator[EmbeddedRedis]:
    """``persist=True`` keeps an append-only file, as the stack's Redis does: a restart keeps
    queued and unacked messages."""
    run_as = service_user()
    tmp = Path(tempfile.mkdtemp(prefix="dropship-own-redis-"))
    tmp.chmod(0o755)  # the server's unprivileged user must reach it
    server = EmbeddedRedis(
        tmp / "data", run_as, find_redis_server(run_as, []), persist=persist, log_file=tmp / "log"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
