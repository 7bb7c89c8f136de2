"""Probe: is an uploaded file a video the platform can take, and what is in it?

The first step of the upload pipeline, run on the original before anything else touches it. It
uses FFmpeg through PyAV (no ``ffprobe`` binary) and only reads the file: nothing is written,
moved or cached.

What it checks, cheapest first, so that bad input is refused before any real work:

1. the size on disk (empty, too big);
2. the container, by the demuxer FFmpeg picks (never the file name). Only the demuxers behind the
   allowed containers may open the file at all (``format_whitelist``), and only the ``file``
   protocol, so a playlist or concat script posing as a video cannot make FFmpeg read anything
   else. Files FFmpeg refuses are named from their first bytes: an image, an audio file, another
   video format, a cut-off MP4 or WebM, or just not media;
3. the streams (a picture that is not cover art), the duration, the declared picture size and
   frame rate against :class:`MediaLimits`;
4. decoding: the first frames and a few near the middle, so that damaged or undecodable streams
   are caught here and not in the transcoder. Decoding is bounded: one thread, the decoder refuses
   to allocate any picture beyond the size limits (FFmpeg's ``max_pixels``, checked before the
   buffer is allocated), a cap on packets fed per sample, and a wall-clock budget (FFmpeg's
   interrupt callback while reading, checked between packets while decoding).

A result never carries metadata values: the GPS position or the phone's serial number in an
original are protected data; the result only names the tags that the transcoder must strip.

:func:`probe` runs in the calling process. :func:`probe_isolated` runs the same probe in a child
process with its memory and CPU time capped, for what no check from Python can bound: an
allocation or a loop inside FFmpeg, or a crash, set off by a crafted file.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import resource
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.error
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.packet import Packet
from av.stream import Disposition, Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from reelm.media.errors import (
    REJECTIONS,
    AudioNotVideo,
    EmptyFile,
    ImageNotVideo,
    MediaRejected,
    NotAVideo,
    NoVideoStream,
    TruncatedVideo,
    UndecodableAudio,
    UndecodableVideo,
    UnsupportedContainer,
    UnsupportedDimensions,
    UnsupportedFrameRate,
    VideoTooDemanding,
    VideoTooLarge,
    VideoTooLong,
    VideoTooShort,
)

log = logging.getLogger("reelm.media")

# The containers a limit may allow, by the name users know, with the FFmpeg demuxer that reads
# them and how to say them in a message.
CONTAINERS: dict[str, tuple[str, str]] = {
    "mp4": ("mov", "MP4"),
    "mov": ("mov", "MOV"),
    "m4v": ("mov", "M4V"),
    "3gp": ("mov", "3GP"),
    "webm": ("matroska", "WebM"),
    "mkv": ("matroska", "MKV"),
}


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """What an upload may be. The defaults are the platform's (issue 3): 500 MB, 10 minutes,
    MP4/MOV/WebM/MKV, 16 to 4096 pixels a side, up to 120 frames per second."""

    max_bytes: int = 500_000_000
    max_seconds: float = 600.0
    min_seconds: float = 0.1
    containers: frozenset[str] = frozenset({"mp4", "mov", "webm", "mkv"})
    max_side: int = 4096
    min_side: int = 16
    max_fps: float = 120.0
    # More streams than a phone writes (video, audio, a few metadata tracks) is not a clip.
    max_streams: int = 16
    # Decoding: frames to decode at each sample point (start, middle), packets fed to the
    # decoder at a sample point before giving up on it, and the wall-clock budget of a probe.
    sample_frames: int = 3
    max_packets_per_sample: int = 120
    max_probe_seconds: float = 20.0
    # Address space of the child process that probe_isolated() runs the probe in.
    max_probe_memory: int = 2 * 1024**3

    def __post_init__(self) -> None:
        unknown = sorted(self.containers - CONTAINERS.keys())
        if unknown or not self.containers:
            raise ValueError(f"unknown containers {unknown}: choose from {sorted(CONTAINERS)}")
        if not 0 < self.min_side <= self.max_side:
            raise ValueError("need 0 < min_side <= max_side")
        if not 0 <= self.min_seconds < self.max_seconds:
            raise ValueError("need 0 <= min_seconds < max_seconds")
        positive = (self.max_bytes, self.max_fps, self.max_streams, self.max_probe_memory)
        if min(*positive, self.sample_frames) <= 0:
            raise ValueError("limits must be positive")
        if self.max_packets_per_sample < self.sample_frames or self.max_probe_seconds < 0:
            raise ValueError("the decoding bounds are too tight to decode anything")

    @property
    def max_pixels(self) -> int:
        """The largest picture a decoder may allocate: the size limit, plus the padding codecs
        add to whole macroblocks or superblocks (a 5000-pixel side is coded as 5008)."""
        return (self.max_side + 128) ** 2

    def accepted(self) -> str:
        """The allowed containers, as a message says them: "MP4, MOV, WebM or MKV"."""
        labels = [label for name, (_, label) in CONTAINERS.items() if name in self.containers]
        return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"


DEFAULT_LIMITS = MediaLimits()


@dataclass(frozen=True, slots=True)
class VideoInfo:
    codec: str
    width: int  # as stored
    height: int
    display_width: int  # as shown: sample aspect ratio and rotation applied
    display_height: int
    rotation: int  # degrees clockwise to turn the stored picture for display: 0, 90, 180, 270
    average_fps: float | None
    real_fps: float | None  # FFmpeg's r_frame_rate: the base rate all timestamps fit
    variable_frame_rate: bool
    pixel_format: str
    bit_depth: int


@dataclass(frozen=True, slots=True)
class AudioInfo:
    codec: str
    channels: int
    sample_rate: int


@dataclass(frozen=True, slots=True)
class ProbeResult:
    container: str  # one of CONTAINERS: mp4, mov, webm, mkv...
    format_name: str  # the FFmpeg demuxer, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration: float  # seconds
    size: int  # bytes
    video: VideoInfo
    audio: AudioInfo | None
    # Names (never values) of the tags and tracks that locate or identify the device.
    sensitive_metadata: tuple[str, ...]

    @property
    def needs_stripping(self) -> bool:
        return bool(self.sensitive_metadata)


def probe(path: Path, limits: MediaLimits = DEFAULT_LIMITS) -> ProbeResult:
    """Inspect ``path`` and return what it holds, or raise a :class:`MediaRejected` saying why
    it is not a video the platform takes. OS errors (a missing file) are not rejections: they
    propagate."""
    deadline = time.monotonic() + limits.max_probe_seconds
    size = _checked_size(path, limits)
    with path.open("rb") as f:
        head = f.read(4096)
        container = _open(path, f, head, size, limits)
        with container:
            return _Inspection(container, f, head, size, limits, deadline).run()


def _checked_size(path: Path, limits: MediaLimits) -> int:
    size = path.stat().st_size
    if size == 0:
        raise EmptyFile("The file is empty (0 bytes). Choose the video again and re-upload it.")
    if size > limits.max_bytes:
        raise VideoTooLarge(
            f"The file is {_megabytes(size)}; videos can be at most "
            f"{_megabytes(limits.max_bytes)}. Trim it or export it at a lower quality."
        )
    return size


def probe_isolated(path: Path, limits: MediaLimits = DEFAULT_LIMITS) -> ProbeResult:
    """:func:`probe` in a child process whose address space is capped
    (``limits.max_probe_memory``), whose CPU time is capped and which is killed when the probe's
    time budget is well past. A crafted file that trips a bug in a demuxer or decoder (a crash,
    a runaway allocation, a loop inside FFmpeg, where no Python check can reach) then costs
    the child, not the server. Costs a process start (about 0.2 s): the upload pipeline's
    choice for untrusted uploads; tests and trusted files can use :func:`probe`."""
    _checked_size(path, limits)  # a missing file is our error, not the child's: it raises here
    request = json.dumps({"path": str(path.resolve()), "limits": _limits_json(limits)})
    child = [sys.executable, "-I", "-c", _CHILD.format(src=str(Path(__file__).parents[2]))]
    wall = limits.max_probe_seconds * 2 + 10  # interpreter start, then the probe's own budget
    try:
        done = subprocess.run(  # noqa: S603 (our interpreter, our code, a JSON request on stdin)
            child, input=request, capture_output=True, text=True, timeout=wall, check=False
        )
    except subprocess.TimeoutExpired:
        raise VideoTooDemanding(
            f"Checking this video took longer than {wall:g} s: it is too demanding to process."
        ) from None
    try:
        reply = json.loads(done.stdout)
    except ValueError:
        reply = None
    if done.returncode != 0 or not isinstance(reply, dict):
        log.warning("probe child failed (exit %s): %s", done.returncode, done.stderr[-2000:])
        if done.returncode in (-signal.SIGKILL, -signal.SIGXCPU):
            raise VideoTooDemanding(
                "Checking this video needed more time or memory than any video within our "
                "limits: it is too demanding to process."
            )
        raise UndecodableVideo(
            "This file makes our video decoder fail: it is damaged or not really a video. "
            "Export or copy the video again and upload the new file."
        )
    if "rejected" in reply:
        rejected = reply["rejected"]
        raise _BY_SLUG[rejected["slug"]](rejected["detail"])
    return _result_from_json(reply["result"])


_CHILD = "import sys; sys.path.insert(0, {src!r}); from reelm.media.probe import _child; _child()"
_BY_SLUG: dict[str, type[MediaRejected]] = {cls.slug: cls for cls in REJECTIONS}


def _child() -> None:
    """The child side of :func:`probe_isolated`: a JSON request on stdin, a JSON reply on
    stdout (a result or a rejection), nothing else."""
    request = json.load(sys.stdin)
    values = request["limits"]
    limits = MediaLimits(**{**values, "containers": frozenset(values["containers"])})
    memory = limits.max_probe_memory
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = math.ceil(limits.max_probe_seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    reply: dict[str, Any]
    try:
        reply = {"result": dataclasses.asdict(probe(Path(request["path"]), limits))}
    except MediaRejected as exc:
        reply = {"rejected": {"slug": exc.slug, "detail": exc.detail}}
    except MemoryError:
        detail = (
            "Checking this video needed more memory than any video within our limits: it is "
            "too demanding to process."
        )
        reply = {"rejected": {"slug": VideoTooDemanding.slug, "detail": detail}}
    sys.stdout.write(json.dumps(reply))


def _limits_json(limits: MediaLimits) -> dict[str, Any]:
    values = dataclasses.asdict(limits)
    values["containers"] = sorted(limits.containers)
    return values


def _result_from_json(data: dict[str, Any]) -> ProbeResult:
    audio = data["audio"]
    return ProbeResult(
        **{
            **data,
            "video": VideoInfo(**data["video"]),
            "audio": None if audio is None else AudioInfo(**audio),
            "sensitive_metadata": tuple(data["sensitive_metadata"]),
        }
    )


# --- opening -------------------------------------------------------------------------------


def _open(path: Path, f: BinaryIO, head: bytes, size: int, limits: MediaLimits) -> InputContainer:
    demuxers = sorted({CONTAINERS[name][0] for name in limits.containers})
    options = {
        "format_whitelist": ",".join(demuxers),
        "protocol_whitelist": "file",
        # Read by the decoders FFmpeg opens to fill in stream parameters.
        "threads": "1",
        "max_pixels": str(limits.max_pixels),
    }
    budget = max(limits.max_probe_seconds, 0.0)
    try:
        return av.open(str(path), mode="r", options=options, timeout=(budget, budget))
    except av.error.ExitError:
        raise VideoTooDemanding(
            "Reading this file's header took too long: it is not a video we can process."
        ) from None
    except av.error.MemoryError:
        raise VideoTooDemanding(
            "This file's header declares more than we can hold in memory: it is not a video "
            "we can process."
        ) from None
    except av.error.FFmpegError as exc:
        raise _unopenable(exc, f, head, size, limits) from None


def _unopenable(
    exc: av.error.FFmpegError, f: BinaryIO, head: bytes, size: int, limits: MediaLimits
) -> MediaRejected:
    """Why FFmpeg refused the file, told from its first bytes."""
    accepted = limits.accepted()
    kind, label = _sniff(head)
    if kind == "image":
        return ImageNotVideo(
            f"This is a {label} image, not a video. Upload a video file ({accepted})."
        )
    if kind == "audio":
        return AudioNotVideo(
            f"This is a {label} audio file: it has sound but no picture. "
            f"Upload a video file ({accepted})."
        )
    if kind == "video":
        return UnsupportedContainer(
            f"{label} files are not accepted. Upload the video as {accepted}."
        )
    if kind in ("bmff", "ebml"):
        demuxer = "mov" if kind == "bmff" else "matroska"
        if all(CONTAINERS[name][0] != demuxer for name in limits.containers):
            return UnsupportedContainer(
                f"{label} files are not accepted. Upload the video as {accepted}."
            )
        if _cut_off(kind, f, head, size):
            return _truncated(label)
        return NotAVideo(
            f"This file starts like {'an' if label[0] in 'AEIMO' else 'a'} {label} video but "
            f"the rest of it cannot be read: it is damaged. Export or copy the video again."
        )
    if exc.errno == 22:  # EINVAL: FFmpeg knows the format but it is not on the whitelist
        return UnsupportedContainer(
            f"This file format is not accepted. Upload the video as {accepted}."
        )
    return NotAVideo(
        f"This file is not a video we can read: it is not in any audio or video format we "
        f"know, or it is damaged. Upload a video file ({accepted})."
    )


def _truncated(label: str) -> TruncatedVideo:
    return TruncatedVideo(
        f"This {label} file is incomplete: it stops before its end, as if the upload or the "
        f"recording was interrupted. Upload the whole file again."
    )


# First bytes -> (kind, label). Kinds: image, audio, video (a container we do not take),
# bmff (MP4/MOV/3GP/HEIF...), ebml (Matroska/WebM).
_MAGIC: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image", "PNG"),
    (0, b"\xff\xd8\xff", "image", "JPEG"),
    (0, b"GIF87a", "image", "GIF"),
    (0, b"GIF89a", "image", "GIF"),
    (0, b"II*\x00", "image", "TIFF"),
    (0, b"MM\x00*", "image", "TIFF"),
    (0, b"\x00\x00\x01\x00", "image", "ICO"),
    (0, b"8BPS", "image", "Photoshop"),
    (0, b"ID3", "audio", "MP3"),
    (0, b"fLaC", "audio", "FLAC"),
    (0, b"#!AMR", "audio", "AMR"),
    (0, b"MThd", "audio", "MIDI"),
    (0, b"OggS", "video", "Ogg"),
    (0, b"FLV\x01", "video", "FLV"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "video", "WMV"),
    (0, b"\x00\x00\x01\xba", "video", "MPEG"),
    (0, b"\x1a\x45\xdf\xa3", "ebml", "MKV"),
)
_RIFF = {b"WAVE": ("audio", "WAV"), b"AVI ": ("video", "AVI"), b"WEBP": ("image", "WebP")}
_BOXES = {
    b"ftyp", b"styp", b"moov", b"mdat", b"moof", b"mfra", b"free", b"skip", b"wide", b"pnot",
    b"uuid", b"meta", b"sidx", b"pdin", b"udta", b"prft", b"emsg",
}  # fmt: skip
_IMAGE_BRANDS = {"heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1", "avif", "avis"}
_AUDIO_BRANDS = {"m4a", "m4b", "m4p", "f4a", "f4b"}


def _sniff(head: bytes) -> tuple[str | None, str]:
    for offset, magic, kind, label in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if kind == "ebml":
                return kind, "WebM" if _is_webm(head) else "MKV"
            return kind, label
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio", "AIFF"
    if head[4:8] in _BOXES:
        brand = _brand(head)
        if brand in _IMAGE_BRANDS:
            return "image", "AVIF" if brand.startswith("avi") else "HEIF"
        if brand in _AUDIO_BRANDS:
            return "audio", brand.upper()
        return "bmff", "MOV" if brand in ("qt", "") else "MP4"
    if len(head) > 188 and head[0] == head[188] == 0x47:
        return "video", "MPEG-TS"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "audio", "AAC"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio", "MP3"
    return None, ""


def _brand(head: bytes) -> str:
    """The major brand of an ISO BMFF file (lower case, no padding), "" without ftyp."""
    if head[4:8] != b"ftyp":
        return ""
    return head[8:12].decode("latin-1").strip().lower()


def _is_webm(head: bytes) -> bool:
    at = head.find(b"\x42\x82", 4, 64)  # EBML DocType element
    return at > 0 and head[at + 3 : at + 7] == b"webm"


# --- structure: is the file cut off? ------------------------------------------------------


def _cut_off(kind: str, f: BinaryIO, head: bytes, size: int) -> bool:
    if kind == "bmff":
        return _bmff_cut_off(f, size)
    if kind == "ebml":
        return _ebml_cut_off(head, size)
    return False


def _bmff_cut_off(f: BinaryIO, size: int) -> bool:
    """Walk the top-level boxes: one that claims to run past the end of the file, or no ``moov``
    (the index, written last by phones and cameras) at all, means the file was cut off."""
    offset, seen_moov = 0, False
    for _ in range(100_000):
        if offset >= size:
            break
        f.seek(offset)
        header = f.read(16)
        if len(header) < 8:
            return True
        box_size, box_type = struct.unpack(">I4s", header[:8])
        if box_type not in _BOXES:
            break  # junk after the last box: not ours to judge
        seen_moov |= box_type in (b"moov", b"moof")
        if box_size == 0:  # runs to the end of the file
            break
        if box_size == 1:
            if len(header) < 16:
                return True
            box_size = struct.unpack(">Q", header[8:16])[0]
        if box_size < 8:
            break
        if offset + box_size > size:
            return True
        offset += box_size
    return not seen_moov


def _ebml_cut_off(head: bytes, size: int) -> bool:
    """A Matroska Segment whose declared size runs past the end of the file."""
    try:
        offset = 4
        header_size, offset = _vint(head, offset)
        offset += header_size
        if head[offset : offset + 4] != b"\x18\x53\x80\x67":
            return False
        segment_size, data_start = _vint(head, offset + 4)
    except IndexError:
        return len(head) == size  # the header itself is cut off
    known = segment_size != (1 << (7 * (data_start - offset - 4))) - 1
    return known and data_start + segment_size > size


def _vint(data: bytes, offset: int) -> tuple[int, int]:
    """An EBML variable-length size at ``offset``: (value, offset after it)."""
    first = data[offset]
    length = 9 - first.bit_length() if first else 9
    if length > 8:
        raise IndexError("invalid EBML size")
    value = first & ((1 << (8 - length)) - 1)
    for byte in data[offset + 1 : offset + length]:
        value = (value << 8) | byte
    if offset + length > len(data):
        raise IndexError("cut off")
    return value, offset + length


# --- inspecting an opened file -------------------------------------------------------------


@dataclass
class _Sample:
    """What decoding at one point of the video found."""

    frames: int = 0
    first: VideoFrame | None = None
    pts: list[int] = dataclasses.field(default_factory=list)  # the packets' times, in order read


class _Inspection:
    def __init__(
        self,
        container: InputContainer,
        f: BinaryIO,
        head: bytes,
        size: int,
        limits: MediaLimits,
        deadline: float,
    ) -> None:
        self.container = container
        self.f = f
        self.head = head
        self.size = size
        self.limits = limits
        self.deadline = deadline

    def run(self) -> ProbeResult:
        c, limits = self.container, self.limits
        name, label = self._container_name()
        if len(c.streams) > limits.max_streams:
            raise VideoTooDemanding(
                f"This file has {len(c.streams)} streams; a video has a few at most "
                f"(the limit is {limits.max_streams})."
            )
        video = self._video_stream(label)
        audio = c.streams.audio[0] if c.streams.audio else None
        if name not in limits.containers:
            raise UnsupportedContainer(
                f"{label} files are not accepted. Upload the video as {limits.accepted()}."
            )
        if self._index_cut_off() or _cut_off(
            "bmff" if name in ("mp4", "mov", "m4v", "3gp") else "ebml", self.f, self.head, self.size
        ):
            raise _truncated(label)
        cc = video.codec_context
        if cc is None:
            raise UndecodableVideo(
                "This video is encoded in a format we cannot decode. Export it as H.264, "
                "HEVC, VP9 or AV1 and upload it again."
            )
        self._check_dimensions(cc.width, cc.height)
        duration = self._declared_duration(video)
        if duration is not None:
            self._check_duration(duration)
        average = _rate(video.average_rate) or _rate(video.guessed_rate)
        self._check_frame_rate(average)
        cc.thread_count = 1
        cc.options = {"max_pixels": str(limits.max_pixels)}
        head = self._decode_head(video, audio)
        deltas = _deltas(video, head.pts)
        if deltas and video.time_base:
            # What the timestamps say, in case the header claims a lower rate than it has.
            self._check_frame_rate(1 / float(statistics.median(deltas) * video.time_base))
        if duration is None:
            duration = self._scan_duration(video)
            self._check_duration(duration)
        self._decode_middle(video, duration)
        first = head.first
        assert first is not None  # _decode_head raises when no frame decodes
        rotation = self._rotation(video, first)
        width, height = first.width, first.height
        sar = video.sample_aspect_ratio
        shown_w = round(width * sar) if sar and sar != 1 else width
        shown_h = height
        if rotation % 180:
            shown_w, shown_h = shown_h, shown_w
        return ProbeResult(
            container=name,
            format_name=c.format.name,
            duration=round(duration, 3),
            size=self.size,
            video=VideoInfo(
                codec=cc.name,
                width=width,
                height=height,
                display_width=shown_w,
                display_height=shown_h,
                rotation=rotation,
                average_fps=_round(average),
                real_fps=_round(_rate(video.base_rate)),
                variable_frame_rate=_variable(average, _rate(video.base_rate), deltas),
                pixel_format=first.format.name,
                bit_depth=max((comp.bits for comp in first.format.components), default=8),
            ),
            audio=None
            if audio is None or audio.codec_context is None
            else AudioInfo(
                codec=audio.codec_context.name,
                channels=audio.codec_context.channels,
                sample_rate=audio.codec_context.sample_rate,
            ),
            sensitive_metadata=self._sensitive_metadata(),
        )

    # -- container and streams

    def _container_name(self) -> tuple[str, str]:
        demuxer = self.container.format.name
        if "matroska" in demuxer.split(","):
            name = "webm" if _is_webm(self.head) else "mkv"
            return name, CONTAINERS[name][1]
        brand = str(self.container.metadata.get("major_brand", _brand(self.head))).strip().lower()
        if brand in _IMAGE_BRANDS:
            label = "AVIF" if brand.startswith("avi") else "HEIF"
            raise ImageNotVideo(
                f"This is a {label} image, not a video. "
                f"Upload a video file ({self.limits.accepted()})."
            )
        if brand in ("qt", ""):
            return "mov", "MOV"
        if brand.startswith(("3gp", "3g2")):
            return "3gp", "3GP"
        if brand in _AUDIO_BRANDS:
            return "m4a", brand.upper()
        if brand == "m4v":
            return "m4v", "M4V"
        return "mp4", "MP4"

    def _video_stream(self, label: str) -> VideoStream:
        c = self.container
        still = Disposition.attached_pic | Disposition.still_image
        videos = [s for s in c.streams.video if not s.disposition & still]
        if videos:
            defaults = [s for s in videos if s.disposition & Disposition.default]
            return (defaults or videos)[0]
        accepted = self.limits.accepted()
        if c.streams.audio:
            raise AudioNotVideo(
                f"This {label} file has sound but no picture: there is no video in it. "
                f"Upload a video file ({accepted})."
            )
        if c.streams.video:
            raise ImageNotVideo(
                f"This {label} file holds only a still picture, not a video. "
                f"Upload a video file ({accepted})."
            )
        raise NoVideoStream(
            f"This {label} file has no video in it (and no sound either). "
            f"Upload a video file ({accepted})."
        )

    def _index_cut_off(self) -> bool:
        """A sample the index points at lies past the end of the file (MP4/MOV keep an index
        of every sample; a file cut after its header still has it)."""
        for stream in self.container.streams:
            entries = stream.index_entries
            tail = entries[-64:] if len(entries) > 64 else list(entries)
            if any(e.pos + e.size > self.size for e in tail if e.pos >= 0):
                return True
        return False

    # -- declared properties

    def _check_dimensions(self, width: int, height: int) -> None:
        if not width or not height:
            return  # not declared: the decoded frames are checked
        limits = self.limits
        if max(width, height) > limits.max_side:
            raise UnsupportedDimensions(
                f"The picture is {width}x{height} pixels; videos can be at most "
                f"{limits.max_side} pixels on each side. Export it at a lower resolution."
            )
        if min(width, height) < limits.min_side:
            raise UnsupportedDimensions(
                f"The picture is {width}x{height} pixels; videos need at least "
                f"{limits.min_side} pixels on each side."
            )

    def _check_frame_rate(self, fps: float | None) -> None:
        limit = self.limits.max_fps
        if fps is not None and fps > limit * 1.01:
            raise UnsupportedFrameRate(
                f"This video runs at {fps:.0f} frames per second; the limit is {limit:g}. "
                f"Export it at {limit:g} fps or less."
            )

    def _declared_duration(self, video: VideoStream) -> float | None:
        c = self.container
        if c.duration is not None and c.duration > 0:
            return float(c.duration) / av.time_base
        if video.duration and video.time_base:
            return float(video.duration * video.time_base)
        return None

    def _check_duration(self, duration: float) -> None:
        limits = self.limits
        if duration > limits.max_seconds:
            raise VideoTooLong(
                f"This video is {_clock(duration)} long; videos can be at most "
                f"{_clock(limits.max_seconds)}. Trim it and upload it again."
            )
        if duration < limits.min_seconds:
            raise VideoTooShort(
                f"This video is {duration:.2f} s long; videos must last at least "
                f"{limits.min_seconds:g} s."
            )

    # -- decoding

    def _tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise VideoTooDemanding(
                f"Checking this video took longer than {self.limits.max_probe_seconds:g} s: "
                f"it is too demanding to process."
            )

    def _frames(self, video: VideoStream, packet: Packet[Any] | None) -> list[VideoFrame]:
        cc = video.codec_context
        try:
            frames = video.decode(packet)
        except av.error.MemoryError:
            raise VideoTooDemanding(
                "Decoding this video needs more memory than any video within our limits."
            ) from None
        except av.error.FFmpegError:
            if max(cc.width, cc.height) > self.limits.max_side:
                # The decoder refused to allocate a picture larger than the limits (max_pixels).
                raise self._grown(cc.width, cc.height) from None
            raise self._damaged(packet) from None
        for frame in frames:
            if max(frame.width, frame.height) > self.limits.max_side:
                raise self._grown(frame.width, frame.height)
            self._check_dimensions(frame.width, frame.height)
            if frame.is_corrupt:
                raise self._damaged(packet)
        return frames

    def _grown(self, width: int, height: int) -> VideoTooDemanding:
        limits = self.limits
        return VideoTooDemanding(
            f"This video's frames grow to {width}x{height} pixels partway through, beyond the "
            f"{limits.max_side}-pixel limit its header promised to stay within."
        )

    def _damaged(self, packet: Packet[Any] | None) -> UndecodableVideo:
        where = ""
        if packet is not None and packet.pts is not None and packet.time_base:
            at = float(packet.pts * packet.time_base)
            where = f" around {_clock(at)}" if at >= 0.5 else " at its start"
        return UndecodableVideo(
            f"The picture in this video is damaged{where} and cannot be decoded. "
            f"Export or copy the video again and upload the new file."
        )

    def _decode_head(self, video: VideoStream, audio: AudioStream | None) -> _Sample:
        """Decode the first frames (and the first sound), and note the first packets' times."""
        limits = self.limits
        want = limits.sample_frames
        sample = _Sample()
        packets = audio_frames = audio_packets = 0
        streams: list[Stream] = [video]
        if audio is not None and audio.codec_context is not None:
            audio.codec_context.thread_count = 1
            streams.append(audio)
        elif audio is not None:
            raise UndecodableAudio(
                "The sound in this video is encoded in a format we cannot decode. "
                "Export it with AAC or Opus sound and upload it again."
            )
        for packet in self.container.demux(streams):
            self._tick()
            if packet.stream.type == "audio":
                if audio is not None and audio_frames < want and packet.size:
                    audio_packets += 1
                    audio_frames += self._audio_frames(audio, packet)
                    if audio_packets >= limits.max_packets_per_sample and not audio_frames:
                        raise self._silent_damage()
                continue
            if packet.size == 0:
                continue
            packets += 1
            if packet.pts is not None and len(sample.pts) < 2 * limits.max_packets_per_sample:
                sample.pts.append(packet.pts)
            if sample.frames < want:
                frames = self._frames(video, packet)
                if frames and sample.first is None:
                    sample.first = frames[0]
                sample.frames += len(frames)
                if not sample.frames and packets >= limits.max_packets_per_sample:
                    raise UndecodableVideo(
                        f"No picture could be decoded from the first {packets} packets of "
                        f"this video: it is damaged or not really a video."
                    )
            enough_audio = audio is None or audio_frames >= want
            # Matroska has no per-frame index: its first packets' times give the frame rate.
            timed = len(video.index_entries) > 2 or packets >= limits.max_packets_per_sample
            if sample.frames >= want and enough_audio and timed:
                break
        if sample.frames < want:
            for frame in self._frames(video, None):  # drain what the decoder holds back
                sample.first = sample.first or frame
                sample.frames += 1
        if not sample.frames:
            raise UndecodableVideo(
                "No picture in this video could be decoded: it is damaged, or encoded in a way "
                "we cannot read."
            )
        return sample

    def _audio_frames(self, audio: AudioStream, packet: Packet[Any]) -> int:
        try:
            return len(audio.decode(packet))
        except av.error.FFmpegError:
            raise self._silent_damage() from None

    def _silent_damage(self) -> UndecodableAudio:
        return UndecodableAudio(
            "The sound in this video is damaged and cannot be decoded. Export or copy the "
            "video again and upload the new file."
        )

    def _decode_middle(self, video: VideoStream, duration: float) -> _Sample:
        """Seek to the keyframe before the middle and decode from there to a few frames past the
        middle (or as far as the packet cap allows, with a very long GOP)."""
        limits = self.limits
        sample = _Sample()
        time_base = video.time_base or Fraction(1, av.time_base)
        start = video.start_time or 0
        target = start + int(Fraction(duration / 2) / time_base)
        try:
            self.container.seek(target, stream=video, backward=True)
        except av.error.FFmpegError:
            raise UndecodableVideo(
                "The middle of this video cannot be reached: the file is damaged. Export or "
                "copy the video again and upload the new file."
            ) from None
        video.codec_context.flush_buffers()
        packets = past = 0
        for packet in self.container.demux(video):
            self._tick()
            if packet.size == 0:
                continue
            packets += 1
            frames = self._frames(video, packet)
            sample.frames += len(frames)
            past += sum(1 for f in frames if f.pts is None or f.pts >= target)
            if past >= limits.sample_frames or packets >= limits.max_packets_per_sample:
                return sample
        sample.frames += len(self._frames(video, None))
        if sample.frames:
            return sample
        if packets:
            raise UndecodableVideo(
                "The middle of this video cannot be decoded: the file is damaged. Export or "
                "copy the video again and upload the new file."
            )
        raise _truncated(self._container_name()[1])

    def _scan_duration(self, video: VideoStream) -> float:
        """No duration in the header (e.g. a WebM recorded in a browser): read the packets'
        timestamps to the end (no decoding) and take the last one."""
        time_base = video.time_base or Fraction(1, av.time_base)
        start = video.start_time or 0
        self.container.seek(0, stream=video, backward=True)
        last = start
        packets = 0
        longest = self.limits.max_seconds * self.limits.max_fps * 1.1 + 1
        for packet in self.container.demux(video):
            self._tick()
            if packet.pts is None:
                continue
            packets += 1
            last = max(last, packet.pts + (packet.duration or 0))
            if packets > longest:
                break  # more frames than a video within the limits has: too long anyway
        return float((last - start) * time_base)

    # -- what the result reports

    def _rotation(self, video: VideoStream, frame: VideoFrame) -> int:
        # FFmpeg gives the display matrix as counter-clockwise degrees; the legacy ``rotate``
        # tag (and what a transcoder's transpose wants) is clockwise.
        counter = frame.rotation
        if counter:
            clockwise = -counter
        else:
            # Matroska keeps tag names as written (ROTATE); MP4/MOV lower-case them.
            tags = {key.lower(): value for key, value in video.metadata.items()}
            try:
                clockwise = round(float(tags.get("rotate", "0")))
            except (ValueError, OverflowError):
                clockwise = 0
        return (round(clockwise / 90) * 90) % 360

    def _sensitive_metadata(self) -> tuple[str, ...]:
        found: set[str] = set()
        tag_sets: list[dict[str, str]] = [self.container.metadata]
        for stream in self.container.streams:
            tag_sets.append(stream.metadata)
            if stream.type == "data":
                tag = _codec_tag(stream)
                if tag in _METADATA_TRACKS:
                    found.add(f"{_METADATA_TRACKS[tag]} track ({tag})")
        for tags in tag_sets:
            for key in tags:
                lowered = key.lower()
                if any(hint in lowered for hint in _SENSITIVE_HINTS):
                    found.add(lowered)
        return tuple(sorted(found))


# Tags whose names say they locate the recording or identify the device.
_SENSITIVE_HINTS = (
    "location", "gps", "iso6709", "xyz", "latitude", "longitude", "altitude", "geo",
    "make", "model", "manufacturer", "serial", "software", "device", "camera", "lens",
    "firmware", "owner", "author",
)  # fmt: skip
# Timed metadata tracks that carry positions or sensor data.
_METADATA_TRACKS = {
    "mebx": "timed metadata",  # Apple (location, device motion)
    "gpmd": "GPS and sensor",  # GoPro GPMF
    "camm": "camera motion",  # Google camera motion metadata
}


def _codec_tag(stream: Stream) -> str:
    try:
        return str(stream.codec_tag).strip().lower()
    except (AttributeError, TypeError, ValueError):
        return ""


# --- small helpers ---------------------------------------------------------------------------


def _rate(value: Fraction | None) -> float | None:
    if value is None or value <= 0:
        return None
    return float(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _deltas(video: VideoStream, head_pts: Sequence[int]) -> list[int]:
    """Time between consecutive frames, in the stream's time base: from the sample index where
    the container has one (MP4/MOV, every frame), else from the first packets read."""
    entries = video.index_entries
    times = [e.timestamp for e in entries[:4000]] if len(entries) > 2 else sorted(head_pts)
    # Leave out the last frame (its duration is often cut short) and duplicate times.
    return [d for d in (b - a for a, b in itertools.pairwise(times[:-1])) if d > 0]


def _variable(average: float | None, real: float | None, deltas: list[int]) -> bool:
    if average and real and abs(average - real) > 0.01 * real:
        return True
    if len(deltas) < 2:
        return False
    median = statistics.median(deltas)
    # One tick of jitter is rounding (Matroska stores milliseconds: 33, 34, 33...).
    return max(deltas) - min(deltas) > 1 + 0.02 * median


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB" if size >= 10_000_000 else f"{size / 1_000_000:.1f} MB"


def _clock(seconds: float) -> str:
    """12.5 s, 3 min 05 s, 2 h 00 min."""
    if not math.isfinite(seconds):
        return "forever"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
