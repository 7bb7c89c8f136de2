"""Transcode: turn a probed original into the renditions viewers get, plus a poster.

One FFmpeg process (the ``imageio-ffmpeg`` binary) decodes the original once and writes every
rendition and the poster: the decoded frames, turned upright, go to one small filter graph per
output (constant frame rate, scale, pixel format) and one x264 encoder per rung; the decoded
sound goes to one resampler and AAC encoder per rendition.

What a rendition is, and why:

- **H.264 High, AAC-LC, MP4 with ``+faststart``**: plays in every browser from one URL with range
  requests, and starts before the whole file is fetched (the ``moov`` box comes first).
- **Ladder by the short side**, so vertical and landscape clips get the same quality: 1080, 720
  and 480 pixels, each rung only when the source reaches it (never upscaled). A source within 5 %
  below a rung (a 1078-pixel crop, an 853x479 export) still gets that rung, at its own size: it
  would be a waste to serve 720p for the lack of two pixels. A source below every rung gets one
  rendition at its own size (480x360 gives one 360p rendition). Dimensions are even (4:2:0).
- **Bitrate**: constant quality (CRF 23) with a VBV cap per rung, so easy clips cost few bytes and
  hard ones cannot spike past what a phone connection sustains: 1080p 5 Mb/s, 720p 3 Mb/s, 480p
  1.2 Mb/s at up to 30 frames per second, 1.5 times that above 30; the buffer holds 2 s at the cap
  (``bufsize = 2 x maxrate``), one GOP.
- **Constant frame rate**, capped at 60: phones record variable frame rate; the renditions are
  made constant (the ``fps`` filter drops or repeats frames onto a regular grid) at the source's
  average rate, snapped to the standard rate it is within 3 % of (29.7 becomes 30000/1001). A
  fixed rate makes a GOP of ``round(2 x fps)`` frames exactly 2 s in every rung, so segment
  boundaries line up across rungs, and keeps players and editors that mishandle VFR happy.
- **2 s closed GOPs**, scene-cut detection off: keyframes at 0, 2, 4 s... in every rung.
- **Audio**: AAC-LC 128 kb/s, stereo (mono is duplicated, surround downmixed), 48 kHz,
  resampled against the timestamps so gaps in a phone's audio do not drift the sync. A clip
  without sound gets no audio track (an invented silent one would only cost bytes).
- **Metadata stripped**: no global, stream or chapter metadata is copied (``-map_metadata -1``,
  ``-map_chapters -1``); only the picture and the sound are mapped, so timed metadata tracks (GPS,
  motion) are dropped; the muxer, the AAC and the JPEG encoders run ``bitexact`` (no ``encoder``
  tag, no creation time, no "Lavc" version string) and the stream ``encoder`` tag is blanked.
  What remains is what MP4 requires: the ``hdlr`` box names FFmpeg's generic "VideoHandler" /
  "SoundHandler" (never the source's), and the x264 settings string in the bitstream.
- **Rotation**: FFmpeg applies the display matrix when decoding (``-autorotate``), so frames are
  upright and the renditions carry no rotation.
- **Poster**: a JPEG (JPEG, not WebP, because link previews of shared videos still expect it) of
  the frame at 10 % of the duration, upright, at the size of the 720p rung (or the largest
  below it).

HLS is not produced. Byte-range HLS needs fragmented MP4 segments, and our renditions are
progressive MP4 (which is what lets a plain ``<video src>`` start fast and seek with range
requests). Writing HLS as well would be a second mux of the same encode (cheap in CPU through the
``tee`` muxer) but would double the bytes stored and served per video, for adaptive switching the
feed player does not use yet. Revisit with a player that switches rungs.

Outputs appear atomically: FFmpeg writes into a private temporary directory inside ``out_dir``,
and only a complete, successful set is renamed into place. On failure nothing is left behind.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Literal

import av
import av.error
import imageio_ffmpeg  # type: ignore[import-untyped]  # the package ships no type hints

# The x264 preset of production renditions. "veryfast" because time to playable is what a
# short-video uploader feels; CRF holds the quality, a slower preset would mostly save bytes.
# Operators with cores to spare can pass "medium".
PRODUCTION_PRESET = "veryfast"

GOP_SECONDS = 2
MAX_FPS = 60
DEFAULT_FPS = Fraction(30)
# Snap an average rate to the standard one it is within this fraction of.
FPS_SNAP = 0.03
STANDARD_RATES = (
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
    Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60),
)  # fmt: skip

# (short side, CRF, max rate in kb/s at up to 30 fps)
LADDER: tuple[tuple[int, int, int], ...] = ((1080, 23, 5000), (720, 23, 3000), (480, 23, 1200))
HIGH_FPS_RATE_FACTOR = 1.5  # above 30 fps a rung may spend this much more
BUFFER_SECONDS = 2  # VBV buffer = this many seconds at the max rate: one GOP
RUNG_TOLERANCE = 0.95  # a source this close below a rung still gets it, at its own size
POSTER_SHORT_SIDE = 720
POSTER_AT = 0.10  # the poster is the frame at this fraction of the duration
POSTER_QUALITY = 3  # JPEG qscale: 2 (best) to 31

# Only the demuxers of the containers uploads may use, and only local files: an input posing as
# a video cannot make FFmpeg read a playlist, a concat list or anything over the network.
DEMUXERS = "mov,matroska"
_INPUT_OPTIONS = {"format_whitelist": DEMUXERS, "protocol_whitelist": "file"}
STDERR_LINES = 12

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class Rung:
    """One video rendition to encode."""

    name: str  # "1080p", "720p", "480p", or "<short side>p" for a source below every rung
    width: int
    height: int
    crf: int
    maxrate_kbps: int
    bufsize_kbps: int


@dataclass(frozen=True, slots=True)
class AudioPlan:
    bitrate_kbps: int = 128
    channel_layout: str = "stereo"
    sample_rate: int = 48_000


@dataclass(frozen=True, slots=True)
class TranscodePlan:
    rungs: tuple[Rung, ...]  # largest first
    fps: Fraction  # constant output frame rate
    keyint: int  # frames per GOP
    audio: AudioPlan | None  # None: the source has no sound, the renditions get none
    preset: str  # x264 preset
    poster_width: int
    poster_height: int


@dataclass(frozen=True, slots=True)
class Rendition:
    """A finished output file in ``out_dir``."""

    name: str  # "1080p"... or "poster"
    kind: Literal["video", "poster"]
    path: Path
    width: int
    height: int
    bytes: int
    mime_type: str


class TranscodeFailed(Exception):
    """FFmpeg could not produce the renditions. ``stderr_tail`` holds its last lines, with the
    source's path replaced by ``<source>``."""

    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(f"{message}\n{stderr_tail}" if stderr_tail else message)
        self.stderr_tail = stderr_tail


# -- the plan


def plan_renditions(
    width: int,
    height: int,
    has_audio: bool,
    fps: float | None,
    *,
    preset: str = PRODUCTION_PRESET,
) -> TranscodePlan:
    """The renditions for a source whose picture is ``width`` x ``height`` as displayed
    (rotation and sample aspect ratio applied: the probe's ``display_width``/``display_height``),
    at an average of ``fps`` frames per second (None if unknown)."""
    if width < 2 or height < 2:
        raise ValueError(f"a {width}x{height} picture cannot be encoded")
    rate = output_fps(fps)
    short = min(width, height)
    fast = rate > 30
    rungs: list[Rung] = []
    for nominal, crf, maxrate in LADDER:
        if short < nominal * RUNG_TOLERANCE:
            continue
        rungs.append(_rung(f"{nominal}p", nominal, crf, maxrate, fast, width, height))
    if not rungs:
        # Below every rung: one rendition at the source's size, with the smallest rung's caps.
        _, crf, maxrate = LADDER[-1]
        size = short - short % 2
        rungs.append(_rung(f"{size}p", size, crf, maxrate, fast, width, height))
    poster = next((r for r in rungs if min(r.width, r.height) <= POSTER_SHORT_SIDE), rungs[-1])
    return TranscodePlan(
        rungs=tuple(rungs),
        fps=rate,
        keyint=round(GOP_SECONDS * rate),
        audio=AudioPlan() if has_audio else None,
        preset=preset,
        poster_width=poster.width,
        poster_height=poster.height,
    )


def output_fps(fps: float | None) -> Fraction:
    """The constant frame rate of the renditions for a source averaging ``fps``."""
    if fps is None or not math.isfinite(fps) or fps <= 0:
        return DEFAULT_FPS
    capped = min(fps, MAX_FPS)
    nearest = min(STANDARD_RATES, key=lambda standard: abs(capped - standard))
    if abs(capped - nearest) <= nearest * FPS_SNAP:
        return nearest
    return max(Fraction(round(capped * 100), 100), Fraction(1))


def _rung(
    name: str, nominal: int, crf: int, maxrate: int, fast: bool, width: int, height: int
) -> Rung:
    width, height = scaled_size(width, height, nominal)
    if fast:
        maxrate = round(maxrate * HIGH_FPS_RATE_FACTOR)
    return Rung(name, width, height, crf, maxrate, maxrate * BUFFER_SECONDS)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled so the short side is ``short_side`` (or the source's own,
    if smaller: never upscaled), both even, aspect ratio kept to the nearest even pixel."""
    short, long = min(width, height), max(width, height)
    new_short = min(short_side, short - short % 2)
    new_long = 2 * round(long * new_short / short / 2)
    new_long = max(2, min(new_long, long - long % 2))
    return (new_short, new_long) if width <= height else (new_long, new_short)


# -- the FFmpeg command


def ffmpeg_command(
    source: Path, work_dir: Path, plan: TranscodePlan, poster_at: float
) -> list[str]:
    """The one FFmpeg command that writes every rendition of ``plan`` and the poster into
    ``work_dir``, reporting progress on its standard output.

    FFmpeg decodes each input stream once and hands the frames to every output that maps it.
    Each output gets its own small filter graph (frame rate, scale, pixel format), because FFmpeg
    runs each graph in its own thread: one shared graph with a ``split`` would do all the scaling
    on one thread, which measurably slows the whole on two cores."""
    fps = f"fps={plan.fps}"
    args = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
        "-progress", "pipe:1", "-stats_period", "0.25",
        *(arg for key, value in _INPUT_OPTIONS.items() for arg in (f"-{key}", value)),
        "-autorotate",
        "-i", f"file:{source}",
    ]  # fmt: skip
    for rung in plan.rungs:
        args += ["-map", "0:V:0", "-filter:v", f"{fps},{_scale(rung.width, rung.height)}"]
        args += _video_encoder(plan, rung)
        if plan.audio is not None:
            args += ["-map", "0:a:0", *_audio_encoder(plan.audio)]
        args += [*_stripped(), "-movflags", "+faststart", f"file:{work_dir / rung.name}.mp4"]
    # The first frame, then the one at poster_at, each overwriting the file (-update): if the
    # picture ends before poster_at (a short video track under a longer sound), the poster is
    # the first frame rather than missing. JPEG wants full-range YUV.
    poster_size = _scale(plan.poster_width, plan.poster_height, "yuvj420p")
    poster = f"select='eq(n,0)+gte(t,{poster_at:.3f})',{poster_size}"
    args += ["-map", "0:V:0", "-filter:v", poster, "-frames:v", "2", "-q:v", str(POSTER_QUALITY)]
    # bitexact: the JPEG encoder would otherwise write its name and version in a comment.
    args += ["-flags:v", "+bitexact", *_stripped(), "-update", "1", f"file:{work_dir}/poster.jpg"]
    return args


def _scale(width: int, height: int, pixel_format: str = "yuv420p") -> str:
    return f"scale={width}:{height},setsar=1,format={pixel_format}"


def _video_encoder(plan: TranscodePlan, rung: Rung) -> list[str]:
    return [
        "-c:v", "libx264", "-preset", plan.preset, "-profile:v", "high",
        "-crf", str(rung.crf), "-maxrate", f"{rung.maxrate_kbps}k",
        "-bufsize", f"{rung.bufsize_kbps}k",
        "-g", str(plan.keyint), "-keyint_min", str(plan.keyint), "-sc_threshold", "0",
        "-flags:v", "+cgop",
    ]  # fmt: skip


def _audio_encoder(audio: AudioPlan) -> list[str]:
    # Resampled against the timestamps (async) so that gaps in a phone's audio keep the sync.
    resample = (
        f"aresample={audio.sample_rate}:async=1,"
        f"aformat=sample_fmts=fltp:channel_layouts={audio.channel_layout}"
    )
    return [
        "-filter:a", resample,
        "-c:a", "aac", "-profile:a", "aac_low", "-b:a", f"{audio.bitrate_kbps}k",
        # bitexact: the AAC encoder would otherwise write its name and version in the stream.
        "-flags:a", "+bitexact",
    ]  # fmt: skip


def _stripped() -> list[str]:
    return [
        "-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact",
        "-metadata:s", "encoder=",
    ]  # fmt: skip


def ffmpeg_exe() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


# -- running it


def transcode(
    source: Path,
    out_dir: Path,
    plan: TranscodePlan,
    *,
    on_progress: ProgressCallback | None = None,
) -> list[Rendition]:
    """Write every rendition of ``plan`` and a poster into ``out_dir`` (named ``<rung>.mp4`` and
    ``poster.jpg``), reporting progress from 0 to 1 through ``on_progress``; 1.0 means the files
    are in place. Raises :class:`TranscodeFailed`, leaving no file behind, if FFmpeg fails; an
    exception raised by ``on_progress`` (a cancelled job) stops FFmpeg and propagates."""
    out_dir.mkdir(parents=True, exist_ok=True)
    duration = source_duration(source)
    poster_at = duration * POSTER_AT if duration else 0.0
    work_dir = Path(tempfile.mkdtemp(prefix=".transcode-", dir=out_dir))
    try:
        command = ffmpeg_command(source, work_dir, plan, poster_at)
        redact = {str(source.resolve()): "<source>", str(source): "<source>"}
        _run(command, duration, on_progress, redact)
        renditions = _publish(_finished(work_dir, plan), out_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    if on_progress is not None:
        on_progress(1.0)
    return renditions


def source_duration(source: Path) -> float | None:
    """The container's duration in seconds, or None if it does not say (FFmpeg will then tell
    what is wrong with the file, if anything)."""
    try:
        with av.open(str(source), "r", options=_INPUT_OPTIONS) as container:
            if container.duration is not None and container.duration > 0:
                return float(container.duration / av.time_base)
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return None


def _run(
    command: list[str],
    duration: float | None,
    on_progress: ProgressCallback | None,
    redact: dict[str, str],
) -> None:
    process = subprocess.Popen(  # noqa: S603 (a fixed executable, arguments as a list)
        command,
        preexec_fn=_die_with_parent(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    assert process.stdout is not None and process.stderr is not None
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
    reader = threading.Thread(target=_drain, args=(process.stderr, tail), daemon=True)
    reader.start()
    watchdog = _Watchdog(process, budget=_budget(duration))
    try:
        for fraction in _progress(watchdog.lines(process.stdout), duration):
            if on_progress is not None:
                on_progress(fraction)
        code = process.wait()
    finally:
        watchdog.stop()
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join()
        process.stdout.close()
        process.stderr.close()
    if watchdog.reason:
        raise TranscodeFailed(watchdog.reason, "\n".join(tail))
    if code != 0:
        text = "\n".join(tail)
        for secret, placeholder in redact.items():
            text = text.replace(secret, placeholder)
        raise TranscodeFailed(f"ffmpeg failed (exit status {code})", text)


# FFmpeg reports progress about twice a second; one that says nothing for this long is stuck
# (a decoder looping on a crafted file, a full disk...), and no clip may take longer than
# BUDGET_PER_SECOND seconds per second of video (plus a start-up allowance) on any worker.
STALL_SECONDS = 120.0
BUDGET_PER_SECOND = 20.0
BUDGET_BASE = 300.0


def _budget(duration: float | None) -> float:
    return BUDGET_BASE + BUDGET_PER_SECOND * (duration or 600.0)


class _Watchdog:
    """Kills FFmpeg when its progress stalls or its time budget is spent; ``reason`` says
    which."""

    def __init__(self, process: subprocess.Popen[str], budget: float) -> None:
        self.process = process
        self.deadline = time.monotonic() + budget
        self.last_progress = time.monotonic()
        self.reason = ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def lines(self, stream: IO[str]) -> Iterator[str]:
        for line in stream:
            self.last_progress = time.monotonic()
            yield line

    def _watch(self) -> None:
        while not self._done.wait(1.0):
            moment = time.monotonic()
            if moment - self.last_progress > STALL_SECONDS:
                self.reason = f"ffmpeg made no progress for {STALL_SECONDS:g} s"
            elif moment > self.deadline:
                self.reason = "ffmpeg took longer than any video within our limits should"
            else:
                continue
            self.process.kill()
            return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before FFmpeg starts: on Linux, ask the kernel to kill FFmpeg when
    its parent dies, so that a killed worker leaves no orphan encoder burning the cores its
    retry needs."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request was made
            os._exit(1)

    return arm


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _drain(stream: IO[str], tail: collections.deque[str]) -> None:
    for line in stream:
        if line.strip():
            tail.append(line.rstrip())


# FFmpeg's progress can run ahead of the muxers (audio is encoded before the video's lookahead
# drains) and the faststart rewrite comes after it: hold back the last step for the files.
PROGRESS_CEILING = 0.99


def _progress(lines: Iterable[str], duration: float | None) -> Iterator[float]:
    """Fractions done, increasing, from FFmpeg's ``-progress`` key=value lines."""
    reported = 0.0
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key != "out_time_us" or not duration:
            continue
        with contextlib.suppress(ValueError):  # "N/A" while the muxers are settling
            fraction = min(int(value) / 1e6 / duration, PROGRESS_CEILING)
            if fraction > reported:
                reported = fraction
                yield fraction


def _finished(work_dir: Path, plan: TranscodePlan) -> list[Rendition]:
    """The files FFmpeg wrote, checked: each must exist and hold something."""
    renditions = [
        Rendition(r.name, "video", work_dir / f"{r.name}.mp4", r.width, r.height, 0, "video/mp4")
        for r in plan.rungs
    ]
    poster = work_dir / "poster.jpg"
    renditions.append(
        Rendition(
            "poster", "poster", poster, plan.poster_width, plan.poster_height, 0, "image/jpeg"
        )
    )
    for i, rendition in enumerate(renditions):
        size = rendition.path.stat().st_size if rendition.path.exists() else 0
        if size == 0:
            # FFmpeg exits 0 when not a single frame could be decoded: nothing to publish.
            raise TranscodeFailed(f"ffmpeg wrote no {rendition.name}: no picture was decoded")
        renditions[i] = dataclasses.replace(rendition, bytes=size)
    return renditions


def _publish(renditions: list[Rendition], out_dir: Path) -> list[Rendition]:
    """Rename the finished files into ``out_dir``: each appears whole or not at all, and if one
    rename fails the ones already done are taken back."""
    published: list[Rendition] = []
    try:
        for rendition in renditions:
            target = out_dir / rendition.path.name
            os.replace(rendition.path, target)
            published.append(dataclasses.replace(rendition, path=target))
    except BaseException:
        for rendition in published:
            rendition.path.unlink(missing_ok=True)
        raise
    return published
