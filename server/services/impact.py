"""ImpactAnalysisService: the portfolio impact of one loan application, on demand and for Underwriting.

``ImpactAnalyzer.analyze`` does the work for both callers: checks the request (every field bounded and
named), builds the fund (the live book of ``portfolio_id``, or the config sent), admits its cost, looks the
zone up in TLS when the application has none, runs the analysis as a job on the worker pool (never on the
event loop), and stores it with its push to Underwriting in one transaction (durable outbox, keyed by
``analysis_id``), then publishes ``ImpactAnalysisCompleted``. A ``request_id`` is the owner's idempotency key: a retry returns the
stored analysis and stores, pushes and publishes nothing again; the same id with another request is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import grpc
from google.rpc import code_pb2, status_pb2

from adapters import pushes
from adapters.errors import UpstreamError
from adapters.json_reader import PayloadError
from equihome.events.v1 import event_pb2
from equihome.impact.v1 import impact_analysis_pb2, impact_analysis_service_pb2_grpc
from equihome.impact.v1 import impact_analysis_service_pb2 as service_pb2
from equihome.simulation.v1 import simulation_config_pb2
from equihome.type.v1 import zone_pb2
from server import errors, request_fields
from server.admission import RunLimits, check_bounds, served, too_costly
from server.auth import authenticated_caller
from server.integration.errors import service_error
from server.integration.live_books import LiveBooks
from server.integration.outbox import Outbox, enqueue
from server.integration.reads import IntegrationReads
from server.jobs import JobRunner
from server.mapping.config import load_engine_config
from server.mapping.impact import (
    DEFAULT_PATHS,
    ZONE_CODES,
    check_application,
    completed_event,
    impact_request,
    new_analysis_id,
)
from server.services.impact_job import ImpactJob, run_impact
from server.store import ImpactRecord, ImpactStore
from simulation import cost
from simulation.config import SimulationConfig

log = logging.getLogger(__name__)

TIMEOUT_WITHOUT_DEADLINE_S = 60.0
ANALYSIS_RUNS = 3  # work of an analysis in plain runs: the base, an exact candidate, counter-offer trials

Publish = Callable[[event_pb2.ImpactAnalysisCompleted], None]


FLOW_OWNER = "system:underwriting-flow"  # the owner of the automatic Underwriting flow's analyses


def public_owner(owner: str) -> str:
    """Whom an analysis's event is for: its caller, or every subscriber ("") for the automatic flow's."""
    return "" if owner == FLOW_OWNER else owner


@dataclass(frozen=True)
class Analysed:
    record: ImpactRecord
    created: bool  # False: an earlier analysis of the same request_id

    def response(self) -> service_pb2.AnalyzeLoanImpactResponse:
        response = service_pb2.AnalyzeLoanImpactResponse(
            analysis=impact_analysis_pb2.ImpactAnalysis.FromString(self.record.analysis)
        )
        if self.record.publish_status is not None:
            response.publish_status.ParseFromString(self.record.publish_status)
        return response


class ImpactAnalyzer:
    def __init__(
        self,
        analyses: ImpactStore,
        runner: JobRunner,
        books: LiveBooks,
        reads: IntegrationReads | None,
        outbox: Outbox,
        publish: Publish,
        limits: RunLimits,
    ):
        self._analyses = analyses
        self._runner = runner
        self._books = books
        self._reads = reads  # None with integrations off
        self._outbox = outbox
        self._publish = publish
        self._limits = limits

    async def analyze(
        self, request: service_pb2.AnalyzeLoanImpactRequest, *, owner: str, budget_s: float
    ) -> Analysed:
        check_application(request)
        request_id = request.request_id or None  # a UUID: ``check_application``
        request_hash = request_fields.request_fingerprint(request) if request_id else None
        if request_id is not None:
            existing = await self._analyses.find_request(owner, request_id, request_hash)
            if existing is not None:
                return Analysed(existing, created=False)
        config, fund_age = await self._fund(request)
        zone = await self._zone(request.loan_application)
        checked = impact_request(request, config, zone, default_origination_month=fund_age)
        analysis_id = new_analysis_id()
        job = ImpactJob(
            config=config.model_dump(mode="json"),
            request=checked,
            analysis_id=analysis_id,
            portfolio_id=request.portfolio_id,
        )
        analysis = impact_analysis_pb2.ImpactAnalysis.FromString(await self._run(job, owner, budget_s))
        push, publish_status = _push(analysis) if request.publish_to_underwriting else (None, None)
        record = ImpactRecord(
            analysis_id=analysis_id,
            owner=owner,
            request_id=request_id,
            request_hash=request_hash,
            analysis=analysis.SerializeToString(),
            publish_status=publish_status.SerializeToString() if publish_status is not None else None,
            create_time=datetime.now(UTC),
        )
        stored, created = await self._analyses.create(
            record,
            analysis.loan_id,
            analysis.portfolio_id,
            also=(lambda connection: enqueue(connection, push)) if push is not None else None,
        )
        if created:
            if push is not None:
                self._outbox.notify()
            self._publish(completed_event(analysis, public_owner(owner)))
        return Analysed(stored, created)

    async def _fund(self, request: service_pb2.AnalyzeLoanImpactRequest) -> tuple[SimulationConfig, int]:
        """The admitted engine config of the base fund, with the request's paths (default 500) and seed, and
        the fund's age (the default origination month: 0 for a config, the live book's age for a
        portfolio)."""
        sent = simulation_config_pb2.SimulationConfig()
        sent.CopyFrom(request.base_config)
        sent.monte_carlo.paths = request.paths if request.HasField("paths") else DEFAULT_PATHS
        if request.HasField("seed"):
            sent.monte_carlo.seed = request.seed
        await asyncio.to_thread(check_bounds, sent, "base_config")
        live = None
        if request.portfolio_id:
            live = await self._books.config(request.portfolio_id, sent, "base_config", "portfolio_id")

        def work() -> SimulationConfig:
            config = live.config if live is not None else load_engine_config(sent, "base_config")
            _check_cost(config, self._limits)
            return served(config, "base_config", self._limits)

        return await asyncio.to_thread(work), live.snapshot.fund_age_months if live is not None else 0

    async def _zone(self, application) -> zone_pb2.Zone.ValueType:
        """The zone as sent, else TLS's classification of ``property_id``."""
        if application.property_zone in ZONE_CODES:
            return application.property_zone
        if self._reads is None:
            raise errors.FailedPrecondition(
                "The application has no zone and integrations are off, so TLS cannot be asked for it.",
                reason="ZONE_UNAVAILABLE",
                metadata={"property_id": application.property_id},
            )
        try:
            found = await self._reads.zones([application.property_id], require_fresh=False)
        except UpstreamError as error:
            raise service_error(error, application.property_id) from None
        zones = [c.zone for c in found.classifications if c.zone in ZONE_CODES]
        if not zones:
            raise errors.InvalidArgument(
                "TLS does not classify the application's property.",
                [("loan_application.property_id", "unknown to TLS; send property_zone")],
                reason="FIELD_INVALID",
            )
        return zones[0]

    async def _run(self, job: ImpactJob, owner: str, budget_s: float) -> bytes:
        handle = self._runner.submit(run_impact, job, owner=owner)
        try:
            return await asyncio.wait_for(handle.result(), budget_s)
        except TimeoutError:
            raise errors.DeadlineExceeded(
                "The impact analysis did not finish within the call's deadline; set a longer deadline or "
                "fewer paths.",
                reason="DEADLINE_TOO_SHORT",
                metadata={"paths": str(job.request.paths)},
            ) from None
        except errors.ServiceError:
            raise
        except Exception as failure:
            log.error("impact analysis failed", exc_info=failure, extra={"loan_id": job.request.loan.loan_id})
            raise _analysis_failed(job.request.loan.loan_id) from failure
        finally:
            if not handle.done():
                self._runner.cancel(handle.job_id)


def _analysis_failed(loan_id: str) -> errors.ServiceError:
    return errors.Unavailable(
        f"The impact analysis of loan {loan_id} failed; try again.",
        retry_after=5.0,
        reason="ANALYSIS_FAILED",
        metadata={"loan_id": loan_id},
    )


def _check_cost(config: SimulationConfig, limits: RunLimits) -> None:
    """The base is kept whole in the worker (every path in flight at once) beside the candidate's run and, on
    the exact path, a second whole run; an analysis costs a few runs. The request's ``paths`` set the paths."""
    estimate = cost.estimate(config, chunk_paths=config.monte_carlo.paths, parallelism=1)
    held = ANALYSIS_RUNS * estimate.peak_bytes
    if held > limits.worker_memory_bytes or ANALYSIS_RUNS * estimate.work > limits.max_work:
        refused = too_costly(replace(estimate, peak_bytes=held), limits, "base_config")
        refused.field_violations = [("paths" if field == "base_config.monte_carlo.paths" else field, why)
                                    for field, why in refused.field_violations]
        raise refused


def _push(analysis: impact_analysis_pb2.ImpactAnalysis) -> tuple[pushes.Push | None, status_pb2.Status]:
    """The analysis as the Underwriting POST, and the publish status: OK (queued in the durable outbox) or why
    it cannot be sent."""
    try:
        push = pushes.portfolio_impact(analysis)
    except PayloadError as problem:
        error = errors.FailedPrecondition(
            f"The analysis cannot be sent to Underwriting: {problem.field} {problem.problem}.",
            reason="PUSH_INVALID",
            metadata={"field": problem.field},
        )
        return None, errors.to_status(error)
    return push, status_pb2.Status(code=code_pb2.OK, message="queued for delivery to Underwriting")



class ImpactAnalysisService(impact_analysis_service_pb2_grpc.ImpactAnalysisServiceServicer):
    def __init__(self, analyzer: ImpactAnalyzer):
        self._analyzer = analyzer

    async def AnalyzeLoanImpact(
        self, request: service_pb2.AnalyzeLoanImpactRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.AnalyzeLoanImpactResponse:
        budget = request_fields.time_budget(context, TIMEOUT_WITHOUT_DEADLINE_S)
        owner = authenticated_caller().subject
        return (await self._analyzer.analyze(request, owner=owner, budget_s=budget)).response()
