"""The scheduler inside `hygie serve`: one run at a time across every node sharing the
database (two Runtimes on one database here: an advisory lock on PostgreSQL, a lock file
on SQLite), no second run right after another node's, a clean stop."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mailserver.config import Settings, load_settings
from mailserver.service import Runtime, Service
from retention.jobs import Report
from retention.scheduler import RetentionScheduler, RunLock
from storage.models import RetentionRun
from tests.retention.conftest import DOMAIN, T0, Clock

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
async def nodes(settings: Settings) -> AsyncIterator[list[Runtime]]:
    opened = [Runtime.open(settings), Runtime.open(settings)]
    try:
        yield opened
    finally:
        for runtime in opened:
            await runtime.close()


def scheduler_of(runtime: Runtime, clock: Clock) -> RetentionScheduler:
    made = RetentionScheduler.create(
        runtime.store, runtime.settings.retention.model_dump(), domain=DOMAIN
    )
    made.clock = clock
    return made


async def runs(runtime: Runtime) -> list[RetentionRun]:
    async with runtime.messages_db.read() as session:
        return list(await session.scalars(select(RetentionRun).order_by(RetentionRun.id)))


async def test_only_the_node_holding_the_lock_runs_the_jobs(nodes: list[Runtime]) -> None:
    clock = Clock(T0)
    first, second = (scheduler_of(node, clock) for node in nodes)
    inside, release = asyncio.Event(), asyncio.Event()
    real_run = first.jobs.run

    async def slow_run(now: datetime, **options: Any) -> Report:
        inside.set()
        await release.wait()
        return await real_run(now, **options)

    first.jobs.run = slow_run  # type: ignore[method-assign]
    running = asyncio.create_task(first.tick())
    await asyncio.wait_for(inside.wait(), 30)

    assert (await second.tick()).outcome == "busy"

    release.set()
    assert (await running).outcome == "ran"
    # the lock is free again, but a run just happened on the other node
    assert (await second.tick()).outcome == "recent"
    [run] = await runs(nodes[0])
    assert run.outcome == "ok" and run.as_of == T0 and run.finished_at is not None

    clock.now = T0 + timedelta(hours=1)  # one interval later: the next turn runs
    assert (await second.tick()).outcome == "ran"
    assert len(await runs(nodes[1])) == 2


async def test_two_nodes_ticking_together_run_once(nodes: list[Runtime]) -> None:
    clock = Clock(T0)
    ticks = await asyncio.gather(*(scheduler_of(node, clock).tick() for node in nodes))

    assert sorted(t.outcome for t in ticks).count("ran") == 1
    assert len(await runs(nodes[0])) == 1


async def test_the_lock_is_refused_while_held_and_free_after(nodes: list[Runtime]) -> None:
    first, second = (RunLock(node.messages_db) for node in nodes)
    async with first.hold() as acquired:
        assert acquired
        async with second.hold() as other:
            assert not other
    async with second.hold() as acquired:
        assert acquired


async def test_the_scheduler_runs_periodically_and_stops_cleanly(nodes: list[Runtime]) -> None:
    scheduler = scheduler_of(nodes[0], Clock(T0))
    scheduler.startup_delay = 0
    scheduler.start()
    try:
        for _ in range(300):
            if await runs(nodes[0]):
                break
            await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
    [run] = await runs(nodes[0])
    assert run.outcome == "ok"
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "hygie-retention"]


async def test_serve_starts_and_stops_the_scheduler(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for section in ("smtp", "submission", "submissions", "imap", "imaps", "web", "admin", "ops"):
        monkeypatch.setenv(f"HYGIE_{section.upper()}_ENABLED", "false")
    service = Service(load_settings(settings.data_dir), out=io.StringIO())
    await service.start()
    try:
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert "hygie-retention" in names
    finally:
        await service.stop()
    assert "hygie-retention" not in {task.get_name() for task in asyncio.all_tasks()}
