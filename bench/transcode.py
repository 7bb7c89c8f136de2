"""Transcode benchmark: our ``transcode()`` against one plain ``ffmpeg`` command writing the same
renditions (1080p, 720p, 480p and a poster, same x264 and AAC settings) from the same clip, in
the same run, alternating, each repeated --runs times; medians compared.

- wall time and CPU time (this process and its children: ``getrusage``), as ratios ours / plain;
- quality: PSNR of each 720p against the source scaled to 720p, and the difference (optionally
  VMAF too, with --vmaf: slower);
- time to playable for a 15 s 1080p clip: our transcode's wall time only (upload, probe and the
  job queue are not part of this step and are not counted).

The clips are deterministic (testsrc2 + a sine tone) and cached in the temp directory.

Run: .venv/bin/python bench/transcode.py [--runs 5] [--preset veryfast] [--vmaf]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av

from reelm.media.transcode import (
    PRODUCTION_PRESET,
    ffmpeg_exe,
    plan_renditions,
    transcode,
)

FFMPEG = ffmpeg_exe()
CACHE = Path(tempfile.gettempdir()) / "reelm-bench-transcode"

# The anchor, written out by hand as one would on a command line: the renditions of a 30 fps
# 1920x1080 clip with sound, the poster at 10 % of 30 s. Same settings as ours (metadata stripped
# too), none of our machinery (progress pipe, input whitelists, temporary names and renames).
PLAIN = """
{ffmpeg} -hide_banner -nostdin -loglevel error -y -i {source}
  -map 0:v:0 -map 0:a:0 -vf fps=30,scale=1920:1080,setsar=1,format=yuv420p
    -c:v libx264 -preset {preset} -profile:v high -crf 23 -maxrate 5000k -bufsize 10000k
    -g 60 -keyint_min 60 -sc_threshold 0 -flags:v +cgop
    -af aresample=48000:async=1,aformat=sample_fmts=fltp:channel_layouts=stereo
    -c:a aac -profile:a aac_low -b:a 128k -flags:a +bitexact
    -map_metadata -1 -map_chapters -1 -fflags +bitexact -movflags +faststart {out}/1080p.mp4
  -map 0:v:0 -map 0:a:0 -vf fps=30,scale=1280:720,setsar=1,format=yuv420p
    -c:v libx264 -preset {preset} -profile:v high -crf 23 -maxrate 3000k -bufsize 6000k
    -g 60 -keyint_min 60 -sc_threshold 0 -flags:v +cgop
    -af aresample=48000:async=1,aformat=sample_fmts=fltp:channel_layouts=stereo
    -c:a aac -profile:a aac_low -b:a 128k -flags:a +bitexact
    -map_metadata -1 -map_chapters -1 -fflags +bitexact -movflags +faststart {out}/720p.mp4
  -map 0:v:0 -map 0:a:0 -vf fps=30,scale=854:480,setsar=1,format=yuv420p
    -c:v libx264 -preset {preset} -profile:v high -crf 23 -maxrate 1200k -bufsize 2400k
    -g 60 -keyint_min 60 -sc_threshold 0 -flags:v +cgop
    -af aresample=48000:async=1,aformat=sample_fmts=fltp:channel_layouts=stereo
    -c:a aac -profile:a aac_low -b:a 128k -flags:a +bitexact
    -map_metadata -1 -map_chapters -1 -fflags +bitexact -movflags +faststart {out}/480p.mp4
  -map 0:v:0 -vf "select='eq(n,0)+gte(t,3)',scale=1280:720,setsar=1,format=yuvj420p"
    -frames:v 2 -q:v 3 -flags:v +bitexact -update 1 {out}/poster.jpg
"""


def clip(seconds: int) -> Path:
    """A deterministic 1080p30 clip with a tone, made once and cached."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"testsrc2-1080p30-{seconds}s.mp4"
    if not path.exists():
        partial = path.with_suffix(".partial.mp4")
        subprocess.run(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
             "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "192k", str(partial)],
            check=True,
        )  # fmt: skip
        partial.rename(path)
    return path


def measured(work: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process and the children it waited for)."""
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    work()
    wall = time.perf_counter() - t
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        for before, after in ((self0, self1), (kids0, kids1))
    )
    return wall, cpu


def quality(rendition: Path, source: Path, metric: str) -> float:
    """PSNR (dB, average over Y, U, V) or VMAF of ``rendition`` against the source scaled to
    its size."""
    compare = "psnr" if metric == "psnr" else "libvmaf=n_threads=2"
    graph = (
        "[1:v]scale=1280:720,setsar=1,format=yuv420p[ref];"
        f"[0:v]setsar=1,format=yuv420p[out];[out][ref]{compare}"
    )
    done = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-i", str(rendition), "-i", str(source),
         "-lavfi", graph, "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    pattern = r"PSNR .* average:([\d.]+)" if metric == "psnr" else r"VMAF score: ([\d.]+)"
    found = re.search(pattern, done.stderr)
    if found is None:
        raise RuntimeError(f"no {metric} in ffmpeg's output:\n{done.stderr[-2000:]}")
    return float(found.group(1))


def bitstream(path: Path) -> str:
    """A digest of the video packets: equal when the encodes are identical, whatever the
    container around them."""
    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            digest.update(bytes(packet))
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--preset", default=PRODUCTION_PRESET)
    parser.add_argument("--vmaf", action="store_true", help="also compare VMAF (slower)")
    args = parser.parse_args()

    source = clip(30)
    plan = plan_renditions(1920, 1080, True, 30.0, preset=args.preset)
    ours_dir, plain_dir = (Path(tempfile.mkdtemp(prefix=f"reelm-bench-{n}-")) for n in "op")
    command = shlex.split(
        PLAIN.format(ffmpeg=FFMPEG, source=source, preset=args.preset, out=plain_dir)
    )
    samples: dict[str, list[tuple[float, float]]] = {"ours": [], "plain": []}
    for run in range(args.runs):
        # Alternate which goes first, so neither always gets the cooler machine.
        order = ("ours", "plain") if run % 2 == 0 else ("plain", "ours")
        for name in order:
            if name == "ours":
                sample = measured(lambda: transcode(source, ours_dir, plan))
            else:
                sample = measured(lambda: subprocess.run(command, check=True))
            samples[name].append(sample)
            print(f"  run {run + 1} {name:5}: {sample[0]:6.2f} s wall, {sample[1]:6.2f} s CPU")

    for name in ("1080p.mp4", "720p.mp4", "480p.mp4"):
        ours_file, plain_file = ours_dir / name, plain_dir / name
        same = "same" if bitstream(ours_file) == bitstream(plain_file) else "DIFFERENT"
        print(
            f"  {name:9} ours {ours_file.stat().st_size:>10,} B, "
            f"plain {plain_file.stat().st_size:>10,} B, {same} H.264 bitstream"
        )
    print(f"30 s 1080p30 clip, preset {args.preset}, {args.runs} alternating runs each:")
    for index, label in ((0, "wall"), (1, "CPU ")):
        ours = [sample[index] for sample in samples["ours"]]
        plain = [sample[index] for sample in samples["plain"]]
        ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, plain, strict=True))
        mid_ours, mid_plain = statistics.median(ours), statistics.median(plain)
        print(
            f"  {label}: median ours {mid_ours:.2f} s, plain ffmpeg {mid_plain:.2f} s, "
            f"ratio {mid_ours / mid_plain:.3f}{' (target <= 1.10)' if label == 'wall' else ''}; "
            f"fastest {min(ours):.2f} vs {min(plain):.2f} s, ratio {min(ours) / min(plain):.3f}; "
            f"each pair {ratios}"
        )
    metrics = ["psnr", "vmaf"] if args.vmaf else ["psnr"]
    for metric in metrics:
        ours_q = quality(ours_dir / "720p.mp4", source, metric)
        plain_q = quality(plain_dir / "720p.mp4", source, metric)
        unit = " dB" if metric == "psnr" else ""
        print(
            f"  {metric.upper()} of the 720p vs the source scaled to 720p: "
            f"ours {ours_q:.3f}{unit}, plain {plain_q:.3f}{unit}, "
            f"difference {ours_q - plain_q:+.3f}{unit}"
            + (" (target within 0.3 dB)" if metric == "psnr" else "")
        )

    short = clip(15)
    short_plan = plan_renditions(1920, 1080, True, 30.0, preset=args.preset)
    playable_dir = Path(tempfile.mkdtemp(prefix="reelm-bench-15s-"))
    seconds, _ = measured(lambda: transcode(short, playable_dir, short_plan))
    for directory in (ours_dir, plain_dir, playable_dir):
        shutil.rmtree(directory)
    print(
        f"upload to playable, 15 s 1080p30 clip: {seconds:.2f} s of transcoding "
        "(the transcode step only: upload, probe and the job queue are not wired yet)"
    )


if __name__ == "__main__":
    main()
