"""Transparency log API: checkpoints, entries and proofs per region (see docs/transparency.md)."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from reelm.accounts.errors import InvalidInput, NotFound
from reelm.api.deps import PlatformDep
from reelm.api.problems import problem_responses
from reelm.bootstrap import Platform
from reelm.transparency.log import TransparencyLog
from reelm.transparency.report import MAX_RELEASES, releases
from reelm.transparency.verify import EMPTY_ROOT, Checkpoint

router = APIRouter(tags=["transparency"])
MAX_ENTRIES = 1000
ERRORS = problem_responses(404, 422, 451)


def region_log(platform: Platform, region: str) -> TransparencyLog:
    if region not in platform.cells:
        raise NotFound(f"no region {region[:20]!r}")
    return platform.cell(region).log


def current_note(tlog: TransparencyLog) -> str:
    latest = tlog.latest()
    if latest is None:
        return tlog.sign(Checkpoint(tlog.origin, 0, EMPTY_ROOT))
    return latest.note


class RegionLog(BaseModel):
    region: str
    origin: str
    verifier_key: str
    checkpoint_url: str


class LogIndex(BaseModel):
    regions: list[RegionLog]


class EntryOut(BaseModel):
    index: int
    leaf_hash: str
    entry: str  # base64 of the exact bytes that were hashed
    event: dict[str, Any]  # the same, parsed, for people


class EntriesOut(BaseModel):
    entries: list[EntryOut]


class ReleaseOut(BaseModel):
    """What one release entry states: the code and configuration a process started with."""

    index: int
    time: str | None
    version: str | None
    package_digest: str | None
    config_digest: str | None
    regions: list[str] | None
    process: str | None


class ReleasesOut(BaseModel):
    region: str
    tree_size: int
    releases: list[ReleaseOut]


class ProofOut(BaseModel):
    index: int | None = None
    size: int | None = None
    first: int | None = None
    second: int | None = None
    proof: list[str]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@router.get("/api/v1/transparency")
def list_logs(platform: PlatformDep) -> LogIndex:
    """Every region's log: its origin, its verifier key (C2SP note format) and checkpoint URL."""
    return LogIndex(
        regions=[
            RegionLog(
                region=r,
                origin=c.log.origin,
                verifier_key=str(c.log.verifier_key),
                checkpoint_url=f"/transparency/{r}/checkpoint",
            )
            for r, c in platform.cells.items()
        ]
    )


@router.get(
    "/transparency/{region}/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}, **ERRORS},
)
def checkpoint(region: str, platform: PlatformDep) -> PlainTextResponse:
    """The region's newest signed checkpoint (C2SP tlog-checkpoint in a signed note)."""
    note = current_note(region_log(platform, region))
    return PlainTextResponse(note, headers={"Cache-Control": "no-cache"})


@router.get("/api/v1/transparency/{region}/entries", responses=ERRORS)
def entries(
    region: str,
    platform: PlatformDep,
    start: Annotated[int, Query(ge=0, le=2**62)] = 0,
    end: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> EntriesOut:
    """Entries [start, end), at most 1000 at a time."""
    stop = min(end if end is not None else start + 100, start + MAX_ENTRIES)
    rows = region_log(platform, region).entries(start, stop)
    return EntriesOut(
        entries=[
            EntryOut(
                index=e.idx,
                leaf_hash=_b64(e.leaf_hash),
                entry=_b64(e.entry),
                event=json.loads(e.entry),
            )
            for e in rows
        ]
    )


@router.get("/api/v1/transparency/{region}/proof/inclusion", responses=ERRORS)
def inclusion(
    region: str,
    platform: PlatformDep,
    index: Annotated[int | None, Query(ge=0)] = None,
    leaf_hash: Annotated[str | None, Query(max_length=64)] = None,
    size: Annotated[int | None, Query(ge=1)] = None,
) -> ProofOut:
    """Inclusion proof of an entry (by index, or by base64 leaf hash) in the tree of ``size``
    (default: the newest checkpoint)."""
    tlog = region_log(platform, region)
    if index is None:
        if leaf_hash is None:
            raise InvalidInput("give index or leaf_hash", field="index")
        try:
            found = tlog.index_of(base64.b64decode(leaf_hash, validate=True))
        except ValueError:
            raise InvalidInput("leaf_hash is not base64", field="leaf_hash") from None
        if found is None:
            raise NotFound("no entry with this leaf hash")
        index = found
    try:
        tree, proof = tlog.inclusion_proof(index, size)
    except ValueError as exc:
        raise NotFound(str(exc)) from None
    return ProofOut(index=index, size=tree, proof=[_b64(p) for p in proof])


@router.get("/api/v1/transparency/{region}/proof/consistency", responses=ERRORS)
def consistency(
    region: str,
    platform: PlatformDep,
    first: Annotated[int, Query(ge=0)],
    second: Annotated[int, Query(ge=0)],
) -> ProofOut:
    """Consistency proof between two tree sizes (RFC 9162 2.1.4)."""
    try:
        proof = region_log(platform, region).consistency_proof(first, second)
    except ValueError as exc:
        raise NotFound(str(exc)) from None
    return ProofOut(first=first, second=second, proof=[_b64(p) for p in proof])


@router.get("/api/v1/transparency/{region}/releases", responses=ERRORS)
def region_releases(
    region: str,
    platform: PlatformDep,
    limit: Annotated[int, Query(ge=1, le=MAX_RELEASES)] = MAX_RELEASES,
) -> ReleasesOut:
    """The newest release entries in the region's log up to its newest checkpoint, newest
    first: which reelm version, package digest and configuration digest served the region.
    Each is an ordinary entry (prove it with /proof/inclusion?index=...)."""
    tlog = region_log(platform, region)
    latest = tlog.latest()
    size = latest.size if latest else 0
    return ReleasesOut(
        region=region,
        tree_size=size,
        releases=[ReleaseOut(**r) for r in releases(tlog, size, limit)],
    )
