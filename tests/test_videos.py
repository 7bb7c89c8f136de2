"""The video pipeline end to end: real HTTP (uvicorn), real PostgreSQL queues, real FFmpeg.

A clip goes up with tus, is probed, its original encrypted into the home region, a job on the
home region's queue transcodes it, and it plays: from the public store when public, decrypted
by range from the home region behind a signed URL when not.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import httpx2 as httpx
import pytest
from sqlalchemy import func, select, text

from reelm.accounts.schemas import SignUp
from reelm.accounts.service import log_in, sign_up
from reelm.bootstrap import Platform
from reelm.media.errors import MediaRejected
from reelm.media.models import PublicVideo, Upload, Video
from reelm.media.videos import original_key, private_prefix, public_prefix
from reelm.storage.crypto import BLOB_MAGIC

from . import tus
from .conftest import (
    ACCESS_KEY,
    PASSWORD,
    S3_REGION,
    SECRET_KEY,
    Moto,
    new_bucket,
    serving,
    unique_handle,
)
from .test_transcode import FAST_H264, _make_phone_clip, assert_clean, ffmpeg, pattern, tone


@dataclass
class Clips:
    vertical: Path  # 720x1280, 2 s, tone
    phone: Path  # stored landscape + 90° display matrix, GPS and device tags
    silent: Path  # 640x360, 2 s, no audio
    one_second: Path  # 1280x720, 1 s
    long: Path  # 1920x1080, 12 s: takes a few seconds to transcode
    image: Path  # a PNG renamed .mp4
    audio: Path  # an M4A (sound only)
    truncated: Path  # the vertical clip cut in half


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    d = tmp_path_factory.mktemp("upload-clips")
    c = Clips(
        vertical=d / "vertical.mp4", phone=d / "phone.mov", silent=d / "silent.mp4",
        one_second=d / "one.mp4", long=d / "long.mp4", image=d / "image.mp4",
        audio=d / "audio.m4a", truncated=d / "truncated.mp4",
    )  # fmt: skip
    ffmpeg(*pattern("720x1280", 2), *tone(2), *FAST_H264, "-c:a", "aac", str(c.vertical))
    ffmpeg(*pattern("640x360", 2), *FAST_H264, str(c.silent))
    ffmpeg(*pattern("1280x720", 1), *tone(1), *FAST_H264, "-c:a", "aac", str(c.one_second))
    ffmpeg(*pattern("1920x1080", 12), *tone(12), *FAST_H264, "-c:a", "aac", str(c.long))
    ffmpeg(*pattern("320x240", 0.04), "-frames:v", "1", "-f", "image2", "-c:v", "png",
           str(c.image))  # fmt: skip
    ffmpeg(*tone(2), "-c:a", "aac", str(c.audio))
    data = c.vertical.read_bytes()
    c.truncated.write_bytes(data[: len(data) // 2])
    _make_phone_clip(d, c.phone)
    return c


@pytest.fixture(scope="module")
def media_platform(session_platform_factory: Callable[..., Platform]) -> Platform:
    # Short stall detection, so a killed worker's job is taken over within seconds.
    return session_platform_factory(job_stall_seconds=2)


@pytest.fixture(scope="module")
def http(media_platform: Platform) -> Iterator[httpx.Client]:
    with serving(media_platform) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


@dataclass
class Uploader:
    token: str
    user_id: uuid.UUID
    handle: str
    region: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_uploader(platform: Platform, market: str = "US") -> Uploader:
    handle = unique_handle("up")
    data = SignUp(
        handle=handle,
        display_name="Uploader",
        email=f"{handle}@example.com",
        password=PASSWORD,
        birth_date=date(1990, 1, 1),
        market=market,
    )
    signed = sign_up(platform, data)
    token, user = log_in(platform, handle, PASSWORD)
    return Uploader(token, signed.user_id, handle, user.home_region)


@pytest.fixture
def uploader(media_platform: Platform) -> Callable[[str], Uploader]:
    return lambda market="US": new_uploader(media_platform, market)


def send(http: httpx.Client, who: Uploader, path: Path, **meta: Any) -> httpx.Response:
    return tus.upload(http, who.token, path.read_bytes(), chunk=256 * 1024, **meta)


def video_id_of(response: httpx.Response) -> uuid.UUID:
    assert response.status_code == 204, response.text
    return uuid.UUID(response.headers["Location"].rsplit("/", 1)[1])


def video(http: httpx.Client, who: Uploader, video_id: uuid.UUID) -> dict[str, Any]:
    response = http.get(f"/api/v1/videos/{video_id}", headers=who.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def all_keys(platform: Platform) -> dict[str, list[str]]:
    stores = {r: c.blobs for r, c in platform.cells.items()} | {"public": platform.public_blobs}
    return {name: list(store.iter_keys()) for name, store in stores.items()}


def staged(platform: Platform, region: str, ident: uuid.UUID) -> list[Path]:
    return sorted(platform.settings.staging_dir(region).glob(f"{ident}*"))


# ---- a video's life --------------------------------------------------------------------------


def test_public_vertical_clip_plays_from_the_public_store(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    who = uploader("US")
    caption = "Sunset skate #Skate #sunset @someone.else ünïcödé 🛹"
    done = send(http, who, clips.vertical, caption=caption, visibility="public")
    video_id = video_id_of(done)
    queued = video(http, who, video_id)
    assert queued["status"] == "queued" and queued["sources"] == []
    assert (queued["width"], queued["height"]) == (720, 1280)

    tus.run_jobs(media_platform, "us")
    ready = video(http, who, video_id)
    assert ready["status"] == "ready" and ready["progress"] == 100
    assert ready["caption"] == caption
    assert ready["hashtags"] == ["skate", "sunset"] and ready["mentions"] == ["someone.else"]
    assert [s["label"] for s in ready["sources"]] == ["720p", "480p"]  # never upscaled
    assert ready["share_url"] == f"/v/{video_id}"

    # Anyone sees it in the feed and by id, without the owner's account id.
    anonymous = http.get(f"/api/v1/videos/{video_id}").json()
    assert anonymous["author"]["handle"] == who.handle and not anonymous["mine"]
    assert str(who.user_id) not in http.get(f"/api/v1/videos/{video_id}").text
    feed_ids = [item["id"] for item in http.get("/api/v1/feed?limit=50").json()["items"]]
    assert str(video_id) in feed_ids

    # Range requests: 206 with the right bytes; shared caching for 5 minutes; 416 past the end.
    source = ready["sources"][0]["url"]
    full = http.get(source)
    assert full.status_code == 200
    assert full.headers["cache-control"] == "public, max-age=300"
    part = http.get(source, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == full.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(full.content)}"
    tail = http.get(source, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == full.content[-10:]
    beyond = http.get(source, headers={"Range": f"bytes={len(full.content)}-"})
    assert beyond.status_code == 416
    assert http.get(source, headers={"If-None-Match": full.headers["etag"]}).status_code == 304
    poster = http.get(ready["poster_url"])
    assert poster.headers["content-type"] == "image/jpeg" and poster.content[:2] == b"\xff\xd8"

    keys = all_keys(media_platform)
    assert original_key(who.user_id, video_id) in keys["us"]
    assert sorted(k for k in keys["public"] if k.startswith(public_prefix(video_id))) == [
        f"v/{video_id}/480p.mp4",
        f"v/{video_id}/720p.mp4",
        f"v/{video_id}/poster.jpg",
    ]
    assert staged(media_platform, "us", video_id) == []


def test_phone_clip_is_upright_and_every_rendition_is_stripped(
    media_platform: Platform,
    http: httpx.Client,
    uploader: Callable[[str], Uploader],
    clips: Clips,
    tmp_path: Path,
) -> None:
    who = uploader("US")
    video_id = video_id_of(send(http, who, clips.phone, caption="from my phone"))
    queued = video(http, who, video_id)
    assert (queued["width"], queued["height"]) == (1080, 1920)  # the display matrix applied
    tus.run_jobs(media_platform, "us")
    ready = video(http, who, video_id)
    assert ready["status"] == "ready"
    assert [(s["width"], s["height"]) for s in ready["sources"]] == [
        (1080, 1920),
        (720, 1280),
        (480, 854),
    ]
    for source in ready["sources"]:
        path = tmp_path / source["label"]
        path.write_bytes(http.get(source["url"]).content)
        assert_clean(path)  # no GPS, no device, no rotation tag, no chapters or subtitles
    # The original keeps its tags (it is the user's file), but only encrypted, in the region.
    original = media_platform.cell("us").blobs.get(original_key(who.user_id, video_id))
    assert original.startswith(BLOB_MAGIC) and b"iPhone" not in original


@pytest.mark.parametrize("clip", ["silent", "one_second"])
def test_silent_and_one_second_clips(
    media_platform: Platform,
    http: httpx.Client,
    uploader: Callable[[str], Uploader],
    clips: Clips,
    tmp_path: Path,
    clip: str,
) -> None:
    who = uploader("CA")
    video_id = video_id_of(send(http, who, getattr(clips, clip)))
    tus.run_jobs(media_platform, "ca")
    ready = video(http, who, video_id)
    assert ready["status"] == "ready"
    rendition = tmp_path / "r.mp4"
    rendition.write_bytes(http.get(ready["sources"][-1]["url"]).content)
    with av.open(str(rendition)) as container:
        kinds = [s.type for s in container.streams]
        seconds = float(container.duration or 0) / av.time_base
    assert kinds == (["video"] if clip == "silent" else ["video", "audio"])
    assert seconds == pytest.approx(2.0 if clip == "silent" else 1.0, abs=0.15)


def test_private_video_stays_encrypted_in_the_home_region(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    who = uploader("US")
    other = uploader("US")
    video_id = video_id_of(send(http, who, clips.vertical, caption="just me", visibility="private"))
    tus.run_jobs(media_platform, "us")
    ready = video(http, who, video_id)
    assert ready["status"] == "ready" and ready["share_url"] is None

    # Nobody else sees it: not in the feed, not by id, not on the profile.
    assert http.get(f"/api/v1/videos/{video_id}").status_code == 404
    assert http.get(f"/api/v1/videos/{video_id}", headers=other.auth).status_code == 404
    feed = http.get("/api/v1/feed?limit=50").json()["items"]
    assert str(video_id) not in [item["id"] for item in feed]
    grid = http.get(f"/api/v1/users/{who.handle}/videos").json()["items"]
    assert str(video_id) not in [item["id"] for item in grid]
    own_grid = http.get(f"/api/v1/users/{who.handle}/videos", headers=who.auth).json()["items"]
    assert str(video_id) in [item["id"] for item in own_grid]

    # Its files: encrypted in the US store, nowhere public; the owner's signed URL plays them.
    keys = all_keys(media_platform)
    mine = [k for k in keys["us"] if k.startswith(private_prefix(who.user_id, video_id))]
    assert sorted(k.rsplit("/", 1)[1] for k in mine) == ["480p.mp4", "720p.mp4", "poster.jpg"]
    for key in mine:
        assert media_platform.cell("us").blobs.get(key).startswith(BLOB_MAGIC)
    assert not [k for k in keys["public"] if str(video_id) in k]
    url = ready["sources"][0]["url"]
    assert url.startswith(f"/media/p/us/{video_id}/720p.mp4?expires=")
    whole = http.get(url, headers=who.auth)
    assert whole.status_code == 200 and whole.headers["cache-control"].startswith("private")
    assert whole.content[4:8] == b"ftyp"
    part = http.get(url, headers={"Range": "bytes=70000-200000", **who.auth})
    assert part.status_code == 206 and part.content == whole.content[70000:200001]
    # A tampered or expired URL does not open it, nor the URL in anyone else's hands.
    forged = url.replace("720p.mp4", "480p.mp4")
    assert http.get(forged, headers=who.auth).status_code == 403
    expired = url.split("?")[0] + "?expires=1000&signature=" + url.rsplit("=", 1)[1]
    assert http.get(expired, headers=who.auth).status_code == 403
    assert http.get(url.replace("/us/", "/ca/"), headers=who.auth).status_code == 403
    assert http.get(url).status_code == 403
    assert http.get(url, headers=other.auth).status_code == 403


# ---- bad input -------------------------------------------------------------------------------


BAD: dict[str, tuple[Callable[[Clips], bytes], str]] = {
    # Fixed bytes: about 1 random buffer in 300 looks enough like some format to FFmpeg's
    # probe that it answers "format not accepted" (unsupported-container), also a clear refusal.
    "random": (lambda c: random.Random(7).randbytes(50_000), "not-a-video"),
    "truncated": (lambda c: c.truncated.read_bytes(), "truncated-video"),
    "image": (lambda c: c.image.read_bytes(), "image-not-video"),
    "audio": (lambda c: c.audio.read_bytes(), "audio-not-video"),
    "html": (lambda c: b"<script>alert(1)</script>'; DROP TABLE videos; --" * 50, "not-a-video"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_are_refused_with_a_reason_and_leave_nothing(
    media_platform: Platform,
    http: httpx.Client,
    uploader: Callable[[str], Uploader],
    clips: Clips,
    kind: str,
) -> None:
    who = uploader("US")
    make, slug = BAD[kind]
    before = all_keys(media_platform)
    refused = tus.upload(http, who.token, make(clips), caption="bad")
    assert refused.status_code in (413, 422)
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == f"/problems/{slug}" and problem["field"] == "file"
    assert len(problem["detail"]) > 20 and "/" not in problem["detail"].replace("MP4, MOV", "")
    assert http.get("/api/v1/me/videos", headers=who.auth).json() == []
    assert all_keys(media_platform) == before
    with media_platform.cell("us").db.transaction() as s:
        assert s.scalar(select(Upload.id).where(Upload.owner_id == who.user_id)) is None
        assert s.scalar(select(Video.id).where(Video.owner_id == who.user_id)) is None
    leftovers = list(media_platform.settings.staging_dir("us").iterdir())
    assert not [p for p in leftovers if p.suffix in (".part", ".src")]


def test_bad_requests(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader]
) -> None:
    who = uploader("US")
    limit = media_platform.settings.max_upload_bytes
    assert tus.create(http, who.token, 0).json()["type"] == "/problems/invalid-input"
    too_big = tus.create(http, who.token, limit + 1)
    assert too_big.status_code == 413 and "500 MB" in too_big.json()["detail"]
    huge = tus.create(http, who.token, 10**30)
    assert huge.status_code == 422
    bad_meta = http.post(
        "/api/v1/videos",
        headers={**tus.TUS, **who.auth, "Upload-Length": "10", "Upload-Metadata": "caption !!!"},
    )
    assert bad_meta.status_code == 422 and bad_meta.json()["field"] == "Upload-Metadata"
    bad_visibility = tus.create(http, who.token, 10, visibility="everyone")
    assert bad_visibility.status_code == 422 and "visibility" in bad_visibility.json()["detail"]
    long_caption = tus.create(http, who.token, 10, caption="x" * 2201)
    assert long_caption.status_code == 422
    no_version = http.post("/api/v1/videos", headers={**who.auth, "Upload-Length": "10"})
    assert no_version.status_code == 412
    anonymous = http.post("/api/v1/videos", headers={**tus.TUS, "Upload-Length": "10"})
    assert anonymous.status_code == 401

    url = tus.create(http, who.token, 10).headers["Location"]
    wrong_type = http.patch(
        url, headers={**tus.TUS, **who.auth, "Upload-Offset": "0"}, content=b"0123456789"
    )
    assert wrong_type.status_code == 415
    assert tus.patch(http, who.token, url, 5, b"01234").status_code == 409
    assert tus.patch(http, who.token, url, 0, b"0" * 11).status_code == 413
    # Someone else's upload does not exist for them.
    other = uploader("US")
    assert tus.patch(http, other.token, url, 0, b"0123456789").status_code == 404
    assert http.delete(url, headers={**tus.TUS, **who.auth}).status_code == 204
    assert http.head(url, headers={**tus.TUS, **who.auth}).status_code == 404


def test_cookie_writes_need_the_csrf_token(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader]
) -> None:
    who = uploader("US")
    headers = {**tus.TUS, "Upload-Length": "10", "Cookie": f"reelm_session={who.token}"}
    refused = http.post("/api/v1/videos", headers=headers)
    assert refused.status_code == 403 and refused.json()["type"] == "/problems/csrf-failed"
    forged = http.post("/api/v1/videos", headers={**headers, "X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    reading = http.get("/api/v1/me/videos", headers={"Cookie": f"reelm_session={who.token}"})
    assert reading.status_code == 200


# ---- resuming, concurrency, failures ---------------------------------------------------------


def test_an_interrupted_upload_resumes_where_it_stopped(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    who = uploader("AU")
    data = clips.vertical.read_bytes()
    url = tus.create(http, who.token, len(data), caption="resumed").headers["Location"]
    assert tus.patch(http, who.token, url, 0, data[:100_000]).status_code == 204

    # The connection drops mid-body (a phone losing its network): the server keeps what
    # arrived. A raw socket, because an HTTP client would not send a body it cannot finish.
    parts = urlsplit(str(http.base_url))
    rest = len(data) - 100_000
    head = (
        f"PATCH {url} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
        f"Authorization: Bearer {who.token}\r\nUpload-Offset: 100000\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {rest}\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port)) as raw:
        raw.sendall(head.encode() + data[100_000:150_000])
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    offset = 100_000
    while time.monotonic() < deadline:
        offset = int(http.head(url, headers={**tus.TUS, **who.auth}).headers["Upload-Offset"])
        if offset > 100_000:
            break
        time.sleep(0.1)
    assert 100_000 < offset <= 150_000
    progress = http.get("/api/v1/me/videos", headers=who.auth).json()
    assert progress[0]["status"] == "uploading" and 0 < progress[0]["progress"] < 100
    done = tus.patch(http, who.token, url, offset, data[offset:])
    video_id = video_id_of(done)
    tus.run_jobs(media_platform, "au")
    assert video(http, who, video_id)["status"] == "ready"
    rendition = http.get(video(http, who, video_id)["sources"][0]["url"]).content
    assert rendition[4:8] == b"ftyp"


def test_concurrent_uploads_all_become_videos(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    people = [uploader("NZ") for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda w: send(http, w, clips.one_second), people))
    ids = [video_id_of(r) for r in done]
    assert len(set(ids)) == 4
    tus.run_jobs(media_platform, "nz")
    assert {video(http, w, i)["status"] for w, i in zip(people, ids, strict=True)} == {"ready"}


def test_a_failed_video_can_be_retried_or_deleted(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    who = uploader("US")
    video_id = video_id_of(send(http, who, clips.one_second))
    # The original is lost before the job runs (a broken disk): the job cannot make renditions.
    from reelm.media.videos import source_path

    media_platform.cell("us").blobs.delete(original_key(who.user_id, video_id))
    source_path(media_platform, "us", video_id).unlink()
    with media_platform.cell("us").db.transaction() as s:
        s.execute(
            text("UPDATE procrastinate_jobs SET attempts = 2 WHERE args->>'video_id' = :v"),
            {"v": str(video_id)},
        )
    tus.run_jobs(media_platform, "us")
    failed = video(http, who, video_id)
    assert failed["status"] == "failed"
    assert failed["failure"].startswith("We could not process this video")
    assert http.post(f"/api/v1/videos/{video_id}/retry", headers=who.auth).status_code == 202
    assert video(http, who, video_id)["status"] == "queued"
    twice = http.post(f"/api/v1/videos/{video_id}/retry", headers=who.auth)
    assert twice.status_code == 409
    assert http.delete(f"/api/v1/videos/{video_id}", headers=who.auth).status_code == 204
    assert http.get(f"/api/v1/videos/{video_id}", headers=who.auth).status_code == 404
    tus.run_jobs(media_platform, "us")  # the queued retry finds nothing to do


def test_deleting_a_video_leaves_no_blob(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    who = uploader("US")
    public = video_id_of(send(http, who, clips.one_second, visibility="public"))
    private = video_id_of(send(http, who, clips.one_second, visibility="followers"))
    tus.run_jobs(media_platform, "us")
    ready = video(http, who, public)
    for video_id in (public, private):
        assert http.delete(f"/api/v1/videos/{video_id}", headers=who.auth).status_code == 204
    keys = all_keys(media_platform)
    assert not [k for store in keys.values() for k in store if str(who.user_id) in k]
    assert not [
        k for store in keys.values() for k in store if str(public) in k or str(private) in k
    ]
    with media_platform.catalog.transaction() as c:
        assert c.get(PublicVideo, public) is None
    assert http.get(ready["sources"][0]["url"]).status_code == 404
    other = uploader("US")
    assert http.delete(f"/api/v1/videos/{public}", headers=other.auth).status_code == 404


def _worker(
    platform: Platform, region: str, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    settings = platform.settings
    env = {
        **os.environ,
        "REELM_DATA_DIR": str(settings.data_dir),
        "REELM_ADMIN_DATABASE_URL": str(settings.admin_database_url),
        "REELM_DATABASE_PREFIX": settings.database_prefix,
        "REELM_JOB_STALL_SECONDS": str(settings.job_stall_seconds),
    }
    reelm = Path(sys.executable).parent / "reelm"
    return subprocess.Popen(
        [str(reelm), "worker", "--region", region],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )


def test_a_worker_killed_mid_transcode_leads_to_a_completed_video(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    who = uploader("US")
    video_id = video_id_of(send(http, who, clips.long, caption="long one"))
    worker = _worker(media_platform, "us")
    try:
        deadline = time.monotonic() + 120
        while video(http, who, video_id)["progress"] < 5:
            assert time.monotonic() < deadline, "the worker never started the job"
            assert worker.poll() is None, "the worker died on its own"
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    stuck = video(http, who, video_id)
    assert stuck["status"] == "processing" and stuck["progress"] < 100
    # Another worker takes the job over once the dead one has missed its heartbeats.
    time.sleep(media_platform.settings.job_stall_seconds + 1)
    tus.run_jobs(media_platform, "us")
    ready = video(http, who, video_id)
    assert ready["status"] == "ready"
    assert [s["label"] for s in ready["sources"]] == ["1080p", "720p", "480p"]
    assert not list(media_platform.settings.staging_dir("us").glob(f"{video_id}*"))


def test_a_video_that_lost_its_job_is_requeued_by_the_sweep(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    from datetime import timedelta

    from reelm.media.videos import sweep

    who = uploader("US")
    video_id = video_id_of(send(http, who, clips.one_second))
    # As if the process died between the video's commit and the deferral of its job.
    with media_platform.cell("us").db.transaction() as s:
        s.execute(
            text("DELETE FROM procrastinate_jobs WHERE args->>'video_id' = :v"),
            {"v": str(video_id)},
        )
    assert sweep(media_platform, "us") == 0  # too recent: its job may still be on its way
    assert sweep(media_platform, "us", older_than=timedelta(0)) == 1
    assert sweep(media_platform, "us", older_than=timedelta(0)) == 0  # its job waits now
    tus.run_jobs(media_platform, "us")
    assert video(http, who, video_id)["status"] == "ready"


def test_the_pipeline_on_s3_stores(
    platform_factory: Callable[..., Platform],
    moto: Moto,
    monkeypatch: pytest.MonkeyPatch,
    clips: Clips,
) -> None:
    """Production layout: the US region's blobs and the public store in S3 buckets (moto's
    server on loopback), everything else as in the tests above."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    us_bucket, public_bucket = new_bucket(moto), new_bucket(moto)
    s3 = {"s3_endpoint_url": moto.url, "s3_region": S3_REGION}
    platform = platform_factory(
        regions={"us": {"blob_url": f"s3://{us_bucket}/blobs", **s3}},
        public_store={"blob_url": f"s3://{public_bucket}", **s3},
    )
    who = new_uploader(platform, "US")
    with serving(platform) as url, httpx.Client(base_url=url, timeout=60) as http:
        public = video_id_of(send(http, who, clips.one_second, visibility="public"))
        private = video_id_of(send(http, who, clips.one_second, visibility="private"))
        tus.run_jobs(platform, "us")
        for video_id in (public, private):
            ready = video(http, who, video_id)
            assert ready["status"] == "ready"
            # The owner's session: a private file's URL opens for it only.
            whole = http.get(ready["sources"][0]["url"], headers=who.auth)
            assert whole.status_code == 200 and whole.content[4:8] == b"ftyp"
            part = http.get(
                ready["sources"][0]["url"], headers={**who.auth, "Range": "bytes=10-20"}
            )
            assert part.status_code == 206 and part.content == whole.content[10:21]
        listed = moto.client.list_objects_v2(Bucket=public_bucket)["Contents"]
        assert sorted(o["Key"] for o in listed) == sorted(
            f"v/{public}/{f}" for f in ("720p.mp4", "480p.mp4", "poster.jpg")
        )
        region_keys = [o["Key"] for o in moto.client.list_objects_v2(Bucket=us_bucket)["Contents"]]
        assert f"blobs/{original_key(who.user_id, private)}" in region_keys
        assert f"blobs/{private_prefix(who.user_id, private)}720p.mp4" in region_keys
        for video_id in (public, private):
            assert http.delete(f"/api/v1/videos/{video_id}", headers=who.auth).status_code == 204
    for bucket in (us_bucket, public_bucket):
        assert moto.client.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_a_us_users_protected_media_and_jobs_exist_only_in_us(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    who = uploader("US")
    private = video_id_of(send(http, who, clips.one_second, visibility="private"))
    followers = video_id_of(send(http, who, clips.one_second, visibility="followers"))
    public = video_id_of(send(http, who, clips.one_second, visibility="public"))
    # Job payloads: in the US queue only, and ids only.
    for region, cell in media_platform.cells.items():
        with cell.db.transaction() as s:
            payloads = list(
                s.scalars(text("SELECT args::text FROM procrastinate_jobs WHERE args ? 'video_id'"))
            )
        ours = [p for p in payloads if any(str(v) in p for v in (private, followers, public))]
        assert len(ours) == (3 if region == "us" else 0), region
        assert all(set(json.loads(p)) == {"video_id"} for p in ours)
    tus.run_jobs(media_platform, "us")
    keys = all_keys(media_platform)
    for store, names in keys.items():
        mentioning = [k for k in names if str(who.user_id) in k]
        if store != "us":
            assert not mentioning, store
        else:
            # Three originals, and the renditions of the two protected videos.
            assert len([k for k in mentioning if k.startswith("originals/")]) == 3
            assert len([k for k in mentioning if k.startswith("private/")]) == 6
    assert sorted(k.split("/")[1] for k in keys["public"] if str(public) in k) == [str(public)] * 3
    for video_id in (private, followers):
        assert not [k for k in keys["public"] if str(video_id) in k]
    # Rows: the videos in the US database only; the catalog knows the public one alone.
    for region, cell in media_platform.cells.items():
        with cell.db.transaction() as s:
            found = s.scalar(
                select(func.count()).select_from(Video).where(Video.owner_id == who.user_id)
            )
        assert found == (3 if region == "us" else 0)
    with media_platform.catalog.transaction() as c:
        assert c.get(PublicVideo, public) is not None
        assert c.get(PublicVideo, private) is None and c.get(PublicVideo, followers) is None


def test_a_clip_over_the_configured_length_is_refused(
    platform_factory: Callable[..., Platform], clips: Clips
) -> None:
    from reelm.media.uploads import UploadMeta
    from reelm.media.videos import ingest

    platform = platform_factory(max_video_seconds=1.5)
    who = new_uploader(platform, "SG")
    _token, user = log_in(platform, who.handle, PASSWORD)
    with pytest.raises(MediaRejected) as refused:
        ingest(platform, user, clips.vertical, UploadMeta())
    assert refused.value.slug == "video-too-long"
    assert "1.5" in refused.value.detail or "0:01" in refused.value.detail
    assert list(platform.cell("sg").blobs.iter_keys()) == []
    assert list(platform.settings.staging_dir("sg").iterdir()) == []


def test_an_empty_patch_at_the_end_finishes_an_upload_the_server_dropped(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    """The server died after storing the last byte and before making the video: the client's
    retry (an empty PATCH at the end, as tus clients send) makes it."""
    from reelm.media.uploads import staging_path

    who = uploader("US")
    data = clips.one_second.read_bytes()
    url = tus.create(http, who.token, len(data)).headers["Location"]
    upload_id = uuid.UUID(url.rsplit("/", 1)[1])
    staging_path(media_platform, "us", upload_id).write_bytes(data)
    with media_platform.cell("us").db.transaction() as s:
        s.execute(text('UPDATE uploads SET "offset" = length WHERE id = :id'), {"id": upload_id})
    assert tus.patch(http, who.token, url, len(data), b"more").status_code == 409
    video_id = video_id_of(tus.patch(http, who.token, url, len(data), b""))
    assert video_id == upload_id
    assert video(http, who, video_id)["status"] == "queued"
    again = tus.patch(http, who.token, url, len(data), b"")
    assert video_id_of(again) == video_id  # asking again once the video exists: same answer
    assert tus.patch(http, who.token, url, len(data), b"more").status_code == 409
    tus.run_jobs(media_platform, "us")
    assert video(http, who, video_id)["status"] == "ready"


def test_purging_an_account_removes_its_videos_uploads_and_files(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    from datetime import UTC, datetime, timedelta

    from reelm.accounts.lifecycle import purge_due, request_deletion

    who = uploader("CA")
    public = video_id_of(send(http, who, clips.one_second, visibility="public"))
    private = video_id_of(send(http, who, clips.one_second, visibility="private"))
    tus.run_jobs(media_platform, "ca")
    queued = video_id_of(send(http, who, clips.one_second))  # not processed yet
    pending = tus.create(http, who.token, 1000).headers["Location"]
    assert tus.patch(http, who.token, pending, 0, b"x" * 500).status_code == 204
    _token, user = log_in(media_platform, who.handle, PASSWORD)
    request_deletion(media_platform, user)
    # Hidden from everyone at once: the deletion is pending.
    feed = http.get("/api/v1/feed?limit=50").json()["items"]
    assert str(public) not in [item["id"] for item in feed]
    assert http.get(f"/api/v1/videos/{public}").status_code == 404
    purged = purge_due(media_platform, at=datetime.now(UTC) + timedelta(days=31), regions=["ca"])
    assert who.user_id in purged
    keys = all_keys(media_platform)
    for video_id in (public, private, queued):
        assert not [k for store in keys.values() for k in store if str(video_id) in k]
    assert not [k for store in keys.values() for k in store if str(who.user_id) in k]
    with media_platform.cell("ca").db.transaction() as s:
        assert s.scalar(select(Video.id).where(Video.owner_id == who.user_id)) is None
        assert s.scalar(select(Upload.id).where(Upload.owner_id == who.user_id)) is None
    with media_platform.catalog.transaction() as c:
        assert c.get(PublicVideo, public) is None
    upload_id = pending.rsplit("/", 1)[1]
    staging = list(media_platform.settings.staging_dir("ca").iterdir())
    assert not [p for p in staging if p.name.startswith((upload_id, str(queued)))]
    tus.run_jobs(media_platform, "ca")  # the queued video's job finds nothing


def test_the_owner_changes_caption_and_visibility(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    who = uploader("US")
    video_id = video_id_of(send(http, who, clips.one_second, caption="first #one"))
    # Made private while it waits in the queue: the job publishes it privately.
    edit = http.patch(
        f"/api/v1/videos/{video_id}", headers=who.auth, json={"visibility": "private"}
    )
    assert edit.status_code == 200 and edit.json()["visibility"] == "private"
    tus.run_jobs(media_platform, "us")

    def public_files() -> list[str]:
        return [k for k in media_platform.public_blobs.iter_keys() if str(video_id) in k]

    def private_files() -> list[str]:
        prefix = private_prefix(who.user_id, video_id)
        return list(media_platform.cell("us").blobs.iter_keys(prefix))

    def in_feed() -> bool:
        items = http.get("/api/v1/feed?limit=50").json()["items"]
        return str(video_id) in [item["id"] for item in items]

    assert video(http, who, video_id)["status"] == "ready"
    assert public_files() == [] and len(private_files()) == 3 and not in_feed()

    # Public: into the feed, its files into the public store, none left at home.
    edit = http.patch(
        f"/api/v1/videos/{video_id}",
        headers=who.auth,
        json={"visibility": "public", "caption": "now #Two @friend", "allow_comments": False},
    )
    body = edit.json()
    assert body["hashtags"] == ["two"] and body["mentions"] == ["friend"]
    assert not body["allow_comments"]
    assert len(public_files()) == 3 and private_files() == [] and in_feed()
    anonymous = http.get(f"/api/v1/videos/{video_id}").json()
    assert anonymous["caption"] == "now #Two @friend"
    assert http.get(anonymous["sources"][0]["url"]).content[4:8] == b"ftyp"
    assert str(video_id) in str(http.get("/api/v1/hashtags/two/videos").json())

    # Followers-only: out of the feed and the public store at once; the owner still plays it.
    old_url = anonymous["sources"][0]["url"]
    http.patch(f"/api/v1/videos/{video_id}", headers=who.auth, json={"visibility": "followers"})
    assert public_files() == [] and len(private_files()) == 3 and not in_feed()
    assert http.get(old_url).status_code == 404
    assert http.get(f"/api/v1/videos/{video_id}").status_code == 404
    mine = video(http, who, video_id)
    assert http.get(mine["sources"][0]["url"], headers=who.auth).content[4:8] == b"ftyp"

    # Not someone else's to change; bad values refused.
    other = uploader("US")
    refused = http.patch(
        f"/api/v1/videos/{video_id}", headers=other.auth, json={"visibility": "public"}
    )
    assert refused.status_code == 404
    for bad in ({"caption": "a\x00b"}, {"visibility": "world"}, {"caption": "x" * 2201}, {"x": 1}):
        assert (
            http.patch(f"/api/v1/videos/{video_id}", headers=who.auth, json=bad).status_code == 422
        )


def test_review_fixes_hold(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    """Cancel after the last byte, odd Range and metadata values, caching of what a signed-in
    user sees, and files an earlier attempt or a deleted video left in the public store."""
    from reelm.media.videos import process_video

    who = uploader("US")
    data = clips.one_second.read_bytes()
    url = tus.create(http, who.token, len(data)).headers["Location"]
    video_id = video_id_of(tus.patch(http, who.token, url, 0, data))
    # Every byte arrived: the upload is a video now, it is deleted as one.
    cancel = http.delete(url, headers={**tus.TUS, **who.auth})
    assert cancel.status_code == 409 and "delete the video" in cancel.json()["detail"]
    assert video(http, who, video_id)["status"] == "queued"

    # A public file an earlier attempt left for this (private) video goes when the job runs.
    http.patch(f"/api/v1/videos/{video_id}", headers=who.auth, json={"visibility": "private"})
    media_platform.public_blobs.put(f"v/{video_id}/720p.mp4", b"left by an earlier attempt")
    tus.run_jobs(media_platform, "us")
    assert list(media_platform.public_blobs.iter_keys(f"v/{video_id}/")) == []
    assert video(http, who, video_id)["status"] == "ready"

    # A job for a deleted video removes what an attempt published before the deletion.
    gone = uuid.uuid4()
    media_platform.public_blobs.put(f"v/{gone}/720p.mp4", b"published, then deleted")
    assert process_video(media_platform, "us", gone) == "gone"
    assert list(media_platform.public_blobs.iter_keys(f"v/{gone}/")) == []

    # Ranges with absurd numbers are ignored (the whole file), never a server error.
    public = video_id_of(send(http, who, clips.one_second))
    tus.run_jobs(media_platform, "us")
    source = video(http, who, public)["sources"][0]["url"]
    for value in ("bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 40, "bytes=5-2", "items=0-1"):
        answer = http.get(source, headers={"Range": value})
        assert answer.status_code in (200, 416), value

    # NUL in Upload-Metadata is refused clearly.
    nul = base64.b64encode(b"a\x00b").decode()
    refused = http.post(
        "/api/v1/videos",
        headers={**tus.TUS, **who.auth, "Upload-Length": "10", "Upload-Metadata": f"caption {nul}"},
    )
    assert refused.status_code == 422

    # What a signed-in user sees is not for shared caches; public media is, briefly.
    assert http.get("/api/v1/me/videos", headers=who.auth).headers["cache-control"] == (
        "private, no-store"
    )
    assert http.get(source).headers["cache-control"] == "public, max-age=300"


def test_reelm_worker_tells_what_it_makes(
    media_platform: Platform, http: httpx.Client, uploader: Callable[[str], Uploader], clips: Clips
) -> None:
    who = uploader("US")
    video_id = video_id_of(send(http, who, clips.one_second))
    worker = _worker(media_platform, "us", stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while video(http, who, video_id)["status"] != "ready":
            assert time.monotonic() < deadline, "the worker did not make the video"
            assert worker.poll() is None, "the worker died"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        _out, err = worker.communicate(timeout=30)
    said = err.decode()
    assert "worker for region us running" in said
    assert f"video {video_id}: ready" in said
