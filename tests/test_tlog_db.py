"""The transparency log on a real PostgreSQL: integration, proofs, append-only, restarts,
and one total order under concurrent appends from several processes."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from reelm.bootstrap import Platform, build
from reelm.transparency.verify import (
    leaf_hash,
    open_note,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)


def test_append_integrate_prove(fresh_platform: Platform) -> None:
    tlog = fresh_platform.cell("au").log
    assert tlog.integrate() == 0
    for i in range(37):
        tlog.append_now("test.event", f"subject-{i % 5}", {"n": i})
    assert tlog.integrate() == 37
    first = tlog.latest()
    assert first is not None
    assert first.size == 37
    checkpoint = open_note(first.note, tlog.verifier_key)
    assert checkpoint.origin == "reelm.localhost/au"
    assert checkpoint.size == 37
    entries = tlog.entries(0, 37)
    assert [e.idx for e in entries] == list(range(37))
    leaves = [leaf_hash(e.entry) for e in entries]
    assert root_from_leaves(leaves) == checkpoint.root
    for i in (0, 1, 17, 36):
        size, proof = tlog.inclusion_proof(i)
        verify_inclusion(i, size, leaves[i], proof, checkpoint.root)
    assert tlog.index_of(leaves[17]) == 17

    for i in range(20):
        tlog.append_now("test.event", None, {"n": 100 + i})
    tlog.integrate()
    second = tlog.latest()
    assert second is not None
    assert second.size == 57
    verify_consistency(37, 57, first.root, second.root, tlog.consistency_proof(37, 57))
    assert len(tlog.entries_about("subject-3")) == 7


def test_a_batch_window_is_published_once_closed_in_hash_order(
    fresh_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    from datetime import UTC, datetime, timedelta

    from reelm.transparency import log as tlog_module

    tlog = fresh_platform.cell("nz").log
    tlog.integrate_all()
    latest = tlog.latest()
    base = latest.size if latest else 0
    hour = datetime(2026, 11, 5, 14, 0, tzinfo=UTC)

    class At(datetime):
        moment = hour

        @classmethod
        def now(cls, tz: object = None) -> At:
            return cls.fromtimestamp(cls.moment.timestamp(), UTC)

    monkeypatch.setattr(tlog_module, "datetime", At)
    for minute in (1, 7, 20, 41, 59):
        At.moment = hour + timedelta(minutes=minute, seconds=13, microseconds=4321)
        tlog.append_now("test.event", None, {"minute": minute})
    # The window is still open, or just closed (transactions may still commit): nothing yet.
    assert tlog.integrate_closed(now=hour + timedelta(minutes=59, seconds=59)) == 0
    assert tlog.integrate_closed(now=hour + timedelta(hours=1, seconds=30)) == 0
    At.moment = hour + timedelta(hours=1, minutes=3)
    tlog.append_now("test.event", None, {"minute": 63})
    # Closed: its five entries go in, the next window's one waits.
    assert tlog.integrate_closed(now=hour + timedelta(hours=1, minutes=5)) == 5
    published = tlog.entries(base, base + 10)
    assert len(published) == 5
    assert {json.loads(e.entry)["time"] for e in published} == {"2026-11-05T14:00:00.000000Z"}
    assert [e.leaf_hash for e in published] == sorted(e.leaf_hash for e in published)
    assert tlog.integrate_closed(now=hour + timedelta(hours=2, minutes=1)) == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE tlog_entries SET kind = 'forged' WHERE idx = 0",
        "DELETE FROM tlog_entries WHERE idx = 0",
        "UPDATE tlog_nodes SET hash = '\\x00' WHERE level = 0 AND idx = 0",
        "DELETE FROM tlog_checkpoints",
        "TRUNCATE tlog_entries CASCADE",
    ],
)
def test_the_database_refuses_to_change_the_log(fresh_platform: Platform, statement: str) -> None:
    tlog = fresh_platform.cell("nz").log
    tlog.append_now("test.event", None, {})
    tlog.integrate()
    with pytest.raises(Exception, match="append-only"), tlog.db.engine.begin() as conn:
        conn.execute(text(statement))


def test_log_survives_restart(fresh_platform: Platform) -> None:
    tlog = fresh_platform.cell("ca").log
    for i in range(5):
        tlog.append_now("test.event", None, {"n": i})
    tlog.integrate()
    before = tlog.latest()
    assert before is not None
    fresh_platform.close()
    again = build(fresh_platform.settings)  # new engines, keys read back from disk
    try:
        relog = again.cell("ca").log
        assert relog.verifier_key == tlog.verifier_key
        relog.append_now("test.event", None, {"n": 5})
        relog.integrate()
        after = relog.latest()
        assert after is not None
        assert after.size == 6
        verify_consistency(5, 6, before.root, after.root, relog.consistency_proof(5, 6))
    finally:
        again.close()


APPENDER = """
import sys
import psycopg
from reelm.transparency.log import canonical_event
url, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with psycopg.connect(url) as conn:
    for i in range(count):
        with conn.transaction():
            conn.execute(
                "INSERT INTO tlog_queue (entry, kind, subject) VALUES (%s, 'test.event', %s)",
                (canonical_event("test.event", "us", worker, {"i": i}), worker),
            )
"""

INTEGRATOR = """
import sys
from reelm.config import Settings
from reelm.bootstrap import build
settings = Settings.model_validate_json(sys.argv[1])
platform = build(settings, upgrade=False)
for _ in range(60):
    platform.cell("us").log.integrate(max_batch=7)
platform.close()
"""


def test_concurrent_appends_from_processes_give_one_order(fresh_platform: Platform) -> None:
    cell = fresh_platform.cell("us")
    url = make_url(cell.db.url).set(drivername="postgresql").render_as_string(hide_password=False)
    settings_json = fresh_platform.settings.model_dump_json()
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, url, f"w{w}", "60"]) for w in range(4)
    ] + [subprocess.Popen([sys.executable, "-c", INTEGRATOR, settings_json]) for _ in range(2)]
    try:
        codes = [proc.wait(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert codes == [0] * len(procs)
    cell.log.integrate_all()
    latest = cell.log.latest()
    assert latest is not None
    assert latest.size == 240
    entries = cell.log.entries(0, 240)
    assert [e.idx for e in entries] == list(range(240))
    assert root_from_leaves([leaf_hash(e.entry) for e in entries]) == latest.root
    # Each writer's events appear in the order it wrote them.
    for w in range(4):
        mine = [e for e in entries if e.subject == f"w{w}"]
        assert [int(e.entry.split(b'"i":')[1].split(b"}")[0]) for e in mine] == list(range(60))
    # Every checkpoint along the way is consistent with the last one.
    with psycopg.connect(url) as conn:
        sizes = [r[0] for r in conn.execute("SELECT size FROM tlog_checkpoints ORDER BY size")]
    assert len(sizes) > 2
    for size in sizes:
        cp = cell.log.checkpoint_at(size)
        assert cp is not None
        verify_consistency(size, 240, cp.root, latest.root, cell.log.consistency_proof(size, 240))
