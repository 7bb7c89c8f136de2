"""The first page of For You shows what is ready: a market pool (reelm.feed.pools) built before
a video was published is topped up before a page is served from it. Real server (uvicorn),
real PostgreSQL, videos made by the real pipeline; "another process" is a second platform
over the same databases (its own memory, as a `reelm worker` process has)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform, build
from reelm.feed import pools
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest

from . import tus
from .conftest import serving, signed_in
from .test_transcode import FAST_H264, ffmpeg, pattern, tone

EMPTY = "No videos yet"
US = {"CF-IPCountry": "US"}  # the edge's country header: a visitor in the US market


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fresh-clip") / "clip.mp4"
    ffmpeg(*pattern("180x320", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(path))
    return path


@dataclass
class Site:
    platform: Platform
    url: str
    creator: CurrentUser


@pytest.fixture
def site(platform_factory: Callable[..., Platform]) -> Iterator[Site]:
    """A deployment of its own whose catalog starts without a video."""
    platform = platform_factory()
    creator = signed_in(platform, "fresh", "US")[1]
    with serving(platform) as url:
        yield Site(platform, url, creator)


def publish_elsewhere(site: Site, clip: Path, caption: str) -> uuid.UUID:
    """A public video uploaded and published by another process (a worker of its own)."""
    other = build(site.platform.settings, upgrade=False)
    try:
        video_id = ingest(other, site.creator, clip, UploadMeta(caption=caption))
        tus.run_jobs(other, "us")
    finally:
        other.close()
    return video_id


def ready_in_api(http: httpx.Client, video_id: uuid.UUID) -> bool:
    listed = http.get("/api/v1/feed?limit=50", headers=US).json()["items"]
    return str(video_id) in [item["id"] for item in listed]


def test_the_first_page_shows_a_video_published_after_the_pool_was_built(
    site: Site, clip: Path
) -> None:
    """Visitors keep opening For You while another process publishes the first video: every
    page asked for after the API lists it shows it (none says "No videos yet")."""
    pages: list[tuple[float, bool, bool]] = []  # (sent, shows the video, says "no videos")
    stop = threading.Event()
    video: list[uuid.UUID] = []

    def visitor() -> None:
        with httpx.Client(base_url=site.url, timeout=30) as http:
            while not stop.is_set():
                sent = time.monotonic()
                html = http.get("/", headers=US).text
                shows = bool(video) and f'data-id="{video[0]}"' in html
                pages.append((sent, shows, EMPTY in html))

    with httpx.Client(base_url=site.url, timeout=30) as http:
        first = http.get("/", headers=US)
        assert first.status_code == 200 and EMPTY in first.text  # the pool is built, empty
        visitors = [threading.Thread(target=visitor) for _ in range(4)]
        for thread in visitors:
            thread.start()
        try:
            video.append(publish_elsewhere(site, clip, "first one #fresh"))
            assert ready_in_api(http, video[0])
            listed = time.monotonic()
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in visitors:
                thread.join()
        after = [(shows, empty) for sent, shows, empty in pages if sent > listed]
        assert after, "no page was asked for after the video was listed"
        assert all(shows and not empty for shows, empty in after), after
        # The pool took it (a top-up, not the empty page's fallback to Newest).
        assert video[0] in site.platform.caches["feed.pools"]["US"].position
    print(f"{len(after)} pages after the API listed the video, all showing it")


def test_a_built_pool_takes_new_videos_before_the_next_page(site: Site, clip: Path) -> None:
    """A pool that holds videos: one published by this process is in the next page's pool at
    once, one published by another process within `pools.PROBE_SECONDS`; neither waits for
    the 30-second top-up."""
    with httpx.Client(base_url=site.url, timeout=30) as http:
        old = publish_elsewhere(site, clip, "older #fresh")
        assert f'data-id="{old}"' in http.get("/", headers=US).text
        pool = site.platform.caches["feed.pools"]["US"]

        here = ingest(site.platform, site.creator, clip, UploadMeta(caption="made here"))
        tus.run_jobs(site.platform, "us")
        assert ready_in_api(http, here)
        http.get("/", headers=US)
        topped = site.platform.caches["feed.pools"]["US"]
        assert here in topped.position and topped.built == pool.built  # topped up, not rebuilt

        there = publish_elsewhere(site, clip, "made there")
        assert ready_in_api(http, there)
        time.sleep(pools.PROBE_SECONDS + 0.1)
        http.get("/", headers=US)
        topped = site.platform.caches["feed.pools"]["US"]
        assert there in topped.position and topped.built == pool.built


def test_the_first_page_shows_videos_that_became_listable_without_a_publication(
    site: Site, clip: Path
) -> None:
    """The pool holds one video, which is deleted; another account's video, published while
    that account was private, becomes listable when it turns public: nothing was published
    since the pool was built, and the first page still shows what the API lists."""
    from reelm.accounts.lifecycle import update_privacy
    from reelm.accounts.schemas import PrivacyUpdate
    from reelm.media.videos import delete_video

    platform = site.platform
    shy = signed_in(platform, "shy", "US")[1]
    update_privacy(platform, shy, PrivacyUpdate(private_account=True))
    hidden = ingest(platform, shy, clip, UploadMeta(caption="while private"))
    shown = ingest(platform, site.creator, clip, UploadMeta(caption="the only one"))
    tus.run_jobs(platform, "us")
    with httpx.Client(base_url=site.url, timeout=30) as http:
        assert f'data-id="{shown}"' in http.get("/", headers=US).text
        assert not ready_in_api(http, hidden)
        delete_video(platform, site.creator, shown)
        update_privacy(platform, shy, PrivacyUpdate(private_account=False))
        assert ready_in_api(http, hidden)
        page = http.get("/", headers=US).text
        assert f'data-id="{hidden}"' in page and EMPTY not in page
    assert hidden not in platform.caches["feed.pools"]["US"].position  # not rebuilt for it
