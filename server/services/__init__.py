"""Every service this server offers, with the scope each method needs (docs/api.md), in one registry.

``build_bindings`` returns one ``ServiceBinding`` per service, and starts the background flows the services
own (the automatic Underwriting flow; the re-optimiser starts with the optimisation service).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

from equihome.events.v1 import event_service_pb2
from equihome.impact.v1 import impact_analysis_service_pb2, impact_analysis_service_pb2_grpc
from equihome.integration.v1 import integration_service_pb2, integration_service_pb2_grpc
from equihome.optimization.v1 import optimization_service_pb2, optimization_service_pb2_grpc
from equihome.simulation.v1 import simulation_service_pb2, simulation_service_pb2_grpc
from equihome.study.v1 import study_service_pb2, study_service_pb2_grpc
from server.admission import RunLimits
from server.app import Lifecycle, ServiceBinding
from server.jobs import JobRunner
from server.observability import Metrics
from server.integration.live_books import LiveBooks
from server.integration.runtime import IntegrationRuntime
from server.integration.underwriting_flow import UnderwritingFlow
from server.services.events import EventService, add_event_service
from server.services.impact import ImpactAnalysisService, ImpactAnalyzer
from server.services.integration import IntegrationService
from server.services.optimization import OptimizationService, optimizations
from server.services.simulation import SimulationService
from server.settings import Settings
from server.store import Store
from server.studies.service import StudyService


@dataclass(frozen=True)
class ServiceDependencies:
    """What services are built from; ``serve_cli`` opens and closes them."""

    settings: Settings
    lifecycle: Lifecycle
    metrics: Metrics
    store: Store
    runner: JobRunner
    integrations: IntegrationRuntime


def _service(file: FileDescriptor, name: str) -> ServiceDescriptor:
    return file.services_by_name[name]


SIMULATION = _service(simulation_service_pb2.DESCRIPTOR, "SimulationService")
IMPACT = _service(impact_analysis_service_pb2.DESCRIPTOR, "ImpactAnalysisService")
OPTIMIZATION = _service(optimization_service_pb2.DESCRIPTOR, "OptimizationService")
EVENTS = _service(event_service_pb2.DESCRIPTOR, "EventService")
INTEGRATION = _service(integration_service_pb2.DESCRIPTOR, "IntegrationService")
STUDY = _service(study_service_pb2.DESCRIPTOR, "StudyService")

SCOPES: dict[str, dict[str, str]] = {
    SIMULATION.full_name: {
        "CreateSimulation": "simulation:write",
        "GetSimulation": "simulation:read",
        "ListSimulations": "simulation:read",
        "CancelSimulation": "simulation:write",
        "WatchSimulation": "simulation:read",
        "RunSimulation": "simulation:write",
    },
    IMPACT.full_name: {"AnalyzeLoanImpact": "impact:write"},
    OPTIMIZATION.full_name: {
        "OptimizeAllocation": "optimization:write",
        "GetOptimization": "optimization:read",
        "SendRecommendations": "optimization:write",
    },
    EVENTS.full_name: {"SubscribeEvents": "events:read"},
    STUDY.full_name: {
        "CreateStudy": "study:write",
        "GetStudy": "study:read",
        "ListStudies": "study:read",
        "CancelStudy": "study:write",
        "WatchStudy": "study:read",
        "RunStressTest": "study:write",
        "RunSensitivity": "study:write",
    },
    INTEGRATION.full_name: {
        "GetIntegration": "integration:read",
        "ListIntegrations": "integration:read",
        "GetZoneClassifications": "integration:read",
        "GetMarketRisk": "integration:read",
        "GetPortfolioComposition": "integration:read",
        "GetPortfolioMetrics": "integration:read",
        "GetLoanParameters": "integration:read",
        "ListPushes": "integration:read",
        "RetryPush": "integration:write",
    },
}


AddToServer = Callable[[Any, grpc.aio.Server], None]


def binding(service: ServiceDescriptor, add_to_server: AddToServer, servicer: object) -> ServiceBinding:
    """``servicer`` bound as ``service``, with the service's scope map."""
    return ServiceBinding(service.full_name, add_to_server, servicer, SCOPES[service.full_name])


def impact_analyzer(deps: ServiceDependencies) -> ImpactAnalyzer:
    """The one analyzer of AnalyzeLoanImpact and the automatic Underwriting flow."""
    integrations = deps.integrations
    return ImpactAnalyzer(
        deps.store.impact, deps.runner, LiveBooks(integrations.mirror, integrations.sync), integrations.reads,
        integrations.outbox, integrations.bus.publish_engine_event, RunLimits.from_settings(deps.settings),
    )


def start_underwriting_flow(deps: ServiceDependencies, analyzer: ImpactAnalyzer) -> None:
    """With integrations on and the flow enabled, analyse every submitted loan application in the background."""
    settings, integrations = deps.settings, deps.integrations
    portfolio_id = settings.impact_flow_portfolio_id or next(
        (p.strip() for p in settings.integration_mirror_portfolios.split(",") if p.strip()), "")
    if not settings.impact_flow_enabled or integrations.reads is None or not portfolio_id:
        return
    flow = UnderwritingFlow(integrations.bus, deps.store, integrations.reads, analyzer, portfolio_id=portfolio_id,
                            paths=settings.impact_flow_paths)
    deps.lifecycle.add_background_task(flow.run(), name="underwriting flow")


def build_bindings(deps: ServiceDependencies) -> list[ServiceBinding]:
    analyzer = impact_analyzer(deps)
    start_underwriting_flow(deps, analyzer)
    simulations = SimulationService(
        deps.store.runs,
        deps.runner,
        deps.lifecycle,
        publish=deps.integrations.bus.publish_engine_event,
        books=LiveBooks(deps.integrations.mirror, deps.integrations.sync),
        limits=RunLimits.from_settings(deps.settings),
    )
    return [
        binding(SIMULATION, simulation_service_pb2_grpc.add_SimulationServiceServicer_to_server, simulations),
        binding(
            IMPACT,
            impact_analysis_service_pb2_grpc.add_ImpactAnalysisServiceServicer_to_server,
            ImpactAnalysisService(analyzer),
        ),
        binding(
            OPTIMIZATION,
            optimization_service_pb2_grpc.add_OptimizationServiceServicer_to_server,
            OptimizationService(optimizations(deps)),
        ),
        binding(EVENTS, add_event_service, EventService(deps.integrations.bus, deps.lifecycle)),
        binding(
            STUDY,
            study_service_pb2_grpc.add_StudyServiceServicer_to_server,
            StudyService(deps.store.studies, deps.runner, deps.lifecycle, RunLimits.from_settings(deps.settings),
                         publish=deps.integrations.bus.publish_engine_event),
        ),
        binding(
            INTEGRATION,
            integration_service_pb2_grpc.add_IntegrationServiceServicer_to_server,
            IntegrationService(deps.integrations),
        ),
    ]
