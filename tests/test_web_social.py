"""The social pages in a real browser (Chromium): For You sends watch signals and the next page
reflects them, like without a page load, comment and reply, follow a private account and get
approved from the inbox, block; and the same forms without JavaScript."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from reelm.accounts.lifecycle import update_privacy
from reelm.accounts.schemas import PrivacyUpdate
from reelm.bootstrap import Platform
from reelm.feed import signals
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest

from . import tus
from .conftest import PASSWORD, LiveServer, serving, signed_in
from .test_migration import _person
from .test_transcode import FAST_H264, ffmpeg, pattern, tone
from .test_web_browser import PHONE, assert_fits, log_in_in_page

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def world(
    session_platform_factory: Callable[..., Platform], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    platform = session_platform_factory()
    clip: Path = tmp_path_factory.mktemp("social-page-clip") / "clip.mp4"
    ffmpeg(*pattern("180x320", 2), *tone(2), *FAST_H264, "-c:a", "aac", str(clip))
    people = {
        name: _person(platform, market="FR", display_name=name)
        for name in ("Ana Cats", "Ben Cats", "Cy Surf", "Di Surf", "Private Pat")
    }
    videos: dict[str, list[Any]] = {}
    for name, (_token, user) in people.items():
        topic = "cats" if "Cats" in name else "surf" if "Surf" in name else "quiet"
        for n in range(3 if topic != "quiet" else 1):
            vid = ingest(platform, user, clip, UploadMeta(caption=f"{topic} {n} #{topic}"))
            videos.setdefault(topic, []).append(vid)
    update_privacy(platform, people["Private Pat"][1], PrivacyUpdate(private_account=True))
    tus.run_jobs(platform, "sg")
    try:
        with serving(platform) as url:
            yield {"live": LiveServer(url, platform), "people": people, "videos": videos}
    finally:
        platform.close()


def _context(browser: Browser, live: LiveServer, **options: Any) -> BrowserContext:
    context = browser.new_context(locale="en-US", viewport=PHONE, is_mobile=True, **options)
    context.set_default_timeout(15_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    return context


def _viewer(world: dict[str, Any], page: Page) -> Any:
    _token, user = _person(world["live"].platform, market="FR", display_name="Viewer")
    assert log_in_in_page(page, world["live"], user.handle, PASSWORD).status == 200
    return user


def test_for_you_sends_signals_and_the_next_page_reflects_them(
    browser: Browser, world: dict[str, Any]
) -> None:
    live = world["live"]
    context = _context(browser, live)
    try:
        page = context.new_page()
        user = _viewer(world, page)
        page.goto(live.url + "/")
        expect(page.locator(".feed-tabs a[aria-current=page]")).to_have_text("For You")
        reels = page.locator("#feed > article.reel[data-id]")
        assert reels.count() == 5
        order: list[tuple[str, Any]] = []

        def seen_request(r: Any) -> None:
            if r.url.endswith("/api/v1/signals"):
                order.append(("signals", r.post_data_json))
            elif "/feed/more" in r.url:
                order.append(("more", r.url))

        page.on("request", seen_request)
        # Watch every reel of the first page: the cat ones to the end (they loop), the others
        # for a moment only.
        ids = [reels.nth(i).get_attribute("data-id") for i in range(5)]
        cats = {str(v) for v in world["videos"]["cats"]}
        for i, vid in enumerate(ids):
            page.evaluate(
                """i => document.querySelectorAll('#feed > article.reel')[i]
                        .scrollIntoView({block: 'start'})""",
                i,
            )
            page.wait_for_function(
                "i => !document.querySelectorAll('#feed > article.reel video')[i].paused", arg=i
            )
            if vid in cats:
                page.wait_for_function(
                    """i => { const v = document.querySelectorAll('#feed > article.reel video')[i];
                              v.dataset.seen = Math.max(+(v.dataset.seen || 0), v.currentTime);
                              return v.currentTime < 0.5 && +v.dataset.seen > 1.5; }""",
                    arg=i,
                    timeout=10_000,
                    polling=50,
                )
        page.evaluate(
            "document.querySelector('#feed > article.reel-end, #feed > article.reel:last-child')"
            ".scrollIntoView({block: 'start'})"
        )
        page.wait_for_function(
            "() => document.querySelectorAll('#feed > article.reel[data-id]').length > 5"
        )
        # The next page was asked for after the signals of what had been watched went out.
        first_more = next(i for i, (kind, _) in enumerate(order) if kind == "more")
        assert any(kind == "signals" for kind, _ in order[:first_more]), order
        later = [reels.nth(i).get_attribute("data-id") for i in range(5, reels.count())]
        assert not set(later) & set(ids), "the next page repeats the first"
        # Leaving the page sends the rest; everything watched is stored in the viewer's home
        # region (read back there, decrypted).
        page.goto(live.url + "/about")
        deadline = time.monotonic() + 10
        while True:
            stored = {s.video_id: s for s in signals.history(live.platform, user)}
            if all(uuid.UUID(v) in stored for v in ids[:4]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for vid in ids[:4]:
            got = stored[uuid.UUID(vid)]
            assert got.completed == (vid in cats), (vid, got)
            assert got.skipped == (vid not in cats), (vid, got)
        assert user.handle
    finally:
        context.close()


def test_like_comment_reply_and_share_from_the_pages(
    browser: Browser, world: dict[str, Any]
) -> None:
    live = world["live"]
    context = _context(browser, live)
    try:
        page = context.new_page()
        _viewer(world, page)
        video = world["videos"]["surf"][0]
        page.goto(f"{live.url}/v/{video}")
        like = page.locator(".watch-actions button.like")
        expect(like).to_have_attribute("aria-pressed", "false")
        with page.expect_response(lambda r: r.url.endswith(f"/api/v1/videos/{video}/like")):
            like.click()
        expect(like).to_have_attribute("aria-pressed", "true")
        expect(like.locator(".n")).to_have_text("1")
        assert page.url == f"{live.url}/v/{video}"  # no page load
        page.reload()
        expect(page.locator(".watch-actions button.like")).to_have_attribute("aria-pressed", "true")

        page.fill("#comment-body", "Great wave 🌊 <b>not bold</b>")
        with page.expect_navigation():
            page.click(".comment-form button[type=submit]")
        comment = page.locator(".comment-list > li.comment").first
        expect(comment.locator(".comment-body")).to_have_text("Great wave 🌊 <b>not bold</b>")
        with page.expect_navigation():
            comment.locator("a", has_text="Reply").click()
        page.fill(".comment-form.reply textarea", "Replying to myself")
        with page.expect_navigation():
            page.click(".comment-form.reply button")
        expect(page.locator(".replies .comment-body")).to_have_text("Replying to myself")
        expect(page.locator("#comments-heading")).to_contain_text("(2)")
        # An empty comment is refused readably; nothing is posted.
        page.evaluate("document.getElementById('comment-body').removeAttribute('required')")
        page.fill("#comment-body", "   ")
        with page.expect_navigation():
            page.click(".comment-form:not(.reply) button[type=submit]")
        assert "write something first" in page.content().lower()
        page.goto(f"{live.url}/v/{video}")
        expect(page.locator("#comments-heading")).to_contain_text("(2)")
        assert_fits(page, "video page with comments")
        if os.environ.get("REELM_SCREENSHOTS") == "1":
            page.screenshot(path="docs/screenshots/comments.png", full_page=True)
        # Deleting the thread takes its reply with it.
        with page.expect_navigation():
            page.locator(".comment-list > li.comment").first.locator(
                "button", has_text="Delete"
            ).first.click()
        expect(page.locator("#comments-heading")).to_contain_text("(0)")
    finally:
        context.close()


def test_follow_a_private_account_and_get_approved_from_the_inbox(
    browser: Browser, world: dict[str, Any]
) -> None:
    live = world["live"]
    pat_token, pat = world["people"]["Private Pat"]
    fan_context = _context(browser, live)
    pat_context = _context(browser, live)
    try:
        fan_page = fan_context.new_page()
        fan = _viewer(world, fan_page)
        fan_page.goto(f"{live.url}/@{pat.handle}")
        assert "its videos are for the people it approves" in fan_page.content()
        with fan_page.expect_navigation():
            fan_page.click("button.follow")
        expect(fan_page.locator("button.follow")).to_have_text("Requested")

        pat_page = pat_context.new_page()
        assert log_in_in_page(pat_page, live, pat.handle, PASSWORD).status == 200
        pat_page.goto(live.url + "/")
        expect(pat_page.locator(".notes-link .count")).to_have_text("1")
        pat_page.click(".notes-link")
        row = pat_page.locator(".requests li", has_text=fan.handle)
        with pat_page.expect_navigation():
            row.locator("button", has_text="Approve").click()
        assert pat_page.locator(".requests").count() == 0

        fan_page.goto(f"{live.url}/@{pat.handle}")
        expect(fan_page.locator("button.follow")).to_have_text("Following")
        expect(fan_page.locator(".grid .tile")).to_have_count(1)
        expect(fan_page.locator(".follow-counts")).to_contain_text("1 follower")
        fan_page.goto(live.url + "/notifications")
        expect(fan_page.locator(".note").first).to_contain_text("accepted your follow request")
        assert_fits(fan_page, "notifications")

        # Pat blocks the fan: the profile is gone for them.
        pat_page.goto(f"{live.url}/@{fan.handle}")
        with pat_page.expect_navigation():
            pat_page.click(".block-form button")
        response = fan_page.goto(f"{live.url}/@{pat.handle}")
        assert response is not None and response.status == 404
        with httpx.Client(base_url=live.url) as http:
            headers = {"Authorization": f"Bearer {pat_token}"}
            assert http.get(f"/api/v1/users/{pat.handle}/counts").json()["followers"] == 0
            assert [p["handle"] for p in http.get("/api/v1/me/blocks", headers=headers).json()] == [
                fan.handle
            ]
    finally:
        fan_context.close()
        pat_context.close()


def test_the_forms_work_without_javascript(browser: Browser, world: dict[str, Any]) -> None:
    live = world["live"]
    context = _context(browser, live, java_script_enabled=False)
    try:
        page = context.new_page()
        _viewer(world, page)
        video = world["videos"]["cats"][1]
        page.goto(f"{live.url}/v/{video}")
        with page.expect_navigation():
            page.click(".watch-actions button.like")
        assert page.url == f"{live.url}/v/{video}"
        assert page.locator(".watch-actions button.like").get_attribute("aria-pressed") == "true"
        author = page.locator(".watch-info .author a").inner_text().removeprefix("@")
        page.goto(f"{live.url}/@{author}")
        with page.expect_navigation():
            page.click("button.follow")
        assert page.locator("button.follow").inner_text() == "Following"
        page.goto(live.url + "/following")
        reels = page.locator("#feed > article.reel[data-id]")
        assert reels.count() == 3
        assert {reels.nth(i).locator(".reel-author a").inner_text() for i in range(3)} == {
            f"@{author}"
        }
    finally:
        context.close()


def test_report_then_moderate_from_the_pages(browser: Browser, world: dict[str, Any]) -> None:
    from reelm.transparency import gateway

    live = world["live"]
    video = world["videos"]["surf"][2]
    context = _context(browser, live)
    try:
        page = context.new_page()
        _viewer(world, page)
        page.goto(f"{live.url}/v/{video}")
        page.click(".watch-info details.report summary")
        page.check(".watch-info .report-form input[value=violence]")
        page.fill(".watch-info .report-form textarea", "dangerous stunt")
        with page.expect_navigation():
            page.click(".watch-info .report-form button[type=submit]")
        expect(page.locator(".notice", has_text="your report was sent")).to_be_visible()
        assert_fits(page, "video page after a report")

        # A moderator acts from the queue; the page is refused to everyone else.
        _token, mod = _person(live.platform, market="FR", display_name="Mo Derator")
        gateway.grant(live.platform, mod.user_id, "moderator")
        response = page.goto(live.url + "/staff/moderation")
        assert response is not None and response.status == 403
        page.context.clear_cookies()
        assert log_in_in_page(page, live, mod.handle, PASSWORD).status == 200
        page.goto(live.url + "/staff/moderation")
        case = page.locator(".case", has_text="Violence or dangerous acts")
        expect(case).to_contain_text("1 report")
        case.locator("input[name=market]").fill("de")
        with page.expect_navigation():
            case.locator("button[value=restrict]").click()
        expect(page.locator(".notice")).to_contain_text("video withheld in DE")
        expect(page.locator(".case", has_text="Violence or dangerous acts")).to_have_count(0)
        assert_fits(page, "moderation queue")
    finally:
        context.close()
    german = _context(browser, live, extra_http_headers={"CF-IPCountry": "DE"})
    try:
        response = german.new_page().goto(f"{live.url}/v/{video}")
        assert response is not None and response.status == 451
    finally:
        german.close()


def test_an_under_16s_settings_and_profile_say_what_is_locked(
    browser: Browser, world: dict[str, Any]
) -> None:
    """Issue #12: a 14-year-old's settings showed "Suggest your account" on and comments from
    "Everyone", and strangers could ask to follow them."""
    live = world["live"]
    born = date.today().replace(day=1) - timedelta(days=round(14.5 * 365.25))
    _token, teen = signed_in(live.platform, "teen", "FR", born=born)
    context = _context(browser, live)
    try:
        page = context.new_page()
        assert log_in_in_page(page, live, teen.handle, PASSWORD).status == 200
        page.goto(live.url + "/settings")
        expect(page.locator("#teen-rules")).to_contain_text("never everyone")
        comments = page.locator("select[name=comments]")
        assert comments.input_value() == "followers"
        assert comments.locator("option[value=everyone]").is_disabled()
        suggest = page.locator("input[name=suggest_to_others]")
        assert suggest.is_disabled() and not suggest.is_checked()
        comments.select_option("no_one")
        with page.expect_navigation():
            page.click("form[action='/settings/privacy'] button[type=submit]")
        assert page.url.endswith("/settings?saved=privacy")
        assert page.locator("select[name=comments]").input_value() == "no_one"
        assert page.locator("p.error").count() == 0
    finally:
        context.close()
    context = _context(browser, live)
    try:
        page = context.new_page()
        _viewer(world, page)
        page.goto(f"{live.url}/@{teen.handle}")
        expect(page.locator(".follow-refused")).to_contain_text("only by people they follow")
        assert page.locator("button.follow").count() == 0
    finally:
        context.close()
