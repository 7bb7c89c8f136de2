"""A user migrated back to a region they lived in before (sg -> us -> sg) while the app keeps
serving them: the serving process had their first sg key cached, that key was destroyed when
they left, and a new one was made when they came back. Nothing may be sealed under the dead key:
every request answers, every acknowledged write is readable after a restart, and the checks
(`residency-scan`, the migration's own post-switch check) decrypt what was written after the
switch. Migrations run as separate `reelm migrate` processes, as an operator runs them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from reelm.accounts.models import DirectoryEntry
from reelm.accounts.service import authenticate
from reelm.app import create_app
from reelm.bootstrap import Platform, build
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest
from reelm.residency import readable
from reelm.residency.scan import scan

from .conftest import PASSWORD
from .test_migration import MARKETS, _person, _reelm, _run_jobs, _state_of

ROUNDS_AFTER = 4


def _migrate(platform: Platform, listed: Path, to: str, report: Path) -> None:
    run = _reelm(platform, "migrate", "--users", str(listed), "--to", to, "--report", str(report))
    _, err = run.communicate(timeout=240)
    assert run.returncode == 0, err.decode()[-2000:]


class Writer:
    """Users who keep liking, unliking, watching and re-captioning while they move; it keeps
    what each acknowledged write left (the last like state and caption per user)."""

    def __init__(
        self, http: TestClient, people: list[dict[str, Any]], liked_video: uuid.UUID
    ) -> None:
        self.http, self.people, self.video = http, people, liked_video
        self.statuses: list[int] = []
        self.rounds = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop)

    def round(self) -> None:
        self.rounds += 1
        for p in self.people:
            auth = {"Authorization": f"Bearer {p['token']}"}
            if self.rounds % 2:
                r = self.http.post(f"/api/v1/videos/{self.video}/like", headers=auth)
            else:
                r = self.http.delete(f"/api/v1/videos/{self.video}/like", headers=auth)
            self.statuses.append(r.status_code)
            if r.status_code == 200:
                p["liked"] = r.json()["liked"]
            event = {"video_id": str(self.video), "watched_seconds": 0.5 + self.rounds}
            r = self.http.post("/api/v1/signals", json={"events": [event]}, headers=auth)
            self.statuses.append(r.status_code)
            if r.status_code in (200, 202) and r.json()["accepted"] == 1:
                p["signals"] += 1
            caption = f"round {self.rounds} ✓"
            r = self.http.patch(
                f"/api/v1/videos/{p['video']}", json={"caption": caption}, headers=auth
            )
            self.statuses.append(r.status_code)
            if r.status_code == 200:
                p["caption"] = caption

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.round()


def test_a_round_trip_migration_never_hands_out_a_destroyed_key(
    platform_factory: Callable[..., Platform], tmp_path: Path
) -> None:
    from .test_migration import FAST_H264, ffmpeg, pattern, tone

    clip = tmp_path / "clip.mp4"
    ffmpeg(*pattern("360x640", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(clip))
    platform = platform_factory(markets=MARKETS)
    _, creator = _person(platform)
    liked_video = ingest(platform, creator, clip, UploadMeta(caption="#trip", visibility="public"))
    people: list[dict[str, Any]] = []
    for _ in range(3):
        token, user = _person(platform)
        video = ingest(platform, user, clip, UploadMeta(caption="mine", visibility="private"))
        people.append({"token": token, "user": user, "video": video, "liked": False, "signals": 0})
    _run_jobs(platform, "sg")
    ids = [p["user"].user_id for p in people]
    first_keys = {u: platform.cell("sg").keys.key_id(u) for u in ids}
    listed = tmp_path / "users.txt"
    listed.write_text("".join(f"{u}\n" for u in ids))

    with TestClient(create_app(platform), base_url="https://testserver") as http:
        writer = Writer(http, people, liked_video)
        writer.round()  # the serving process now holds each user's first sg key
        writer.thread.start()
        try:
            _migrate(platform, listed, "us", tmp_path / "there.json")
            _migrate(platform, listed, "sg", tmp_path / "back.json")
        finally:
            writer.stop.set()
            writer.thread.join()
        assert writer.rounds > 2  # users wrote while they moved, there and back
        for _ in range(ROUNDS_AFTER):
            writer.round()
        assert set(writer.statuses) <= {200, 202, 204}, writer.statuses
        for p in people:
            auth = {"Authorization": f"Bearer {p['token']}"}
            assert http.get("/api/v1/me", headers=auth).status_code == 200
            handle = authenticate(platform, p["token"]).handle
            r = http.post("/api/v1/session", json={"identifier": handle, "password": PASSWORD})
            assert r.status_code == 201, r.text

    with platform.catalog.transaction() as c:
        homes = set(c.scalars(select(DirectoryEntry.home_region).where(
            DirectoryEntry.user_id.in_(ids)
        )))  # fmt: skip
    assert homes == {"sg"}
    for u in ids:  # a new key in sg: the first one died when they left
        assert platform.cell("sg").keys.key_id(u) != first_keys[u]

    # A restarted process reads every acknowledged write with the keys the region holds now.
    restarted = build(platform.settings, upgrade=False)
    try:
        for p in people:
            state = _state_of(restarted, p["user"].user_id)
            assert state["home"] == "sg"
            assert (str(liked_video) in state["likes"]) == p["liked"]
            assert [c for v, _, _, c in state["videos"] if v == p["video"]] == [p["caption"]]
            assert len(state["signals"]) >= p["signals"] > ROUNDS_AFTER
        report = scan(restarted)
        assert report.clean, [f.describe() for f in report.findings]
        assert readable.unreadable(restarted.cell("sg"), ids) == {}
    finally:
        restarted.close()
