"""``reelm edge ...``: the edge proxy's configuration."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from reelm.api.gate import SESSION_COOKIE
from reelm.api.problems import CELL_COOKIE
from reelm.edge import EdgeConfigError, parse_cell, render

edge_app = typer.Typer(help="The edge proxy in front of the cells.", no_args_is_help=True)
console = Console(stderr=True)


@edge_app.command("config")
def config(
    cell: Annotated[
        list[str],
        typer.Option(help="REGION=http://HOST:PORT: a region's cell (repeat for each region)."),
    ],
    bind: Annotated[str, typer.Option(help="ADDRESS:PORT the edge listens on.")] = "0.0.0.0:8000",
    country_header: Annotated[
        str,
        typer.Option(help="The header the cells read the visitor's country from (country_header)."),
    ] = "CF-IPCountry",
    country_from: Annotated[
        str | None,
        typer.Option(
            help="The header an upstream CDN sets with the visitor's country, copied into "
            "--country-header. Unset: the edge sets no country (a client's copy is always "
            "dropped)."
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="Address the edge connects to the cells from (the cells' forwarded_allow_ips). "
            "Default: 127.0.0.2 when every cell is on loopback, else the system's choice."
        ),
    ] = None,
    tls_cert: Annotated[
        str | None,
        typer.Option(help="PEM file (certificate and key) to terminate TLS at the edge."),
    ] = None,
) -> None:
    """Print a complete HAProxy configuration routing each session to its home cell."""
    try:
        text = render(
            [parse_cell(spec) for spec in cell],
            cookie=SESSION_COOKIE,
            cell_cookie=CELL_COOKIE,
            bind=bind,
            country_header=country_header,
            country_from=country_from,
            source=source,
            tls_cert=tls_cert,
        )
    except EdgeConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    typer.echo(text, nl=False)
