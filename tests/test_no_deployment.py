"""Commands run where there is no deployment (the wrong folder, a typo in --data-dir) say so
and exit 2. None of them creates a data dir: only `demo`, `serve` and `db upgrade` may. A
`residency-scan` that quietly made a fresh embedded PostgreSQL there reported "clean: 0 users"
and exit 0, which reads like a clean deployment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reelm.cli import app

COMMANDS = [
    ["residency-scan"],
    ["residency-scan", "--json"],
    ["blobs", "check"],
    ["accounts", "purge-due"],
    ["worker", "--region", "sg"],
    ["regions"],
    ["migrate", "--market", "US", "--to", "us", "--dry-run"],
    ["staff", "grant", "someone"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_command_run_where_there_is_no_deployment_refuses_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("REELM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "no reelm deployment at" in result.output
    assert str(tmp_path / "reelm-data") in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_explicit_data_dir_that_does_not_exist_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    missing = tmp_path / "typo"
    result = CliRunner().invoke(app, ["residency-scan", "--data-dir", str(missing)])
    assert result.exit_code == 2, result.output
    assert not missing.exists()
