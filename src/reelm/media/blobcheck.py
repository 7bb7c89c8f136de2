"""`reelm blobs check`: blobs that no row points to, and rows that point to no blob.

The media pipeline (``media/videos.py``) keeps a video's bytes under three key layouts:

- a region's store: ``originals/<owner>/<video>`` (the encrypted original) and
  ``private/<owner>/<video>/<file>`` (encrypted renditions and poster of a followers-only or
  private video), next to the video's ``videos`` row in that region's database;
- the public store: ``v/<video>/<file>`` (renditions and poster of a ready public video), next to
  its ``public_videos`` row in the catalog.

An **orphan** is a blob under one of those layouts that no row accounts for: an ``originals/`` or
``private/`` key whose video has no ``videos`` row (of that owner) in the store's region, a ``v/``
key whose video has no ``public_videos`` row, or a key under those prefixes that does not follow
the layout at all. A **missing** blob is a key a row points to that is not in the store it should
be in: every video past ``uploading`` has its original in its region's store; a ``ready`` video
also has its renditions and poster, in the public store when the video is public and in its
region's store otherwise; every ``public_videos`` row's renditions and poster are in the public
store.

Each store is listed once (its media prefixes only); rows are looked up in batches. The keys of
one region's store and of the public store are held in memory while that region's rows are
compared with them (about 150 bytes a key). A candidate is confirmed before it is reported (a
missing key is asked for again, its row read again), so a video created or deleted while the
check runs is not reported.

``delete_orphans`` removes the orphans that follow the layout and are older than an hour (by the
store's modification time), after checking once more that no row has appeared for them: a job
that is writing a video's files right now keeps them. Keys that do not follow the layout are
reported and never deleted: what wrote them is unknown.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import select

from reelm.bootstrap import Platform
from reelm.media.models import PublicVideo, Video
from reelm.storage.blobs import BlobNotFound, BlobStore
from reelm.storage.db import Database

PUBLIC = "public"
ORIGINALS = "originals/"
PRIVATE = "private/"
PUBLIC_FILES = "v/"
REGION_PREFIXES = (ORIGINALS, PRIVATE)
ORPHAN_MIN_AGE = timedelta(hours=1)
BATCH = 1000
PROGRESS_EVERY = 500

T = TypeVar("T")
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class MediaKey:
    """What a media blob key names."""

    kind: Literal["original", "private", "public"]
    video_id: uuid.UUID
    owner_id: uuid.UUID | None  # None for the public store's keys, which name no owner


def _canonical_uuid(text: str) -> uuid.UUID | None:
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    # Keys are written with str(uuid): another spelling of the same id is not that video's key.
    return value if str(value) == text else None


def media_key(key: str) -> MediaKey | None:
    """The video (and owner) a key of the media layout names; None for any other key."""
    parts = key.split("/")
    if parts[0] == "originals" and len(parts) == 3:
        owner, video = _canonical_uuid(parts[1]), _canonical_uuid(parts[2])
        if owner is not None and video is not None:
            return MediaKey("original", video, owner)
    elif parts[0] == "private" and len(parts) == 4:
        owner, video = _canonical_uuid(parts[1]), _canonical_uuid(parts[2])
        if owner is not None and video is not None:
            return MediaKey("private", video, owner)
    elif parts[0] == "v" and len(parts) == 3:
        video = _canonical_uuid(parts[1])
        if video is not None:
            return MediaKey("public", video, None)
    return None


def batched(items: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def video_owners(db: Database, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """video id -> owner id of the given videos that have a row in ``db`` (one query)."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    with db.transaction() as s:
        query = select(Video.id, Video.owner_id).where(Video.id.in_(wanted))
        return dict(s.execute(query).all())


def published_owners(catalog: Database, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """video id -> owner id of the given videos that have a ``public_videos`` row."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    with catalog.transaction() as s:
        query = select(PublicVideo.id, PublicVideo.owner_id).where(PublicVideo.id.in_(wanted))
        return dict(s.execute(query).all())


# ---- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: Literal["orphan", "missing"]
    store: str  # a region's name, or "public"
    key: str
    video_id: str | None  # None for a key that follows no layout
    owner_id: str | None
    detail: str

    @property
    def deletable(self) -> bool:
        return self.kind == "orphan" and self.video_id is not None


@dataclass
class BlobReport:
    problems: list[Problem] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)  # media keys listed, per store
    videos: int = 0  # region video rows and catalog public video rows compared
    deleted: list[Problem] = field(default_factory=list)
    kept_young: list[Problem] = field(default_factory=list)  # orphans under the age limit

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def orphans(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "orphan"]

    @property
    def missing(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "missing"]

    def as_dict(self) -> dict[str, Any]:
        deleted = set(self.deleted)
        return {
            "clean": self.clean,
            "keys": self.keys,
            "videos": self.videos,
            "orphans": len(self.orphans),
            "missing": len(self.missing),
            "deleted": len(self.deleted),
            "problems": [{**asdict(p), "deleted": p in deleted} for p in self.problems],
        }


# ---- checking --------------------------------------------------------------------------------


def _listed(
    store: BlobStore, name: str, prefixes: Sequence[str], progress: Progress | None
) -> Iterator[str]:
    count = 0
    for prefix in prefixes:
        for key in store.iter_keys(prefix):
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(name, count)
            yield key
    if progress is not None:
        progress(name, count)


def _list_public(platform: Platform, report: BlobReport, progress: Progress | None) -> set[str]:
    """Every ``v/`` key of the public store; reports those of videos the catalog lacks."""
    keys: set[str] = set()
    for chunk in batched(_listed(platform.public_blobs, PUBLIC, [PUBLIC_FILES], progress)):
        places = {key: media_key(key) for key in chunk}
        published = published_owners(
            platform.catalog, (p.video_id for p in places.values() if p is not None)
        )
        for key, place in places.items():
            keys.add(key)
            if place is None or place.kind != "public":
                report.problems.append(
                    Problem(
                        "orphan", PUBLIC, key, None, None, "key outside the v/<video>/<file> layout"
                    )
                )
            elif place.video_id not in published:
                report.problems.append(
                    Problem(
                        "orphan",
                        PUBLIC,
                        key,
                        str(place.video_id),
                        None,
                        "no public video of this id in the catalog",
                    )
                )
    report.keys[PUBLIC] = len(keys)
    return keys


def _list_region(
    platform: Platform, region: str, report: BlobReport, progress: Progress | None
) -> set[str]:
    """Every media key of a region's store; reports those of videos the region lacks."""
    cell = platform.cell(region)
    keys: set[str] = set()
    for chunk in batched(_listed(cell.blobs, region, REGION_PREFIXES, progress)):
        places = {key: media_key(key) for key in chunk}
        owners = video_owners(cell.db, (p.video_id for p in places.values() if p is not None))
        for key, place in places.items():
            keys.add(key)
            if place is None or place.kind == "public":
                report.problems.append(
                    Problem("orphan", region, key, None, None, "key outside the media layout")
                )
            elif owners.get(place.video_id) != place.owner_id:
                report.problems.append(
                    Problem(
                        "orphan",
                        region,
                        key,
                        str(place.video_id),
                        str(place.owner_id),
                        f"no video of this owner and id in {region}",
                    )
                )
    report.keys[region] = len(keys)
    return keys


@dataclass(frozen=True)
class _Expected:
    store: str
    key: str
    video_id: uuid.UUID
    owner_id: uuid.UUID
    detail: str


def _expected_of_video(region: str, video: Any) -> Iterator[_Expected]:
    """The blobs one region ``videos`` row needs (``video``: a row of the columns below). An
    empty key stands for a reference the row lacks (always reported)."""
    yield _Expected(
        region,
        video.original_key or "",
        video.id,
        video.owner_id,
        f"original of a {video.status} video",
    )
    if video.status != "ready":
        return
    store = PUBLIC if video.visibility == "public" else region
    files = [
        (r.get("key"), f"{r.get('kind', 'file')} {r.get('name', '')}")
        for r in video.renditions or []
    ]
    for key, what in [*files, (video.poster_key, "poster")]:
        detail = f"{what.strip()} of a ready {video.visibility} video"
        yield _Expected(store, str(key or ""), video.id, video.owner_id, detail)


def _region_rows(db: Database) -> Iterator[list[Any]]:
    """The region's videos past ``uploading``, in batches (keyset pages by id)."""
    after: uuid.UUID | None = None
    columns = (
        Video.id,
        Video.owner_id,
        Video.status,
        Video.visibility,
        Video.original_key,
        Video.poster_key,
        Video.renditions,
    )
    while True:
        query = select(*columns).where(Video.status != "uploading").order_by(Video.id).limit(BATCH)
        if after is not None:
            query = query.where(Video.id > after)
        with db.transaction() as s:
            rows = list(s.execute(query))
        if not rows:
            return
        yield rows
        after = rows[-1].id


def _catalog_rows(catalog: Database) -> Iterator[list[Any]]:
    after: uuid.UUID | None = None
    columns = (PublicVideo.id, PublicVideo.owner_id, PublicVideo.renditions, PublicVideo.poster_key)
    while True:
        query = select(*columns).order_by(PublicVideo.id).limit(BATCH)
        if after is not None:
            query = query.where(PublicVideo.id > after)
        with catalog.transaction() as s:
            rows = list(s.execute(query))
        if not rows:
            return
        yield rows
        after = rows[-1].id


def _expected_of_public(video: Any) -> Iterator[_Expected]:
    files = [(r.get("key"), f"video {r.get('name', '')}") for r in video.renditions or []]
    for key, what in [*files, (video.poster_key, "poster")]:
        detail = f"{what.strip()} of a published video"
        yield _Expected(PUBLIC, str(key or ""), video.id, video.owner_id, detail)


def _confirm_missing(
    platform: Platform,
    candidates: list[_Expected],
    still_there: Callable[[Iterable[uuid.UUID]], set[uuid.UUID]],
    report: BlobReport,
    reported: set[tuple[str, str]],
) -> None:
    """Report the candidates still missing whose row still exists (a video deleted meanwhile
    loses its blobs before its row)."""
    if not candidates:
        return
    alive = still_there(c.video_id for c in candidates)
    for c in candidates:
        # Public files are named by a video's region row and by its catalog row: report once.
        mark = (c.store, c.key or f"{c.video_id} {c.detail}")
        if c.video_id not in alive or mark in reported:
            continue
        store = platform.public_blobs if c.store == PUBLIC else platform.cell(c.store).blobs
        if c.key and store.exists(c.key):
            continue  # written since the listing
        reported.add(mark)
        detail = c.detail if c.key else f"{c.detail}: the row names no key"
        report.problems.append(
            Problem("missing", c.store, c.key, str(c.video_id), str(c.owner_id), detail)
        )


def check(
    platform: Platform,
    *,
    regions: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> BlobReport:
    """Orphans and missing blobs of every region (or of ``regions``) and of the public store.
    ``progress(store, keys listed so far)`` is called while stores are listed."""
    report = BlobReport()
    public_keys = _list_public(platform, report, progress)
    reported: set[tuple[str, str]] = set()
    for region in regions if regions is not None else list(platform.cells):
        cell = platform.cell(region)
        region_keys = _list_region(platform, region, report, progress)
        keys_of = {region: region_keys, PUBLIC: public_keys}

        def alive(ids: Iterable[uuid.UUID], db: Database = cell.db) -> set[uuid.UUID]:
            return set(video_owners(db, ids))

        for rows in _region_rows(cell.db):
            report.videos += len(rows)
            candidates = [
                e
                for row in rows
                for e in _expected_of_video(region, row)
                if e.key not in keys_of[e.store]
            ]
            _confirm_missing(platform, candidates, alive, report, reported)
    if regions is None:

        def published(ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
            return set(published_owners(platform.catalog, ids))

        for rows in _catalog_rows(platform.catalog):
            report.videos += len(rows)
            candidates = [
                e for row in rows for e in _expected_of_public(row) if e.key not in public_keys
            ]
            _confirm_missing(platform, candidates, published, report, reported)
    return report


# ---- deleting orphans ------------------------------------------------------------------------


def delete_orphans(
    platform: Platform,
    report: BlobReport,
    *,
    min_age: timedelta = ORPHAN_MIN_AGE,
    now: datetime | None = None,
) -> list[Problem]:
    """Delete the report's orphans that follow the layout, are at least ``min_age`` old and
    still have no row. Returns those deleted (also kept in ``report.deleted``; the ones too
    young go to ``report.kept_young``)."""
    moment = now or datetime.now(UTC)
    orphans = [p for p in report.problems if p.deletable]
    deleted: list[Problem] = []
    for store_name in sorted({p.store for p in orphans}):
        of_store = [p for p in orphans if p.store == store_name]
        store, rows = _rows_now(platform, store_name, of_store)
        for problem in of_store:
            now_owner = rows.get(uuid.UUID(str(problem.video_id)))
            if now_owner is not None and now_owner == (problem.owner_id or ""):
                continue  # a row appeared since the check: not an orphan any more
            try:
                age = moment - store.modified(problem.key)
            except BlobNotFound:
                continue  # gone already
            if age < min_age:
                report.kept_young.append(problem)
                continue
            store.delete(problem.key)
            deleted.append(problem)
    report.deleted.extend(deleted)
    return deleted


def _rows_now(
    platform: Platform, store_name: str, orphans: list[Problem]
) -> tuple[BlobStore, dict[uuid.UUID, str]]:
    """The store, and video id -> owner id ("" for the public store's rows, which the keys do
    not name) of the rows that exist now for these orphans."""
    ids = [uuid.UUID(p.video_id) for p in orphans if p.video_id is not None]
    if store_name == PUBLIC:
        return platform.public_blobs, dict.fromkeys(published_owners(platform.catalog, ids), "")
    cell = platform.cell(store_name)
    return cell.blobs, {vid: str(owner) for vid, owner in video_owners(cell.db, ids).items()}
