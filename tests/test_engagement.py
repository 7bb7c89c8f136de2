"""Engagement counts under load and after failures, through a real server (uvicorn on a
loopback port) and real PostgreSQL: likes, shares and watch signals racing on one video, a like
whose count could not reach the catalog, counts damaged in the catalog and proved again from
the regions, and a 500 that leaves the client's keep-alive connection open."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.cli import app
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest
from reelm.social import engagement, likes, recount
from reelm.social.models import EngagementOutbox, RegionLikes, VideoStats

from . import tus
from .conftest import _factory, serving, signed_in
from .test_transcode import FAST_H264, ffmpeg, pattern, tone

LIKERS = 24  # >= 20, the bar, across three home regions
CLIENTS = 12  # requests in flight at once (the report saw the 500s at 8)
MARKETS = ("US", "FR", "CA")
REGIONS = ("us", "sg", "ca")  # their home regions


@dataclass
class Site:
    platform: Platform
    url: str
    person: Callable[[str], tuple[str, CurrentUser]]
    video: Callable[[], uuid.UUID]


@pytest.fixture(scope="module")
def site(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    make = _factory(admin_url, tmp_path_factory)
    platform = next(make)()
    clip = tmp_path_factory.mktemp("engagement-clip") / "clip.mp4"
    ffmpeg(*pattern("180x320", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(clip))
    _, creator = signed_in(platform, "cr", "FR")

    def video() -> uuid.UUID:
        made = ingest(platform, creator, clip, UploadMeta(caption="one for all #race"))
        tus.run_jobs(platform, "sg")
        return made

    def person(market: str) -> tuple[str, CurrentUser]:
        return signed_in(platform, "en", market)

    with serving(platform) as url:
        yield Site(platform, url, person, video)
    next(make, None)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _stats(site: Site, video: uuid.UUID) -> dict[str, int]:
    with httpx.Client(base_url=site.url, timeout=30) as http:
        r = http.get(f"/api/v1/videos/{video}")
    assert r.status_code == 200, r.text
    stats: dict[str, int] = r.json()["stats"]
    return stats


def test_likes_shares_and_signals_racing_on_one_video_count_exactly(site: Site) -> None:
    _race(site, recounting=False)


def test_recounts_during_the_race_neither_lose_nor_double_a_like(site: Site) -> None:
    _race(site, recounting=True)


def _race(site: Site, *, recounting: bool) -> None:
    """LIKERS people like, share and send signals about one video, CLIENTS requests at a
    time; with ``recounting``, the regions' likes are recounted over and over meanwhile."""
    video = site.video()
    people = [site.person(MARKETS[n % len(MARKETS)]) for n in range(LIKERS)]
    watch = {"events": [{"video_id": str(video), "watched_seconds": 1.0, "completed": True}]}
    statuses: list[int] = []
    lock = threading.Lock()
    local = threading.local()
    opened: list[httpx.Client] = []

    def client() -> httpx.Client:
        # One keep-alive connection per worker thread, as a real client holds.
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=site.url, timeout=60)
            with lock:
                opened.append(local.http)
        http: httpx.Client = local.http
        return http

    def send(method: str, path: str, token: str, **kwargs: Any) -> int:
        try:
            status = client().request(method, path, headers=_auth(token), **kwargs).status_code
        except httpx.TransportError:  # the server closed the connection under the request
            status, local.http = 0, httpx.Client(base_url=site.url, timeout=60)
            with lock:
                opened.append(local.http)
        with lock:
            statuses.append(status)
        return status

    def like(token: str) -> None:
        # A client that gets an error tries again, as a person taps again.
        for _ in range(5):
            if send("POST", f"/api/v1/videos/{video}/like", token) == 200:
                return

    def signal(token: str) -> None:
        send("POST", "/api/v1/signals", token, json=watch)

    def share(token: str) -> None:
        send("POST", f"/api/v1/videos/{video}/share", token)

    work: list[tuple[Callable[[str], None], str]] = []
    for token, _ in people:
        # Interleaved so that likes, signals and shares of the same video are in flight at once.
        work += [(signal, token), (like, token), (signal, token), (share, token)]
    racing = threading.Event()
    recounts: list[recount.Recount] = []

    def recount_over_and_over() -> None:
        while not racing.is_set():
            recounts.extend(recount.reconcile_likes(site.platform, r) for r in REGIONS)

    counter = threading.Thread(target=recount_over_and_over)
    if recounting:
        counter.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            for future in [pool.submit(job, token) for job, token in work]:
                future.result()
    finally:
        racing.set()
        if recounting:
            counter.join()
        for http in opened:
            http.close()
    if recounting:
        # A request's counts wait while its region is recounted: the worker's sweep applies
        # them. The recounts themselves must have found nothing to correct.
        for region in REGIONS:
            engagement.sweep(site.platform, region)
        assert recounts and [r for r in recounts if r.corrected] == []

    stats = _stats(site, video)
    failed = [s for s in statuses if s != 200]  # 0: the connection was cut
    assert (failed, stats["likes"], stats["shares"]) == ([], LIKERS, LIKERS)
    with site.platform.catalog.read() as c:
        views = c.scalar(select(VideoStats.views).where(VideoStats.video_id == video))
    assert views == 2 * LIKERS  # the public API shows no views; the catalog counts them
    # Liking again changes nothing, and the recount from the regions agrees.
    with httpx.Client(base_url=site.url, timeout=30) as http:
        again = http.post(f"/api/v1/videos/{video}/like", headers=_auth(people[0][0]))
    assert again.json() == {"liked": True, "likes": LIKERS}
    for region in REGIONS:
        assert recount.reconcile_likes(site.platform, region).corrected == 0


@contextlib.contextmanager
def _catalog_refuses_likes(site: Site) -> Iterator[None]:
    """For a while the catalog refuses any like count: a real failure of the second database,
    after the like itself was saved in the liker's home region."""
    with site.platform.catalog.transaction() as c:
        c.execute(
            text("ALTER TABLE video_stats ADD CONSTRAINT no_likes_yet CHECK (likes = 0) NOT VALID")
        )
    try:
        yield
    finally:
        with site.platform.catalog.transaction() as c:
            c.execute(text("ALTER TABLE video_stats DROP CONSTRAINT no_likes_yet"))


def test_a_like_whose_count_failed_is_counted_when_it_is_retried(site: Site) -> None:
    video = site.video()
    token, user = site.person("US")
    with _catalog_refuses_likes(site), httpx.Client(base_url=site.url, timeout=30) as http:
        first = http.post(f"/api/v1/videos/{video}/like", headers=_auth(token))
    with httpx.Client(base_url=site.url, timeout=30) as http:
        again = http.post(f"/api/v1/videos/{video}/like", headers=_auth(token))
    assert again.status_code == 200, again.text
    assert again.json() == {"liked": True, "likes": 1}  # counted once, when tried again
    assert first.status_code == 200, first.text  # the like was saved; its count followed
    assert _stats(site, video)["likes"] == 1
    assert likes.liked_among(site.platform, user, [video]) == {video}


def test_the_worker_applies_what_a_request_could_not(site: Site) -> None:
    video = site.video()
    token, _ = site.person("CA")
    with _catalog_refuses_likes(site), httpx.Client(base_url=site.url, timeout=30) as http:
        r = http.post(f"/api/v1/videos/{video}/like", headers=_auth(token))
    assert r.status_code == 200, r.text
    with site.platform.cell("ca").db.transaction() as s:
        assert s.scalars(select(EngagementOutbox.video_id)).all() == [video]
    assert engagement.drain(site.platform, "ca") == 1
    assert _stats(site, video)["likes"] == 1
    assert engagement.drain(site.platform, "ca") == 0  # applied once, never twice
    assert _stats(site, video)["likes"] == 1


def test_a_damaged_count_is_proved_again_from_the_regions(site: Site) -> None:
    video = site.video()
    tokens = [site.person(m)[0] for m in ("US", "US", "FR")]
    with httpx.Client(base_url=site.url, timeout=30) as http:
        for token in tokens:
            assert http.post(f"/api/v1/videos/{video}/like", headers=_auth(token)).is_success
    # A crash, a manual fix gone wrong, a restore from an older backup: the catalog is off,
    # in the total, in one region's row, and a row is missing.
    with site.platform.catalog.transaction() as c:
        c.execute(update(VideoStats).where(VideoStats.video_id == video).values(likes=40))
        mine = RegionLikes.video_id == video
        c.execute(update(RegionLikes).where(mine, RegionLikes.region == "us").values(likes=-3))
        c.execute(delete(RegionLikes).where(mine, RegionLikes.region == "sg"))
    assert _stats(site, video)["likes"] == 40
    # Each region proves its own row; the total is the sum of the rows.
    assert recount.reconcile_likes(site.platform, "us").corrected == 1
    assert _stats(site, video)["likes"] == 2
    assert recount.reconcile_likes(site.platform, "sg").corrected == 1
    assert _stats(site, video)["likes"] == 3
    with site.platform.catalog.transaction() as c:
        per_region = dict(
            c.execute(
                select(RegionLikes.region, RegionLikes.likes).where(RegionLikes.video_id == video)
            ).all()
        )
    assert per_region == {"us": 2, "sg": 1}
    assert all(recount.reconcile_likes(site.platform, r).corrected == 0 for r in ("us", "sg"))


def test_a_server_error_keeps_the_connection_open(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = site.video()
    token, _ = site.person("US")

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("internal detail that must not reach the client")

    monkeypatch.setattr(likes, "like", broken)
    with httpx.Client(base_url=site.url, timeout=30) as http:
        first = http.post(f"/api/v1/videos/{video}/like", headers=_auth(token))
        where = first.extensions["network_stream"].get_extra_info("client_addr")
        second = http.get(f"/api/v1/videos/{video}")
        again = second.extensions["network_stream"].get_extra_info("client_addr")
    assert first.status_code == 500
    assert first.headers["content-type"].startswith("application/problem+json")
    assert first.json()["type"].endswith("/problems/server-error")
    assert "internal detail" not in first.text
    assert first.headers.get("connection", "").lower() != "close"
    # The error's answer has the headers every answer has (it is written outside the app).
    assert first.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in first.headers
    assert second.status_code == 200
    assert again == where, "the second request went over the same connection"


def test_a_deadlock_victim_is_run_again_and_both_transactions_commit(site: Site) -> None:
    db = site.platform.catalog
    table = f"deadlock_probe_{uuid.uuid4().hex[:8]}"
    with db.transaction() as c:
        c.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, n int NOT NULL)"))
        c.execute(text(f"INSERT INTO {table} VALUES (1, 0), (2, 0)"))
    both_hold_one = threading.Barrier(2, timeout=30)
    attempts: list[int] = []

    def crosswise(first: int, second: int) -> Callable[[Session], None]:
        def work(c: Session) -> None:
            attempts.append(first)
            c.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = :id"), {"id": first})
            if attempts.count(first) == 1:  # only the first time: then they cross
                both_hold_one.wait()
            c.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = :id"), {"id": second})

        return work

    try:
        with ThreadPoolExecutor(2) as pool:
            done = [
                pool.submit(db.retrying, crosswise(1, 2)),
                pool.submit(db.retrying, crosswise(2, 1)),
            ]
            for future in done:
                future.result()  # neither sees the deadlock
        with db.read() as c:
            assert dict(c.execute(text(f"SELECT id, n FROM {table}")).all()) == {1: 2, 2: 2}
        assert len(attempts) > 2  # PostgreSQL aborted one of them; it ran again
    finally:
        with db.transaction() as c:
            c.execute(text(f"DROP TABLE {table}"))


def test_the_reconcile_command(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    video = site.video()
    token, _ = site.person("US")
    with httpx.Client(base_url=site.url, timeout=30) as http:
        assert http.post(f"/api/v1/videos/{video}/like", headers=_auth(token)).is_success
    with site.platform.catalog.transaction() as c:
        c.execute(update(VideoStats).where(VideoStats.video_id == video).values(likes=9))
    s = site.platform.settings
    monkeypatch.setenv("REELM_ADMIN_DATABASE_URL", s.admin_database_url or "")
    monkeypatch.setenv("REELM_DATABASE_PREFIX", s.database_prefix)
    monkeypatch.setenv("REELM_DATA_DIR", str(s.data_dir))
    result = CliRunner().invoke(app, ["social", "reconcile", "--region", "us"])
    assert result.exit_code == 0, result.output
    assert "us: 0 owed count(s) applied" in result.stdout and "1 corrected" in result.stdout
    assert _stats(site, video)["likes"] == 1
    refused = CliRunner().invoke(app, ["social", "reconcile", "--region", "mars"])
    assert refused.exit_code == 2 and "no region 'mars'" in refused.output
