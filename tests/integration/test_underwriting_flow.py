"""The automatic Underwriting flow against the strict sandbox: a submitted application is analysed on the
sandbox portfolio's live book and POSTed back exactly once, through a 503 outage and a server restart, and a
repeat of the application posts nothing more; and an application without a zone takes TLS's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from adapters.sandbox import Sandbox
from equihome.events.v1 import event_pb2, event_service_pb2
from equihome.impact.v1 import impact_analysis_service_pb2 as impact_pb2
from equihome.impact.v1.impact_analysis_service_pb2_grpc import ImpactAnalysisServiceStub
from equihome.integration.v1 import integration_pb2
from equihome.integration.v1 import integration_service_pb2 as pb
from equihome.simulation.v1 import simulation_pb2, simulation_service_pb2
from equihome.type.v1 import loan_pb2, zone_pb2
from server.integration.underwriting_flow import FLOW_OWNER, request_id_for
from server.store import Store
from tests.integration.conftest import Service, eventually
from tests.service.conftest import LONG_PATHS, small_config

Push = integration_pb2.Push
UNDERWRITING = "integrations/underwriting"
SETTINGS = {"integration_sync": True, "impact_flow_paths": 300, "integration_push_max_backoff_s": 0.2}
GUIDE_METRICS = {"irr", "equity_multiple", "roi", "sharpe_ratio"}


async def impact_events(service: Service) -> list[event_pb2.ImpactAnalysisCompleted]:
    """Every ImpactAnalysisCompleted in the service's event log."""
    deliveries = await service.runtime.bus.read_after(0, limit=10_000)
    found = []
    for delivery in deliveries:
        if delivery.key is not None and delivery.key.type == event_pb2.EVENT_TYPE_IMPACT_ANALYSIS_COMPLETED:
            event = event_service_pb2.SubscribeEventsResponse.FromString(delivery.response).event
            found.append(event.impact_analysis_completed)
    return found


async def pushes(service: Service) -> list[Push]:
    return list((await service.integrations.ListPushes(pb.ListPushesRequest(parent=UNDERWRITING))).pushes)


async def test_an_application_is_posted_once_through_an_outage_and_a_restart(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    first = await make_service(sandbox, **SETTINGS)
    await first.connected()
    # a long simulation holds the only worker, so the analysis waits in the queue once its parameters are read
    blocker = await first.simulations.CreateSimulation(
        simulation_service_pb2.CreateSimulationRequest(
            simulation=simulation_pb2.Simulation(config=small_config(paths=LONG_PATHS))
        )
    )
    await eventually(lambda: first.sample("equihome_runs_in_flight") > 0)
    frame = sandbox.emit("underwriting", "loan_application_submitted")
    loan_id = frame.data["loan_id"]
    await eventually(lambda: first.sample("equihome_runs_queued") > 0, timeout=60)

    # from now Underwriting answers 503: the analysis runs, and its POST waits in the outbox
    sandbox.set_faults({"underwriting": {"outage": True, "outage_retry_after": 0}})
    await first.simulations.CancelSimulation(
        simulation_service_pb2.CancelSimulationRequest(name=blocker.simulation.name)
    )
    await eventually(lambda: _pending_after_503(first), timeout=60)
    (event,) = await impact_events(first)
    assert event.loan_id == loan_id and event.portfolio_id == sandbox.config.portfolio_id
    await first.app.shutdown(grace=1)
    assert sandbox.received("underwriting") == []

    sandbox.reset_faults()
    second = await make_service(sandbox, **SETTINGS)
    await eventually(lambda: len(sandbox.received("underwriting")) == 1, timeout=30)
    (post,) = sandbox.received("underwriting")
    assert post.path == f"/api/underwriting/loans/{loan_id}/portfolio-impact"
    assert (
        post.body["analysis_id"] == event.analysis_id
        and post.idempotency_key == f"portfolio_impact:{event.analysis_id}"
    )
    impact = post.body["impact"]
    assert GUIDE_METRICS <= set(impact["portfolio_metrics_before"]) and GUIDE_METRICS <= set(
        impact["portfolio_metrics_after"]
    )
    assert set(impact["risk_impact"]) == {
        "var_change",
        "concentration_risk_change",
        "diversification_benefit",
    }
    assert set(impact["recommendation"]) == {
        "approve",
        "recommended_loan_amount",
        "recommended_ltv",
        "confidence_score",
    }
    assert 0.0 <= impact["recommendation"]["confidence_score"] <= 1.0

    # the same application again (as if Underwriting sent it twice): no second analysis, POST or event
    stored = await second.runtime.bus.last_issued_cursor()
    second.runtime.bus.publish(
        event_pb2.Event(loan_application_submitted=event_pb2.LoanApplicationSubmitted(loan_id=loan_id))
    )
    await eventually(lambda: _flow_passed(second, stored), timeout=30)
    assert len(sandbox.received("underwriting")) == 1
    assert [e.analysis_id for e in await impact_events(second)] == [event.analysis_id]
    found = await _store(second).impact.find_request(FLOW_OWNER, request_id_for(loan_id), None)
    assert found is not None and found.analysis_id == event.analysis_id


async def _pending_after_503(service: Service) -> bool:
    listed = await pushes(service)
    return bool(listed) and listed[0].state == Push.STATE_PENDING and listed[0].last_status_code == 503


async def _flow_passed(service: Service, cursor: int) -> bool:
    """The flow's stored cursor has moved past ``cursor`` (it handled the events up to there)."""

    def work(connection):
        row = connection.execute("SELECT cursor FROM impact_flow_cursor WHERE id = 1").fetchone()
        return row is not None and row[0] > cursor

    return await _store(service).call(work)


def _store(service: Service) -> Store:
    """The running server's store (its data directory is locked to it, so a test cannot open another)."""
    return service.runtime.bus._store


async def test_an_application_without_a_zone_takes_the_zone_tls_gives_its_property(service: Service) -> None:
    prop = next(iter(service.sandbox.world.properties.values()))
    application = loan_pb2.LoanApplication(
        loan_id="loan_tls",
        property_value=600_000,
        requested_loan_amount=200_000,
        property_id=prop.id,
        property_region="sydney_north",
    )
    stub = ImpactAnalysisServiceStub(service.channel)
    reply = await stub.AnalyzeLoanImpact(
        impact_pb2.AnalyzeLoanImpactRequest(loan_application=application, paths=100), timeout=60
    )
    expected = zone_pb2.Zone.Value(f"ZONE_{prop.zone.value.upper()}")
    assert reply.analysis.property_zone == expected
