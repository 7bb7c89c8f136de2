"""The probe step of the upload pipeline, on real files made by FFmpeg (the imageio-ffmpeg
binary): clips the platform takes, and every kind of bad input it must refuse with a stable slug
and a readable message."""

from __future__ import annotations

import hashlib
import random
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import av
import imageio_ffmpeg
import pytest

from reelm.media import errors
from reelm.media import probe as probe_module
from reelm.media.probe import MediaLimits, ProbeResult, probe, probe_isolated

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
# Small, fast, deterministic inputs: lavfi test sources, x264 at its fastest.
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
GPS = "+48.8584+002.2945+035.000/"


def ffmpeg(*args: str) -> None:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        timeout=60,
    )


def source(size: str, seconds: float, rate: str = "30") -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]


def sine(seconds: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]


class Clips:
    """Makes each file the first time a test asks for it, once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.made:
            path = self.root / name
            RECIPES[name](path, self)
            self.made[name] = path
        return self.made[name]


def landscape(out: Path, clips: Clips) -> None:
    # Stereo AAC at 48 kHz, moov at the end (as phones and cameras write it).
    ffmpeg(*source("320x180", 2), *sine(2), "-ac", "2", *X264, "-c:a", "aac", "-shortest", str(out))


def faststart(out: Path, clips: Clips) -> None:
    ffmpeg("-i", str(clips["landscape.mp4"]), "-c", "copy", "-movflags", "+faststart", str(out))


def vertical(out: Path, clips: Clips) -> None:
    # A phone held upright: 1280x720 stored, a display matrix turning it 90° clockwise (what
    # ffprobe shows as "rotation of -90.00 degrees").
    tmp = out.with_suffix(".src.mp4")
    ffmpeg(*source("1280x720", 1), *sine(1), *X264, "-c:a", "aac", "-shortest", str(tmp))
    ffmpeg("-display_rotation", "-90", "-i", str(tmp), "-c", "copy", str(out))
    tmp.unlink()


def rotate_tag(out: Path, clips: Clips) -> None:
    # Older muxers wrote a plain "rotate" tag instead of a display matrix.
    ffmpeg("-i", str(clips["silent.mp4"]), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(out))


def silent(out: Path, clips: Clips) -> None:
    ffmpeg(*source("320x180", 2), *X264, str(out))


def one_second(out: Path, clips: Clips) -> None:
    ffmpeg(*source("320x180", 1), *sine(1), *X264, "-c:a", "aac", "-shortest", str(out))


def ten_bit(out: Path, clips: Clips) -> None:
    ffmpeg(*source("320x180", 1), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
           "yuv420p10le", str(out))  # fmt: skip


def vfr(out: Path, clips: Clips) -> None:
    # Frames 0-20 every 1/30 s, then the gaps grow: a variable frame rate, as phones record.
    spread = "setpts='N/30/TB+if(gt(N,20),N*0.02/TB,0)'"
    ffmpeg(*source("320x180", 2), "-vf", spread, "-fps_mode", "vfr", *X264, str(out))


def webm(out: Path, clips: Clips) -> None:
    ffmpeg(*source("320x180", 2), *sine(2), "-c:v", "libvpx-vp9", "-deadline", "realtime",
           "-cpu-used", "8", "-c:a", "libopus", "-shortest", str(out))  # fmt: skip


def webm_live(out: Path, clips: Clips) -> None:
    # As a browser's MediaRecorder writes it: no duration in the header.
    ffmpeg("-i", str(clips["webm.webm"]), "-c", "copy", "-an", "-live", "1", "-f", "webm", str(out))


def mkv(out: Path, clips: Clips) -> None:
    ffmpeg(*source("320x180", 2), *sine(2), *X264, "-c:a", "aac", "-shortest", str(out))


def gps_mov(out: Path, clips: Clips) -> None:
    src = clips["landscape.mp4"]
    ffmpeg("-i", str(src), "-c", "copy", "-metadata", f"location={GPS}", "-metadata", "make=Apple",
           "-metadata", "model=iPhone 15 Pro", str(out))  # fmt: skip


def gps_apple_keys(out: Path, clips: Clips) -> None:
    src = clips["landscape.mp4"]
    ffmpeg("-i", str(src), "-c", "copy", "-movflags", "use_metadata_tags",
           "-metadata", f"com.apple.quicktime.location.ISO6709={GPS}",
           "-metadata", "com.apple.quicktime.model=iPhone 15 Pro", str(out))  # fmt: skip


def write(data: bytes) -> Callable[[Path, Clips], None]:
    def make(out: Path, clips: Clips) -> None:
        out.write_bytes(data)

    return make


def cut(name: str, where: Callable[[bytes], int]) -> Callable[[Path, Clips], None]:
    def make(out: Path, clips: Clips) -> None:
        data = clips[name].read_bytes()
        out.write_bytes(data[: where(data)])

    return make


def boxes(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Top-level MP4 boxes: type -> (offset, size)."""
    found, offset = {}, 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        found[kind] = (offset, size)
        offset += size
    return found


def after_moov(data: bytes) -> int:
    offset, size = boxes(data)[b"moov"]
    return offset + size


def png(out: Path, clips: Clips) -> None:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", "-f", "image2",
           "-c:v", "png", str(out))  # fmt: skip


def jpeg(out: Path, clips: Clips) -> None:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", "-f", "image2",
           "-c:v", "mjpeg", str(out))  # fmt: skip


def wav(out: Path, clips: Clips) -> None:
    ffmpeg(*sine(1), "-f", "wav", str(out))


def m4a(out: Path, clips: Clips) -> None:
    ffmpeg(*sine(1), "-c:a", "aac", "-f", "ipod", str(out))


def audio_only_mp4(out: Path, clips: Clips) -> None:
    ffmpeg(*sine(1), "-c:a", "aac", "-f", "mp4", str(out))


def subtitles_only(out: Path, clips: Clips) -> None:
    srt = out.with_suffix(".srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    ffmpeg("-i", str(srt), "-c:s", "srt", "-f", "matroska", str(out))
    srt.unlink()


def avi(out: Path, clips: Clips) -> None:
    ffmpeg(*source("64x64", 1), "-c:v", "mpeg4", "-f", "avi", str(out))


def corrupt_video(out: Path, clips: Clips) -> None:
    """Overwrite the middle third of the media data with noise."""
    data = bytearray(clips["landscape.mp4"].read_bytes())
    offset, size = boxes(bytes(data))[b"mdat"]
    rnd = random.Random(3)
    start, end = offset + size // 3, offset + 2 * size // 3
    data[start:end] = rnd.randbytes(end - start)
    out.write_bytes(bytes(data))


def corrupt_audio(out: Path, clips: Clips) -> None:
    """Overwrite every sound packet (found through the sample index) with noise."""
    src = clips["landscape.mp4"]
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as container:
        entries = [(e.pos, e.size) for e in container.streams.audio[0].index_entries]
    rnd = random.Random(4)
    for pos, size in entries:
        data[pos : pos + size] = rnd.randbytes(size)
    out.write_bytes(bytes(data))


def huge(out: Path, clips: Clips) -> None:
    # 5000x5000, one black frame: a tiny file declaring an absurd picture.
    ffmpeg("-f", "lavfi", "-i", "color=c=black:size=5000x5000:rate=1", "-frames:v", "1", *X264,
           str(out))  # fmt: skip


def tiny(out: Path, clips: Clips) -> None:
    ffmpeg(*source("8x8", 1), *X264, str(out))


def fast(out: Path, clips: Clips) -> None:
    ffmpeg(*source("160x90", 1, rate="240"), *X264, str(out))


def single_frame(out: Path, clips: Clips) -> None:
    ffmpeg(*source("160x90", 1), "-frames:v", "1", *X264, str(out))


def twenty_hours(out: Path, clips: Clips) -> None:
    # Two frames, ten hours each: a 2 KB file that would transcode to a day of video.
    ffmpeg("-f", "lavfi", "-i", "color=size=64x64:rate=1/36000", "-frames:v", "2", *X264, str(out))


def growing(out: Path, clips: Clips) -> None:
    """A stream whose header says 64x64 and whose frames later turn 320x240 (a new SPS)."""
    small, large = out.with_suffix(".a.h264"), out.with_suffix(".b.h264")
    ffmpeg(*source("64x64", 1), *X264, "-bsf:v", "h264_mp4toannexb", "-f", "h264", str(small))
    ffmpeg(*source("320x240", 1), *X264, "-f", "h264", str(large))
    joined = out.with_suffix(".h264")
    joined.write_bytes(small.read_bytes() + large.read_bytes())
    ffmpeg("-r", "30", "-i", str(joined), "-c", "copy", str(out))
    for path in (small, large, joined):
        path.unlink()


def playlist(out: Path, clips: Clips) -> None:
    # An HLS playlist posing as a video, pointing at a local file: FFmpeg must not follow it.
    out.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n")


def concat_script(out: Path, clips: Clips) -> None:
    # An FFmpeg concat script posing as a video: opened, it would read another file on disk.
    name = clips["landscape.mp4"].name
    out.write_text(f"ffconcat version 1.0\nfile {name}\n")


def remux(name: str) -> Callable[[Path, Clips], None]:
    def make(out: Path, clips: Clips) -> None:
        ffmpeg("-i", str(clips[name]), "-c", "copy", str(out))

    return make


def ntsc_mkv(out: Path, clips: Clips) -> None:
    # 29.97 fps in Matroska's millisecond timestamps: 33, 34, 33... ms apart, still constant.
    ffmpeg(*source("320x180", 2, rate="30000/1001"), *X264, str(out))


def webm_as_mp4(out: Path, clips: Clips) -> None:
    out.write_bytes(clips["webm.webm"].read_bytes())


RECIPES: dict[str, Callable[[Path, Clips], None]] = {
    "landscape.mp4": landscape,
    "faststart.mp4": faststart,
    "vertical.mov": vertical,
    "rotate-tag.mkv": rotate_tag,
    "silent.mp4": silent,
    "one-second.mp4": one_second,
    "ten-bit.mp4": ten_bit,
    "vfr.mp4": vfr,
    "webm.webm": webm,
    "live.webm": webm_live,
    "mkv.mkv": mkv,
    "gps.mov": gps_mov,
    "gps-apple.mp4": gps_apple_keys,
    "webm-renamed.mp4": webm_as_mp4,
    "vfr.mkv": remux("vfr.mp4"),
    "ntsc.mkv": ntsc_mkv,
    "concat.mp4": concat_script,
    # bad input
    "empty.mp4": write(b""),
    "random.mp4": write(random.Random(1).randbytes(50_000)),
    "half.mp4": cut("landscape.mp4", lambda data: len(data) // 2),
    "faststart-half.mp4": cut("faststart.mp4", lambda data: len(data) // 2),
    "header-only.mp4": cut("faststart.mp4", after_moov),
    "first-bytes.mp4": cut("landscape.mp4", lambda data: 200),
    "half.webm": cut("webm.webm", lambda data: len(data) // 2),
    "png.mp4": png,
    "jpeg.mp4": jpeg,
    "wav.mp4": wav,
    "m4a.mp4": m4a,
    "audio-only.mp4": audio_only_mp4,
    "subtitles.mkv": subtitles_only,
    "avi.mp4": avi,
    "corrupt-video.mp4": corrupt_video,
    "corrupt-audio.mp4": corrupt_audio,
    "5000x5000.mp4": huge,
    "8x8.mp4": tiny,
    "240fps.mp4": fast,
    "single-frame.mp4": single_frame,
    "twenty-hours.mp4": twenty_hours,
    "growing.mkv": growing,
    "playlist.mp4": playlist,
}


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return Clips(tmp_path_factory.mktemp("clips"))


def assert_rejected(
    path: Path, slug: str, *words: str, limits: MediaLimits | None = None, status: int = 422
) -> errors.MediaRejected:
    with pytest.raises(errors.MediaRejected) as caught:
        probe(path, limits or MediaLimits())
    exc = caught.value
    assert exc.slug == slug, exc.detail
    assert exc.status == status
    assert errors.PROBLEM_TYPES[slug] == (status, exc.title)
    assert_readable(exc.detail, path)
    for word in words:
        assert word in exc.detail, exc.detail
    return exc


def assert_readable(detail: str, path: Path) -> None:
    """A sentence or two for a person: no internals, no server paths, no FFmpeg jargon."""
    assert 20 < len(detail) < 300, detail
    assert detail[0].isupper() and detail.endswith("."), detail
    for internal in (str(path.parent), path.name, "Errno", "avcodec", "AVERROR", "ffmpeg", "\n"):
        assert internal not in detail, detail


# --- files the platform takes --------------------------------------------------------------


def test_landscape_clip_with_sound(clips: Clips) -> None:
    path = clips["landscape.mp4"]
    result = probe(path, MediaLimits())
    assert result.container == "mp4"
    assert "mp4" in result.format_name.split(",")
    assert result.duration == pytest.approx(2.0, abs=0.1)
    assert result.size == path.stat().st_size
    v = result.video
    assert (v.codec, v.width, v.height) == ("h264", 320, 180)
    assert (v.display_width, v.display_height, v.rotation) == (320, 180, 0)
    assert v.average_fps == pytest.approx(30) and v.real_fps == pytest.approx(30)
    assert not v.variable_frame_rate
    assert (v.pixel_format, v.bit_depth) == ("yuv420p", 8)
    assert result.audio is not None
    assert (result.audio.codec, result.audio.channels, result.audio.sample_rate) == (
        "aac",
        2,
        48000,
    )
    assert result.sensitive_metadata == () and not result.needs_stripping


def test_phone_vertical_clip_is_shown_upright(clips: Clips) -> None:
    result = probe(clips["vertical.mov"], MediaLimits())
    assert result.container == "mov"
    v = result.video
    assert (v.width, v.height) == (1280, 720)
    assert v.rotation == 90
    assert (v.display_width, v.display_height) == (720, 1280)


def test_legacy_rotate_tag(clips: Clips) -> None:
    v = probe(clips["rotate-tag.mkv"], MediaLimits()).video
    assert (v.rotation, v.display_width, v.display_height) == (90, 180, 320)


def test_clip_without_sound(clips: Clips) -> None:
    result = probe(clips["silent.mp4"], MediaLimits())
    assert result.audio is None
    assert result.video.codec == "h264"


def test_one_second_clip(clips: Clips) -> None:
    result = probe(clips["one-second.mp4"], MediaLimits())
    assert result.duration == pytest.approx(1.0, abs=0.05)


def test_ten_bit_clip(clips: Clips) -> None:
    v = probe(clips["ten-bit.mp4"], MediaLimits()).video
    assert (v.pixel_format, v.bit_depth) == ("yuv420p10le", 10)


def test_variable_frame_rate(clips: Clips) -> None:
    v = probe(clips["vfr.mp4"], MediaLimits()).video
    assert v.variable_frame_rate
    assert v.average_fps is not None and v.average_fps < 25
    assert v.real_fps == pytest.approx(30)


def test_variable_frame_rate_in_matroska(clips: Clips) -> None:
    # Matroska has no frame index and FFmpeg reports 30 fps both ways: the timestamps tell.
    assert probe(clips["vfr.mkv"], MediaLimits()).video.variable_frame_rate
    ntsc = probe(clips["ntsc.mkv"], MediaLimits()).video
    assert not ntsc.variable_frame_rate
    assert ntsc.average_fps == pytest.approx(29.97)


def test_webm_vp9_opus(clips: Clips) -> None:
    result = probe(clips["webm.webm"], MediaLimits())
    assert result.container == "webm"
    assert result.format_name == "matroska,webm"
    assert result.video.codec == "vp9"
    assert result.audio is not None and result.audio.codec == "opus"
    assert result.duration == pytest.approx(2.0, abs=0.1)
    assert not result.video.variable_frame_rate


def test_webm_without_duration_is_timed_from_its_packets(clips: Clips) -> None:
    path = clips["live.webm"]
    with av.open(str(path)) as container:
        assert container.duration is None  # the case this test is about
    result = probe(path, MediaLimits())
    assert result.duration == pytest.approx(2.0, abs=0.1)
    with pytest.raises(errors.VideoTooLong):
        probe(path, MediaLimits(max_seconds=1.5))


def test_mkv(clips: Clips) -> None:
    result = probe(clips["mkv.mkv"], MediaLimits())
    assert result.container == "mkv"
    assert (result.video.codec, result.video.width, result.video.height) == ("h264", 320, 180)
    assert result.audio is not None and result.audio.codec == "aac"


def test_container_is_the_demuxers_not_the_file_names(clips: Clips) -> None:
    assert probe(clips["webm-renamed.mp4"], MediaLimits()).container == "webm"
    assert_rejected(
        clips["webm-renamed.mp4"],
        "unsupported-container",
        "WebM",
        "MP4 or MOV",
        limits=MediaLimits(containers=frozenset({"mp4", "mov"})),
    )
    assert_rejected(
        clips["gps.mov"],
        "unsupported-container",
        "MOV",
        limits=MediaLimits(containers=frozenset({"mp4"})),
    )


def test_gps_and_device_tags_must_be_stripped(clips: Clips) -> None:
    result = probe(clips["gps.mov"], MediaLimits())
    assert result.container == "mov"
    assert {"location", "make", "model"} <= set(result.sensitive_metadata)
    assert result.needs_stripping
    apple = probe(clips["gps-apple.mp4"], MediaLimits())
    assert {"com.apple.quicktime.location.iso6709", "com.apple.quicktime.model"} <= set(
        apple.sensitive_metadata
    )
    # Names only: the result may be logged or queued, the position itself is protected data.
    for found in (result, apple):
        assert "48.8584" not in repr(found) and "iPhone" not in repr(found)


def test_probe_only_reads(clips: Clips) -> None:
    path = clips["gps.mov"]
    before = (sorted(p.name for p in path.parent.iterdir()), path.stat().st_mtime_ns)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    probe(path, MediaLimits())
    with pytest.raises(errors.VideoTooLong):
        probe(path, MediaLimits(max_seconds=1))
    after = (sorted(p.name for p in path.parent.iterdir()), path.stat().st_mtime_ns)
    assert after == before
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_result_is_a_plain_value(clips: Clips) -> None:
    result = probe(clips["silent.mp4"], MediaLimits())
    assert isinstance(result, ProbeResult)
    assert result == probe(clips["silent.mp4"], MediaLimits())
    with pytest.raises(AttributeError):
        result.duration = 1.0  # type: ignore[misc]


# --- files it refuses, each with its own slug ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug", "words"),
    [
        ("empty.mp4", "empty-file", ["empty"]),
        ("random.mp4", "not-a-video", ["not a video"]),
        ("playlist.mp4", "not-a-video", ["not a video"]),
        ("concat.mp4", "unsupported-container", ["not accepted"]),
        ("half.mp4", "truncated-video", ["incomplete"]),
        ("faststart-half.mp4", "truncated-video", ["incomplete"]),
        ("header-only.mp4", "truncated-video", ["incomplete"]),
        ("first-bytes.mp4", "truncated-video", ["incomplete"]),
        ("half.webm", "truncated-video", ["WebM", "incomplete"]),
        ("png.mp4", "image-not-video", ["PNG image"]),
        ("jpeg.mp4", "image-not-video", ["JPEG image"]),
        ("wav.mp4", "audio-not-video", ["WAV", "no picture"]),
        ("m4a.mp4", "audio-not-video", ["no picture"]),
        ("audio-only.mp4", "audio-not-video", ["no picture"]),
        ("subtitles.mkv", "no-video-stream", ["no video"]),
        ("avi.mp4", "unsupported-container", ["AVI", "MP4, MOV, WebM or MKV"]),
        ("corrupt-video.mp4", "undecodable-video", ["damaged"]),
        ("corrupt-audio.mp4", "undecodable-audio", ["sound"]),
        ("5000x5000.mp4", "unsupported-dimensions", ["5000x5000", "4096"]),
        ("8x8.mp4", "unsupported-dimensions", ["8x8", "16"]),
        ("240fps.mp4", "unsupported-frame-rate", ["240", "120"]),
        ("single-frame.mp4", "video-too-short", ["0.1 s"]),
        ("twenty-hours.mp4", "video-too-long", ["20 h", "10 min"]),
    ],
)
def test_bad_input_is_refused(clips: Clips, name: str, slug: str, words: list[str]) -> None:
    assert_rejected(clips[name], slug, *words)


def test_too_long(clips: Clips) -> None:
    assert_rejected(
        clips["landscape.mp4"],
        "video-too-long",
        "2.0 s",
        "1.5 s",
        limits=MediaLimits(max_seconds=1.5),
    )


def test_too_big(clips: Clips) -> None:
    path = clips["landscape.mp4"]
    exc = assert_rejected(
        path, "video-too-large", "MB", limits=MediaLimits(max_bytes=100_000), status=413
    )
    assert isinstance(exc, errors.VideoTooLarge)


def test_tiny_file_declaring_a_huge_picture_is_refused_before_decoding(clips: Clips) -> None:
    path = clips["5000x5000.mp4"]
    assert path.stat().st_size < 200_000
    started = time.perf_counter()
    assert_rejected(path, "unsupported-dimensions")
    assert time.perf_counter() - started < 0.5


def test_frames_larger_than_declared_are_never_allocated(clips: Clips) -> None:
    path = clips["growing.mkv"]
    assert probe(path, MediaLimits()).video.width == 64  # within the default limits: fine
    # With a 100-pixel limit the decoder is told to refuse any picture over about 100x100
    # before it allocates one; the header said 64x64, so this is a bomb, not a big video.
    assert_rejected(path, "video-too-demanding", "320x240", limits=MediaLimits(max_side=100))


def test_too_many_streams(clips: Clips) -> None:
    assert_rejected(
        clips["landscape.mp4"],
        "video-too-demanding",
        "2 streams",
        limits=MediaLimits(max_streams=1),
    )


def test_probe_time_is_bounded(clips: Clips) -> None:
    assert_rejected(
        clips["landscape.mp4"], "video-too-demanding", limits=MediaLimits(max_probe_seconds=0)
    )


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="avi"):
        MediaLimits(containers=frozenset({"mp4", "avi"}))
    with pytest.raises(ValueError, match="min_side"):
        MediaLimits(min_side=5000)
    assert MediaLimits().accepted() == "MP4, MOV, WebM or MKV"
    assert MediaLimits(containers=frozenset({"webm"})).accepted() == "WebM"


def test_every_rejection_has_its_own_slug() -> None:
    slugs = [cls.slug for cls in errors.REJECTIONS]
    assert len(slugs) == len(set(slugs))
    assert set(errors.PROBLEM_TYPES) == set(slugs)
    assert {status for status, _title in errors.PROBLEM_TYPES.values()} == {413, 422}


# --- in a child process ----------------------------------------------------------------------


def test_isolated_probe_gives_the_same_answers(clips: Clips) -> None:
    path = clips["vertical.mov"]
    assert probe_isolated(path, MediaLimits()) == probe(path, MediaLimits())
    with pytest.raises(errors.MediaRejected) as inside:
        probe(clips["corrupt-video.mp4"], MediaLimits())
    with pytest.raises(errors.MediaRejected) as outside:
        probe_isolated(clips["corrupt-video.mp4"], MediaLimits())
    assert type(outside.value) is type(inside.value)
    assert (outside.value.slug, outside.value.detail) == (inside.value.slug, inside.value.detail)


def test_isolated_probe_caps_memory(clips: Clips) -> None:
    path = clips["5000x5000.mp4"]
    roomy = MediaLimits(max_side=5000)
    assert probe_isolated(path, roomy).video.width == 5000
    # One 5000x5000 picture takes 37.5 MB; the interpreter and FFmpeg already take most of this.
    with pytest.raises(errors.MediaRejected) as caught:
        probe_isolated(path, MediaLimits(max_side=5000, max_probe_memory=150 * 1024**2))
    assert caught.value.slug in ("undecodable-video", "video-too-demanding")


def test_a_crash_in_the_child_is_a_rejection(clips: Clips, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_module, "_CHILD", "import os; os.abort()")
    assert_isolated_rejected(clips["landscape.mp4"], "undecodable-video", "decoder fail")
    monkeypatch.setattr(probe_module, "_CHILD", "import os, signal; os.kill(os.getpid(), 9)")
    assert_isolated_rejected(clips["landscape.mp4"], "video-too-demanding", "memory")


def assert_isolated_rejected(path: Path, slug: str, words: str) -> None:
    with pytest.raises(errors.MediaRejected) as caught:
        probe_isolated(path, MediaLimits())
    assert caught.value.slug == slug
    assert words in caught.value.detail
    assert_readable(caught.value.detail, path)


def test_a_missing_file_is_not_a_rejection(tmp_path: Path) -> None:
    for run in (probe, probe_isolated):
        with pytest.raises(FileNotFoundError):
            run(tmp_path / "gone.mp4", MediaLimits())
