"""Cells as separate OS processes, each holding only its own region's secrets."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from reelm.config import ConfigError, load_settings
from reelm.regions.deployment import read_config, secrets_of
from tests.cells import REELM, Cells, cell_env, running_cells

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def cells(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cells]:
    root = tmp_path_factory.mktemp("cells")
    with running_cells(admin_url, root, ["us", "sg"]) as running:
        yield running


def sign_up(cells: Cells, region: str, handle: str, market: str) -> dict[str, object]:
    with cells.client(region) as client:
        answer = client.post(
            "/api/v1/accounts",
            json={
                "handle": handle,
                "display_name": handle.title(),
                "email": f"{handle}@example.com",
                "password": PASSWORD,
                "birth_date": str(date(1990, 5, 17)),
                "market": market,
            },
        )
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    return body


def log_in(cells: Cells, region: str, handle: str) -> str:
    with cells.client(region) as client:
        answer = client.post("/api/v1/session", json={"identifier": handle, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


def test_each_cell_signs_up_its_own_markets_and_sends_others_away(cells: Cells) -> None:
    us = sign_up(cells, "us", "cellsam", "US")
    sg = sign_up(cells, "sg", "cellmei", "SG")
    assert us["home_region"] == "us"
    assert sg["home_region"] == "sg"

    # A Singapore sign-up that reached the us cell is not written there (it holds nothing of
    # sg's): the answer names the cell that serves it.
    with cells.client("us") as client:
        answer = client.post(
            "/api/v1/accounts",
            json={
                "handle": "cellstray",
                "display_name": "Stray",
                "email": "stray@example.com",
                "password": PASSWORD,
                "birth_date": "1990-01-01",
                "market": "SG",
            },
        )
        assert answer.status_code == 421, answer.text
        assert answer.headers["x-reelm-home-cell"] == "sg"
        assert answer.json()["region"] == "sg"
        # Sent again with the cookie it set, through the edge, it reaches the sg cell.
        assert answer.cookies.get("reelm_cell") == "sg"
        assert client.get("/api/v1/users/cellstray").status_code == 404

    token = log_in(cells, "us", "cellsam")
    with cells.client("us") as client:
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json()["email"] == "cellsam@example.com"
        # Public data of the other region's user comes from the catalog, in any cell.
        assert client.get("/api/v1/users/cellmei").status_code == 200
    with cells.client("sg") as client:
        # The us user's session, at the sg cell: refused without reading anything of it.
        elsewhere = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert elsewhere.status_code == 421, elsewhere.text
        assert elsewhere.headers["x-reelm-home-cell"] == "us"


def _database_url(cells: Cells, region: str) -> str:
    url: str = read_config(cells.layout.cells[region].config_file)["regions"][region][
        "database_url"
    ]
    return url


def _said(done: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, with the terminal's line wrapping undone."""
    return " ".join((done.stdout + done.stderr).split())


def _open_files(pid: int) -> list[Path]:
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = Path(os.readlink(fd))
        except OSError:
            continue
        if target.is_file():
            found.append(target)
    return found


def test_the_us_cell_holds_no_secret_of_sg(cells: Cells) -> None:
    sg_secrets = [s for s in secrets_of(cells.layout, "sg") if len(s) >= 16]
    assert len(sg_secrets) >= 3  # the role's password, the master key, the identity seed
    process = cells.processes["us"]
    us = cells.layout.cells["us"]

    environ = Path(f"/proc/{process.pid}/environ").read_bytes()
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    config = us.config_file.read_bytes()
    files = [p for p in _open_files(process.pid) if p.stat().st_size < 50_000_000]
    everything_in_its_dir = [p for p in us.data_dir.rglob("*") if p.is_file()]
    for secret in sg_secrets:
        assert secret not in environ
        assert secret not in cmdline
        assert secret not in config
        for path in [*files, *everything_in_its_dir]:
            if path.suffix in (".log",) or "postgres" in path.parts:
                continue
            assert secret not in path.read_bytes(), path

    # The us cell's own role cannot open sg's database, by mistake or on purpose.
    own = make_url(read_config(us.config_file)["regions"]["us"]["database_url"])
    sg_db = make_url(
        read_config(cells.layout.cells["sg"].config_file)["regions"]["sg"]["database_url"]
    ).database
    conninfo = own.set(drivername="postgresql", database=sg_db).render_as_string(
        hide_password=False
    )
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(conninfo, connect_timeout=5).close()


def test_a_cell_given_another_regions_secret_refuses_to_start(cells: Cells, tmp_path: Path) -> None:
    us = cells.layout.cells["us"]
    sg_url = _database_url(cells, "sg")
    text = us.config_file.read_text()
    leaked = tmp_path / "reelm.toml"
    leaked.write_text(text + f'\n[regions.sg]\ndatabase_url = "{sg_url}"\n')
    with pytest.raises(ConfigError, match="region 'sg''s database_url"):
        load_settings(leaked)
    done = subprocess.run(
        [*REELM, "serve", "--config", str(leaked), "--port", "1"],
        capture_output=True,
        text=True,
        env=cell_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "a cell holds its own region's secrets only" in _said(done)
    # Nor through the environment.
    env = {**cell_env(), "REELM_REGIONS__SG__KEY_DIR": str(tmp_path / "sg-keys")}
    done = subprocess.run(
        [*REELM, "serve", "--config", str(us.config_file), "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "region 'sg''s key_dir" in _said(done)
    assert not (tmp_path / "sg-keys").exists()


def test_a_cell_refuses_a_data_dir_holding_another_regions_keys(
    cells: Cells, tmp_path: Path
) -> None:
    us = cells.layout.cells["us"]
    config = read_config(us.config_file)
    stray = tmp_path / "keys" / "sg"
    stray.mkdir(parents=True)
    (stray / "master.key").write_bytes(os.urandom(32))
    moved = tmp_path / "reelm.toml"
    moved.write_text(us.config_file.read_text().replace(str(config["data_dir"]), str(tmp_path)))
    done = subprocess.run(
        [*REELM, "serve", "--config", str(moved), "--port", "1"],
        capture_output=True,
        text=True,
        env=cell_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "holds other regions' secrets" in _said(done)


def test_each_cell_scans_and_verifies_its_own_region(cells: Cells) -> None:
    sign_up(cells, "us", "cellscan", "US")
    for region in ("us", "sg"):
        said = cells.run(region, "residency-scan")
        assert "clean" in said.lower(), said
        state = cells.layout.root / f"audit-{region}.json"
        said = cells.run(
            region, "audit", "verify", cells.urls[region], "--state", str(state), configured=False
        )
        assert f"{region}:" in said or region in said, said
