"""Handle canonicalisation and age rules (pure logic)."""

from __future__ import annotations

from datetime import date

import pytest

from reelm.accounts import age, handles
from reelm.accounts.errors import AgeRestricted, InvalidInput


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
        "admin",
        "Settings",
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
    ("a", "b"), [("alice", "a1ice"), ("modern", "rnodern"), ("bob0", "bobo"), ("vvv", "wv")]
)
def test_confusables_share_a_key(a: str, b: str) -> None:
    assert handles.skeleton(handles.normalise(a)) == handles.skeleton(handles.normalise(b))


def test_distinct_handles_keep_distinct_keys() -> None:
    assert handles.skeleton("john.doe") != handles.skeleton("john_doe")
    assert handles.skeleton("ana") != handles.skeleton("anna")


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
