"""`reelm audit verify` against real servers: trust, extension, and the lies it must catch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reelm.bootstrap import Platform
from reelm.transparency.auditor import AuditFailure, audit

from .conftest import serving


def _add(platform: Platform, region: str, n: int, tag: str) -> None:
    for i in range(n):
        platform.cell(region).log.append_now("test.event", None, {"tag": tag, "i": i})
    platform.cell(region).log.integrate_all()


def _twin(platform_factory: Callable[..., Platform], original: Platform) -> Platform:
    """Another deployment holding the same log signing keys: what a lying operator has."""
    twin = platform_factory()
    for region in twin.cells:
        seed = original.settings.key_dir(region) / "log-signing.seed"
        original.cell(region).log  # noqa: B018 - creates the seed if needed
        shutil.copy(seed, twin.settings.key_dir(region) / "log-signing.seed")
    return twin


def test_trust_then_extend_then_catch_a_fork(
    fresh_platform: Platform, platform_factory: Callable[..., Platform], tmp_path: Path
) -> None:
    state = tmp_path / "audit.json"
    _add(fresh_platform, "us", 10, "honest")
    twin = _twin(platform_factory, fresh_platform)
    with serving(fresh_platform) as url:
        first = {r.region: r for r in audit(url, state)}
        assert first["us"].checkpoint.size == 10
        assert first["us"].previous_size is None
        _add(fresh_platform, "us", 5, "honest")
        second = {r.region: r for r in audit(url, state, entries={"us": [0, 14]})}
        assert second["us"].previous_size == 10
        assert second["us"].checkpoint.size == 15
        assert second["us"].entries_checked == [0, 14]

    # Same key, another history of 17 entries: a fork.
    _add(twin, "us", 17, "rewritten")
    with serving(twin) as url, pytest.raises(AuditFailure, match="FORK"):
        audit(url, state)


def test_catches_a_rollback(
    fresh_platform: Platform, platform_factory: Callable[..., Platform], tmp_path: Path
) -> None:
    state = tmp_path / "audit.json"
    _add(fresh_platform, "ca", 8, "honest")
    twin = _twin(platform_factory, fresh_platform)
    with serving(fresh_platform) as url:
        audit(url, state)
    _add(twin, "ca", 3, "older")
    with serving(twin) as url, pytest.raises(AuditFailure, match="ROLLBACK"):
        audit(url, state)


def test_catches_another_key(
    fresh_platform: Platform, platform_factory: Callable[..., Platform], tmp_path: Path
) -> None:
    state = tmp_path / "audit.json"
    with serving(fresh_platform) as url:
        audit(url, state)
    impostor = platform_factory()  # its own keys
    with serving(impostor) as url, pytest.raises(AuditFailure, match="key"):
        audit(url, state)


def test_cli_exit_codes_and_independence(fresh_platform: Platform, tmp_path: Path) -> None:
    _add(fresh_platform, "nz", 4, "x")
    state = tmp_path / "audit.json"
    with serving(fresh_platform) as url:
        ok = subprocess.run(
            [
                sys.executable,
                "-m",
                "reelm.transparency.auditor",
                url,
                "--state",
                str(state),
                "--entry",
                "nz:3",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert ok.returncode == 0, ok.stderr
        assert "nz: size 4" in ok.stdout
        missing = subprocess.run(
            [
                sys.executable,
                "-m",
                "reelm.transparency.auditor",
                url,
                "--state",
                str(state),
                "--entry",
                "nz:99",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert missing.returncode == 1
        assert "AUDIT FAILED" in missing.stderr
    # The verifier runs on the standard library and cryptography alone.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, reelm.transparency.auditor; "
            "print(sorted(m.split('.')[0] for m in sys.modules if not m.startswith('_')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(eval(probe.stdout))  # noqa: S307 - our own subprocess's output
    third_party = loaded - set(sys.stdlib_module_names) - {"reelm", "cryptography"}
    assert third_party <= {"cffi", "_cffi_backend"}, third_party


def _rewrite_entry(platform: Platform, region: str, index: int) -> None:
    """What an operator with the database can do: change an entry's bytes, leaving its stored
    leaf hash and the tree's nodes (which every proof is built from) alone."""
    from sqlalchemy import text

    with platform.cell(region).db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE tlog_entries DISABLE TRIGGER tlog_entries_append_only"))
        changed = conn.execute(
            text(
                "UPDATE tlog_entries SET entry = convert_to(replace(convert_from(entry, 'UTF8'), "
                "'honest', 'forged'), 'UTF8') WHERE idx = :i"
            ),
            {"i": index},
        )
        assert changed.rowcount == 1
        conn.execute(text("ALTER TABLE tlog_entries ENABLE TRIGGER tlog_entries_append_only"))


def test_rewritten_entry_bytes_fail_with_a_saved_state(
    fresh_platform: Platform, tmp_path: Path
) -> None:
    state = tmp_path / "audit.json"
    _add(fresh_platform, "au", 10, "honest")
    with serving(fresh_platform) as url:
        audit(url, state)
        _add(fresh_platform, "au", 1500, "honest")  # more than one page of entries
        _rewrite_entry(fresh_platform, "au", 1234)
        # The checkpoint and the consistency proof are untouched: only hashing the entries
        # the log serves shows the lie.
        with pytest.raises(AuditFailure, match="TAMPERED"):
            audit(url, state)
        # A first run (no saved state) hashes the whole log, and sees it too.
        with pytest.raises(AuditFailure, match="TAMPERED"):
            audit(url, tmp_path / "new.json")


def test_each_entry_is_hashed_once_across_runs(fresh_platform: Platform, tmp_path: Path) -> None:
    state = tmp_path / "audit.json"
    _add(fresh_platform, "nz", 7, "honest")
    with serving(fresh_platform) as url:
        assert {r.region: r for r in audit(url, state)}["nz"].entries_hashed == 7
        assert {r.region: r for r in audit(url, state)}["nz"].entries_hashed == 0
        _add(fresh_platform, "nz", 9, "honest")
        again = {r.region: r for r in audit(url, state)}["nz"]
        assert (again.previous_size, again.entries_hashed) == (7, 9)
        # An entry hashed before and rewritten since is not fetched again (an auditor's state
        # vouches for what it saw); a fresh auditor sees the rewrite.
        _rewrite_entry(fresh_platform, "nz", 3)
        audit(url, state)
        with pytest.raises(AuditFailure, match="TAMPERED"):
            audit(url, tmp_path / "fresh.json")
