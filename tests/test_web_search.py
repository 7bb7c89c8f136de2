"""The search page in a real browser (Chromium, phone-sized): type, submit, see people,
hashtags and videos; nothing overflows the screen, even for long unbroken queries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reelm.bootstrap import Platform
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest

from . import tus
from .conftest import serving
from .test_migration import _person
from .test_transcode import FAST_H264, ffmpeg, pattern, tone
from .test_web_browser import PHONE, assert_fits

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("search-page-clip") / "clip.mp4"
    ffmpeg(*pattern("360x640", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(path))
    return path


def test_searching_from_the_page(
    platform_factory: Callable[..., Platform], clip: Path, browser: Any
) -> None:
    platform = platform_factory()
    _, author = _person(platform, market="FR", display_name="Zoë Café")
    video_id = ingest(platform, author, clip, UploadMeta(caption="Matcha 抹茶 latte #CaféDuMatin"))
    tus.run_jobs(platform, "sg")
    with serving(platform) as url:
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        page = context.new_page()
        page.goto(f"{url}/")
        page.get_by_role("link", name="Search").click()
        page.get_by_role("searchbox").fill("zoe cafe")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url("**/search?q=zoe+cafe")
        assert page.get_by_role("link", name="Zoë Café").count() == 1
        assert_fits(page, "search results")
        page.get_by_role("searchbox").fill("抹茶")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator(f'a[href="/v/{video_id}"]').count() >= 1
        assert page.get_by_role("link", name="#cafédumatin").count() == 1
        assert_fits(page, "video results")
        page.goto(f"{url}/search?q=" + "w" * 100)
        assert "No public videos match" in page.content()
        assert_fits(page, "a long query")
        context.close()
