"""Running embedded servers as an unprivileged user, without touching anyone's permissions.

PostgreSQL refuses to run as root. When we are root, the servers run as a dedicated system user
(created once with ``useradd --system``; falls back to ``nobody``). That user must be able to
reach the server binaries and the data folder. We never chmod the user's parent directories:
when a path is not traversable (a 0700 home), the binaries are copied and the data kept in a
private folder under the system temp folder, and start-up says so.
"""

from __future__ import annotations

import ctypes
import grp
import hashlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "dropship"
FALLBACK_USER = "nobody"


@dataclass(frozen=True)
class RunAs:
    """Who the server processes run as. ``uid is None`` means: as ourselves."""

    name: str
    uid: int | None = None
    gid: int | None = None

    @property
    def is_other(self) -> bool:
        return self.uid is not None and self.uid != os.geteuid()


def service_user() -> RunAs:
    if os.geteuid() != 0:
        return RunAs(pwd.getpwuid(os.geteuid()).pw_name)
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        entry = _create_system_user(SERVICE_USER)
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_system_user(name: str) -> pwd.struct_passwd:
    useradd = shutil.which("useradd")
    if useradd:
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=False,
            capture_output=True,
        )
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return pwd.getpwnam(FALLBACK_USER)


def _may(mode: int, st: os.stat_result, uid: int, gids: set[int], owner_bit: int) -> bool:
    # owner_bit is the user-class bit (S_IXUSR or S_IRUSR); group/other bits are shifts of it.
    if st.st_uid == uid:
        return bool(mode & owner_bit)
    if st.st_gid in gids:
        return bool(mode & (owner_bit >> 3))
    return bool(mode & (owner_bit >> 6))


def can_reach(path: Path, run_as: RunAs) -> bool:
    """Can ``run_as`` traverse every ancestor of ``path`` (and read it)?"""
    if not run_as.is_other:
        return True
    assert run_as.uid is not None and run_as.gid is not None
    gids = {run_as.gid} | {g.gr_gid for g in grp.getgrall() if run_as.name in g.gr_mem}
    path = path.resolve()
    for ancestor in reversed(path.parents):
        st = ancestor.stat()
        if not _may(st.st_mode, st, run_as.uid, gids, stat.S_IXUSR):
            return False
    if path.exists():
        st = path.stat()
        return _may(st.st_mode, st, run_as.uid, gids, stat.S_IRUSR)
    return True


def private_tmp_dir(purpose: str, owner_dir: Path, run_as: RunAs) -> Path:
    """A folder under the system temp dir, stable per ``owner_dir`` (the data folder it stands
    in for, so two stacks never share one), owned by ``run_as`` only."""
    digest = hashlib.sha256(str(owner_dir.resolve()).encode()).hexdigest()[:10]
    base = Path(tempfile.gettempdir()) / f"dropship-{run_as.name}-{digest}"
    base.mkdir(mode=0o755, exist_ok=True)
    target = base / purpose
    target.mkdir(mode=0o700, exist_ok=True)
    chown(target, run_as)
    return target


def chown(path: Path, run_as: RunAs) -> None:
    if run_as.is_other:
        assert run_as.uid is not None and run_as.gid is not None
        os.chown(path, run_as.uid, run_as.gid)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_PR_SET_PDEATHSIG = 1


def child_setup(death_signal: int = signal.SIGTERM) -> Callable[[], None]:
    """preexec_fn: the child gets ``death_signal`` if we die, so a killed ``dropship up`` or a
    crashed test run never leaves servers behind."""

    def _setup() -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, death_signal)
        except OSError:
            pass

    return _setup


def popen_as(
    args: list[str],
    run_as: RunAs,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log_file: Path | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=run_as.uid if run_as.is_other else None,
            group=run_as.gid if run_as.is_other else None,
            extra_groups=[] if run_as.is_other else None,
            # Own process group: Ctrl-C in the terminal reaches only the supervisor, which then
            # stops the children in order.
            start_new_session=True,
            preexec_fn=child_setup(death_signal),
        )
    finally:
        if log_file:
            out.close()  # type: ignore[union-attr]
