"""OptimizationService: allocation optimisation (unary, in the job runner), its stored results, and the
recommendations it sends to TLS and PMS through the durable outbox.

``Optimizations`` does the work for both the RPCs and the automatic re-optimisation
(``server/integration/reoptimise.py``): admit a request (bounds, live book, engine validation, cost), run it
as a job, store it by ``optimization_id`` for its owner, queue its pushes in the same transaction when asked,
and publish ``OptimizationCompleted``. An optimisation belongs to its caller (the token's subject); to
anyone else it does not exist (OPTIMIZATION_NOT_FOUND). Pushes are keyed by ``optimization_id`` (PMS by the
guide's field, TLS by the same id), so sending one optimisation twice delivers it once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from adapters import pushes
from adapters.json_reader import PayloadError
from equihome.events.v1 import event_pb2
from equihome.optimization.v1 import optimization_service_pb2 as service_pb2
from equihome.optimization.v1 import optimization_service_pb2_grpc
from equihome.type.v1 import system_pb2
from server import errors, request_fields
from server.admission import RunLimits, admit, check_bounds, served
from server.auth import authenticated_caller
from server.integration.live_books import LiveBooks
from server.integration.outbox import Outbox, PushKeyReused, enqueue
from server.integration.reoptimise import SYSTEM_OWNER, ReoptimisePolicy, Reoptimiser, watched_portfolios
from server.jobs import JobRunner
from server.mapping.optimization import check_against_config, check_request, run_config
from server.services.optimization_job import OptimizationFailed, estimate_cost, job_payload, run_optimization
from server.store import OptimizationRecord, OptimizationStore
from simulation.config import SimulationConfig

if TYPE_CHECKING:
    from server.services import ServiceDependencies

log = logging.getLogger(__name__)

Publish = Callable[[event_pb2.OptimizationCompleted], None]
ShouldSend = Callable[[service_pb2.Optimization], Awaitable[bool]]
Optimization = service_pb2.Optimization
TIMEOUT_WITHOUT_DEADLINE_S = 120.0  # callers should set a deadline; this bounds those that do not
PURGE_INTERVAL_S = 3600.0
ID_PATTERN = re.compile(r"optimization_[0-9a-f]{32}")
DESTINATIONS = {
    system_pb2.SYSTEM_TRAFFIC_LIGHT: pushes.TLS_RECOMMENDATIONS,
    system_pb2.SYSTEM_PORTFOLIO_MANAGEMENT: pushes.PMS_RECOMMENDATIONS,
}
BOTH = (system_pb2.SYSTEM_TRAFFIC_LIGHT, system_pb2.SYSTEM_PORTFOLIO_MANAGEMENT)


class Optimizations:
    def __init__(
        self,
        store: OptimizationStore,
        runner: JobRunner,
        outbox: Outbox,
        publish: Publish,
        books: LiveBooks,
        limits: RunLimits,
    ):
        self._store, self._runner, self._outbox = store, runner, outbox
        self._publish, self._books, self._limits = publish, books, limits
        self.reoptimiser: Reoptimiser | None = None  # set when automatic re-optimisation runs

    async def admit(self, request: service_pb2.OptimizeAllocationRequest) -> SimulationConfig:
        """The fund to optimise: the config sent, or the portfolio's live book under it; refused with the
        field named when out of bounds, invalid or too costly."""
        check_request(request)
        sent = request.base_config
        if request.portfolio_id:
            await asyncio.to_thread(check_bounds, sent, "base_config")
            live = await self._books.config(request.portfolio_id, sent, "base_config", "portfolio_id")
            config = live.config
        else:
            config = await asyncio.to_thread(admit, sent, "base_config", self._limits)
        config = served(run_config(request, config), "base_config", self._limits)
        check_against_config(request, config)
        await asyncio.to_thread(estimate_cost, request, config, self._limits)
        return config

    async def run(
        self,
        request: service_pb2.OptimizeAllocationRequest,
        *,
        owner: str,
        budget_s: float,
        automatic: bool = False,
        send: ShouldSend | None = None,
    ) -> Optimization:
        """Admit, optimise in a worker, store, send (when the request asks, or ``send`` says so) and publish."""
        config = await self.admit(request)
        handle = self._runner.submit(run_optimization, job_payload(request, config), owner=owner or None)
        try:
            answer = await asyncio.wait_for(handle.result(), budget_s)
        except TimeoutError:
            raise errors.DeadlineExceeded(
                "The optimisation did not finish within the call's deadline; set a longer deadline or run fewer "
                "paths.",
                reason="DEADLINE_TOO_SHORT",
                metadata={"paths": str(config.monte_carlo.paths)},
            ) from None
        except OptimizationFailed as failure:
            raise errors.FailedPrecondition(
                f"No allocation satisfies the request: {failure}.", reason=failure.reason
            ) from None
        except errors.ServiceError:
            raise
        except Exception as failure:
            log.error("optimisation failed", exc_info=failure)
            raise errors.ServiceError("The optimisation failed.", reason="OPTIMIZATION_FAILED") from failure
        finally:
            if not handle.done():
                self._runner.cancel(handle.job_id)
        optimization = service_pb2.OptimizeAllocationResponse.FromString(answer).optimization
        optimization.optimization_id = f"optimization_{uuid.uuid4().hex}"
        optimization.owner, optimization.portfolio_id = owner, request.portfolio_id
        optimization.create_time.FromDatetime(datetime.now(UTC))
        record = OptimizationRecord(
            optimization.optimization_id,
            owner,
            request.portfolio_id,
            automatic,
            False,
            optimization.SerializeToString(),
            datetime.now(UTC),
        )
        await self._store.save(record)
        if request.send_recommendations or (send is not None and await send(optimization)):
            optimization = await self.send(optimization, request.portfolio_id, BOTH)
        self._publish(
            event_pb2.OptimizationCompleted(
                optimization_id=optimization.optimization_id,
                portfolio_id=optimization.portfolio_id,
                target_allocation=optimization.recommendation.target_allocation,
                expected_metrics=optimization.recommendation.expected_metrics,
                owner=owner,
                automatic=automatic,
                sent=bool(optimization.deliveries),
            )
        )
        return optimization

    async def get(self, optimization_id: str, owner: str, field: str = "optimization_id") -> Optimization:
        """The stored optimisation if ``owner``'s or automatic (every caller sees those)."""
        if not ID_PATTERN.fullmatch(optimization_id):
            raise errors.InvalidArgument(
                "optimization_id is not an optimisation id.",
                [(field, "must be 'optimization_' and 32 hex digits")],
                reason="FIELD_INVALID",
            )
        record = await self._store.get(optimization_id)
        if record is None or record.owner not in (owner, SYSTEM_OWNER):
            raise errors.NotFound(
                f"There is no optimisation {optimization_id}.",
                reason="OPTIMIZATION_NOT_FOUND",
                metadata={"optimization_id": optimization_id},
            )
        return Optimization.FromString(record.body)

    async def send(
        self, optimization: Optimization, portfolio_id: str, destinations: Sequence[int]
    ) -> Optimization:
        """Queue the recommendation for each destination (keyed by the optimisation id: a repeat queues
        nothing), record the deliveries on the stored optimisation, and wake the outbox."""
        built = []
        for system in destinations:
            try:
                built.append((system, _push(system, portfolio_id, optimization)))
            except PayloadError as problem:
                raise errors.InvalidArgument(
                    "The recommendation cannot be sent as the guide's payload.",
                    [(problem.field, problem.problem)],
                    reason="RECOMMENDATION_INVALID",
                ) from None
        now = timestamp_pb2.Timestamp()
        now.FromDatetime(datetime.now(UTC))
        sent = Optimization()
        sent.CopyFrom(optimization)
        del sent.deliveries[:]

        def queue(connection: sqlite3.Connection) -> bytes:
            for system, push in built:
                sent.deliveries.add(
                    system=system,
                    queue_time=now,
                    newly_queued=enqueue(connection, push),
                    status=status_pb2.Status(code=grpc.StatusCode.OK.value[0]),
                )
            return sent.SerializeToString()

        try:
            await self._store.mark_sent(optimization.optimization_id, portfolio_id, queue)
        except PushKeyReused:
            raise errors.InvalidArgument(
                f"Optimisation {optimization.optimization_id} was sent before with another payload.",
                [("portfolio_id", "the optimisation was sent for another portfolio")],
                reason="RECOMMENDATION_SENT_ELSEWHERE",
            ) from None
        self._outbox.notify()
        return sent


def _push(system: int, portfolio_id: str, optimization: Optimization) -> pushes.Push:
    if system == system_pb2.SYSTEM_TRAFFIC_LIGHT:
        return pushes.traffic_light_recommendations(
            portfolio_id, optimization.recommendation, key=optimization.optimization_id
        )
    return pushes.pms_recommendations(portfolio_id, optimization.optimization_id, optimization.recommendation)


class OptimizationService(optimization_service_pb2_grpc.OptimizationServiceServicer):
    def __init__(self, optimizations: Optimizations):
        self.optimizations = optimizations

    async def OptimizeAllocation(  # noqa: N802
        self, request: service_pb2.OptimizeAllocationRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.OptimizeAllocationResponse:
        budget = request_fields.time_budget(context, TIMEOUT_WITHOUT_DEADLINE_S)
        owner = authenticated_caller().subject
        optimization = await self.optimizations.run(request, owner=owner, budget_s=budget)
        return service_pb2.OptimizeAllocationResponse(optimization=optimization)

    async def GetOptimization(  # noqa: N802
        self, request: service_pb2.GetOptimizationRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.GetOptimizationResponse:
        return service_pb2.GetOptimizationResponse(
            optimization=await self.optimizations.get(request.optimization_id, authenticated_caller().subject)
        )

    async def SendRecommendations(  # noqa: N802
        self, request: service_pb2.SendRecommendationsRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.SendRecommendationsResponse:
        destinations = list(request.destinations) or list(BOTH)
        bad = [
            (f"destinations[{i}]", "must be SYSTEM_TRAFFIC_LIGHT or SYSTEM_PORTFOLIO_MANAGEMENT")
            for i, system in enumerate(destinations)
            if system not in DESTINATIONS
        ]
        if len(set(destinations)) != len(destinations):
            bad.append(("destinations", "a system appears twice"))
        if bad:
            raise errors.InvalidArgument("The destinations are invalid.", bad, reason="FIELD_INVALID")
        optimization = await self.optimizations.get(request.optimization_id, authenticated_caller().subject)
        if optimization.portfolio_id and request.portfolio_id not in ("", optimization.portfolio_id):
            raise errors.FailedPrecondition(
                f"Optimisation {optimization.optimization_id} is of portfolio {optimization.portfolio_id}; its "
                "recommendation cannot be sent for another one.",
                reason="RECOMMENDATION_SENT_ELSEWHERE",
                metadata={"portfolio_id": optimization.portfolio_id},
            )
        portfolio_id = request.portfolio_id or optimization.portfolio_id
        if not portfolio_id:
            raise errors.InvalidArgument(
                "The optimisation has no portfolio; name the one the recommendation is for.",
                [("portfolio_id", "required: the optimisation was not of a portfolio")],
                reason="FIELD_INVALID",
            )
        if len(portfolio_id) > 128 or "/" in portfolio_id:
            raise errors.InvalidArgument(
                "portfolio_id is not a PMS portfolio id.",
                [("portfolio_id", "at most 128 characters, no '/'")],
                reason="FIELD_INVALID",
            )
        sent = await self.optimizations.send(optimization, portfolio_id, destinations)
        return service_pb2.SendRecommendationsResponse(deliveries=sent.deliveries)




def optimizations(deps: ServiceDependencies) -> Optimizations:
    """The optimiser of a server, and its automatic re-optimisation when integrations are on."""
    settings, integrations = deps.settings, deps.integrations
    built = Optimizations(
        deps.store.optimizations,
        deps.runner,
        integrations.outbox,
        integrations.bus.publish_engine_event,
        LiveBooks(integrations.mirror, integrations.sync),
        RunLimits.from_settings(settings),
    )
    deps.lifecycle.add_background_task(purge_expired(deps.store.optimizations), name="optimisation retention")
    portfolios = watched_portfolios(settings, integrations.portfolios)
    if settings.reoptimize and settings.integrations != "off" and portfolios:
        policy = ReoptimisePolicy(
            portfolios,
            settings.reoptimize_debounce_s,
            settings.reoptimize_max_wait_s,
            settings.reoptimize_threshold,
            settings.reoptimize_paths,
        )
        reoptimiser = Reoptimiser(integrations.bus, built, deps.store.optimizations, policy)
        built.reoptimiser = reoptimiser
        deps.lifecycle.add_background_task(reoptimiser.run_forever(), name="automatic re-optimisation")
    return built


async def purge_expired(store: OptimizationStore, every_s: float = PURGE_INTERVAL_S) -> None:
    """Apply the optimisations' retention now and then every ``every_s``."""
    while True:
        deleted = await store.purge_expired()
        if deleted:
            log.info("expired optimisations deleted", extra={"deleted": deleted})
        await asyncio.sleep(every_s)
