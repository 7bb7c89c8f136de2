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
from sqlalchemy import select, text, update

from reelm.accounts import indexes
from reelm.accounts.errors import InvalidInput
from reelm.accounts.lifecycle import request_deletion
from reelm.accounts.models import Account, DirectoryEntry
from reelm.accounts.schemas import SignUp
from reelm.accounts.service import CurrentUser, authenticate, log_in, sign_up
from reelm.app import create_app
from reelm.bootstrap import Platform
from reelm.feed import signals
from reelm.media.models import Upload, Video
from reelm.media.uploads import UploadMeta
from reelm.media.videos import ingest
from reelm.migration import engine
from reelm.migration.importer import Importer
from reelm.migration.models import MigrationUser
from reelm.migration.report import platform_fetcher, platform_keys, verify_report
from reelm.migration.tables import MOVED_TABLES, STAYING_PREFIXES, STAYING_TABLES
from reelm.regions import routing
from reelm.residency.scan import scan
from reelm.social import graph, likes
from reelm.storage.crypto import DecryptionFailed, UserCipher
from reelm.storage.db import RegionBase
from reelm.storage.keys import KeyDestroyed
from reelm.transparency.views import events_about

from . import tus
from .conftest import (
    ACCESS_KEY,
    PASSWORD,
    S3_REGION,
    SECRET_KEY,
    Moto,
    _factory,
    new_bucket,
    unique_handle,
)
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
def module_platforms(
    admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Platform]]:
    """Platforms shared by this module's tests, dropped when the module ends (each holds
    connection pools to six databases; the server allows 100 connections)."""
    yield from _factory(admin_url, tmp_path_factory)


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
    with cell.db.transaction() as s:
        social = {
            name: sorted(
                cipher.decrypt(field, blob)
                for blob in s.execute(
                    text(f"SELECT {column} FROM {name} WHERE user_id = :u"), {"u": user_id}
                ).scalars()
            )
            for name, column, field in (
                ("likes", "video_ct", "liked_video"),
                ("signals", "event_ct", "signal"),
                ("notifications", "event_ct", "notification"),
            )
        }
    return {
        **social,
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


def _assert_moved_intact(platform: Platform, before: dict[uuid.UUID, dict[str, Any]]) -> None:
    """Each user now lives in us with exactly what they had, and nothing of them is in sg."""
    for user_id, was in before.items():
        after = _state_of(platform, user_id)
        assert after["home"] == "us"
        for part, value in was.items():
            if part != "home":
                assert after[part] == value, (user_id, part)
        assert _holds_anything(platform, "sg", user_id) == []


@pytest.fixture(scope="module")
def world(module_platforms: Callable[..., Platform], clip: Path) -> Iterator[dict[str, Any]]:
    platform = module_platforms(markets=MARKETS)
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
    _bob_token, bob = _person(platform)
    request_deletion(platform, bob)
    people["bob"] = {"user": bob}
    # A plain user, and one of another market who must stay.
    carol_token, carol = _person(platform, display_name="Carol Ñandú 山田")
    people["carol"] = {"token": carol_token, "user": carol}
    _, dave = _person(platform, market="FR")
    people["dave"] = {"user": dave}
    # Likes, watch history and notifications (issue #6): they must move with their owner.
    likes.like(platform, carol, public)
    likes.like(platform, alice, public)
    watched = signals.WatchEvent(video_id=public, watched_seconds=1.0, completed=True)
    assert signals.record(platform, carol, signals.WatchBatch(events=[watched])) == (1, 0)
    graph.follow(platform, dave, alice.handle)  # alice is notified
    assert {p["user"].home_region for p in people.values()} == {"sg"}
    return {"platform": platform, "people": people, "clip": clip}


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

    _assert_moved_intact(platform, before)
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

    # The pending deletion moved with its date, and comes due in the new home.
    from datetime import UTC, datetime, timedelta

    from reelm.accounts.lifecycle import purge_due

    bob = people["bob"]["user"].user_id
    assert before[bob]["purge_after"] is not None
    assert purge_due(platform, at=datetime.now(UTC)) == []
    assert purge_due(platform, at=datetime.now(UTC) + timedelta(days=31)) == [bob]
    assert _holds_anything(platform, "us", bob) == []

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
    # A moved user still finds what the old region logged about them: the log key moved.
    for cell in platform.cells.values():
        cell.log.integrate_all()
    own = {(e.region, e.kind) for e in events_about(platform, movers[0])}
    expected = {
        ("sg", "account.created"),
        ("sg", "migration.departed"),
        ("us", "migration.arrived"),
    }
    assert expected <= own
    assert all(len(u["subjects"]) == 3 for u in body["users"])
    assert not any(u["user"] in u["subjects"].values() for u in body["users"])
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
    with pytest.raises(InvalidInput):
        engine.make_plan(platform, "mars", market="FR")
    with pytest.raises(InvalidInput):
        engine.make_plan(platform, "us")
    from reelm.regions.policy import MarketBlocked, UnknownMarket

    with pytest.raises(MarketBlocked):
        engine.make_plan(platform, "us", market="IN")
    with pytest.raises(UnknownMarket):
        engine.make_plan(platform, "us", market="'; DROP TABLE accounts; --")
    plan = engine.make_plan(platform, "ca", market="FR")
    assert plan.user_count >= 1  # a plan only: nobody moved
    assert routing.home_region(platform, "FR") == "sg"


def _corrupt_copies(
    monkeypatch: pytest.MonkeyPatch, table: str, column: str, field: str, value: str
) -> None:
    """Make the copy write ``value`` into ``column`` of ``table`` (a copy that goes wrong)."""
    original = Importer._seal

    def corrupt(self: Importer, moved: Any, row: dict[str, Any], new: Any):  # type: ignore[no-untyped-def]
        out = original(self, moved, row, new)
        if moved.name == table:
            out[column] = new.encrypt(field, value)
        return out

    monkeypatch.setattr(Importer, "_seal", corrupt)


def test_a_digest_mismatch_leaves_the_user_where_they_are(
    platform_factory: Callable[..., Platform], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = platform_factory(markets=MARKETS)
    _, user = _person(platform)
    original = Importer._seal
    _corrupt_copies(monkeypatch, "accounts", "email_ct", "email", "someone-else@example.com")
    plan = engine.make_plan(platform, "us", market="US")
    outcome = engine.Runner(platform, engine.start(platform, plan)).run()
    assert list(outcome.failed) == [str(user.user_id)]
    assert "accounts" in outcome.failed[str(user.user_id)]
    # Still in sg, writable, and nothing left in us.
    with platform.catalog.transaction() as c:
        assert c.get(DirectoryEntry, user.user_id).home_region == "sg"
    assert _holds_anything(platform, "us", user.user_id) == []
    with platform.cell("sg").db.transaction() as s:
        assert s.get(Account, user.user_id).migration is None
    # The market now lives in us: the user left behind is a leak until moved.
    report = scan(platform)
    assert [(f.kind, f.user_id) for f in report.findings] == [
        ("market-elsewhere", str(user.user_id))
    ]
    # Fixed, a resume retries the user.
    monkeypatch.setattr(Importer, "_seal", original)
    migration_id = engine.running_migration(platform)
    assert migration_id is not None
    outcome = engine.Runner(platform, migration_id).run(retry_failed=True)
    assert outcome.failed == {} and outcome.moved == 1
    assert _holds_anything(platform, "sg", user.user_id) == []


# ---- crash safety: SIGKILL at every step boundary, and at random times -------------------------


def _cli_env(platform: Platform, **extra: str) -> dict[str, str]:
    import os

    s = platform.settings
    return {
        **os.environ,
        "REELM_DATA_DIR": str(s.data_dir),
        "REELM_ADMIN_DATABASE_URL": str(s.admin_database_url),
        "REELM_DATABASE_PREFIX": s.database_prefix,
        "REELM_MARKETS": json.dumps(MARKETS),
        **extra,
    }


def _reelm(platform: Platform, *args: str, **env: str) -> Any:
    import subprocess
    import sys

    reelm = Path(sys.executable).parent / "reelm"
    return subprocess.Popen(
        [str(reelm), *args],
        env=_cli_env(platform, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _movers(platform: Platform, clip: Path, count: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(count):
        _, user = _person(platform)
        ingest(platform, user, clip, UploadMeta(caption="queued #moving", visibility="private"))
        ids.append(user.user_id)
    return ids


def _listed_movers(
    platform: Platform, clip: Path, count: int, tmp_path: Path
) -> tuple[list[uuid.UUID], dict[uuid.UUID, dict[str, Any]], Path]:
    """New users to move, what they hold now, and a --users file naming them."""
    ids = _movers(platform, clip, count)
    listed = tmp_path / "users.txt"
    listed.write_text("".join(f"{u}\n" for u in ids))
    return ids, {u: _state_of(platform, u) for u in ids}, listed


@pytest.fixture(scope="module")
def crash_world(module_platforms: Callable[..., Platform]) -> Platform:
    return module_platforms(markets=MARKETS)


@pytest.mark.parametrize("point", engine.FAULT_POINTS)
def test_killed_at_a_step_boundary_then_resumed(
    crash_world: Platform, clip: Path, tmp_path: Path, point: str
) -> None:
    platform = crash_world
    _, before, listed = _listed_movers(platform, clip, 3, tmp_path)
    killed = _reelm(
        platform, "migrate", "--users", str(listed), "--to", "us", "--batch", "2",
        "--report", str(tmp_path / "report.json"), REELM_MIGRATION_FAULT=point,
    )  # fmt: skip
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -9, err.decode()[-2000:]
    if point in ("after-import", "after-copy"):
        # Frozen and copied, not switched: copies in both regions are in transit, not leaks.
        report = scan(platform)
        assert report.clean, [f.describe() for f in report.findings]
        assert {n.kind for n in report.notices} >= {"in-transit"}
    resumed = _reelm(platform, "migrate", "--resume", "--report", str(tmp_path / "report.json"))
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()[-2000:]
    _assert_moved_intact(platform, before)
    checked = _reelm(platform, "audit", "verify-migration", str(tmp_path / "report.json"))
    _out, err = checked.communicate(timeout=120)
    assert checked.returncode == 0, err.decode()[-2000:]
    # One report, logged once in each region, whatever the step the crash interrupted.
    written = json.loads((tmp_path / "report.json").read_text())
    assert _completed_hashes(platform, written["body"]["migration"]) == {
        region: [written["report_sha256"]] for region in ("sg", "us")
    }


def _completed_hashes(platform: Platform, migration: str) -> dict[str, list[str]]:
    """The report hashes each region's log holds for a migration (queued ones included)."""
    found: dict[str, list[str]] = {}
    for region, cell in platform.cells.items():
        cell.log.integrate_all()
        with cell.db.transaction() as s:
            entries = s.execute(
                text(
                    "SELECT entry FROM tlog_entries WHERE kind = 'migration.completed' "
                    "AND position(CAST(:m AS bytea) IN entry) > 0 ORDER BY idx"
                ),
                {"m": migration.encode()},
            ).scalars()
            hashes = [json.loads(e)["details"]["report_sha256"] for e in entries]
        if hashes:
            found[region] = hashes
    return found


def test_killed_at_random_times_then_resumed(
    crash_world: Platform, clip: Path, tmp_path: Path
) -> None:
    import random
    import time

    platform = crash_world
    _, before, listed = _listed_movers(platform, clip, 8, tmp_path)
    report = str(tmp_path / "r.json")
    args = ["migrate", "--users", str(listed), "--to", "us", "--batch", "1", "--report", report]
    rng = random.Random(5)
    resume = ["migrate", "--resume", "--report", report]
    earlier = engine.last_migration(platform)

    def again() -> list[str]:
        # A kill can land before the first run recorded its migration (a slow machine spends
        # seconds planning): then there is nothing to resume, and the operator runs the
        # command again.
        return resume if engine.last_migration(platform) != earlier else args

    for _attempt in range(4):
        run = _reelm(platform, *again())
        time.sleep(rng.uniform(1.5, 4.0))
        if run.poll() is not None:
            run.communicate(timeout=30)
            break
        run.send_signal(9)
        run.communicate(timeout=30)
    final = _reelm(platform, *again())
    _, err = final.communicate(timeout=180)
    assert final.returncode == 0, err.decode()[-2000:]
    _assert_moved_intact(platform, before)
    report = scan(platform)
    assert report.clean, [f.describe() for f in report.findings]


# ---- users keep using the app while they move ------------------------------------------------


def test_a_user_who_keeps_writing_during_the_migration_loses_nothing(
    platform_factory: Callable[..., Platform], clip: Path
) -> None:
    """While a market moves (one user per batch, so it takes a while), a user logs in again
    and again, edits a video's caption and starts uploads. Every request succeeds (writes that
    meet the fence wait and are replayed), every session still works afterwards, every upload
    and the last caption are in the new home."""
    import threading
    import time

    platform = platform_factory(markets=MARKETS)
    token, user = _person(platform)
    handle = authenticate(platform, token).handle
    video_id = ingest(platform, user, clip, UploadMeta(caption="v0", visibility="private"))
    _movers(platform, clip, 10)
    plan = engine.make_plan(platform, "us", market="US")
    migration_id = engine.start(platform, plan, batch_size=1)
    outcome: list[engine.Outcome] = []
    runner = threading.Thread(
        target=lambda: outcome.append(engine.Runner(platform, migration_id).run())
    )
    tokens, uploads, slowest, statuses = [token], [], 0.0, []
    caption = "v0"
    with TestClient(create_app(platform), base_url="https://testserver") as http:
        runner.start()
        i = 0
        while runner.is_alive() or i < 3:
            i += 1
            began = time.monotonic()
            r = http.post("/api/v1/session", json={"identifier": handle, "password": PASSWORD})
            statuses.append(r.status_code)
            if r.status_code == 201:
                tokens.append(r.json()["token"])
            auth = {"Authorization": f"Bearer {tokens[-1]}"}
            caption = f"caption {i} ✓"
            r = http.patch(f"/api/v1/videos/{video_id}", json={"caption": caption}, headers=auth)
            statuses.append(r.status_code)
            if len(uploads) < 4:  # at most 5 open uploads per account
                r = tus.create(http, tokens[-1], 1000, caption=f"upload {i}", visibility="private")
                statuses.append(r.status_code)
                if r.status_code == 201:
                    uploads.append(r.headers["Location"].rsplit("/", 1)[-1])
            slowest = max(slowest, time.monotonic() - began)
        runner.join()
        assert outcome and outcome[0].failed == {}
        assert set(statuses) <= {200, 201, 204}, statuses
        for t in tokens:  # nobody was logged out
            assert (
                http.get("/api/v1/me", headers={"Authorization": f"Bearer {t}"}).status_code == 200
            )
    state = _state_of(platform, user.user_id)
    assert state["home"] == "us"
    assert state["sessions"] >= len(tokens)
    assert {str(u) for u, _ in state["uploads"]} >= set(uploads)
    assert [c for v, _, _, c in state["videos"] if v == video_id] == [caption]
    assert _holds_anything(platform, "sg", user.user_id) == []
    print(f"{i} rounds of writes during the migration; slowest round {slowest:.2f} s")


def test_an_aborted_migration_leaves_unswitched_users_home_and_writable(
    crash_world: Platform, clip: Path, tmp_path: Path
) -> None:
    platform = crash_world
    ids, before, listed = _listed_movers(platform, clip, 2, tmp_path)
    report = str(tmp_path / "r.json")
    killed = _reelm(
        platform, "migrate", "--users", str(listed), "--to", "us", "--report", report,
        REELM_MIGRATION_FAULT="after-copy",
    )  # fmt: skip
    killed.communicate(timeout=120)
    assert killed.returncode == -9
    with platform.cell("sg").db.transaction() as s:
        frozen = {s.get(Account, u).migration for u in ids}
    assert frozen == {"frozen"}
    aborted = _reelm(platform, "migrate", "--abort")
    out, err = aborted.communicate(timeout=120)
    assert aborted.returncode == 0, err.decode()[-2000:]
    for user_id in ids:
        assert _state_of(platform, user_id) == before[user_id]
        assert _holds_anything(platform, "us", user_id) == []
        with platform.cell("sg").db.transaction() as s:
            assert s.get(Account, user_id).migration is None
    status = _reelm(platform, "migrate", "--status")
    out, _ = status.communicate(timeout=60)
    assert json.loads(out)["state"] == "aborted"
    again = _reelm(platform, "migrate", "--resume")
    again.communicate(timeout=60)
    assert again.returncode == 0  # nothing to resume


# ---- the operator API --------------------------------------------------------------------------


def test_operators_run_a_migration_through_the_api(
    platform_factory: Callable[..., Platform], clip: Path
) -> None:
    import time

    from reelm.transparency.gateway import grant

    platform = platform_factory(markets=MARKETS)
    admin_token, admin = _person(platform, market="CA")
    grant(platform, admin.user_id, "admin")
    support_token, support = _person(platform, market="CA")
    grant(platform, support.user_id, "support")
    movers = _movers(platform, clip, 3)
    as_admin = {"Authorization": f"Bearer {admin_token}"}
    base = "/api/v1/staff/migrations"
    with TestClient(create_app(platform), base_url="https://testserver") as http:
        # Not for support staff, nor anonymous.
        r = http.post(base, json={"to": "us", "market": "US"},
                      headers={"Authorization": f"Bearer {support_token}"})  # fmt: skip
        assert r.status_code == 403 and r.json()["type"].endswith("/not-staff")
        assert http.post(base, json={"to": "us", "market": "US"}).status_code == 401
        # Bad input: clear problems, nothing started.
        for body, code in [
            ({"to": "mars", "market": "US"}, 422),
            ({"to": "us"}, 422),
            ({"to": "us", "market": "IN"}, 451),
            ({"to": "us", "market": "ZZ"}, 422),
            ({"to": "us'; DROP TABLE directory; --", "market": "US"}, 422),
            ({"to": "us", "users": ["not-a-uuid"]}, 422),
            ({"to": "us", "market": "US", "batch_size": 10**9}, 422),
            ({"to": "us", "market": "US", "extra": 1}, 422),
        ]:
            r = http.post(base, json=body, headers=as_admin)
            assert r.status_code == code, (body, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        assert engine.last_migration(platform) is None
        r = http.get(f"{base}/{uuid.uuid4()}", headers=as_admin)
        assert r.status_code == 404
        # The plan, then the real thing.
        r = http.post(base, json={"to": "us", "market": "US", "dry_run": True}, headers=as_admin)
        assert r.status_code == 200 and r.json()["plan"]["users"] == {"sg": 3}
        r = http.post(base, json={"to": "us", "market": "US", "batch_size": 1}, headers=as_admin)
        assert r.status_code == 202, r.text
        where = r.headers["Location"]
        deadline = time.monotonic() + 120
        while (state := http.get(where, headers=as_admin).json())["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert state["state"] == "done" and state["users"] == {"attested": 3}
        report = http.get(f"{where}/report", headers=as_admin).json()
        assert verify_report(report, platform_keys(platform), platform_fetcher(platform)) == []
        r = http.post(f"{where}/resume", headers=as_admin)
        assert r.status_code == 409
        # Anyone can download the report from the transparency pages.
        public = http.get(f"/transparency/migrations/{state['migration']}/report.json")
        assert public.status_code == 200 and public.json() == report
        assert http.get(f"/transparency/migrations/{uuid.uuid4()}/report.json").status_code == 404
    # An outside auditor: keys and entries from the deployment's public API, over HTTP.
    from reelm.migration.report import http_sources

    from .conftest import serving

    with serving(platform) as url:
        keys, fetch = http_sources(url)
        assert verify_report(report, keys, fetch) == []
        forged = copy.deepcopy(report)
        forged["body"]["users"][0]["departed"] += 1
        assert verify_report(forged, keys, fetch) != []
    for user_id in movers:
        assert _state_of(platform, user_id)["home"] == "us"


# ---- the write fence, alone ------------------------------------------------------------------


def test_writes_wait_at_the_fence_and_go_through_when_it_lifts(
    platform_factory: Callable[..., Platform], clip: Path
) -> None:
    """A frozen user's API write and page form wait (the server replays them) and succeed once
    the fence lifts; nothing is lost and the client sees no error."""
    import re
    import threading
    import time

    from reelm.web.csrf import CSRF_FIELD

    platform = platform_factory(markets=MARKETS)
    token, user = _person(platform)
    video_id = ingest(platform, user, clip, UploadMeta(caption="before", visibility="private"))
    sg = platform.cell("sg")

    def fence(state: str | None) -> None:
        with sg.db.transaction() as s:
            s.execute(
                text("UPDATE accounts SET migration = :m WHERE user_id = :u"),
                {"m": state, "u": user.user_id},
            )

    def lift_after(seconds: float) -> threading.Thread:
        thread = threading.Timer(seconds, fence, args=(None,))
        thread.start()
        return thread

    with TestClient(create_app(platform), base_url="https://testserver") as http:
        auth = {"Authorization": f"Bearer {token}"}
        fence("frozen")
        lifting = lift_after(1.0)
        began = time.monotonic()
        r = http.patch(f"/api/v1/videos/{video_id}", json={"caption": "api"}, headers=auth)
        waited = time.monotonic() - began
        lifting.join()
        assert r.status_code == 200, r.text
        assert waited >= 0.9  # it waited at the fence rather than failing
        assert _state_of(platform, user.user_id)["videos"][0][3] == "api"

        # The same through the page form (cookie session, CSRF token), answered in HTML.
        http.cookies.set("reelm_session", token)
        page = http.get(f"/me/videos/{video_id}/edit", headers={"Accept": "text/html"})
        csrf = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page.text)
        assert csrf is not None
        fence("frozen")
        lifting = lift_after(1.0)
        r = http.post(
            f"/me/videos/{video_id}/edit",
            data={CSRF_FIELD: csrf.group(1), "caption": "page", "visibility": "private"},
            headers={"Accept": "text/html"},
            follow_redirects=False,
        )
        lifting.join()
        assert r.status_code == 303, r.text[:500]
        assert _state_of(platform, user.user_id)["videos"][0][3] == "page"


def test_an_upload_caught_while_being_finished_moves_with_its_bytes(
    platform_factory: Callable[..., Platform], clip: Path
) -> None:
    """The fence can stop an upload's finishing after its bytes were renamed for probing and
    before the video exists: those bytes move too, and the client finishes it in the new home."""
    from reelm.media.uploads import staging_path

    platform = platform_factory(markets=MARKETS)
    token, user = _person(platform)
    data = clip.read_bytes()
    with TestClient(create_app(platform), base_url="https://testserver") as http:
        created = tus.create(http, token, len(data), caption="caught", visibility="private")
        url = created.headers["Location"]
        assert tus.patch(http, token, url, 0, data[:-1]).status_code == 204
        upload_id = uuid.UUID(url.rsplit("/", 1)[-1])
        # As if the last byte arrived and finishing stopped right after the rename.
        staged = staging_path(platform, "sg", upload_id)
        with staged.open("ab") as f:
            f.write(data[-1:])
        staged.rename(staged.with_suffix(".src"))
        with platform.cell("sg").db.transaction() as s:
            s.execute(update(Upload).where(Upload.id == upload_id).values(offset=len(data)))
        outcome = engine.Runner(
            platform, engine.start(platform, engine.make_plan(platform, "us", market="US"))
        ).run()
        assert outcome.failed == {} and outcome.moved == 1
        assert not staging_path(platform, "sg", upload_id).with_suffix(".src").exists()
        done = tus.patch(http, token, url, len(data), b"")
        assert done.status_code == 204, done.text
    state = _state_of(platform, user.user_id)
    assert state["home"] == "us"
    assert [(v, status) for v, status, _, _ in state["videos"]] == [(upload_id, "queued")]
    assert _holds_anything(platform, "sg", user.user_id) == []


def test_a_migration_between_s3_stores(
    platform_factory: Callable[..., Platform],
    moto: Moto,
    monkeypatch: pytest.MonkeyPatch,
    clip: Path,
) -> None:
    """Production layout: both regions' blobs in S3 buckets (moto's server on loopback). The
    originals and private renditions end in the destination's bucket only, and verify."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    sg_bucket, us_bucket = new_bucket(moto), new_bucket(moto)
    s3 = {"s3_endpoint_url": moto.url, "s3_region": S3_REGION}
    platform = platform_factory(
        markets=MARKETS,
        regions={
            "sg": {"blob_url": f"s3://{sg_bucket}/blobs", **s3},
            "us": {"blob_url": f"s3://{us_bucket}/blobs", **s3},
        },
    )
    _, user = _person(platform)
    ingest(platform, user, clip, UploadMeta(caption="in s3", visibility="private"))
    _run_jobs(platform, "sg")
    before = _state_of(platform, user.user_id)
    assert len(before["blobs"]) >= 3  # original, renditions, poster

    outcome = engine.Runner(
        platform, engine.start(platform, engine.make_plan(platform, "us", market="US"))
    ).run()
    assert outcome.failed == {} and outcome.moved == 1
    after = _state_of(platform, user.user_id)
    assert after["home"] == "us" and after["blobs"] == before["blobs"]
    assert moto.client.list_objects_v2(Bucket=sg_bucket).get("Contents", []) == []
    in_us = {o["Key"] for o in moto.client.list_objects_v2(Bucket=us_bucket)["Contents"]}
    assert in_us == {f"blobs/{key}" for key in before["blobs"]}
    assert scan(platform).clean


def test_the_command_plans_and_refuses_clearly(crash_world: Platform, clip: Path) -> None:
    platform = crash_world
    _movers(platform, clip, 1)
    run = _reelm(platform, "migrate", "--market", "US", "--to", "us", "--dry-run")
    _out, err = run.communicate(timeout=60)
    text_ = err.decode()
    assert run.returncode == 0, text_
    assert "Plan: move market US to us" in text_ and " accounts, " in text_
    assert engine.running_migration(platform) is None  # a dry run starts nothing
    for args, message in [
        (["--market", "IN", "--to", "us"], "blocked"),
        (["--market", "XX", "--to", "us"], "not an ISO 3166-1"),
        (["--market", "US", "--to", "mars"], "unknown region"),
        (["--to", "us"], "give --to and --market or --users"),
        (["--resume", "--id", "not-an-id"], "not a migration id"),
    ]:
        run = _reelm(platform, "migrate", *args)
        _, err = run.communicate(timeout=60)
        assert run.returncode == 2, (args, err.decode()[-500:])
        assert message in err.decode(), (args, err.decode()[-500:])


def test_verify_migration_refuses_garbage_and_forgeries(tmp_path: Path) -> None:
    from reelm.migration.report import verify_report

    for garbage in ([], {"body": 3}, {"body": {"destination": "us", "users": [1]}}, "x"):
        problems = verify_report(garbage, {}, None)  # type: ignore[arg-type]
        assert problems and all(isinstance(p, str) for p in problems)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\x00 not json")
    import subprocess
    import sys

    reelm = str(Path(sys.executable).parent / "reelm")
    done = subprocess.run(
        [reelm, "audit", "verify-migration", str(bad), "--base-url", "http://127.0.0.1:9"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2 and b"cannot read the report" in done.stderr
    good_json = tmp_path / "r.json"
    good_json.write_text(json.dumps({"body": {"destination": "us"}}))
    done = subprocess.run(
        [reelm, "audit", "verify-migration", str(good_json), "--base-url", "http://127.0.0.1:9"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2 and b"cannot read the logs" in done.stderr


def test_a_user_who_cannot_move_stays_and_the_batch_goes_on(
    platform_factory: Callable[..., Platform],
) -> None:
    """Phone numbers are unique per region only: a user whose number an account of the
    destination already has stays home (and can write); the rest of the batch moves."""
    platform = platform_factory(markets=MARKETS)
    _, clash = _person(platform, phone="+1 202 555 0199")
    _, fine = _person(platform)
    us = platform.cell("us")
    with us.db.transaction() as s:
        indexed = indexes.for_writing(s, us, f"{uuid.uuid4()}@example.com", "+12025550199")
        s.add(
            Account(
                user_id=uuid.uuid4(),
                market="US",
                email_ct=b"x",
                email_bidx=indexed.email_bidx,
                phone_ct=b"x",
                phone_bidx=indexed.phone_bidx,
                index_epoch=indexed.index_epoch,
                birth_date_ct=b"x",
                password_ct=b"x",
                settings_ct=b"x",
            )
        )
    plan = engine.make_plan(platform, "us", user_ids=[clash.user_id, fine.user_id])
    outcome = engine.Runner(platform, engine.start(platform, plan)).run()
    assert outcome.moved == 1
    assert outcome.failed == {
        str(clash.user_id): "an account of the destination has this phone number"
    }
    assert _state_of(platform, fine.user_id)["home"] == "us"
    assert _state_of(platform, clash.user_id)["home"] == "sg"
    assert _holds_anything(platform, "us", clash.user_id) == []
    with platform.cell("sg").db.transaction() as s:
        assert s.get(Account, clash.user_id).migration is None  # not left frozen


def test_resuming_never_touches_a_user_who_moved_since(
    platform_factory: Callable[..., Platform], monkeypatch: pytest.MonkeyPatch, clip: Path
) -> None:
    """A user fails in migration M, is then moved by another migration; resuming M must leave
    their data in the destination alone."""
    platform = platform_factory(markets=MARKETS)
    _, user = _person(platform)
    ingest(platform, user, clip, UploadMeta(caption="mine", visibility="private"))
    original = Importer._seal
    _corrupt_copies(monkeypatch, "videos", "caption_ct", "caption", "not mine")
    first = engine.start(platform, engine.make_plan(platform, "us", market="US"))
    assert list(engine.Runner(platform, first).run().failed) == [str(user.user_id)]
    monkeypatch.setattr(Importer, "_seal", original)
    second = engine.start(platform, engine.make_plan(platform, "us", user_ids=[user.user_id]))
    assert engine.Runner(platform, second).run().moved == 1
    moved = _state_of(platform, user.user_id)
    assert moved["home"] == "us"
    outcome = engine.Runner(platform, first).run(retry_failed=True)
    assert outcome.moved == 0 and outcome.failed == {}
    assert _state_of(platform, user.user_id) == moved
    assert engine.status(platform, first)["state"] == "done"  # the user left its journal


def test_a_notification_sent_behind_the_fence_arrives_after_the_move(
    platform_factory: Callable[..., Platform],
) -> None:
    """Someone follows a user while the user's writes are frozen for the move: the
    notification waits (in the follower's region, sealed under the follower's key) and is
    delivered to the user's new home once the directory points there, exactly once."""
    platform = platform_factory(markets=MARKETS)
    _, star = _person(platform)
    _, fan = _person(platform, market="FR")  # lives in sg and stays there
    plan = engine.make_plan(platform, "us", user_ids=[star.user_id])
    runner = engine.Runner(platform, engine.start(platform, plan))
    runner._freeze(runner._to("sg"), [star.user_id])  # the fence a batch puts up
    graph.follow(platform, fan, star.handle)
    _run_jobs(platform, "sg")  # the delivery meets the fence: it is put back for later
    assert runner.run().moved == 1
    assert _state_of(platform, star.user_id)["notifications"] == []
    with platform.cell("sg").db.transaction() as s:  # the retry's time has come
        s.execute(text("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'"))
    _run_jobs(platform, "sg")
    _run_jobs(platform, "sg")  # a second run delivers nothing more
    after = _state_of(platform, star.user_id)
    assert after["home"] == "us"
    assert [json.loads(n) for n in after["notifications"]] == [
        {"kind": "follow", "actor": str(fan.user_id)}
    ]
