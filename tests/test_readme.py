"""The README describes the commands that exist, the way they take their arguments."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from dropship.cli import cli
from tests.conftest import PROJECT_DIR

README = (PROJECT_DIR / "README.md").read_text()


def _command_rows() -> list[str]:
    section = README.split("## Other commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `dropship ([^`]+)`", section, flags=re.MULTILINE)


@pytest.mark.parametrize("row", _command_rows())
def test_every_documented_command_exists_with_its_arguments(row: str) -> None:
    words = row.split()
    command = [w for w in words if re.fullmatch(r"[a-z][a-z-]*", w)]
    if command == [] and words == ["--version"]:
        result = CliRunner().invoke(cli, ["--version"])
        assert result.exit_code == 0 and "dropship" in result.output
        return
    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    usage = " ".join(result.output.split())
    for arg in re.findall(r"\[([A-Z]+)\]", row):  # documented optional positional arguments
        assert f"[{arg}]" in usage, usage
    for option in re.findall(r"--[a-z-]+", row):
        assert option in usage, usage


def test_readme_explains_flower_api_access_and_installing_uv_under_pep_668() -> None:
    assert "FLOWER_UNAUTHENTICATED_API" in README
    assert "DROPSHIP_FLOWER_BASIC_AUTH" in README and "curl -u" in README
    assert "PEP 668" in README and "python3 -m venv" in README and "pipx install uv" in README


def test_ci_script_installs_uv_without_pip_install_user_first() -> None:
    lines = (PROJECT_DIR / ".ci" / "run").read_text().splitlines()
    commands = [line for line in lines if not line.lstrip().startswith("#")]
    venv_at = next(i for i, line in enumerate(commands) if "python3 -m venv" in line)
    user_at = [i for i, line in enumerate(commands) if "--user" in line]
    assert all(venv_at < i for i in user_at)
