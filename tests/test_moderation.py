"""Reports and moderation through the real API: reports stay in the reporter's home region and
count once; moderators see a queue without reporters; removal, withholding in a market (451),
suspension and reinstatement take effect everywhere and land in the public transparency log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from reelm.accounts.service import CurrentUser
from reelm.app import create_app
from reelm.media.models import Video
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest
from reelm.residency.scan import scan
from reelm.social.models import FiledReport, ReportCase
from reelm.transparency import gateway
from reelm.transparency.models import LogEntry

from . import tus
from .conftest import _factory, log_names, signed_in
from .test_transcode import FAST_H264, ffmpeg, pattern, tone


@pytest.fixture(scope="module")
def site(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    make = _factory(admin_url, tmp_path_factory)
    platform = next(make)()
    clip = tmp_path_factory.mktemp("moderation-clip") / "clip.mp4"
    ffmpeg(*pattern("180x320", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(clip))
    tokens: dict[str, str] = {}

    def person(market: str = "FR") -> CurrentUser:
        token, user = signed_in(platform, "md", market)
        tokens[user.handle] = token
        return user

    creator = person()
    videos = [
        ingest(platform, creator, clip, UploadMeta(caption=f"clip {n} #moderated"))
        for n in range(3)
    ]
    tus.run_jobs(platform, "sg")
    moderator = person("US")
    gateway.grant(platform, moderator.user_id, "moderator")
    with TestClient(create_app(platform), base_url="https://testserver") as http:
        yield {
            "platform": platform,
            "http": http,
            "person": person,
            "tokens": tokens,
            "creator": creator,
            "videos": videos,
            "moderator": moderator,
        }
    next(make, None)


def _as(site: dict[str, Any], user: CurrentUser, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {site['tokens'][user.handle]}", **extra}


def _problem(response: Any, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["type"].endswith(f"/problems/{slug}")


def _log_kinds(site: dict[str, Any], region: str, subject: str | set[str]) -> list[str]:
    cell = site["platform"].cell(region)
    cell.log.integrate()
    names = [subject] if isinstance(subject, str) else list(subject)
    with cell.db.transaction() as s:
        return list(s.scalars(select(LogEntry.kind).where(LogEntry.subject.in_(names))))


def test_reports_count_once_and_name_no_reporter(site: dict[str, Any]) -> None:
    http, person, platform = site["http"], site["person"], site["platform"]
    video = site["videos"][0]
    reporters = [person("US"), person("US"), person("FR")]
    body = {"target": "video", "id": str(video), "reason": "spam", "note": "same link 40 times"}
    for user in reporters:
        r = http.post("/api/v1/reports", json=body, headers=_as(site, user))
        assert r.status_code == 201 and r.json() == {"counted": True}, r.text
    again = http.post("/api/v1/reports", json=body, headers=_as(site, reporters[0]))
    assert again.json() == {"counted": False}
    with platform.catalog.transaction() as c:
        case = c.scalar(select(ReportCase).where(ReportCase.target_id == str(video)))
        assert case is not None and case.count == 3 and case.reason == "spam"
    # Each reporter's record is in their own home region, encrypted.
    with platform.cell("us").db.transaction() as s:
        mine = list(
            s.scalars(select(FiledReport).where(FiledReport.user_id == reporters[0].user_id))
        )
    assert len(mine) == 1 and b"same link" not in bytes(mine[0].note_ct or b"")
    with platform.cell("sg").db.transaction() as s:
        count = s.scalar(
            select(func.count())
            .select_from(FiledReport)
            .where(FiledReport.user_id == reporters[0].user_id)
        )
    assert count == 0
    report = scan(platform)
    assert report.clean, [f.describe() for f in report.findings]

    # Bad reports are refused clearly and count nothing.
    for bad, status in [
        ({**body, "reason": "boring"}, 422),
        ({**body, "target": "planet"}, 422),
        ({**body, "id": "not-an-id"}, 404),
        ({**body, "id": str(uuid.uuid4())}, 404),
        ({**body, "note": "x" * 501}, 422),
        ({**body, "note": "a\x00b"}, 422),
        ({**body, "extra": 1}, 422),
    ]:
        r = http.post("/api/v1/reports", json=bad, headers=_as(site, reporters[0]))
        assert r.status_code == status, (bad, r.text)
    _problem(http.post("/api/v1/reports", json=body), 401, "not-authenticated")
    own = http.post("/api/v1/reports", json=body, headers=_as(site, site["creator"]))
    _problem(own, 403, "forbidden")
    assert next(r["code"] for r in http.get("/api/v1/reports/reasons").json()) == "spam"


def test_only_moderators_see_the_queue_and_act(site: dict[str, Any]) -> None:
    http, person = site["http"], site["person"]
    someone = person()
    _problem(
        http.get("/api/v1/staff/moderation/queue", headers=_as(site, someone)), 403, "not-staff"
    )
    decision = {
        "target": "video",
        "id": str(site["videos"][0]),
        "action": "remove",
        "reason": "spam",
    }
    _problem(
        http.post("/api/v1/staff/moderation/actions", json=decision, headers=_as(site, someone)),
        403,
        "not-staff",
    )
    http.post(
        "/api/v1/reports",
        json={"target": "video", "id": str(site["videos"][1]), "reason": "violence"},
        headers=_as(site, someone),
    )
    queue = http.get("/api/v1/staff/moderation/queue", headers=_as(site, site["moderator"])).json()
    assert queue, "the queue is empty"
    assert queue[0]["count"] >= queue[-1]["count"]
    assert {"target", "target_id", "reason", "count", "summary", "owner_handle"} <= set(queue[0])
    assert not any("reporter" in key for key in queue[0])


def test_withheld_in_one_market_is_451_there_only(site: dict[str, Any]) -> None:
    http, person, platform = site["http"], site["person"], site["platform"]
    video = site["videos"][1]
    decision = {
        "target": "video",
        "id": str(video),
        "action": "restrict",
        "reason": "hate",
        "market": "DE",
    }
    mod = _as(site, site["moderator"])
    no_market = {k: v for k, v in decision.items() if k != "market"}
    _problem(
        http.post("/api/v1/staff/moderation/actions", json=no_market, headers=mod),
        422,
        "invalid-input",
    )
    r = http.post("/api/v1/staff/moderation/actions", json=decision, headers=mod)
    assert r.json() == {"done": "video withheld in DE"}
    german, french = person("DE"), person("FR")
    _problem(
        http.get(f"/api/v1/videos/{video}", headers=_as(site, german)),
        451,
        "unavailable-for-legal-reasons",
    )
    _problem(
        http.get(f"/api/v1/videos/{video}", headers={"CF-IPCountry": "DE"}),
        451,
        "unavailable-for-legal-reasons",
    )
    assert http.get(f"/api/v1/videos/{video}", headers=_as(site, french)).status_code == 200
    listed = http.get("/api/v1/hashtags/moderated/videos", headers=_as(site, german)).json()[
        "items"
    ]
    assert str(video) not in [v["id"] for v in listed]
    page = http.get(f"/v/{video}", headers={**_as(site, german), "Accept": "text/html"})
    assert page.status_code == 451
    assert "moderation.restricted" in _log_kinds(site, "sg", str(video))
    # The entry names the video, not its owner (whose handle is public beside it).
    with platform.cell("sg").db.transaction() as s:
        logged = s.scalars(select(LogEntry.entry).where(LogEntry.subject == str(video))).all()
    assert logged and all(
        b"owner" not in e and str(site["creator"].user_id).encode() not in e for e in logged
    )
    # Made available again.
    back = {**decision, "action": "reinstate"}
    assert http.post("/api/v1/staff/moderation/actions", json=back, headers=mod).status_code == 200
    assert http.get(f"/api/v1/videos/{video}", headers=_as(site, german)).status_code == 200
    assert platform


def test_a_removed_video_is_gone_and_never_public_again(site: dict[str, Any]) -> None:
    http, platform = site["http"], site["platform"]
    creator, video = site["creator"], site["videos"][0]
    before = http.get(f"/api/v1/videos/{video}").json()
    poster = before["poster_url"]
    assert http.get(poster).status_code == 200
    decision = {"target": "video", "id": str(video), "action": "remove", "reason": "spam"}
    r = http.post(
        "/api/v1/staff/moderation/actions", json=decision, headers=_as(site, site["moderator"])
    )
    assert r.json() == {"done": "video removed"}
    _problem(http.get(f"/api/v1/videos/{video}"), 404, "not-found")
    assert http.get(poster).status_code == 404
    own = http.get(f"/api/v1/videos/{video}", headers=_as(site, creator)).json()
    assert own["removed"] == "spam"
    # The owner cannot publish it again.
    r = http.patch(
        f"/api/v1/videos/{video}", json={"visibility": "public"}, headers=_as(site, creator)
    )
    assert r.status_code == 200
    _problem(http.get(f"/api/v1/videos/{video}"), 404, "not-found")
    with platform.cell("sg").db.transaction() as s:
        assert s.get(Video, video).removed == "spam"  # type: ignore[union-attr]
    assert "moderation.removed" in _log_kinds(site, "sg", str(video))
    with platform.catalog.transaction() as c:
        case = c.scalar(select(ReportCase).where(ReportCase.target_id == str(video)))
    assert case is not None and case.state == "resolved" and case.resolution == "remove"


def test_comment_removal_and_suspension(site: dict[str, Any]) -> None:
    http, person, platform = site["http"], site["person"], site["platform"]
    video = site["videos"][2]
    troll, fan = person(), person()
    r = http.post(
        f"/api/v1/videos/{video}/comments", json={"body": "nasty"}, headers=_as(site, troll)
    )
    comment = r.json()["id"]
    mod = _as(site, site["moderator"])
    decision = {"target": "comment", "id": comment, "action": "remove", "reason": "harassment"}
    bad = {**decision, "action": "suspend"}
    _problem(
        http.post("/api/v1/staff/moderation/actions", json=bad, headers=mod), 422, "invalid-input"
    )
    assert http.post("/api/v1/staff/moderation/actions", json=decision, headers=mod).json() == {
        "done": "comment removed"
    }
    assert http.get(f"/api/v1/videos/{video}/comments").json()["items"] == []
    assert http.get(f"/api/v1/videos/{video}").json()["stats"]["comments"] == 0

    # Suspending the creator hides their profile and videos, and stops them acting.
    creator = site["creator"]
    suspend = {"target": "user", "id": creator.handle, "action": "suspend", "reason": "spam"}
    assert http.post("/api/v1/staff/moderation/actions", json=suspend, headers=mod).json() == {
        "done": "account suspended"
    }
    _problem(http.get(f"/api/v1/videos/{video}", headers=_as(site, fan)), 404, "not-found")
    feed = http.get("/api/v1/hashtags/moderated/videos", headers=_as(site, fan)).json()["items"]
    assert feed == []
    assert http.get(f"/api/v1/users/{creator.handle}/counts").status_code == 404
    _problem(
        http.post(f"/api/v1/users/{fan.handle}/follow", headers=_as(site, creator)),
        403,
        "account-suspended",
    )
    assert http.get(f"/api/v1/videos/{video}", headers=_as(site, creator)).status_code == 200
    assert "moderation.suspended" in _log_kinds(site, "sg", log_names(platform, creator)["sg"])
    assert _log_kinds(site, "sg", str(creator.user_id)) == []
    back = {**suspend, "action": "reinstate", "id": str(creator.user_id)}
    assert http.post("/api/v1/staff/moderation/actions", json=back, headers=mod).json() == {
        "done": "account reinstated"
    }
    assert http.get(f"/api/v1/videos/{video}", headers=_as(site, fan)).status_code == 200
    r = http.post(f"/api/v1/users/{fan.handle}/follow", headers=_as(site, creator))
    assert r.status_code == 200
