"""Sample clips for ``reelm demo``: made once per module with the real FFmpeg, then inspected
with PyAV and the platform's own probe."""

from __future__ import annotations

import array
import dataclasses
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from reelm.demo import SAMPLE_USERS, STAFF_HANDLE
from reelm.media import samples
from reelm.media.probe import probe
from reelm.media.samples import SampleClip, SampleError, ensure_samples

MENTION = re.compile(r"@([a-z0-9._]+[a-z0-9_])")


@dataclass
class Made:
    cache: Path
    clips: list[SampleClip]
    progress: list[tuple[int, int]]
    seconds: float


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    cache = tmp_path_factory.mktemp("samples")
    progress: list[tuple[int, int]] = []
    started = time.monotonic()
    clips = ensure_samples(cache, on_progress=lambda done, total: progress.append((done, total)))
    return Made(cache, clips, progress, time.monotonic() - started)


def peak(path: Path, seconds: float = 2.0) -> float:
    """The loudest sample in the first ``seconds`` of the clip's sound (AAC decodes to float)."""
    loudest = 0.0
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            assert frame.format.name == "fltp"
            for plane in frame.planes:
                values = array.array("f", bytes(plane)[: frame.samples * 4])
                loudest = max(loudest, max((abs(v) for v in values), default=0.0))
            if frame.time is not None and frame.time > seconds:
                break
    return loudest


def test_about_six_clips_one_per_file(made: Made) -> None:
    assert 5 <= len(made.clips) <= 8
    assert len({clip.path for clip in made.clips}) == len(made.clips)
    assert all(clip.path.parent == made.cache and clip.path.suffix == ".mp4" for clip in made.clips)
    print(f"made {len(made.clips)} clips in {made.seconds:.1f} s")


def test_clips_are_portrait_h264_aac_with_sound(made: Made) -> None:
    for clip in made.clips:
        with av.open(str(clip.path)) as container:
            assert container.duration is not None
            duration = container.duration / av.time_base
            assert 5.0 <= duration <= 8.2, (clip.path.name, duration)
            video = container.streams.video[0]
            assert (video.codec_context.name, video.width, video.height) == ("h264", 720, 1280)
            assert video.average_rate == 30
            assert video.sample_aspect_ratio in (None, 1)  # square pixels: really 9:16
            audio = container.streams.audio[0]
            assert audio.codec_context.name == "aac"
            assert audio.channels == 2
        assert peak(clip.path) > 0.05, f"{clip.path.name} is silent"


def test_the_platform_accepts_every_clip(made: Made) -> None:
    for clip in made.clips:
        result = probe(clip.path)
        assert result.container == "mp4"
        assert (result.video.display_width, result.video.display_height) == (720, 1280)
        assert result.audio is not None
        assert not result.needs_stripping


def test_captions_read_like_posts_by_demo_users(made: Made) -> None:
    handles = {handle for handle, *_ in SAMPLE_USERS} - {STAFF_HANDLE}
    assert {clip.handle for clip in made.clips} <= handles
    assert len({clip.handle for clip in made.clips}) == len(made.clips)
    assert all("#" in clip.caption for clip in made.clips)
    mentions = [m for clip in made.clips for m in MENTION.findall(clip.caption)]
    assert mentions and set(mentions) <= handles
    assert all(f"@{clip.handle}" not in clip.caption for clip in made.clips)


def test_progress_is_reported_clip_by_clip(made: Made) -> None:
    total = len(made.clips)
    assert made.progress == [(done, total) for done in range(1, total + 1)]


def test_a_second_call_reuses_the_cache(made: Made) -> None:
    before = {clip.path: clip.path.stat() for clip in made.clips}
    started = time.monotonic()
    again = ensure_samples(made.cache)
    assert time.monotonic() - started < 5
    assert again == made.clips
    for path, stat in before.items():
        now = path.stat()
        assert (now.st_ino, now.st_mtime_ns, now.st_size) == (
            stat.st_ino,
            stat.st_mtime_ns,
            stat.st_size,
        )


def test_a_damaged_clip_is_made_again_and_leftovers_are_swept(made: Made, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(made.cache, cache)
    clips = [dataclasses.replace(c, path=cache / c.path.name) for c in made.clips]
    damaged = clips[-1].path
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    # A clip from an older recipe, and the work directory of a run killed long ago.
    stale = cache / f"{clips[0].path.name.rsplit('-', 1)[0]}-0123456789ab.mp4"
    stale.write_bytes(b"old")
    killed = cache / ".making-abc123"
    killed.mkdir()
    (killed / "half.mp4").write_bytes(b"\0" * 100)
    os.utime(killed, (time.time() - 7200, time.time() - 7200))
    kept = {c.path: c.path.stat().st_mtime_ns for c in clips[:-1]}

    assert ensure_samples(cache) == clips
    probe(damaged)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items())
    assert sorted(cache.iterdir()) == sorted(c.path for c in clips)


def test_ffmpeg_failure_names_the_clip_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recipe = dataclasses.replace(samples.RECIPES[0], slug="broken", background="nosuchsource")
    monkeypatch.setattr(samples, "RECIPES", (recipe,))
    with pytest.raises(SampleError, match=r"'broken'.*FFmpeg failed") as failure:
        ensure_samples(tmp_path)
    assert "nosuchsource" in str(failure.value)  # the end of FFmpeg's own message
    assert list(tmp_path.iterdir()) == []


def test_a_changed_recipe_gets_a_new_name() -> None:
    recipe = samples.RECIPES[0]
    pam = samples._title_image(recipe.title, recipe.color, recipe.handle).pam()
    same = samples._digest(recipe, pam)
    assert samples._digest(recipe, pam) == same
    assert samples._digest(dataclasses.replace(recipe, seconds=5.0), pam) != same
    other = samples._title_image(("OTHER",), recipe.color, recipe.handle).pam()
    assert samples._digest(recipe, other) != same


def test_the_title_font() -> None:
    canvas = samples._title_image(("ABC 123", "#@.!?"), (10, 20, 30), "maya.skates")
    data = canvas.pam()
    header = f"P7\nWIDTH 720\nHEIGHT {canvas.height}\nDEPTH 4\nMAXVAL 255\n"
    assert data.startswith(header.encode())
    assert len(data) == data.index(b"ENDHDR\n") + 7 + 720 * canvas.height * 4
    assert bytes((255, 255, 255, 255)) in data  # the letters
    assert bytes((10, 20, 30, 225)) in data  # the sticker
    with pytest.raises(ValueError, match="no '€'"):
        samples._title_image(("5 €",), (0, 0, 0), "x")
