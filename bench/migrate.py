"""Region migration benchmark: every user of market US moved from the default region (sg) to
the us region by the migration engine, against an anchor measured in the same run on the same
databases.

- seed (not timed): --users users of market US in sg (the settings map US to no region, so it
  lives in the default one) plus --others users of other markets who must stay, written in bulk
  with COPY: directory entry and public profile in the catalog; in sg an account with real
  AES-256-GCM ciphertexts under the user's own data key (one wrapped key file each) and
  blind indexes, 1-3 sessions and 0-3 ready videos (no blobs);
- anchor: a plain `COPY (SELECT * FROM <table> WHERE <user> = ANY(ids)) TO STDOUT` from sg
  streamed into `COPY bench_<table> FROM STDIN` in us (scratch tables like the real ones), for
  accounts, sessions, uploads (none seeded) and videos, in one transaction per side: moving the
  same bytes with nothing else done is the floor. Run first (the migration deletes the source
  rows); the scratch tables are dropped after it;
- ours: make_plan + start + Runner.run (copy with re-encryption under a new data key, verify by
  digests on both sides, switch, purge with the source keys destroyed, signed report),
  end to end.

MB is the size of the anchor's COPY text stream, used for both. The breakdown wraps the
runner's step methods from here (the outermost one counts); src/ is not changed for it.
Connections come from the platform's own pools (the server allows 100, shared with test runs).
The databases, roles and data directory are removed at the end, failed or not.

Run: .venv/bin/python bench/migrate.py [--users 100000] [--others N] [--batch-size 500]
     [--admin-url URL] [--profile FILE]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import functools
import json
import pstats
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from reelm.accounts import indexes
from reelm.accounts.handles import handle_key
from reelm.accounts.schemas import PrivacySettings
from reelm.bootstrap import Platform, build
from reelm.config import Settings
from reelm.migration import engine
from reelm.migration.report import platform_keys, verify_report
from reelm.migration.tables import MOVED_TABLES
from reelm.regions.cell import Cell
from reelm.storage import provision
from reelm.storage.crypto import cipher_for
from reelm.storage.db import Database

SOURCE, DESTINATION, MARKET = "sg", "us", "US"
# Markets of the users who stay in sg (all map to the default region).
OTHER_MARKETS = ["FR", "DE", "JP", "BR", "MX", "GB"]
SEED_CHUNK = 5000
USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "reelm-ios/2.4.1 (iPhone15,2; iOS 17.5)",
    "reelm-android/2.4.0 (SM-S918B; Android 14)",
]
WORDS = (  # noqa: SIM905
    "sunset beach city night dance cooking recipe travel skate dog cat coffee rain morning "
    "music guitar street food hiking snow friends weekend garden workout art painting"
).split()
FIRST = "alex sam jordan taylor casey riley morgan jamie avery quinn drew blake".split()  # noqa: SIM905
LAST = "smith garcia lee brown nguyen patel kim lopez martin davis clark lewis".split()  # noqa: SIM905


@contextlib.contextmanager
def pooled(db: Database) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection from the platform's own pool: no new connection slot (the server
    allows 100 and test runs share it), and no connection set-up inside a timed part."""
    with db.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        yield driver
        driver.rollback()  # whatever the caller did not commit


# ---- seed --------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _user_rows(
    cell: Cell, rng: random.Random, n: int, market: str, now: datetime, epoch: int
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, list[tuple[Any, ...]]]]:
    """Catalog and region rows of user number n (unique email, phone and handle)."""
    user_id = uuid.uuid4()
    cipher = cipher_for(cell.keys, user_id, create=True)  # writes the wrapped key file
    created = now - timedelta(days=rng.uniform(1, 1500))
    first, last = rng.choice(FIRST), rng.choice(LAST)
    handle = f"u{n}"
    email = f"{first}.{last}{n}@example.com"
    if rng.random() < 0.7:  # 70 % gave a phone number (E.164)
        phone: str | None = f"+1202{n:07d}" if market == "US" else f"+3361{n:07d}"
    else:
        phone = None
    birth = date(1960, 1, 1) + timedelta(days=rng.randrange(48 * 365))
    password = (
        f"$argon2id$v=19$m=65536,t=3,p=4${_b64(secrets.token_bytes(16))}"
        f"${_b64(secrets.token_bytes(32))}"
    )
    privacy = PrivacySettings(
        private_account=rng.random() < 0.1,
        direct_messages=rng.choice(["everyone", "followers", "no_one"]),
    )
    catalog: dict[str, list[tuple[Any, ...]]] = {
        "directory": [(user_id, SOURCE, 1, "active", created)],
        "profiles": [
            (
                user_id,
                handle,
                handle_key(handle),
                f"{first.title()} {last.title()}",
                " ".join(rng.sample(WORDS, 5)),
                json.dumps({"site": f"https://example.com/{handle}"} if n % 3 == 0 else {}),
                privacy.private_account,
                created,
                created,
            )
        ],
    }
    region: dict[str, list[tuple[Any, ...]]] = {
        "accounts": [
            (
                user_id,
                market,
                cipher.encrypt("email", email),
                cell.blind_indexes([epoch], "email", email)[0],
                cipher.encrypt_optional("phone", phone),
                cell.blind_indexes([epoch], "phone", phone)[0] if phone else None,
                epoch,
                cipher.encrypt("birth_date", birth.isoformat()),
                cipher.encrypt("password", password),
                cipher.encrypt("settings", privacy.model_dump_json()),
                created,
            )
        ],
        "sessions": [],
        "videos": [],
    }
    for _ in range(rng.choice([1, 1, 2, 3])):
        started = now - timedelta(days=rng.uniform(0, 29))
        region["sessions"].append(
            (
                secrets.token_bytes(32),
                user_id,
                cipher.encrypt("user_agent", rng.choice(USER_AGENTS)),
                started,
                started + timedelta(days=30),
            )
        )
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        video_id = uuid.uuid4()
        public = rng.random() < 0.75
        caption = " ".join(rng.sample(WORDS, 4)) + " #" + rng.choice(WORDS)
        renditions: list[dict[str, Any]] = []
        if rng.random() < 0.5:  # the rest: [] (records of a video store only their keys)
            prefix = f"v/{video_id}/" if public else f"private/{user_id}/{video_id}/"
            for name, w, h in (("720p", 720, 1280), ("480p", 480, 854)):
                renditions.append(
                    {
                        "name": name,
                        "kind": "video",
                        "file": f"{name}.mp4",
                        "key": prefix + f"{name}.mp4",
                        "width": w,
                        "height": h,
                        "bytes": rng.randrange(500_000, 5_000_000),
                        "mime_type": "video/mp4",
                    }
                )
            renditions.append(
                {
                    "name": "poster",
                    "kind": "poster",
                    "file": "poster.jpg",
                    "key": prefix + "poster.jpg",
                    "width": 720,
                    "height": 1280,
                    "bytes": rng.randrange(20_000, 90_000),
                    "mime_type": "image/jpeg",
                }
            )
        at = created + timedelta(days=rng.uniform(0, 30))
        region["videos"].append(
            (
                video_id,
                user_id,
                "ready",
                100,
                "public" if public else "private",
                True,
                cipher.encrypt("caption", caption),
                round(rng.uniform(5, 60), 3),
                1080,
                1920,
                json.dumps(renditions),
                renditions[-1]["key"] if renditions else None,
                1,
                at,
                at,
            )
        )
    return catalog, region


CATALOG_COLUMNS = {
    "directory": "user_id, home_region, epoch, state, created_at",
    "profiles": "user_id, handle, handle_key, display_name, bio, links, is_private, "
    "created_at, updated_at",
}
REGION_COLUMNS = {
    "accounts": "user_id, market, email_ct, email_bidx, phone_ct, phone_bidx, index_epoch, "
    "birth_date_ct, password_ct, settings_ct, created_at",
    "sessions": "token_hash, user_id, user_agent_ct, created_at, expires_at",
    "videos": "id, owner_id, status, progress, visibility, allow_comments, caption_ct, "
    "duration, width, height, renditions, poster_key, attempts, created_at, updated_at",
}


def _copy_in(conn: psycopg.Connection[Any], table: str, columns: str, rows: list[Any]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def seed(platform: Platform, us: int, others: int, rng: random.Random) -> dict[str, int]:
    """Write the users in chunks, one transaction per chunk and database."""
    cell = platform.cell(SOURCE)
    now = datetime.now(UTC)
    markets = [MARKET] * us + [OTHER_MARKETS[i % len(OTHER_MARKETS)] for i in range(others)]
    rng.shuffle(markets)
    counts: dict[str, int] = {}
    with cell.db.transaction() as s:
        epoch = indexes.current_epoch(s, cell)
    with pooled(platform.catalog) as catalog, pooled(cell.db) as region:
        for start in range(0, len(markets), SEED_CHUNK):
            cat: dict[str, list[Any]] = {t: [] for t in CATALOG_COLUMNS}
            reg: dict[str, list[Any]] = {t: [] for t in REGION_COLUMNS}
            for n in range(start, min(start + SEED_CHUNK, len(markets))):
                c, r = _user_rows(cell, rng, n, markets[n], now, epoch)
                for t, rows in c.items():
                    cat[t] += rows
                for t, rows in r.items():
                    reg[t] += rows
            for t, rows in cat.items():
                _copy_in(catalog, t, CATALOG_COLUMNS[t], rows)
            for t, rows in reg.items():
                _copy_in(region, t, REGION_COLUMNS[t], rows)
                counts[t] = counts.get(t, 0) + len(rows)
            catalog.commit()
            region.commit()
    # What a live database has: statistics and hint bits, not a fresh heap.
    for db in (platform.catalog, cell.db):
        with pooled(db) as conn:
            conn.autocommit = True
            try:
                conn.execute("VACUUM (ANALYZE)")
            finally:
                conn.autocommit = False
    return counts


# ---- anchor ------------------------------------------------------------------------------------


def plain_copy(platform: Platform) -> tuple[int, int, float]:
    """COPY the market's rows of every moved table from the source into scratch tables of the
    destination (as each database's owner). Returns rows, bytes of the stream, seconds."""
    scratch = {m.name: sql.Identifier(f"bench_{m.name}") for m in MOVED_TABLES}
    with pooled(platform.cell(SOURCE).db) as src, pooled(platform.cell(DESTINATION).db) as dst:
        for m in MOVED_TABLES:
            dst.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    scratch[m.name], sql.Identifier(m.name)
                )
            )
        dst.commit()
        try:
            rows = size = 0
            began = time.perf_counter()
            ids = [
                r[0]
                for r in src.execute("SELECT user_id FROM accounts WHERE market = %s", (MARKET,))
            ]
            for m in MOVED_TABLES:
                query = sql.SQL("COPY (SELECT * FROM {} WHERE {} = ANY(%s)) TO STDOUT").format(
                    sql.Identifier(m.name), sql.Identifier(m.user_column)
                )
                target = sql.SQL("COPY {} FROM STDIN").format(scratch[m.name])
                with (
                    src.cursor() as out_cur,
                    dst.cursor() as in_cur,
                    out_cur.copy(query, (ids,)) as out,
                    in_cur.copy(target) as into,
                ):
                    for block in out:
                        into.write(block)
                        size += len(block)
            dst.commit()
            src.commit()
            seconds = time.perf_counter() - began
            for m in MOVED_TABLES:  # COPY TO STDOUT reports no row count
                found = dst.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(scratch[m.name])
                ).fetchone()
                rows += found[0] if found else 0
        finally:
            dst.rollback()
            for m in MOVED_TABLES:
                dst.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(scratch[m.name]))
            dst.commit()
    return rows, size, seconds


# ---- ours --------------------------------------------------------------------------------------

STEPS = {
    "_drop_deleted": "users deleted meanwhile (check)",
    "_copy_blobs": "blobs: pre-copy, final copy (keys created, stores listed)",
    "_freeze": "freeze",
    "_copy_rows": "copy rows (read, re-encrypt, write, journal)",
    "_copy_staged": "staged uploads",
    "_verify": "verify (digest both sides, journal)",
    "_switch": "switch (directory)",
    "_activate": "activate (+ arrival log entries)",
    "_purge": "purge (keys destroyed, rows deleted, log entries)",
    "_adopt_stragglers": "look for stragglers",
    "_finish": "attest (integrate logs, signed report)",
}


@contextlib.contextmanager
def timed_steps() -> Iterator[dict[str, float]]:
    """Time the Runner's step methods (outermost call only) by wrapping them on the class."""
    spent: dict[str, float] = dict.fromkeys(STEPS, 0.0)
    depth = [0]
    saved = {}
    for name in STEPS:
        original = getattr(engine.Runner, name, None)
        if original is None:
            continue
        saved[name] = original

        def wrapper(
            *args: Any, __name: str = name, __fn: Callable[..., Any] = original, **kwargs: Any
        ) -> Any:
            if depth[0]:
                return __fn(*args, **kwargs)
            depth[0] += 1
            began = time.perf_counter()
            try:
                return __fn(*args, **kwargs)
            finally:
                spent[__name] += time.perf_counter() - began
                depth[0] -= 1

        setattr(engine.Runner, name, functools.wraps(original)(wrapper))
    try:
        yield spent
    finally:
        for name, original in saved.items():
            setattr(engine.Runner, name, original)


def ours(platform: Platform, batch_size: int, profile: str | None) -> dict[str, Any]:
    batches: list[float] = []
    last = [0.0]
    moved = [0]

    def progress(phase: str, done: int, total: int, copied: int) -> None:
        now = time.perf_counter()
        if done:
            batches.append(now - last[0])
            if len(batches) % 20 == 0:  # a long run shows it is alive, on stderr
                recent = batches[-20:]
                print(
                    f"  {done:,}/{total:,} users, last 20 batches {sum(recent):.1f} s",
                    file=sys.stderr,
                )
        last[0], moved[0] = now, done

    profiler = cProfile.Profile() if profile else None
    # Profiled: no step wrappers (they would show up in the profile).
    with contextlib.nullcontext(dict.fromkeys(STEPS, 0.0)) if profile else timed_steps() as spent:
        if profiler:
            profiler.enable()
        t0 = time.perf_counter()
        plan = engine.make_plan(platform, DESTINATION, market=MARKET)
        t1 = time.perf_counter()
        migration_id = engine.start(platform, plan, batch_size=batch_size)
        t2 = time.perf_counter()
        try:
            outcome = engine.Runner(platform, migration_id, progress=progress).run()
        except Exception:
            failed = time.perf_counter()
            print(
                f"the migration raised after {failed - t0:.1f} s (plan {t1 - t0:.1f} s, start "
                f"{t2 - t1:.1f} s, {moved[0]:,} of {plan.user_count:,} users through the batches "
                f"in {last[0] - t2:.1f} s, then {failed - last[0]:.1f} s more)"
            )
            raise
        t3 = time.perf_counter()
        if profiler:
            profiler.disable()
    if profiler and profile:
        profiler.dump_stats(profile)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(15)
    return {
        "plan": plan,
        "outcome": outcome,
        "seconds": t3 - t0,
        "phases": {"plan": t1 - t0, "start": t2 - t1, "run": t3 - t2},
        "steps": dict(spent),
        "batches": batches,
    }


# ---- checks (not timed) ------------------------------------------------------------------------


def check(platform: Platform, us: int, others: int, result: dict[str, Any]) -> list[str]:
    outcome = result["outcome"]
    problems = []
    if outcome.moved != us or outcome.failed:
        problems.append(f"moved {outcome.moved} of {us}, failed {len(outcome.failed)}")

    def one(db: Database, query: str) -> Any:
        with pooled(db) as conn:
            row = conn.execute(query).fetchone()
            assert row is not None
            return row[0] if len(row) == 1 else row

    src, dst = platform.cell(SOURCE), platform.cell(DESTINATION)
    found = one(dst.db, "SELECT count(*) FILTER (WHERE migration IS NULL), count(*) FROM accounts")
    if tuple(found) != (us, us):
        problems.append(f"destination accounts (settled, all): {found}")
    found = one(
        src.db,
        "SELECT count(*) FILTER (WHERE market = 'US'), count(*) FILTER (WHERE migration IS NULL) "
        "FROM accounts",
    )
    if tuple(found) != (0, others):
        problems.append(f"source accounts (US, others settled): {found}")
    found = one(
        platform.catalog,
        f"SELECT count(*) FILTER (WHERE home_region = '{DESTINATION}'), "
        f"count(*) FILTER (WHERE home_region = '{SOURCE}') FROM directory",
    )
    if tuple(found) != (us, others):
        problems.append(f"directory (us, sg): {found}")
    keys = sum(1 for _ in (platform.settings.key_dir(SOURCE) / "users").glob("*.key"))
    if keys != others:
        problems.append(f"{keys} data keys left in {SOURCE}, {others} expected")
    report = outcome.report or {}
    problems += verify_report(report, platform_keys(platform))
    return problems


# ---- main --------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000, help="users of market US to move")
    parser.add_argument(
        "--others", type=int, default=None, help="users of other markets who stay (users/20)"
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the migration (plan+start+run) into FILE"
    )
    args = parser.parse_args()
    us = args.users
    others = args.others if args.others is not None else max(100, us // 20)

    # The markets without US: US is served by the default region, sg.
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="reelm-bench-")),
        admin_database_url=args.admin_url,
        database_prefix=f"bench{secrets.token_hex(3)}",
        markets={"CA": "ca", "AU": "au", "NZ": "nz"},
    )
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM cleans up too
    platform: Platform | None = None
    try:
        platform = build(settings)
        t = time.perf_counter()
        counts = seed(platform, us, others, random.Random(args.seed))
        print(
            f"seeded {us:,} users of {MARKET} and {others:,} of other markets in {SOURCE} "
            f"({', '.join(f'{k} {v:,}' for k, v in counts.items())}) "
            f"in {time.perf_counter() - t:.1f} s"
        )

        plain_rows, size, plain_s = plain_copy(platform)
        result = ours(platform, args.batch_size, args.profile)
        outcome = result["outcome"]
        ours_s = result["seconds"]
        mb = size / 1e6
        tables = ", ".join(f"{k} {v:,}" for k, v in result["plan"].rows.items())
        print(
            f"moving market {MARKET} {SOURCE} -> {DESTINATION}: {us:,} users, "
            f"{plain_rows:,} rows ({tables}), "
            f"{mb:.1f} MB as COPY text; batch size {args.batch_size}"
        )
        print(
            f"ours   plan+start+run {ours_s:8.2f} s  {us / ours_s:9,.0f} users/s  "
            f"{mb / ours_s:7.2f} MB/s  ({outcome.rows:,} rows, {outcome.moved:,} moved, "
            f"{len(outcome.failed)} failed)"
        )
        print(
            f"plain  COPY -> COPY    {plain_s:8.2f} s  {us / plain_s:9,.0f} users/s  "
            f"{mb / plain_s:7.2f} MB/s  ({plain_rows:,} rows)"
        )
        print(
            f"ratio ours/plain (throughput) {plain_s / ours_s:.3f}x  "
            f"(ours takes {ours_s / plain_s:.1f}x as long; target >= 0.5x)"
        )
        phases = result["phases"]
        print(
            "breakdown: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
            + f"; run = {len(result['batches'])} batches, p50 "
            f"{statistics.median(result['batches'] or [0]):.2f} s, max "
            f"{max(result['batches'] or [0]):.2f} s"
        )
        steps = result["steps"]
        for name, label in STEPS.items() if not args.profile else ():
            if not hasattr(engine.Runner, name):
                continue
            print(f"  {steps[name]:8.2f} s  {100 * steps[name] / ours_s:5.1f} %  {label}")
        if not args.profile:
            other = phases["run"] - sum(steps.values())
            print(
                f"  {other:8.2f} s  {100 * other / ours_s:5.1f} %  rest of the run (batch queries)"
            )
        problems = check(platform, us, others, result)
        if problems:
            print("PROBLEMS:\n  " + "\n  ".join(problems))
            raise SystemExit(1)
        print("checks: all moved, others stayed, source keys destroyed, report verifies")
    except Exception:
        # SQLAlchemy errors quote the statement and its parameters: 100,000 ids are megabytes.
        for line in traceback.format_exc().splitlines():
            print(line if len(line) <= 1000 else line[:1000] + f" ... ({len(line):,} chars)")
        raise SystemExit(1) from None
    finally:
        if platform is not None:
            platform.close()
        provision.drop(args.admin_url, settings.database_prefix, list(settings.regions))
        shutil.rmtree(settings.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
