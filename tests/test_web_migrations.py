"""The public page of region migrations in a real browser (Chromium): progress while one runs,
then the signed report, downloaded and verified. In a module of its own, late in the run: the
Playwright session must not start before the tests that run asyncio in the main thread.

Set ``REELM_SCREENSHOTS=1`` to rewrite docs/screenshots/migrations.png (in the README)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reelm.bootstrap import Platform
from reelm.migration import engine
from reelm.migration.report import platform_fetcher, platform_keys, verify_report

from .test_migration import MARKETS, _movers
from .test_transcode import FAST_H264, ffmpeg, pattern, tone

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("migration-page-clip") / "clip.mp4"
    ffmpeg(*pattern("360x640", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(path))
    return path


@pytest.mark.browser
def test_the_public_migrations_page_shows_progress_and_the_report(
    platform_factory: Callable[..., Platform], clip: Path, browser: Any, tmp_path: Path
) -> None:
    from .conftest import serving

    platform = platform_factory(markets=MARKETS)
    _movers(platform, clip, 2)
    migration_id = engine.start(platform, engine.make_plan(platform, "us", market="US"))
    with serving(platform) as url:
        page = browser.new_page()
        page.goto(f"{url}/transparency/migrations")
        row = page.locator("table.report tbody tr").first
        assert "US" in row.inner_text() and "running" in row.inner_text()
        assert row.locator("progress").get_attribute("value") == "0"
        engine.Runner(platform, migration_id).run()
        page.goto(f"{url}/transparency/migrations")
        row = page.locator("table.report tbody tr").first
        assert "done" in row.inner_text() and "2 of 2 users" in row.inner_text()
        assert row.locator("progress").get_attribute("value") == "2"
        page.set_viewport_size({"width": 900, "height": 420})
        shot = page.screenshot(full_page=True)
        assert shot.startswith(b"\x89PNG")
        if os.environ.get("REELM_SCREENSHOTS") == "1":
            (SCREENSHOTS / "migrations.png").write_bytes(shot)
        with page.expect_download() as download:
            row.get_by_role("link", name="report").click()
        saved = tmp_path / "report.json"
        download.value.save_as(saved)
        report = json.loads(saved.read_text())
        assert verify_report(report, platform_keys(platform), platform_fetcher(platform)) == []
        page.close()
