"""Sign-up, login and sessions. Services own their transactions."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from argon2.low_level import ARGON2_VERSION
from sqlalchemy import LargeBinary, Row, Select, Uuid, bindparam, delete, or_, select, text
from sqlalchemy.exc import IntegrityError

from reelm.accounts import age, handles, indexes, throttle
from reelm.accounts.errors import (
    BadCredentials,
    EmailTaken,
    HandleTaken,
    InvalidInput,
    NotAuthenticated,
    PhoneTaken,
    SessionElsewhere,
)
from reelm.accounts.logsubject import new_log_keys
from reelm.accounts.models import Account, DirectoryEntry, LoginSession, PublicProfile
from reelm.accounts.schemas import PrivacySettings, SignUp, normalise_email, normalise_phone
from reelm.bootstrap import Platform
from reelm.regions import routing
from reelm.regions.cell import Cell, UserScope
from reelm.regions.fence import hold
from reelm.search.text import profile_text

TOKEN_BYTES = 32
# How long a request waits for a user's migration switch before giving up.
MOVE_WAIT = 10.0


@dataclass(frozen=True)
class SignedUp:
    user_id: uuid.UUID
    handle: str
    home_region: str


@dataclass(frozen=True)
class CurrentUser:
    """Who is signed in. market comes from the account in the home region."""

    user_id: uuid.UUID
    home_region: str
    market: str
    handle: str
    token_hash: bytes


def password_hasher(platform: Platform) -> PasswordHasher:
    s = platform.settings
    return PasswordHasher(time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib)


def now() -> datetime:
    return datetime.now(UTC)


# ---- sign-up -------------------------------------------------------------------------------


def check_sign_up(
    platform: Platform, data: SignUp, today: date
) -> tuple[str, str, str | None, age.AgeRules]:
    """Validate what pydantic cannot: market policy, age, email and phone formats."""
    market = platform.policy.check_open(data.market)
    rules = age.rules_for(data.birth_date, today)
    try:
        email = normalise_email(data.email)
    except ValueError as exc:
        raise InvalidInput(f"email: {exc}", field="email") from None
    phone = None
    if data.phone:
        try:
            phone = normalise_phone(data.phone, market)
        except ValueError as exc:
            raise InvalidInput(f"phone: {exc}", field="phone") from None
    return market, email, phone, rules


def find_by_email(platform: Platform, email: str) -> tuple[Cell, uuid.UUID] | None:
    """Ask each cell, with its own blind-index key, whether it holds this email.

    Each cell answers from its own database only; the address is never stored or logged
    outside the home region.
    """
    for cell in platform.cells.values():
        with cell.db.transaction() as s:
            found = indexes.find(
                s,
                cell,
                "email",
                email,
                # A copy a migration is making ('incoming') or has left ('moved') is not
                # where the user lives: the other region answers for them.
                or_(Account.migration.is_(None), Account.migration == "frozen"),
            )
        if found is not None:
            return cell, found
    return None


_EMAIL_LOCK_SPACE = 0x7265  # first key of the advisory lock: "re"


def _email_lock_bucket(email: str) -> int:
    """16 bits of the address's hash: enough to keep unrelated sign-ups apart, far too few to
    tell anything about the address (the lock lives in the catalog, outside the home region)."""
    return int.from_bytes(hashlib.sha256(email.encode()).digest()[:2], "big")


def sign_up(
    platform: Platform, data: SignUp, *, today: date | None = None, reserved: bool = False
) -> SignedUp:
    """``reserved``: the operator making one of the platform's own accounts (the demo's staff
    account) may take a reserved handle; nobody signing up through the app may."""
    if not reserved:
        handles.check_claimable(data.handle)
    market, email, phone, rules = check_sign_up(platform, data, today or date.today())
    if find_by_email(platform, email) is not None:
        raise EmailTaken("an account with this email already exists", field="email")
    user_id = uuid.uuid4()
    password_hash = password_hasher(platform).hash(data.password)
    privacy = PrivacySettings.for_age(rules)
    # The catalog row is written first and held uncommitted: a racing sign-up for the same
    # handle waits on the unique index and then loses cleanly.
    with platform.catalog.sessions() as catalog:
        catalog.begin()
        # Each region's unique index only sees its own accounts, so two sign-ups with one email
        # in two regions would both pass it. They queue on a catalog lock (held until this
        # transaction ends) and the loser finds the winner's account when it checks again.
        catalog.execute(
            text("SELECT pg_advisory_xact_lock(:space, :bucket)"),
            {"space": _EMAIL_LOCK_SPACE, "bucket": _email_lock_bucket(email)},
        )
        if find_by_email(platform, email) is not None:
            raise EmailTaken("an account with this email already exists", field="email")
        # The market's route, read under its lock (held until this sign-up commits): a region
        # migration moving the market waits for us, so we are never left behind unseen.
        routing.lock_market(catalog, market, exclusive=False)
        home = routing.home_region(platform, market, catalog)
        cell = platform.cell(home)
        catalog.add(DirectoryEntry(user_id=user_id, home_region=home))
        catalog.flush()
        catalog.add(
            PublicProfile(
                user_id=user_id,
                handle=data.handle,
                handle_key=handles.handle_key(data.handle),
                display_name=data.display_name,
                bio="",
                links={},
                is_private=privacy.private_account,
                teen=rules.privacy_locked,
                search_text=profile_text(data.handle, data.display_name, ""),
            )
        )
        try:
            catalog.flush()
        except IntegrityError:
            raise HandleTaken(
                f"@{data.handle} is taken, or reads too much like a handle that is",
                field="handle",
            ) from None
        scope = cell.for_user(user_id, home)
        _create_account(scope, market, email, phone, data.birth_date, password_hash, privacy)
        try:
            catalog.commit()
        except Exception:
            _undo_account(scope)
            raise
    platform.wrote_catalog(user_id)  # their first pages must find them (read-your-writes)
    return SignedUp(user_id, data.handle, home)


def sign_up_from(platform: Platform, data: SignUp, client: str) -> SignedUp:
    """`sign_up` for a visitor at the address `client`.

    "An account with this email already exists" tells what a failed log-in never does: that an
    address has an account. Each such answer is counted against the address's log-in budget
    (`login_rate`), so sign-up is no cheaper a way to probe addresses than log-in; over it the
    visitor gets 429, not the answer."""
    try:
        return sign_up(platform, data)
    except EmailTaken:
        platform.rate_limits.hit("login", client)
        raise


def _create_account(
    scope: UserScope,
    market: str,
    email: str,
    phone: str | None,
    birth_date: date,
    password_hash: str,
    privacy: PrivacySettings,
) -> None:
    cell = scope.cell
    cipher = scope.cipher(create=True)
    # From here on, any failure must not leave the new data key behind.
    try:
        log_keys_ct, log_keys = new_log_keys(cipher)
        with cell.db.transaction() as s:
            indexed = indexes.for_writing(s, cell, email, phone)
            # The unique indexes see one epoch at a time: a phone indexed under an older
            # epoch (a rotation under way) is looked for under every live one.
            if phone and indexes.find(s, cell, "phone", phone) is not None:
                raise PhoneTaken("an account with this phone number already exists", field="phone")
            s.add(
                Account(
                    user_id=scope.user_id,
                    market=market,
                    email_ct=cipher.encrypt("email", email),
                    email_bidx=indexed.email_bidx,
                    phone_ct=cipher.encrypt_optional("phone", phone),
                    phone_bidx=indexed.phone_bidx,
                    index_epoch=indexed.index_epoch,
                    birth_date_ct=cipher.encrypt("birth_date", birth_date.isoformat()),
                    password_ct=cipher.encrypt("password", password_hash),
                    settings_ct=cipher.encrypt("settings", privacy.model_dump_json()),
                    log_keys_ct=log_keys_ct,
                )
            )
            # The residency event commits with the account, or not at all.
            cell.log.append(s, "account.created", log_keys.current, {})
    except IntegrityError as exc:
        cell.keys.destroy_data_key(scope.user_id)
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None) or ""
        if "phone" in constraint:
            raise PhoneTaken(
                "an account with this phone number already exists", field="phone"
            ) from None
        raise EmailTaken("an account with this email already exists", field="email") from None
    except Exception:
        cell.keys.destroy_data_key(scope.user_id)
        raise


def _undo_account(scope: UserScope) -> None:
    """The catalog refused the sign-up after the region committed: take the account back."""
    scope.cell.keys.destroy_data_key(scope.user_id)
    with scope.cell.db.transaction() as s:
        s.execute(delete(Account).where(Account.user_id == scope.user_id))
        # Names no one: the account never existed for its user (nor can it be tied to them).
        scope.cell.log.append(s, "account.creation_undone", None, {})


# ---- login and sessions --------------------------------------------------------------------


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _directory(platform: Platform, user_id: uuid.UUID) -> DirectoryEntry | None:
    with platform.catalog.transaction() as s:
        return s.get(DirectoryEntry, user_id)


def identity_key(identifier: str) -> str:
    """One rate-limit key per account, however its handle or email is spelled
    (case, full-width letters, confusables, a leading '@')."""
    identifier = identifier.strip()[:254]
    try:
        if "@" in identifier.lstrip("@"):
            return "email:" + normalise_email(identifier)
        return "handle:" + handles.handle_key(handles.normalise(identifier))
    except (ValueError, InvalidInput):
        return "other:" + identifier.casefold()


def resolve_identifier(platform: Platform, identifier: str) -> tuple[Cell, uuid.UUID] | None:
    identifier = identifier.strip()
    if "@" in identifier.lstrip("@"):
        try:
            return find_by_email(platform, normalise_email(identifier))
        except ValueError:
            return None
    try:
        query = handles.owner_lookup(handles.normalise(identifier))
    except InvalidInput:
        return None
    with platform.catalog.transaction() as s:
        row = s.execute(
            query.add_columns(DirectoryEntry.home_region).join(
                DirectoryEntry, DirectoryEntry.user_id == PublicProfile.user_id
            )
        ).first()
    if row is None:
        return None
    return platform.cell(row.home_region), row.user_id


WRONG_CREDENTIALS = "wrong handle, email or password"


@cache
def _dummy_hash(time_cost: int, memory_cost: int, parallelism: int, salt: int, digest: int) -> str:
    """An argon2id hash with today's parameters that no password matches: random salt and random
    digest, written down rather than computed (verifying it costs exactly what verifying a real
    hash does, and making it costs nothing)."""

    def random_b64(size: int) -> str:
        return base64.b64encode(secrets.token_bytes(size)).decode().rstrip("=")

    return (
        f"$argon2id$v={ARGON2_VERSION}$m={memory_cost},t={time_cost},p={parallelism}"
        f"${random_b64(salt)}${random_b64(digest)}"
    )


def _refuse(hasher: PasswordHasher, password: str) -> NoReturn:
    """Refuse as a wrong password is refused, at the same cost (one argon2 run), so that the
    time taken does not tell whether the account exists."""
    dummy = _dummy_hash(
        hasher.time_cost, hasher.memory_cost, hasher.parallelism, hasher.salt_len, hasher.hash_len
    )
    with contextlib.suppress(VerificationError):
        hasher.verify(dummy, password)
    raise BadCredentials(WRONG_CREDENTIALS)


def log_in(
    platform: Platform,
    identifier: str,
    password: str,
    *,
    user_agent: str = "",
    visitor: throttle.Visitor | None = None,
) -> tuple[str, CurrentUser]:
    """Check the password and open a session; signing in cancels a pending deletion.

    A `visitor` (the pages and the API give one; internal callers do not) is throttled before
    the password is checked: see `reelm.accounts.throttle`."""
    hasher = password_hasher(platform)
    found = resolve_identifier(platform, identifier)
    if visitor is not None:
        throttle.admit(platform, visitor, identity_key(identifier), found[1] if found else None)
    if found is None:
        _refuse(hasher, password)
    _, user_id = found
    deadline = time.monotonic() + MOVE_WAIT
    while True:
        # The directory says where the user lives (an email lookup may have met a copy in
        # transit); a user being moved is waited for here, before the password is checked,
        # rather than failing the session's write and replaying the whole log-in.
        entry = _directory(platform, user_id)
        if entry is None or entry.state == "deleted":
            _refuse(hasher, password)
        cell = platform.cell(entry.home_region)
        scope = cell.for_user(user_id, entry.home_region)
        with cell.db.transaction() as s:
            account = s.get(Account, user_id)
        moving = account is not None and account.migration in ("frozen", "moved")
        if not moving or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if account is None:
        _refuse(hasher, password)
    cipher = scope.cipher()
    stored = cipher.decrypt("password", account.password_ct)
    try:
        hasher.verify(stored, password)
    except VerificationError:
        raise BadCredentials(WRONG_CREDENTIALS) from None
    if account.deletion_requested_at is not None:
        from reelm.accounts.lifecycle import cancel_deletion

        cancel_deletion(platform, scope)
    token = new_token(entry.home_region)
    token_hash = _hash_token(token)
    with cell.db.transaction() as s:
        rehash = hasher.check_needs_rehash(stored)
        hold(s, user_id, row_lock=rehash)
        if rehash:
            row = s.get(Account, user_id, with_for_update=True)
            if row is not None:
                row.password_ct = cipher.encrypt("password", hasher.hash(password))
        s.add(
            LoginSession(
                token_hash=token_hash,
                user_id=user_id,
                user_agent_ct=cipher.encrypt("user_agent", user_agent[:400]),
                expires_at=now() + timedelta(days=platform.settings.session_days),
            )
        )
    handle = public_handle(platform, user_id)
    return token, CurrentUser(user_id, entry.home_region, account.market, handle, token_hash)


def public_handle(platform: Platform, user_id: uuid.UUID) -> str:
    with platform.catalog.transaction() as s:
        return s.scalar(select(PublicProfile.handle).where(PublicProfile.user_id == user_id)) or ""


# A token made before tokens named their region began with the user's id (32 hex digits);
# region codes are at most 16 characters, so the two forms cannot be mistaken for each other.
_LEGACY_PREFIX = re.compile(r"[0-9a-f]{32}")
_MAX_TOKEN = 200


def new_token(region: str) -> str:
    """A session token: the home region's code in clear (for the edge to route by; nothing
    personal), then the secret. Only its hash is stored, in that region's database."""
    return f"{region}.{secrets.token_urlsafe(TOKEN_BYTES)}"


def authenticate(platform: Platform, token: str) -> CurrentUser:
    """The user behind a session token, or NotAuthenticated.

    The token names its region. A region this process does not hold raises SessionElsewhere
    before anything is read or decrypted: the web app and the API send the request to that
    region's cell. Tokens issued before tokens named their region (user id first) are looked
    up through the directory, as they always were, until they expire.

    A session survives a region migration: its hash moves with the account. A request that
    read the directory just before the switch may find the source's copy marked 'moved' (or
    already purged): it reads the directory again and follows the user to the new home."""
    if len(token) > _MAX_TOKEN:
        raise NotAuthenticated("not signed in")
    prefix, _, secret = token.partition(".")
    if not secret:
        raise NotAuthenticated("not signed in")
    if _LEGACY_PREFIX.fullmatch(prefix):
        return _authenticate_legacy(platform, uuid.UUID(hex=prefix), token)
    if prefix not in platform.regions:
        raise NotAuthenticated("not signed in")
    if not platform.is_local(prefix):
        raise SessionElsewhere(prefix, platform.cells)
    token_hash = _hash_token(token)
    directory, _ = _gate_statements()
    # Where the session may be: the token's region, then (single-machine mode) every other
    # region this process holds, where a migration may have taken the session.
    regions = [prefix, *(r for r in platform.cells if r != prefix)]
    deadline = time.monotonic() + MOVE_WAIT
    while True:
        found, moved = _find_session(platform, regions, token_hash)
        if found is not None:
            with platform.catalog.rows() as c:
                entry = c.execute(directory, {"user": found[1].user_id}).first()
            if entry is None or entry.state != "active":
                raise NotAuthenticated("not signed in")
            if entry.home_region == found[0]:
                break
        elif moved is None:
            raise NotAuthenticated("not signed in")
        elif (home := _directory(platform, moved)) is None or not platform.is_local(
            home.home_region
        ):
            # The account has left for a cell this process is not: the session went with it,
            # under a token that still names this region (the edge would send it back here).
            raise NotAuthenticated("your account has moved to another region; sign in again")
        # Found where the directory no longer points, or only a copy a migration has left: the
        # switch is under way; look again for a while.
        if time.monotonic() > deadline:
            raise NotAuthenticated("not signed in")
        time.sleep(0.05)
    region, row = found
    platform.cell(region).for_user(row.user_id, entry.home_region)  # the guard
    if row.expires_at <= now():
        raise NotAuthenticated("your session has ended; sign in again")
    return CurrentUser(row.user_id, region, row.market, entry.handle or "", token_hash)


_SessionRow = Row[uuid.UUID, datetime, str, str | None]


def _find_session(
    platform: Platform, regions: list[str], token_hash: bytes
) -> tuple[tuple[str, _SessionRow] | None, uuid.UUID | None]:
    """The first of ``regions`` holding the session, and its row; else the user of a copy a
    migration has left ('moved'), if one was met."""
    moved = None
    for region in regions:
        with platform.cell(region).db.rows() as r:
            row = r.execute(_session_by_token(), {"token": token_hash}).first()
        if row is None:
            continue
        if row.migration == "moved":
            moved = row.user_id
            continue
        return (region, row), None
    return None, moved


def _authenticate_legacy(platform: Platform, user_id: uuid.UUID, token: str) -> CurrentUser:
    """A token of the old form, ``<user id hex>.<secret>``: found through the directory."""
    token_hash = _hash_token(token)
    deadline = time.monotonic() + MOVE_WAIT
    directory, session = _gate_statements()
    while True:
        with platform.catalog.rows() as c:  # the directory entry and handle at once
            entry = c.execute(directory, {"user": user_id}).first()
        if entry is None or entry.state != "active":
            raise NotAuthenticated("not signed in")
        if not platform.is_local(entry.home_region):
            raise SessionElsewhere(entry.home_region, platform.cells)
        scope = platform.cell(entry.home_region).for_user(user_id, entry.home_region)
        with scope.cell.db.rows() as r:
            row = r.execute(session, {"user": user_id, "token": token_hash}).first()
        moved = row is not None and row.migration == "moved"
        if row is None or moved:
            again = _directory(platform, user_id)
            if (moved or (again is not None and again.epoch != entry.epoch)) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
                continue
        break
    if row is None or row.expires_at <= now():
        raise NotAuthenticated("your session has ended; sign in again")
    return CurrentUser(user_id, entry.home_region, row.market, entry.handle or "", token_hash)


@cache
def _session_by_token() -> Select[uuid.UUID, datetime, str, str | None]:
    """The session a token's hash names, with its account's market and migration state (the
    hash is the table's primary key)."""
    return (
        select(LoginSession.user_id, LoginSession.expires_at, Account.market, Account.migration)
        .join(Account, Account.user_id == LoginSession.user_id)
        .where(LoginSession.token_hash == bindparam("token", type_=LargeBinary()))
    )


@cache
def _gate_statements() -> tuple[
    Select[str, str, int, str | None], Select[datetime, str, str | None]
]:
    """What `authenticate` reads, built once: the directory entry with the handle (parameter
    `user`), then an old-form token's session (`user`, `token`) in the home region."""
    user = bindparam("user", type_=Uuid())
    directory = (
        select(
            DirectoryEntry.state,
            DirectoryEntry.home_region,
            DirectoryEntry.epoch,
            PublicProfile.handle,
        )
        .outerjoin(PublicProfile, PublicProfile.user_id == DirectoryEntry.user_id)
        .where(DirectoryEntry.user_id == user)
    )
    session = (
        select(LoginSession.expires_at, Account.market, Account.migration)
        .join(Account, Account.user_id == LoginSession.user_id)
        .where(
            LoginSession.token_hash == bindparam("token", type_=LargeBinary()),
            LoginSession.user_id == user,
        )
    )
    return directory, session


def log_out(platform: Platform, user: CurrentUser) -> None:
    cell = platform.cell(user.home_region)
    cell.for_user(user.user_id, user.home_region)
    with cell.db.transaction() as s:
        hold(s, user.user_id)
        s.execute(delete(LoginSession).where(LoginSession.token_hash == user.token_hash))
