"""Accounts benchmark: sign-up, log-in and residency-scan, each against an anchor measured in
the same run on the same machine.

- sign-up vs `argon2id hash` alone at the same parameters (the cost no sign-up can avoid);
- log-in vs `argon2id verify` alone;
- a refused log-in for an account that does not exist (by handle, by email) vs one for an
  existing account with a wrong password: the ratio should be 1 (timing must not tell);
- residency-scan vs a plain `COPY ... TO STDOUT` of the same tables (reading is the floor).

Run: .venv/bin/python bench/accounts.py [--users 200] [--admin-url URL]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import psycopg
from argon2 import PasswordHasher
from sqlalchemy.engine import make_url

from reelm.accounts.errors import BadCredentials
from reelm.accounts.schemas import SignUp
from reelm.accounts.service import log_in, sign_up
from reelm.bootstrap import Platform, build
from reelm.config import Settings
from reelm.residency.scan import scan
from reelm.storage import provision

MARKETS = ["US", "CA", "AU", "NZ", "FR", "DE", "JP", "BR"]


def _timed(fn, n):  # type: ignore[no-untyped-def]
    samples = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t)
    return samples


def _refused(platform: Platform, identifier: str) -> None:
    try:
        log_in(platform, identifier, "not the password")
    except BadCredentials:
        return
    raise AssertionError("a wrong password was accepted")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="reelm-bench-")),
        admin_database_url=args.admin_url,
        database_prefix=f"bench{secrets.token_hex(3)}",
        signup_rate="1000000/minute",
        login_rate="1000000/minute",
    )
    platform = build(settings)
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib
    )
    password = "bench password 1"
    try:
        n = args.users
        anchor_hash = _timed(lambda i: hasher.hash(password), n)
        ours_signup = _timed(
            lambda i: sign_up(
                platform,
                SignUp(
                    handle=f"bench{i}",
                    display_name=f"Bench {i}",
                    email=f"bench{i}@example.com",
                    password=password,
                    birth_date=date(1990, 1, 1),
                    market=MARKETS[i % len(MARKETS)],
                    phone=None,
                ),
            ),
            n,
        )
        stored = hasher.hash(password)
        anchor_verify = _timed(lambda i: hasher.verify(stored, password), n)
        ours_login = _timed(lambda i: log_in(platform, f"bench{i}", password), n)
        # Interleaved, so that whatever else the machine does weighs on the three alike.
        refused: dict[str, list[float]] = {"existing": [], "handle": [], "email": []}
        for i in range(n):
            for kind, identifier in (
                ("existing", f"bench{i}"),
                ("handle", f"nobody{i}"),
                ("email", f"nobody{i}@example.com"),
            ):
                t = time.perf_counter()
                _refused(platform, identifier)
                refused[kind].append(time.perf_counter() - t)
        wrong_known, wrong_handle, wrong_email = (
            refused["existing"],
            refused["handle"],
            refused["email"],
        )

        t = time.perf_counter()
        report = scan(platform)
        scan_s = time.perf_counter() - t
        t = time.perf_counter()
        copied = 0
        for db in [platform.catalog, *(c.db for c in platform.cells.values())]:
            url = make_url(db.url).set(drivername="postgresql")
            with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
                tables = [
                    r[0]
                    for r in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    )
                ]
                for table in tables:
                    with conn.cursor().copy(f'COPY "{table}" TO STDOUT') as copy:
                        for block in copy:
                            copied += len(block)
        copy_s = time.perf_counter() - t
        assert report.clean, report.findings

        def line(name: str, ours: list[float], anchor: list[float]) -> None:
            o, a = statistics.median(ours), statistics.median(anchor)
            print(
                f"{name:<34} ours p50 {o * 1000:7.1f} ms  anchor p50 {a * 1000:7.1f} ms  "
                f"ratio {o / a:5.2f}x  ({1 / o:6.1f}/s)"
            )

        print(
            f"argon2id t={settings.argon2_time_cost} m={settings.argon2_memory_kib} KiB, "
            f"{n} users over {len(MARKETS)} markets"
        )
        line("sign-up", ours_signup, anchor_hash)
        line("log-in", ours_login, anchor_verify)
        line("wrong password, existing account", wrong_known, anchor_verify)
        line("unknown handle vs existing", wrong_handle, wrong_known)
        line("unknown email vs existing", wrong_email, wrong_known)
        print(
            f"scan     ours {scan_s:.2f} s ({report.rows} rows, {report.users} users)  "
            f"anchor COPY {copy_s:.2f} s ({copied} bytes)  ratio {scan_s / copy_s:.1f}x"
        )
    finally:
        platform.close()
        provision.drop(args.admin_url, settings.database_prefix, list(settings.regions))


if __name__ == "__main__":
    main()
