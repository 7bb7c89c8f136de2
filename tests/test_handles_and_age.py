"""Handle canonicalisation and age rules (pure logic)."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from reelm.accounts import age, handles
from reelm.accounts.errors import AgeRestricted, InvalidInput
from reelm.accounts.schemas import PrivacySettings, ProfileUpdate


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Maya", "maya"),
        ("@maya.skates", "maya.skates"),
        ("ＭＡＹＡ", "maya"),
        (" tofu_chef ", "tofu_chef"),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert handles.normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "a",
        "x" * 25,
        "mаya",
        "may a",
        "maya!",
        ".maya",
        "maya.",
        "ma..ya",
        "12345",
        "",
        "😀😀",
        "maya\u202e",
        "x" * 10_000,
        "robert'); DROP TABLE profiles;--",
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        handles.normalise(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "admin",
        "Settings",
        "adm1n",  # reads as admin
        "ADMlN",
        "moderator",
        "m0derat0r",
        "0fficial",
        "support",
        "reelm",
        "reelm_support",  # the platform's name inside
        "reelm.support",
        "r33lm",
        "the_reelm_team",
        "s3curity",
    ],
)
def test_staff_and_system_names_are_reserved(raw: str) -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        handles.check_claimable(handles.normalise(raw))


@pytest.mark.parametrize("raw", ["maya", "reel_maker", "badminton", "helpful.hana", "adminta"])
def test_ordinary_handles_are_claimable(raw: str) -> None:
    assert handles.check_claimable(handles.normalise(raw)) == handles.normalise(raw)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("alice", "a1ice"),
        ("modern", "rnodern"),
        ("bob0", "bobo"),
        ("vvv", "wv"),
        # issue #12: each was accepted beside the first
        ("maya.skates", "maya_skates"),
        ("maya.skates", "mayaskates"),
        ("maya.skates", "maya.5kates"),
        ("maya.skates", "m4ya_5kat3s"),
        ("admin", "adm1n"),
        ("admin", "admln"),
        ("reelm.support", "reelm_support"),
        ("john.doe", "john_doe"),
        ("sk8er", "skber"),
    ],
)
def test_look_alikes_share_a_key(a: str, b: str) -> None:
    assert handles.handle_key(handles.normalise(a)) == handles.handle_key(handles.normalise(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [("ana", "anna"), ("creator6", "creator8"), ("maya2", "maya"), ("user12", "user21")],
)
def test_distinct_handles_keep_distinct_keys(a: str, b: str) -> None:
    assert handles.handle_key(a) != handles.handle_key(b)


def test_keys_fit_their_column() -> None:
    longest = handles.handle_key("m" * handles.MAX_LEN)
    assert len(longest) == handles.KEY_MAX_LEN


@pytest.mark.parametrize(
    "name",
    [
        "Maya\nSkates",  # a second line
        "Maya\r\nSkates",
        "Maya\tSkates",
        "Maya\x1bSkates",
        "\u3164",  # Hangul filler: a letter that draws nothing
        "\u2800\u2800",  # Braille blank
        "\u200b \u200b",
        "\u0301\u0301",  # combining marks with nothing to sit on
        " ",
    ],
)
def test_display_names_are_one_visible_line(name: str) -> None:
    with pytest.raises(ValidationError):
        ProfileUpdate(display_name=name)


@pytest.mark.parametrize("name", ["Maya ⛸️", "さくら", "Tofu Chef 豆腐", "Chloé", "👩‍🍳", "Maya\n"])
def test_display_names_take_any_script(name: str) -> None:
    assert ProfileUpdate(display_name=name).display_name == name.strip()


def test_age_on_birthdays() -> None:
    assert age.age_on(date(2000, 2, 29), date(2013, 2, 28)) == 12
    assert age.age_on(date(2000, 2, 29), date(2013, 3, 1)) == 13
    assert age.age_on(date(2010, 6, 15), date(2023, 6, 15)) == 13


def test_age_bands() -> None:
    today = date(2026, 11, 22)
    with pytest.raises(AgeRestricted):
        age.rules_for(date(2013, 11, 23), today)  # 12, turns 13 tomorrow
    thirteen = age.rules_for(date(2013, 11, 22), today)
    assert thirteen.privacy_locked and not thirteen.direct_messages_allowed
    sixteen = age.rules_for(date(2010, 11, 22), today)
    assert not sixteen.privacy_locked and sixteen.private_by_default
    adult = age.rules_for(date(2008, 11, 22), today)
    assert not adult.is_minor and not adult.private_by_default
    with pytest.raises(InvalidInput):
        age.rules_for(date(2027, 1, 1), today)
    with pytest.raises(InvalidInput):
        age.rules_for(date(1, 1, 1), today)


def test_under_16s_start_unsuggested_with_comments_from_followers() -> None:
    """Issue #12: a 14-year-old's "Suggest your account" was on and comments were "Everyone"."""
    today = date(2026, 11, 22)
    fourteen = age.rules_for(date(2012, 6, 1), today)
    teen = PrivacySettings.for_age(fourteen)
    assert teen.private_account and teen.direct_messages == "no_one"
    assert teen.comments == "followers" and not teen.suggest_to_others
    assert teen.refused_at(fourteen) is None
    for change in ({"comments": "everyone"}, {"suggest_to_others": True}):
        assert teen.model_copy(update=change).refused_at(fourteen) is not None
    assert teen.model_copy(update={"comments": "no_one"}).refused_at(fourteen) is None
    # Stored before the rules: read as they allow.
    old = PrivacySettings(private_account=True, direct_messages="no_one")
    assert old.held_to(fourteen) == teen
    seventeen = age.rules_for(date(2009, 6, 1), today)
    minor = PrivacySettings.for_age(seventeen)
    assert minor.private_account and minor.comments == "everyone" and minor.suggest_to_others
    assert minor.model_copy(update={"private_account": False}).refused_at(seventeen) is None
