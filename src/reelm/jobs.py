"""Job queues: one procrastinate queue per region, in that region's own database.

A job's payload carries ids only (random user or video ids), never personal data, and it runs
on a worker of the job's region (`reelm worker --region X`), which holds that region's stores
and nothing else. The web process only defers jobs; `reelm demo` runs a worker in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import procrastinate
from procrastinate.schema import SchemaManager
from sqlalchemy.engine import make_url

from reelm.bootstrap import Platform

log = logging.getLogger("reelm.jobs")

MAINTENANCE = "maintenance"


def schema_sql() -> str:
    """procrastinate's tables, applied to each region by an Alembic migration."""
    return SchemaManager.get_schema()


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _context(context: procrastinate.JobContext) -> tuple[Platform, str]:
    extra = context.additional_context or {}
    return extra["platform"], extra["region"]


def purge_due_task(context: procrastinate.JobContext, timestamp: int) -> int:
    """Hourly, per region: purge the accounts whose deletion grace period is over."""
    from reelm.accounts.lifecycle import purge_due

    platform, region = _context(context)
    purged = purge_due(platform, regions=[region])
    if purged:
        log.info("purged %d account(s) in %s", len(purged), region)
    return len(purged)


def process_video_task(context: procrastinate.JobContext, video_id: str) -> str:
    """Transcode one uploaded video (see reelm.media.videos)."""
    from reelm.media.videos import MAX_ATTEMPTS, process_video

    platform, region = _context(context)
    echo: ProgressEcho = (context.additional_context or {}).get("echo") or _echo_progress
    previous, ident = context.job.attempts, uuid.UUID(video_id)
    try:
        status = process_video(
            platform,
            region,
            ident,
            attempt=previous + 1,
            final_attempt=previous + 1 >= MAX_ATTEMPTS,
            echo=echo,
        )
    except Exception:
        echo(ident, FINISHED_OTHERWISE)
        raise
    echo(ident, 100 if status == "ready" else FINISHED_OTHERWISE)
    return status


def media_sweep_task(context: procrastinate.JobContext, timestamp: int) -> int:
    """Every 10 minutes, per region: requeue videos that lost their job, expire uploads."""
    from reelm.media.videos import sweep

    platform, region = _context(context)
    return sweep(platform, region)


def reconcile_task(context: procrastinate.JobContext, timestamp: int) -> int:
    """Every 10 minutes, per region: undo sign-ups that never reached the catalog."""
    from reelm.accounts.lifecycle import reconcile_sign_ups

    platform, region = _context(context)
    return len(reconcile_sign_ups(platform, region))


def deliver_task(context: procrastinate.JobContext, actor: str, sealed: str) -> bool:
    """A notification held behind a migration fence (see reelm.social.notify): delivered once
    the fence lifts; UserMoving until then, which procrastinate retries later."""
    import base64

    from reelm.social.notify import deliver_held

    platform, region = _context(context)
    return deliver_held(platform, region, uuid.UUID(actor), base64.b64decode(sealed))


def intercell_send_task(context: procrastinate.JobContext, delivery: str) -> str:
    """An inter-cell delivery PUT to its peer until acknowledged (reelm.intercell.transport):
    NotAcknowledged until then, which procrastinate retries later."""
    from reelm.intercell.transport import send

    platform, region = _context(context)
    return send(platform, region, uuid.UUID(delivery))


def intercell_count_task(context: procrastinate.JobContext, timestamp: int) -> int:
    """Hourly, per region: the transparency log's counts of the deliveries sent last hour, and
    the receipts no sender can retry any more forgotten."""
    from reelm.intercell.delivery import log_counts
    from reelm.intercell.receiver import forget_receipts

    platform, region = _context(context)
    forget_receipts(platform, region)
    return log_counts(platform, region)


def rotate_index_task(context: procrastinate.JobContext, timestamp: int) -> int:
    """Daily, per region: a new blind-index key epoch, the old key destroyed (purges and
    migrations rotate too, as they finish; this bounds the window when neither ran)."""
    from reelm.accounts.indexes import rotate

    platform, region = _context(context)
    rotation = rotate(platform.cell(region))
    return 0 if rotation is None else rotation.epoch


def engagement_sweep_task(context: procrastinate.JobContext, timestamp: int) -> int:
    """Every minute, per region: apply the engagement counts requests could not apply."""
    from reelm.social.engagement import sweep

    platform, region = _context(context)
    return sweep(platform, region)


def likes_recount_task(context: procrastinate.JobContext, timestamp: int) -> int:
    """Hourly, per region: recount the region's likes and correct the catalog's counts."""
    from reelm.social.recount import reconcile_likes

    platform, region = _context(context)
    return reconcile_likes(platform, region).corrected


# What a worker is told of each video it processes: a percentage, 100 when it is ready, or
# FINISHED_OTHERWISE (failed, retried later, or deleted meanwhile).
ProgressEcho = Callable[[uuid.UUID, int], None]
FINISHED_OTHERWISE = -1


def _echo_progress(video_id: uuid.UUID, percent: int) -> None:
    if percent == FINISHED_OTHERWISE:
        log.info("video %s: not made this time", video_id)
    elif percent % 10 == 0:
        log.info("video %s: %d%%", video_id, percent)


def _new_app(connector: procrastinate.BaseConnector) -> procrastinate.App:
    """An app over one region's database with every reelm task registered.

    Each region gets its own app and its own task objects: procrastinate binds a task to one
    app (one database), and a region's jobs must stay in that region's database."""
    app = procrastinate.App(connector=connector)
    purge = app.task(name="accounts.purge_due", queue=MAINTENANCE, pass_context=True)(
        purge_due_task
    )
    app.periodic(cron="7 * * * *", periodic_id="purge-due")(purge)
    from reelm.media.videos import MAX_ATTEMPTS, MEDIA_QUEUE, PROCESS_TASK

    app.task(
        name=PROCESS_TASK,
        queue=MEDIA_QUEUE,
        pass_context=True,
        # procrastinate counts earlier attempts: MAX_ATTEMPTS runs in all, 3 s then 9 s apart.
        retry=procrastinate.RetryStrategy(max_attempts=MAX_ATTEMPTS - 1, exponential_wait=3),
    )(process_video_task)
    for name, cron, periodic_id, task in MAINTENANCE_TASKS:
        periodic = app.task(name=name, queue=MAINTENANCE, pass_context=True)(task)
        app.periodic(cron=cron, periodic_id=periodic_id)(periodic)
    from reelm.social.notify import DELIVER_ATTEMPTS, DELIVER_BACKOFF, DELIVER_TASK

    app.task(
        name=DELIVER_TASK,
        pass_context=True,
        retry=procrastinate.RetryStrategy(
            max_attempts=DELIVER_ATTEMPTS, exponential_wait=DELIVER_BACKOFF
        ),
    )(deliver_task)
    from reelm.intercell.delivery import QUEUE, SEND_ATTEMPTS, SEND_BACKOFF, SEND_TASK

    app.task(
        name=SEND_TASK,
        queue=QUEUE,
        pass_context=True,
        retry=procrastinate.RetryStrategy(
            max_attempts=SEND_ATTEMPTS, exponential_wait=SEND_BACKOFF
        ),
    )(intercell_send_task)
    return app


# Periodic maintenance of each region: task name, cron, periodic id, function.
MAINTENANCE_TASKS: tuple[tuple[str, str, str, Callable[..., int]], ...] = (
    ("media.sweep", "*/10 * * * *", "media-sweep", media_sweep_task),
    ("accounts.reconcile", "*/10 * * * *", "accounts-reconcile", reconcile_task),
    ("engagement.sweep", "* * * * *", "engagement-sweep", engagement_sweep_task),
    ("engagement.recount", "23 * * * *", "likes-recount", likes_recount_task),
    ("accounts.rotate_index", "37 3 * * *", "rotate-index", rotate_index_task),
    ("intercell.count", "3 * * * *", "intercell-count", intercell_count_task),
)


@dataclass
class RegionQueue:
    """The procrastinate app of one region: defer from anywhere, work in the region."""

    region: str
    url: str
    _app: procrastinate.App | None = field(default=None, repr=False)

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def app(self) -> procrastinate.App:
        """A synchronous app for deferring and inspecting jobs (web and CLI processes), opened
        once per process and region: deferring borrows one of its two connections."""
        with self._lock:
            if self._app is None:
                connector = procrastinate.SyncPsycopgConnector(
                    conninfo=_conninfo(self.url), min_size=1, max_size=2
                )
                app = _new_app(connector)
                app.open()
                self._app = app
            return self._app

    def defer(self, task_name: str, *, queueing_lock: str | None = None, **payload: Any) -> int:
        """Defer a job; with a ``queueing_lock``, raises procrastinate's ``AlreadyEnqueued``
        when a job holding the same lock still waits."""
        configured = self.app.configure_task(task_name, queueing_lock=queueing_lock)
        job_id: int = configured.defer(**payload)
        return job_id

    def jobs(self, status: str | None = None) -> list[Any]:
        return list(self.app.job_manager.list_jobs(status=status))

    def close(self) -> None:
        with self._lock:
            if self._app is not None:
                self._app.close()
                self._app = None

    async def work(
        self,
        platform: Platform,
        *,
        wait: bool = True,
        concurrency: int = 1,
        install_signal_handlers: bool = False,
        echo: ProgressEcho | None = None,
    ) -> None:
        """Run a worker for this region's queues until cancelled (or, wait=False, until idle)."""
        app = _new_app(procrastinate.PsycopgConnector(conninfo=_conninfo(self.url)))
        stall = platform.settings.job_stall_seconds
        async with app.open_async():
            await retry_stalled(app, stall)
            watchdog = asyncio.create_task(_watch_stalled(app, stall)) if wait else None
            try:
                await app.run_worker_async(
                    wait=wait,
                    concurrency=concurrency,
                    install_signal_handlers=install_signal_handlers,
                    additional_context={
                        "platform": platform,
                        "region": self.region,
                        "echo": echo,
                    },
                    listen_notify=wait,
                    update_heartbeat_interval=stall / 3,
                    stalled_worker_timeout=stall,
                )
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watchdog


async def retry_stalled(app: procrastinate.App, stall_seconds: float) -> int:
    """Put back in the queue the jobs of workers that stopped beating (killed, or their
    machine lost): the job runs again, from the start, on a live worker."""
    stalled = list(await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stall_seconds))
    for job in stalled:
        log.warning("job %s (%s) lost its worker: retrying it", job.id, job.task_name)
        await app.job_manager.retry_job(job)
    return len(stalled)


async def _watch_stalled(app: procrastinate.App, stall_seconds: float) -> None:
    while True:
        await asyncio.sleep(stall_seconds / 2)
        try:
            await retry_stalled(app, stall_seconds)
        except Exception:  # a database hiccup must not stop the worker; try again later
            log.exception("looking for stalled jobs failed")


class WorkerThread:
    """Workers for some regions in a background thread (the demo runs one in-process)."""

    def __init__(self, platform: Platform, regions: list[str]) -> None:
        self.platform = platform
        self.regions = regions
        self._thread = threading.Thread(target=self._run, name="reelm-worker", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> WorkerThread:
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def _run(self) -> None:
        # asyncio.run cancels and awaits every leftover task (connection pools included).
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        workers = [
            asyncio.create_task(queue_of(self.platform, r).work(self.platform))
            for r in self.regions
        ]
        await self._stop.wait()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


def queue_of(platform: Platform, region: str) -> RegionQueue:
    """The region's queue, shared by the whole process (closed with the platform)."""
    with _QUEUES_LOCK:
        queue = platform.queues.get(region)
        if queue is None:
            queue = platform.queues[region] = RegionQueue(region, platform.cell(region).db.url)
    assert isinstance(queue, RegionQueue)
    return queue


_QUEUES_LOCK = threading.Lock()
