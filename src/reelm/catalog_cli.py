"""`reelm catalog ...`: the catalog operator's commands for the catalog's replicas (set one up,
measure its lag, take it down). docs/operations.md, "The catalog's replicas"."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reelm.config import ConfigError, Settings, load_settings

catalog_app = typer.Typer(help="The catalog's replicas.", no_args_is_help=True)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A reelm.toml (default: ./reelm.toml).")
]
PrimaryOption = Annotated[
    str | None,
    typer.Option(
        "--primary",
        help="The catalog primary, as its owner (default: catalog_database_url).",
    ),
]
ReplicaOption = Annotated[
    str | None,
    typer.Option("--replica", help="The replica's database (default: catalog_replica_url)."),
]
NameOption = Annotated[
    str,
    typer.Option(
        "--name", help="The replica's name, e.g. its region: its subscription and slot's."
    ),
]


def _urls(config: Path | None, primary: str | None, replica: str | None) -> tuple[str, str]:
    try:
        settings: Settings | None = load_settings(config)
    except ConfigError as exc:
        if primary is None or replica is None:
            console.print(f"[red]configuration error:[/red] {exc}")
            raise typer.Exit(2) from None
        settings = None
    primary = primary or (settings.catalog_database_url if settings else None)
    replica = replica or (settings.catalog_replica_url if settings else None)
    if primary is None or replica is None:
        console.print(
            "[red]error:[/red] give --primary and --replica "
            "(or catalog_database_url and catalog_replica_url)"
        )
        raise typer.Exit(2)
    return primary, replica


@catalog_app.command("replica")
def replica_set_up(
    name: NameOption,
    config: ConfigOption = None,
    primary: PrimaryOption = None,
    replica: ReplicaOption = None,
    publisher: Annotated[
        str | None,
        typer.Option(
            help="How the replica's PostgreSQL reaches the primary (libpq conninfo, a user "
            "with REPLICATION), when not as --primary says.",
        ),
    ] = None,
    reader: Annotated[
        list[str] | None,
        typer.Option(help="A role that may read the replica (a cell's; repeatable)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the copy.")] = 600.0,
) -> None:
    """Set up (or complete) a replica of the catalog: its schema, the publication on the
    primary, the subscription, then wait until every table is copied. Idempotent."""
    from reelm.storage import replication

    primary_url, replica_url = _urls(config, primary, replica)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("copying the catalog's tables", total=None)

        def report(done: replication.Progress) -> None:
            bar.update(task, total=done.tables or None, completed=done.ready)

        try:
            done = replication.set_up(
                primary_url,
                replica_url,
                name,
                publisher=publisher,
                readers=reader or [],
                timeout=timeout,
                report=report,
            )
        except replication.ReplicationError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    console.print(
        f"[green]replica {name} is streaming[/green]: {done.tables} tables "
        f"({', '.join(sorted(done.states))})"
    )
    if done.missing:
        console.print(
            f"[yellow]not on the primary yet[/yellow] ({', '.join(done.missing)}): upgrade it "
            "(`reelm db upgrade --catalog`), then run this command again"
        )


@catalog_app.command("replica-lag")
def replica_lag(
    config: ConfigOption = None,
    primary: PrimaryOption = None,
    replica: ReplicaOption = None,
    samples: Annotated[int, typer.Option(min=1, max=10_000, help="Measurements.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How far the replica is behind the primary: bytes, and seconds to catch up."""
    from reelm.storage import replica as replicas
    from reelm.storage.db import CATALOG, Database

    primary_url, replica_url = _urls(config, primary, replica)
    p = Database.connect(CATALOG, primary_url, pool_size=1)
    r = Database.connect(f"{CATALOG}-replica", replica_url, pool_size=1)
    try:
        lags = [replicas.lag(p, r) for _ in range(samples)]
    finally:
        p.dispose()
        r.dispose()
    seconds = sorted(x.seconds for x in lags if x.seconds is not None)
    result = {
        "bytes": lags[-1].bytes,
        "seconds_p50": statistics.median(seconds) if seconds else None,
        "seconds_max": seconds[-1] if seconds else None,
        "not_caught_up": len(lags) - len(seconds),
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    if result["bytes"] is None:
        console.print("[red]the replica is not replicating[/red] (subscription disabled or none)")
        raise typer.Exit(1)
    if not seconds:
        console.print(f"behind by {result['bytes']} bytes, and not caught up within 5 s")
        raise typer.Exit(1)
    console.print(
        f"behind by {result['bytes']} bytes; caught up in "
        f"{statistics.median(seconds) * 1000:.2f} ms (median of {len(seconds)})"
    )


@catalog_app.command("replica-drop")
def replica_drop(
    name: NameOption,
    config: ConfigOption = None,
    replica: ReplicaOption = None,
) -> None:
    """Take a replica down: drop its subscription, and with it its slot on the primary."""
    from reelm.storage import replication

    _, replica_url = _urls(config, "unused", replica)
    if replication.tear_down(replica_url, name):
        console.print(f"[green]replica {name}'s subscription and slot are dropped[/green]")
    else:
        console.print(f"replica {name} has no subscription here")
