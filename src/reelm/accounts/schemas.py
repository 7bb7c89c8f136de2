"""Validated inputs of the accounts domain (no web framework here: the API reuses them)."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Annotated, Literal
from urllib.parse import urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from reelm.accounts import handles

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(value: str) -> str:
    """NFC, no control or bidi-override characters, no surrounding space."""
    return _CONTROL.sub("", unicodedata.normalize("NFC", value)).strip()


def _display_name(value: str) -> str:
    value = clean_text(value)
    if not value:
        raise ValueError("a display name cannot be empty")
    if len(value) > 50:
        raise ValueError("a display name has at most 50 characters")
    return value


def _bio(value: str) -> str:
    value = clean_text(value)
    if len(value) > 160:
        raise ValueError("a bio has at most 160 characters")
    return value


def _handle(value: str) -> str:
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
Password = Annotated[str, Field(min_length=8, max_length=256)]
Bio = Annotated[str, Field(max_length=400), AfterValidator(_bio)]


def _link(value: str, hosts: tuple[str, ...], path: re.Pattern[str] | None, label: str) -> str:
    value = value.strip()
    if not value:
        return ""
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or "." not in host:
        raise ValueError(f"{label}: not a web address")
    if parts.username or parts.password or parts.port not in (None, 80, 443):
        raise ValueError(f"{label}: user names, passwords and ports are not allowed")
    if hosts and host not in hosts:
        raise ValueError(f"{label}: must be an address on {hosts[0]}")
    if path is not None and not path.fullmatch(parts.path.rstrip("/")):
        raise ValueError(f"{label}: not a profile address")
    clean = f"https://{host}{parts.path.rstrip('/')}"
    return clean + (f"?{parts.query}" if parts.query and not hosts else "")


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
    """Stored encrypted in the home region; only private_account is mirrored to the catalog."""

    model_config = ConfigDict(extra="forbid")

    private_account: bool = False
    direct_messages: Audience = "followers"
    comments: Audience = "everyone"
    show_following_list: bool = True
    suggest_to_others: bool = True


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
