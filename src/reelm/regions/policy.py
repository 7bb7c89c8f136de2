"""Residency policy: which region is a market's home, and which markets are blocked."""

from __future__ import annotations

from dataclasses import dataclass

from babel import Locale

from reelm.config import Settings

_TERRITORIES = Locale("en").territories
# CLDR territory codes that are not countries: unknown, outlying Oceania, EU, eurozone, UN,
# and the pseudo-locales.
_NOT_COUNTRIES = frozenset({"ZZ", "QO", "EU", "EZ", "UN", "XA", "XB"})


class MarketBlocked(Exception):
    """The market is not served; answered with HTTP 451 and the legal reason.

    A plain exception, not a frozen dataclass: exception plumbing sets ``__traceback__``."""

    def __init__(self, market: str, reason: str, authority: str) -> None:
        super().__init__(market, reason, authority)
        self.market = market
        self.reason = reason
        self.authority = authority

    def __str__(self) -> str:
        return f"market {self.market} is blocked: {self.reason}"


class UnknownMarket(ValueError):
    """Not an ISO 3166-1 alpha-2 country code."""


def is_country(code: str) -> bool:
    # Babel's territory list also holds UN M.49 numeric regions ("001"); we keep letters only.
    code = code.upper()
    return (
        len(code) == 2
        and code.isascii()
        and code.isalpha()
        and code in _TERRITORIES
        and code not in _NOT_COUNTRIES
    )


def country_codes() -> list[str]:
    return sorted(str(c) for c in _TERRITORIES if isinstance(c, str) and is_country(c))


def country_name(code: str) -> str:
    return str(_TERRITORIES.get(code.upper(), code.upper()))


@dataclass(frozen=True)
class ResidencyPolicy:
    markets: dict[str, str]
    default_region: str
    blocked: dict[str, tuple[str, str]]

    @classmethod
    def from_settings(cls, settings: Settings) -> ResidencyPolicy:
        return cls(
            markets=dict(settings.markets),
            default_region=settings.default_region,
            blocked={m: (b.reason, b.authority) for m, b in settings.blocked_markets.items()},
        )

    def normalise(self, market: str) -> str:
        code = market.strip().upper()
        if not is_country(code):
            raise UnknownMarket(f"{market!r} is not an ISO 3166-1 alpha-2 country code")
        return code

    def check_open(self, market: str) -> str:
        """Return the normalised market, or raise MarketBlocked / UnknownMarket."""
        code = self.normalise(market)
        if code in self.blocked:
            reason, authority = self.blocked[code]
            raise MarketBlocked(code, reason, authority)
        return code

    def home_region(self, market: str) -> str:
        code = self.check_open(market)
        return self.markets.get(code, self.default_region)

    def markets_of(self, region: str) -> list[str]:
        """The markets whose home is region ('*' stands for every unlisted open market)."""
        listed = sorted(m for m, r in self.markets.items() if r == region)
        if region == self.default_region:
            listed.append("*")
        return listed
