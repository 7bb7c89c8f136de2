"""The `reelm` command, run as operators run it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest
from typer.testing import CliRunner

from reelm.accounts.models import PublicProfile
from reelm.accounts.service import SignedUp
from reelm.bootstrap import Platform
from reelm.cli import app

from .conftest import free_port


def _env_for(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    s = platform.settings
    monkeypatch.setenv("REELM_ADMIN_DATABASE_URL", s.admin_database_url or "")
    monkeypatch.setenv("REELM_DATABASE_PREFIX", s.database_prefix)
    monkeypatch.setenv("REELM_DATA_DIR", str(s.data_dir))


def test_regions_json(fresh_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    _env_for(fresh_platform, monkeypatch)
    result = CliRunner().invoke(app, ["regions", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    regions = {r["region"]: r for r in data["regions"]}
    assert set(regions) == {"us", "ca", "au", "nz", "sg"}
    assert regions["us"]["markets"] == ["US"]
    assert regions["sg"]["markets"] == ["*"]
    assert regions["ca"]["database"].endswith(f"/{fresh_platform.settings.database_prefix}_ca")
    assert "***" in regions["ca"]["database"]  # the role's password is never printed
    assert regions["au"]["blobs"].startswith("file://")
    assert "69A" in data["blocked_markets"]["IN"]


def test_residency_scan_exit_codes(
    fresh_platform: Platform,
    new_user: Callable[..., SignedUp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _env_for(fresh_platform, monkeypatch)
    user = new_user("NZ", platform_=fresh_platform, email="kiri@example.com")
    clean = CliRunner().invoke(app, ["residency-scan", "--json"])
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["clean"] is True

    with fresh_platform.catalog.transaction() as s:
        profile = s.get(PublicProfile, user.user_id)
        assert profile is not None
        profile.display_name = "kiri@example.com"
    leak = CliRunner().invoke(app, ["residency-scan"])
    assert leak.exit_code == 1
    assert "LEAK" in leak.stdout
    assert "profiles.display_name" in leak.stdout
    assert "kiri@example.com" not in leak.stdout


def test_rotate_index(
    fresh_platform: Platform,
    new_user: Callable[..., SignedUp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _env_for(fresh_platform, monkeypatch)
    new_user("AU", platform_=fresh_platform)
    result = CliRunner().invoke(app, ["accounts", "rotate-index", "--region", "au"])
    assert result.exit_code == 0, result.output
    assert "au: epoch 2, 1 account(s) re-indexed, epochs [1] destroyed" in result.stdout
    empty = CliRunner().invoke(app, ["accounts", "rotate-index", "--region", "ca"])
    assert "ca: nothing to rotate" in empty.stdout
    wrong = CliRunner().invoke(app, ["accounts", "rotate-index", "--region", "zz"])
    assert wrong.exit_code == 2


def test_bad_config_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "reelm.toml"
    bad.write_text("session_days = 0\n")
    result = CliRunner().invoke(app, ["regions", "--config", str(bad)])
    assert result.exit_code == 2
    assert "session_days" in result.output
    assert "reelm.toml" in result.output


def _wait_for_url(proc: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        match = re.search(r"http://[\w.]+:\d+/", line)
        if match:
            return match.group(0)
        if proc.poll() is not None:
            break
    raise AssertionError(f"demo printed no URL:\n{seen}")


def _run_demo(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELM_")}
    env["COLUMNS"] = "200"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reelm.cli",
            "demo",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    return proc, _wait_for_url(proc, 120)


def test_demo_runs_on_embedded_postgres_and_reuses_its_data() -> None:
    """The README's first command, end to end: embedded PostgreSQL, seed, serve, Ctrl-C."""
    # The embedded server runs as its own OS user when we are root: keep its data out of
    # pytest's 0700 tmp dir.
    data_dir = Path("/tmp") / f"reelm-demo-test-{os.getpid()}"  # noqa: S108
    try:
        for run in range(2):
            port = free_port()
            proc, url = _run_demo(data_dir, port)
            try:
                assert url == f"http://localhost:{port}/"
                # Both loopback names answer out of the box; a forged Host does not.
                loopback = httpx.get(f"http://127.0.0.1:{port}/about", timeout=10)
                assert loopback.status_code == 200
                forged = httpx.get(url + "about", headers={"Host": "evil.example"}, timeout=10)
                assert forged.status_code == 400
                health = httpx.get(url + "healthz", timeout=10).json()
                assert set(health["databases"]) == {"catalog", "us", "ca", "au", "nz", "sg"}
                page = httpx.get(url + "@maya.skates", timeout=10)
                assert page.status_code == 200
                assert "Ice dancing" in page.text
                blocked = httpx.get(url, headers={"CF-IPCountry": "IN"}, timeout=10)
                assert blocked.status_code == 451
                audit = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "reelm.transparency.auditor",
                        url,
                        "--state",
                        str(data_dir / "audit.json"),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert audit.returncode == 0, audit.stderr  # second run: consistent with first
                assert "us: size" in audit.stdout
            finally:
                # Ctrl-C the first time, a service manager's SIGTERM the second.
                proc.send_signal(signal.SIGINT if run == 0 else signal.SIGTERM)
                out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out
            assert "stopped" in out
            if run == 1:
                assert "seeded" not in out  # the second run reuses the first run's data
        assert (data_dir / "postgres" / "PG_VERSION").exists()
        # Both ways of stopping stopped the embedded PostgreSQL as well.
        assert not (data_dir / "postgres" / "postmaster.pid").exists()
    finally:
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)
