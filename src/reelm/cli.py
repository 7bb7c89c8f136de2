"""The `reelm` command."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reelm.catalog_cli import catalog_app
from reelm.config import ConfigError, Settings, load_settings
from reelm.edge.cli import edge_app

if TYPE_CHECKING:
    from reelm.bootstrap import Platform
    from reelm.media.blobcheck import BlobReport
    from reelm.migration.engine import Outcome
    from reelm.transparency.auditor import RegionAudit

app = typer.Typer(
    help="reelm: short videos, with each user's private data kept at home.", no_args_is_help=True
)
db_app = typer.Typer(help="Databases.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
audit_app = typer.Typer(help="Independent checks of the transparency logs.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(audit_app, name="audit")
staff_app = typer.Typer(help="Staff access (every read is logged).", no_args_is_help=True)
legal_app = typer.Typer(help="Legal requests, recorded in the public logs.", no_args_is_help=True)
app.add_typer(staff_app, name="staff")
app.add_typer(legal_app, name="legal")
blobs_app = typer.Typer(help="Blob stores.", no_args_is_help=True)
app.add_typer(blobs_app, name="blobs")
social_app = typer.Typer(help="Likes, shares and their public counts.", no_args_is_help=True)
app.add_typer(social_app, name="social")
app.add_typer(edge_app, name="edge")
cell_app = typer.Typer(help="This cell and the other cells it talks to.", no_args_is_help=True)
app.add_typer(cell_app, name="cell")
cells_app = typer.Typer(help="A deployment of one cell per region.", no_args_is_help=True)
app.add_typer(cells_app, name="cells")
app.add_typer(catalog_app, name="catalog")
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="A reelm.toml (default: ./reelm.toml).")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Where databases, blobs and keys live.")
]


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _platform(  # type: ignore[no-untyped-def]
    settings: Settings, *, upgrade: bool = True, create: bool = False, process: str | None = None
):
    """The deployment the settings name. Only `demo`, `serve` and `db upgrade` may create one
    (``create``); any other command run where there is none says so and exits 2. A
    long-running ``process`` (serve, worker, demo) records its release in the logs."""
    from reelm.bootstrap import ForeignSecrets, NoDeployment, build, start
    from reelm.storage.migrate import SchemaBehind

    try:
        with console.status("Starting databases…"):
            if process is not None:
                return start(settings, process, create=create)
            return build(settings, upgrade=upgrade, create=create)
    except (NoDeployment, ForeignSecrets, SchemaBehind) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    catalog: Annotated[
        bool,
        typer.Option(
            "--catalog",
            help="Upgrade the catalog only, as its owner (catalog_database_url), and let the "
            "cells' catalog roles (--cell-role) use it: the catalog operator's command.",
        ),
    ] = False,
    cell_role: Annotated[
        list[str] | None,
        typer.Option(help="REGION=ROLE: the catalog role of a region's cell (repeatable)."),
    ] = None,
) -> None:
    """Run the migrations of the catalog and every region's database (a cell: its own)."""
    settings = _settings(config, data_dir=data_dir)
    if catalog:
        _upgrade_catalog(settings, cell_role or [])
        return
    platform = _platform(settings, create=True)
    platform.close()
    console.print("[green]databases are up to date[/green]")


def _upgrade_catalog(settings: Settings, cell_roles: list[str]) -> None:
    from reelm.regions.deployment import upgrade_catalog_at

    if settings.catalog_database_url is None:
        console.print("[red]error:[/red] --catalog needs catalog_database_url (its owner's URL)")
        raise typer.Exit(2)
    roles: dict[str, str] = {}
    for pair in cell_roles:
        region, sep, role = pair.partition("=")
        if not sep or region not in settings.regions or not role:
            console.print(f"[red]error:[/red] --cell-role {pair!r}: expected REGION=ROLE")
            raise typer.Exit(2)
        roles[region] = role
    upgrade_catalog_at(
        settings.catalog_database_url, {role: region for region, role in roles.items()}
    )
    console.print("[green]the catalog is up to date[/green]")


@app.command()
def regions(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each region with its database, blob location and markets (passwords hidden)."""
    from reelm.regions.policy import ResidencyPolicy
    from reelm.regions.routing import routes
    from reelm.storage.db import redact

    settings = _settings(config, data_dir=data_dir)
    policy = ResidencyPolicy.from_settings(settings)
    platform = _platform(settings, upgrade=False)
    try:
        # Markets a region migration moved override the configuration (market_routes).
        moved = routes(platform)
        if moved:
            markets = {**settings.markets, **moved}
            policy = ResidencyPolicy(markets, policy.default_region, policy.blocked)
        rows = [
            {
                "region": name,
                "label": settings.regions[name].label,
                "database": redact(cell.db.url),
                "blobs": cell.blobs.location(),
                "keys": str(settings.key_dir(name).resolve()),
                "markets": policy.markets_of(name),
            }
            for name, cell in platform.cells.items()
        ]
        catalog = redact(platform.catalog.url)
    finally:
        platform.close()
    blocked = {m: b.reason for m, b in settings.blocked_markets.items()}
    if as_json:
        print(
            json.dumps(
                {
                    "regions": rows,
                    "catalog": {"database": catalog},
                    "blocked_markets": blocked,
                    "moved_markets": moved,
                },
                indent=2,
            )
        )
        return
    table = Table("region", "database", "blobs", "markets")
    for r in rows:
        table.add_row(r["region"], r["database"], r["blobs"], " ".join(r["markets"]))
    Console().print(table)
    Console().print(f"catalog: {catalog}")
    for market, reason in blocked.items():
        Console().print(f"blocked {market}: {reason}")
    for market, region in sorted(moved.items()):
        Console().print(f"moved {market} to {region} by a region migration")


@app.command("residency-scan")
def residency_scan(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find protected data outside its home region, or stored in clear. Exit 1 on findings."""
    from reelm.residency.scan import scan

    platform = _platform(_settings(config, data_dir=data_dir))
    try:
        with console.status("Scanning every database and blob store…"):
            report = scan(platform)
    finally:
        platform.close()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for finding in report.findings:
            Console().print(f"[red]LEAK[/red] {finding.describe()}")
        for notice in report.notices:
            Console().print(f"[yellow]{notice.kind.upper()}[/yellow] {notice.describe()}")
        summary = (
            f"{report.users} users, {report.tables} tables, {report.rows} rows, "
            f"{report.blobs} blobs scanned"
        )
        if report.notices:
            summary += f" ({len(report.notices)} notices: left-overs, not leaks)"
        if report.clean:
            Console().print(f"[green]clean[/green]: {summary}")
        else:
            Console().print(f"[red]{len(report.findings)} findings[/red]: {summary}")
    raise typer.Exit(0 if report.clean else 1)


@blobs_app.command("check")
def blobs_check(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    region: Annotated[
        list[str] | None,
        typer.Option(help="Check only this region's store (repeatable); the public store too."),
    ] = None,
    delete_orphans: Annotated[
        bool,
        typer.Option(
            "--delete-orphans", help="Delete orphan blobs older than an hour (after a re-check)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find orphan blobs (no row points to them) and missing ones (a row points to nothing).
    Exit 1 when anything is found."""
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    from reelm.media import blobcheck

    settings = _settings(config, data_dir=data_dir)
    _chosen_regions(settings, region)
    platform = _platform(settings)
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("listing {task.description}"),
            TextColumn("{task.completed:,.0f} keys"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def listed(store: str, count: int) -> None:
                if store not in tasks:
                    tasks[store] = bar.add_task(store, total=None)
                bar.update(tasks[store], completed=count)

            report = blobcheck.check(platform, regions=region or None, progress=listed)
        if delete_orphans:
            blobcheck.delete_orphans(platform, report)
    finally:
        platform.close()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_blob_report(report, delete_orphans)
    raise typer.Exit(0 if report.clean else 1)


def _print_blob_report(report: BlobReport, deleting: bool) -> None:
    deleted, young = set(report.deleted), set(report.kept_young)
    if report.problems:
        table = Table("problem", "store")
        table.add_column("key", overflow="fold")  # whole, on several lines if need be
        table.add_column("detail")
        if deleting:
            table.add_column("action")
        for p in report.problems:
            action = (
                "deleted" if p in deleted else "kept (under an hour old)" if p in young else "kept"
            )
            table.add_row(
                p.kind.upper(), p.store, p.key or "-", p.detail, *([action] if deleting else [])
            )
        Console().print(table)
    keys = ", ".join(f"{n} in {store}" for store, n in report.keys.items())
    summary = f"{report.videos} video rows; media keys: {keys}"
    if report.clean:
        Console().print(f"[green]clean[/green]: {summary}")
    else:
        found = f"{len(report.orphans)} orphans, {len(report.missing)} missing"
        if deleting:
            found += f" ({len(report.deleted)} orphans deleted)"
        Console().print(f"[red]{found}[/red]: {summary}")


@accounts_app.command("purge-due")
def purge_due(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Purge accounts whose deletion grace period is over, destroying their keys. Idempotent."""
    from reelm.accounts.lifecycle import purge_due as run

    platform = _platform(_settings(config, data_dir=data_dir))
    try:
        purged = run(platform)
    finally:
        platform.close()
    Console().print(f"purged {len(purged)} account(s)")


def _chosen_regions(settings: Settings, wanted: list[str] | None) -> list[str]:
    """The regions a command was asked for (every region this process holds by default: all of
    them in the single-machine mode, its own in a cell); any other exits 2."""
    held = settings.local_regions
    unknown = [r for r in wanted or [] if r not in held]
    if unknown:
        console.print(f"[red]no region {unknown[0]!r} here[/red]; regions: {', '.join(held)}")
        raise typer.Exit(2)
    return list(wanted or held)


@accounts_app.command("rotate-index")
def rotate_index(
    region: Annotated[
        list[str] | None, typer.Option(help="Only this region (repeatable); default: all.")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Move every account to a new blind-index key epoch and destroy the old keys, so that no
    key left matches an index in an earlier backup. Purges and migrations do it as they end."""
    from reelm.accounts.indexes import rotate

    settings = _settings(config, data_dir=data_dir)
    chosen = _chosen_regions(settings, region)
    platform = _platform(settings)
    try:
        for name in chosen:
            done = rotate(platform.cell(name))
            if done is None:
                Console().print(f"{name}: nothing to rotate, or another process is rotating it")
            else:
                Console().print(
                    f"{name}: epoch {done.epoch}, {done.reindexed} account(s) re-indexed, "
                    f"epochs {done.destroyed or 'none'} destroyed"
                )
    finally:
        platform.close()


@social_app.command("reconcile")
def social_reconcile(
    region: Annotated[
        list[str] | None, typer.Option(help="Only this region (repeatable; default: all).")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Apply the counts still owed to the catalog, then recount each region's likes and
    correct the public like counts. Idempotent; safe while the app serves."""
    from reelm.social.engagement import sweep
    from reelm.social.recount import reconcile_likes

    settings = _settings(config, data_dir=data_dir)
    chosen = _chosen_regions(settings, region)
    platform = _platform(settings)
    try:
        for name in chosen:
            applied = sweep(platform, name)
            recount = reconcile_likes(platform, name)
            Console().print(
                f"{name}: {applied} owed count(s) applied, {recount.videos} video(s) recounted, "
                f"{recount.corrected} corrected"
            )
    finally:
        platform.close()


@cell_app.command("identity")
def cell_identity(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Print this cell's identity public key (made on first use, 0600), for the other cells'
    ``peers.<region>.public_key``."""
    from reelm.intercell import identity

    settings = _settings(config, data_dir=data_dir)
    key = identity.load_or_create(settings.identity_key_path())
    print(identity.encode_public(key.public_key()))


@cells_app.command("init")
def cells_init(
    root: Annotated[Path, typer.Argument(help="Directory to write the configurations in.")],
    cell: Annotated[
        list[str],
        typer.Option(help="REGION=URL: a region's cell and where it answers (repeatable)."),
    ],
    admin_url: Annotated[
        str,
        typer.Option(
            help="Superuser URL of the PostgreSQL server to provision (each region's database "
            "and role, and the catalog's). Used here only: no cell is given it."
        ),
    ],
    prefix: Annotated[str, typer.Option(help="Prefix of the databases and roles.")] = "reelm",
) -> None:
    """Provision one database and role per region and the catalog, and write the catalog
    operator's configuration and each cell's, each holding its own region's secrets only."""
    from reelm.regions.deployment import lay_out

    urls: dict[str, str] = {}
    for pair in cell:
        region, sep, url = pair.partition("=")
        if not sep or not url:
            console.print(f"[red]error:[/red] --cell {pair!r}: expected REGION=URL")
            raise typer.Exit(2)
        urls[region] = url
    layout = lay_out(admin_url, root, urls, prefix=prefix)
    console.print(f"catalog operator: {layout.catalog_config}")
    for c in layout.cells.values():
        console.print(f"cell {c.region}: {c.config_file}  (answers at {c.base_url})")
    roles = " ".join(f"--cell-role {pair}" for pair in layout.cell_roles())
    console.print(
        "next: [bold]reelm db upgrade --catalog -c "
        f"{layout.catalog_config} {roles}[/bold], then per region "
        "[bold]reelm serve --region X -c <its reelm.toml>[/bold] and "
        "[bold]reelm worker --region X -c <its reelm.toml>[/bold]"
    )


@cells_app.command("seed")
def cells_seed(
    config: ConfigOption = None,
    samples: Annotated[
        Path | None, typer.Option(help="Post the sample clips made in this directory.")
    ] = None,
    follows: Annotated[
        bool, typer.Option("--follows", help="Make the sample follows (once every cell is seeded).")
    ] = False,
) -> None:
    """The multi-cell demo's sample content, made by each cell for its own region's users."""
    from reelm.demo import seed_demo, seed_follows, seed_videos

    platform = _platform(_settings(config))
    try:
        if follows:
            seed_follows(platform)
            return
        created = seed_demo(platform, follows=False)
        posted = seed_videos(platform, samples=samples) if samples else 0
        console.print(f"cell {platform.local_region}: {created} users, {posted} videos")
    finally:
        platform.close()


@app.command()
def worker(
    region: Annotated[str, typer.Option(help="The region whose jobs this worker runs.")],
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Jobs at a time.")] = 1,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Run one region's jobs (and integrate its transparency log) until Ctrl-C."""
    import asyncio

    from reelm.jobs import queue_of
    from reelm.transparency.log import Integrator

    settings = _settings(config, data_dir=data_dir)
    # A cell's configuration names its region; a single-machine one holds every region.
    _chosen_regions(settings, [region])
    platform = _platform(settings, process="worker")
    integrator = Integrator([platform.cell(region).log]).start()
    console.print(f"worker for region [bold]{region}[/bold] running (Ctrl-C to stop)")
    try:
        with _video_progress() as echo, contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                queue_of(platform, region).work(
                    platform, concurrency=concurrency, install_signal_handlers=True, echo=echo
                )
            )
    finally:
        integrator.stop()
        platform.close()
        console.print("worker stopped")


@contextlib.contextmanager
def _video_progress() -> Iterator[Callable[[uuid.UUID, int], None]]:
    """A bar per video the worker is transcoding; a line when it is ready or not made."""
    from rich.progress import BarColumn, Progress, TaskID, TimeElapsedColumn

    from reelm.jobs import FINISHED_OTHERWISE

    bars: dict[uuid.UUID, TaskID] = {}
    lock = threading.Lock()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        "{task.percentage:>3.0f}%",
        TimeElapsedColumn(),
        console=console,
    ) as progress:

        def echo(video_id: uuid.UUID, percent: int) -> None:
            with lock:
                if video_id not in bars:
                    bars[video_id] = progress.add_task(f"video {video_id}", total=100)
                task = bars[video_id]
                if percent in (100, FINISHED_OTHERWISE):
                    progress.remove_task(bars.pop(video_id))
                    outcome = "ready" if percent == 100 else "not made this time (see the log)"
                    progress.console.print(f"video {video_id}: {outcome}")
                else:
                    progress.update(task, completed=percent)

        yield echo


@audit_app.command("verify")
def audit_verify(
    base_url: Annotated[str, typer.Argument(help="The deployment, e.g. https://reelm.example")],
    state: Annotated[
        Path, typer.Option(help="Where the last trusted checkpoints are kept.")
    ] = Path("reelm-audit.json"),
    entry: Annotated[
        list[str] | None, typer.Option(help="Also check that REGION:INDEX is in the log.")
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(help="Pin REGION=VERIFIER_KEY instead of trusting on first use."),
    ] = None,
) -> None:
    """Verify every region's log: signature, consistency with the last trusted checkpoint,
    and the inclusion of given entries. Fails loudly on a fork, a rollback or a bad proof."""
    from reelm.transparency.auditor import run

    raise typer.Exit(run(base_url, state, entry or [], key or [], show=_print_audit))


def _print_audit(results: list[RegionAudit]) -> None:
    """A line per region, then a table of the releases that served it."""
    out = Console()
    for result in results:
        out.print(f"[green]ok[/green]  {result.describe()}", highlight=False, soft_wrap=True)
    # Wide enough for whole digests: an auditor compares them character by character.
    wide = Console(width=max(out.width, 160))
    for result in results:
        if not result.releases:
            continue
        title = f"Releases that served {result.region}"
        table = Table("#", "time", "version", "process", "regions", title=title)
        table.add_column("digests (package, config)", no_wrap=True)
        for r in result.releases:
            # Text, not markup: the values come from the deployment under audit.
            cells = [
                r["index"],
                r["time"],
                r["version"],
                r["process"],
                " ".join(r["regions"] or []),
                f"{r['package_digest']}\n{r['config_digest']}",
            ]
            table.add_row(*(Text(str(c)) for c in cells))
        wide.print(table)


@audit_app.command("release-digest")
def audit_release_digest(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A reelm package directory: a checkout's src/reelm, or site-packages/reelm of "
            "an installed wheel. Default: the package running this command."
        ),
    ] = None,
    show_config: Annotated[
        bool,
        typer.Option(
            "--show-config",
            help="Also print the configuration digest of these settings and the canonical JSON "
            "it is taken over (secrets withheld).",
        ),
    ] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print the package digest a release entry states, to compare with `reelm audit verify`."""
    from reelm.transparency import release

    root = path if path is not None else release.package_dir()
    if (root / "reelm" / "__init__.py").is_file():  # given the folder above the package
        root = root / "reelm"
    if not (root / "__init__.py").is_file():
        console.print(f"[red]{root} is not a Python package directory (no __init__.py)[/red]")
        raise typer.Exit(2)
    print(f"package {release.tree_digest(root)}  {root.resolve()}")
    if show_config:
        settings = _settings(config, data_dir=data_dir)
        print(f"config  {release.config_digest(settings)}")
        print(release.config_dump(settings).decode())


@audit_app.command("verify-migration")
def audit_verify_migration(
    report_file: Annotated[Path, typer.Argument(help="A report written by reelm migrate.")],
    base_url: Annotated[
        str | None,
        typer.Option(help="Check against this deployment's public logs (else: this config's)."),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(help="Pin REGION=VERIFIER_KEY instead of taking the deployment's."),
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Check a migration report: its signature, its anchors in every region's log, and that
    each user's departure and arrival are logged with the digest it states. Exit 1 if not."""
    from reelm.migration import report as reports
    from reelm.transparency.auditor import AuditFailure
    from reelm.transparency.verify import VerifierKey

    try:
        document = json.loads(report_file.read_text())
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read the report[/red]: {exc}")
        raise typer.Exit(2) from None
    platform = None
    if base_url is not None:
        try:
            keys, fetch = reports.http_sources(base_url)
        except (OSError, ValueError, AuditFailure) as exc:  # unreachable, not reelm, bad keys
            console.print(f"[red]cannot read the logs at {base_url}[/red]: {exc}")
            raise typer.Exit(2) from None
    else:
        platform = _platform(_settings(config, data_dir=data_dir), upgrade=False)
        keys, fetch = reports.platform_keys(platform), reports.platform_fetcher(platform)
    for spec in key or []:
        region, _, text_ = spec.partition("=")
        keys[region] = VerifierKey.parse(text_)
    try:
        problems = reports.verify_report(document, keys, fetch)
    except (OSError, ValueError, AuditFailure) as exc:
        console.print(f"[red]cannot read the logs[/red]: {exc}")
        raise typer.Exit(2) from None
    finally:
        if platform is not None:
            platform.close()
    body = document.get("body", {}) if isinstance(document, dict) else {}
    if problems:
        for problem_ in problems:
            console.print(f"[red]FAIL[/red] {problem_}")
        raise typer.Exit(1)
    totals = body.get("totals", {})
    console.print(
        f"[green]verified[/green]: migration {body.get('migration')} to "
        f"{body.get('destination')}: {totals.get('users')} users, {totals.get('rows')} rows, "
        f"{totals.get('blobs')} blobs, every departure and arrival in the logs"
    )


@app.command()
def migrate(
    market: Annotated[
        str | None, typer.Option(help="Move every user of this market (ISO 3166-1 alpha-2).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="The destination region.")] = None,
    users: Annotated[
        Path | None, typer.Option(help="Move the users listed in this file (one id per line).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Show the plan; change nothing.")] = False,
    resume: Annotated[bool, typer.Option(help="Finish the migration still running.")] = False,
    status_: Annotated[
        bool, typer.Option("--status", help="Show the last migration's state.")
    ] = False,
    abort: Annotated[
        bool,
        typer.Option(help="Stop the running migration: users not yet switched stay (unfrozen)."),
    ] = False,
    migration: Annotated[
        str | None, typer.Option("--id", help="The migration (default: the running or last one).")
    ] = None,
    batch: Annotated[
        int | None, typer.Option(min=1, max=5000, help="Users per batch (default 200).")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Where to write the signed report (JSON).")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Move users' protected data to another region: copy, verify, switch, purge the source
    (keys destroyed), attest in the logs, and write a signed report."""
    from reelm.accounts.errors import AccountError
    from reelm.migration import engine

    platform = _platform(_settings(config, data_dir=data_dir))
    try:
        if status_ or resume or abort:
            try:
                migration_id = (
                    uuid.UUID(migration)
                    if migration
                    else engine.running_migration(platform) or engine.last_migration(platform)
                )
            except ValueError:
                console.print(f"[red]not a migration id: {migration!r}[/red]")
                raise typer.Exit(2) from None
            if migration_id is None:
                console.print("no migration on record")
                raise typer.Exit(0 if status_ else 2)
            try:
                current = engine.status(platform, migration_id)
            except AccountError as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from None
            if status_:
                print(json.dumps(current, indent=2))
                return
            if abort and current["state"] == "running":
                try:
                    outcome = engine.Runner(platform, migration_id).abort()
                except AccountError as exc:
                    console.print(f"[red]{exc}[/red]")
                    raise typer.Exit(2) from None
                console.print(
                    f"migration {migration_id} aborted: {outcome.moved} users had moved and "
                    f"stay moved; {len(outcome.failed)} stay where they were"
                )
                return
            if current["state"] != "running":
                console.print(
                    f"migration {migration_id} is {current['state']}: nothing to resume "
                    f"(report SHA-256 {current['report_sha256']})"
                )
                return
        else:
            if to is None or (market is None and users is None):
                console.print("[red]give --to and --market or --users[/red]")
                raise typer.Exit(2)
            ids = _read_user_ids(users) if users is not None else None
            try:
                plan = engine.make_plan(platform, to, market=market, user_ids=ids)
            except Exception as exc:  # MigrationError, MarketBlocked, UnknownMarket
                console.print(f"[red]cannot plan[/red]: {exc}")
                raise typer.Exit(2) from None
            _print_plan(plan)
            if dry_run:
                return
            migration_id = engine.start(platform, plan, batch_size=batch or engine.DEFAULT_BATCH)
            console.print(f"migration {migration_id} started")
        outcome = _run_migration(platform, migration_id, batch)
        target = report or Path(f"migration-{migration_id}.json")
        if outcome.report is not None:
            from reelm.migration.report import dumps

            target.write_text(dumps(outcome.report))
        rate = outcome.moved / outcome.seconds if outcome.seconds else 0.0
        pause = max(outcome.pauses, default=0.0)
        console.print(
            f"[green]moved {outcome.moved} users[/green] in {outcome.seconds:.1f} s "
            f"({rate:.0f} users/s); writes paused at most {pause:.2f} s per batch; "
            f"report: {target}"
        )
        for user_id, reason in sorted(outcome.failed.items()):
            console.print(f"[red]stayed[/red] user {user_id}: {reason}")
        for user_id, places in sorted(outcome.unreadable.items()):
            console.print(
                f"[red]unreadable[/red] user {user_id}: {', '.join(places)} do not open with "
                "the user's current key"
            )
        if outcome.failed:
            console.print("fix the cause, then run [bold]reelm migrate --resume[/bold]")
        if outcome.failed or outcome.unreadable:
            raise typer.Exit(1)
    finally:
        platform.close()


def _read_user_ids(path: Path) -> list[uuid.UUID]:
    ids = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            ids.append(uuid.UUID(line))
        except ValueError:
            console.print(f"[red]{path}:{number}: not a user id[/red]")
            raise typer.Exit(2) from None
    return ids


def _print_plan(plan) -> None:  # type: ignore[no-untyped-def]
    what = f"market {plan.market}" if plan.market else "the listed users"
    console.print(f"Plan: move {what} to {plan.destination}")
    table = Table("from", "users")
    for region, ids in sorted(plan.users.items()):
        table.add_row(region, f"{len(ids):,}")
    console.print(table)
    rows = ", ".join(f"{n:,} {t}" for t, n in plan.rows.items())
    count = plan.user_count
    console.print(
        f"{count:,} {'user' if count == 1 else 'users'}; rows: {rows or 'none'}; "
        f"{plan.bytes / 1e6:.1f} MB of media"
    )
    for why, skipped in plan.skipped.items():
        console.print(f"skipped {skipped:,}: {why}")


def _run_migration(platform: Platform, migration_id: uuid.UUID, batch: int | None) -> Outcome:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    from reelm.accounts.errors import AccountError
    from reelm.migration import engine

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]} users/s, {task.fields[mbps]} MB/s"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("moving", total=None, rate="-", mbps="-")
        began = time.monotonic()

        def step(phase: str, done: int, total: int, copied: int) -> None:
            elapsed = max(time.monotonic() - began, 1e-6)
            bar.update(
                task,
                completed=done,
                total=total,
                rate=f"{done / elapsed:.0f}",
                mbps=f"{copied / elapsed / 1e6:.1f}",
            )

        runner = engine.Runner(platform, migration_id, progress=step, batch_size=batch)
        try:
            return runner.run(retry_failed=True)
        except AccountError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None


def _user_id(platform, handle: str):  # type: ignore[no-untyped-def]
    from reelm.accounts.lifecycle import public_profile

    return public_profile(platform, handle).user_id


@staff_app.command("grant")
def staff_grant(
    handle: Annotated[str, typer.Argument(help="The staff member's reelm handle.")],
    role: Annotated[str, typer.Option(help="support, moderator or admin.")] = "support",
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Make a user staff. Staff read protected data only through the logged access gateway."""
    from reelm.transparency import gateway

    if role not in ("support", "moderator", "admin"):
        console.print("[red]role must be support, moderator or admin[/red]")
        raise typer.Exit(2)
    platform = _platform(_settings(config, data_dir=data_dir))
    try:
        gateway.grant(platform, _user_id(platform, handle), role)  # type: ignore[arg-type]
        _integrate(platform)
    finally:
        platform.close()
    Console().print(f"@{handle.lstrip('@')} is now {role} staff (logged)")


@staff_app.command("revoke")
def staff_revoke(
    handle: Annotated[str, typer.Argument(help="The staff member's reelm handle.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Take staff access away."""
    from reelm.transparency import gateway

    platform = _platform(_settings(config, data_dir=data_dir))
    try:
        done = gateway.revoke(platform, _user_id(platform, handle))
        _integrate(platform)
    finally:
        platform.close()
    Console().print("revoked (logged)" if done else "was not staff")


@legal_app.command("record")
def legal_record(
    authority: Annotated[
        str, typer.Option(help="Who sent it, e.g. 'US District Court, N.D. Cal.'")
    ],
    kind: Annotated[str, typer.Option(help="court_order, subpoena, government_request, ...")],
    reference: Annotated[str, typer.Option(help="The authority's case number.")],
    outcome: Annotated[
        str, typer.Option(help="pending, disclosed, partially_disclosed, rejected")
    ] = "pending",
    user: Annotated[
        str | None, typer.Option(help="Handle of the account concerned, if any.")
    ] = None,
    region: Annotated[
        str, typer.Option(help="Region whose log records it (without --user).")
    ] = "sg",
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Record a legal request in the public transparency log (no personal data)."""
    from pydantic import ValidationError

    from reelm.transparency import gateway

    try:
        request = gateway.LegalRequest(
            authority=authority,
            kind=kind,
            reference=reference,
            outcome=outcome,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        console.print(f"[red]invalid legal request:[/red] {first['loc'][0]}: {first['msg']}")
        raise typer.Exit(2) from None
    platform = _platform(_settings(config, data_dir=data_dir))
    try:
        subject = _user_id(platform, user) if user else None
        where = gateway.record_legal_request(platform, request, region=region, subject=subject)
        _integrate(platform)
    finally:
        platform.close()
    Console().print(f"recorded in the {where} log (published with this hour's batch)")


def _integrate(platform) -> None:  # type: ignore[no-untyped-def]
    """Publish the batch windows that have closed; the open one waits for its hour (publishing
    it early would split that hour's crowd of entries in two)."""
    for cell in platform.cells.values():
        cell.log.integrate_closed()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _seed_videos(platform: Platform) -> None:
    """The sample clips, with a progress bar while FFmpeg makes them (first run only)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from reelm.demo import seed_videos

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("Making sample clips with FFmpeg", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        posted = seed_videos(platform, on_progress=step)
    if posted:
        console.print(f"posted {posted} sample videos (processing in the background)")


def _serve(settings: Settings, host: str, port: int, *, seed: bool) -> None:
    import uvicorn

    from reelm.app import create_app, server_config, settle_before_serving

    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host  # noqa: S104
    if settings.public_base_url is None:
        # Links (share, Open Graph) point where this process listens; a deployment behind a
        # proxy sets public_base_url to its public address.
        address = f"[{shown}]" if ":" in shown else shown
        settings = settings.model_copy(update={"public_base_url": f"http://{address}:{port}"})
        if not seed and shown != "localhost":
            console.print(
                f"[yellow]public_base_url is not set: links will point to "
                f"{settings.public_base_url}[/yellow]"
            )
    platform = _platform(settings, create=True, process="demo" if seed else "serve")
    try:
        if seed:
            from reelm.demo import seed_demo

            with console.status("Seeding sample users…"):
                created = seed_demo(platform)
            if created:
                console.print(f"seeded {created} sample users")
            _seed_videos(platform)
        server = uvicorn.Server(server_config(create_app(platform), settings, host, port))

        def announce() -> None:
            # Print the address only once the socket is listening, so it works when opened.
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                Console().print(
                    f"\n[bold]reelm is running:[/bold] http://{shown}:{port}/   (Ctrl-C to stop)"
                    f"\ndata: {settings.data_dir.resolve()}\n"
                )

        threading.Thread(target=announce, daemon=True).start()
        from reelm.transparency.log import Integrator

        integrator = Integrator(c.log for c in platform.cells.values()).start()
        from reelm.jobs import WorkerThread

        # The demo runs every region's jobs in-process; production runs `reelm worker`.
        workers = WorkerThread(platform, list(platform.cells)).start() if seed else None
        # uvicorn shuts down gracefully on SIGINT or SIGTERM, then re-raises the signal with the
        # handler it found: make SIGTERM end like Ctrl-C, so the embedded PostgreSQL is
        # stopped too instead of outliving us.
        signal.signal(signal.SIGTERM, _interrupt)
        settle_before_serving()
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        integrator.stop()
        if workers is not None:
            workers.stop()
    finally:
        platform.close()
        if platform.embedded_server is not None:
            platform.embedded_server.cleanup()
        console.print("stopped")


@app.command()
def demo(
    config: ConfigOption = None,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its data.")] = Path(
        "reelm-data"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    cells: Annotated[
        bool,
        typer.Option(
            "--cells",
            help="The deployment shape: each region's cell and worker as its own process, "
            "with its own credentials, behind HAProxy (ports PORT+1...).",
        ),
    ] = False,
) -> None:
    """Start embedded PostgreSQL, migrate, seed sample users and serve. Reuses its data.
    With --cells: one process per region's cell and worker, behind HAProxy as the edge."""
    settings = _settings(config, data_dir=data_dir, market_picker=True)
    if cells:
        _demo_cells(settings, host, port)
        return
    _serve(settings, host, port, seed=True)


def _demo_cells(settings: Settings, host: str, port: int) -> None:
    from reelm import cellsdemo
    from reelm.bootstrap import start_embedded_postgres

    with console.status("Starting the embedded PostgreSQL (standing in for each region's)…"):
        admin_url, server = start_embedded_postgres(settings)
    try:
        with cellsdemo.running(
            settings, admin_url, list(settings.regions), host, port, console.print
        ) as (layout, processes):
            table = Table("process", "pid", "configuration")
            for name, process in processes.running.items():
                region = name.partition("-")[2]
                where = layout.cells[region].config_file if region in layout.cells else ""
                table.add_row(name, str(process.pid), str(where))
            Console().print(table)
            Console().print(
                f"\n[bold]reelm (cells) is running:[/bold] http://localhost:{port}/ through the "
                f"edge   (Ctrl-C to stop)\nlogs: {processes.logs}\n"
            )
            signal.signal(signal.SIGTERM, _interrupt)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    processes.check()
                    time.sleep(1)
    except cellsdemo.DemoError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        server.cleanup()
        console.print("stopped")


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    region: Annotated[
        str | None,
        typer.Option(
            help="Serve as this region's cell: the configuration must hold that region's "
            "secrets and no other's (default: the configuration's `cell`, else every region)."
        ),
    ] = None,
) -> None:
    """Serve against the configured databases (migrating them first)."""
    _serve(_settings(config, cell=region), host, port, seed=False)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("embedded_postgres", "alembic", "procrastinate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
