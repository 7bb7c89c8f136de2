"""Transcode benchmark: our ``transcode()`` against one plain ``ffmpeg`` command writing the same
renditions (1080p, 720p, 480p and a poster, same x264 and AAC settings) from the same clip, in
the same run, alternating, each repeated --runs times; medians compared.

- wall time and CPU time (this process and its children: ``getrusage``), as ratios ours / plain;
- quality: PSNR of each 720p against the source scaled to 720p, and the difference (optionally
  VMAF too, with --vmaf: slower);
- upload to playable for a 15 s 1080p clip, full stack: tus upload over HTTP to the app served
  by uvicorn, probe, encrypted original, the US region's job queue, a worker's transcode and
  publication, until the API says "ready".

The clips are deterministic (testsrc2 + a sine tone) and cached in the temp directory.

Run: .venv/bin/python bench/transcode.py [--runs 5] [--preset veryfast] [--vmaf] [--playable-only]
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
BENCH_PASSWORD = "correct horse battery"  # a throwaway account in throwaway databases

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
    parser.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL superuser URL for the upload-to-playable run's databases",
    )
    parser.add_argument("--playable-only", action="store_true")
    args = parser.parse_args()
    if not args.playable_only:
        compare(args)
    playable(args.admin_url)


def compare(args: argparse.Namespace) -> None:

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

    for directory in (ours_dir, plain_dir):
        shutil.rmtree(directory)


def playable(admin_url: str) -> None:
    """Upload to playable, full stack: a 15 s 1080p clip sent with tus over HTTP to the app
    served by uvicorn, probed, encrypted, queued in the US region's PostgreSQL queue, transcoded
    by a worker and published; the clock stops when the API says the video is ready."""
    import secrets
    import threading
    from datetime import date

    import httpx2 as httpx
    import uvicorn

    from reelm.accounts.schemas import SignUp
    from reelm.accounts.service import log_in, sign_up
    from reelm.app import create_app
    from reelm.bootstrap import build
    from reelm.config import Settings
    from reelm.jobs import WorkerThread
    from reelm.storage import provision

    source = clip(15)
    data = source.read_bytes()
    data_dir = Path(tempfile.mkdtemp(prefix="reelm-bench-playable-"))
    settings = Settings(
        data_dir=data_dir,
        admin_database_url=admin_url,
        database_prefix=f"bench{secrets.token_hex(3)}",
        argon2_time_cost=1,
        argon2_memory_kib=1024,
    )
    platform = build(settings)
    workers = WorkerThread(platform, ["us"]).start()
    server = uvicorn.Server(
        uvicorn.Config(create_app(platform), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        sign_up(
            platform,
            SignUp(handle="bench.uploader", display_name="Bench", email="bench@example.com",
                   password=BENCH_PASSWORD, birth_date=date(1990, 1, 1), market="US"),
        )  # fmt: skip
        token, _ = log_in(platform, "bench.uploader", BENCH_PASSWORD)
        tus = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            started = time.monotonic()
            created = http.post("/api/v1/videos", headers={**tus, "Upload-Length": str(len(data))})
            url, offset, chunk = created.headers["Location"], 0, 5 * 1024 * 1024
            while offset < len(data):
                done = http.patch(
                    url,
                    headers={**tus, "Upload-Offset": str(offset),
                             "Content-Type": "application/offset+octet-stream"},
                    content=data[offset : offset + chunk],
                )  # fmt: skip
                done.raise_for_status()
                offset = int(done.headers["Upload-Offset"])
            uploaded = time.monotonic()
            video_url = done.headers["Location"]
            status, processing_seen = "queued", None
            while status != "ready":
                time.sleep(0.05)
                status = http.get(video_url, headers=tus).json()["status"]
                if status == "processing" and processing_seen is None:
                    processing_seen = time.monotonic()
                if status == "failed":
                    raise SystemExit("the video failed")
            ready = time.monotonic()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        workers.stop()
        platform.close()
        provision.drop(admin_url, settings.database_prefix, list(platform.cells))
        shutil.rmtree(data_dir, ignore_errors=True)
    queued = (processing_seen or ready) - uploaded
    print(
        f"upload to playable, 15 s 1080p30 clip ({len(data) / 1e6:.1f} MB), full stack: "
        f"{ready - started:.2f} s = upload + probe + encrypted original "
        f"{uploaded - started:.2f} s, queue {queued:.2f} s, "
        f"transcode + store + publish {ready - uploaded - queued:.2f} s"
    )


if __name__ == "__main__":
    main()
