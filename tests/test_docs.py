"""The docs cannot rot silently: every setting and every command is documented."""

from __future__ import annotations

from pathlib import Path

import typer.main

from reelm.cli import app
from reelm.config import BlockedMarket, RegionSettings, Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for model in (Settings, RegionSettings, BlockedMarket):
        for name in model.model_fields:
            assert f"`{name}`" in text, f"setting {name} is missing from docs/configuration.md"


def _commands(group: typer.Typer, prefix: str = "") -> list[str]:
    click_group = typer.main.get_command(group)
    names = []
    for name, command in click_group.commands.items():  # type: ignore[attr-defined]
        if hasattr(command, "commands"):
            names += [f"{prefix}{name} {sub}" for sub in command.commands]
        else:
            names.append(f"{prefix}{name}")
    return names


def test_every_command_is_documented() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    commands = _commands(app)
    assert "residency-scan" in commands
    for command in commands:
        assert f"reelm {command}" in text, f"`reelm {command}` is missing from docs/operations.md"


def test_readme_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "reelm demo" in readme
    assert "bash .ci/run" in readme
