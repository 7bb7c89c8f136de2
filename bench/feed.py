"""For You under load: the For You endpoint (full stack) against a bare Starlette endpoint running
a plain newest-first query on the same catalog database, under the same uvicorn server, in the
same run.

- seed (not timed): --creators creators (directory entry and public profile, written with COPY:
  For You reads only catalog rows of creators) and --videos public videos (fake renditions,
  hashtags from a vocabulary of 300 with a Zipf distribution, published over 30 days), their
  counts (`video_stats`) and 7 days of engagement in markets US and FR (`market_engagement`);
  --viewers real accounts of market US (`sign_up` and `log_in`: bearer tokens), each following
  10-40 creators, with --signals watch signals recorded through `reelm.feed.signals.record` in
  batches of 100, so a page reads and decrypts a real history;
- one server: a child process running uvicorn (one worker, configured as `reelm serve` does)
  with one ASGI app: `/bare/...` goes to a bare Starlette app (a psycopg async pool of 4
  autocommit connections to the catalog, with the platform's catalog role), everything else to
  `reelm.app.create_app(platform)`;
- ours: `GET /api/v1/feed/for-you?limit=5` with a random viewer's bearer token; the anchor:
  `GET /bare/newest` (`SELECT id, owner_id, caption, hashtags, published_at FROM public_videos
  ORDER BY published_at DESC, id DESC LIMIT 5`, as JSON); `GET /bare/ping` (no database) shows
  how far the load generator itself can go;
- max throughput of each: closed loop, --concurrency requests in flight for --seconds after a
  warm-up; then latency at 50 % of OUR max: open loop at that fixed arrival rate for
  --open-seconds, ours and the anchor (latency counted from the scheduled send time, so a
  stalled client cannot hide a slow server). Every non-200 answer and transport error is
  counted: a run with errors is not a valid measurement (exit status 1);
- where the time of one page goes: `for_you` called in this process (the server idle), its
  phases timed by wrapping the functions it calls (src/ is not changed) and every SQL statement
  timed by SQLAlchemy's cursor events; --profile FILE adds a cProfile of the same pages.

The load generator (httpx on asyncio, this process) shares the cores with the server and
PostgreSQL: the CPU each used per request is printed, and what other processes used meanwhile.
Before measuring, the bench waits (at most --max-wait seconds) until nothing else keeps the
cores busy. The databases, roles and data directory are removed at the end, failed or not.

Run: .venv/bin/python bench/feed.py [--creators 2000] [--videos 20000] [--viewers 200]
     [--signals 300] [--concurrency 8] [--seconds 15] [--open-seconds 20] [--quick]
     [--profile FILE] [--admin-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import math
import os
import pstats
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import event
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from reelm.accounts.handles import handle_key
from reelm.accounts.schemas import SignUp
from reelm.accounts.service import CurrentUser, authenticate, log_in, sign_up
from reelm.app import settle_before_serving
from reelm.bootstrap import Platform, build
from reelm.config import Settings
from reelm.feed import pools, ranking, signals
from reelm.feed import service as feed_service
from reelm.media import catalog
from reelm.search.text import video_text
from reelm.social import likes
from reelm.storage import provision
from reelm.storage.db import Database

OURS_PATH = "/api/v1/feed/for-you?limit=5"
BARE_PATH = "/bare/newest"
PING_PATH = "/bare/ping"
BARE_QUERY = (
    "SELECT id, owner_id, caption, hashtags, published_at FROM public_videos "
    "ORDER BY published_at DESC, id DESC LIMIT 5"
)
PASSWORD = "correct horse battery"  # throwaway accounts in throwaway databases
MARKETS = ("US", "FR")
TAGS = 300
# Every video's mentions, allow_comments, share_count, width and height.
SAME: tuple[Any, ...] = ([], True, 0, 1080, 1920)
RUNGS = (("1080p", 1080, 1920), ("720p", 720, 1280), ("480p", 480, 854))
WORDS = (  # noqa: SIM905
    "sunset beach city night dance cooking recipe travel skate dog cat coffee rain morning "
    "music guitar street food hiking snow friends weekend garden workout art painting comedy "
    "prank fashion makeup football gaming anime books movie cars tech diy baby fitness yoga"
).split()


def bench_settings(data_dir: Path, admin_url: str, prefix: str) -> Settings:
    """The same settings for the seeding process and the server; cheap argon2, as the tests."""
    return Settings(
        data_dir=data_dir,
        admin_database_url=admin_url,
        database_prefix=prefix,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        signup_rate="1000000/minute",
        login_rate="1000000/minute",
    )


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# ---- seed ------------------------------------------------------------------------------------


@dataclass
class World:
    """What was seeded, as the signal generator needs it."""

    creators: list[uuid.UUID]
    fame: list[float]
    tags: list[str]
    tag_weights: list[float]
    videos: list[tuple[uuid.UUID, int, list[str], float]] = field(default_factory=list)
    by_tag: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_creator: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    viewers: list[tuple[CurrentUser, str]] = field(default_factory=list)  # user, bearer token
    follows: dict[uuid.UUID, list[int]] = field(default_factory=dict)


def _copy(db: Database, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    raw = db.engine.raw_connection()  # one of the platform's own pooled connections
    try:
        conn = raw.driver_connection
        assert isinstance(conn, psycopg.Connection)
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
    finally:
        raw.close()


def seed_creators(platform: Platform, rng: random.Random, count: int) -> World:
    """Creators with a fame (log-normal); 5 % have a private account."""
    tags = list(WORDS)
    while len(tags) < TAGS:
        tag = rng.choice(WORDS) + rng.choice(WORDS)
        if tag not in tags:
            tags.append(tag)
    rng.shuffle(tags)
    ids = [uuid.uuid4() for _ in range(count)]
    now = datetime.now(UTC)
    directory, profiles = [], []
    for i, user_id in enumerate(ids):
        at = now - timedelta(days=rng.uniform(30, 900))
        handle = f"creator{i}"
        directory.append((user_id, "us" if i % 5 < 3 else "sg", 1, "active", at))
        private = rng.random() < 0.05
        profiles.append(
            (user_id, handle, handle_key(handle), f"Creator {i}", "", "{}", private, at)
        )
    _copy(
        platform.catalog, "directory", "user_id, home_region, epoch, state, created_at", directory
    )
    _copy(
        platform.catalog,
        "profiles",
        "user_id, handle, handle_key, display_name, bio, links, is_private, created_at",
        profiles,
    )
    zipf = [1 / (rank + 1) for rank in range(len(tags))]
    return World(ids, [rng.lognormvariate(0, 1) for _ in ids], tags, zipf)


def _renditions(video_id: uuid.UUID, rng: random.Random) -> str:
    return json.dumps(
        [
            {"name": name, "file": f"{name}.mp4", "key": f"v/{video_id}/{name}.mp4", "width": w,
             "height": h, "bytes": rng.randrange(500_000, 9_000_000), "mime_type": "video/mp4"}
            for name, w, h in RUNGS
        ]
    )  # fmt: skip


def seed_videos(platform: Platform, world: World, rng: random.Random, count: int) -> None:
    """Public videos (creators post in proportion to the square root of their fame, 70 % of
    their hashtags from their two favourite ones), their counts and 7 days of engagement."""
    now = datetime.now(UTC)
    favourite = [rng.choices(world.tags, world.tag_weights, k=2) for _ in world.creators]
    owners = rng.choices(range(len(world.creators)), [f**0.5 for f in world.fame], k=count)
    rows, stats, appeal = [], [], []
    for n, owner in enumerate(owners):
        video_id = uuid.uuid4()
        tags = list(
            dict.fromkeys(
                rng.choice(favourite[owner])
                if rng.random() < 0.7
                else rng.choices(world.tags, world.tag_weights)[0]
                for _ in range(rng.randint(1, 4))
            )
        )
        caption = " ".join(rng.sample(WORDS, 4)) + " " + " ".join(f"#{t}" for t in tags)
        duration = round(rng.uniform(7, 60), 3)
        at = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        files = (_renditions(video_id, rng), f"v/{video_id}/poster.jpg")
        text = video_text(caption, tags)
        rows.append(
            (video_id, world.creators[owner], caption, tags, duration, *files, text, at, *SAME)
        )
        quality = math.exp(rng.gauss(0, 1)) * world.fame[owner]
        views = int(quality * rng.lognormvariate(3, 1))
        liked = int(views * rng.uniform(0.02, 0.12))
        stats.append((video_id, liked, liked // 10, liked // 20, views))
        appeal.append((at, quality))
        world.videos.append((video_id, owner, tags, duration))
        for tag in tags:
            world.by_tag[tag].append(n)
        world.by_creator[owner].append(n)
    columns = "id, owner_id, caption, hashtags, duration, renditions, poster_key, search_text"
    columns += ", published_at, mentions, allow_comments, share_count, width, height"
    _copy(platform.catalog, "public_videos", columns, rows)
    _copy(platform.catalog, "video_stats", "video_id, likes, comments, shares, views", stats)
    engagement = _engagement(rng, world, appeal, now)
    _copy(platform.catalog, "market_engagement", "market, day, video_id, score", engagement)


def _engagement(
    rng: random.Random, world: World, appeal: list[tuple[datetime, float]], now: datetime
) -> list[tuple[Any, ...]]:
    """Per market and day of the last 7: 3,000 draws among the videos out by then, weighted by
    quality and recency (5-day decay); a video's score that day is the sum of its draws."""
    rows = []
    for market in MARKETS:
        for back in range(7):
            end = now - timedelta(days=back)
            weights = [
                0.0 if at > end else quality * math.exp(-(end - at).days / 5)
                for at, quality in appeal
            ]
            scores: dict[int, float] = defaultdict(float)
            for n in rng.choices(range(len(weights)), weights, k=3000):
                scores[n] += rng.uniform(1, 5)
            rows += [(market, end.date(), world.videos[n][0], s) for n, s in scores.items()]
    return rows


def sign_up_viewers(platform: Platform, world: World, rng: random.Random, count: int) -> None:
    """Real accounts of market US (home region us), signed in, each following 10-40 creators."""
    follows = []
    for i in range(count):
        handle = f"viewer{i}"
        data = SignUp(
            handle=handle,
            display_name=f"Viewer {i}",
            email=f"{handle}@example.com",
            password=PASSWORD,
            birth_date=date(1990, 1, 1),
            market="US",
        )
        sign_up(platform, data)
        token, user = log_in(platform, handle, PASSWORD)
        world.viewers.append((user, token))
        chosen = set(rng.choices(range(len(world.creators)), world.fame, k=rng.randint(10, 40)))
        world.follows[user.user_id] = sorted(chosen)
        follows += [(user.user_id, world.creators[c], "active") for c in chosen]
    _copy(platform.catalog, "follows", "follower_id, followee_id, state", follows)


def _watched(rng: random.Random, world: World, user: CurrentUser, count: int) -> list[Any]:
    """`count` distinct videos: half with one of 3 favourite hashtags, a fifth by followed
    creators, the rest at random; completed more often when they match the taste."""
    loved = sorted(set(rng.choices(world.tags, world.tag_weights, k=3)))
    followed = world.follows[user.user_id]
    picked: dict[int, bool] = {}
    while len(picked) < min(count, len(world.videos)):
        roll = rng.random()
        if roll < 0.5:
            picked.setdefault(rng.choice(world.by_tag[rng.choice(loved)] or [0]), True)
        elif roll < 0.7:
            picked.setdefault(rng.choice(world.by_creator[rng.choice(followed)] or [0]), True)
        else:
            n = rng.randrange(len(world.videos))
            picked.setdefault(n, bool(set(loved) & set(world.videos[n][2])))
    events = []
    for n, match in picked.items():
        video_id, duration = world.videos[n][0], world.videos[n][3]
        if rng.random() < (0.7 if match else 0.25):
            seconds, flags = duration, {"completed": True, "replayed": rng.random() < 0.2}
        elif rng.random() < 0.5:
            seconds, flags = rng.uniform(0.3, 2.5), {"skipped": True}
        else:
            seconds, flags = duration * rng.uniform(0.1, 0.9), {}
        events.append(
            signals.WatchEvent(video_id=video_id, watched_seconds=round(seconds, 3), **flags)
        )
    return events


def seed_signals(platform: Platform, world: World, rng: random.Random, count: int) -> int:
    """Every viewer's signals through signals.record in batches of 100, 4 viewers at a time;
    returns how many were accepted (those on private creators' videos are dropped)."""
    plans = [(user, _watched(rng, world, user, count)) for user, _ in world.viewers]

    def send(plan: tuple[CurrentUser, list[Any]]) -> int:
        user, events = plan
        size = signals.MAX_BATCH
        return sum(
            signals.record(platform, user, signals.WatchBatch(events=events[i : i + size]))[0]
            for i in range(0, len(events), size)
        )

    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(send, plans))


# ---- the server (a child process) ------------------------------------------------------------


def bare_app(catalog_url: str) -> Starlette:
    """The anchor: a plain query through a plain async pool, JSON out, nothing else."""
    pool = AsyncConnectionPool(
        libpq(catalog_url), min_size=4, max_size=4, open=False, kwargs={"autocommit": True}
    )

    async def newest(request: Request) -> JSONResponse:
        async with pool.connection() as conn:
            rows = await (await conn.execute(BARE_QUERY)).fetchall()
        items = [
            {"id": str(i), "owner_id": str(o), "caption": c, "hashtags": h, "at": a.isoformat()}
            for i, o, c, h, a in rows
        ]
        return JSONResponse({"items": items})

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=True)
        yield
        await pool.close()

    return Starlette(routes=[Route(BARE_PATH, newest), Route(PING_PATH, ping)], lifespan=lifespan)


def one_server(reelm_app: ASGIApp, bare: ASGIApp) -> ASGIApp:
    """One ASGI app: /bare/ to the anchor, the rest to reelm (which has no lifespan events)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope.get("path", "").startswith("/bare/"):
            await bare(scope, receive, send)
        else:
            await reelm_app(scope, receive, send)

    return app


def serve(args: argparse.Namespace) -> None:
    """The child process: the seeded platform (no migrations to run) behind uvicorn."""
    import uvicorn

    from reelm.app import create_app

    settings = bench_settings(Path(args.data_dir), args.admin_url, args.prefix)
    platform = build(settings, upgrade=False)
    try:
        app = one_server(create_app(platform), bare_app(platform.catalog.url))
        # As `reelm serve` runs it: one process, uvicorn's defaults, warnings only.
        settle_before_serving()
        uvicorn.run(app, host="127.0.0.1", port=args.serve, log_level="warning", workers=1)
    finally:
        platform.close()


@contextlib.contextmanager
def server_process(settings: Settings, admin_url: str) -> Iterator[tuple[str, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    command = [sys.executable, __file__, "--serve", str(port), "--admin-url", admin_url]
    command += ["--data-dir", str(settings.data_dir), "--prefix", settings.database_prefix]
    child = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"the server exited with status {child.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.2)
        yield url, child.pid
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# ---- the machine -----------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")
# Neighbours known to keep the cores busy: a recommender tuning run, a test suite, a bench.
NEIGHBOURS = ("/tmp/tune", "bin/pytest", "bench/recsys.py")  # noqa: S108 - names, not files


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICK, sum(values) / TICK


def _process_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # gone meanwhile
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _processes() -> Iterator[tuple[int, str]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    yield int(entry), f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue


def wait_until_quiet(max_wait: float, threshold: float = 0.2) -> str:
    """Wait until under `threshold` of the cores are busy and no known neighbour runs; say how
    the machine was when measuring started."""
    began = time.monotonic()
    while True:
        busy0, total0 = _machine_busy()
        time.sleep(5)
        busy1, total1 = _machine_busy()
        busy = (busy1 - busy0) / (total1 - total0)
        others = [cmd[:70] for pid, cmd in _processes() if any(n in cmd for n in NEIGHBOURS)]
        quiet = busy < threshold and not others
        if quiet or time.monotonic() - began > max_wait:
            break
        print(
            f"  waiting for a quiet machine: {100 * busy:.0f} % busy, load "
            f"{os.getloadavg()[0]:.2f}; {'; '.join(others[:2]) or 'no known neighbour'}",
            file=sys.stderr,
        )
        time.sleep(25)
    return (
        f"{'quiet' if quiet else 'STILL BUSY'} after {time.monotonic() - began:.0f} s of waiting: "
        f"{100 * busy:.0f} % of {os.cpu_count()} cores busy, load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
        + (f", neighbours: {'; '.join(others)}" if others else "")
    )


class Cpu:
    """CPU seconds spent during a `with` block by the server, our PostgreSQL backends, this
    process (the load generator) and the whole machine ("others": the machine's busy time that
    was none of those). Backends are sampled every 0.2 s: one that exits meanwhile (a pool's
    overflow connection) still counts what it had used by its last sample."""

    def __init__(self, server_pid: int, prefix: str) -> None:
        self.server_pid, self.title = server_pid, f" {prefix}_"  # titles name the database
        self.spent: dict[str, float] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _backends(self) -> dict[int, float]:
        return {
            pid: _process_cpu(pid)
            for pid, title in _processes()
            if title.startswith("postgres:") and self.title in title
        }

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for pid, used in self._backends().items():
                self._last[pid] = max(used, self._last.get(pid, 0.0))

    def __enter__(self) -> Cpu:
        self._first = self._backends()
        self._last = dict(self._first)
        self._start = (_process_cpu(self.server_pid), time.process_time(), _machine_busy()[0])
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        server, client, machine = (
            end - start
            for end, start in zip(
                (_process_cpu(self.server_pid), time.process_time(), _machine_busy()[0]),
                self._start,
                strict=True,
            )
        )
        postgres = sum(used - self._first.get(pid, 0.0) for pid, used in self._last.items())
        others = max(machine - server - postgres - client, 0.0)
        self.spent = {"server": server, "postgres": postgres, "client": client, "others": others}


# ---- load ------------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float  # the measured window
    latencies: list[float]  # of the requests in the window
    statuses: Counter[int]  # 0: a transport error or timeout
    done: int  # requests completed, warm-up included (the CPU figures cover them all)
    cpu: dict[str, float] = field(default_factory=dict)
    rate: float = 0.0  # offered, in an open loop

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[max(math.ceil(p * len(ordered)) - 1, 0)] if ordered else math.nan

    def cpu_ms(self, part: str) -> float:
        return 1000 * self.cpu[part] / max(self.done, 1)


class Load:
    """One endpoint driven by this process over keep-alive HTTP/1.1 connections."""

    def __init__(self, url: str, path: str, tokens: list[str], seed: int) -> None:
        self.url, self.path, self.tokens = url, path, tokens
        self.rng = random.Random(seed)

    async def _send(self, client: httpx.AsyncClient) -> int:
        headers = {"authorization": f"Bearer {self.rng.choice(self.tokens)}"} if self.tokens else {}
        try:
            return (await client.get(self.path, headers=headers)).status_code
        except httpx.HTTPError:
            return 0

    def _client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        return httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits)

    async def closed(self, concurrency: int, warmup: float, seconds: float) -> Run:
        """`concurrency` requests always in flight; those started in the window are counted."""
        run = Run(seconds, [], Counter(), 0)
        async with self._client() as client:
            window = time.perf_counter() + warmup
            stop = window + seconds

            async def worker() -> None:
                while (start := time.perf_counter()) < stop:
                    status = await self._send(client)
                    run.done += 1
                    if start >= window:
                        run.latencies.append(time.perf_counter() - start)
                        run.statuses[status] += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return run

    async def open(self, rate: float, warmup: float, seconds: float) -> Run:
        """Requests sent at a fixed rate whatever the answers; latency from the scheduled time
        of each, so a request the client sent late counts as late."""
        run = Run(seconds, [], Counter(), 0, rate=rate)
        async with self._client() as client:
            began = time.perf_counter() + 0.05

            async def one(due: float, counted: bool) -> None:
                status = await self._send(client)
                run.done += 1
                if counted:
                    run.latencies.append(time.perf_counter() - due)
                    run.statuses[status] += 1

            tasks = []
            for i in range(int((warmup + seconds) * rate)):
                due = began + i / rate
                await asyncio.sleep(max(due - time.perf_counter(), 0))
                tasks.append(asyncio.create_task(one(due, i / rate >= warmup)))
            await asyncio.gather(*tasks)
        return run


def measure(name: str, server: tuple[int, str], work: Coroutine[Any, Any, Run]) -> Run:
    with Cpu(*server) as cpu:
        run = asyncio.run(work)
    run.cpu = cpu.spent
    print(
        f"  {name:<20} {run.throughput:8.1f} req/s  p50 {run.pct(0.5):7.1f} ms  "
        f"p99 {run.pct(0.99):7.1f} ms  errors {run.errors}",
        file=sys.stderr,
    )
    return run


# ---- where the time of one page goes ---------------------------------------------------------

# Functions For You calls, wrapped in place; nested ones are indented in the report.
PHASES: list[tuple[Any, str, str, int]] = [
    (pools, "market_pool", "market pool (memory; topped up every 30 s, built every 5 min)", 0),
    (feed_service, "ties_of", "follows, blocks, followed creators' videos (catalog)", 0),
    (feed_service, "taste_of", "taste: the viewer's signals, folded", 0),
    (signals, "folded_history", "signals: window ids, decrypt what is new", 1),
    (ranking, "fold", "ranking.fold", 1),
    (feed_service, "_candidates", "candidates from the pool (memory)", 0),
    (ranking, "rank", "ranking.rank", 0),
    (catalog, "cards_in_order", "cards of the 5 picked (full rules)", 0),
    (likes, "liked_among", "likes lookup (region)", 1),
]
# (label, test on the statement's text): the first that matches names a statement.
STATEMENTS: list[tuple[str, Callable[[str], bool]]] = [
    ("signals: the window's ids (region)", lambda s: s.startswith("SELECT signals.id, signals.c")),
    ("signals: rows to decrypt (region)", lambda s: "FROM signals" in s),
    ("likes: lookup (region)", lambda s: "FROM likes" in s),
    ("follows and blocks of the viewer", lambda s: "UNION ALL" in s),
    ("cards: the 5 videos, full rules", lambda s: "public_videos.id = ANY" in s),
    ("followed creators' videos", lambda s: "public_videos.owner_id = ANY" in s),
    ("pool rebuild: trending", lambda s: "anon_1" in s),
    ("pool rebuild: exploration", lambda s: "public_videos.id >=" in s),
    ("pool rebuild: newest window", lambda s: "ORDER BY public_videos.published_at DESC" in s),
]


def _label(statement: str) -> str:
    text = " ".join(statement.split())
    return next((label for label, test in STATEMENTS if test(text)), text[:50])


@contextlib.contextmanager
def phase_timers(platform: Platform) -> Iterator[dict[str, Any]]:
    """Time each call of the PHASES functions (inclusive) and each statement on the catalog and
    the us region (attributed to the innermost phase running, and labelled)."""
    calls: dict[str, float] = defaultdict(float)
    sql: dict[str, float] = defaultdict(float)
    statements: dict[str, list[float]] = defaultdict(list)
    stack = ["for_you"]
    saved = []
    for module, name, _, _ in PHASES:
        original = getattr(module, name)
        saved.append((module, name, original))

        def wrapper(*args: Any, __n: str = name, __f: Any = original, **kwargs: Any) -> Any:
            stack.append(__n)
            began = time.perf_counter()
            try:
                return __f(*args, **kwargs)
            finally:
                calls[__n] += time.perf_counter() - began
                stack.pop()

        setattr(module, name, functools.wraps(original)(wrapper))

    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        conn.info["bench_began"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        took = time.perf_counter() - conn.info.pop("bench_began")
        sql[stack[-1]] += took
        statements[_label(statement)].append(took)

    engines = [platform.catalog.engine, platform.cell("us").db.engine]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
    try:
        yield {"calls": calls, "sql": sql, "statements": statements}
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "after_cursor_execute", after)


def profile_pages(
    platform: Platform, signed_in: list[tuple[CurrentUser, str]], pages: int, profile: str | None
) -> None:
    """First pages for the viewers in turn, in this process; prints where the time goes."""
    settle_before_serving()  # as the server did before serving
    viewers = [user for user, _ in signed_in]
    # A viewer's first page in this process decrypts their whole window; the pages after it
    # decrypt only what is new (reelm.feed.pools.SignalMemory). Both are timed: first pages
    # of viewers this process has not seen, then the profiled pages of the same viewers.
    pools.market_pool(platform, "US")
    signal_memory = pools.signal_memory(platform)
    signal_memory.drop_all()
    cold = []
    for user in viewers[: min(pages, len(viewers))]:
        began = time.perf_counter()
        feed_service.for_you(platform, user, limit=5)
        cold.append(time.perf_counter() - began)
    print(
        f"\nA viewer's first page in this process (their whole window decrypted; mean of "
        f"{len(cold)}): {statistics.fmean(cold) * 1000:.1f} ms (p50 "
        f"{statistics.median(cold) * 1000:.1f} ms)"
    )
    totals = []
    cpu = time.process_time()
    with phase_timers(platform) as found:
        for i in range(pages):
            began = time.perf_counter()
            page = feed_service.for_you(platform, viewers[i % len(viewers)], limit=5)
            totals.append(time.perf_counter() - began)
            assert len(page.items) == 5, len(page.items)
    cpu = (time.process_time() - cpu) / pages * 1000
    total = statistics.fmean(totals) * 1000
    print(
        f"\nA next For You page in-process (mean of {pages} pages, limit 5, server idle): "
        f"{total:.1f} ms (p50 {statistics.median(totals) * 1000:.1f} ms), of which {cpu:.1f} ms "
        f"of this process's CPU (the rest waits for PostgreSQL); machine load "
        f"{os.getloadavg()[0]:.2f}\n"
        "| phase | ms a page | share | SQL in its own statements (nested phases apart) |\n"
        "|---|---|---|---|"
    )
    for _, name, label, depth in PHASES:
        ms = found["calls"][name] / pages * 1000
        own = found["sql"][name] / pages * 1000
        print(f"| {'- ' * depth}{label} | {ms:.2f} | {100 * ms / total:.1f} % | {own:.2f} |")
    print("\n| statement (execute + fetch) | per page | ms a page | p50 ms |\n|---|---|---|---|")
    rows = sorted(found["statements"].items(), key=lambda kv: -sum(kv[1]))
    for label, times in rows:
        print(
            f"| {label} | {len(times) / pages:.1f} | {sum(times) / pages * 1000:.2f} | "
            f"{statistics.median(times) * 1000:.2f} |"
        )
    in_sql = sum(sum(t) for t in found["statements"].values()) / pages * 1000
    count = sum(len(t) for t in found["statements"].values()) / pages
    print(
        f"\nstatements: {count:.1f} a page, {in_sql:.2f} ms; the other {total - in_sql:.2f} ms are "
        "Python (SQLAlchemy binding, rows, decryption, ranking) and connection checkouts"
    )
    builds, build_cpu = [], []
    for _ in range(5):  # what a background build of the market's pool costs, every 5 min
        began, cpu = time.perf_counter(), time.process_time()
        pool = pools.build(platform, "US")
        builds.append(time.perf_counter() - began)
        build_cpu.append(time.process_time() - cpu)
    print(
        f"a full build of the market's pool ({len(pool.videos):,} videos): "
        f"{statistics.median(builds) * 1000:.1f} ms (median of 5), of which "
        f"{statistics.median(build_cpu) * 1000:.1f} ms CPU"
    )
    tops, top_cpu = [], []
    for _ in range(5):  # and a top-up with what was published since, every 30 s in between
        began, cpu = time.perf_counter(), time.process_time()
        pools.top_up(platform, pool)
        tops.append(time.perf_counter() - began)
        top_cpu.append(time.process_time() - cpu)
    print(
        f"a top-up of that pool (nothing new published): {statistics.median(tops) * 1000:.1f} ms "
        f"(median of 5), of which {statistics.median(top_cpu) * 1000:.1f} ms CPU"
    )
    began, cpu = time.perf_counter(), time.process_time()
    for i in range(pages):  # what the gate does before the route, for every signed-in request
        authenticate(platform, signed_in[i % len(signed_in)][1])
    print(
        f"before the route, the gate's `authenticate` (directory, then session in the region): "
        f"{(time.perf_counter() - began) / pages * 1000:.2f} ms, of which "
        f"{(time.process_time() - cpu) / pages * 1000:.2f} ms CPU"
    )
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(pages):
            feed_service.for_you(platform, viewers[i % len(viewers)], limit=5)
        profiler.disable()
        profiler.dump_stats(profile)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


# ---- main ------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _sessions(admin_url: str, prefix: str) -> int:
    """Connections opened so far to our databases (pg_stat_database.sessions, PostgreSQL 14+)."""
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname LIKE %s",
            (f"{prefix}\\_%",),
        ).fetchone()
    return int(row[0]) if row else 0


def report(runs: dict[str, Run], args: argparse.Namespace, sizes: str, machine: str) -> None:
    ours, bare, ping = runs["ours max"], runs["bare max"], runs["ping max"]
    ours_open, bare_open = runs["ours open"], runs["bare open"]
    print(f"\nFor You under load: {sizes}")
    print(
        f"machine: {os.cpu_count()} cores shared by the server (one uvicorn process), PostgreSQL "
        f"and the load generator (this process); {machine}\n"
    )
    print(
        f"| endpoint | max req/s ({args.concurrency} in flight, {args.seconds:g} s) | "
        f"p50 / p90 / p99 at {ours_open.rate:.1f} req/s (50 % of ours' max) | errors | "
        "CPU ms a request: server / PostgreSQL / load generator | others' CPU s |\n"
        "|---|---|---|---|---|---|"
    )
    for label, closed, opened in (
        ("ours: `GET /api/v1/feed/for-you?limit=5`", ours, ours_open),
        ("bare: `GET /bare/newest`", bare, bare_open),
        ("load generator's ceiling: `GET /bare/ping`", ping, None),
    ):
        latency = (
            f"{opened.pct(0.5):.1f} / {opened.pct(0.9):.1f} / {opened.pct(0.99):.1f} ms"
            if opened
            else ""
        )
        print(
            f"| {label} | {closed.throughput:,.1f} | {latency} | "
            f"{closed.errors + (opened.errors if opened else 0)} | {closed.cpu_ms('server'):.2f} / "
            f"{closed.cpu_ms('postgres'):.2f} / {closed.cpu_ms('client'):.2f} | "
            f"{closed.cpu['others'] + (opened.cpu['others'] if opened else 0):.1f} |"
        )
    ratio, p99 = ours.throughput / bare.throughput, ours_open.pct(0.99)
    print(
        f"\nratio ours / bare, max throughput: {ratio:.3f}  (target >= 0.5: "
        f"{'met' if ratio >= 0.5 else 'MISSED'})\n"
        f"p99 of ours at 50 % of its max ({ours_open.rate:.1f} req/s offered, "
        f"{ours_open.throughput:.1f} served): {p99:.1f} ms  (target <= 50 ms: "
        f"{'met' if p99 <= 50 else 'MISSED'})"
    )
    errors = {name: dict(run.statuses) for name, run in runs.items() if run.errors}
    if errors:
        print(f"NOT A VALID MEASUREMENT: errors (status 0: transport error) in {errors}")


def bench(args: argparse.Namespace, platform: Platform, settings: Settings) -> bool:
    rng = random.Random(args.seed)
    began = time.perf_counter()
    world = seed_creators(platform, rng, args.creators)
    seed_videos(platform, world, rng, args.videos)
    seeded = time.perf_counter()
    sign_up_viewers(platform, world, rng, args.viewers)
    signed = time.perf_counter()
    accepted = seed_signals(platform, world, rng, args.signals)
    sizes = (
        f"{args.creators:,} creators, {args.videos:,} public videos, engagement in US and FR "
        f"over 7 days, {args.viewers} viewers of market US with {accepted / args.viewers:.0f} "
        "signals each"
    )
    print(
        f"seeded {sizes}: catalog {seeded - began:.1f} s, sign-ups and log-ins "
        f"{signed - seeded:.1f} s, signals.record {time.perf_counter() - signed:.1f} s",
        file=sys.stderr,
    )
    with psycopg.connect(libpq(platform.catalog.url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # the planner sees the bulk-loaded tables as they are
    tokens = [token for _, token in world.viewers]
    # The server allows 100 connections, shared with other work: this process's pools let go
    # of theirs while the server runs (they open again, lazily, for the profile).
    platform.close()
    machine = wait_until_quiet(args.max_wait)
    print(f"machine: {machine}", file=sys.stderr)
    runs: dict[str, Run] = {}
    with server_process(settings, args.admin_url) as (url, pid):
        cpu = (pid, settings.database_prefix)
        ours, bare = Load(url, OURS_PATH, tokens, 1), Load(url, BARE_PATH, [], 2)
        closed = (args.concurrency, args.warmup, args.seconds)
        opened = _sessions(args.admin_url, settings.database_prefix)
        runs["ours max"] = measure("ours, closed loop", cpu, ours.closed(*closed))
        opened = _sessions(args.admin_url, settings.database_prefix) - opened
        runs["bare max"] = measure("bare, closed loop", cpu, bare.closed(*closed))
        ping = Load(url, PING_PATH, [], 3)
        runs["ping max"] = measure("ping, closed loop", cpu, ping.closed(*closed))
        rate = runs["ours max"].throughput / 2
        runs["ours open"] = measure(
            "ours, open loop", cpu, ours.open(rate, args.warmup, args.open_seconds)
        )
        runs["bare open"] = measure(
            "bare, open loop", cpu, bare.open(rate, args.warmup, args.open_seconds)
        )
    report(runs, args, sizes, f"{machine}; load average after {os.getloadavg()[0]:.2f}")
    print(
        f"connections opened to our databases during ours' closed loop: {opened} (the pools "
        "keep 5 per database; more in flight are opened, then closed when returned)"
    )
    profile_pages(platform, world.viewers, args.profile_pages, args.profile)
    return not any(run.errors for run in runs.values())


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--creators", type=int, default=2000)
    parser.add_argument("--videos", type=int, default=20_000)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--signals", type=int, default=300, help="watch signals per viewer")
    parser.add_argument("--concurrency", type=int, default=8, help="closed loop: in flight")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each window")
    parser.add_argument("--seconds", type=float, default=15.0, help="each max-throughput run")
    parser.add_argument("--open-seconds", type=float, default=20.0, help="each open-loop run")
    parser.add_argument("--profile-pages", type=int, default=100)
    parser.add_argument("--profile", metavar="FILE", help="also cProfile the pages into FILE")
    parser.add_argument("--max-wait", type=float, default=1200, help="for a quiet machine (s)")
    parser.add_argument("--quick", action="store_true", help="small data, short runs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server child: port
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.creators, args.videos, args.viewers = 200, 2000, 20
        args.warmup, args.seconds, args.open_seconds, args.profile_pages = 1, 5, 5, 20
        args.max_wait = min(args.max_wait, 60)
    return args


def main() -> None:
    args = parse()
    if args.serve:
        serve(args)
        return
    prefix = f"bench{secrets.token_hex(3)}"
    settings = bench_settings(Path(tempfile.mkdtemp(prefix="reelm-bench-")), args.admin_url, prefix)
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM cleans up too
    platform: Platform | None = None
    valid = False
    try:
        platform = build(settings)
        valid = bench(args, platform, settings)
    finally:
        if platform is not None:
            platform.close()
        provision.drop(args.admin_url, settings.database_prefix, list(settings.regions))
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    if not valid:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
