"""Running the retention jobs: once at a time across every node, periodically in `serve`.

On PostgreSQL, several nodes serve one database: a run holds a transaction-level advisory
lock (`pg_try_advisory_xact_lock`) on a connection of its own, so a second node that
tries meanwhile is told "busy" at once, and the lock goes with the transaction even if
the node dies. On SQLite (one machine) a lock file beside the database does the same
between processes (`serve` and a `hygie retention run` by hand). Each finished run is
recorded in `retention_runs`; the scheduler skips its turn when any node ran recently.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from retention.jobs import Progress, Report, RetentionJobs
from retention.policy import RetentionPolicy
from storage.db import Database
from storage.functional_log import node_name
from storage.messages import MessageStore
from storage.models import RetentionRun, utcnow

log = logging.getLogger("hygie.retention")

# Any constant other than the audit trail's: "HygR".
LOCK_KEY = 0x48796752
STARTUP_DELAY_SECONDS = 60.0
STOP_WAIT_SECONDS = 30.0
Clock = Callable[[], datetime]
Outcome = Literal["ran", "busy", "recent"]


class RunLock:
    """At most one retention run at a time, whichever node or process asks."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def lock_file(self) -> Path:
        return Path(f"{make_url(self.database.url).database}.retention-lock")

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        """Yields True while this caller holds the lock, False when someone else does."""
        if self.database.is_sqlite:
            with self._file_lock() as acquired:
                yield acquired
            return
        async with self.database.writer_engine.connect() as connection, connection.begin():
            acquired = bool(
                await connection.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY}
                )
            )
            yield acquired

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[bool]:
        descriptor = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(descriptor)  # closing releases the lock


@dataclass(frozen=True)
class Tick:
    outcome: Outcome
    report: Report | None = None


async def _last_run(database: Database) -> datetime | None:
    async with database.read() as session:
        return await session.scalar(
            select(RetentionRun.as_of)
            .where(RetentionRun.outcome == "ok")
            .order_by(RetentionRun.id.desc())
            .limit(1)
        )


async def run_recorded(
    jobs: RetentionJobs,
    lock: RunLock,
    now: datetime,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    unless_ran_within: timedelta | None = None,
) -> Tick:
    """One run under the lock, recorded in `retention_runs` (busy: another holds it)."""
    database = jobs.database
    async with lock.hold() as acquired:
        if not acquired:
            return Tick("busy")
        if unless_ran_within is not None:
            last = await _last_run(database)
            if last is not None and now - unless_ran_within < last <= now:
                return Tick("recent")
        async with database.write() as session, session.begin():
            row = RetentionRun(node=node_name(), as_of=now, started_at=utcnow(), summary="{}")
            session.add(row)
            await session.flush()
            run_id = row.id
        outcome, summary = "failed", "{}"
        try:
            report = await jobs.run(now, progress=progress, should_stop=should_stop)
            outcome, summary = "ok", json.dumps(report.counts())
        finally:
            async with database.write() as session, session.begin():
                await session.execute(
                    update(RetentionRun)
                    .where(RetentionRun.id == run_id)
                    .values(outcome=outcome, finished_at=utcnow(), summary=summary)
                )
        return Tick("ran", report)


class RetentionScheduler:
    """Runs the retention jobs every `interval_seconds` inside `hygie serve`."""

    def __init__(
        self,
        jobs: RetentionJobs,
        lock: RunLock,
        *,
        interval_seconds: float,
        clock: Clock = utcnow,
        startup_delay_seconds: float = STARTUP_DELAY_SECONDS,
    ) -> None:
        self.jobs = jobs
        self.lock = lock
        self.interval = interval_seconds
        self.clock = clock
        self.startup_delay = startup_delay_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def create(
        cls, store: MessageStore, settings: Mapping[str, Any], *, domain: str
    ) -> RetentionScheduler:
        """The scheduler `serve` runs, from the `[retention]` settings."""
        jobs = RetentionJobs(store, RetentionPolicy.from_mapping(settings), domain=domain)
        return cls(
            jobs, RunLock(store.database), interval_seconds=float(settings["interval_seconds"])
        )

    async def tick(self) -> Tick:
        """One turn: run unless another node holds the lock or ran within 90% of the
        interval (nodes started at different times then share one schedule)."""
        tick = await run_recorded(
            self.jobs,
            self.lock,
            self.clock(),
            should_stop=self._stopping.is_set,
            unless_ran_within=timedelta(seconds=self.interval * 0.9),
        )
        if tick.report is not None:
            log.info("retention run: %s", json.dumps(tick.report.counts()))
        return tick

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="hygie-retention")

    async def _loop(self) -> None:
        delay = self.startup_delay
        while not await self._sleep(delay):
            try:
                await self.tick()
            except Exception:  # logged; the next turn tries again
                log.exception("retention run failed")
            delay = self.interval

    async def _sleep(self, seconds: float) -> bool:
        """Wait `seconds`; True when asked to stop meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def stop(self) -> None:
        """Ask a run to stop after its current batch; wait for it, then cancel it."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _pending = await asyncio.wait({task}, timeout=STOP_WAIT_SECONDS)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
