"""Transparency log benchmark.

1. Durable appends per second: writer threads each commit one event per transaction (the way
   actions log their events) while the integrator runs; anchor: the same threads committing the
   same bytes into a plain table with no log behind it.
2. Integration rate: queued entries folded into the tree per second (including signing).
3. Proof latency at --entries (default 1,000,000): p50/p99 of inclusion and consistency proofs.

Run: .venv/bin/python bench/tlog.py [--entries 1000000] [--threads 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from reelm.bootstrap import build
from reelm.config import Settings
from reelm.storage import provision
from reelm.transparency.log import Integrator, canonical_event


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _writers(url: str, threads: int, seconds: float, statement: str) -> int:
    """Threads committing one row per transaction for `seconds`; returns rows committed."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def work(slot: int) -> None:
        with psycopg.connect(url) as conn:
            while time.monotonic() < stop:
                entry = canonical_event("bench.event", "us", f"s{slot}", {"n": counts[slot]})
                with conn.transaction():
                    conn.execute(statement, (entry, f"s{slot}"))
                counts[slot] += 1

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="reelm-bench-")),
        admin_database_url=args.admin_url,
        database_prefix=f"bench{secrets.token_hex(3)}",
    )
    platform = build(settings)
    tlog = platform.cell("us").log
    url = _libpq(platform.cell("us").db.url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_plain (id bigserial PRIMARY KEY, entry bytea, s text)")
        plain = _writers(
            url, args.threads, args.seconds, "INSERT INTO bench_plain (entry, s) VALUES (%s, %s)"
        )
        integrator = Integrator([tlog]).start()
        ours = _writers(
            url,
            args.threads,
            args.seconds,
            "INSERT INTO tlog_queue (entry, kind, subject) VALUES (%s, 'bench.event', %s)",
        )
        integrator.stop()
        t = time.perf_counter()
        tlog.integrate_all()
        drain = time.perf_counter() - t
        latest = tlog.latest()
        assert latest is not None and latest.size == ours
        print(
            f"durable appends: ours {ours / args.seconds:,.0f}/s, plain INSERT "
            f"{plain / args.seconds:,.0f}/s, ratio {ours / plain:.2f} "
            f"({args.threads} writer threads, {args.seconds:.0f} s each, one commit per event)"
        )
        print(f"  integrator backlog after the run: drained in {drain:.2f} s")

        # Grow the log to --entries with bulk appends, timing integration on its own.
        remaining = args.entries - latest.size
        integrated, spent = 0, 0.0
        with psycopg.connect(url) as conn:
            while remaining > 0:
                batch = min(20_000, remaining)
                with (
                    conn.cursor() as cur,
                    cur.copy("COPY tlog_queue (entry, kind, subject) FROM STDIN") as copy,
                ):
                    for i in range(batch):
                        copy.write_row(
                            (
                                canonical_event("bench.event", "us", None, {"i": i}),
                                "bench.event",
                                None,
                            )
                        )
                conn.commit()
                t = time.perf_counter()
                integrated += tlog.integrate(max_batch=batch)
                spent += time.perf_counter() - t
                remaining -= batch
        size = args.entries
        print(
            f"integration: {integrated / spent:,.0f} entries/s into the tree "
            f"(batches of 20,000, with nodes and a signed checkpoint each)"
        )

        rng = random.Random(1)
        inclusion, consistency = [], []
        for _ in range(2000):
            i = rng.randrange(size)
            t = time.perf_counter()
            tlog.inclusion_proof(i, size)
            inclusion.append(time.perf_counter() - t)
            m = rng.randrange(1, size)
            t = time.perf_counter()
            tlog.consistency_proof(m, size)
            consistency.append(time.perf_counter() - t)
        p50, p99 = _percentiles(inclusion)
        print(f"inclusion proof at {size:,} entries: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        p50, p99 = _percentiles(consistency)
        print(f"consistency proof at {size:,} entries: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    finally:
        platform.close()
        provision.drop(args.admin_url, settings.database_prefix, list(settings.regions))


if __name__ == "__main__":
    main()
