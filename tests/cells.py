"""A deployment of cells as separate OS processes, for the tests: the catalog operator's
upgrade, then ``reelm serve --region X`` per region, each with its own configuration and data
dir (reelm.regions.deployment lays them out on the test PostgreSQL server)."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

from reelm.regions.deployment import CellsLayout, lay_out, tear_down
from tests.conftest import free_port

REELM = [sys.executable, "-m", "reelm.cli"]

# Fast password hashing and plain-HTTP cookies: loopback tests, not a deployment.
TEST_SETTINGS: dict[str, Any] = {
    "argon2_time_cost": 1,
    "argon2_memory_kib": 1024,
    "cookie_secure": False,
    "market_picker": True,
}


def cell_env() -> dict[str, str]:
    """The environment a cell process starts with: this one's, minus anything of reelm's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REELM_")}


@dataclass
class Cells:
    layout: CellsLayout
    urls: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def client(self, region: str) -> httpx.Client:
        return httpx.Client(base_url=self.urls[region], timeout=30)

    def run(
        self, region: str | None, *args: str, check: bool = True, configured: bool = True
    ) -> str:
        """A reelm command with a cell's configuration (None: the catalog operator's);
        ``configured=False``: a command that takes none (an auditor's)."""
        config = (
            self.layout.catalog_config if region is None else self.layout.cells[region].config_file
        )
        done = subprocess.run(
            [*REELM, *args, *(["--config", str(config)] if configured else [])],
            capture_output=True,
            text=True,
            env=cell_env(),
            timeout=300,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"reelm {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout + done.stderr


def _wait_listening(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"cell exited ({process.returncode}): {log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise AssertionError(f"cell at {url} did not start: {log.read_text()[-3000:]}")


def start_cell(cells: Cells, region: str) -> None:
    layout = cells.layout.cells[region]
    port = int(cells.urls[region].rsplit(":", 1)[1])
    log = cells.logs.setdefault(region, layout.data_dir / "serve.log")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                *REELM,
                "serve",
                "--region",
                region,
                "--config",
                str(layout.config_file),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cell_env(),
        )
    cells.processes[region] = process
    _wait_listening(cells.urls[region], process, log)


def start_worker(cells: Cells, region: str) -> None:
    """The cell's job worker (uploads, deliveries to other cells, the log's batches)."""
    layout = cells.layout.cells[region]
    log = cells.logs.setdefault(f"{region}-worker", layout.data_dir / "worker.log")
    with log.open("ab") as out:
        cells.processes[f"{region}-worker"] = subprocess.Popen(
            [*REELM, "worker", "--region", region, "--config", str(layout.config_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cell_env(),
        )


def stop_cell(cells: Cells, region: str) -> None:
    process = cells.processes.pop(region, None)
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_cells(admin_url: str, root: Path, regions: list[str]) -> Iterator[Cells]:
    prefix = f"c{secrets.token_hex(4)}"
    urls = {region: f"http://127.0.0.1:{free_port()}" for region in regions}
    layout = lay_out(admin_url, root, urls, prefix=prefix, shared=TEST_SETTINGS)
    cells = Cells(layout, urls)
    try:
        cells.run(None, "db", "upgrade", "--catalog", *_roles(layout))
        for region in regions:
            start_cell(cells, region)
            start_worker(cells, region)
        yield cells
    finally:
        for region in list(cells.processes):
            stop_cell(cells, region)
        tear_down(admin_url, layout, prefix)


def _roles(layout: CellsLayout) -> list[str]:
    args: list[str] = []
    for pair in layout.cell_roles():
        args += ["--cell-role", pair]
    return args
