"""Protected media plays for the session it was signed for, while that viewer may watch it:
a real server (uvicorn), real PostgreSQL, a video made by the real pipeline, a real Chromium
for the player's renewal of its URLs (reelm.media.serving, api/videos.protected_file)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import pytest
from playwright.sync_api import Browser, Route

from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.media import serving as media_serving
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest
from reelm.social import graph

from . import tus
from .conftest import PASSWORD, LiveServer, serving, signed_in
from .test_transcode import FAST_H264, ffmpeg, pattern, tone
from .test_web_browser import log_in_in_page


@dataclass
class Person:
    token: str
    user: CurrentUser

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Shared:
    """A creator's followers-only video and one approved follower."""

    live: LiveServer
    creator: Person
    follower: Person
    video_id: uuid.UUID

    def person(self, market: str = "US") -> Person:
        return Person(*signed_in(self.live.platform, "ma", market))

    def follower_of(self) -> Person:
        """A new approved follower of the creator."""
        fan = self.person()
        assert graph.follow(self.live.platform, fan.user, self.creator.user.handle) == "active"
        return fan


@pytest.fixture(scope="module")
def shared(
    session_platform_factory: Callable[..., Platform], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    platform = session_platform_factory()
    clip = tmp_path_factory.mktemp("access-clip") / "clip.mp4"
    ffmpeg(*pattern("360x640", 2), *tone(2), *FAST_H264, "-c:a", "aac", str(clip))
    creator = Person(*signed_in(platform, "mc", "US"))
    meta = UploadMeta(caption="for my followers", visibility="followers")
    video_id = ingest(platform, creator.user, clip, meta)
    tus.run_jobs(platform, "us")
    with serving(platform) as url:
        live = LiveServer(url, platform)
        follower = Person(*signed_in(platform, "mf", "US"))
        assert graph.follow(platform, follower.user, creator.user.handle) == "active"
        yield Shared(live, creator, follower, video_id)


def sources_for(http: httpx.Client, shared: Shared, viewer: Person) -> list[str]:
    """The file URLs the API gives this viewer for the followers-only video."""
    response = http.get(
        f"/api/v1/videos/{shared.video_id}",
        params={"by": shared.creator.user.handle},
        headers=viewer.auth,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    urls = [s["url"] for s in body["sources"]]
    assert urls and all(u.startswith(f"/media/p/us/{shared.video_id}/") for u in urls)
    return urls


def test_a_protected_url_plays_only_for_the_session_it_was_made_for(shared: Shared) -> None:
    with httpx.Client(base_url=shared.live.url, timeout=30) as http:
        url = sources_for(http, shared, shared.follower)[0]
        first = {"Range": "bytes=0-99"}
        mine = http.get(url, headers={**shared.follower.auth, **first})
        assert mine.status_code == 206 and mine.content[4:8] == b"ftyp"

        # The same URL in anyone else's hands opens nothing: no session, another person (a
        # follower too), or the follower's own second session (a URL copied to another device).
        stranger = shared.person()
        other_fan = shared.follower_of()
        second_session = Person(*signed_in_again(shared))
        for headers in ({}, stranger.auth, other_fan.auth, second_session.auth):
            refused = http.get(url, headers={**headers, **first})
            assert refused.status_code == 403, refused.text
            assert refused.json()["type"].endswith("/link-expired")
            assert b"ftyp" not in refused.content
        # Browsers ask again before reusing what they kept, so the checks run on every play.
        assert mine.headers["cache-control"] == "private, no-cache"
        # The cookie of a page works as the bearer token does.
        cookie = {"Cookie": f"reelm_session={shared.follower.token}"}
        assert http.get(url, headers={**cookie, **first}).status_code == 206

        # Each session gets URLs of its own; the owner's play for the owner.
        assert sources_for(http, shared, other_fan)[0] != url
        owner_url = sources_for(http, shared, shared.creator)[0]
        assert http.get(owner_url, headers={**shared.creator.auth, **first}).status_code == 206


def signed_in_again(shared: Shared) -> tuple[str, CurrentUser]:
    from reelm.accounts.service import log_in

    return log_in(shared.live.platform, shared.follower.user.handle, PASSWORD)


def test_a_protected_url_lives_five_minutes(shared: Shared) -> None:
    with httpx.Client(base_url=shared.live.url, timeout=30) as http:
        for url in sources_for(http, shared, shared.follower):
            expires = int(parse_qs(urlsplit(url).query)["expires"][0])
            left = expires - time.time()
            limit = media_serving.PRIVATE_URL_SECONDS + media_serving.URL_ROUNDING
            assert media_serving.PRIVATE_URL_SECONDS - 5 <= left <= limit <= 6 * 60


def test_a_removed_follower_stops_getting_bytes_within_seconds(shared: Shared) -> None:
    """A player keeps asking for ranges while the creator removes the follower: the answers
    turn to 404 within the decision window, long before the URL expires."""
    fan = shared.follower_of()
    stop = threading.Event()
    answers: list[tuple[float, int]] = []  # (monotonic time the request was sent, status)

    with httpx.Client(base_url=shared.live.url, timeout=30) as http:
        url = sources_for(http, shared, fan)[0]

        def player() -> None:
            with httpx.Client(base_url=shared.live.url, timeout=30) as own:
                n = 0
                while not stop.is_set():
                    start = n * 1000 % 50_000
                    sent = time.monotonic()
                    response = own.get(
                        url, headers={**fan.auth, "Range": f"bytes={start}-{start + 999}"}
                    )
                    answers.append((sent, response.status_code))
                    n += 1

        players = [threading.Thread(target=player) for _ in range(3)]
        for thread in players:
            thread.start()
        time.sleep(1.0)
        removal = http.delete(
            f"/api/v1/me/followers/{fan.user.handle}", headers=shared.creator.auth
        )
        assert removal.status_code == 204, removal.text
        removed = time.monotonic()
        time.sleep(media_serving.DECISION_SECONDS + 2.0)
        stop.set()
        for thread in players:
            thread.join()

    before = [status for sent, status in answers if sent < removed - 0.5]
    assert before and set(before) == {206}
    served_after = [sent - removed for sent, status in answers if sent > removed and status == 206]
    window = max(served_after, default=0.0)
    # Requests sent more than the decision window after the removal are all refused.
    late = [status for sent, status in answers if sent > removed + media_serving.DECISION_SECONDS]
    assert late and set(late) == {404}, (window, sorted(set(late)))
    assert window <= media_serving.DECISION_SECONDS
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert expires - time.time() > 60  # refused by the rules, not by the URL's expiry
    print(f"last bytes {window:.2f} s after the removal; {len(answers)} range requests")


@pytest.mark.browser
def test_the_player_renews_an_expired_url_and_plays(
    shared: Shared, browser: Browser, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The watch page sat until its URLs expired: the player's first request is refused, it
    asks the API for fresh URLs and plays."""
    live = shared.live
    fan = shared.follower_of()
    monkeypatch.setattr(media_serving, "PRIVATE_URL_SECONDS", 1)
    monkeypatch.setattr(media_serving, "URL_ROUNDING", 1)
    held: list[Route] = []
    statuses: list[int] = []

    def hold_first(route: Route) -> None:
        if not held:
            held.append(route)  # answered once the URL it asks for has expired
        else:
            route.continue_()

    context = browser.new_context(locale="en-US")
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        log_in_in_page(page, live, fan.user.handle, PASSWORD)
        page.on(
            "response",
            lambda r: statuses.append(r.status) if "/media/p/" in r.url else None,
        )
        page.route(lambda url: "/media/p/" in url and ".mp4?" in url, hold_first)
        page.goto(
            f"{live.url}/v/{shared.video_id}?by={shared.creator.user.handle}",
            wait_until="domcontentloaded",
        )
        video = page.locator("video.watch-video")
        first = video.evaluate("v => v.querySelector('source').src")
        page.wait_for_timeout(2500)  # the page's URLs are past their life now
        assert held, "the player did not ask for its file"
        monkeypatch.setattr(media_serving, "PRIVATE_URL_SECONDS", 300)
        held[0].continue_()
        page.wait_for_function(
            "() => { const v = document.querySelector('video.watch-video');"
            " return v && v.readyState >= 1 && v.currentSrc.includes('/media/p/'); }"
        )
        assert 403 in statuses
        renewed = video.evaluate("v => v.currentSrc")
        assert urlsplit(renewed).path == urlsplit(first).path and renewed != first
        video.evaluate("v => { v.muted = true; return v.play(); }")
        page.wait_for_function("() => document.querySelector('video.watch-video').currentTime > 0")
    finally:
        context.close()
