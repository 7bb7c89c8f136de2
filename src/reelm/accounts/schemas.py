"""Validated inputs of the accounts domain (no web framework here: the API reuses them)."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from reelm.accounts import handles
from reelm.accounts.age import AgeRules

# Zero-width joiners (U+200C, U+200D) are kept: emoji sequences and several scripts need them.
_CONTROL = re.compile(r"[\x01-\x08\x0b-\x1f\x7f\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(value: str) -> str:
    """NFC, no control or bidi-override characters, no surrounding space.

    NUL is refused rather than dropped: no client sends it by accident, and PostgreSQL cannot
    store it in text."""
    if "\x00" in value:
        raise ValueError("text cannot contain NUL characters")
    return _CONTROL.sub("", unicodedata.normalize("NFC", value)).strip()


# Letters that draw nothing (Hangul fillers, the Braille blank, Khmer inherent vowels): a name
# made of them looks empty, the trick behind "invisible" display names.
_BLANK_LOOKING = frozenset("\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")
DISPLAY_NAME_MAX = 50


def _visible(value: str) -> bool:
    """At least one character that draws something: a letter, digit, punctuation or symbol
    (not a space, control, format character or lone combining mark) that is not blank."""
    return any(unicodedata.category(ch)[0] in "LNPS" and ch not in _BLANK_LOOKING for ch in value)


def _display_name(value: str) -> str:
    # A name is one line: newlines, tabs and other controls are refused, not silently cut
    # (clean_text keeps newlines, which bios and captions use).
    if any(unicodedata.category(ch) == "Cc" for ch in value.strip()):
        raise ValueError("a display name is one line, without control characters")
    value = clean_text(value)
    if not _visible(value):
        raise ValueError("a display name needs at least one visible character")
    if len(value) > DISPLAY_NAME_MAX:
        raise ValueError(f"a display name has at most {DISPLAY_NAME_MAX} characters")
    return value


def _bio(value: str) -> str:
    value = clean_text(value)
    if len(value) > 160:
        raise ValueError("a bio has at most 160 characters")
    return value


def _handle(value: str) -> str:
    """The handle's shape; whether it is reserved is sign-up's question (``sign_up``)."""
    return handles.normalise(value)


def normalise_email(value: str) -> str:
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return checked.normalized.casefold()


def normalise_phone(value: str, market: str) -> str:
    try:
        number = phonenumbers.parse(value, market)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


DisplayName = Annotated[str, Field(max_length=200), AfterValidator(_display_name)]
Handle = Annotated[str, Field(max_length=96), AfterValidator(_handle)]


def _password(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a password cannot contain NUL characters")
    return value


Password = Annotated[str, Field(min_length=8, max_length=256), AfterValidator(_password)]
Bio = Annotated[str, Field(max_length=400), AfterValidator(_bio)]


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_URL_SAFE = "/%@:!$&'()*+,;=-._~?"


def _web_host(host: str) -> str | None:
    """The host as an ASCII DNS name (IDNA), or None when it is not one (IP literals too)."""
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or len(labels) < 2:
        return None
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return None
    tld = labels[-1]
    return ascii_host if tld.isalpha() or tld.startswith("xn--") else None


def _link(value: str, hosts: tuple[str, ...], path: re.Pattern[str] | None, label: str) -> str:
    value = value.strip()
    if not value:
        return ""
    # Spaces, controls (NUL included) and invisible format characters have no place in a link.
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value):
        raise ValueError(f"{label}: not a web address")
    if "://" not in value:
        value = "https://" + value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{label}: not a web address") from None
    host = _web_host(parts.hostname or "")
    if parts.scheme.lower() not in ("http", "https") or host is None:
        raise ValueError(f"{label}: not a web address")
    if parts.username is not None or parts.password is not None or port not in (None, 80, 443):
        raise ValueError(f"{label}: user names, passwords and ports are not allowed")
    if hosts and host not in hosts:
        raise ValueError(f"{label}: must be an address on {hosts[0]}")
    if path is not None and not path.fullmatch(parts.path.rstrip("/")):
        raise ValueError(f"{label}: not a profile address")
    clean = f"https://{host}{quote(parts.path.rstrip('/'), safe=_URL_SAFE)}"
    return clean + (f"?{quote(parts.query, safe=_URL_SAFE)}" if parts.query and not hosts else "")


_INSTAGRAM_HOSTS = ("instagram.com", "www.instagram.com")
_YOUTUBE_HOSTS = ("youtube.com", "www.youtube.com", "m.youtube.com")
_INSTAGRAM_PATH = re.compile(r"/[A-Za-z0-9._]{1,30}")
_YOUTUBE_PATH = re.compile(r"/(@[A-Za-z0-9._-]{3,30}|channel/UC[A-Za-z0-9_-]{22}|c/[^/]{1,100})")


def _instagram(value: str) -> str:
    return _link(value, _INSTAGRAM_HOSTS, _INSTAGRAM_PATH, "instagram")


def _youtube(value: str) -> str:
    return _link(value, _YOUTUBE_HOSTS, _YOUTUBE_PATH, "youtube")


def _website(value: str) -> str:
    return _link(value, (), None, "website")


class Links(BaseModel):
    """External links, validated and normalised to https URLs on construction."""

    model_config = ConfigDict(extra="forbid")

    instagram: Annotated[str, Field(max_length=200), AfterValidator(_instagram)] = ""
    youtube: Annotated[str, Field(max_length=200), AfterValidator(_youtube)] = ""
    website: Annotated[str, Field(max_length=200), AfterValidator(_website)] = ""

    def normalised(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v}


Audience = Literal["everyone", "followers", "no_one"]


class PrivacySettings(BaseModel):
    """Stored encrypted in the home region; only private_account is mirrored to the catalog.

    Under-16s (``AgeRules.privacy_locked``) keep a private account, no direct messages, are
    not suggested to others, and take comments from followers (or no one), never everyone."""

    model_config = ConfigDict(extra="forbid")

    private_account: bool = False
    direct_messages: Audience = "followers"
    comments: Audience = "everyone"
    show_following_list: bool = True
    suggest_to_others: bool = True

    @classmethod
    def for_age(cls, rules: AgeRules) -> PrivacySettings:
        """The settings a new account starts with."""
        return cls(private_account=rules.private_by_default).held_to(rules)

    def held_to(self, rules: AgeRules) -> PrivacySettings:
        """These settings as the age rules allow them: what applies, whatever was stored
        before a rule existed (accounts of under-16s made before the comment and suggestion
        rules keep 'everyone' and 'on' in their stored settings)."""
        if not rules.privacy_locked:
            return self
        return self.model_copy(
            update={
                "private_account": True,
                "direct_messages": "no_one",
                "comments": "followers" if self.comments == "everyone" else self.comments,
                "suggest_to_others": False,
            }
        )

    def refused_at(self, rules: AgeRules) -> tuple[str, str] | None:
        """The first setting the age rules do not allow, and why, or None."""
        if not rules.privacy_locked:
            return None
        if not self.private_account or self.direct_messages != "no_one":
            field = "private_account" if not self.private_account else "direct_messages"
            return field, "accounts of people under 16 stay private, with direct messages off"
        if self.comments == "everyone":
            return "comments", "people under 16 take comments from their followers, not everyone"
        if self.suggest_to_others:
            return "suggest_to_others", "accounts of people under 16 are not suggested to others"
        return None


class SignUp(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=400)

    handle: Handle
    display_name: DisplayName
    email: Annotated[str, Field(max_length=254)]
    password: Password
    birth_date: date
    market: Annotated[str, Field(min_length=2, max_length=2)]
    phone: Annotated[str, Field(max_length=32)] | None = None


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    bio: Bio | None = None
    links: Links | None = None


class PrivacyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    private_account: bool | None = None
    direct_messages: Audience | None = None
    comments: Audience | None = None
    show_following_list: bool | None = None
    suggest_to_others: bool | None = None
