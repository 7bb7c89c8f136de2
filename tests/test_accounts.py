"""The accounts domain at service level, on real PostgreSQL: sign-up, age rules, handle and email
ownership (sequential and racing), login, sessions, deletion and purge."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.exc import OperationalError

from reelm.accounts import handles, lifecycle, service
from reelm.accounts.errors import (
    AgeRestricted,
    BadCredentials,
    EmailTaken,
    HandleTaken,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PhoneTaken,
    SettingLocked,
)
from reelm.accounts.models import Account, DirectoryEntry, LoginSession, PublicProfile
from reelm.accounts.schemas import Links, PrivacyUpdate, ProfileUpdate, SignUp
from reelm.accounts.service import SignedUp
from reelm.bootstrap import Platform
from reelm.regions.policy import MarketBlocked
from tests.conftest import PASSWORD, unique_handle

EXPECTED_REGION = {"US": "us", "CA": "ca", "AU": "au", "NZ": "nz", "FR": "sg"}


# ---- helpers -------------------------------------------------------------------------------


def born(years: int, days: int = 0, today: date | None = None) -> date:
    """The birth date of someone exactly `years` old on `today`, moved `days` later.

    29 February becomes 28 February in a common year; the person is still `years` old.
    """
    today = today or date.today()
    try:
        birthday = today.replace(year=today.year - years)
    except ValueError:
        birthday = today.replace(year=today.year - years, day=28)
    return birthday + timedelta(days=days)


def sign_up_data(market: str = "US", **fields: Any) -> SignUp:
    handle = fields.pop("handle", None) or unique_handle("acc")
    values: dict[str, Any] = {
        "handle": handle,
        "display_name": "Test User",
        "email": f"{handle}@example.com",
        "password": PASSWORD,
        "birth_date": date(1990, 1, 1),
        "market": market,
        **fields,
    }
    return SignUp(**values)


def counts(platform: Platform) -> dict[str, int]:
    """Rows that a sign-up writes, and data keys, everywhere."""
    found: dict[str, int] = {}
    with platform.catalog.transaction() as s:
        found["catalog.directory"] = s.scalar(select(func.count()).select_from(DirectoryEntry)) or 0
        found["catalog.profiles"] = s.scalar(select(func.count()).select_from(PublicProfile)) or 0
    for region, cell in platform.cells.items():
        with cell.db.transaction() as s:
            found[f"{region}.accounts"] = s.scalar(select(func.count()).select_from(Account)) or 0
        found[f"{region}.keys"] = len(list((cell.keys.directory / "users").glob("*.key")))
    return found


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


@pytest.fixture
def minted_ids(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """Every user id sign_up draws, so that losers of a race can be looked for afterwards."""
    minted: list[uuid.UUID] = []
    lock = threading.Lock()
    real = uuid.uuid4

    def recording() -> uuid.UUID:
        value = real()
        with lock:
            minted.append(value)
        return value

    monkeypatch.setattr(service.uuid, "uuid4", recording)
    return minted


def assert_no_trace(platform: Platform, user_id: uuid.UUID) -> None:
    """Nothing of user_id anywhere: no catalog row, no account, no data key."""
    with platform.catalog.transaction() as s:
        assert s.get(DirectoryEntry, user_id) is None
        assert s.get(PublicProfile, user_id) is None
    for cell in platform.cells.values():
        with cell.db.transaction() as s:
            assert s.get(Account, user_id) is None
        assert not cell.keys.has_data_key(user_id), f"leftover data key in {cell.region}"


def race(n: int, attempt: Callable[[int], SignedUp]) -> tuple[list[SignedUp], list[Exception]]:
    """Run n attempts at once (they start together) and sort the outcomes."""
    barrier = threading.Barrier(n)

    def run(i: int) -> SignedUp | Exception:
        barrier.wait()
        try:
            return attempt(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(run, range(n)))
    wins = [o for o in outcomes if isinstance(o, SignedUp)]
    losses = [o for o in outcomes if isinstance(o, Exception)]
    return wins, losses


def current_user(platform: Platform, identifier: str) -> service.CurrentUser:
    return service.log_in(platform, identifier, PASSWORD)[1]


# ---- sign-up and residency -----------------------------------------------------------------


@pytest.mark.parametrize(("market", "region"), sorted(EXPECTED_REGION.items()))
def test_sign_up_writes_catalog_and_home_region_only(
    platform: Platform, market: str, region: str
) -> None:
    before = counts(platform)
    done = service.sign_up(platform, sign_up_data(market))
    assert done.home_region == region
    assert delta(before, counts(platform)) == {
        "catalog.directory": 1,
        "catalog.profiles": 1,
        f"{region}.accounts": 1,
        f"{region}.keys": 1,
    }
    assert platform.cell(region).keys.has_data_key(done.user_id)


@pytest.mark.parametrize("market", ["IN", "in", "CN"])
def test_blocked_market_cannot_sign_up(platform: Platform, market: str) -> None:
    before = counts(platform)
    with pytest.raises(MarketBlocked) as caught:
        service.sign_up(platform, sign_up_data(market))
    assert caught.value.market == market.upper() and caught.value.reason
    assert counts(platform) == before


# ---- age rules -----------------------------------------------------------------------------


def test_under_13_refused_and_nothing_written(platform: Platform) -> None:
    today = date(2024, 2, 29)  # a leap day: the hardest birthday arithmetic
    before = counts(platform)
    with pytest.raises(AgeRestricted) as caught:
        service.sign_up(platform, sign_up_data(birth_date=born(13, 1, today)), today=today)
    assert caught.value.field == "birth_date"
    with pytest.raises(AgeRestricted):
        service.sign_up(platform, sign_up_data(birth_date=born(8, 0, today)), today=today)
    assert counts(platform) == before
    # Thirteen today is old enough.
    done = service.sign_up(platform, sign_up_data(birth_date=born(13, 0, today)), today=today)
    assert done.home_region == "us"


@pytest.mark.parametrize(
    "birth_date",
    # Collected before a test run that may cross midnight: "the future" is a year away.
    [date(1, 1, 1), date(1890, 1, 1), date(9999, 12, 31), date.today() + timedelta(days=400)],
)
def test_implausible_birth_dates_refused(platform: Platform, birth_date: date) -> None:
    before = counts(platform)
    with pytest.raises(InvalidInput) as caught:
        service.sign_up(platform, sign_up_data(birth_date=birth_date))
    assert caught.value.field == "birth_date"
    assert counts(platform) == before


def test_13_to_15_private_without_dms_and_locked(platform: Platform) -> None:
    data = sign_up_data(birth_date=born(14, -100))
    service.sign_up(platform, data)
    user = current_user(platform, data.handle)
    me = lifecycle.get_me(platform, user)
    assert me.profile.is_private and me.privacy_locked
    assert me.privacy.private_account and me.privacy.direct_messages == "no_one"
    for change, field in [
        (PrivacyUpdate(private_account=False), "private_account"),
        (PrivacyUpdate(direct_messages="followers"), "direct_messages"),
        (PrivacyUpdate(direct_messages="everyone"), "direct_messages"),
    ]:
        with pytest.raises(SettingLocked) as caught:
            lifecycle.update_privacy(platform, user, change)
        assert caught.value.field == field
    # Other settings stay theirs to choose.
    assert lifecycle.update_privacy(platform, user, PrivacyUpdate(comments="no_one")).comments == (
        "no_one"
    )
    me = lifecycle.get_me(platform, user)
    assert me.privacy.private_account and me.privacy.direct_messages == "no_one"
    assert me.privacy.comments == "no_one" and me.profile.is_private


def test_lock_lifts_on_16th_birthday(platform: Platform) -> None:
    today = date(2027, 3, 1)
    data = sign_up_data(birth_date=born(16, 1, today))  # turns 16 tomorrow
    service.sign_up(platform, data, today=today)
    user = current_user(platform, data.handle)
    with pytest.raises(SettingLocked):
        lifecycle.update_privacy(platform, user, PrivacyUpdate(private_account=False), today=today)
    tomorrow = today + timedelta(days=1)
    assert not lifecycle.get_me(platform, user, today=tomorrow).privacy_locked
    changed = lifecycle.update_privacy(
        platform, user, PrivacyUpdate(private_account=False), today=tomorrow
    )
    assert not changed.private_account
    assert not lifecycle.get_me(platform, user).profile.is_private


def test_16_17_private_by_default_but_free_to_change(platform: Platform) -> None:
    data = sign_up_data("CA", birth_date=born(17, -30))
    service.sign_up(platform, data)
    user = current_user(platform, data.handle)
    me = lifecycle.get_me(platform, user)
    assert me.privacy.private_account and me.profile.is_private and not me.privacy_locked
    assert me.privacy.direct_messages == "followers"
    lifecycle.update_privacy(
        platform, user, PrivacyUpdate(private_account=False, direct_messages="everyone")
    )
    me = lifecycle.get_me(platform, user)
    assert not me.privacy.private_account and me.privacy.direct_messages == "everyone"
    assert not lifecycle.public_profile(platform, data.handle).is_private


def test_adults_public_by_default(platform: Platform) -> None:
    data = sign_up_data("NZ", birth_date=born(18))  # 18 today
    service.sign_up(platform, data)
    me = lifecycle.get_me(platform, current_user(platform, data.handle))
    assert not me.privacy.private_account and not me.profile.is_private
    assert not me.privacy_locked and me.privacy.direct_messages == "followers"
    assert me.birth_date == born(18) and me.market == "NZ"


# ---- handle and email ownership ------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("maya{n}", "MAYA{n}"),
        ("maya{n}", "ＭＡＹＡ{n}"),  # full-width
        ("alice{n}", "a1ice{n}"),
        ("maya{n}", "rnaya{n}"),
        ("bob{n}", "b0b{n}"),
        ("wave{n}", "vvave{n}"),
        ("maya{n}", "@Maya{n}"),
        # issue #12: separators and the digits read as letters
        ("maya.skates{n}", "maya_skates{n}"),
        ("maya.skates{n}", "mayaskates{n}"),
        ("maya.skates{n}", "maya.5kates{n}"),
        ("tofu_chef{n}", "t0fu.chef{n}"),
    ],
)
def test_look_alike_handles_lose_cleanly(platform: Platform, first: str, second: str) -> None:
    n = uuid.uuid4().hex[:6].replace("0", "x").replace("1", "y")
    service.sign_up(platform, sign_up_data(handle=first.format(n=n), email=f"a{n}@example.com"))
    before = counts(platform)
    with pytest.raises(HandleTaken) as caught:
        service.sign_up(
            platform, sign_up_data("AU", handle=second.format(n=n), email=f"b{n}@example.com")
        )
    assert caught.value.field == "handle"
    assert counts(platform) == before


@pytest.mark.parametrize("handle", ["adm1n", "reelm_support", "reelm.support", "m0derator"])
def test_reserved_names_are_refused_at_sign_up(platform: Platform, handle: str) -> None:
    before = counts(platform)
    with pytest.raises(InvalidInput, match="reserved") as caught:
        service.sign_up(platform, sign_up_data(handle=handle, email=f"r{uuid.uuid4().hex}@x.org"))
    assert caught.value.field == "handle"
    assert counts(platform) == before


def test_look_alike_lookups_find_the_owner(platform: Platform) -> None:
    n = uuid.uuid4().hex[:6].replace("0", "x").replace("1", "y")
    owner = service.sign_up(platform, sign_up_data(handle=f"maya.skates{n}"))
    for spelling in (f"maya.skates{n}", f"@Maya_Skates{n}", f"mayaskates{n}"):
        assert lifecycle.public_profile(platform, spelling).user_id == owner.user_id
        assert current_user(platform, spelling).user_id == owner.user_id


def test_handle_keys_of_existing_profiles_are_rebuilt(
    platform_factory: Callable[..., Platform],
) -> None:
    """Catalog migration c0013: look-alikes already in the catalog keep their handles (the
    oldest keeps the key, the others are found by their exact handle); no new one gets in."""
    from alembic import command
    from sqlalchemy import text

    from reelm.storage.migrate import alembic_config

    platform = platform_factory()
    n = uuid.uuid4().hex[:6].replace("0", "x").replace("1", "y")
    first = service.sign_up(platform, sign_up_data(handle=f"maya.skates{n}"))
    config = alembic_config("catalog")
    with platform.catalog.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "c0013-1")
    later: list[uuid.UUID] = []
    with platform.catalog.engine.begin() as conn:
        # What the old key let in beside it.
        for i, handle in enumerate((f"maya_skates{n}", f"mayaskates{n}")):
            user_id = uuid.uuid4()
            later.append(user_id)
            conn.execute(
                text(
                    "INSERT INTO directory (user_id, home_region, epoch, state, created_at)"
                    " VALUES (:u, 'us', 1, 'active', now())"
                ),
                {"u": user_id},
            )
            conn.execute(
                text(
                    "INSERT INTO profiles (user_id, handle, handle_key, display_name, bio, links,"
                    " is_private, teen, search_text, created_at, updated_at) VALUES (:u, :h, :h,"
                    " 'Maya', '', '{}', false, false, '', now() + make_interval(secs => :i + 1),"
                    " now())"
                ),
                {"u": user_id, "h": handle, "i": i},
            )
    with platform.catalog.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    with platform.catalog.transaction() as c:
        keys = dict(c.execute(select(PublicProfile.user_id, PublicProfile.handle_key)).all())
    assert keys[first.user_id] == handles.handle_key(f"maya.skates{n}")
    assert keys[later[0]] is None and keys[later[1]] is None
    assert lifecycle.public_profile(platform, f"maya_skates{n}").user_id == later[0]
    assert lifecycle.public_profile(platform, f"maya.5kates{n}").user_id == first.user_id
    with pytest.raises(HandleTaken):
        service.sign_up(platform, sign_up_data(handle=f"maya__skates{n}"))


def test_other_scripts_are_refused_not_confused() -> None:
    with pytest.raises(InvalidInput, match="letters a-z"):
        sign_up_data(handle="m\u0430ya")  # Cyrillic a (U+0430)


def test_duplicate_email_any_case_any_region(platform: Platform) -> None:
    email = f"{unique_handle('mail')}@Example.com"
    service.sign_up(platform, sign_up_data("US", email=email))
    before = counts(platform)
    for market, variant in [("US", email.upper()), ("CA", email.lower()), ("FR", email)]:
        with pytest.raises(EmailTaken) as caught:
            service.sign_up(platform, sign_up_data(market, email=variant))
        assert caught.value.field == "email"
    assert counts(platform) == before


def test_duplicate_phone_is_named_as_such(platform: Platform) -> None:
    service.sign_up(platform, sign_up_data("FR", phone="+33 1 42 68 53 00"))
    before = counts(platform)
    with pytest.raises(PhoneTaken) as caught:
        service.sign_up(platform, sign_up_data("FR", phone="01 42 68 53 00"))
    assert caught.value.field == "phone"
    assert counts(platform) == before


def test_handle_race_has_one_winner_and_no_orphans(
    platform: Platform, minted_ids: list[uuid.UUID]
) -> None:
    handle = unique_handle("race")
    markets = ["US", "CA", "AU", "NZ", "FR", "US", "CA", "JP"]
    before = counts(platform)
    wins, losses = race(
        8,
        lambda i: service.sign_up(
            platform, sign_up_data(markets[i], handle=handle, email=f"{handle}.{i}@example.com")
        ),
    )
    assert len(wins) == 1, losses
    assert len(losses) == 7 and all(isinstance(e, HandleTaken) for e in losses), losses
    winner = wins[0]
    region = winner.home_region
    assert delta(before, counts(platform)) == {
        "catalog.directory": 1,
        "catalog.profiles": 1,
        f"{region}.accounts": 1,
        f"{region}.keys": 1,
    }
    assert platform.cell(region).keys.has_data_key(winner.user_id)
    losers = [u for u in minted_ids if u != winner.user_id]
    assert len(losers) == 7
    for loser in losers:
        assert_no_trace(platform, loser)


def test_look_alike_handle_race(platform: Platform, minted_ids: list[uuid.UUID]) -> None:
    n = uuid.uuid4().hex[:6].replace("0", "x").replace("1", "y")
    variants = [
        f"alice{n}",
        f"a1ice{n}",
        f"ALICE{n}",
        f"ａｌｉｃｅ{n}",
        f"a1ICE{n}",
        f"@alice{n}",
    ]
    before = counts(platform)
    wins, losses = race(
        len(variants),
        lambda i: service.sign_up(
            platform, sign_up_data(handle=variants[i], email=f"alice{n}.{i}@example.com")
        ),
    )
    assert len(wins) == 1 and all(isinstance(e, HandleTaken) for e in losses), losses
    assert sum(delta(before, counts(platform)).values()) == 4  # directory, profile, account, key
    for loser in (u for u in minted_ids if u != wins[0].user_id):
        assert_no_trace(platform, loser)


@pytest.mark.parametrize(
    "markets",
    [["US"] * 8, ["US", "CA", "AU", "NZ", "FR", "US", "CA", "BR"]],
    ids=["one-region", "across-regions"],
)
def test_email_race_has_one_winner(
    platform: Platform, minted_ids: list[uuid.UUID], markets: list[str]
) -> None:
    base = unique_handle("mailrace")
    emails = [f"{base}@example.com", f"{base.upper()}@EXAMPLE.COM"]
    before = counts(platform)
    wins, losses = race(
        8,
        lambda i: service.sign_up(
            platform,
            sign_up_data(markets[i], handle=f"{base}_{i}", email=emails[i % 2]),
        ),
    )
    assert len(wins) == 1, f"{len(wins)} accounts share one email: {wins}"
    assert all(isinstance(e, EmailTaken) for e in losses), losses
    region = wins[0].home_region
    assert delta(before, counts(platform)) == {
        "catalog.directory": 1,
        "catalog.profiles": 1,
        f"{region}.accounts": 1,
        f"{region}.keys": 1,
    }
    for loser in (u for u in minted_ids if u != wins[0].user_id):
        assert_no_trace(platform, loser)
    # The one account answers to the address in any case.
    assert current_user(platform, emails[1].lower()).user_id == wins[0].user_id


# ---- failures in the middle of a sign-up ---------------------------------------------------


class Faults:
    """Make one database fail some statements (or its commits) until disarmed."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.installed: list[tuple[Any, str, Any]] = []

    def arm(self, database: str, prefix: str) -> None:
        engine = (
            self.platform.catalog.engine
            if database == "catalog"
            else self.platform.cell(database).db.engine
        )
        if prefix == "COMMIT":

            def on_commit(conn: Any) -> None:
                raise OperationalError("COMMIT", None, Exception("server closed the connection"))

            event.listen(engine, "commit", on_commit)
            self.installed.append((engine, "commit", on_commit))
            return

        def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith(prefix):
                raise OperationalError(statement, None, Exception("server closed the connection"))

        event.listen(engine, "before_cursor_execute", on_execute)
        self.installed.append((engine, "before_cursor_execute", on_execute))

    def disarm(self) -> None:
        while self.installed:
            engine, name, fn = self.installed.pop()
            event.remove(engine, name, fn)
            # A connection that failed mid-commit is not fit for reuse: start the pool afresh.
            engine.dispose()


@pytest.fixture
def faults(platform: Platform) -> Iterator[Faults]:
    f = Faults(platform)
    yield f
    f.disarm()


def test_region_failure_mid_sign_up_leaves_nothing(
    platform: Platform, faults: Faults, minted_ids: list[uuid.UUID]
) -> None:
    before = counts(platform)
    faults.arm("ca", "INSERT INTO ACCOUNTS")
    with pytest.raises(OperationalError):
        service.sign_up(platform, sign_up_data("CA"))
    faults.disarm()
    assert counts(platform) == before
    assert len(minted_ids) == 1
    assert_no_trace(platform, minted_ids[0])


def test_catalog_commit_failure_undoes_the_region_account(
    platform: Platform, faults: Faults, minted_ids: list[uuid.UUID]
) -> None:
    before = counts(platform)
    faults.arm("catalog", "COMMIT")
    with pytest.raises(OperationalError):
        service.sign_up(platform, sign_up_data("AU"))
    faults.disarm()
    assert len(minted_ids) == 1
    assert_no_trace(platform, minted_ids[0])
    assert counts(platform) == before


# ---- login and sessions --------------------------------------------------------------------


def test_log_in_by_handle_or_email(platform: Platform) -> None:
    data = sign_up_data("AU", handle=unique_handle("Login"), email="Mixed.Case@Example.COM")
    done = service.sign_up(platform, data)
    for identifier in [
        data.handle,
        data.handle.upper(),
        f"@{data.handle}",
        "mixed.case@example.com",
    ]:
        token, user = service.log_in(platform, identifier, PASSWORD)
        assert user.user_id == done.user_id and user.home_region == "au" and user.market == "AU"
        assert service.authenticate(platform, token).user_id == done.user_id
    for identifier, password in [
        (data.handle, "wrong password"),
        ("nobody_here_at_all", PASSWORD),
        ("nobody@example.com", PASSWORD),
        ("' OR 1=1 --", PASSWORD),
        ("", PASSWORD),
    ]:
        with pytest.raises(BadCredentials):
            service.log_in(platform, identifier, password)


def test_sessions_end_on_logout_and_expiry(platform: Platform) -> None:
    data = sign_up_data("NZ")
    service.sign_up(platform, data)
    token, user = service.log_in(platform, data.handle, PASSWORD)
    other_token, _ = service.log_in(platform, data.email, PASSWORD)
    service.log_out(platform, user)
    with pytest.raises(NotAuthenticated):
        service.authenticate(platform, token)
    # Logging out one device leaves the others signed in, until they expire.
    other = service.authenticate(platform, other_token)
    with platform.cell("nz").db.transaction() as s:
        s.execute(
            update(LoginSession)
            .where(LoginSession.token_hash == other.token_hash)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with pytest.raises(NotAuthenticated):
        service.authenticate(platform, other_token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        ".",
        f"{uuid.uuid4().hex}.",
        f"{uuid.uuid4().hex}.not-a-session",
        f"not-a-uuid.{'x' * 43}",
        f"{uuid.uuid4().hex}.{'x' * 500}",
        "\x00" * 10,
    ],
)
def test_garbage_tokens_are_not_authenticated(platform: Platform, token: str) -> None:
    with pytest.raises(NotAuthenticated):
        service.authenticate(platform, token)


def test_forged_token_of_a_real_user_fails(platform: Platform) -> None:
    data = sign_up_data()
    done = service.sign_up(platform, data)
    token, _ = service.log_in(platform, data.handle, PASSWORD)
    forged = f"{done.user_id.hex}.{'A' * (len(token) - 33)}"
    with pytest.raises(NotAuthenticated):
        service.authenticate(platform, forged)


# ---- profile -------------------------------------------------------------------------------


def test_profile_update_normalises_links(platform: Platform) -> None:
    data = sign_up_data()
    service.sign_up(platform, data)
    user = current_user(platform, data.handle)
    profile = lifecycle.update_profile(
        platform,
        user,
        ProfileUpdate(
            display_name="  Maya \u202eSkates  ",
            bio="skating\u200b and tofu",
            links=Links(
                instagram="instagram.com/maya.skates/",
                youtube="HTTP://www.YouTube.com/@maya-skates",
                website="Example.ORG/about?lang=en#top",
            ),
        ),
    )
    assert profile.display_name == "Maya Skates" and profile.bio == "skating and tofu"
    assert profile.links == {
        "instagram": "https://instagram.com/maya.skates",
        "youtube": "https://www.youtube.com/@maya-skates",
        "website": "https://example.org/about?lang=en",
    }
    # Omitted fields stay; links replace the whole set; an empty link removes it.
    profile = lifecycle.update_profile(platform, user, ProfileUpdate(links=Links(website="")))
    assert profile.display_name == "Maya Skates" and profile.links == {}
    assert lifecycle.public_profile(platform, data.handle.upper()).links == {}


# ---- deletion and purge --------------------------------------------------------------------


def test_deletion_hides_revokes_and_login_cancels(platform: Platform) -> None:
    data = sign_up_data("CA")
    done = service.sign_up(platform, data)
    token_a, user = service.log_in(platform, data.handle, PASSWORD)
    token_b, _ = service.log_in(platform, data.email, PASSWORD)
    due = lifecycle.request_deletion(platform, user)
    assert timedelta(days=29) < due - datetime.now(UTC) <= timedelta(days=30)
    for token in (token_a, token_b):
        with pytest.raises(NotAuthenticated):
            service.authenticate(platform, token)
    with platform.cell("ca").db.transaction() as s:
        assert s.scalar(select(func.count()).where(LoginSession.user_id == done.user_id)) == 0
    with pytest.raises(NotFound):
        lifecycle.public_profile(platform, data.handle)

    token, user = service.log_in(platform, data.handle, PASSWORD)
    assert lifecycle.get_me(platform, user).deletion_due is None
    assert lifecycle.public_profile(platform, data.handle).user_id == done.user_id
    assert service.authenticate(platform, token).user_id == done.user_id


def test_purge_after_grace_period(fresh_platform: Platform) -> None:
    platform = fresh_platform
    leaving = sign_up_data("FR")
    staying = sign_up_data("FR")
    gone = service.sign_up(platform, leaving)
    kept = service.sign_up(platform, staying)
    _token, user = service.log_in(platform, leaving.handle, PASSWORD)
    lifecycle.request_deletion(platform, user)
    # The other asked too, then changed their mind by logging in.
    lifecycle.request_deletion(platform, current_user(platform, staying.handle))
    current_user(platform, staying.email)
    cell = platform.cell("sg")

    assert lifecycle.purge_due(platform) == []  # within the grace period
    assert lifecycle.purge_due(platform, at=datetime.now(UTC) + timedelta(days=29)) == []
    assert cell.keys.has_data_key(gone.user_id)

    later = datetime.now(UTC) + timedelta(days=31)
    assert lifecycle.purge_due(platform, at=later) == [gone.user_id]
    assert not cell.keys.has_data_key(gone.user_id)
    with cell.db.transaction() as s:
        assert s.get(Account, gone.user_id) is None
        assert s.scalar(select(func.count()).where(LoginSession.user_id == gone.user_id)) == 0
    with platform.catalog.transaction() as s:
        assert s.get(PublicProfile, gone.user_id) is None
        entry = s.get(DirectoryEntry, gone.user_id)
        assert entry is not None and entry.state == "deleted"

    assert lifecycle.purge_due(platform, at=later) == []  # idempotent
    for identifier in (leaving.handle, leaving.email):
        with pytest.raises(BadCredentials):
            service.log_in(platform, identifier, PASSWORD)
    # The other account is untouched, and the handle and email are free again.
    assert cell.keys.has_data_key(kept.user_id)
    assert current_user(platform, staying.handle).user_id == kept.user_id
    again = service.sign_up(
        platform, sign_up_data("US", handle=leaving.handle, email=leaving.email)
    )
    assert again.user_id != gone.user_id and again.home_region == "us"


def test_purge_finishes_what_a_crash_left(fresh_platform: Platform) -> None:
    """A crash after the region rows went but before the catalog was updated."""
    platform = fresh_platform
    data = sign_up_data("US")
    done = service.sign_up(platform, data)
    lifecycle.request_deletion(platform, current_user(platform, data.handle))
    cell = platform.cell("us")
    with cell.db.transaction() as s:  # the crash: rows gone, key and catalog left
        s.execute(delete(Account).where(Account.user_id == done.user_id))
    assert lifecycle.purge_due(platform) == []
    assert not cell.keys.has_data_key(done.user_id)
    with platform.catalog.transaction() as s:
        assert s.get(PublicProfile, done.user_id) is None
        entry = s.get(DirectoryEntry, done.user_id)
        assert entry is not None and entry.state == "deleted"


def test_a_sign_up_that_never_reached_the_catalog_is_undone(
    platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    """The process died between the region's commit and the catalog's: the region account has
    no directory entry. The reconciler takes it back (key, rows, logged) once it is 10 minutes
    old, and the email can sign up again."""
    orphan = new_user("CA", email="orphan.signup@example.com")
    fresh = new_user("CA")
    kept = new_user("CA")
    with platform.catalog.transaction() as c:
        for user in (orphan, fresh):
            c.execute(delete(PublicProfile).where(PublicProfile.user_id == user.user_id))
            c.execute(delete(DirectoryEntry).where(DirectoryEntry.user_id == user.user_id))
    cell = platform.cell("ca")
    with cell.db.transaction() as s:
        s.execute(
            update(Account)
            .where(Account.user_id.in_([orphan.user_id, kept.user_id]))
            .values(created_at=func.now() - timedelta(minutes=11))
        )
    cell.log.integrate()
    before = cell.log.counts(10**9)
    undone = lifecycle.reconcile_sign_ups(platform, "ca")
    assert orphan.user_id in undone
    assert fresh.user_id not in undone  # too young: its sign-up may still be committing
    assert kept.user_id not in undone  # it has its directory entry
    with cell.db.transaction() as s:
        assert s.get(Account, orphan.user_id) is None
        assert s.get(Account, kept.user_id) is not None
    assert not cell.keys.has_data_key(orphan.user_id)
    cell.log.integrate()
    # Logged naming no one: nobody ever had this account.
    after = cell.log.counts(10**9)
    assert after.get("account.creation_undone", 0) == before.get("account.creation_undone", 0) + 1
    assert cell.log.entries_about(str(orphan.user_id)) == []
    again = new_user("US", email="orphan.signup@example.com")
    assert again.home_region == "us"
    assert lifecycle.reconcile_sign_ups(platform, "ca").count(orphan.user_id) == 0
