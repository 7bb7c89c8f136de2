"""Sample clips for ``reelm demo``: a few short portrait videos, so a newcomer sees a living feed.

:func:`ensure_samples` makes each clip once with FFmpeg (the ``imageio-ffmpeg`` binary; nothing
is downloaded at run time) and keeps it in a cache directory. Every clip is 720x1280, 30 fps,
H.264 + AAC in MP4, 5 to 8 seconds long, with an animated background drawn by one of FFmpeg's
generators (gradients, plasma, a zooming Mandelbrot set, cellular automata, the game of life), a
short tune synthesised by ``aevalsrc``, and a title drawn in the picture.

The title is drawn from Python, not with FFmpeg's ``drawtext``. The imageio-ffmpeg build has
``drawtext`` (libfreetype, fontconfig), but it needs a font on the machine, and none is certain:
with no font visible to fontconfig it fails with "Cannot find a valid font for the family Sans"
(tried with an empty ``FONTCONFIG_FILE``). On Debian 12 an apt-installed ``chromium`` does bring
one font (``libfontconfig1`` -> ``fontconfig-config``, which depends on any one of nine font
packages), but which one is not fixed, and ``fonts-liberation`` is only recommended by
``chromium-common``; a Chromium installed by Playwright, a slim container or a machine with only
python3 has no font at all. So the titles use a small 5x7 pixel font defined below (A-Z, 0-9 and
some punctuation), rendered into an RGBA image (a PAM file, which FFmpeg reads natively) with
plain Python and laid over the background: no font file, no numpy, no Pillow, and the same
picture on every machine.

The cache is content-addressed: a clip's file name ends with a digest of everything that makes
it (the FFmpeg arguments, the title image), so a changed recipe makes a new clip and the stale one
is removed. A clip is written in a temporary directory beside it and renamed into place once
FFmpeg has finished and the platform's own :func:`~reelm.media.probe.probe` accepts it, so a
killed run never leaves a broken clip under its final name (its work directory is swept by a
later run); a cached clip that no longer probes is made again.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg  # type: ignore[import-untyped]  # the package ships no type hints

from reelm.media.errors import MediaRejected
from reelm.media.probe import probe

WIDTH, HEIGHT, FPS = 720, 1280, 30
SAMPLE_RATE = 44100
RECIPE_VERSION = 1  # bump when the code around the recipes changes what a clip looks like
FFMPEG_TIMEOUT = 180.0  # seconds for one clip; a clip takes a few seconds on two cores


@dataclass(frozen=True, slots=True)
class SampleClip:
    """A ready clip, the caption to post it with and the demo user (handle) who posts it."""

    path: Path
    caption: str
    handle: str


class SampleError(RuntimeError):
    """A sample clip could not be made."""


@dataclass(frozen=True, slots=True)
class _Recipe:
    slug: str
    handle: str
    caption: str
    title: tuple[str, ...]  # lines drawn in the picture (ASCII, the pixel font's characters)
    color: tuple[int, int, int]  # the title's sticker
    seconds: float
    background: str  # a filter chain from a source, any size: scaled to WIDTH x HEIGHT
    sound: str  # a filter graph from sources, ending in one output labelled [mix]


# --- the sound ---------------------------------------------------------------------------------

_NOTE = re.compile(r"([A-G])([#b]?)(\d)")
_SEMITONE = {"C": -9, "D": -7, "E": -5, "F": -4, "G": -2, "A": 0, "B": 2}


def _hz(note: str) -> float:
    """The frequency of a note such as ``A4`` (440 Hz), ``C#5`` or ``Bb3``."""
    match = _NOTE.fullmatch(note)
    if match is None:
        raise ValueError(f"not a note: {note!r}")
    letter, accidental, octave = match.groups()
    semitones = _SEMITONE[letter] + {"#": 1, "b": -1, "": 0}[accidental] + 12 * (int(octave) - 4)
    return 440.0 * 2 ** (semitones / 12)


def _sequence(notes: str, step: float) -> str:
    """The frequency, as an expression of ``t``, of a looping line of notes one ``step`` apart,
    e.g. ``"A4 C5 - E5"`` (``-`` is a rest: frequency 0, silence)."""
    names = notes.split()
    index = f"mod(floor(t/{step}),{len(names)})"
    expr = "0"
    for i in reversed(range(len(names))):
        freq = 0.0 if names[i] == "-" else _hz(names[i])
        expr = f"if(eq({index},{i}),{freq:.2f},{expr})"
    return expr


def _pluck(notes: str, step: float, gain: float, decay: float = 6.0) -> str:
    """A plucked voice playing ``notes``: each note starts sharply, then dies away before the
    next, so changing pitch never clicks."""
    tau = f"mod(t,{step})"
    envelope = f"exp(-{decay}*{tau})*min(1,{tau}*400)*(1-{tau}/{step})"
    tone = "(sin(2*PI*ld(0)*t)+0.35*sin(4*PI*ld(0)*t)+0.1*sin(6*PI*ld(0)*t))"
    return f"(st(0,{_sequence(notes, step)});{gain}*{tone}*{envelope})"


def _pad(chords: Sequence[str], bar: float, gain: float) -> str:
    """Sustained chords, one per ``bar`` seconds, swelling gently (``"A3 C#4 E4"``...)."""
    voices = zip(*(chord.split() for chord in chords), strict=True)
    tau = f"mod(t,{bar})"
    swell = f"min(1,{tau}*4)*min(1,({bar}-{tau})*6)*(0.8+0.2*sin(2*PI*0.5*t))"
    tones = "+".join(f"sin(2*PI*{_sequence(' '.join(v), bar)}*t)" for v in voices)
    return f"{gain}*({tones})*{swell}"


def _kick(beat: float, gain: float, offset: float = 0.0) -> str:
    """A bass drum: a sine falling from 145 Hz to 45 Hz in a few tens of milliseconds."""
    tau = f"mod(t-{offset}+{beat},{beat})"
    return f"{gain}*sin(2*PI*(45*{tau}+4*(1-exp(-25*{tau}))))*exp(-9*{tau})"


def _noise_hit(step: float, gain: float, decay: float, seed: int, offset: float = 0.0) -> str:
    """A short burst of white noise every ``step`` seconds: a hi-hat, a shaker, a tamborim."""
    tau = f"mod(t-{offset}+{step},{step})"
    return f"{gain}*(2*random({seed})-1)*exp(-{decay}*{tau})"


def _mix(*voices: str, post: str = "", label: str = "mix") -> str:
    """One endless ``aevalsrc`` summing ``voices`` (the output's duration cuts it), then the
    ``post`` filters, labelled ``[label]``."""
    chain = f"aevalsrc='{'+'.join(voices)}':s={SAMPLE_RATE}"
    return f"{chain}{',' + post if post else ''}[{label}]"


# --- the clips ---------------------------------------------------------------------------------


def _recipes() -> tuple[_Recipe, ...]:
    return (
        _Recipe(
            slug="sunset-bay",
            handle="surf.with.jack",
            caption="Sunset loop over the bay 🌅 #sunset #timelapse #bondi",
            title=("SUNSET LOOP", "BONDI BAY"),
            color=(106, 44, 112),
            seconds=6.0,
            background=(
                # A low sun glowing through the haze, drifting as the colours turn.
                "gradients=s=180x320:r=30:n=4:seed=11:speed=0.012:type=radial:"
                "c0=0xfff1a8:c1=0xffa447:c2=0xe8505b:c3=0x6a2c70:x0=90:y0=190:x1=90:y1=0"
            ),
            sound=(
                # Waves (noise swelling and ebbing, low-passed) under a slow warm pad.
                _mix(
                    "0.5*(2*random(0)-1)*(0.55+0.45*sin(2*PI*0.2*t))",
                    post="lowpass=f=500,lowpass=f=900",
                    label="waves",
                )
                + ";"
                + _mix(
                    _pad(["A3 C#4 E4 G#4", "F#3 A3 C#4 E4", "D3 F#3 A3 C#4"], 2.0, 0.09),
                    _pluck("E5 - C#5 - A4 - B4 -", 0.375, 0.08, decay=3.0),
                    label="tune",
                )
                + ";[waves][tune]amix=inputs=2:normalize=0[mix]"
            ),
        ),
        _Recipe(
            slug="twizzle",
            handle="maya.skates",
            caption=(
                "Day 12 of learning the twizzle. Still mostly falling ⛸️ "
                "#iceskating #figureskating @chloe.paris"
            ),
            title=("TWIZZLE", "DAY 12"),
            color=(58, 123, 213),
            seconds=7.0,
            background=(
                "color=c=black:s=90x160:r=30,geq="
                "r='150+60*sin(X/9+T*1.7)*sin(Y/15-T)':"
                "g='190+45*sin((X+Y)/11+T*1.3)':"
                "b='235+20*sin(hypot(X-45,Y-80)/6-T*3)'"
            ),
            # A waltz: bass on one, chord on two and three.
            sound=_mix(
                _pluck("D3 - - A2 - - G2 - - A2 - -", 0.25, 0.32, decay=5.0),
                _pluck("- F#4 F#4 - E4 E4 - D4 D4 - E4 C#4", 0.25, 0.14, decay=9.0),
                _pluck("- A4 A4 - A4 A4 - B4 B4 - G4 A4", 0.25, 0.12, decay=9.0),
                _pluck("F#5 - E5 D5 - - B4 - D5 E5 - -", 0.25, 0.14, decay=4.0),
            ),
        ),
        _Recipe(
            slug="crispy-tofu",
            handle="tofu_chef",
            caption=(
                "Crispy tofu in 60 seconds, no deep fryer 🍳 #plantbased #recipe "
                "#60secondcooking @samba.rafa"
            ),
            title=("CRISPY TOFU", "IN 60 SEC"),
            color=(222, 140, 24),
            seconds=5.5,
            background=(
                "mandelbrot=s=180x320:r=30:maxiter=160:start_scale=2.5:end_scale=0.02:"
                "end_pts=200:start_x=-0.743643887:start_y=0.131825904,hue=h=t*50"
            ),
            # An upbeat jingle over the sizzle of the pan.
            sound=_mix(
                _pluck("C5 E5 G5 C6 A5 G5 E5 G5 D5 F5 A5 D6 B5 A5 G5 F5", 0.1875, 0.16),
                _pluck("C3 - C3 - A2 - A2 - D3 - D3 - G2 - G2 -", 0.1875, 0.22, decay=4.0),
                _kick(0.375, 0.35),
                _noise_hit(0.02, 0.025, 30.0, seed=1),
            ),
        ),
        _Recipe(
            slug="dawn-chorus",
            handle="kiwi.birds",
            caption="Tūī at first light. Sound on 🔊 #birds #aotearoa #dawnchorus",
            title=("DAWN CHORUS", "SOUND ON"),
            color=(46, 139, 87),
            seconds=6.5,
            background=(
                "cellauto=s=135x240:r=30:rule=110:random_fill_ratio=0.35:random_seed=7:scroll=1,"
                "format=rgb24,lutrgb=r='20+val*0.45':g='70+val*0.7':b='60+val*0.35'"
            ),
            # Two birds trilling at their own pace over a soft drone.
            sound=_mix(
                "0.16*sin(2*PI*2900*t+80*sin(2*PI*31*t))*between(mod(t,1.3),0,0.45)"
                "*sin(PI*min(1,mod(t,1.3)/0.45))",
                "0.11*sin(2*PI*3600*t-140*cos(2*PI*9*t))*between(mod(t+0.6,1.9),0,0.6)"
                "*sin(PI*min(1,mod(t+0.6,1.9)/0.6))",
                "0.1*sin(2*PI*(2200+900*mod(t,0.11)/0.11)*t)*between(mod(t,3.1),2.2,2.75)",
                _pad(["G3 D4 B4", "E3 B3 G4"], 3.25, 0.06),
            ),
        ),
        _Recipe(
            slug="lofi-loop",
            handle="sakura.beats",
            caption="Late-night lo-fi loop for studying 🎧 #lofi #beats #studywithme",
            title=("LOFI LOOP", "NO. 03"),
            color=(214, 92, 161),
            seconds=6.0,
            background=(
                "life=s=90x160:r=15:ratio=0.25:mold=8:random_seed=3:"
                "life_color=#ffd1e8:death_color=#1b1035:mold_color=#7a2e8e,fps=30"
            ),
            sound=_mix(
                _pad(["D3 F3 A3 C4", "G3 Bb3 D4 F4", "C3 E3 G3 B3", "A2 C3 E3 G3"], 1.5, 0.07),
                _pluck("A4 - C5 - D5 - - C5 F5 - E5 - C5 - A4 -", 0.1875, 0.07, decay=5.0),
                _kick(0.75, 0.45),
                _kick(0.75, 0.3, offset=0.5625),
                _noise_hit(0.375, 0.08, 45.0, seed=1, offset=0.1875),
                post="lowpass=f=3500",
            ),
        ),
        _Recipe(
            slug="samba-step",
            handle="samba.rafa",
            caption="Samba no pé, step 1: just bounce 💃 #samba #dance #aulaDeSamba @maya.skates",
            title=("SAMBA", "STEP 1"),
            color=(0, 146, 63),
            seconds=5.0,
            background=(
                "gradients=s=135x240:r=30:n=5:seed=5:type=spiral:speed=0.04:"
                "c0=0x009c3b:c1=0xffdf00:c2=0x002776:c3=0xffffff:c4=0x00c2a8"
            ),
            # Batucada: surdo on the beats, tamborim and shaker in sixteenths, a cavaquinho.
            sound=_mix(
                _kick(0.6, 0.5),
                _kick(1.2, 0.35, offset=0.45),
                _noise_hit(0.15, 0.09, 60.0, seed=1),
                _noise_hit(0.3, 0.07, 25.0, seed=2, offset=0.15),
                _pluck("G4 B4 D5 B4 - D5 E5 D5 C5 A4 - C5 D5 C5 B4 -", 0.15, 0.08, decay=8.0),
            ),
        ),
    )


RECIPES = _recipes()


# --- the title: a 5x7 pixel font --------------------------------------------------------------

# Each glyph is seven rows of five columns, '#' on; a glyph is as wide as its widest row's span.
_GLYPHS: dict[str, str] = {
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .###.",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "####. ....# ....# .###. ....# ....# ####.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    "!": "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "'": "..#.. ..#.. .#... ..... ..... ..... .....",
    "-": "..... ..... ..... .###. ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
    "@": ".###. #...# #.### #.#.# #.### #.... .###.",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "&": ".##.. #..#. #.#.. .#... #.#.# #..#. .##.#",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "_": "..... ..... ..... ..... ..... ..... #####",
}
_GLYPH_ROWS = 7
_SPACE_COLUMNS = 3


def _glyph(char: str) -> list[str]:
    """The rows of ``char``'s glyph, trimmed to the columns it uses (a proportional font)."""
    if char == " ":
        return ["." * _SPACE_COLUMNS] * _GLYPH_ROWS
    try:
        rows = _GLYPHS[char.upper()].split()
    except KeyError:
        raise ValueError(f"the sample title font has no {char!r}") from None
    used = [c for c in range(5) if any(row[c] == "#" for row in rows)]
    return [row[used[0] : used[-1] + 1] for row in rows]


def _columns(text: str) -> int:
    """How many font pixels wide ``text`` is, one blank column between characters."""
    return sum(len(_glyph(char)[0]) for char in text) + max(len(text) - 1, 0)


class _Canvas:
    """An RGBA picture in memory, drawn on with opaque rectangles."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(width * height * 4)

    def fill(self, x: int, y: int, w: int, h: int, rgba: tuple[int, int, int, int]) -> None:
        x0, x1 = max(x, 0), min(x + w, self.width)
        if x1 <= x0:
            return
        span = bytes(rgba) * (x1 - x0)
        for row in range(max(y, 0), min(y + h, self.height)):
            start = (row * self.width + x0) * 4
            self.pixels[start : start + len(span)] = span

    def rounded(
        self, x: int, y: int, w: int, h: int, r: int, rgba: tuple[int, int, int, int]
    ) -> None:
        """A rectangle with corners rounded to radius ``r``."""
        for row in range(h):
            edge = min(row, h - 1 - row)
            inset = 0
            if edge < r:
                dy = r - edge - 0.5
                inset = round(r - math.sqrt(max(r * r - dy * dy, 0.0)))
            self.fill(x + inset, y + row, w - 2 * inset, 1, rgba)

    def text(self, x: int, y: int, text: str, scale: int, rgba: tuple[int, int, int, int]) -> None:
        for char in text:
            rows = _glyph(char)
            for gy, row in enumerate(rows):
                for gx, cell in enumerate(row):
                    if cell == "#":
                        self.fill(x + gx * scale, y + gy * scale, scale, scale, rgba)
            x += (len(rows[0]) + 1) * scale

    def pam(self) -> bytes:
        """The picture as a PAM file (netpbm with alpha), which FFmpeg reads as-is."""
        header = (
            f"P7\nWIDTH {self.width}\nHEIGHT {self.height}\nDEPTH 4\nMAXVAL 255\n"
            "TUPLTYPE RGB_ALPHA\nENDHDR\n"
        )
        return header.encode("ascii") + bytes(self.pixels)


_WHITE = (255, 255, 255, 255)
_INK = (20, 16, 30, 255)


def _title_image(lines: Sequence[str], color: tuple[int, int, int], handle: str) -> _Canvas:
    """The title as a sticker (a rounded, slightly see-through box of ``color`` with the lines
    in white) and the poster's ``@handle`` in small outlined letters under it, on a transparent
    picture as wide as the video."""
    margin = 48
    widest = max(_columns(line) for line in lines)
    # Title pixels as large as fit (at most 11 screen pixels), with 3 font pixels of padding.
    scale = max(2, min(11, (WIDTH - 2 * margin) // (widest + 6)))
    pad = 3 * scale
    line_height = (_GLYPH_ROWS + 3) * scale
    box_w = widest * scale + 2 * pad
    box_h = len(lines) * line_height - 3 * scale + 2 * pad
    small = 4
    tag = f"@{handle}"
    height = box_h + 3 * scale + _GLYPH_ROWS * small + 2 * small
    canvas = _Canvas(WIDTH, height)
    box_x = (WIDTH - box_w) // 2
    canvas.rounded(box_x, 0, box_w, box_h, 3 * scale, (*color, 225))
    shadow = max(scale // 3, 2)
    for i, line in enumerate(lines):
        x = (WIDTH - _columns(line) * scale) // 2
        y = pad + i * line_height
        canvas.text(x + shadow, y + shadow, line, scale, (0, 0, 0, 110))
        canvas.text(x, y, line, scale, _WHITE)
    x = (WIDTH - _columns(tag) * small) // 2
    y = box_h + 3 * scale
    for dx, dy in ((-2, 0), (2, 0), (0, -2), (0, 2), (-2, -2), (2, 2), (-2, 2), (2, -2)):
        canvas.text(x + dx, y + dy, tag, small, _INK)
    canvas.text(x, y, tag, small, _WHITE)
    return canvas


# --- making clips ------------------------------------------------------------------------------


def _arguments(recipe: _Recipe, title: Path, out: Path) -> list[str]:
    """FFmpeg's arguments (without the executable) making ``recipe`` into ``out``."""
    seconds = recipe.seconds
    video = (
        f"{recipe.background},scale={WIDTH}:{HEIGHT}:flags=bicubic,setsar=1,fps={FPS},"
        f"format=yuv420p[bg];"
        # The title is decoded once and repeated; in YUV with alpha, it blends without conversion.
        f"[0:v]format=yuva420p,loop=loop=-1:size=1,fade=t=in:st=0:d=0.5:alpha=1[title];"
        # The title slides in from the left, then bobs; it sits in the upper middle, clear of
        # the caption and buttons a feed lays over the bottom and the right.
        f"[bg][title]overlay=format=auto:"
        f"x='if(lt(t,0.45),(t/0.45-1)*(t/0.45-1)*(-W),0)':"
        f"y='H*0.27+14*sin(2*PI*t*0.7)',format=yuv420p[v]"
    )
    audio = (
        f"{recipe.sound};[mix]afade=t=in:d=0.08,afade=t=out:st={seconds - 0.4}:d=0.4,"
        f"alimiter=limit=0.9:level=0,aformat=sample_rates={SAMPLE_RATE}:channel_layouts=stereo[a]"
    )
    return [
        "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y",
        "-framerate", str(FPS), "-i", str(title),
        "-filter_complex", f"{video};{audio}",
        "-map", "[v]", "-map", "[a]", "-t", f"{seconds}",
        "-c:v", "libx264", "-preset", "superfast", "-crf", "26", "-pix_fmt", "yuv420p",
        "-profile:v", "high", "-g", str(2 * FPS), "-r", str(FPS),
        "-c:a", "aac", "-b:a", "128k",
        "-map_metadata", "-1", "-movflags", "+faststart",
        str(out),
    ]  # fmt: skip


def _digest(recipe: _Recipe, pam: bytes) -> str:
    """What makes the clip: the version, FFmpeg's arguments and the title picture."""
    h = hashlib.sha256(f"reelm-sample v{RECIPE_VERSION}\n".encode())
    h.update("\0".join(_arguments(recipe, Path("TITLE"), Path("OUT"))).encode())
    h.update(hashlib.sha256(pam).digest())
    return h.hexdigest()[:12]


def _flaw(path: Path) -> str | None:
    """Why a clip is not whole (the platform's probe refuses it, or it has no sound), or None."""
    try:
        result = probe(path)
    except (MediaRejected, OSError) as exc:
        return str(exc)
    return None if result.audio is not None else "it has no sound"


def _make(recipe: _Recipe, pam: bytes, target: Path) -> None:
    """Render ``recipe`` to ``target`` through a temporary directory beside it."""
    with tempfile.TemporaryDirectory(prefix=_TEMP_PREFIX, dir=target.parent) as work:
        title = Path(work) / "title.pam"
        title.write_bytes(pam)
        out = Path(work) / f"{recipe.slug}.mp4"
        command = [_ffmpeg(), *_arguments(recipe, title, out)]
        try:
            done = subprocess.run(  # noqa: S603 (our FFmpeg, our arguments)
                command, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise SampleError(
                f"sample clip {recipe.slug!r}: FFmpeg took more than {FFMPEG_TIMEOUT:g} s"
            ) from None
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise SampleError(
                f"sample clip {recipe.slug!r}: FFmpeg failed (exit status {done.returncode}):\n"
                f"{tail}"
            )
        flaw = _flaw(out)
        if flaw is not None:
            raise SampleError(f"sample clip {recipe.slug!r}: FFmpeg made a bad clip: {flaw}")
        out.replace(target)


def _ffmpeg() -> str:
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise SampleError(f"no FFmpeg for the sample clips: {exc}") from exc


_TEMP_PREFIX = ".making-"
_STALE_AFTER = 3600.0  # seconds: older work directories are left over from killed runs


def _sweep(cache_dir: Path, recipe: _Recipe, keep: Path) -> None:
    """Remove older versions of ``recipe``'s clip."""
    pattern = re.compile(rf"{re.escape(recipe.slug)}-[0-9a-f]{{12}}\.mp4")
    for old in cache_dir.glob(f"{recipe.slug}-*.mp4"):
        if old != keep and pattern.fullmatch(old.name):
            old.unlink(missing_ok=True)


def _sweep_work_dirs(cache_dir: Path) -> None:
    """Remove work directories left by runs killed more than an hour ago."""
    cutoff = time.time() - _STALE_AFTER
    for work in cache_dir.glob(f"{_TEMP_PREFIX}*"):
        try:
            if work.is_dir() and work.stat().st_mtime < cutoff:
                shutil.rmtree(work, ignore_errors=True)
        except OSError:
            continue


def ensure_samples(
    cache_dir: Path, *, on_progress: Callable[[int, int], None] | None = None
) -> list[SampleClip]:
    """The sample clips, made in ``cache_dir`` the first time and reused after that.

    ``on_progress(done, total)`` is called as each clip is ready (made or found in the cache).
    Raises :class:`SampleError`, naming the clip and with the end of FFmpeg's messages, when a
    clip cannot be made; no partial file is left behind."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    _sweep_work_dirs(cache_dir)
    clips: list[SampleClip] = []
    for done, recipe in enumerate(RECIPES, start=1):
        pam = _title_image(recipe.title, recipe.color, recipe.handle).pam()
        path = cache_dir / f"{recipe.slug}-{_digest(recipe, pam)}.mp4"
        if not path.is_file() or _flaw(path) is not None:
            _make(recipe, pam, path)
        _sweep(cache_dir, recipe, path)
        clips.append(SampleClip(path=path, caption=recipe.caption, handle=recipe.handle))
        if on_progress is not None:
            on_progress(done, len(RECIPES))
    return clips
