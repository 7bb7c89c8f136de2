"""An independent auditor of a reelm deployment's transparency logs.

It needs nothing from the operator but the published checkpoints, entries and proofs, keeps the
last checkpoint it trusted per region in a local state file, and fails loudly on a fork, a
rollback, a bad signature or a proof that does not verify. It fetches every entry it has not
seen and hashes it itself: a checkpoint and proofs over stored tree hashes say nothing about
the entry bytes the log serves (rewritten in the database, they would still "verify"), so the
entries must hash, with the compact range kept from the last run, to the signed root. Like
``verify``, it imports only the standard library, ``cryptography`` (through ``verify``) and
``verify`` itself.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reelm.transparency.verify import (
    Checkpoint,
    VerificationError,
    VerifierKey,
    extend_range,
    leaf_hash,
    open_note,
    range_root,
    verify_consistency,
    verify_inclusion,
)

TIMEOUT = 20
# The kind of the entry a process appends at start (reelm.transparency.release).
RELEASE_KIND = "release.started"
RELEASE_FIELDS = ("version", "package_digest", "config_digest", "regions", "process")
# The most entries the API gives in one answer (api/transparency.py MAX_ENTRIES).
ENTRIES_PAGE = 1000


class AuditFailure(Exception):
    """The log broke a promise: the message says which, loudly."""


@dataclass
class RegionAudit:
    region: str
    checkpoint: Checkpoint
    previous_size: int | None
    entries_checked: list[int] = field(default_factory=list)
    entries_hashed: int = 0
    # Every release entry this auditor has hashed into a signed root, this run or before.
    releases: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        root = base64.b64encode(self.checkpoint.root).decode()
        if self.previous_size is None:
            how = "first seen: trusted from now on"
        elif self.previous_size == self.checkpoint.size:
            how = "unchanged since last run"
        else:
            how = f"consistent with the trusted size {self.previous_size}"
        extra = f"; entries {self.entries_checked} included" if self.entries_checked else ""
        hashed = f"; {self.entries_hashed} new entries hashed to the root"
        return f"{self.region}: size {self.checkpoint.size}, root {root}: {how}{hashed}{extra}"


class Client:
    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/") + "/"

    def get(self, path: str, **query: Any) -> bytes:
        url = urllib.parse.urljoin(self.base, path.lstrip("/"))
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if not url.startswith(("http://", "https://")):
            raise AuditFailure(f"not a web address: {url}")
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 - checked above
            data: bytes = response.read()
        return data

    def json(self, path: str, **query: Any) -> Any:
        return json.loads(self.get(path, **query))


def _b64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x, validate=True) for x in items]


def load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"regions": {}}
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, path)


def audit(
    base_url: str,
    state_path: Path,
    *,
    pinned_keys: dict[str, str] | None = None,
    entries: dict[str, list[int]] | None = None,
) -> list[RegionAudit]:
    """Check every region's newest checkpoint against the last trusted one; raise AuditFailure."""
    client = Client(base_url)
    state = load_state(state_path)
    published = client.json("/api/v1/transparency")
    missing = set(state["regions"]) - {info["region"] for info in published["regions"]}
    if missing:
        raise AuditFailure(
            f"{', '.join(sorted(missing))}: trusted before, no longer published by the deployment"
        )
    results = []
    for info in published["regions"]:
        region = info["region"]
        trusted = state["regions"].get(region, {})
        key_text = (pinned_keys or {}).get(region) or trusted.get("key") or info["verifier_key"]
        if trusted.get("key") and key_text != trusted["key"]:
            raise AuditFailure(f"{region}: the log's key is not the one trusted before")
        if not info["verifier_key"].startswith(info["origin"] + "+"):
            raise AuditFailure(f"{region}: the log's key name is not its origin")
        if info["verifier_key"] != key_text:
            raise AuditFailure(f"{region}: the deployment now publishes another log key")
        try:
            key = VerifierKey.parse(key_text)
            note = client.get(f"/transparency/{region}/checkpoint")
            checkpoint = open_note(note, key)
            previous = trusted.get("size")
            if previous is not None:
                _check_extends(client, region, int(previous), trusted["root"], checkpoint)
            start, frontier = _hashed_so_far(trusted)
            frontier, releases = _hash_new_entries(client, region, start, frontier, checkpoint)
            result = RegionAudit(region, checkpoint, previous)
            result.entries_hashed = checkpoint.size - start
            # Releases seen by earlier runs count only while their entries are vouched for.
            result.releases = [*(trusted.get("releases", []) if start else []), *releases]
            for index in (entries or {}).get(region, []):
                _check_entry(client, region, index, checkpoint)
                result.entries_checked.append(index)
        except VerificationError as exc:
            raise AuditFailure(f"{region}: {exc}") from exc
        state["regions"][region] = {
            "key": key_text,
            "size": checkpoint.size,
            "root": base64.b64encode(checkpoint.root).decode(),
            "checkpoint": note.decode(),
            # The compact range of every entry hashed so far (see verify.extend_range).
            "frontier": [base64.b64encode(h).decode() for h in frontier],
            "releases": result.releases,
        }
        results.append(result)
    save_state(state_path, state)
    return results


def _check_extends(
    client: Client, region: str, size: int, root_b64: str, checkpoint: Checkpoint
) -> None:
    root = base64.b64decode(root_b64)
    if checkpoint.size < size:
        raise AuditFailure(
            f"{region}: ROLLBACK: the log shows size {checkpoint.size}, "
            f"but size {size} was trusted before"
        )
    if checkpoint.size == size:
        if checkpoint.root != root:
            raise AuditFailure(f"{region}: FORK: two different trees of size {size}")
        return
    if size == 0:
        return
    proof = client.json(
        f"/api/v1/transparency/{region}/proof/consistency", first=size, second=checkpoint.size
    )["proof"]
    try:
        verify_consistency(size, checkpoint.size, root, checkpoint.root, _b64(proof))
    except VerificationError as exc:
        raise AuditFailure(
            f"{region}: FORK: the new checkpoint does not extend the trusted one ({exc})"
        ) from exc


def _hashed_so_far(trusted: dict[str, Any]) -> tuple[int, list[bytes]]:
    """How many entries earlier runs hashed, and their compact range. A state file without
    one (written by an older auditor), or whose range does not give the trusted root, starts
    again from the first entry."""
    try:
        size = int(trusted["size"])
        frontier = _b64(trusted["frontier"])
        if len(frontier) == size.bit_count() and range_root(frontier) == base64.b64decode(
            trusted["root"]
        ):
            return size, frontier
    except (KeyError, TypeError, ValueError):
        pass
    return 0, []


def _shown(value: Any) -> str | None:
    """A value of the log as text fit for a terminal or a page: whatever the log holds, no
    control characters (an escape sequence would rewrite the auditor's screen), 100 at most."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    return "".join(ch if ch.isprintable() else "?" for ch in text[:100])


def release_of(index: int, entry: bytes) -> dict[str, Any] | None:
    """What a release entry states (None for any other entry), as text whatever it holds."""
    try:
        event = json.loads(entry)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("kind") != RELEASE_KIND:
        return None
    details = event.get("details")
    details = details if isinstance(details, dict) else {}
    regions = details.get("regions")
    return {
        "index": index,
        "time": _shown(event.get("time")),
        **{name: _shown(details.get(name)) for name in RELEASE_FIELDS if name != "regions"},
        "regions": [_shown(r) or "" for r in regions[:64]] if isinstance(regions, list) else None,
    }


def _hash_new_entries(
    client: Client, region: str, start: int, frontier: list[bytes], checkpoint: Checkpoint
) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Fetch entries [start, size), hash each one here, and check that with the ones before
    they give the signed root. Returns the new compact range and the release entries found."""
    releases: list[dict[str, Any]] = []
    index = start
    while index < checkpoint.size:
        end = min(checkpoint.size, index + ENTRIES_PAGE)
        got = client.json(f"/api/v1/transparency/{region}/entries", start=index, end=end)
        page = got["entries"]
        if not page:
            raise AuditFailure(f"{region}: entry {index} is not published")
        leaves: list[bytes] = []
        for item in page:
            if item["index"] != index + len(leaves) or item["index"] >= checkpoint.size:
                raise AuditFailure(f"{region}: entries out of order at {index + len(leaves)}")
            raw = base64.b64decode(item["entry"], validate=True)
            leaf = leaf_hash(raw)
            if base64.b64decode(item["leaf_hash"], validate=True) != leaf:
                raise AuditFailure(
                    f"{region}: TAMPERED: entry {item['index']}'s bytes do not hash to the "
                    "leaf hash the log gives for it"
                )
            found = release_of(item["index"], raw)
            if found is not None:
                releases.append(found)
            leaves.append(leaf)
        frontier = extend_range(frontier, index, leaves)
        index += len(leaves)
    if range_root(frontier) != checkpoint.root:
        raise AuditFailure(
            f"{region}: TAMPERED: entries {start} to {checkpoint.size - 1} do not hash to the "
            "signed root (an entry was rewritten)"
        )
    return frontier, releases


def _check_entry(client: Client, region: str, index: int, checkpoint: Checkpoint) -> None:
    got = client.json(f"/api/v1/transparency/{region}/entries", start=index, end=index + 1)
    if not got["entries"] or got["entries"][0]["index"] != index:
        raise AuditFailure(f"{region}: entry {index} is not published")
    raw = base64.b64decode(got["entries"][0]["entry"], validate=True)
    proof = client.json(
        f"/api/v1/transparency/{region}/proof/inclusion", index=index, size=checkpoint.size
    )["proof"]
    verify_inclusion(index, checkpoint.size, leaf_hash(raw), _b64(proof), checkpoint.root)


def _parse_entries(specs: list[str]) -> dict[str, list[int]]:
    wanted: dict[str, list[int]] = {}
    for spec in specs:
        region, _, index = spec.partition(":")
        if not region or not index.isdigit():
            raise AuditFailure(f"--entry wants REGION:INDEX, not {spec!r}")
        wanted.setdefault(region, []).append(int(index))
    return wanted


def _parse_keys(specs: list[str]) -> dict[str, str]:
    keys = {}
    for spec in specs:
        region, _, key = spec.partition("=")
        if not region or not key:
            raise AuditFailure(f"--key wants REGION=VERIFIER_KEY, not {spec!r}")
        keys[region] = key
    return keys


def print_results(results: list[RegionAudit]) -> None:
    """One line per region, then the releases that served it (plain text)."""
    for result in results:
        print(f"ok  {result.describe()}")
    for result in results:
        if not result.releases:
            continue
        print(f"Releases that served {result.region} ({len(result.releases)} verified):")
        for r in result.releases:
            regions = " ".join(r["regions"] or [])
            print(
                f"  #{r['index']} {r['time']} reelm {r['version']} {r['process']} [{regions}]"
                f"\n    package {r['package_digest']}\n    config  {r['config_digest']}"
            )


def run(
    base_url: str,
    state: Path,
    entry_specs: list[str],
    key_specs: list[str],
    show: Callable[[list[RegionAudit]], None] = print_results,
) -> int:
    """Check, then ``show`` the results; return 0 when every check passed, 1 otherwise."""
    import sys

    try:
        results = audit(
            base_url,
            state,
            pinned_keys=_parse_keys(key_specs),
            entries=_parse_entries(entry_specs),
        )
    except AuditFailure as exc:
        print(f"AUDIT FAILED: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as exc:
        print(f"AUDIT FAILED: could not read the logs at {base_url}: {exc}", file=sys.stderr)
        return 1
    show(results)
    return 0


def main() -> None:
    """``python -m reelm.transparency.auditor URL``: the verifier without the rest of reelm."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_url")
    parser.add_argument("--state", type=Path, default=Path("reelm-audit.json"))
    parser.add_argument("--entry", action="append", default=[], help="REGION:INDEX")
    parser.add_argument("--key", action="append", default=[], help="REGION=VERIFIER_KEY")
    args = parser.parse_args()
    sys.exit(run(args.base_url, args.state, args.entry, args.key))


if __name__ == "__main__":
    main()
