"""Region migration on real PostgreSQL, real blob stores and real FFmpeg: a market's users move
from `sg` to `us` with their profiles, sessions, videos (public, private, still queued, an
upload half done) and pending deletions; afterwards their protected data is in `us` only,
every byte verifies, a backup of the source taken before cannot be read for them, sessions go
on working, and the signed report verifies (a tampered one does not)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from reelm.accounts.lifecycle import request_deletion
from reelm.accounts.models import Account, DirectoryEntry
from reelm.accounts.schemas import SignUp
from reelm.accounts.service import CurrentUser, authenticate, log_in, sign_up
from reelm.app import create_app
from reelm.bootstrap import Platform
from reelm.media.models import Upload, Video
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest
from reelm.migration import engine
from reelm.migration.models import MigrationUser
from reelm.migration.report import platform_fetcher, platform_keys, verify_report
from reelm.migration.tables import MOVED_TABLES, STAYING_PREFIXES, STAYING_TABLES
from reelm.regions import routing
from reelm.residency.scan import scan
from reelm.storage.crypto import DecryptionFailed, UserCipher
from reelm.storage.db import RegionBase
from reelm.storage.keys import KeyDestroyed

from . import tus
from .conftest import PASSWORD, unique_handle
from .test_residency import _drop_restored, _libpq, _pg_dump_for, _restore
from .test_transcode import FAST_H264, ffmpeg, pattern, tone

# US is not listed: its users live in the default region, sg, until the migration.
MARKETS = {"CA": "ca", "AU": "au", "NZ": "nz"}


def test_every_region_table_is_moved_or_known_to_stay() -> None:
    """A new region table (likes, watch history...) cannot be forgotten by the migration."""
    import reelm.storage.migrate

    reelm.storage.migrate.target_metadata("region")
    moved = {m.name for m in MOVED_TABLES}
    for name in RegionBase.metadata.tables:
        assert name in moved or name in STAYING_TABLES or name.startswith(STAYING_PREFIXES), name


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("migration-clip") / "clip.mp4"
    ffmpeg(*pattern("360x640", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(path))
    return path


def _person(platform: Platform, market: str = "US", **fields: Any) -> tuple[str, CurrentUser]:
    handle = unique_handle("mv")
    sign_up(
        platform,
        SignUp(
            handle=handle,
            display_name=fields.pop("display_name", "Mover"),
            email=fields.pop("email", f"{handle}@example.com"),
            password=PASSWORD,
            birth_date=date(1991, 5, 17),
            market=market,
            **fields,
        ),
    )
    return log_in(platform, handle, PASSWORD, user_agent="Mozilla/5.0 (test) Mover")


def _run_jobs(platform: Platform, region: str) -> None:
    tus.run_jobs(platform, region)


def _state_of(platform: Platform, user_id: uuid.UUID) -> dict[str, Any]:
    """Everything a user has, decrypted, wherever the directory says they live."""
    with platform.catalog.transaction() as c:
        home = c.get(DirectoryEntry, user_id).home_region
    cell = platform.cell(home)
    cipher = UserCipher(user_id, cell.keys.data_key(user_id))
    with cell.db.transaction() as s:
        account = s.get(Account, user_id)
        videos = list(s.scalars(select(Video).where(Video.owner_id == user_id).order_by(Video.id)))
        uploads = list(s.scalars(select(Upload).where(Upload.owner_id == user_id)))
        sessions = s.execute(
            text("SELECT count(*) FROM sessions WHERE user_id = :u"), {"u": user_id}
        ).scalar()
    blobs = {}
    for prefix in ("originals", "private"):
        for key in cell.blobs.iter_keys(f"{prefix}/{user_id}/"):
            sha, _ = engine._blob_digest(cell.blobs, cell.keys.data_key(user_id), user_id, key)
            blobs[key] = sha
    return {
        "home": home,
        "email": cipher.decrypt("email", account.email_ct),
        "phone": cipher.decrypt_optional("phone", account.phone_ct),
        "purge_after": account.purge_after,
        "sessions": sessions,
        "videos": [
            (v.id, v.status, v.visibility, cipher.decrypt("caption", v.caption_ct)) for v in videos
        ],
        "uploads": sorted((u.id, u.offset) for u in uploads),
        "blobs": blobs,
    }


def _holds_anything(platform: Platform, region: str, user_id: uuid.UUID) -> list[str]:
    cell = platform.cell(region)
    found = []
    with cell.db.transaction() as s:
        for moved in MOVED_TABLES:
            n = s.execute(
                select(moved.table.c[moved.user_column]).where(
                    moved.table.c[moved.user_column] == user_id
                )
            ).first()
            if n is not None:
                found.append(moved.name)
    for prefix in ("originals", "private"):
        found += list(cell.blobs.iter_keys(f"{prefix}/{user_id}/"))
    if cell.keys.has_data_key(user_id):
        found.append("data key")
    return found


@pytest.fixture(scope="module")
def world(
    session_platform_factory: Callable[..., Platform], clip: Path
) -> Iterator[dict[str, Any]]:
    platform = session_platform_factory(markets=MARKETS)
    people: dict[str, Any] = {}
    # A creator with a public and a private video, and an upload half done.
    token, alice = _person(platform, phone="+1 202 555 0147")
    public = ingest(platform, alice, clip, UploadMeta(caption="public #beach", visibility="public"))
    private = ingest(platform, alice, clip, UploadMeta(caption="only me 🌊", visibility="private"))
    _run_jobs(platform, "sg")
    queued = ingest(platform, alice, clip, UploadMeta(caption="still queued", visibility="private"))
    data = clip.read_bytes()
    app = create_app(platform)
    with TestClient(app, base_url="https://testserver") as http:
        created = tus.create(http, token, len(data), caption="half", visibility="private")
        assert created.status_code == 201, created.text
        upload_url = created.headers["Location"]
        half = len(data) // 2
        assert tus.patch(http, token, upload_url, 0, data[:half]).status_code == 204
    people["alice"] = {"token": token, "user": alice, "public": public, "private": private,
                       "queued": queued, "upload_url": upload_url, "half": half}  # fmt: skip
    # A user whose deletion is pending.
    bob_token, bob = _person(platform)
    request_deletion(platform, bob)
    people["bob"] = {"user": bob}
    # A plain user, and one of another market who must stay.
    carol_token, carol = _person(platform, display_name="Carol Ñandú 山田")
    people["carol"] = {"token": carol_token, "user": carol}
    _, dave = _person(platform, market="FR")
    people["dave"] = {"user": dave}
    assert {p["user"].home_region for p in people.values()} == {"sg"}
    yield {"platform": platform, "people": people, "clip": clip}


def test_a_market_moves_and_nothing_is_left_behind(world: dict[str, Any], tmp_path: Path) -> None:
    platform: Platform = world["platform"]
    people = world["people"]
    movers = [people[n]["user"].user_id for n in ("alice", "bob", "carol")]
    before = {u: _state_of(platform, u) for u in movers}
    sg = platform.cell("sg")
    backup = tmp_path / "sg.sql"
    import subprocess

    subprocess.run(
        [_pg_dump_for(sg.db.url), "--no-owner", "--no-privileges", "-f", str(backup),
         _libpq(sg.db.url)],
        check=True,
    )  # fmt: skip

    plan = engine.make_plan(platform, "us", market="US")
    assert sorted(plan.users["sg"]) == sorted(movers)
    assert plan.rows["accounts"] == 3 and plan.rows["videos"] == 3 and plan.rows["uploads"] >= 1
    assert plan.bytes > 0
    migration_id = engine.start(platform, plan, batch_size=2)
    # From the start, the market's new sign-ups go to the destination.
    assert routing.home_region(platform, "US") == "us"
    seen: list[tuple[int, int]] = []
    outcome = engine.Runner(
        platform, migration_id, progress=lambda ph, d, t, b: seen.append((d, t))
    ).run()
    assert outcome.failed == {}
    assert outcome.moved == 3
    assert seen[-1] == (3, 3)

    for user_id in movers:
        after = _state_of(platform, user_id)
        assert after["home"] == "us"
        for part, value in before[user_id].items():
            if part != "home":
                assert after[part] == value, part
        assert _holds_anything(platform, "sg", user_id) == []
    assert _state_of(platform, people["dave"]["user"].user_id)["home"] == "sg"
    with platform.catalog.transaction() as c:
        epochs = set(
            c.scalars(select(DirectoryEntry.epoch).where(DirectoryEntry.user_id.in_(movers)))
        )
    assert epochs == {2}

    report = scan(platform)
    assert report.clean, [f.describe() for f in report.findings]

    # The backup of sg taken before the move: the ciphertexts are in it, no key opens them.
    restored = _restore(platform, backup)
    try:
        with psycopg.connect(restored) as conn:
            old = {
                r[0]: bytes(r[1]) for r in conn.execute("SELECT user_id, email_ct FROM accounts")
            }
    finally:
        _drop_restored(platform)
    for user_id in movers:
        assert user_id in old
        with pytest.raises(KeyDestroyed):
            sg.keys.data_key(user_id)
        new_key = platform.cell("us").keys.data_key(user_id)
        with pytest.raises(DecryptionFailed):
            UserCipher(user_id, new_key).decrypt("email", old[user_id])

    # Sessions go on, without a new login; videos play; the half upload resumes in us.
    alice = people["alice"]
    me = authenticate(platform, alice["token"])
    assert me.home_region == "us"
    data = world["clip"].read_bytes()
    with TestClient(create_app(platform), base_url="https://testserver") as http:
        auth = {"Authorization": f"Bearer {alice['token']}"}
        mine = http.get("/api/v1/me/videos", headers=auth).json()
        ids = {v["id"] for v in mine}
        assert {str(alice["public"]), str(alice["private"]), str(alice["queued"])} <= ids
        assert http.get("/api/v1/me", headers=auth).json()["email"] == before[movers[0]]["email"]
        head = http.head(alice["upload_url"], headers={**tus.TUS, **auth})
        assert int(head.headers["Upload-Offset"]) == alice["half"]
        done = tus.patch(
            http, alice["token"], alice["upload_url"], alice["half"], data[alice["half"] :]
        )
        assert done.status_code == 204, done.text
    _run_jobs(platform, "us")
    state = _state_of(platform, movers[0])
    assert {s for _, s, _, _ in state["videos"]} == {"ready"}  # the queued one too, made in us
    assert len(state["videos"]) == 4
    assert scan(platform).clean

    # New sign-ups of the market land in us.
    _, newcomer = _person(platform)
    assert newcomer.home_region == "us"

    # The report verifies against the logs; a tampered one does not.
    assert outcome.report is not None
    keys = platform_keys(platform)
    fetch = platform_fetcher(platform)
    assert verify_report(outcome.report, keys, fetch) == []
    body = outcome.report["body"]
    assert body["totals"]["users"] == 3 and body["complete"] is True
    for tamper in (
        lambda r: r["body"]["totals"].__setitem__("rows", r["body"]["totals"]["rows"] + 1),
        lambda r: r["body"]["users"][0].__setitem__("digest", "00" * 32),
        lambda r: r["body"]["users"].pop(),
        lambda r: r.__setitem__("signature", base64.b64encode(b"x" * 64).decode()),
    ):
        forged = copy.deepcopy(outcome.report)
        tamper(forged)
        assert verify_report(forged, keys, fetch) != []
    # Even re-signed with another key, a changed digest no longer matches the logged entries.
    forged = copy.deepcopy(outcome.report)
    forged["body"]["users"][0]["digest"] = hashlib.sha256(b"x").hexdigest()
    assert any("says otherwise" in p for p in verify_report(forged, keys, fetch))
    with platform.catalog.transaction() as c:
        states = set(
            c.scalars(select(MigrationUser.state).where(MigrationUser.migration_id == migration_id))
        )
    assert states == {"attested"}
    assert engine.status(platform, migration_id)["state"] == "done"
    json.dumps(outcome.report)  # plain JSON


def test_dry_run_and_bad_requests_change_nothing(world: dict[str, Any]) -> None:
    platform: Platform = world["platform"]
    with pytest.raises(engine.MigrationError):
        engine.make_plan(platform, "mars", market="FR")
    with pytest.raises(engine.MigrationError):
        engine.make_plan(platform, "us")
    from reelm.regions.policy import MarketBlocked, UnknownMarket

    with pytest.raises(MarketBlocked):
        engine.make_plan(platform, "us", market="IN")
    with pytest.raises(UnknownMarket):
        engine.make_plan(platform, "us", market="'; DROP TABLE accounts; --")
    plan = engine.make_plan(platform, "ca", market="FR")
    assert plan.user_count >= 1  # a plan only: nobody moved
    assert routing.home_region(platform, "FR") == "sg"


def test_a_digest_mismatch_leaves_the_user_where_they_are(
    session_platform_factory: Callable[..., Platform], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = session_platform_factory(markets=MARKETS)
    _, user = _person(platform)
    original = engine.Runner._reencrypt

    def corrupt(self: engine.Runner, moved: Any, row: dict[str, Any], old: Any, new: Any):  # type: ignore[no-untyped-def]
        out = original(self, moved, row, old, new)
        if moved.name == "accounts":
            out["email_ct"] = new.encrypt("email", "someone-else@example.com")
        return out

    monkeypatch.setattr(engine.Runner, "_reencrypt", corrupt)
    plan = engine.make_plan(platform, "us", user_ids=[user.user_id])
    outcome = engine.Runner(platform, engine.start(platform, plan)).run()
    assert list(outcome.failed) == [str(user.user_id)]
    assert "accounts" in outcome.failed[str(user.user_id)]
    # Still in sg, writable, and nothing left in us.
    with platform.catalog.transaction() as c:
        assert c.get(DirectoryEntry, user.user_id).home_region == "sg"
    assert _holds_anything(platform, "us", user.user_id) == []
    with platform.cell("sg").db.transaction() as s:
        assert s.get(Account, user.user_id).migration is None
    assert scan(platform).clean
    # Fixed, a resume retries the user.
    monkeypatch.setattr(engine.Runner, "_reencrypt", original)
    migration_id = engine.running_migration(platform)
    assert migration_id is not None
    outcome = engine.Runner(platform, migration_id).run(retry_failed=True)
    assert outcome.failed == {} and outcome.moved == 1
    assert _holds_anything(platform, "sg", user.user_id) == []
