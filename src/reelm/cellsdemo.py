"""`reelm demo --cells`: the deployment shape on one machine, so a newcomer can see it.

One PostgreSQL cluster (embedded) stands in for the regions' servers: each region gets its own
database and role on it, the catalog its own, and no cell is given a superuser or another
region's password. Then, as separate OS processes: each region's cell (`reelm serve --region X`)
and worker (`reelm worker --region X`), each with its own configuration and data dir, and
HAProxy in front as the edge, routing each session to its home cell.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reelm.config import Settings
from reelm.regions.deployment import CellsLayout, lay_out, upgrade_catalog

REELM = [sys.executable, "-m", "reelm.cli"]
PREFIX = "reelmcells"
# The cells reach nothing but their own stores: only these of ours are passed on.
KEPT_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "XDG_RUNTIME_DIR")


class DemoError(RuntimeError):
    """The multi-cell demo cannot start (a missing program, a port in use)."""


def cell_environment() -> dict[str, str]:
    """A cell's environment: the basics, never a REELM_* variable or a cloud credential."""
    return {k: v for k, v in os.environ.items() if k in KEPT_ENVIRONMENT}


@dataclass
class Processes:
    """The demo's child processes, stopped together (the last started first)."""

    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path = Path()

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 (our interpreter or HAProxy, our arguments)
                args, stdout=out, stderr=subprocess.STDOUT, env=cell_environment()
            )
        self.running[name] = process
        return process

    def check(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise DemoError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        for process in reversed(list(self.running.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()


def wait_until_up(url: str, processes: Processes, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check()
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer,  # noqa: S310
        ):
            if answer.status == 200:
                return
        time.sleep(0.25)
    raise DemoError(f"{url} did not answer within {timeout:.0f} s")


def demo_settings(edge_url: str) -> dict[str, Any]:
    """What every configuration of the demo shares: plain HTTP on loopback, the market
    picker, links through the edge, and the edge's address as the only trusted proxy."""
    from reelm.edge import LOOPBACK_SOURCE

    return {
        "market_picker": True,
        "cookie_secure": False,
        "public_base_url": edge_url,
        "forwarded_allow_ips": [LOOPBACK_SOURCE],
    }


def edge_config(layout: CellsLayout, bind: str, settings: Settings) -> str:
    from reelm.api.gate import SESSION_COOKIE
    from reelm.api.problems import CELL_COOKIE
    from reelm.edge import parse_cell, render

    return render(
        [parse_cell(f"{c.region}={c.base_url}") for c in layout.cells.values()],
        cookie=SESSION_COOKIE,
        cell_cookie=CELL_COOKIE,
        bind=bind,
        country_header=settings.country_header,
    )


@contextlib.contextmanager
def running(
    settings: Settings,
    admin_url: str,
    regions: list[str],
    host: str,
    port: int,
    say: Callable[[str], None],
) -> Iterator[tuple[CellsLayout, Processes]]:
    """Lay out, start every process, and yield; stop them all on the way out."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise DemoError(
            "the multi-cell demo puts HAProxy in front of the cells: apt-get install haproxy"
        )
    root = settings.data_dir / "cells-demo"
    edge_url = f"http://localhost:{port}"
    base_urls = {region: f"http://127.0.0.1:{port + 1 + i}" for i, region in enumerate(regions)}
    # Its own prefix: the single-machine demo's databases may live on the same cluster.
    layout = lay_out(admin_url, root, base_urls, prefix=PREFIX, shared=demo_settings(edge_url))
    upgrade_catalog(layout)
    processes = Processes(logs=root / "logs")
    try:
        serve_layout(layout, processes, f"{host}:{port}", edge_url, settings, say)
        seed(layout, say)
        yield layout, processes
    finally:
        processes.stop()


def serve_layout(
    layout: CellsLayout,
    processes: Processes,
    bind: str,
    edge_url: str,
    settings: Settings,
    say: Callable[[str], None],
) -> None:
    """Start each cell, then (once it has made its region's stores) its worker, then the
    edge in front of them; return when the edge answers."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise DemoError("the edge is HAProxy: apt-get install haproxy")
    for c in layout.cells.values():
        cell_port = c.base_url.rsplit(":", 1)[1]
        say(f"starting cell {c.region} on {c.base_url}")
        config = ["--config", str(c.config_file)]
        processes.start(
            f"cell-{c.region}",
            [*REELM, "serve", "--region", c.region, *config, "--port", cell_port],
        )
    for c in layout.cells.values():
        wait_until_up(c.base_url, processes)
        config = ["--config", str(c.config_file)]
        processes.start(f"worker-{c.region}", [*REELM, "worker", "--region", c.region, *config])
    edge_file = layout.root / "edge" / "haproxy.cfg"
    edge_file.parent.mkdir(parents=True, exist_ok=True)
    edge_file.write_text(edge_config(layout, bind, settings))
    processes.start("edge", [haproxy, "-f", str(edge_file), "-db"])
    wait_until_up(edge_url, processes)


def seed(layout: CellsLayout, say: Callable[[str], None]) -> None:
    """Each cell makes its own region's sample users and videos, then (once all have) their
    follows, which cross regions through the inter-cell protocol."""
    from reelm.media.samples import ensure_samples

    samples = layout.root / "samples"
    say("making the sample clips with FFmpeg (first run only)")
    ensure_samples(samples)
    for step in (["--samples", str(samples)], ["--follows"]):
        for c in layout.cells.values():
            done = subprocess.run(  # noqa: S603 (our interpreter, our arguments)
                [*REELM, "cells", "seed", "--config", str(c.config_file), *step],
                capture_output=True,
                text=True,
                env=cell_environment(),
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                raise DemoError(f"seeding cell {c.region} failed:\n{done.stdout}{done.stderr}")
