"""Profile, privacy, deletion and purge: what happens to an account after sign-up."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import delete, select, update

from reelm.accounts import age, indexes
from reelm.accounts.errors import NotFound, SettingLocked
from reelm.accounts.logsubject import subject as log_subject
from reelm.accounts.logsubject import subject_if_readable
from reelm.accounts.models import Account, DirectoryEntry, LoginSession, PublicProfile
from reelm.accounts.schemas import PrivacySettings, PrivacyUpdate, ProfileUpdate
from reelm.accounts.service import CurrentUser, now
from reelm.bootstrap import Platform
from reelm.regions.cell import UserScope
from reelm.regions.fence import hold
from reelm.search.text import profile_text
from reelm.storage.db import Database

log = logging.getLogger("reelm.accounts")


@dataclass(frozen=True)
class Profile:
    user_id: uuid.UUID
    handle: str
    display_name: str
    bio: str
    links: dict[str, str]
    is_private: bool
    home_region: str
    created_at: datetime


@dataclass(frozen=True)
class Me:
    """Everything a user may see about their own account (decrypted in the home region)."""

    profile: Profile
    email: str
    phone: str | None
    birth_date: date
    market: str
    privacy: PrivacySettings
    privacy_locked: bool
    deletion_due: datetime | None


def _profile(platform: Platform, user_id: uuid.UUID, reads: Database | None = None) -> Profile:
    with (reads or platform.catalog).transaction() as s:
        row = s.execute(
            select(PublicProfile, DirectoryEntry.home_region)
            .join(DirectoryEntry, DirectoryEntry.user_id == PublicProfile.user_id)
            .where(PublicProfile.user_id == user_id)
        ).first()
    if row is None:
        raise NotFound("no such account")
    p, home = row
    return Profile(
        p.user_id, p.handle, p.display_name, p.bio, dict(p.links), p.is_private, home, p.created_at
    )


def public_profile(platform: Platform, handle: str, *, reads: Database | None = None) -> Profile:
    """A profile anyone may see; hidden while its deletion is pending. From ``reads`` (the
    replica, for a profile page), by default the primary."""
    from reelm.accounts import handles

    try:
        query = handles.owner_lookup(handles.normalise(handle))
    except Exception:
        raise NotFound(f"no user @{handle[:30]}") from None
    with (reads or platform.catalog).transaction() as s:
        user_id = s.scalar(
            query.join(DirectoryEntry, DirectoryEntry.user_id == PublicProfile.user_id).where(
                DirectoryEntry.state == "active"
            )
        )
    if user_id is None:
        raise NotFound(f"no user @{handle[:30]}")
    return _profile(platform, user_id, reads)


def _scope(platform: Platform, user: CurrentUser) -> UserScope:
    return platform.cell(user.home_region).for_user(user.user_id, user.home_region)


def get_me(platform: Platform, user: CurrentUser, *, today: date | None = None) -> Me:
    return read_protected(platform, _scope(platform, user), today=today)


def read_protected(platform: Platform, scope: UserScope, *, today: date | None = None) -> Me:
    """Decrypt one user's account in their home cell (the scope comes from the guard)."""
    cipher = scope.cipher()
    with scope.cell.db.transaction() as s:
        account = s.get(Account, scope.user_id)
    if account is None:
        raise NotFound("no such account")
    birth = date.fromisoformat(cipher.decrypt("birth_date", account.birth_date_ct))
    rules = age.AgeRules(age.age_on(birth, today or date.today()))
    _refresh_teen(platform, scope.user_id, rules.privacy_locked)
    return Me(
        profile=_profile(platform, scope.user_id),
        email=cipher.decrypt("email", account.email_ct),
        phone=cipher.decrypt_optional("phone", account.phone_ct),
        birth_date=birth,
        market=account.market,
        privacy=PrivacySettings.model_validate_json(
            cipher.decrypt("settings", account.settings_ct)
        ).held_to(rules),
        privacy_locked=rules.privacy_locked,
        deletion_due=account.purge_after,
    )


def _refresh_teen(platform: Platform, user_id: uuid.UUID, teen: bool) -> None:
    """Lift the under-16 protections once the user has turned 16 (or set them, if a birth
    date correction ever makes the user younger)."""
    with platform.catalog.transaction() as c:
        c.execute(
            update(PublicProfile)
            .where(PublicProfile.user_id == user_id, PublicProfile.teen.is_not(teen))
            .values(teen=teen)
        )


def update_profile(platform: Platform, user: CurrentUser, change: ProfileUpdate) -> Profile:
    values: dict[str, object] = {}
    if change.display_name is not None:
        values["display_name"] = change.display_name
    if change.bio is not None:
        values["bio"] = change.bio
    if change.links is not None:
        values["links"] = change.links.normalised()
    if values:
        with platform.catalog_write(user.user_id) as s:
            current = s.get(PublicProfile, user.user_id, with_for_update=True)
            if current is not None:
                values["search_text"] = profile_text(
                    current.handle,
                    str(values.get("display_name", current.display_name)),
                    str(values.get("bio", current.bio)),
                )
            s.execute(
                update(PublicProfile).where(PublicProfile.user_id == user.user_id).values(**values)
            )
    return _profile(platform, user.user_id)


def update_privacy(
    platform: Platform, user: CurrentUser, change: PrivacyUpdate, *, today: date | None = None
) -> PrivacySettings:
    """Apply a privacy change within the age rules (``PrivacySettings.refused_at``): 13-15
    year olds keep a private account, no DMs, no suggestions, comments from followers."""
    scope = _scope(platform, user)
    cipher = scope.cipher()
    with scope.cell.db.transaction() as s:
        hold(s, user.user_id, row_lock=True)
        account = s.get(Account, user.user_id, with_for_update=True)
        if account is None:
            raise NotFound("no such account")
        birth = date.fromisoformat(cipher.decrypt("birth_date", account.birth_date_ct))
        rules = age.AgeRules(age.age_on(birth, today or date.today()))
        current = PrivacySettings.model_validate_json(
            cipher.decrypt("settings", account.settings_ct)
        ).held_to(rules)
        wanted = current.model_copy(update=change.model_dump(exclude_none=True))
        refused = wanted.refused_at(rules)
        if refused is not None:
            field, reason = refused
            raise SettingLocked(reason, field=field)
        account.settings_ct = cipher.encrypt("settings", wanted.model_dump_json())
        # Public by nature: whether the account is private decides who sees its videos.
        with platform.catalog_write(user.user_id) as c:
            c.execute(
                update(PublicProfile)
                .where(PublicProfile.user_id == user.user_id)
                .values(is_private=wanted.private_account, teen=rules.privacy_locked)
            )
    return wanted


# ---- deletion ----------------------------------------------------------------------------


def request_deletion(platform: Platform, user: CurrentUser) -> datetime:
    """Start the grace period: the profile is hidden, sessions end, logging in cancels."""
    scope = _scope(platform, user)
    due = now() + timedelta(days=platform.settings.deletion_grace_days)
    with scope.cell.db.transaction() as s:
        hold(s, user.user_id)
        s.execute(
            update(Account)
            .where(Account.user_id == user.user_id)
            .values(deletion_requested_at=now(), purge_after=due)
        )
        s.execute(delete(LoginSession).where(LoginSession.user_id == user.user_id))
        scope.cell.log.append(
            s,
            "account.deletion_requested",
            log_subject(s, scope),
            {"purge_after": due.isoformat()},
        )
    with platform.catalog.transaction() as c:
        c.execute(
            update(DirectoryEntry)
            .where(DirectoryEntry.user_id == user.user_id)
            .values(state="deleting")
        )
    return due


def cancel_deletion(platform: Platform, scope: UserScope) -> None:
    with scope.cell.db.transaction() as s:
        hold(s, scope.user_id)
        s.execute(
            update(Account)
            .where(Account.user_id == scope.user_id)
            .values(deletion_requested_at=None, purge_after=None)
        )
        scope.cell.log.append(s, "account.deletion_cancelled", log_subject(s, scope), {})
    with platform.catalog.transaction() as c:
        c.execute(
            update(DirectoryEntry)
            .where(DirectoryEntry.user_id == scope.user_id, DirectoryEntry.state == "deleting")
            .values(state="active")
        )


def purge_due(
    platform: Platform, *, at: datetime | None = None, regions: list[str] | None = None
) -> list[uuid.UUID]:
    """Purge accounts whose grace period is over. Idempotent: safe to rerun after a crash.

    Order: destroy the data key first (every copy becomes unreadable at once), then delete
    the region rows, then the catalog rows; a rerun finishes whatever a crash left.
    """
    from reelm.intercell.delivery import drop_from
    from reelm.media.videos import remove_all_videos
    from reelm.social.likes import remove_user
    from reelm.social.notify import drop_held_from

    moment = at or now()
    purged: list[uuid.UUID] = []
    for cell in platform.cells.values():
        if regions is not None and cell.region not in regions:
            continue
        before = len(purged)
        with cell.db.transaction() as s:
            due = list(
                s.scalars(
                    select(Account.user_id).where(
                        Account.purge_after <= moment,
                        # A copy being moved in, or a user being moved out, is the
                        # migration's to finish; the purge comes after, in the new home.
                        Account.migration.is_(None),
                    )
                )
            )
        for user_id in due:
            # Videos first (they need the key to find nothing more: their blobs go by key
            # name), then the key, then the account.
            remove_all_videos(platform, cell, user_id)
            remove_user(platform, cell, user_id)
            # Named while the key still opens the log keys; after it, nothing can.
            with cell.db.transaction() as s:
                named = subject_if_readable(s, cell.for_user(user_id, cell.region))
            cell.keys.destroy_data_key(user_id)
            with cell.db.transaction() as s:
                # Logged with the deletion of the rows, so a rerun after a crash logs it once.
                drop_held_from(s, user_id)
                drop_from(s, user_id)
                s.execute(delete(Account).where(Account.user_id == user_id))
                cell.log.append(s, "key.destroyed", named, {})
                cell.log.append(s, "account.purged", named, {})
            purged.append(user_id)
        # Finish catalog work a crash may have left: 'deleting' entries without an account.
        with platform.catalog.transaction() as c:
            pending = list(
                c.scalars(
                    select(DirectoryEntry.user_id).where(
                        DirectoryEntry.home_region == cell.region,
                        DirectoryEntry.state == "deleting",
                    )
                )
            )
        with cell.db.transaction() as s:
            alive = set(s.scalars(select(Account.user_id).where(Account.user_id.in_(pending))))
        for user_id in pending:
            if user_id in alive:
                continue
            cell.keys.destroy_data_key(user_id)
            with platform.catalog.transaction() as c:
                c.execute(delete(PublicProfile).where(PublicProfile.user_id == user_id))
                c.execute(
                    update(DirectoryEntry)
                    .where(DirectoryEntry.user_id == user_id)
                    .values(state="deleted")
                )
            log.info("purged account %s in %s", user_id, cell.region)
        if len(purged) > before:
            # The purged users' blind indexes are in every backup taken so far: retire the
            # key they were computed with (reelm.accounts.indexes).
            indexes.rotate(cell)
    return purged


# ---- sign-ups that never reached the catalog -----------------------------------------------

ORPHAN_AFTER = timedelta(minutes=10)
ORPHAN_WINDOW = timedelta(days=7)


def reconcile_sign_ups(
    platform: Platform, region: str, *, older_than: timedelta = ORPHAN_AFTER
) -> list[uuid.UUID]:
    """Take back the region's accounts whose sign-up never reached the catalog: the process
    committed the account, then died before the catalog's directory entry committed (sign-up
    writes the region first). Without a directory entry nobody can log in to them, yet their
    email's blind index would block a new sign-up; so, as a failed sign-up is, they are undone:
    key destroyed, rows deleted, both logged. Accounts younger than ``older_than`` are left
    alone (their sign-up may still be committing). Runs every 10 minutes per region."""
    cell = platform.cell(region)
    moment = now()
    with cell.db.transaction() as s:
        recent = list(
            s.scalars(
                select(Account.user_id).where(
                    Account.migration.is_(None),
                    Account.created_at < moment - older_than,
                    Account.created_at > moment - older_than - ORPHAN_WINDOW,
                )
            )
        )
    orphans: list[uuid.UUID] = []
    for start in range(0, len(recent), 1000):
        chunk = recent[start : start + 1000]
        with platform.catalog.transaction() as c:
            known = set(
                c.scalars(select(DirectoryEntry.user_id).where(DirectoryEntry.user_id.in_(chunk)))
            )
        orphans += [user_id for user_id in chunk if user_id not in known]
    for user_id in orphans:
        cell.keys.destroy_data_key(user_id)
        with cell.db.transaction() as s:
            s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
            s.execute(delete(Account).where(Account.user_id == user_id))
            # Named for no one: nobody ever had this account.
            cell.log.append(s, "account.creation_undone", None, {})
            cell.log.append(s, "key.destroyed", None, {})
        log.warning("undid sign-up %s in %s: it never reached the catalog", user_id, region)
    if orphans:
        indexes.rotate(cell)
    return orphans
