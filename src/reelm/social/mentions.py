"""Mentions: an ``@handle`` in a caption or a comment tells that person, in their inbox.

Who is told: the account the handle names (as a profile address finds it: the exact handle,
else the holder of its look-alike key), if it is active, is not the author, and may see the
video (``reelm.social.access``: a block either way, a private video, or a followers-only one
they do not follow means no notification); ``notify.send`` also skips a recipient who blocked
the author. A caption tells each person once per video, however often it is edited or the
video republished (``notify.send``'s ``once``): someone who could not see the video when it was
published is told once they can, on its next change. A comment tells the people it mentions
when it is written (comments are not edited).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from reelm.accounts import handles as handle_rules
from reelm.accounts.errors import InvalidInput
from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.bootstrap import Platform
from reelm.media import catalog
from reelm.media.captions import parse_caption
from reelm.media.models import Video
from reelm.regions.cell import Cell
from reelm.social import access, notify


def mentioned(platform: Platform, handles: Iterable[str]) -> list[uuid.UUID]:
    """The active accounts these mentions name, in order, each once; a mention that is no
    valid handle, or names nobody, names nobody."""
    people: list[uuid.UUID] = []
    with platform.catalog.transaction() as c:
        for handle in handles:
            try:
                query = handle_rules.owner_lookup(handle_rules.normalise(handle))
            except InvalidInput:
                continue
            person = c.scalar(
                query.join(DirectoryEntry, DirectoryEntry.user_id == PublicProfile.user_id).where(
                    DirectoryEntry.state == "active"
                )
            )
            if person is not None and person not in people:
                people.append(person)
    return people


def tell(
    platform: Platform,
    author: uuid.UUID,
    facts: access.VideoFacts,
    people: Iterable[uuid.UUID],
    *,
    comment_id: uuid.UUID | None = None,
    skip: Iterable[uuid.UUID | None] = (),
) -> int:
    """Notify the mentioned ``people`` who may see the video; how many were told now."""
    skipped = {author, *skip}
    told = 0
    for person in people:
        if person in skipped:
            continue
        relation = access.relation(platform, person, facts.owner_id)
        if not access.decide(access.Viewer(person, None), "view", facts, relation).allowed:
            continue
        once = None if comment_id is not None else f"caption-mention/{facts.id}"
        if notify.send(
            platform,
            person,
            "mention",
            author,
            video_id=facts.id,
            comment_id=comment_id,
            once=once,
        ):
            told += 1
    return told


def from_caption(platform: Platform, cell: Cell, video_id: uuid.UUID) -> int:
    """After a video was published or changed: tell whom its caption mentions (each once)."""
    with cell.db.transaction() as s:
        video = s.get(Video, video_id)
    if video is None or video.status != "ready" or video.removed is not None:
        return 0
    scope = cell.for_user(video.owner_id, cell.region)
    handles = parse_caption(scope.cipher().decrypt("caption", video.caption_ct)).mentions
    if not handles:
        return 0
    facts = (
        catalog.public_facts(platform, video.id)
        if video.visibility == "public"
        else catalog.stored_facts(platform, video)
    )
    if facts is None:  # made private (or removed) meanwhile
        return 0
    return tell(platform, video.owner_id, facts, mentioned(platform, handles))
