"""Search over real PostgreSQL (pg_trgm) with videos made by the real pipeline: accents, case,
full-width letters, CJK of any length, emoji, hashtags by prefix, people; nothing private is
found; odd input gets a clear error or an empty answer, never a 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reelm.accounts.lifecycle import request_deletion, update_privacy
from reelm.accounts.schemas import PrivacyUpdate, SignUp
from reelm.accounts.service import CurrentUser, log_in, sign_up
from reelm.app import create_app
from reelm.bootstrap import Platform
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest
from reelm.search.text import fold, like_pattern

from . import tus
from .conftest import PASSWORD, _factory, unique_handle
from .test_transcode import FAST_H264, ffmpeg, pattern, tone


def test_folding() -> None:
    assert fold("Ñandú PÉREZ") == "nandu perez"
    assert fold("Ｃａｆé") == "cafe"
    assert fold("Straße") == "strasse"
    assert fold("Ελλάδα") == "ελλαδα"
    assert fold("が") == "が" != fold("か")  # kana keep their marks
    assert fold("한국어") == "한국어"
    assert fold("surf 🌊  🌊") == "surf 🌊 🌊"
    assert like_pattern("100%_a\\b") == "%100\\%\\_a\\\\b%"


@pytest.fixture(scope="module")
def site(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    make = _factory(admin_url, tmp_path_factory)
    factory = next(make)
    platform = factory()
    clip = tmp_path_factory.mktemp("search-clip") / "clip.mp4"
    ffmpeg(*pattern("360x640", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(clip))

    def person(display_name: str, handle: str | None = None, market: str = "FR") -> CurrentUser:
        handle = handle or unique_handle("s")
        sign_up(
            platform,
            SignUp(
                handle=handle,
                display_name=display_name,
                email=f"{handle}@example.com",
                password=PASSWORD,
                birth_date=date(1990, 1, 1),
                market=market,
            ),
        )
        return log_in(platform, handle, PASSWORD)[1]

    nandu = person("Ñandú Pérez", unique_handle("nandu"))
    yamada = person("山田 花子")
    quiet = person("Quiet Café Person")
    update_privacy(platform, quiet, PrivacyUpdate(private_account=True))
    leaving = person("Leaving Café Owner")
    posts = {
        "cafe": ingest(platform, nandu, clip, UploadMeta(caption="Café con leche ☕ #Café")),
        "tokyo": ingest(platform, yamada, clip, UploadMeta(caption="東京の夜 #東京")),
        "surf": ingest(platform, nandu, clip, UploadMeta(caption="surf 🌊🌊 #beach #cafés")),
        "secret": ingest(
            platform, nandu, clip, UploadMeta(caption="secret café", visibility="private")
        ),
        "quiet": ingest(platform, quiet, clip, UploadMeta(caption="quiet café corner")),
        "leaving": ingest(platform, leaving, clip, UploadMeta(caption="last café here")),
    }
    tus.run_jobs(platform, "sg")
    request_deletion(platform, leaving)
    with TestClient(create_app(platform), base_url="https://testserver") as http:
        yield {"platform": platform, "http": http, "posts": posts, "nandu": nandu}
    next(make, None)


def _search(http: TestClient, q: str, **params: Any) -> Any:
    r = http.get("/api/v1/search", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return r.json()


def _ids(found: Any) -> set[str]:
    return {v["id"] for v in found["videos"]["items"]}


def test_accents_case_width_cjk_and_emoji_all_match(site: dict[str, Any]) -> None:
    http, posts = site["http"], site["posts"]
    cafe, tokyo, surf = (str(posts[k]) for k in ("cafe", "tokyo", "surf"))
    for q in ("cafe", "CAFÉ", "ｃａｆｅ", "Café con", "leche"):
        assert cafe in _ids(_search(http, q)), q
    assert _ids(_search(http, "東京")) == {tokyo}
    assert _ids(_search(http, "京")) == {tokyo}  # one CJK character is a search too
    assert _ids(_search(http, "🌊")) == {surf}
    assert _ids(_search(http, "☕")) == {cafe}


def test_nothing_private_or_leaving_is_found(site: dict[str, Any]) -> None:
    found = _search(site["http"], "café")
    ids = _ids(found)
    posts = site["posts"]
    assert str(posts["cafe"]) in ids
    for hidden in ("secret", "quiet", "leaving"):  # private video, private account, deleting
        assert str(posts[hidden]) not in ids, hidden
    names = {p["display_name"] for p in found["people"]}
    assert "Leaving Café Owner" not in names
    quiet = [p for p in found["people"] if p["display_name"] == "Quiet Café Person"]
    assert quiet and quiet[0]["is_private"] is True  # a private account's name is public


def test_people_and_hashtags(site: dict[str, Any]) -> None:
    http = site["http"]
    people = _search(http, "nandu perez")["people"]
    assert people[0]["display_name"] == "Ñandú Pérez" and people[0]["url"].startswith("/@")
    assert [p["display_name"] for p in _search(http, "山田")["people"]] == ["山田 花子"]
    tags = {h["tag"]: h["videos"] for h in _search(http, "#caf")["hashtags"]}
    assert tags == {"café": 1, "cafés": 1}
    assert [h["tag"] for h in _search(http, "#東")["hashtags"]] == ["東京"]


def test_pages_of_videos(site: dict[str, Any]) -> None:
    http = site["http"]
    first = _search(http, "caf", limit=1)
    assert len(first["videos"]["items"]) == 1 and first["videos"]["next_cursor"]
    second = _search(http, "caf", limit=1, cursor=first["videos"]["next_cursor"])
    assert second["people"] == [] and second["hashtags"] == []
    assert _ids(second) and _ids(second) != _ids(first)


@pytest.mark.parametrize(
    "q", ["%", "_", "\\", "' OR 1=1 --", "'; DROP TABLE profiles; --", "a" * 100, "‮evil", "🌊" * 50]
)
def test_odd_queries_are_answered_plainly(site: dict[str, Any], q: str) -> None:
    found = _search(site["http"], q)
    assert _ids(found) == set()  # nothing matches: wildcards are taken literally


@pytest.mark.parametrize(
    ("q", "status"), [("", 422), ("   ", 422), ("a" * 101, 422), ("a\x00b", 422), ("\x07", 422)]
)
def test_bad_queries_get_a_problem(site: dict[str, Any], q: str, status: int) -> None:
    r = site["http"].get("/api/v1/search", params={"q": q})
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/invalid-input")


def test_the_search_page(site: dict[str, Any]) -> None:
    http = site["http"]
    html = {"Accept": "text/html"}
    empty = http.get("/search", headers=html)
    assert empty.status_code == 200 and 'name="q"' in empty.text
    found = http.get("/search", params={"q": "cafe"}, headers=html)
    assert found.status_code == 200
    assert f"/v/{site['posts']['cafe']}" in found.text and "#café" in found.text
    assert "Quiet Café Person" in found.text and "private account" in found.text
    long = http.get("/search", params={"q": "x" * 150}, headers=html)
    assert long.status_code == 422 and "limited to 100 characters" in long.text
    none = http.get("/search", params={"q": "zzzzqqq"}, headers=html)
    assert none.status_code == 200 and "No public videos match" in none.text


def test_a_profile_edit_is_searchable(site: dict[str, Any]) -> None:
    from reelm.accounts.lifecycle import update_profile
    from reelm.accounts.schemas import ProfileUpdate

    update_profile(site["platform"], site["nandu"], ProfileUpdate(bio="Fotógrafa en Córdoba"))
    people = _search(site["http"], "cordoba")["people"]
    assert [p["display_name"] for p in people] == ["Ñandú Pérez"]


def test_search_text_is_filled_for_data_older_than_search(
    platform_factory: Callable[..., Platform],
) -> None:
    """The catalog migration folds the profiles and public videos that existed before it."""
    from sqlalchemy import text

    from reelm.search.text import profile_text

    platform = platform_factory()
    handle = unique_handle("old")
    sign_up(
        platform,
        SignUp(
            handle=handle,
            display_name="Vieja Señora",
            email=f"{handle}@example.com",
            password=PASSWORD,
            birth_date=date(1950, 1, 1),
            market="FR",
        ),
    )
    with platform.catalog.transaction() as c:
        c.execute(text("UPDATE profiles SET search_text = ''"))
    from alembic import command

    from reelm.storage.migrate import alembic_config

    config = alembic_config("catalog")
    with platform.catalog.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "c0005")
        command.upgrade(config, "c0006")
    with platform.catalog.transaction() as c:
        stored = c.execute(text("SELECT search_text FROM profiles")).scalars().all()
    assert profile_text(handle, "Vieja Señora", "") in stored


def test_searches_are_rate_limited(platform_factory: Callable[..., Platform]) -> None:
    platform = platform_factory(search_rate="3/minute")
    with TestClient(create_app(platform), base_url="https://testserver") as http:
        for _ in range(3):
            assert http.get("/api/v1/search", params={"q": "x"}).status_code == 200
        r = http.get("/api/v1/search", params={"q": "x"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert r.json()["type"].endswith("/rate-limited")
        page = http.get("/search", params={"q": "x"}, headers={"Accept": "text/html"})
        assert page.status_code == 429 and "too many attempts" in page.text
