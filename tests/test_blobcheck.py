"""`reelm blobs check`: orphan and missing blobs, built directly in real stores and databases,
and the output of the real pipeline found clean."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import imageio_ffmpeg  # type: ignore[import-untyped]  # the package ships no type hints
import pytest
from typer.testing import CliRunner

from reelm.accounts.service import SignedUp
from reelm.bootstrap import Platform
from reelm.cli import app
from reelm.media import videos
from reelm.media.blobcheck import MediaKey, check, delete_orphans, media_key
from reelm.media.models import PublicVideo, Video
from reelm.residency.readable import blob_name
from reelm.residency.scan import scan
from reelm.storage.blobs import BlobNotFound, BlobStore, LocalBlobStore, S3BlobStore
from reelm.storage.crypto import UserCipher, encrypt_blob

from .conftest import Moto, new_bucket

RENDITIONS = (("720p", "video", "720p.mp4"), ("poster", "poster", "poster.jpg"))


# ---- building states -------------------------------------------------------------------------


def files_of(owner: uuid.UUID, video: uuid.UUID, visibility: str) -> list[dict[str, Any]]:
    """Rendition records as the pipeline writes them, at the pipeline's keys."""
    if visibility == "public":
        prefix = videos.public_prefix(video)
    else:
        prefix = videos.private_prefix(owner, video)
    return [
        {
            "name": name,
            "kind": kind,
            "file": file,
            "key": prefix + file,
            "width": 720,
            "height": 1280,
            "bytes": 5,
            "mime_type": "video/mp4" if kind == "video" else "image/jpeg",
        }
        for name, kind, file in RENDITIONS
    ]


def store_of(platform: Platform, region: str, key: str) -> BlobStore:
    return platform.public_blobs if key.startswith("v/") else platform.cell(region).blobs


def data_key_of(platform: Platform, region: str, owner: uuid.UUID) -> bytes:
    """The owner's key in ``region``; a random one when the owner lives elsewhere (a planted
    leak: its values are not the region's to open)."""
    keys = platform.cell(region).keys
    return keys.data_key(owner) if keys.has_data_key(owner) else secrets.token_bytes(32)


def put_sealed(platform: Platform, region: str, owner: uuid.UUID, key: str, data: bytes) -> None:
    """A protected blob as the pipeline writes it: sealed under the owner's key."""
    sealed = io.BytesIO()
    data_key = data_key_of(platform, region, owner)
    encrypt_blob(data_key, owner, blob_name(key), io.BytesIO(data), sealed)
    platform.cell(region).blobs.put(key, sealed.getvalue())


def add_video(
    platform: Platform,
    region: str,
    owner: uuid.UUID,
    *,
    status: str = "ready",
    visibility: str = "private",
    video_id: uuid.UUID | None = None,
    write_blobs: bool = True,
    publish: bool = True,
) -> uuid.UUID:
    """A ``videos`` row in ``region`` as the pipeline leaves it at ``status``, with its blobs
    (and, for a ready public video, its catalog record unless ``publish`` is false)."""
    vid = video_id or uuid.uuid4()
    original = None if status == "uploading" else videos.original_key(owner, vid)
    renditions = files_of(owner, vid, visibility) if status == "ready" else []
    poster = next((r["key"] for r in renditions if r["kind"] == "poster"), None)
    with platform.cell(region).db.transaction() as s:
        s.add(
            Video(
                id=vid,
                owner_id=owner,
                status=status,
                visibility=visibility,
                caption_ct=UserCipher(owner, data_key_of(platform, region, owner)).encrypt(
                    "caption", "planted"
                ),
                original_key=original,
                original_bytes=8 if original else None,
                duration=1.0,
                width=720,
                height=1280,
                renditions=renditions,
                poster_key=poster,
            )
        )
    if write_blobs:
        if original:
            put_sealed(platform, region, owner, original, b"sealed original")
        for r in renditions:
            if r["key"].startswith("v/"):
                store_of(platform, region, r["key"]).put(r["key"], b"file")
            else:
                put_sealed(platform, region, owner, r["key"], b"file")
    if status == "ready" and visibility == "public" and publish:
        with platform.catalog.transaction() as s:
            s.add(
                PublicVideo(
                    id=vid,
                    owner_id=owner,
                    caption="",
                    hashtags=[],
                    mentions=[],
                    duration=1.0,
                    width=720,
                    height=1280,
                    renditions=[r for r in renditions if r["kind"] == "video"],
                    poster_key=poster,
                )
            )
    return vid


def make_clip(target: Path) -> Path:
    """One second of a small portrait test picture with a tone, H.264/AAC in MP4."""
    if not target.exists():
        subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=144x256:rate=30:duration=1",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100:duration=1",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-shortest",
                str(target),
            ],
            check=True,
        )
    return target


def processed_video(platform: Platform, user: SignedUp, clip: Path, visibility: str) -> uuid.UUID:
    """A video made by the pipeline itself: the original stored as ``finish_upload`` stores it
    (without deferring a job: the test runs the job's function), then ``process_video``."""
    region, owner = user.home_region, user.user_id
    cell = platform.cell(region)
    vid = uuid.uuid4()
    key = videos.original_key(owner, vid)
    scratch = videos.source_path(platform, region, vid).with_suffix(".enc")
    size = videos.put_encrypted(cell, owner, key, videos.ORIGINAL, clip, scratch)
    cipher = cell.for_user(owner, region).cipher()
    with cell.db.transaction() as s:
        s.add(
            Video(
                id=vid,
                owner_id=owner,
                status="queued",
                visibility=visibility,
                caption_ct=cipher.encrypt("caption", "a test clip #reelm"),
                original_key=key,
                original_bytes=size,
                renditions=[],
            )
        )
    assert videos.process_video(platform, region, vid) == "ready"
    return vid


def problems(platform: Platform) -> set[tuple[str, str, str]]:
    return {(p.kind, p.store, p.key) for p in check(platform).problems}


# ---- the layout ------------------------------------------------------------------------------


def test_media_keys_follow_the_pipeline_layout() -> None:
    owner, vid = uuid.uuid4(), uuid.uuid4()
    assert media_key(videos.original_key(owner, vid)) == MediaKey("original", vid, owner)
    private = videos.private_prefix(owner, vid) + "720p.mp4"
    assert media_key(private) == MediaKey("private", vid, owner)
    assert media_key(videos.public_prefix(vid) + "poster.jpg") == MediaKey("public", vid, None)
    for other in [
        "exports/leak.txt",
        f"originals/{owner}",
        f"originals/{owner}/{vid}/extra",
        f"originals/{owner.hex}/{vid}",  # the same id spelled otherwise is not the video's key
        f"private/{owner}/{vid}",
        f"v/{vid}",
        "v/not-a-uuid/poster.jpg",
    ]:
        assert media_key(other) is None, other


# ---- the real pipeline leaves nothing behind -------------------------------------------------


def test_videos_made_by_the_pipeline_are_clean(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    us = new_user("US", platform_=fresh_platform)
    au = new_user("AU", platform_=fresh_platform)
    public = processed_video(fresh_platform, us, clip, "public")
    private = processed_video(fresh_platform, au, clip, "followers")

    assert list(fresh_platform.public_blobs.iter_keys(videos.public_prefix(public)))
    assert list(
        fresh_platform.cell("au").blobs.iter_keys(videos.private_prefix(au.user_id, private))
    )
    report = check(fresh_platform)
    assert report.clean, report.problems
    assert report.videos == 3  # two region rows, one catalog row
    assert report.keys["us"] == 1  # the original; the renditions are public
    assert report.keys["au"] >= 3  # the original, at least one rendition and the poster

    residency = scan(fresh_platform)
    assert residency.clean, [f.describe() for f in residency.findings]
    assert residency.notices == [], [f.describe() for f in residency.notices]


# ---- orphans and missing blobs ---------------------------------------------------------------


def test_a_clean_state_reports_nothing(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    us = new_user("US", platform_=fresh_platform).user_id
    add_video(fresh_platform, "us", us, visibility="public")
    add_video(fresh_platform, "us", us, visibility="private")
    add_video(fresh_platform, "us", us, status="queued")
    add_video(fresh_platform, "us", us, status="failed")
    add_video(fresh_platform, "us", us, status="uploading")
    fresh_platform.cell("us").blobs.put("exports/someone.zip", b"not media: not looked at")
    report = check(fresh_platform)
    assert report.clean, report.problems
    assert report.videos == 4 + 1  # region rows past uploading, and the catalog record
    assert report.as_dict()["problems"] == []


def test_orphans_are_reported(fresh_platform: Platform, new_user: Callable[..., SignedUp]) -> None:
    us = new_user("US", platform_=fresh_platform).user_id
    ca = new_user("CA", platform_=fresh_platform).user_id
    kept = add_video(fresh_platform, "us", us)
    us_blobs, public = fresh_platform.cell("us").blobs, fresh_platform.public_blobs

    gone = uuid.uuid4()
    lone_original = videos.original_key(us, gone)
    lone_private = videos.private_prefix(us, gone) + "720p.mp4"
    wrong_owner = videos.original_key(ca, kept)  # a row exists for this id, of another owner
    odd = "originals/not-a-user/whatever"
    unpublished = videos.public_prefix(gone) + "poster.jpg"
    for key in (lone_original, lone_private, wrong_owner, odd):
        us_blobs.put(key, b"x")
    public.put(unpublished, b"x")
    # A followers-only video's files in the public store, with no catalog record: an orphan too.
    hidden = add_video(fresh_platform, "us", us, visibility="followers")
    public.put(videos.public_prefix(hidden) + "720p.mp4", b"x")

    report = check(fresh_platform)
    assert {(p.kind, p.store, p.key) for p in report.problems} == {
        ("orphan", "us", lone_original),
        ("orphan", "us", lone_private),
        ("orphan", "us", wrong_owner),
        ("orphan", "us", odd),
        ("orphan", "public", unpublished),
        ("orphan", "public", videos.public_prefix(hidden) + "720p.mp4"),
    }
    by_key = {p.key: p for p in report.problems}
    assert by_key[lone_original].video_id == str(gone)
    assert by_key[lone_original].owner_id == str(us)
    assert by_key[odd].video_id is None and not by_key[odd].deletable
    assert report.as_dict()["orphans"] == 6


def test_missing_blobs_are_reported(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    nz = new_user("NZ", platform_=fresh_platform).user_id
    nz_blobs, public = fresh_platform.cell("nz").blobs, fresh_platform.public_blobs

    private = add_video(fresh_platform, "nz", nz, visibility="private")
    private_file = videos.private_prefix(nz, private) + "720p.mp4"
    nz_blobs.delete(private_file)
    shown = add_video(fresh_platform, "nz", nz, visibility="public")
    poster = videos.public_prefix(shown) + "poster.jpg"
    public.delete(poster)
    queued = add_video(fresh_platform, "nz", nz, status="queued", write_blobs=False)
    failed = add_video(fresh_platform, "nz", nz, status="failed", write_blobs=False)
    add_video(fresh_platform, "nz", nz, status="uploading", write_blobs=False)  # no original yet
    # A ready video whose row names no poster.
    posterless = add_video(fresh_platform, "nz", nz, visibility="private")
    with fresh_platform.cell("nz").db.transaction() as s:
        row = s.get(Video, posterless)
        assert row is not None
        row.poster_key = None
    # A catalog record whose rendition is not in the public store (its region row is fine).
    published = add_video(fresh_platform, "nz", nz, visibility="public")
    catalog_only = videos.public_prefix(published) + "1080p.mp4"
    with fresh_platform.catalog.transaction() as s:
        record = s.get(PublicVideo, published)
        assert record is not None
        record.renditions = [*record.renditions, {"name": "1080p", "key": catalog_only}]

    report = check(fresh_platform)
    assert {(p.kind, p.store, p.key, p.video_id) for p in report.problems} == {
        ("missing", "nz", private_file, str(private)),
        ("missing", "public", poster, str(shown)),  # named by both rows, reported once
        ("missing", "nz", videos.original_key(nz, queued), str(queued)),
        ("missing", "nz", videos.original_key(nz, failed), str(failed)),
        ("missing", "nz", "", str(posterless)),
        ("missing", "public", catalog_only, str(published)),
    }
    details = {p.key: p.detail for p in report.problems}
    assert details[private_file] == "video 720p of a ready private video"
    assert details[""] == "poster of a ready private video: the row names no key"
    assert details[videos.original_key(nz, queued)] == "original of a queued video"
    assert not any(p.deletable for p in report.problems)


def _age(store: BlobStore, key: str, hours: float) -> None:
    assert isinstance(store, LocalBlobStore)
    moment = time.time() - hours * 3600
    os.utime(store.root / key, (moment, moment))


def test_delete_orphans_takes_only_old_orphans_still_without_a_row(
    fresh_platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    sg = new_user("FR", platform_=fresh_platform).user_id
    sg_blobs, public = fresh_platform.cell("sg").blobs, fresh_platform.public_blobs
    old, young, late = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    old_original = videos.original_key(sg, old)
    old_public = videos.public_prefix(old) + "720p.mp4"
    young_original = videos.original_key(sg, young)
    late_original = videos.original_key(sg, late)
    odd = "private/odd"
    for store, key in [
        (sg_blobs, old_original),
        (public, old_public),
        (sg_blobs, young_original),
        (sg_blobs, late_original),
        (sg_blobs, odd),
    ]:
        store.put(key, b"x")
        if key != young_original:
            _age(store, key, 2)
    kept = add_video(fresh_platform, "sg", sg)
    for key in [videos.original_key(sg, kept)]:
        _age(sg_blobs, key, 5)  # an old blob of an existing video is never touched

    report = check(fresh_platform)
    assert len(report.orphans) == 5
    # The video of `late` is created between the check and the deletion (its job wrote the
    # original long ago, say): its original is no orphan any more.
    add_video(fresh_platform, "sg", sg, video_id=late, status="queued", write_blobs=False)
    deleted = delete_orphans(fresh_platform, report)

    assert {p.key for p in deleted} == {old_original, old_public}
    assert {p.key for p in report.kept_young} == {young_original}
    assert not sg_blobs.exists(old_original) and not public.exists(old_public)
    for key in (young_original, late_original, odd, videos.original_key(sg, kept)):
        assert sg_blobs.exists(key), key
    flags = {p["key"]: p["deleted"] for p in report.as_dict()["problems"]}
    assert flags == {
        old_original: True,
        old_public: True,
        young_original: False,
        late_original: False,
        odd: False,
    }
    # Later, the young one has aged: a second run takes it.
    later = datetime.now(UTC) + timedelta(hours=2)
    again = check(fresh_platform)
    assert {p.key for p in delete_orphans(fresh_platform, again, now=later)} == {young_original}
    assert {p.key for p in check(fresh_platform).problems} == {odd}


def test_modified_time_of_both_stores(moto: Moto, tmp_path: Path) -> None:
    local = LocalBlobStore("us", tmp_path / "blobs", url_key_file=tmp_path / "url.key")
    s3 = S3BlobStore("us", new_bucket(moto), "reelm/us", client=moto.client)
    stores: list[BlobStore] = [local, s3]
    for store in stores:
        before = datetime.now(UTC) - timedelta(seconds=5)
        store.put("originals/a/b", b"x")
        stamp = store.modified("originals/a/b")
        assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
        assert before <= stamp <= datetime.now(UTC) + timedelta(seconds=5)
        with pytest.raises(BlobNotFound):
            store.modified("originals/a/none")
        with pytest.raises(BlobNotFound):
            store.modified("originals/a")  # a prefix is not a blob
        with pytest.raises(ValueError, match="invalid blob key"):
            store.modified("../etc/passwd")
    _age(local, "originals/a/b", 3)
    assert datetime.now(UTC) - local.modified("originals/a/b") > timedelta(hours=2, minutes=59)


# ---- the command -----------------------------------------------------------------------------


def _env_for(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    s = platform.settings
    monkeypatch.setenv("REELM_ADMIN_DATABASE_URL", s.admin_database_url or "")
    monkeypatch.setenv("REELM_DATABASE_PREFIX", s.database_prefix)
    monkeypatch.setenv("REELM_DATA_DIR", str(s.data_dir))


def test_blobs_check_command(
    fresh_platform: Platform, new_user: Callable[..., SignedUp], monkeypatch: pytest.MonkeyPatch
) -> None:
    _env_for(fresh_platform, monkeypatch)
    au = new_user("AU", platform_=fresh_platform).user_id
    add_video(fresh_platform, "au", au, visibility="public")
    clean = CliRunner().invoke(app, ["blobs", "check", "--json"])
    assert clean.exit_code == 0, clean.output
    data = json.loads(clean.stdout)
    assert data["clean"] is True and data["videos"] == 2
    assert data["keys"] == {"public": 2, "us": 0, "ca": 0, "au": 1, "nz": 0, "sg": 0}
    assert "clean" in CliRunner().invoke(app, ["blobs", "check"]).stdout

    au_blobs = fresh_platform.cell("au").blobs
    orphan = videos.original_key(au, uuid.uuid4())
    au_blobs.put(orphan, b"x")
    _age(au_blobs, orphan, 2)
    missing = add_video(fresh_platform, "au", au, status="queued", write_blobs=False)
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: keys on one line
    table = CliRunner().invoke(app, ["blobs", "check"])
    assert table.exit_code == 1
    assert "ORPHAN" in table.stdout and "MISSING" in table.stdout
    assert orphan in table.stdout
    assert videos.original_key(au, missing) in table.stdout
    assert "1 orphans, 1 missing" in table.stdout
    assert au_blobs.exists(orphan)  # only reported

    only_us = CliRunner().invoke(app, ["blobs", "check", "--region", "us", "--json"])
    assert only_us.exit_code == 0, only_us.output
    assert set(json.loads(only_us.stdout)["keys"]) == {"public", "us"}
    assert CliRunner().invoke(app, ["blobs", "check", "--region", "xx"]).exit_code == 2

    deleting = CliRunner().invoke(app, ["blobs", "check", "--delete-orphans", "--json"])
    assert deleting.exit_code == 1  # something was found (and the orphan removed)
    found = json.loads(deleting.stdout)
    assert found["deleted"] == 1
    assert {(p["kind"], p["key"], p["deleted"]) for p in found["problems"]} == {
        ("orphan", orphan, True),
        ("missing", videos.original_key(au, missing), False),
    }
    assert not au_blobs.exists(orphan)
