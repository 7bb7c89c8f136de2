"""The video pages in a real browser: uploading through the page (tus, in pieces, resuming after
a dropped connection), processing by a real worker with real FFmpeg, the swipe feed, a video's
page, hashtags, the profile grid and "Your videos". Debian's Chromium driven by Playwright
against uvicorn on loopback, as in test_web_browser.

Set ``REELM_SCREENSHOTS=1`` to rewrite the README's screenshots of the feed and the upload page
in ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FilePayload,
    Locator,
    Page,
    Route,
    expect,
)
from sqlalchemy import update

from reelm.accounts.service import SignedUp, log_in
from reelm.bootstrap import Platform
from reelm.jobs import WorkerThread
from reelm.media.captions import parse_caption
from reelm.media.catalog import VideoCard
from reelm.media.models import Video
from reelm.web.csrf import CSRF_FIELD
from reelm.web.video_pages import caption_html

from . import tus
from .conftest import PASSWORD, LiveServer, free_port, serving, unique_handle
from .test_web_browser import PHONE, assert_fits, create_user, log_in_in_page

pytestmark = pytest.mark.browser

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
PAGE_LIMIT = 4_000_000  # what the size check is told, so a test can hand it a bigger file
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
READY_TIMEOUT = 90.0
NOT_A_VIDEO = "This file is not a video we can read"


# ---- clips ---------------------------------------------------------------------------------


def ffmpeg(*args: str) -> None:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        timeout=120,
    )


def make_clip(out: Path, picture: str, seconds: float) -> Path:
    """An H.264 + AAC MP4 of ``seconds`` of the lavfi source ``picture``, with a tone."""
    ffmpeg(
        "-f", "lavfi", "-i", f"{picture}:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        *X264, "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(out),
    )  # fmt: skip
    return out


# A dawn sky for the README's screenshot of the feed.
SUNRISE = (
    "gradients=size=720x1280:speed=0.05:c0=0xfe2c55:c1=0x7b2ff7:c2=0x25f4ee:c3=0x0b1e5b"
    ":nb_colors=4:seed=7:x0=0:y0=0:x1=720:y1=1280"
)


@dataclass(frozen=True)
class Clips:
    portrait: Path  # 720x1280, 2 s: the upload the page makes
    small: Path  # 360x640, 1 s: quick to process, for filling the feed
    sunrise: Path  # 720x1280, 2 s, for the screenshot
    garbage: Path  # named .mp4, but noise


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    root = tmp_path_factory.mktemp("clips")
    garbage = root / "holiday.mp4"
    garbage.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(300_000)))
    return Clips(
        portrait=make_clip(root / "portrait.mp4", "testsrc2=size=720x1280", 2),
        small=make_clip(root / "small.mp4", "rgbtestsrc=size=360x640", 1),
        sunrise=make_clip(root / "sunrise.mp4", SUNRISE, 2),
        garbage=garbage,
    )


# ---- the site: a platform of its own, served, with a worker for the US region ----------------


@pytest.fixture(scope="module")
def site(session_platform_factory: Callable[..., Platform]) -> Iterator[LiveServer]:
    port = free_port()
    platform = session_platform_factory(
        market_picker=True, public_base_url=f"http://localhost:{port}"
    )
    worker = WorkerThread(platform, ["us"]).start()  # every user here is in the US market
    try:
        with serving(platform, port) as url:
            yield LiveServer(url, platform)
    finally:
        worker.stop()
        platform.close()


def new_context(browser: Browser, site: LiveServer, **options: Any) -> BrowserContext:
    context = browser.new_context(locale="en-US", **options)
    context.set_default_timeout(15_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    return context


@pytest.fixture
def context(browser: Browser, site: LiveServer) -> Iterator[BrowserContext]:
    context = new_context(browser, site)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def phone(browser: Browser, site: LiveServer) -> Iterator[BrowserContext]:
    context = new_context(browser, site, viewport=PHONE, device_scale_factor=2, is_mobile=True)
    yield context
    context.close()


# ---- helpers -------------------------------------------------------------------------------


def signed_in(page: Page, site: LiveServer) -> SignedUp:
    user = create_user(site)
    response = log_in_in_page(page, site, user.handle, PASSWORD)
    assert response.status == 200
    return user


def api_upload(
    site: LiveServer, user: SignedUp, clip: Path, *, caption: str = "", visibility: str = "public"
) -> uuid.UUID:
    """A video uploaded through the API with the user's bearer token; its id."""
    token, _ = log_in(site.platform, user.handle, PASSWORD)
    with httpx.Client(base_url=site.url, timeout=30) as http:
        response = tus.upload(
            http, token, clip.read_bytes(), caption=caption, visibility=visibility
        )
    assert response.status_code == 204, response.text
    return uuid.UUID(response.headers["Location"].rsplit("/", 1)[1])


def video_status(site: LiveServer, user: SignedUp, video_id: uuid.UUID) -> dict[str, Any]:
    token, _ = log_in(site.platform, user.handle, PASSWORD)
    with httpx.Client(base_url=site.url, timeout=30) as http:
        response = http.get(
            f"/api/v1/videos/{video_id}", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_ready(site: LiveServer, user: SignedUp, *video_ids: uuid.UUID) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    for video_id in video_ids:
        while (found := video_status(site, user, video_id))["status"] != "ready":
            assert found["status"] != "failed", found["failure"]
            assert time.monotonic() < deadline, f"{video_id} is still {found['status']}"
            time.sleep(0.3)


def my_video_ids(page: Page, site: LiveServer) -> set[str]:
    """The signed-in user's videos and uploads, as the API lists them to the page's cookie."""
    response = page.request.get(site.url + "/api/v1/me/videos")
    assert response.status == 200
    return {item["id"] for item in response.json()}


def record_upload_progress(page: Page) -> None:
    """Keep every (phase, bar value, detail) the upload page shows, in window.seen."""
    page.evaluate(
        """() => {
            window.seen = [];
            const bar = document.getElementById('upload-progress');
            const note = () => window.seen.push([
                document.getElementById('upload-status').textContent,
                bar.hasAttribute('value') ? bar.value : null,
                document.getElementById('progress-detail').textContent,
            ]);
            new MutationObserver(note).observe(document.getElementById('progress-box'),
                {attributes: true, childList: true, characterData: true, subtree: true});
        }"""
    )


def upload_in_page(page: Page, clip: Path, caption: str, visibility: str = "public") -> None:
    page.set_input_files("#file", str(clip))
    page.fill("#caption", caption)
    page.select_option("#visibility", visibility)
    page.click("#upload-start")


def wait_for_ready(page: Page) -> str:
    """Wait for the page to say Ready; the id of the video it links to."""
    page.wait_for_function(
        "() => document.getElementById('upload-status').textContent === 'Ready'",
        timeout=READY_TIMEOUT * 1000,
    )
    href = page.get_attribute("#video-link", "href")
    assert href is not None and href.startswith("/v/")
    return href.removeprefix("/v/")


def playing(page: Page, index: int) -> bool:
    result: bool = page.evaluate(
        """i => { const v = document.querySelectorAll('article.reel[data-id] video')[i];
                  return !v.paused && v.currentTime > 0; }""",
        index,
    )
    return result


def current_time_advances(page: Page, index: int) -> None:
    page.wait_for_function(
        """i => { const v = document.querySelectorAll('article.reel[data-id] video')[i];
                  return v && !v.paused && v.currentTime > 0.2; }""",
        arg=index,
    )
    before = page.evaluate(
        "i => document.querySelectorAll('article.reel[data-id] video')[i].currentTime", index
    )
    page.wait_for_function(
        """([i, t]) => document.querySelectorAll('article.reel[data-id] video')[i].currentTime
                       !== t""",
        arg=[index, before],
    )


def feed_ids(site: LiveServer) -> list[str]:
    with httpx.Client(base_url=site.url, timeout=30) as http:
        items = http.get("/api/v1/feed", params={"limit": 50}).json()["items"]
    return [item["id"] for item in items]


def scroll_feed_to(page: Page, index: int) -> None:
    page.evaluate(
        """i => { const reels = document.querySelectorAll('#feed > article.reel');
                  reels[i].scrollIntoView({block: 'start'}); }""",
        index,
    )


# ---- captions (no browser) ------------------------------------------------------------------


def card_with(caption: str) -> VideoCard:
    parsed = parse_caption(caption)
    return VideoCard(
        id=uuid.uuid4(),
        status="ready",
        progress=100,
        failure=None,
        visibility="public",
        allow_comments=True,
        caption=caption,
        hashtags=parsed.hashtags,
        mentions=parsed.mentions,
        duration=1.0,
        width=720,
        height=1280,
        author_handle="maya",
        author_name="Maya",
        poster_url=None,
        sources=(),
        created_at=datetime.now(UTC),
        mine=False,
    )


@pytest.mark.parametrize(
    ("caption", "html"),
    [
        (
            "Dawn #Skate with @Kai.Rides.",
            'Dawn <a class="tag" href="/tag/skate">#Skate</a> with '
            '<a class="mention" href="/@kai.rides">@Kai.Rides</a>.',
        ),
        (
            "Un #café à #東京",
            'Un <a class="tag" href="/tag/caf%C3%A9">#café</a> à '
            '<a class="tag" href="/tag/%E6%9D%B1%E4%BA%AC">#東京</a>',
        ),
        ("mail me@example.com, a#b, #1", "mail me@example.com, a#b, #1"),
        (
            '<img src=x onerror="alert(1)"> #x"y',
            "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; "
            '<a class="tag" href="/tag/x">#x</a>&#34;y',
        ),
    ],
)
def test_captions_link_their_hashtags_and_mentions_and_nothing_else(
    caption: str, html: str
) -> None:
    assert str(caption_html(card_with(caption))) == html


# ---- a feed with videos in it ----------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    author: SignedUp
    tag: str
    video_ids: list[uuid.UUID]  # newest first, as the feed shows them
    private_id: uuid.UUID


@pytest.fixture(scope="module")
def published(site: LiveServer, clips: Clips) -> Published:
    """Six public videos by one author (more than a page of the feed), and a private one."""
    author = create_user(site, handle=unique_handle("skater"), display_name="Maya Skates")
    friend = create_user(site, handle=unique_handle("friend"))
    tag = f"dawn{uuid.uuid4().hex[:6]}"
    ids = [
        api_upload(
            site,
            author,
            clips.small,
            caption=f"Clip {n} at #{tag} with @{friend.handle} #Skate",
        )
        for n in range(6)
    ]
    private = api_upload(site, author, clips.small, caption="Just for me", visibility="private")
    wait_ready(site, author, *ids, private)
    # The feed is ordered by publication, which follows processing: ask the feed for it.
    with httpx.Client(base_url=site.url, timeout=30) as http:
        items = http.get("/api/v1/feed", params={"limit": 50}).json()["items"]
    order = [uuid.UUID(item["id"]) for item in items if uuid.UUID(item["id"]) in ids]
    assert sorted(order) == sorted(ids)
    return Published(author, tag, order, private)


# ---- anonymous visitors ----------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(page: Page, site: LiveServer) -> None:
    for path in ("/upload", "/me/videos"):
        response = page.goto(site.url + path)
        assert response is not None and response.status == 200
        assert page.url == f"{site.url}/login?next={path}"
    assert page.locator("header.top a", has_text="Upload").count() == 0

    # After logging in, the page asked for.
    user = create_user(site)
    page.goto(site.url + "/upload")
    log_in_in_page(page, site, user.handle, PASSWORD)
    assert page.url == site.url + "/upload"
    assert page.locator("h1").inner_text() == "Upload a video"


# ---- uploading -----------------------------------------------------------------------------


def test_upload_through_the_page_shows_progress_then_ready(
    page: Page, context: BrowserContext, site: LiveServer, clips: Clips
) -> None:
    user = signed_in(page, site)
    upload_link = page.locator("header.top a", has_text="Upload")
    assert upload_link.is_visible()
    with page.expect_navigation():
        upload_link.click()
    assert page.url == site.url + "/upload"
    # Pieces of 256 kB: the bar moves several times on the way, as a big file's would.
    page.evaluate("document.getElementById('upload-form').dataset.chunkBytes = 262144")
    throttle(context, page, 1_000_000)  # about two seconds for the clip: time to show a speed
    record_upload_progress(page)
    caption = "First light at the bowl #skate #dawn with @nobody_here"
    page.fill("#caption", caption)
    assert page.locator("#caption-used").inner_text() == str(len(caption))

    upload_in_page(page, clips.portrait, caption)
    video_id = wait_for_ready(page)

    seen = page.evaluate("window.seen")
    uploading = [value for phase, value, _ in seen if phase.startswith("Upload")]
    assert 100 in uploading, seen
    assert len({v for v in uploading if v is not None and 0 < v < 100}) >= 2, seen
    assert any("MB/s" in detail and "left" in detail for _, _, detail in seen), seen
    assert any(phase == "Processing…" for phase, _, _ in seen), seen
    assert page.evaluate("document.getElementById('upload-progress').value") == 100
    assert page.locator("#upload-error").is_hidden()
    assert page.locator("#upload-cancel").is_hidden()

    # The video page plays it.
    with page.expect_navigation():
        page.click("#video-link")
    assert page.url == f"{site.url}/v/{video_id}"
    video = page.locator("video.watch-video")
    assert video.get_attribute("poster") is not None
    page.wait_for_function(
        "() => document.querySelector('video.watch-video').readyState >= 1"
    )  # the chosen rendition's metadata loaded
    caption_box = page.locator(".watch-info .caption")
    assert caption_box.inner_text() == caption
    assert caption_box.locator("a.tag").evaluate_all("links => links.map(a => a.pathname)") == [
        "/tag/skate",
        "/tag/dawn",
    ]
    assert page.locator("#share-link").input_value() == f"{site.url}/v/{video_id}"
    assert video_id in my_video_ids(page, site)
    assert user.handle in page.locator(".watch-info .author").inner_text()


def test_a_dropped_connection_resumes_where_the_server_stopped(
    page: Page, site: LiveServer, clips: Clips
) -> None:
    signed_in(page, site)
    page.goto(site.url + "/upload")
    page.evaluate("document.getElementById('upload-form').dataset.chunkBytes = 262144")
    record_upload_progress(page)
    patches: list[int] = []
    heads: list[str] = []
    dropped = False

    def flaky(route: Route) -> None:
        nonlocal dropped
        request = route.request
        if request.method == "HEAD":
            heads.append(request.url)
        if request.method == "PATCH":
            offset = int(request.headers["upload-offset"])
            patches.append(offset)
            if offset > 0 and not dropped:
                dropped = True
                route.abort("connectionreset")
                return
        route.continue_()

    page.route("**/api/v1/uploads/*", flaky)
    upload_in_page(page, clips.portrait, "It came back")
    video_id = wait_for_ready(page)

    assert dropped and heads, patches
    phases = [phase for phase, _, _ in page.evaluate("window.seen")]
    assert any(p.startswith("Connection lost. Trying again in") for p in phases), phases
    # The piece that failed is sent again from the offset HEAD gave back; no byte twice.
    failed = next(o for o in patches if o > 0)
    assert patches.count(failed) == 2, patches
    assert patches == sorted(patches), patches
    assert video_id in my_video_ids(page, site)


def test_a_file_that_is_not_a_video_is_refused_readably(
    page: Page, site: LiveServer, clips: Clips, tmp_path: Path
) -> None:
    signed_in(page, site)
    page.goto(site.url + "/upload")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))

    # Checked in the page before anything is sent: too big, not a video at all. The limit is
    # the server's; the page is told a smaller one than 500 MB to be handed a file over it.
    form = page.locator("#upload-form")
    assert form.get_attribute("data-max-bytes") == str(site.platform.settings.max_upload_bytes)
    assert "up to 500 MB" in page.locator("#file-help").inner_text()
    form.evaluate(f"form => form.dataset.maxBytes = {PAGE_LIMIT}")
    page.set_input_files(
        "#file",
        files=FilePayload(
            name="long.mp4", mimeType="video/mp4", buffer=b"\0" * (PAGE_LIMIT + 1_500_000)
        ),
    )
    error = page.locator("#upload-error")
    assert error.inner_text() == (
        "This file is 5.5 MB; videos can be at most 4.0 MB. "
        "Trim it or export it at a lower quality, then try again."
    )
    page.set_input_files(
        "#file", files=FilePayload(name="cat.png", mimeType="image/png", buffer=b"\x89PNG....")
    )
    assert "This file is not a video (image/png)" in error.inner_text()
    page.click("#upload-start")
    assert "This file is not a video (image/png)" in error.inner_text()
    assert not [r for r in requests if "/api/v1/" in r]

    # Looks like a video by its name; the server reads it and says what is wrong.
    before = my_video_ids(page, site)
    upload_in_page(page, clips.garbage, "my holiday")
    error.wait_for(state="visible")
    assert error.get_attribute("role") == "alert"
    assert error.inner_text().startswith(NOT_A_VIDEO), error.inner_text()
    assert page.locator("#progress-box").is_hidden()
    assert page.locator("#upload-start").is_enabled()
    assert page.locator("#file").is_enabled()
    # Nothing is left of it: no video, no upload in progress.
    assert my_video_ids(page, site) == before
    assert any(r.startswith("POST") for r in requests)


def test_cancel_stops_the_upload_and_leaves_nothing(
    page: Page, context: BrowserContext, site: LiveServer, clips: Clips
) -> None:
    signed_in(page, site)
    page.goto(site.url + "/upload")
    page.evaluate("document.getElementById('upload-form').dataset.chunkBytes = 65536")
    throttle(context, page, 64_000)
    upload_in_page(page, clips.portrait, "never mind")
    page.wait_for_function("() => document.getElementById('upload-progress').value >= 5")
    with page.expect_response(lambda r: r.request.method == "DELETE") as response:
        page.click("#upload-cancel")
    assert response.value.status == 204
    assert page.locator("#progress-box").is_hidden()
    expect(page.locator("#toast")).to_have_text("Upload cancelled")
    assert my_video_ids(page, site) == set()


def throttle(context: BrowserContext, page: Page, bytes_per_second: int) -> None:
    cdp = context.new_cdp_session(page)
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second,
        },
    )


# ---- the feed ------------------------------------------------------------------------------


def test_the_feed_plays_the_visible_video_muted_and_a_tap_unmutes(
    page: Page, site: LiveServer, published: Published
) -> None:
    expected = feed_ids(site)  # the published videos, and any other test's public ones
    assert expected[:6] == [str(i) for i in published.video_ids]
    assert len(expected) <= 10
    page.goto(site.url + "/newest")
    reels = page.locator("#feed > article.reel[data-id]")
    assert reels.count() == 5  # a page; the rest come while scrolling

    current_time_advances(page, 0)
    video = reels.first.locator("video")
    assert video.evaluate("v => v.muted") is True
    assert video.evaluate("v => v.controls") is False
    assert video.evaluate("v => v.currentSrc").endswith(".mp4")
    sound = reels.first.locator(".reel-sound")
    assert sound.inner_text() == "Tap to unmute"
    assert not playing(page, 1)
    assert reels.nth(1).locator("video").evaluate("v => v.preload") == "auto"  # the next one
    assert reels.nth(3).locator("video").evaluate("v => v.preload") == "none"

    # A tap on the video turns the sound on, for the whole feed; it keeps playing.
    video.click()
    assert video.evaluate("v => v.muted") is False
    assert sound.inner_text() == "Mute"
    current_time_advances(page, 0)

    # Swipe: the next one plays, with sound, and the first stops.
    scroll_feed_to(page, 1)
    current_time_advances(page, 1)
    assert reels.nth(1).locator("video").evaluate("v => v.muted") is False
    assert not playing(page, 0)

    # Near the end of the page, the next page arrives.
    scroll_feed_to(page, 4)
    page.wait_for_function(
        "n => document.querySelectorAll('#feed > article.reel[data-id]').length == n",
        arg=len(expected),
    )
    ids = [reels.nth(i).get_attribute("data-id") for i in range(reels.count())]
    assert ids == expected
    current_time_advances(page, 4)
    scroll_feed_to(page, len(expected) - 1)
    current_time_advances(page, len(expected) - 1)
    end = page.locator("#feed > article.reel-end")
    assert end.count() == 1 and "You're all caught up" in end.inner_text()


def test_feed_captions_link_and_share_copies_the_link(
    page: Page, context: BrowserContext, site: LiveServer, published: Published
) -> None:
    page.goto(site.url + "/newest")
    first = page.locator("#feed > article.reel[data-id]").first
    author = published.author.handle
    assert first.locator(".reel-author a").get_attribute("href") == f"/@{author}"
    links = first.locator(".reel-caption a").evaluate_all(
        "links => links.map(a => [a.className, a.getAttribute('href'), a.textContent])"
    )
    friend = links[1][2].removeprefix("@")
    assert links == [
        ["tag", f"/tag/{published.tag}", f"#{published.tag}"],
        ["mention", f"/@{friend}", f"@{friend}"],
        ["tag", "/tag/skate", "#Skate"],
    ]

    first.locator("button.share").click()
    video_url = f"{site.url}/v/{published.video_ids[0]}"
    expect(page.locator("#toast")).to_have_text(f"Link copied: {video_url}")
    assert page.evaluate("navigator.clipboard.readText()") == video_url

    with page.expect_navigation():
        first.locator(".reel-caption a.tag").first.click()
    assert page.url == f"{site.url}/tag/{published.tag}"


def test_the_feed_without_videos_invites_the_first_upload(
    browser: Browser, session_platform_factory: Callable[..., Platform]
) -> None:
    platform = session_platform_factory(market_picker=True)
    try:
        with serving(platform) as url:
            empty = LiveServer(url, platform)
            context = new_context(browser, empty)
            try:
                page = context.new_page()
                response = page.goto(url + "/")
                assert response is not None and response.status == 200
                message = page.locator("#feed .reel-empty")
                assert "No videos yet — upload the first one" in message.inner_text()
                assert message.locator("a", has_text="Create an account").is_visible()
                signed_in(page, empty)
                page.goto(url + "/")
                with page.expect_navigation():
                    message.locator("a", has_text="Upload a video").click()
                assert page.url == url + "/upload"
            finally:
                context.close()
    finally:
        platform.close()


# ---- a video's page, hashtags, profiles -------------------------------------------------------


def test_the_video_page_has_a_share_link_and_open_graph_tags(
    page: Page, site: LiveServer, published: Published
) -> None:
    video_id = published.video_ids[0]
    response = page.goto(f"{site.url}/v/{video_id}")
    assert response is not None and response.status == 200

    def meta(prop: str) -> str | None:
        found = page.locator(f'meta[property="{prop}"]')
        return found.get_attribute("content") if found.count() else None

    assert meta("og:title") == f"@{published.author.handle} on reelm"
    assert meta("og:url") == f"{site.url}/v/{video_id}"
    assert meta("og:type") == "video.other"
    image, movie = meta("og:image"), meta("og:video")
    assert image is not None and image.startswith(f"{site.url}/media/v/{video_id}/")
    assert movie is not None and movie.endswith(".mp4")
    assert meta("og:video:type") == "video/mp4"
    poster = page.request.get(image)
    assert poster.status == 200 and poster.headers["content-type"] == "image/jpeg"
    clip = page.request.get(movie, headers={"Range": "bytes=0-99"})
    assert clip.status == 206

    assert page.locator("#share-link").input_value() == f"{site.url}/v/{video_id}"
    page.click("button[data-copy]")
    expect(page.locator("#toast")).to_have_text("Link copied")
    assert page.evaluate("navigator.clipboard.readText()") == f"{site.url}/v/{video_id}"
    page.wait_for_function("() => document.querySelector('video.watch-video').readyState >= 1")
    assert page.locator("video.watch-video").get_attribute("controls") is not None


@pytest.mark.parametrize("which", ["unknown", "not-an-id", "private-of-another"])
def test_a_video_that_is_not_there_is_a_404_page(
    page: Page, site: LiveServer, published: Published, which: str
) -> None:
    target = {
        "unknown": str(uuid.uuid4()),
        "not-an-id": "not-a-video-id",
        "private-of-another": str(published.private_id),
    }[which]
    signed_in(page, site)
    response = page.goto(f"{site.url}/v/{target}")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    assert page.locator("h1").inner_text() == "Video not found"
    assert page.locator('meta[property="og:title"]').count() == 0
    assert page.locator("video").count() == 0


def test_the_owner_sees_a_private_video_without_a_share_link(
    page: Page, site: LiveServer, published: Published
) -> None:
    log_in_in_page(page, site, published.author.handle, PASSWORD)
    response = page.goto(f"{site.url}/v/{published.private_id}")
    assert response is not None and response.status == 200
    assert page.locator('meta[property="og:title"]').count() == 0
    assert page.locator('meta[name="robots"]').get_attribute("content") == "noindex"
    assert page.locator("#share-link").count() == 0
    assert "no public share link" in page.locator(".watch-info .notice").inner_text()
    page.wait_for_function("() => document.querySelector('video.watch-video').readyState >= 1")


def test_the_profile_grid_shows_posters_and_the_owner_also_sees_private_ones(
    page: Page, site: LiveServer, published: Published
) -> None:
    author = published.author.handle
    page.goto(f"{site.url}/@{author}")
    tiles = page.locator(".videos .grid .tile")
    assert tiles.count() == 6
    first = tiles.first
    assert first.locator("a").get_attribute("href") == f"/v/{published.video_ids[0]}"
    assert (first.locator("img").get_attribute("alt") or "").startswith("Clip ")
    page.wait_for_function("() => document.querySelector('.videos .grid img').naturalWidth > 0")
    assert first.locator(".duration").inner_text() == "0:01"
    ratio = first.locator("a").evaluate("a => a.clientHeight / a.clientWidth")
    assert abs(ratio - 16 / 9) < 0.05
    assert page.locator(".videos .grid .tile-badge").count() == 0

    log_in_in_page(page, site, author, PASSWORD)
    page.goto(f"{site.url}/@{author}")
    assert tiles.count() == 7
    assert tiles.first.get_attribute("data-id") == str(published.private_id)
    assert tiles.first.locator(".tile-badge").inner_text() == "Only you"
    page.wait_for_function("() => document.querySelector('.videos .grid img').naturalWidth > 0")
    assert page.locator(".videos a", has_text="Your videos").is_visible()


def test_the_hashtag_page_is_a_grid_of_posters(
    page: Page, site: LiveServer, published: Published
) -> None:
    page.goto(f"{site.url}/tag/{published.tag.upper()}")
    assert page.locator("h1").inner_text() == f"#{published.tag}"
    links = page.locator(".grid .tile a").evaluate_all("links => links.map(a => a.pathname)")
    assert links == [f"/v/{i}" for i in published.video_ids]
    page.goto(f"{site.url}/tag/nothing{uuid.uuid4().hex[:6]}")
    assert "No public videos with #nothing" in page.locator("main").inner_text()


# ---- your videos ---------------------------------------------------------------------------


def test_your_videos_follow_processing_retry_and_delete(
    page: Page, site: LiveServer, clips: Clips
) -> None:
    user = signed_in(page, site)
    token, current = log_in(site.platform, user.handle, PASSWORD)
    data = clips.small.read_bytes()

    # An upload half sent (from a phone, say): listed with its percentage.
    with httpx.Client(base_url=site.url, timeout=30) as http:
        created = tus.create(http, token, len(data), caption="Half way #there")
        url = created.headers["Location"]
        half = len(data) // 2
        assert tus.patch(http, token, url, 0, data[:half]).status_code == 204
        page.goto(site.url + "/me/videos")
        item = page.locator(".my-video")
        assert item.count() == 1
        assert item.locator(".badge").inner_text() == f"Uploading {half * 100 // len(data)}%"
        assert item.locator("button", has_text="Cancel upload").is_visible()

        # The rest arrives: the list follows by itself, to Ready, with the poster.
        assert tus.patch(http, token, url, half, data[half:]).status_code == 204
    page.wait_for_function(
        "() => document.querySelector('.my-video .badge').textContent === 'Ready'",
        timeout=READY_TIMEOUT * 1000,
    )
    page.wait_for_function("() => document.querySelector('.my-video img').naturalWidth > 0")
    video_id = uuid.UUID(item.get_attribute("data-id") or "")

    # A failure shows its reason and a Retry button; Retry processes it again.
    with site.platform.cell(current.home_region).db.transaction() as s:
        s.execute(
            update(Video)
            .where(Video.id == video_id)
            .values(status="failed", failure="The worker was stopped during processing.")
        )
    page.reload()
    assert item.locator(".badge").inner_text() == "Failed"
    assert item.locator(".failure").inner_text() == "The worker was stopped during processing."
    item.locator("button", has_text="Retry").click()
    page.wait_for_function(
        "() => document.querySelector('.my-video .badge').textContent === 'Ready'",
        timeout=READY_TIMEOUT * 1000,
    )

    # Delete asks first; "Keep it" keeps it.
    item.locator("button", has_text="Delete").click()
    confirm = item.locator(".confirm")
    assert "Delete this video for good?" in confirm.inner_text()
    confirm.locator("button", has_text="Keep it").click()
    assert confirm.count() == 0
    assert str(video_id) in my_video_ids(page, site)

    item.locator("button", has_text="Delete").click()
    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        item.locator(".confirm button", has_text="Yes, delete").click()
    assert deleted.value.status == 204
    assert page.locator(".my-video").count() == 0
    expect(page.locator("#toast")).to_have_text("Video deleted")
    assert str(video_id) not in my_video_ids(page, site)
    response = page.goto(f"{site.url}/v/{video_id}")
    assert response is not None and response.status == 404
    page.goto(site.url + "/me/videos")
    assert "You have no videos yet" in page.locator("#my-videos").inner_text()


def test_the_feed_works_without_javascript(
    browser: Browser, site: LiveServer, published: Published
) -> None:
    context = browser.new_context(java_script_enabled=False, locale="en-US")
    try:
        page = context.new_page()
        page.goto(site.url + "/newest")
        reels = page.locator("#feed > article.reel[data-id]")
        assert reels.count() == 5
        video = reels.first.locator("video")
        assert video.get_attribute("controls") is not None  # the viewer presses play
        assert video.get_attribute("poster") is not None
        assert reels.first.locator(".reel-sound").is_hidden()
        expected = feed_ids(site)
        with page.expect_navigation():
            page.click("#feed .reel-end a:has-text('More videos')")
        assert [reels.nth(i).get_attribute("data-id") for i in range(reels.count())] == (
            expected[5:10]
        )
    finally:
        context.close()


def test_delete_works_without_javascript(browser: Browser, site: LiveServer, clips: Clips) -> None:
    context = browser.new_context(java_script_enabled=False, locale="en-US")
    try:
        page = context.new_page()
        user = signed_in(page, site)
        video_id = api_upload(site, user, clips.small, caption="No script")
        page.goto(site.url + "/me/videos")
        with page.expect_navigation():
            page.click(f".my-video[data-id='{video_id}'] button:has-text('Delete')")
        assert page.locator("h1").inner_text() == "Delete this video?"
        with page.expect_navigation():
            page.click("button:has-text('Delete for good')")
        assert page.url == site.url + "/me/videos?deleted=1"
        assert page.locator(".my-video").count() == 0
    finally:
        context.close()


# ---- editing a video -------------------------------------------------------------------------


def edit_form_values(form: Locator) -> tuple[str, str, bool, str]:
    """What an edit form shows: (caption, visibility, allow comments, the caption's counter)."""
    return (
        form.locator("textarea[name=caption]").input_value(),
        form.locator("select[name=visibility]").input_value(),
        form.locator("input[name=allow_comments]").is_checked(),
        form.locator(".counter").inner_text(),
    )


def set_caption(form: Locator, text: str) -> None:
    """Put text in the caption as a script would (no maxlength, no typing), and say so."""
    form.locator("textarea").evaluate(
        "(t, text) => { t.value = text; t.dispatchEvent(new Event('input', {bubbles: true})); }",
        text,
    )


def csp_refusals(page: Page) -> list[str]:
    """The Content-Security-Policy's complaints on this page, as they come."""
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return refused


def anonymous_feed_has(page: Page, site: LiveServer, video_id: uuid.UUID) -> bool:
    page.goto(site.url + "/newest")
    return page.locator(f"#feed > article.reel[data-id='{video_id}']").count() == 1


def test_the_owner_edits_a_video_from_its_page(
    page: Page, browser: Browser, site: LiveServer, clips: Clips
) -> None:
    refused = csp_refusals(page)
    owner = signed_in(page, site)
    video_id = api_upload(site, owner, clips.small, caption="Before the edit")
    wait_ready(site, owner, video_id)
    anonymous = new_context(browser, site)
    try:
        stranger = anonymous.new_page()
        assert anonymous_feed_has(stranger, site, video_id)
        page.goto(f"{site.url}/v/{video_id}")
        public_file = page.locator("video.watch-video source").first.get_attribute("src")
        assert public_file is not None and public_file.startswith(f"/media/v/{video_id}/")
        page.wait_for_function("() => document.querySelector('video.watch-video').readyState >= 1")

        # "Edit" opens the form with what the video has now; the counter follows the caption.
        details = page.locator(".watch-info details.edit-video")
        form = details.locator("form.edit-video-form")
        assert form.is_hidden()
        details.locator("summary", has_text="Edit").click()
        assert form.is_visible()
        assert edit_form_values(form) == ("Before the edit", "public", True, "15 / 2200")
        assert page.evaluate("document.activeElement.name") == "caption"
        form.locator("textarea").fill("Quiet now")
        assert form.locator(".counter").inner_text() == "9 / 2200"

        # Too long: said before anything is sent.
        set_caption(form, "x" * 2201)  # past the textarea's maxlength, as a script could
        assert form.locator(".counter").inner_text() == "2201 / 2200"
        assert "over" in (form.locator(".counter").get_attribute("class") or "")
        form.locator("button", has_text="Save changes").click()
        error = form.locator(".edit-error")
        expect(error).to_have_text("The caption is too long: at most 2200 characters.")
        assert error.get_attribute("role") == "alert"

        # Private, comments off: saved through the API and shown in place, without a reload.
        page.evaluate("window.notReloaded = true")
        form.locator("textarea").fill("Quiet now")
        form.locator("select").select_option("private")
        form.locator("input[name=allow_comments]").uncheck()
        with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
            form.locator("button", has_text="Save changes").click()
        assert patched.value.status == 200
        assert patched.value.json()["visibility"] == "private"
        expect(page.locator("#toast")).to_have_text("Changes saved")
        assert page.evaluate("window.notReloaded") is True
        info = page.locator(".watch-info")
        expect(info.locator(".caption")).to_have_text("Quiet now")
        assert info.locator(".watch-meta").inner_text().startswith("Only you · 0:01 · ")
        assert info.locator(".watch-meta").inner_text().endswith(" · Comments off")
        assert page.locator("#share-link").count() == 0
        assert "no public share link" in info.locator(".notice").inner_text()
        assert page.evaluate("document.activeElement.textContent") == "Edit"
        assert details.locator("form").is_hidden()  # closed again, with the new values
        details.locator("summary").click()
        assert edit_form_values(form) == ("Quiet now", "private", False, "9 / 2200")
        # The player now plays the private files; the public ones are gone.
        private_file = page.locator("video.watch-video source").first.get_attribute("src")
        assert private_file is not None and private_file != public_file
        page.wait_for_function("() => document.querySelector('video.watch-video').readyState >= 1")

        # Out of the anonymous feed at once; its page and files are not there for strangers.
        assert not anonymous_feed_has(stranger, site, video_id)
        assert str(video_id) not in feed_ids(site)
        response = stranger.goto(f"{site.url}/v/{video_id}")
        assert response is not None and response.status == 404
        assert stranger.locator("h1").inner_text() == "Video not found"
        assert stranger.request.get(site.url + public_file).status == 404

        # Public again, with a new caption and hashtag: in the feed with its link.
        tag = f"again{uuid.uuid4().hex[:6]}"
        caption = f"Back in the light #{tag}"
        form.locator("textarea").fill(caption)
        form.locator("select").select_option("public")
        form.locator("input[name=allow_comments]").check()
        with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
            form.locator("button", has_text="Save changes").click()
        assert patched.value.status == 200
        expect(info.locator(".caption")).to_have_text(caption)
        assert "Comments off" not in info.locator(".watch-meta").inner_text()
        assert page.locator("#share-link").input_value() == f"{site.url}/v/{video_id}"
        assert page.evaluate("window.notReloaded") is True

        assert anonymous_feed_has(stranger, site, video_id)
        reel = stranger.locator(f"#feed > article.reel[data-id='{video_id}']")
        assert reel.locator(".reel-caption").inner_text() == caption
        links = reel.locator(".reel-caption a").evaluate_all(
            "links => links.map(a => [a.className, a.getAttribute('href'), a.textContent])"
        )
        assert links == [["tag", f"/tag/{tag}", f"#{tag}"]]
        with stranger.expect_navigation():
            reel.locator("a.tag").click()
        tiles = stranger.locator(".grid .tile a").evaluate_all("as => as.map(a => a.pathname)")
        assert tiles == [f"/v/{video_id}"]
        response = stranger.goto(f"{site.url}/v/{video_id}")
        assert response is not None and response.status == 200
        assert stranger.locator("details.edit-video").count() == 0
    finally:
        anonymous.close()
    assert not refused  # no inline script or style: the CSP refuses nothing


def test_your_videos_edits_a_video_in_place_and_says_why_not(
    page: Page, site: LiveServer, clips: Clips
) -> None:
    owner = signed_in(page, site)
    video_id = api_upload(
        site, owner, clips.small, caption="Only mine for now", visibility="private"
    )
    wait_ready(site, owner, video_id)
    refused = csp_refusals(page)
    page.set_viewport_size({"width": PHONE["width"], "height": PHONE["height"]})
    page.goto(site.url + "/me/videos")
    page.evaluate("window.notReloaded = true")
    item = page.locator(f".my-video[data-id='{video_id}']")
    item.locator("summary", has_text="Edit").click()
    form = item.locator("form.edit-video-form")
    assert edit_form_values(form) == ("Only mine for now", "private", True, "17 / 2200")
    assert_fits(page, "/me/videos, editing")

    # The server refuses a NUL character: said in the form, nothing changed.
    set_caption(form, "Null \x00 and void")
    form.locator("select").select_option("followers")
    with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
        form.locator("button", has_text="Save changes").click()
    assert patched.value.status == 422
    error = form.locator(".edit-error")
    expect(error).to_have_text("Caption: text cannot contain NUL characters.")
    assert form.locator("textarea").is_enabled()
    saved = video_status(site, owner, video_id)
    assert (saved["caption"], saved["visibility"]) == ("Only mine for now", "private")

    # Fixed: saved, the item shows it, the rest of the list is as it was.
    form.locator("textarea").fill("For my followers #crew")
    with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
        form.locator("button", has_text="Save changes").click()
    assert patched.value.status == 200
    expect(page.locator("#toast")).to_have_text("Changes saved")
    expect(item.locator(".my-caption")).to_have_text("For my followers #crew")
    assert item.locator(".my-meta .muted").inner_text() == "Followers · 0:01"
    assert item.locator(".edit-error").count() == 1 and item.locator(".edit-error").is_hidden()
    assert item.locator("details.edit-video").get_attribute("open") is None
    assert page.evaluate("document.activeElement.textContent") == "Edit"
    assert page.evaluate("window.notReloaded") is True
    saved = video_status(site, owner, video_id)
    assert (saved["caption"], saved["visibility"], saved["allow_comments"]) == (
        "For my followers #crew",
        "followers",
        True,
    )
    assert str(video_id) not in feed_ids(site)

    # Closing the form forgets what was typed in it.
    item.locator("summary", has_text="Edit").click()
    form.locator("textarea").fill("never mind")
    item.locator("summary", has_text="Edit").click()
    item.locator("summary", has_text="Edit").click()
    assert form.locator("textarea").input_value() == "For my followers #crew"
    assert not refused


def test_only_the_owner_can_edit_a_video(
    page: Page, site: LiveServer, published: Published
) -> None:
    video_id = published.video_ids[0]
    anonymous = page.request.post(
        f"{site.url}/me/videos/{video_id}/edit", form={"caption": "mine now"}, max_redirects=0
    )
    assert anonymous.status == 303 and anonymous.headers["location"].startswith("/login")

    signed_in(page, site)  # someone else
    response = page.goto(f"{site.url}/v/{video_id}")
    assert response is not None and response.status == 200
    assert page.locator("details.edit-video").count() == 0
    assert page.locator("form.edit-video-form").count() == 0
    # No caption field: the only text fields are for a comment and a report's note.
    assert page.locator("textarea[name=caption]").count() == 0
    assert (
        page.locator("textarea").count()
        == page.locator("form.comment-form textarea, form.report-form textarea").count()
    )
    response = page.goto(f"{site.url}/me/videos/{video_id}/edit")
    assert response is not None and response.status == 404

    # A form made by hand, with a valid token of this session: refused as if there were no
    # such video, and nothing changes.
    token = page.locator(f"input[name={CSRF_FIELD}]").first.input_value()
    for target in (video_id, published.private_id):
        refused = page.request.post(
            f"{site.url}/me/videos/{target}/edit",
            form={CSRF_FIELD: token, "caption": "mine now", "visibility": "private"},
            headers={"Accept": "text/html"},  # as a browser posts it: the page, not JSON
            max_redirects=0,
        )
        assert refused.status == 404, target
        assert refused.headers["content-type"].startswith("text/html")
    assert str(video_id) in feed_ids(site)
    page.goto(f"{site.url}/v/{video_id}")
    assert page.locator(".watch-info .caption").inner_text().startswith("Clip ")
    assert page.locator("#share-link").count() == 1


def test_editing_works_without_javascript(browser: Browser, site: LiveServer, clips: Clips) -> None:
    context = browser.new_context(java_script_enabled=False, locale="en-US")
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        owner = signed_in(page, site)
        video_id = api_upload(site, owner, clips.small, caption="No script yet")
        wait_ready(site, owner, video_id)

        # From "Your videos": the <details> opens the form, the form posts, a notice says so.
        page.goto(site.url + "/me/videos")
        item = page.locator(f".my-video[data-id='{video_id}']")
        item.locator("summary", has_text="Edit").click()
        form = item.locator("form.edit-video-form")
        assert form.is_visible()
        assert edit_form_values(form) == ("No script yet", "public", True, "13 / 2200")
        tag = f"noscript{uuid.uuid4().hex[:6]}"
        form.locator("textarea").fill(f"Two lines\nand #{tag}")
        form.locator("select").select_option("followers")
        form.locator("input[name=allow_comments]").uncheck()
        with page.expect_navigation():
            form.locator("button", has_text="Save changes").click()
        assert page.url == site.url + "/me/videos?edited=1"
        assert page.locator("main .notice.edited").inner_text() == "Changes saved."
        assert item.locator(".my-meta .muted").inner_text() == "Followers · 0:01 · Comments off"
        saved = video_status(site, owner, video_id)
        assert (saved["caption"], saved["visibility"], saved["allow_comments"]) == (
            f"Two lines\nand #{tag}",  # the browser's CRLF is one line break again
            "followers",
            False,
        )
        assert str(video_id) not in feed_ids(site)

        # A mistake (too long a caption, changed on its way: the textarea stops at 2200) comes
        # back on a page of its own, with what was sent and why; nothing is changed.
        page.goto(f"{site.url}/v/{video_id}")
        details = page.locator(".watch-info details.edit-video")
        details.locator("summary").click()
        form = details.locator("form.edit-video-form")
        assert edit_form_values(form)[1:3] == ("followers", False)
        form.locator("select").select_option("public")

        def lengthen(route: Route) -> None:
            body = route.request.post_data or ""
            route.continue_(post_data=body.replace("caption=", "caption=" + "y" * 2300, 1))

        page.route("**/me/videos/*/edit", lengthen)
        with page.expect_navigation() as navigation:
            form.locator("button", has_text="Save changes").click()
        page.unroute("**/me/videos/*/edit")
        response = navigation.value
        assert response is not None and response.status == 422
        assert page.url == f"{site.url}/me/videos/{video_id}/edit"
        assert page.locator("h1").inner_text() == "Edit video"
        error = page.locator(".edit-error")
        assert error.is_visible() and error.get_attribute("role") == "alert"
        used = 2300 + len(f"Two lines\r\nand #{tag}".replace("\r\n", "\n"))
        assert error.inner_text() == (
            f"The caption is too long: at most 2200 characters (this one has {used})."
        )
        assert "Nothing was changed" in page.locator("main").inner_text()
        form = page.locator("form.edit-video-form")
        caption, visibility, comments, counter = edit_form_values(form)
        assert (len(caption), visibility, comments) == (used, "public", False)
        assert counter == f"{used} / 2200"
        assert video_status(site, owner, video_id)["visibility"] == "followers"

        # Put right on that page: back to the video's page, public, with a share link.
        form.locator("textarea").fill(f"Out in the open #{tag}")
        form.locator("input[name=allow_comments]").check()
        with page.expect_navigation():
            form.locator("button", has_text="Save changes").click()
        assert page.url == f"{site.url}/v/{video_id}?edited=1"
        assert page.locator(".watch-info .notice.edited").inner_text() == "Changes saved."
        caption_box = page.locator(".watch-info .caption")
        assert caption_box.inner_text() == f"Out in the open #{tag}"
        assert caption_box.locator("a.tag").get_attribute("href") == f"/tag/{tag}"
        assert page.locator("#share-link").input_value() == f"{site.url}/v/{video_id}"
        assert "Comments off" not in page.locator(".watch-meta").inner_text()
        assert str(video_id) in feed_ids(site)
    finally:
        context.close()


# ---- phones and screenshots ----------------------------------------------------------------


def test_video_pages_fit_a_phone_screen(
    phone: BrowserContext, site: LiveServer, published: Published
) -> None:
    page = phone.new_page()
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    signed_in(page, site)
    for path in (
        "/",
        "/upload",
        "/me/videos",
        f"/v/{published.video_ids[0]}",
        f"/tag/{published.tag}",
        f"/@{published.author.handle}",
        "/about",
    ):
        page.goto(site.url + path)
        assert_fits(page, path)
    assert not refused  # no inline script or style anywhere: the CSP refuses nothing
    # The feed fills the screen under the header: one video a screen.
    page.goto(site.url + "/")
    reel = page.locator("#feed > article.reel").first.bounding_box()
    assert reel is not None
    assert reel["width"] == PHONE["width"]
    assert reel["height"] > PHONE["height"] * 0.8


def test_screenshots_of_the_feed_and_the_upload(
    phone: BrowserContext, site: LiveServer, published: Published, clips: Clips
) -> None:
    """Always taken and checked; written to docs/screenshots only with REELM_SCREENSHOTS=1."""
    write = os.environ.get("REELM_SCREENSHOTS") == "1"
    page = phone.new_page()
    shots: dict[str, bytes] = {}

    # The README's people; this module's platform is its own, so the handles are free.
    maya = create_user(site, handle="maya.skates", display_name="Maya Skates")
    kai = create_user(site, handle="kai.rides")
    video_id = api_upload(
        site,
        maya,
        clips.sunrise,
        caption=f"Sunrise session at the bowl with @{kai.handle} #skate #wellington",
    )
    wait_ready(site, maya, video_id)
    page.goto(site.url + "/newest")
    assert page.locator("#feed > article.reel").first.get_attribute("data-id") == str(video_id)
    current_time_advances(page, 0)
    shots["feed"] = page.screenshot()

    log_in_in_page(page, site, maya.handle, PASSWORD)
    page.goto(site.url + "/upload")
    page.evaluate("document.getElementById('upload-form').dataset.chunkBytes = 131072")
    throttle(phone, page, 400_000)
    upload_in_page(page, clips.portrait, "First light at the bowl #skate #dawn")
    page.wait_for_function(
        """() => { const v = document.getElementById('upload-progress').value;
                   const detail = document.getElementById('progress-detail').textContent;
                   return v >= 35 && v < 90 && detail.includes('MB/s'); }"""
    )
    page.evaluate("document.activeElement.blur()")
    shots["upload"] = page.screenshot()
    throttle(phone, page, -1)
    wait_for_ready(page)

    for name, png in shots.items():
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert len(png) < 600_000, f"{name}.png is {len(png)} bytes"
        if write:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            (SCREENSHOTS / f"{name}.png").write_bytes(png)
