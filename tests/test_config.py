"""Configuration: defaults, reelm.toml, environment, and errors that name the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelm.config import ConfigError, load_settings
from reelm.regions.policy import MarketBlocked, ResidencyPolicy, UnknownMarket


def test_defaults_map_markets_to_regions() -> None:
    policy = ResidencyPolicy.from_settings(load_settings())
    assert {m: policy.home_region(m) for m in ["US", "CA", "AU", "NZ", "FR", "de", "BR"]} == {
        "US": "us",
        "CA": "ca",
        "AU": "au",
        "NZ": "nz",
        "FR": "sg",
        "de": "sg",
        "BR": "sg",
    }
    with pytest.raises(MarketBlocked, match="69A"):
        policy.home_region("IN")
    with pytest.raises(MarketBlocked, match="domestic"):
        policy.home_region("cn")
    for bad in ["ZZ", "", "USA", "1", "ÜS", "EU"]:
        with pytest.raises(UnknownMarket):
            policy.home_region(bad)
    assert policy.markets_of("sg") == ["*"]
    assert policy.markets_of("us") == ["US"]


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "reelm.toml"
    path.write_text(
        """
data_dir = "/srv/reelm"
default_region = "sg"
[markets]
GB = "sg"
MX = "us"
[regions.us]
label = "United States"
database_url = "postgresql://us-db/reelm"
[blocked_markets.KP]
reason = "Sanctions."
authority = "Operator policy"
"""
    )
    settings = load_settings(path)
    assert settings.data_dir == Path("/srv/reelm")
    assert settings.markets["MX"] == "us"
    assert settings.regions["us"].database_url == "postgresql://us-db/reelm"
    # [regions.us] changes that region only; the other default regions stay.
    assert set(settings.regions) == {"us", "ca", "au", "nz", "sg"}
    assert settings.regions["ca"].label == "Canada"
    assert "KP" in settings.blocked_markets
    assert {"IN", "CN"} <= set(settings.blocked_markets)  # adding a block keeps the defaults
    assert ResidencyPolicy.from_settings(settings).home_region("MX") == "us"


def test_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "reelm.toml"
    path.write_text('country_header = "X-From-File"\n')
    monkeypatch.setenv("REELM_COUNTRY_HEADER", "X-From-Env")
    assert load_settings(path).country_header == "X-From-Env"


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ('session_days = "forever"\n', "session_days"),
        ('[markets]\nFR = "mars"\n', "markets.FR"),
        ("no_such_setting = 1\n", "no_such_setting"),
        ('default_region = "xx"\n', "default_region"),
        ("[blocked_markets.IN]\nreason = 1\n", "blocked_markets.IN"),
        # A batch window that does not divide a day would straddle a month's end.
        ("log_batch_seconds = 5000\n", "log_batch_seconds"),
    ],
)
def test_bad_file_names_key_and_file(tmp_path: Path, content: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message
    assert key.split(".")[0] in message


def test_unparsable_toml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("data_dir = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_settings(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "nope.toml")
