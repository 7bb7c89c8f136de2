"""Release transparency: each start of a serving process logs its code and configuration
digests, and `reelm audit verify` shows which releases served each region."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from reelm import config as config_module
from reelm.bootstrap import Platform, start
from reelm.cli import app
from reelm.config import Settings, load_settings
from reelm.regions.cell import Cell
from reelm.transparency import release
from reelm.transparency.models import LogQueue

from .cells import running_cells
from .conftest import _discard, free_port, make_settings, serving

SRC = Path(__file__).resolve().parent.parent / "src" / "reelm"


def _copy_package(tmp_path: Path) -> Path:
    tree = tmp_path / "reelm"
    shutil.copytree(release.package_dir(), tree, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_package_digest_is_the_sha256sum_manifest_of_every_file(tmp_path: Path) -> None:
    tree = _copy_package(tmp_path)
    digest = release.tree_digest(tree)
    assert digest == release.tree_digest(tree) == release.package_digest()
    # What an auditor without reelm runs (docs/transparency.md): coreutils agree.
    pipeline = (
        "find . -type f ! -name '*.pyc' ! -name '*.pyo' ! -path '*/__pycache__/*' -printf '%P\\n'"
        " | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
    )
    shell = subprocess.run(
        ["bash", "-c", pipeline], cwd=tree, capture_output=True, text=True, check=True
    )
    assert digest == "sha256:" + shell.stdout.split()[0]
    # Compiled files are not the release: they are made from it on the machine.
    (tree / "__pycache__").mkdir()
    (tree / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\x00compiled")
    (tree / "web" / "stray.pyc").write_bytes(b"\x00compiled")
    assert release.tree_digest(tree) == digest


@pytest.mark.parametrize(
    "change",
    [
        "a template edited",
        "a static file added",
        "a migration removed",
        "a module renamed",
    ],
)
def test_package_digest_changes_with_any_file(tmp_path: Path, change: str) -> None:
    tree = _copy_package(tmp_path)
    before = release.tree_digest(tree)
    if change == "a template edited":
        page = tree / "web" / "templates" / "base.html"
        page.write_text(page.read_text() + "<!-- -->")
    elif change == "a static file added":
        (tree / "web" / "static" / "extra.js").write_text("alert(1)")
    elif change == "a migration removed":
        next((tree / "storage" / "migrations" / "region" / "versions").glob("*.py")).unlink()
    else:
        (tree / "numbers.py").rename(tree / "numbers2.py")
    assert release.tree_digest(tree) != before


def test_package_digest_is_computed_once_per_process() -> None:
    release.package_digest()
    began = time.perf_counter()
    release.package_digest()
    assert time.perf_counter() - began < 0.001
    assert release.package_digest.cache_info().hits >= 1


def _models() -> list[type[BaseModel]]:
    return [
        value
        for value in vars(config_module).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == config_module.__name__
    ]


def test_every_setting_is_classified_public_url_or_secret() -> None:
    """Deny by default: a setting nobody classified is withheld, and this test names it so
    that whoever adds it decides."""
    assert Settings in _models()
    known = release.PUBLIC | release.URLS | release.SECRET
    for model in _models():
        for name in model.model_fields:
            assert name in known, f"{model.__name__}.{name}: add it to PUBLIC, URLS or SECRET"
    assert not release.PUBLIC & (release.URLS | release.SECRET)


def _settings_with_secrets(tmp_path: Path, password: str) -> Settings:
    csrf = tmp_path / "csrf.key"
    csrf.write_text("CSRF-KEY-CONTENTS")
    keys = tmp_path / "keys-us"
    keys.mkdir(exist_ok=True)
    (keys / "master.key").write_text("MASTER-KEY-CONTENTS")
    return Settings(
        data_dir=tmp_path,
        catalog_database_url=f"postgresql://reelm_catalog:{password}@catalog.internal:5433/cat",
        admin_database_url=f"postgresql://postgres@admin.internal/postgres?password={password}",
        regions={
            "us": {
                "database_url": f"postgresql+psycopg://reelm_us:{password}@us.internal/reelm_us"
                "?sslmode=verify-full&sslpassword=" + password,
                "key_dir": keys,
                "blob_url": "s3://reelm-us/media",
                "s3_profile": f"profile-{password}",
            }
        },
        secret_key_file=csrf,
    )


def test_config_digest_holds_no_secret(tmp_path: Path) -> None:
    password = "Tr0ub4dor-and-3"  # the secret the dump must not show
    settings = _settings_with_secrets(tmp_path, password)
    dump = release.config_dump(settings).decode()
    assert password not in dump
    assert "KEY-CONTENTS" not in dump  # key files are never read
    config = json.loads(dump)
    us = config["regions"]["us"]
    # What says where the process connects stays: user, host, database, TLS mode, paths.
    assert us["database_url"].startswith("postgresql+psycopg://reelm_us:")
    assert "@us.internal/reelm_us" in us["database_url"]
    assert "sslmode=verify-full" in us["database_url"]
    assert us["key_dir"] == str(tmp_path / "keys-us")
    assert us["s3_profile"] == release.WITHHELD
    assert "@catalog.internal:5433/cat" in config["catalog_database_url"]
    assert config["admin_database_url"].endswith("?password=%3Cwithheld%3E")
    assert config["secret_key_file"] == str(tmp_path / "csrf.key")
    # The digest depends on no secret (so it cannot be used to guess one), and on the rest.
    digest = release.config_digest(settings)
    assert release.config_digest(_settings_with_secrets(tmp_path, "another one")) == digest
    other = settings.model_copy(update={"session_days": 7})
    assert release.config_digest(other) != digest


def _release_entries(cell: Cell) -> list[dict[str, object]]:
    with cell.db.sessions() as session:
        rows = session.scalars(select(LogQueue).where(LogQueue.kind == release.KIND)).all()
    return [json.loads(row.entry) for row in rows]


def test_start_records_the_release_in_every_local_log(admin_url: str, tmp_path: Path) -> None:
    platform = start(make_settings(tmp_path, admin_url), "worker")
    try:
        expected = {
            "version": release.reelm_version(),
            "package_digest": release.package_digest(),
            "config_digest": release.config_digest(platform.settings),
            "regions": sorted(platform.cells),
            "process": "worker",
        }
        for cell in platform.cells.values():
            [event] = _release_entries(cell)
            assert event["details"] == expected
            assert event["subject"] is None and event["region"] == cell.region
        assert "password" not in json.dumps(expected)
        # Each start is logged, not only the first.
        start(platform.settings, "serve").close()
        assert len(_release_entries(platform.cell("nz"))) == 2
    finally:
        _discard(platform, admin_url)


def _serve(platform_settings: Settings, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELM_")}
    env.update(
        REELM_ADMIN_DATABASE_URL=platform_settings.admin_database_url or "",
        REELM_DATABASE_PREFIX=platform_settings.database_prefix,
        REELM_DATA_DIR=str(platform_settings.data_dir),
        COLUMNS="200",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "reelm.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait_until_up(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"reelm serve ended: {proc.communicate()[0]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("reelm serve did not answer")


def test_serve_logs_its_release_and_audit_verify_shows_it(
    fresh_platform: Platform, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://localhost:{port}"
    proc = _serve(fresh_platform.settings, port)
    try:
        _wait_until_up(proc, url)
        # The entries wait for their batch window to close; publish them now.
        for cell in fresh_platform.cells.values():
            cell.log.integrate_all()
        state = tmp_path / "audit.json"
        result = CliRunner().invoke(app, ["audit", "verify", url, "--state", str(state)])
        assert result.exit_code == 0, result.output
        out = result.stdout
        for region in fresh_platform.cells:
            assert f"Releases that served {region}" in out
        assert release.package_digest() in out
        # The settings served with (public_base_url filled in by `serve`) are digested.
        s = fresh_platform.settings
        served = Settings(
            admin_database_url=s.admin_database_url,
            database_prefix=s.database_prefix,
            data_dir=s.data_dir,
            public_base_url=url,
        )
        assert release.config_digest(served) in out
        assert fresh_platform.settings.admin_database_url not in out
        # A second run has hashed nothing new, and still shows the releases it verified.
        again = CliRunner().invoke(app, ["audit", "verify", url, "--state", str(state)])
        assert again.exit_code == 0, again.output
        assert "0 new entries hashed" in again.stdout
        assert release.package_digest() in again.stdout
        # The verifier without the rest of reelm prints them too, as plain text.
        plain = subprocess.run(
            [sys.executable, "-m", "reelm.transparency.auditor", url, "--state", str(state)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert plain.returncode == 0, plain.stderr
        assert "Releases that served nz (1 verified):" in plain.stdout
        assert f"package {release.package_digest()}" in plain.stdout
        # The public API and the report page show them too.
        api = httpx.get(f"{url}/api/v1/transparency/sg/releases", timeout=10).json()
        [entry] = api["releases"]
        assert entry["package_digest"] == release.package_digest()
        assert entry["process"] == "serve"
        assert entry["regions"] == sorted(fresh_platform.cells)
        page = httpx.get(f"{url}/transparency/sg", timeout=10).text
        assert "Releases" in page and release.package_digest() in page
        bad = httpx.get(f"{url}/api/v1/transparency/zz/releases", timeout=10)
        assert bad.status_code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def test_release_digest_command_recomputes_the_logged_digest(tmp_path: Path) -> None:
    installed = CliRunner().invoke(app, ["audit", "release-digest"])
    assert installed.exit_code == 0, installed.output
    assert installed.stdout.split()[1] == release.package_digest()
    # A checkout (its src, or src/reelm) gives the digest of that tree.
    tree = _copy_package(tmp_path)
    for path in (tree, tmp_path):
        given = CliRunner().invoke(app, ["audit", "release-digest", str(path)])
        assert given.exit_code == 0, given.output
        assert given.stdout.split()[1] == release.tree_digest(tree)
    missing = CliRunner().invoke(app, ["audit", "release-digest", str(tmp_path / "nothing")])
    assert missing.exit_code == 2
    assert "not a Python package directory" in " ".join(missing.output.split())


def test_release_digest_shows_the_config_it_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "s3cret-pw-9"
    monkeypatch.setenv(
        "REELM_CATALOG_DATABASE_URL", f"postgresql://reelm_catalog:{password}@db/catalog"
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["audit", "release-digest", "--show-config", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert password not in result.stdout
    lines = result.stdout.splitlines()
    digest = lines[1].split()[1]
    dump = lines[2].encode()
    assert digest == "sha256:" + hashlib.sha256(dump).hexdigest()
    assert json.loads(dump)["catalog_database_url"].endswith("@db/catalog")


def _queued_releases(database_url: str) -> list[dict[str, Any]]:
    url = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT entry FROM tlog_queue WHERE kind = %s ORDER BY id", (release.KIND,)
        ).fetchall()
    return [json.loads(bytes(row[0])) for row in rows]


def test_each_cell_logs_its_release_in_its_own_region_only(admin_url: str, tmp_path: Path) -> None:
    with running_cells(admin_url, tmp_path, ["us", "sg"]) as cells:
        for region in ("us", "sg"):
            settings = load_settings(cells.layout.cells[region].config_file)
            database_url = settings.regions[region].database_url
            assert database_url is not None
            deadline = time.monotonic() + 60
            while len(found := _queued_releases(database_url)) < 2:  # serve and worker
                assert time.monotonic() < deadline, found
                time.sleep(0.5)
            assert {e["details"]["process"] for e in found} == {"serve", "worker"}
            for event in found:
                assert event["region"] == region
                assert event["details"]["regions"] == [region]
                assert event["details"]["package_digest"] == release.package_digest()
            password = make_url(database_url).password
            assert password and password not in json.dumps(found)


def test_a_hostile_release_entry_is_shown_as_text(fresh_platform: Platform, tmp_path: Path) -> None:
    """The values come from the deployment under audit: an escape sequence, Rich markup or a
    wrong type in them must not reach the auditor's terminal as such, nor break the pages."""
    tlog = fresh_platform.cell("au").log
    tlog.append_now(
        release.KIND,
        None,
        {"version": "\x1b[2J[bold red]9.9[/]", "regions": "au", "package_digest": 7},
    )
    tlog.integrate_all()
    with serving(fresh_platform) as url:
        result = CliRunner().invoke(
            app, ["audit", "verify", url, "--state", str(tmp_path / "a.json")]
        )
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.stdout
        assert "?[2J[bold red]9.9[/]" in result.stdout  # the markup printed, not applied
        api = httpx.get(f"{url}/api/v1/transparency/au/releases", timeout=10)
        assert api.status_code == 200, api.text
        assert api.json()["releases"][0]["package_digest"] == "7"
        assert api.json()["releases"][0]["regions"] is None
        page = httpx.get(f"{url}/transparency/au", timeout=10)
        assert page.status_code == 200 and "\x1b" not in page.text


def test_a_wheel_holds_every_file_of_the_source_tree() -> None:
    """So the digest of a checkout's src/reelm and of the installed wheel are one (checked by
    hand: `pip wheel .` unpacked gives the same digest): every file is a module of a package
    or matched by a package-data pattern of pyproject.toml."""
    import tomllib

    pyproject = tomllib.loads((SRC.parent.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["reelm"]
    shipped = {path for pattern in patterns for path in SRC.glob(pattern)}
    left_out = [
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not (path.suffix == ".py" and (path.parent / "__init__.py").is_file())
        and path not in shipped
    ]
    assert not left_out, f"not in the wheel (add them to package-data): {left_out}"
