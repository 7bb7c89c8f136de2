"""The edge: an HAProxy configuration that sends each signed-in request to its user's home cell.

A session token begins with its region's code (``us.<secret>``, see
``reelm.accounts.service``), so the proxy routes on the cookie or the bearer header's first
characters without holding any key or reading any database. Anonymous requests go to any cell
(each serves public pages from its catalog replica). The edge writes the forwarded headers
itself, drops any a client sent, and sets the country header only from a source the operator
trusts. It holds no secret: at most a TLS certificate, if it terminates TLS.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

import jinja2

REGION = re.compile(r"[a-z][a-z0-9]{1,15}")  # config.RegionName
# A header name as RFC 9110 allows (a token), so nothing can be smuggled into the config.
HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
# The edge connects to loopback cells from this address, which the cells list in
# forwarded_allow_ips: any other local process reaches them from 127.0.0.1 and is not believed.
LOOPBACK_SOURCE = "127.0.0.2"


class EdgeConfigError(ValueError):
    """An argument of ``reelm edge config`` is wrong; the message says which and why."""


@dataclass(frozen=True)
class CellAddress:
    region: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_cell(spec: str) -> CellAddress:
    """``us=http://127.0.0.1:8001``: a region and the plain-HTTP address its cell listens on."""
    region, sep, url = spec.partition("=")
    if not sep or not REGION.fullmatch(region):
        raise EdgeConfigError(f"--cell {spec!r}: expected REGION=http://HOST:PORT")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise EdgeConfigError(
            f"--cell {spec!r}: the cell's address must be http://HOST:PORT (the edge talks plain "
            "HTTP to cells on a private network; TLS ends at the edge)"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise EdgeConfigError(f"--cell {spec!r}: a scheme, a host and a port, nothing more")
    try:
        port = parts.port or 80
    except ValueError:
        raise EdgeConfigError(f"--cell {spec!r}: the port is not a number 1-65535") from None
    if not re.fullmatch(r"[A-Za-z0-9.:-]+", parts.hostname):
        raise EdgeConfigError(f"--cell {spec!r}: {parts.hostname!r} is not a host")
    return CellAddress(region, parts.hostname, port)


def _bind(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgeConfigError(f"--bind {value!r}: expected ADDRESS:PORT, e.g. 0.0.0.0:8000")
    if host and not re.fullmatch(r"[A-Za-z0-9.:\[\]*-]+", host):
        raise EdgeConfigError(f"--bind {value!r}: {host!r} is not an address")
    return value


def _header(option: str, value: str) -> str:
    if not HEADER.fullmatch(value):
        raise EdgeConfigError(f"{option} {value!r}: not an HTTP header name")
    return value


def _source(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise EdgeConfigError(f"--source {value!r}: not an IP address") from None
    return value


def render(
    cells: list[CellAddress],
    *,
    cookie: str,
    cell_cookie: str,
    bind: str = "0.0.0.0:8000",
    country_header: str = "CF-IPCountry",
    country_from: str | None = None,
    source: str | None = None,
    tls_cert: str | None = None,
) -> str:
    """The complete HAProxy configuration for these cells: ``cookie`` is the session cookie,
    ``cell_cookie`` the one a cell sets on a visitor it sends to another region's cell.

    ``country_from``: the header an upstream CDN sets with the visitor's country, copied into
    ``country_header`` (otherwise the edge sets none, and any copy a client sent is dropped).
    ``source``: the address the edge connects to the cells from (default: 127.0.0.2 when every
    cell is on loopback, else the edge's own address), the cells' ``forwarded_allow_ips``."""
    if not cells:
        raise EdgeConfigError("give at least one --cell REGION=http://HOST:PORT")
    regions = [c.region for c in cells]
    if len(set(regions)) != len(regions):
        raise EdgeConfigError("each region's cell is given once")
    if source is None and all(c.loopback for c in cells):
        source = LOOPBACK_SOURCE
    if tls_cert is not None and not re.fullmatch(r"[A-Za-z0-9_./-]+", tls_cert):
        raise EdgeConfigError(f"--tls-cert {tls_cert!r}: a plain file path, please")
    template = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - not HTML; every value is validated above
    ).from_string(resources.files(__package__).joinpath("haproxy.cfg.j2").read_text())
    return template.render(
        cells=cells,
        cookie=_header("cookie", cookie),
        cell_cookie=_header("cell cookie", cell_cookie),
        bind=_bind(bind),
        country_header=_header("--country-header", country_header),
        country_from=_header("--country-from", country_from) if country_from else None,
        source=_source(source) if source else None,
        tls_cert=tls_cert,
    )
