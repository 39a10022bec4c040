"""Embedded servers: who runs them, and what that user can reach (no chmod of parents, ever)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from dropship.embedded.system import RunAs, can_reach, private_tmp_dir, service_user

root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="privilege drop only happens when running as root"
)


def test_non_root_runs_servers_as_itself() -> None:
    me = service_user()
    if os.geteuid() != 0:
        assert not me.is_other
    else:
        assert me.is_other and me.uid != 0


@root_only
def test_private_folder_blocks_the_service_user_and_parents_stay_untouched() -> None:
    run_as = service_user()
    # Not tmp_path: pytest's own base folder is 0700, which would hide everything below it.
    base = Path(tempfile.mkdtemp(prefix="dropship-reach-"))
    base.chmod(0o755)
    private = base / "home"
    private.mkdir(mode=0o700)
    inside = private / "project" / ".dropship"
    inside.mkdir(parents=True)
    open_dir = base / "open"
    open_dir.mkdir(mode=0o755)
    parents_before = {p: p.stat().st_mode for p in inside.parents}
    try:
        assert not can_reach(inside, run_as)
        assert can_reach(open_dir, run_as)
        assert {p: p.stat().st_mode for p in inside.parents} == parents_before
    finally:
        shutil.rmtree(base)


@root_only
def test_private_tmp_dir_is_owned_by_the_service_user_only(tmp_path: Path) -> None:
    run_as = service_user()
    folder = private_tmp_dir("probe", tmp_path, run_as)
    st = folder.stat()
    assert st.st_uid == run_as.uid
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert can_reach(folder, run_as)
    # Stable per owner folder: the same data folder maps to the same place on every start.
    assert private_tmp_dir("probe", tmp_path, run_as) == folder


def test_can_reach_is_trivially_true_for_ourselves(tmp_path: Path) -> None:
    assert can_reach(tmp_path, RunAs("self"))
