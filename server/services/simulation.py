"""SimulationService: simulation jobs (create, get, list, cancel, watch) and small unary runs.

Every job runs in the ``JobRunner`` and is followed by one background task owned by the ``Lifecycle``:
it stores the run, records RUNNING when a worker picks the job up, and records the terminal state with
its result or error when the job ends. If the server stops first, the run stays PENDING or RUNNING in the
store and the next start marks it INTERRUPTED, so no run is ever lost. Runs active in this process are read
from memory with live progress; finished runs from the store, through a cache of their views (a finished
run never changes).

A create that finds every worker busy and the queue full, or its caller at its quota, is refused
(RESOURCE_EXHAUSTED with RetryInfo) before anything is stored: the job is submitted first, and the run is
stored only once it is accepted. Configs are admitted (bounds, engine validation, cost) on a small thread
pool, never on the event loop.

Every run belongs to the caller that created it (the token's subject). Callers see, watch, cancel, list and
de-duplicate (``request_id``) only their own runs; to them another caller's run does not exist
(SIMULATION_NOT_FOUND). Callers with the simulation:admin scope see every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from equihome.events.v1 import event_pb2
from equihome.simulation.v1 import simulation_config_pb2, simulation_pb2, simulation_service_pb2 as service_pb2
from equihome.simulation.v1 import simulation_service_pb2_grpc
from server import errors, request_fields
from server.admission import RunLimits, admit, check_bounds, served
from server.app import Lifecycle
from server.auth import Principal, authenticated_caller
from server.integration.live_books import LiveBooks
from server.jobs import JobHandle, JobRunner, JobSnapshot, JobState
from server.mapping.events import simulation_completed, simulation_progressed
from server.mapping.live_book import LiveBook
from server.mapping.simulation import (
    LiveProgress,
    RUN_STATES,
    Simulation,
    check_view,
    sequence,
    simulation_failed,
    simulation_spec,
    simulation_view,
)
from server.services.simulation_job import SimulationJob, run_simulation
from server.store import RunRecord, RunState, RunStore, simulation_not_found
from simulation import engine
from simulation.config import SimulationConfig

log = logging.getLogger(__name__)

Publish = Callable[[event_pb2.SimulationProgressed | event_pb2.SimulationCompleted], None]

View = simulation_pb2.SimulationView
SimulationConfigMessage = simulation_config_pb2.SimulationConfig
BASIC, SUMMARY, FULL = (
    simulation_pb2.SIMULATION_VIEW_BASIC,
    simulation_pb2.SIMULATION_VIEW_SUMMARY,
    simulation_pb2.SIMULATION_VIEW_FULL,
)

RUN_MAX_PATHS = 20_000  # RunSimulation's limit (docs/api.md)
RUN_TIMEOUT_WITHOUT_DEADLINE_S = 60.0  # callers should set a deadline; this bounds those that do not
FULL_VIEW_KEEPS_PATHS_UP_TO = 25_000  # jobs this small keep per-path values for the FULL view
CACHED_VIEW_BYTES = 64 * 1024 * 1024  # finished runs' ready responses kept in memory
ADMISSION_THREADS = 2  # configs admitted at once; more wait (each caller's unary budget bounds the wait)
NAME_PATTERN = re.compile(r"simulations/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(eq=False)
class ActiveRun:
    """A stored run whose job this process is running (or queueing)."""

    record: RunRecord  # as last stored
    spec: Simulation
    handle: JobHandle
    finished: asyncio.Future[RunRecord]  # the terminal record, once stored

    def live(self) -> LiveProgress:
        snapshot = self.handle.snapshot
        if snapshot.state is JobState.QUEUED:
            return LiveProgress(RunState.PENDING, 0)
        if snapshot.state is JobState.RUNNING:
            return LiveProgress(RunState.RUNNING, snapshot.done)
        return LiveProgress(self.record.state, snapshot.done)  # ended, not yet stored: show what is


class FinishedViews:
    """Views of finished runs, kept as ready GetSimulation responses (so a read copies nothing), least
    recently used out once they hold ``max_bytes``. FULL views are not kept: they can be megabytes."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._bytes = 0
        self._views: OrderedDict[tuple[str, int], tuple[service_pb2.GetSimulationResponse, int]] = OrderedDict()

    def get(self, name: str, view: View.ValueType) -> service_pb2.GetSimulationResponse | None:
        """The kept response, unless the run has expired (the store deletes it soon after)."""
        kept = self._views.get((name, view))
        if kept is None:
            return None
        response = kept[0]
        if response.simulation.expire_time.ToDatetime(tzinfo=UTC) <= datetime.now(UTC):
            self._drop((name, view))
            return None
        self._views.move_to_end((name, view))
        return response

    def put(self, name: str, view: View.ValueType, response: service_pb2.GetSimulationResponse) -> None:
        if view == FULL or (name, view) in self._views:
            return
        size = response.ByteSize()
        self._views[(name, view)] = (response, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._views)))

    def _drop(self, key: tuple[str, int]) -> None:
        self._bytes -= self._views.pop(key)[1]


@dataclass(frozen=True)
class Prepared:
    """A request's config admitted for running, and what is stored of the run."""

    config: SimulationConfig  # as served: chunks and workers fitted to this server
    spec: Simulation  # see ``simulation_spec``
    spec_bytes: bytes
    request_hash: str | None  # of a CreateSimulation that carries a request_id


class SimulationService(simulation_service_pb2_grpc.SimulationServiceServicer):
    def __init__(
        self, runs: RunStore, runner: JobRunner, lifecycle: Lifecycle, publish: Publish, books: LiveBooks,
        limits: RunLimits,
    ):  # fmt: skip
        self._runs = runs
        self._runner = runner
        self._lifecycle = lifecycle
        self._publish = publish  # onto the event stream: SimulationProgressed, SimulationCompleted
        self._books = books  # the live book of a portfolio_id
        self._limits = limits
        self._active: dict[str, ActiveRun] = {}
        self._finished = FinishedViews(CACHED_VIEW_BYTES)
        self._admission = ThreadPoolExecutor(ADMISSION_THREADS, thread_name_prefix="equihome-admission")
        lifecycle.add_close_hook(self._close, name="config admission")

    async def _close(self) -> None:
        await asyncio.to_thread(self._admission.shutdown, wait=True, cancel_futures=True)

    # --- RPCs --------------------------------------------------------------------------------------

    async def CreateSimulation(
        self, request: service_pb2.CreateSimulationRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.CreateSimulationResponse:
        caller = authenticated_caller()
        sent = request.simulation
        request_id = request_fields.request_id(request.request_id)
        prepared = await self._prepare(
            sent.config, sent.portfolio_id, "simulation", display_name=sent.display_name,
            request=request if request_id else None,
        )  # fmt: skip
        if request.validate_only:
            prepared.spec.state = Simulation.STATE_PENDING
            prepared.spec.owner = caller.subject
            return service_pb2.CreateSimulationResponse(simulation=prepared.spec)
        if request_id is not None:
            existing = await self._runs.find_request(caller.subject, request_id, prepared.request_hash)
            if existing is not None:
                return service_pb2.CreateSimulationResponse(simulation=self._view(existing, SUMMARY))

        name = f"simulations/{uuid.uuid4()}"
        keep_paths = engine.path_count(prepared.config) <= FULL_VIEW_KEEPS_PATHS_UP_TO
        job = _job(prepared.config, keep_paths)
        handle = self._runner.submit(run_simulation, job, job_id=name, owner=caller.subject)
        admitted: asyncio.Future[RunRecord] = asyncio.get_running_loop().create_future()
        self._lifecycle.add_background_task(
            self._store_and_follow(name, caller.subject, prepared, handle, request_id, admitted),
            name=f"simulation {name}",
        )
        record = await asyncio.shield(admitted)
        return service_pb2.CreateSimulationResponse(simulation=self._view(record, SUMMARY))

    async def GetSimulation(
        self, request: service_pb2.GetSimulationRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.GetSimulationResponse:
        caller = authenticated_caller()
        return await self._response(_name(request.name), _view_or(request.view, SUMMARY), caller)

    async def ListSimulations(
        self, request: service_pb2.ListSimulationsRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ListSimulationsResponse:
        view = _view_or(request.view, BASIC)
        if view == FULL:
            raise errors.InvalidArgument(
                "ListSimulations does not return the FULL view; use GetSimulation.",
                [("view", "FULL is not allowed in ListSimulations")],
                reason="FIELD_INVALID",
            )
        caller = authenticated_caller()
        page = await self._runs.list(
            page_size=request.page_size,
            page_token=request.page_token,
            owner=None if caller.is_admin else caller.subject,
            portfolio_id=request.portfolio_id or None,
            states=[_run_state(state, index) for index, state in enumerate(request.states)],
            with_result=view != BASIC,
        )
        return service_pb2.ListSimulationsResponse(
            simulations=[self._view(record, view) for record in page.runs],
            next_page_token=page.next_page_token,
        )

    async def CancelSimulation(
        self, request: service_pb2.CancelSimulationRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.CancelSimulationResponse:
        name = _name(request.name)
        caller = authenticated_caller()
        active = self._active.get(name)
        if active is None:
            record = _visible(await self._runs.get(name), caller)
        else:
            _visible(active.record, caller)
            self._runner.cancel(name)  # a queued job ends now; a running one within about a second
            record = await asyncio.shield(active.finished)
        if record.state is not RunState.CANCELLED:
            raise errors.FailedPrecondition(
                f"Simulation {name} is {record.state.value}; only a pending or running simulation can be "
                "cancelled.",
                reason="RUN_STATE_CONFLICT",
                metadata={"name": name, "state": record.state.value},
            )
        return service_pb2.CancelSimulationResponse(simulation=self._view(record, BASIC))

    async def WatchSimulation(
        self, request: service_pb2.WatchSimulationRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[service_pb2.WatchSimulationResponse]:
        name = _name(request.name)
        view = _view_or(request.view, SUMMARY)
        interval = request_fields.update_interval(request)
        caller = authenticated_caller()
        async for snapshot in self._lifecycle.until_shutdown(self._watch(name, view, interval, caller)):
            yield snapshot

    async def RunSimulation(
        self, request: service_pb2.RunSimulationRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.RunSimulationResponse:
        caller = authenticated_caller()
        prepared = await self._prepare(request.config, request.portfolio_id, "", display_name="")
        config = prepared.config
        paths = engine.path_count(config)
        if paths > RUN_MAX_PATHS:
            raise errors.InvalidArgument(
                f"RunSimulation runs at most {RUN_MAX_PATHS} paths; this config has {paths}. Use "
                "CreateSimulation for larger runs.",
                [("config.monte_carlo.paths", f"at most {RUN_MAX_PATHS} in RunSimulation")],
                reason="RUN_TOO_LARGE",
                metadata={"paths": str(paths), "max_paths": str(RUN_MAX_PATHS)},
            )
        view = _view_or(request.view, SUMMARY)
        received = datetime.now(UTC)
        handle = self._runner.submit(run_simulation, _job(config, keep_paths=view == FULL), owner=caller.subject)
        try:
            result = await asyncio.wait_for(handle.result(), request_fields.time_budget(context, RUN_TIMEOUT_WITHOUT_DEADLINE_S))
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"The run of {paths} paths did not finish within the call's deadline; set a longer deadline "
                "or run fewer paths.",
                reason="DEADLINE_TOO_SHORT",
                metadata={"paths": str(paths)},
            ) from None
        except errors.ServiceError:
            raise
        except Exception as failure:
            log.error("unary simulation failed", exc_info=failure)
            raise simulation_failed() from failure
        finally:
            if not handle.done():
                self._runner.cancel(handle.job_id)  # the deadline passed or the caller went away
        finished = datetime.now(UTC)
        record = RunRecord(
            name="", owner=caller.subject, portfolio_id=request.portfolio_id, state=RunState.SUCCEEDED,
            progress_done=paths,
            progress_total=paths, config=b"", result=result, error=None, request_id=None, request_hash=None,
            create_time=received, update_time=finished, start_time=received, end_time=finished,
        )  # fmt: skip
        simulation = simulation_view(record, view, spec=prepared.spec)
        simulation.ClearField("expire_time")  # not stored, so never deleted
        return service_pb2.RunSimulationResponse(simulation=simulation)

    # --- Following a job ---------------------------------------------------------------------------

    async def _prepare(
        self,
        sent: SimulationConfigMessage,
        portfolio_id: str,
        prefix: str,
        *,
        display_name: str,
        request: service_pb2.CreateSimulationRequest | None = None,
    ) -> Prepared:
        """Admit a request's config and build the run's spec (``prefix`` locates its config and portfolio_id
        fields): the config sent, or with a ``portfolio_id`` the portfolio's live book under it. The CPU work
        runs on the admission threads (a large book takes seconds, which must never stall the event loop).
        ``request``: fingerprint it for its request_id."""
        path = f"{prefix}.config" if prefix else "config"
        loop = asyncio.get_running_loop()
        live: LiveBook | None = None
        if portfolio_id:
            await loop.run_in_executor(self._admission, check_bounds, sent, path)
            field = f"{prefix}.portfolio_id" if prefix else "portfolio_id"
            live = await self._books.config(portfolio_id, sent, path, field)

        def work() -> Prepared:
            config = served(live.config, path, self._limits) if live else admit(sent, path, self._limits)
            spec = simulation_spec(
                display_name=display_name, portfolio_id=portfolio_id, config_sent=sent, config=config,
                book_snapshot=live.snapshot if live else None,
            )  # fmt: skip
            request_hash = request_fields.request_fingerprint(request) if request is not None else None
            return Prepared(config, spec, spec.SerializeToString(), request_hash)

        return await loop.run_in_executor(self._admission, work)

    async def _store_and_follow(
        self,
        name: str,
        owner: str,
        prepared: Prepared,
        handle: JobHandle,
        request_id: str | None,
        admitted: asyncio.Future[RunRecord],
    ) -> None:
        """Store the accepted run, answer the create through ``admitted``, then follow the job to its end."""
        spec = prepared.spec
        try:
            record, created = await self._runs.create(
                name, prepared.spec_bytes, owner=owner, portfolio_id=spec.portfolio_id,
                request_id=request_id, request_hash=prepared.request_hash,
            )  # fmt: skip
        except BaseException as error:
            self._runner.cancel(name)
            _settle(admitted, error)  # the create call raises it (or learns that the server is stopping)
            if isinstance(error, errors.ServiceError):
                return  # the caller's mistake (REQUEST_ID_REUSED), answered by the create call
            raise
        if not created:  # a concurrent retry with the same request_id stored its run first
            self._runner.cancel(name)
            admitted.set_result(record)
            return
        active = ActiveRun(record, spec, handle, asyncio.get_running_loop().create_future())
        self._active[name] = active
        admitted.set_result(record)
        try:
            await self._follow(active)
        except BaseException as error:  # the server is stopping, or the store failed
            _settle(active.finished, error)  # whoever waits on the run learns it
            raise
        finally:
            self._active.pop(name, None)

    async def _follow(self, active: ActiveRun) -> None:
        name = active.record.name
        await self._track(active)
        result: bytes | None = None
        error: bytes | None = None
        try:
            result = await active.handle.result()
            state = RunState.SUCCEEDED
        except errors.Cancelled:
            state = RunState.CANCELLED
        except errors.ServiceError as failure:  # e.g. the run outgrew its worker's memory
            log.warning("simulation %s failed: %s", name, failure.message, extra={"reason": failure.reason})
            state, error = RunState.FAILED, errors.to_status(failure).SerializeToString()
        except Exception as failure:
            log.error("simulation %s failed", name, exc_info=failure, extra={"simulation": name})
            state, error = RunState.FAILED, errors.to_status(simulation_failed(name)).SerializeToString()
        record = await self._runs.update(
            name,
            state=state,
            progress=(active.handle.snapshot.done, active.spec.progress.paths_total),
            result=result,
            error=error,
        )
        del self._active[name]
        active.finished.set_result(record)
        self._publish(simulation_completed(self._view(record, SUMMARY)))

    async def _track(self, active: ActiveRun) -> None:
        """Store RUNNING (and so the start time) once a worker has picked the job up, and publish the
        job's progress until it ends."""
        async with contextlib.aclosing(self._runner.watch(active.record.name)) as updates:
            async for update in updates:
                if active.record.state is RunState.PENDING and _has_started(update):
                    active.record = await self._runs.update(active.record.name, state=RunState.RUNNING)
                if update.terminal:
                    return
                self._publish(simulation_progressed(self._view(active.record, BASIC)))

    async def _watch(
        self, name: str, view: View.ValueType, interval: float, caller: Principal
    ) -> AsyncIterator[service_pb2.WatchSimulationResponse]:
        active = self._active.get(name)
        if active is None:  # finished: its final snapshot is all there is
            yield _watch_response((await self._response(name, view, caller)).simulation)
            return
        _visible(active.record, caller)
        check_view(active.spec, view)
        last = _watch_response(self._view(active.record, BASIC))
        yield last
        async with contextlib.aclosing(self._runner.watch(name)) as updates:
            async for update in updates:
                if update.terminal or active.finished.done():
                    break
                snapshot = _watch_response(self._view(active.record, BASIC))
                if snapshot.sequence > last.sequence:
                    yield snapshot
                    last = snapshot
                await asyncio.wait({active.finished}, timeout=interval)  # throttle, but never delay the end
        record = await asyncio.shield(active.finished)
        yield _watch_response(self._view(record, view))

    # --- Views -------------------------------------------------------------------------------------

    async def _response(
        self, name: str, view: View.ValueType, caller: Principal
    ) -> service_pb2.GetSimulationResponse:
        if name not in self._active:
            cached = self._finished.get(name, view)
            if cached is not None:
                if not (caller.is_admin or cached.simulation.owner == caller.subject):
                    raise simulation_not_found(name)
                return cached
            return self._response_for(_visible(await self._runs.get(name), caller), view)
        return self._response_for(_visible(self._active[name].record, caller), view)

    def _view(self, record: RunRecord, view: View.ValueType) -> Simulation:
        """``record`` in ``view``, with live progress while it is active here."""
        return self._response_for(record, view).simulation

    def _response_for(self, record: RunRecord, view: View.ValueType) -> service_pb2.GetSimulationResponse:
        active = self._active.get(record.name)
        if active is not None:
            live = simulation_view(active.record, view, spec=active.spec, live=active.live())
            return service_pb2.GetSimulationResponse(simulation=live)
        cached = self._finished.get(record.name, view)
        if cached is not None:
            return cached
        response = service_pb2.GetSimulationResponse(simulation=simulation_view(record, view))
        if record.state.terminal:
            self._finished.put(record.name, view, response)
        return response


# --- Request checks and small helpers ----------------------------------------------------------------


def _name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise errors.InvalidArgument(
            f"{name!r} is not a simulation name; expected simulations/{{uuid}}.",
            [("name", "must be simulations/{uuid}")],
            reason="RESOURCE_NAME_INVALID",
            metadata={"name": name},
        )
    return name


def _view_or(view: View.ValueType, default: View.ValueType) -> View.ValueType:
    if view == simulation_pb2.SIMULATION_VIEW_UNSPECIFIED:
        return default
    if view not in (BASIC, SUMMARY, FULL):
        raise errors.InvalidArgument(
            f"view {view} is not a SimulationView.", [("view", "unknown value")], reason="FIELD_INVALID",
            metadata={"view": str(view)},
        )  # fmt: skip
    return view


def _run_state(state: Simulation.State.ValueType, index: int) -> RunState:
    if state not in RUN_STATES:
        raise errors.InvalidArgument(
            f"states[{index}] is not a simulation state.",
            [(f"states[{index}]", "must be a state other than STATE_UNSPECIFIED")],
            reason="FIELD_INVALID",
            metadata={"index": str(index)},
        )
    return RUN_STATES[state]



def _visible(record: RunRecord, caller: Principal) -> RunRecord:
    """``record`` if ``caller`` may see it; to anyone else it does not exist."""
    if caller.is_admin or record.owner == caller.subject:
        return record
    raise simulation_not_found(record.name)





def _job(config: SimulationConfig, keep_paths: bool) -> SimulationJob:
    return SimulationJob(config=config.model_dump(mode="json"), keep_paths=keep_paths)


def _has_started(update: JobSnapshot) -> bool:
    """Running, or ended after running (a job cancelled while queued never started)."""
    if update.state is JobState.CANCELLED:
        return update.done > 0
    return update.state is not JobState.QUEUED



def _settle(waiters: asyncio.Future[RunRecord], error: BaseException) -> None:
    """Fail a future that RPCs may be awaiting. Cancellation (shutdown) becomes SHUTTING_DOWN, because a
    handler must end with a status, never by raising ``CancelledError`` itself."""
    if waiters.done():
        return
    if isinstance(error, asyncio.CancelledError):
        error = errors.Unavailable("The server is shutting down.", retry_after=5.0, reason="SHUTTING_DOWN")
    waiters.set_exception(error)
    waiters.exception()  # mark it retrieved: often no RPC is waiting, and the error is raised again here


def _watch_response(simulation: Simulation) -> service_pb2.WatchSimulationResponse:
    return service_pb2.WatchSimulationResponse(simulation=simulation, sequence=sequence(simulation))
