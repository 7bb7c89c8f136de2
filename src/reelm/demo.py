"""Sample content for `reelm demo`: a few users in several markets. Idempotent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from reelm.accounts.errors import EmailTaken, HandleTaken
from reelm.accounts.lifecycle import update_profile
from reelm.accounts.schemas import Links, ProfileUpdate, SignUp
from reelm.accounts.service import log_in, log_out, sign_up
from reelm.bootstrap import Platform

DEMO_PASSWORD = "reelm-demo-2026"  # noqa: S105 - printed in the README; demo data only

SAMPLE_USERS = [
    ("maya.skates", "Maya ⛸️", "US", date(1998, 4, 12), "Ice dancing, mostly falling."),
    ("tofu_chef", "Tofu Chef 豆腐", "CA", date(1990, 9, 3), "Plant-based recipes in 60 seconds."),
    ("surf.with.jack", "Jack", "AU", date(1995, 1, 21), "Bondi mornings 🌊"),
    ("kiwi.birds", "Aroha", "NZ", date(2001, 7, 30), "Native birds of Aotearoa."),
    ("chloe.paris", "Chloé", "FR", date(1999, 11, 2), "Danse contemporaine."),
    ("sakura.beats", "さくら", "JP", date(2008, 2, 14), "Lo-fi beats."),
    ("samba.rafa", "Rafael", "BR", date(1987, 5, 5), "Samba lessons for beginners."),
    ("reelm.support", "reelm support", "US", date(1990, 1, 1), "Support staff (demo)."),
]
STAFF_HANDLE = "reelm.support"


def _held_here(platform: Platform, market: str) -> bool:
    """Whether a sample user of this market is this process's to make (a cell makes its own
    region's; the single-machine mode makes them all)."""
    from reelm.regions.routing import home_region

    return platform.is_local(home_region(platform, market))


def seed_demo(platform: Platform, *, follows: bool = True) -> int:
    """The sample users this process holds (every one in the single-machine mode), their
    profiles, and (``follows``) their follows. A cell follows only once every cell has made
    its users (``seed_follows``, run by the multi-cell demo afterwards)."""
    created = 0
    for handle, name, market, birth, bio in SAMPLE_USERS:
        if not _held_here(platform, market):
            continue
        try:
            sign_up(
                platform,
                SignUp(
                    handle=handle,
                    display_name=name,
                    email=f"{handle.replace('.', '_')}@example.com",
                    password=DEMO_PASSWORD,
                    birth_date=birth,
                    market=market,
                ),
                reserved=handle == STAFF_HANDLE,  # the platform's own account
            )
        except (HandleTaken, EmailTaken):
            continue
        created += 1
        _token, user = log_in(platform, handle, DEMO_PASSWORD, user_agent="reelm demo seed")
        update_profile(
            platform,
            user,
            ProfileUpdate(
                bio=bio, links=Links(website=f"https://{handle.replace('_', '-')}.example.org")
            ),
        )
        log_out(platform, user)
    if created:
        if platform.local_region is None:
            # Staff membership is the catalog owner's to grant: not a cell's.
            _staff_example(platform)
        if follows:
            seed_follows(platform)
        # The sample history is published at once, so its proofs show on the first visit; the
        # log publishes everything else an hour at a time (docs/transparency.md).
        for cell in platform.cells.values():
            cell.log.integrate_all()
    return created


DEMO_FOLLOWS = {
    "maya.skates": ("tofu_chef", "chloe.paris", "surf.with.jack"),
    "tofu_chef": ("maya.skates", "sakura.beats"),
    "surf.with.jack": ("maya.skates", "kiwi.birds"),
    "kiwi.birds": ("surf.with.jack",),
    "chloe.paris": ("maya.skates", "samba.rafa"),
    "samba.rafa": ("chloe.paris", "maya.skates"),
    "sakura.beats": ("tofu_chef",),
}


def seed_follows(platform: Platform) -> None:
    """A small social graph, so profiles show followers and the Following tab has videos:
    the follows of the sample users this process holds."""
    from reelm.social import graph

    markets = {handle: market for handle, _name, market, _birth, _bio in SAMPLE_USERS}
    for handle, others in DEMO_FOLLOWS.items():
        if not _held_here(platform, markets[handle]):
            continue
        _token, user = log_in(platform, handle, DEMO_PASSWORD, user_agent="reelm demo seed")
        try:
            for other in others:
                graph.follow(platform, user, other)
        finally:
            log_out(platform, user)


def seed_videos(
    platform: Platform,
    on_progress: Callable[[int, int], None] | None = None,
    samples: Path | None = None,
) -> int:
    """Post the sample clips (made by FFmpeg at first run, then cached under the data dir) as
    their demo authors, once: an author who already has videos is left alone. Returns the
    number of videos posted; the in-process worker makes them playable within seconds."""
    from reelm.media.samples import ensure_samples
    from reelm.media.uploads import UploadMeta
    from reelm.media.videos import ingest, own_video_count

    clips = ensure_samples(
        samples or platform.settings.data_dir / "samples", on_progress=on_progress
    )
    markets = {handle: market for handle, _name, market, _birth, _bio in SAMPLE_USERS}
    posted = 0
    for clip in clips:
        if not _held_here(platform, markets[clip.handle]):
            continue
        _token, user = log_in(platform, clip.handle, DEMO_PASSWORD, user_agent="reelm demo seed")
        try:
            if own_video_count(platform, user) == 0:
                ingest(platform, user, clip.path, UploadMeta(caption=clip.caption))
                posted += 1
        finally:
            log_out(platform, user)
    return posted


def _staff_example(platform: Platform) -> None:
    """One justified staff read, so that Maya's 'Who touched your data' page shows one."""
    from reelm.accounts.lifecycle import public_profile
    from reelm.transparency import gateway

    staff = public_profile(platform, STAFF_HANDLE).user_id
    gateway.grant(platform, staff, "support")
    gateway.staff_read(
        platform,
        staff,
        public_profile(platform, "maya.skates").user_id,
        gateway.Justification(ticket="SUP-1001", reason_code="user_request"),
    )
