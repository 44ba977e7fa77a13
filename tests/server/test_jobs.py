"""The job runner with real spawned worker processes: progress fan-out, cancel, back-pressure, errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import psutil
import pytest

from server import errors
from server.jobs import JobRunner, JobSnapshot, JobState, RunOutOfMemory, WorkerDied
from server.observability import Metrics
from server.settings import Settings
from tests.server import toy_jobs


@pytest.fixture
async def runner() -> AsyncIterator[JobRunner]:
    async with JobRunner(max_running=2, max_queued=2, progress_interval=0) as runner:
        yield runner


async def collect(runner: JobRunner, job_id: str) -> list[JobSnapshot]:
    return [snapshot async for snapshot in runner.watch(job_id)]


async def first_progress(runner: JobRunner, job_id: str) -> JobSnapshot:
    async with contextlib.aclosing(runner.watch(job_id)) as snapshots:
        async for snapshot in snapshots:
            if snapshot.state is JobState.RUNNING and snapshot.total == 0 and snapshot.done > 0:
                return snapshot
            if snapshot.terminal:
                break
    raise AssertionError(f"job {job_id} never reported progress")


async def test_progress_reaches_every_watcher_and_the_result_returns(runner: JobRunner) -> None:
    handle = runner.submit(toy_jobs.count, {"n": 20})
    views = await asyncio.gather(*(collect(runner, handle.job_id) for _ in range(3)))
    result = await handle.result()
    late = await collect(runner, handle.job_id)

    assert result == {"counted": 20}
    for snapshots in views:
        dones = [snapshot.done for snapshot in snapshots]
        assert dones == sorted(dones)
        final = snapshots[-1]
        assert (final.state, final.done, final.total) == (JobState.SUCCEEDED, 20, 20)
        assert final.info == {"phase": "counting"}
        assert [snapshot.terminal for snapshot in snapshots].count(True) == 1
    assert late == [views[0][-1]]  # a late watcher gets the final snapshot at once
    assert runner.watcher_count(handle.job_id) == 0


async def test_cancel_stops_a_running_job(runner: JobRunner) -> None:
    handle = runner.submit(toy_jobs.spin, {})
    await first_progress(runner, handle.job_id)

    assert runner.cancel(handle.job_id)
    with pytest.raises(errors.Cancelled):
        await handle.result()
    assert handle.snapshot.state is JobState.CANCELLED
    assert not runner.cancel(handle.job_id)  # nothing left to cancel


async def test_capacity_limit_refuses_with_retry_after_and_queued_jobs_cancel_at_once() -> None:
    metrics = Metrics()
    async with JobRunner(max_running=1, max_queued=1, on_load_change=metrics.set_run_load) as runner:
        running = runner.submit(toy_jobs.spin, {})
        queued = runner.submit(toy_jobs.spin, {})
        with pytest.raises(errors.ResourceExhausted) as refused:
            runner.submit(toy_jobs.spin, {})
        load = (metrics.sample("equihome_runs_in_flight"), metrics.sample("equihome_runs_queued"))

        assert runner.cancel(queued.job_id)
        assert queued.snapshot.state is JobState.CANCELLED
        with pytest.raises(errors.Cancelled):
            await queued.result()
        runner.cancel(running.job_id)
        with pytest.raises(errors.Cancelled):
            await running.result()

    assert refused.value.retry_after > 0
    assert refused.value.reason == "RUN_CAPACITY_EXHAUSTED"
    assert load == (1, 1)
    assert (metrics.sample("equihome_runs_in_flight"), metrics.sample("equihome_runs_queued")) == (0, 0)


async def test_queued_job_runs_when_a_slot_frees() -> None:
    async with JobRunner(max_running=1, max_queued=1, progress_interval=0) as runner:
        first = runner.submit(toy_jobs.count, {"n": 3})
        second = runner.submit(toy_jobs.count, {"n": 2})
        assert second.snapshot.state is JobState.QUEUED

        assert await first.result() == {"counted": 3}
        assert await second.result() == {"counted": 2}


async def test_exception_in_job_propagates(runner: JobRunner) -> None:
    handle = runner.submit(toy_jobs.fail, "oops")

    with pytest.raises(ValueError, match="bad payload: oops"):
        await handle.result()
    assert handle.snapshot.state is JobState.FAILED
    assert (handle.snapshot.done, handle.snapshot.total) == (1, 2)


async def test_watcher_that_goes_away_is_cleaned_up(runner: JobRunner) -> None:
    handle = runner.submit(toy_jobs.spin, {})
    await first_progress(runner, handle.job_id)
    watching = asyncio.ensure_future(collect(runner, handle.job_id))
    while runner.watcher_count(handle.job_id) == 0:
        await asyncio.sleep(0.01)

    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watching

    assert runner.watcher_count(handle.job_id) == 0
    runner.cancel(handle.job_id)


async def test_shutdown_cancels_running_jobs_and_refuses_new_ones() -> None:
    runner = JobRunner(max_running=1, max_queued=1)
    await runner.start()
    running = runner.submit(toy_jobs.spin, {})
    queued = runner.submit(toy_jobs.spin, {})

    await runner.shutdown()

    for handle in (running, queued):
        with pytest.raises(errors.Cancelled):
            await handle.result()
    with pytest.raises(errors.Unavailable):
        runner.submit(toy_jobs.spin, {})


async def test_unknown_job_cannot_be_watched(runner: JobRunner) -> None:
    with pytest.raises(errors.NotFound):
        await collect(runner, "no-such-job")


async def test_shutdown_can_wait_for_running_jobs_instead(settings: Settings) -> None:
    metrics = Metrics()
    waiting = settings.model_copy(update={"shutdown_cancels_runs": False, "max_concurrent_runs": 1})
    runner = JobRunner.from_settings(waiting, metrics)
    await runner.start()
    handle = runner.submit(toy_jobs.count, {"n": 5})

    await runner.shutdown()

    assert await handle.result() == {"counted": 5}
    assert metrics.sample("equihome_runs_in_flight") == 0


async def test_a_cancel_the_job_ignores_kills_its_worker_and_the_slot_recovers() -> None:
    async with JobRunner(max_running=1, max_queued=1, progress_interval=0, cancel_grace_s=0.2) as runner:
        handle = runner.submit(toy_jobs.stubborn, {"seconds": 60})
        await first_progress(runner, handle.job_id)
        (worker_pid,) = runner.worker_pids()

        runner.cancel(handle.job_id)
        with pytest.raises(errors.Cancelled):
            await handle.result()
        after = await runner.submit(toy_jobs.pid, None).result()

    assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
    assert after != worker_pid  # a fresh worker took the slot


async def test_a_run_beyond_the_memory_limit_fails_alone_and_the_worker_is_replaced() -> None:
    async with JobRunner(max_running=1, max_queued=1, memory_bytes=700 * 1024 * 1024) as runner:
        small = await runner.submit(toy_jobs.hog, {"mib": 50}).result()
        with pytest.raises(RunOutOfMemory) as refused:
            await runner.submit(toy_jobs.hog, {"mib": 2048}).result()
        again = await runner.submit(toy_jobs.hog, {"mib": 50}).result()

    assert (small, again) == (50, 50)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.reason == "RUN_MEMORY_EXHAUSTED"
    assert refused.value.metadata["max_bytes"] == str(700 * 1024 * 1024)


async def test_a_worker_killed_from_outside_fails_only_its_own_job() -> None:
    async with JobRunner(max_running=2, max_queued=0, progress_interval=0) as runner:
        victim = runner.submit(toy_jobs.stubborn, {"seconds": 60})
        bystander = runner.submit(toy_jobs.count, {"n": 30})
        await first_progress(runner, victim.job_id)
        victim_pid = next(pid for pid in runner.worker_pids() if pid != await_pid_of(runner, bystander))
        psutil.Process(victim_pid).kill()

        with pytest.raises(WorkerDied):
            await victim.result()
        assert await bystander.result() == {"counted": 30}


def await_pid_of(runner: JobRunner, handle: object) -> int:
    """The pid of the worker running ``handle`` (the job runner keeps one worker per slot)."""
    job = runner._jobs[handle.job_id]  # type: ignore[attr-defined]
    assert job.worker is not None and job.worker.pid is not None
    return job.worker.pid


async def test_one_owner_cannot_take_more_than_its_quota() -> None:
    async with JobRunner(max_running=1, max_queued=4, max_per_owner=2) as runner:
        mine = [runner.submit(toy_jobs.spin, {}, owner="alice") for _ in range(2)]
        with pytest.raises(errors.ResourceExhausted) as refused:
            runner.submit(toy_jobs.spin, {}, owner="alice")
        theirs = runner.submit(toy_jobs.spin, {}, owner="bob")
        runner.cancel(mine[1].job_id)
        again = runner.submit(toy_jobs.spin, {}, owner="alice")  # a slot of alice's quota came back
        for handle in (*mine, theirs, again):
            runner.cancel(handle.job_id)

    assert refused.value.reason == "RUN_QUOTA_EXHAUSTED"
    assert refused.value.metadata == {"owner": "alice", "max_active_runs": "2"}
    assert refused.value.retry_after > 0


async def test_a_cache_kept_between_jobs_is_dropped_before_another_kind_of_job() -> None:
    async with JobRunner(max_running=1, max_queued=4, progress_interval=0) as one_worker:
        assert await one_worker.submit(toy_jobs.remember, "a").result() == 1
        assert await one_worker.submit(toy_jobs.remember, "b").result() == 2  # kept for its own kind
        assert await one_worker.submit(toy_jobs.kept, None).result() == 0  # dropped for another
