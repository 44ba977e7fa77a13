"""StudyService: studies as job resources (create, get, list, cancel, watch) and small unary shortcuts.

A study runs like a simulation job (``server/services/simulation.py``): admitted and costed off the event
loop, submitted to the ``JobRunner`` (refused with RESOURCE_EXHAUSTED before anything is stored when the
runner is full), stored, then followed by one background task until it ends. Progress is read live from
the job while it runs here; a study left unfinished by a previous process is INTERRUPTED.

Every study belongs to its creator (the token's subject): to anyone else it does not exist, unless the
caller holds the simulation:admin scope. Request ids are per owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from equihome.events.v1 import event_pb2
from equihome.study.v1 import study_pb2 as pb
from equihome.study.v1 import study_service_pb2 as service_pb2
from equihome.study.v1 import study_service_pb2_grpc
from server import errors, request_fields
from server.admission import RunLimits
from server.app import Lifecycle
from server.auth import Principal, authenticated_caller
from server.jobs import JobHandle, JobRunner, JobState
from server.mapping.simulation import SimulationInterrupted
from server.store import RUN_RETENTION, RunState, StudyRecord, StudyStore, study_not_found
from server.studies.kinds import KINDS, Admitted, StudyKind
from simulation import ENGINE_VERSION

log = logging.getLogger(__name__)

Study = pb.Study
NAME_PATTERN = re.compile(r"studies/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_DISPLAY_NAME_CHARS = 200
UNARY_MAX_PATH_RUNS = 100_000  # RunStressTest / RunSensitivity: paths x runs (docs/api.md)
UNARY_TIMEOUT_WITHOUT_DEADLINE_S = 60.0
PURGE_INTERVAL = timedelta(hours=1)
ADMISSION_THREADS = 2

STATES = {
    RunState.PENDING: Study.STATE_PENDING, RunState.RUNNING: Study.STATE_RUNNING,
    RunState.SUCCEEDED: Study.STATE_SUCCEEDED, RunState.FAILED: Study.STATE_FAILED,
    RunState.CANCELLED: Study.STATE_CANCELLED, RunState.INTERRUPTED: Study.STATE_INTERRUPTED,
}
RUN_STATES = {value: key for key, value in STATES.items()}


@dataclass(eq=False)
class ActiveStudy:
    """A stored study whose job this process runs (or queues)."""

    record: StudyRecord
    handle: JobHandle
    finished: asyncio.Future[StudyRecord]


class StudyService(study_service_pb2_grpc.StudyServiceServicer):
    def __init__(self, studies: StudyStore, runner: JobRunner, lifecycle: Lifecycle, limits: RunLimits,
                 publish: Callable[[event_pb2.StudyCompleted], None]):
        self._studies = studies
        self._publish = publish  # onto the event stream: StudyCompleted
        self._runner = runner
        self._lifecycle = lifecycle
        self._limits = limits
        self._active: dict[str, ActiveStudy] = {}
        self._admission = ThreadPoolExecutor(ADMISSION_THREADS, thread_name_prefix="equihome-study-admission")
        self._started = datetime.now(UTC)
        lifecycle.add_background_task(self._housekeeping(), name="study retention")
        lifecycle.add_close_hook(self._close, name="study admission")

    async def _close(self) -> None:
        await asyncio.to_thread(self._admission.shutdown, wait=True, cancel_futures=True)

    async def _housekeeping(self) -> None:
        """Mark what a previous process left unfinished INTERRUPTED, then delete expired studies hourly."""
        interrupted = await self._studies.mark_unfinished_interrupted(self._started)
        if interrupted:
            log.warning("%d studies left unfinished by the last process are now INTERRUPTED", interrupted)
        while True:
            await self._studies.purge_expired()
            await asyncio.sleep(PURGE_INTERVAL.total_seconds())

    # --- RPCs --------------------------------------------------------------------------------------

    async def CreateStudy(self, request: service_pb2.CreateStudyRequest,
                          context: grpc.aio.ServicerContext) -> service_pb2.CreateStudyResponse:
        caller = authenticated_caller()
        request_id = request_fields.request_id(request.request_id)
        sent = request.study
        if len(sent.display_name) > MAX_DISPLAY_NAME_CHARS:
            raise errors.InvalidArgument(
                "display_name is too long.", [("study.display_name", f"at most {MAX_DISPLAY_NAME_CHARS} characters")],
                reason="FIELD_INVALID")
        kind, admitted = await self._admit(sent.spec, "study.spec")
        spec = Study(display_name=sent.display_name, spec=sent.spec, owner=caller.subject,
                     engine_version=ENGINE_VERSION, progress=_progress(admitted.runs, 0, admitted.paths_total))
        if request.validate_only:
            spec.state = Study.STATE_PENDING
            return service_pb2.CreateStudyResponse(study=spec)
        request_hash = request_fields.request_fingerprint(request) if request_id else None
        if request_id is not None:
            existing = await self._studies.find_request(caller.subject, request_id, request_hash)
            if existing is not None:
                return service_pb2.CreateStudyResponse(study=self._view(existing))
        name = f"studies/{uuid.uuid4()}"
        handle = self._runner.submit(kind.run, admitted.payload, job_id=name, owner=caller.subject)
        stored: asyncio.Future[StudyRecord] = asyncio.get_running_loop().create_future()
        self._lifecycle.add_background_task(
            self._store_and_follow(name, spec, kind, handle, request_id, request_hash, stored), name=f"study {name}")
        return service_pb2.CreateStudyResponse(study=self._view(await asyncio.shield(stored)))

    async def GetStudy(self, request: service_pb2.GetStudyRequest,
                       context: grpc.aio.ServicerContext) -> service_pb2.GetStudyResponse:
        record = await self._visible(_name(request.name), authenticated_caller())
        return service_pb2.GetStudyResponse(study=self._view(record))

    async def ListStudies(self, request: service_pb2.ListStudiesRequest,
                          context: grpc.aio.ServicerContext) -> service_pb2.ListStudiesResponse:
        caller = authenticated_caller()
        states = []
        for index, state in enumerate(request.states):
            if state not in RUN_STATES:
                raise errors.InvalidArgument(
                    f"states[{index}] is not a study state.", [(f"states[{index}]", "must not be STATE_UNSPECIFIED")],
                    reason="FIELD_INVALID")
            states.append(RUN_STATES[state])
        records, token = await self._studies.list(owner=None if caller.is_admin else caller.subject, states=states,
                                                  page_size=request.page_size, page_token=request.page_token)
        return service_pb2.ListStudiesResponse(studies=[self._view(r) for r in records], next_page_token=token)

    async def CancelStudy(self, request: service_pb2.CancelStudyRequest,
                          context: grpc.aio.ServicerContext) -> service_pb2.CancelStudyResponse:
        name = _name(request.name)
        record = await self._visible(name, authenticated_caller())
        active = self._active.get(name)
        if active is not None:
            self._runner.cancel(name)  # a queued job ends now; a running one within about a second
            record = await asyncio.shield(active.finished)
        if record.state is not RunState.CANCELLED:
            raise errors.FailedPrecondition(
                f"Study {name} is {record.state.value}; only a pending or running study can be cancelled.",
                reason="RUN_STATE_CONFLICT", metadata={"name": name, "state": record.state.value})
        return service_pb2.CancelStudyResponse(study=self._view(record))

    async def WatchStudy(self, request: service_pb2.WatchStudyRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[service_pb2.WatchStudyResponse]:
        name = _name(request.name)
        interval = request_fields.update_interval(request)
        record = await self._visible(name, authenticated_caller())
        async for snapshot in self._lifecycle.until_shutdown(self._watch(record, interval)):
            yield snapshot

    async def RunStressTest(self, request: service_pb2.RunStressTestRequest,
                            context: grpc.aio.ServicerContext) -> service_pb2.RunStressTestResponse:
        spec = pb.StudySpec(stress_test=request.spec)
        result = await self._run_unary(spec, context)
        return service_pb2.RunStressTestResponse(result=pb.StressTestResult.FromString(result))

    async def RunSensitivity(self, request: service_pb2.RunSensitivityRequest,
                             context: grpc.aio.ServicerContext) -> service_pb2.RunSensitivityResponse:
        spec = pb.StudySpec(sensitivity=request.spec)
        result = await self._run_unary(spec, context)
        return service_pb2.RunSensitivityResponse(result=pb.SensitivityResult.FromString(result))

    # --- Admission and following -------------------------------------------------------------------

    async def _admit(self, spec: pb.StudySpec, path: str, kind_path: str | None = None) -> tuple[StudyKind, Admitted]:
        """The study's kind and its admitted job, or the reason it cannot run (naming the field). ``path``
        locates ``spec``, ``kind_path`` (default ``path.<kind>``) the kind's message."""
        field = spec.WhichOneof("kind")
        if field is None:
            raise errors.InvalidArgument("The study has no spec.", [(path, "set one kind of study")],
                                         reason="FIELD_INVALID")
        kind = KINDS[field]
        message = getattr(spec, field)
        loop = asyncio.get_running_loop()
        return kind, await loop.run_in_executor(self._admission, kind.admit, message, kind_path or f"{path}.{field}",
                                                self._limits)

    async def _run_unary(self, spec: pb.StudySpec, context: grpc.aio.ServicerContext) -> bytes:
        caller = authenticated_caller()
        kind, admitted = await self._admit(spec, "spec", kind_path="spec")
        if admitted.paths_total > UNARY_MAX_PATH_RUNS:
            raise errors.InvalidArgument(
                f"This study simulates {admitted.runs} runs x {admitted.paths_per_run} paths; the unary call runs at "
                f"most {UNARY_MAX_PATH_RUNS} path-runs. Use CreateStudy for larger studies.",
                [("spec.config.monte_carlo.paths", f"runs x paths at most {UNARY_MAX_PATH_RUNS} here; "
                                                      "use CreateStudy")],
                reason="RUN_TOO_LARGE",
                metadata={"runs": str(admitted.runs), "paths": str(admitted.paths_per_run),
                          "max_path_runs": str(UNARY_MAX_PATH_RUNS)})
        handle = self._runner.submit(kind.run, admitted.payload, owner=caller.subject)
        try:
            return await asyncio.wait_for(handle.result(), request_fields.time_budget(context, UNARY_TIMEOUT_WITHOUT_DEADLINE_S))
        except TimeoutError:
            raise errors.DeadlineExceeded(
                "The study did not finish within the call's deadline; set a longer deadline or use CreateStudy.",
                reason="DEADLINE_TOO_SHORT", metadata={"runs": str(admitted.runs)}) from None
        except errors.ServiceError:
            raise
        except Exception as failure:
            refused = kind.refusal(failure) if kind.refusal is not None else None
            if refused is not None:
                raise refused from None
            log.error("unary study failed", exc_info=failure)
            raise study_failed() from failure
        finally:
            if not handle.done():
                self._runner.cancel(handle.job_id)

    async def _store_and_follow(self, name: str, spec: Study, kind: StudyKind, handle: JobHandle,
                                request_id: str | None, request_hash: str | None,
                                stored: asyncio.Future[StudyRecord]) -> None:
        """Store the accepted study, answer the create through ``stored``, then follow the job to its end.
        A task of its own, so a caller that hangs up mid-create never leaves a stored study unfollowed."""
        try:
            record, created = await self._studies.create(
                name, spec.SerializeToString(), owner=spec.owner, kind=kind.name,
                progress_total=spec.progress.paths_total, request_id=request_id, request_hash=request_hash)
        except BaseException as error:
            self._runner.cancel(name)
            _settle(stored, error)
            if isinstance(error, errors.ServiceError):
                return  # the caller's mistake (REQUEST_ID_REUSED), answered by the create call
            raise
        if not created:  # a concurrent retry with the same request_id stored its study first
            self._runner.cancel(name)
            stored.set_result(record)
            return
        active = ActiveStudy(record, handle, asyncio.get_running_loop().create_future())
        self._active[name] = active
        stored.set_result(record)
        await self._follow(active, kind)

    async def _follow(self, active: ActiveStudy, kind: StudyKind) -> None:
        name = active.record.name
        try:
            async with contextlib.aclosing(self._runner.watch(name)) as updates:
                async for update in updates:
                    started = update.state is JobState.RUNNING or (update.terminal and update.done > 0)
                    if active.record.state is RunState.PENDING and started:
                        active.record = await self._studies.update(name, state=RunState.RUNNING)
                    if update.terminal:
                        break
            result = error = None
            try:
                result = pb.StudyResult(**{kind.name: kind.result_message.FromString(await active.handle.result())})
                state = RunState.SUCCEEDED
            except errors.Cancelled:
                state = RunState.CANCELLED
            except errors.ServiceError as failure:
                state, error = RunState.FAILED, errors.to_status(failure)
            except Exception as failure:
                refused = kind.refusal(failure) if kind.refusal is not None else None
                if refused is None:
                    log.error("study %s failed", name, exc_info=failure)
                state, error = RunState.FAILED, errors.to_status(refused or study_failed(name))
            record = await self._studies.update(
                name, state=state, progress_done=active.handle.snapshot.done,
                result=result.SerializeToString() if result is not None else None,
                error=error.SerializeToString() if error is not None else None)
            active.finished.set_result(record)
            self._publish(study_completed(self._view(record), kind.name))
        except BaseException as failure:  # the server is stopping, or the store failed
            _settle(active.finished, failure)
            raise
        finally:
            self._active.pop(name, None)

    async def _watch(self, record: StudyRecord, interval: float) -> AsyncIterator[service_pb2.WatchStudyResponse]:
        active = self._active.get(record.name)
        last = _watch_response(self._view(record))
        yield last
        if active is None:
            return
        async with contextlib.aclosing(self._runner.watch(record.name)) as updates:
            async for update in updates:
                if update.terminal or active.finished.done():
                    break
                snapshot = _watch_response(self._view(active.record))
                if snapshot.sequence > last.sequence:
                    yield snapshot
                    last = snapshot
                await asyncio.wait({active.finished}, timeout=interval)
        yield _watch_response(self._view(await asyncio.shield(active.finished)))

    # --- Views -------------------------------------------------------------------------------------

    async def _visible(self, name: str, caller: Principal) -> StudyRecord:
        active = self._active.get(name)
        record = active.record if active is not None else await self._studies.get(name)
        if caller.is_admin or record.owner == caller.subject:
            return record
        raise study_not_found(name)

    def _view(self, record: StudyRecord) -> Study:
        """The stored study with its state, live progress while it runs here, result and error."""
        study = Study.FromString(record.spec)
        study.name = record.name
        study.state = STATES[record.state]
        active = self._active.get(record.name)
        done = record.progress_done
        if active is not None and not record.state.terminal:
            snapshot = active.handle.snapshot
            done = snapshot.done
            if snapshot.state is JobState.RUNNING and record.state is RunState.PENDING:
                study.state = Study.STATE_RUNNING
        study.progress.CopyFrom(_progress(study.progress.runs_total, done, record.progress_total))
        if record.result:
            study.result.ParseFromString(record.result)
        error = _error(record)
        if error is not None:
            study.error.CopyFrom(error)
        study.create_time.CopyFrom(_timestamp(record.create_time))
        if record.start_time is not None:
            study.start_time.CopyFrom(_timestamp(record.start_time))
        if record.end_time is not None:
            study.end_time.CopyFrom(_timestamp(record.end_time))
            study.expire_time.CopyFrom(_timestamp(record.end_time + RUN_RETENTION))
        return study


# --- Helpers --------------------------------------------------------------------------------------------


def study_completed(study: Study, kind: str) -> event_pb2.StudyCompleted:
    event = event_pb2.StudyCompleted(name=study.name, kind=kind, state=study.state, end_time=study.end_time,
                                     owner=study.owner)
    if study.HasField("error"):
        event.error.CopyFrom(study.error)
    return event


def study_failed(name: str = "") -> errors.ServiceError:
    """The error of a study the engine failed on; the cause is in the server log, never in the status."""
    return errors.ServiceError("The study failed; the server log has the details.", reason="SIMULATION_FAILED",
                               metadata={"name": name} if name else None)


def _error(record: StudyRecord) -> status_pb2.Status | None:
    metadata = {"name": record.name}
    if record.state is RunState.FAILED and record.error is not None:
        return status_pb2.Status.FromString(record.error)
    if record.state is RunState.CANCELLED:
        return errors.to_status(errors.Cancelled(f"Study {record.name} was cancelled.",
                                                 reason="SIMULATION_CANCELLED", metadata=metadata))
    if record.state is RunState.INTERRUPTED:
        return errors.to_status(SimulationInterrupted(
            f"The server stopped while study {record.name} was pending or running; create it again.",
            metadata=metadata))
    return None


def _settle(waiters: asyncio.Future[StudyRecord], error: BaseException) -> None:
    """Fail a future RPCs may await; cancellation (shutdown) becomes SHUTTING_DOWN, because a handler must end
    with a status, never by raising ``CancelledError`` itself."""
    if waiters.done():
        return
    if isinstance(error, asyncio.CancelledError):
        error = errors.Unavailable("The server is shutting down.", retry_after=5.0, reason="SHUTTING_DOWN")
    waiters.set_exception(error)
    waiters.exception()  # retrieved: often no RPC is waiting


def _progress(runs: int, done: int, total: int) -> pb.StudyProgress:
    return pb.StudyProgress(runs_total=runs, paths_completed=done, paths_total=total,
                            fraction_complete=done / total if total else 0.0)


def _watch_response(study: Study) -> service_pb2.WatchStudyResponse:
    """Sequence: PENDING 1, RUNNING 2 + paths done, terminal after any progress."""
    if study.state == Study.STATE_PENDING:
        sequence = 1
    elif study.state == Study.STATE_RUNNING:
        sequence = 2 + study.progress.paths_completed
    else:
        sequence = 3 + study.progress.paths_total
    return service_pb2.WatchStudyResponse(study=study, sequence=sequence)


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp



def _name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise errors.InvalidArgument(
            f"{name!r} is not a study name; expected studies/{{uuid}}.", [("name", "must be studies/{uuid}")],
            reason="RESOURCE_NAME_INVALID", metadata={"name": name})
    return name



