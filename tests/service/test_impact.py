"""AnalyzeLoanImpact over gRPC: a real server, job workers and SQLite store; checked against the engine."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
from google.rpc import code_pb2

from equihome.events.v1 import event_pb2, event_service_pb2
from equihome.events.v1.event_service_pb2_grpc import EventServiceStub
from equihome.impact.v1 import impact_analysis_pb2 as pb
from equihome.impact.v1 import impact_analysis_service_pb2 as service_pb2
from equihome.impact.v1.impact_analysis_service_pb2_grpc import ImpactAnalysisServiceStub
from equihome.integration.v1 import integration_service_pb2
from equihome.integration.v1.integration_service_pb2_grpc import IntegrationServiceStub
from equihome.simulation.v1 import simulation_service_pb2
from equihome.type.v1 import loan_pb2, zone_pb2
from server import impact_cli
from server.auth import ADMIN_SCOPE, SCOPES, issue_dev_token
from tests.service.conftest import Service, bearer, refusal, running, seed_portfolio, small_book, small_config

PATHS = 200


def application(**fields) -> loan_pb2.LoanApplication:
    values = {
        "loan_id": "loan_77",
        "property_value": 500_000,
        "requested_loan_amount": 200_000,
        "property_zone": zone_pb2.ZONE_GREEN,
        "property_region": "sydney_north",
    } | fields
    return loan_pb2.LoanApplication(**values)


def request(**fields) -> service_pb2.AnalyzeLoanImpactRequest:
    values = {
        "loan_application": application(),
        "base_config": small_config(paths=PATHS),
        "paths": PATHS,
    } | fields
    return service_pb2.AnalyzeLoanImpactRequest(**values)


def impact(service: Service) -> ImpactAnalysisServiceStub:
    return ImpactAnalysisServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{service.app.port}"))


async def events_of(service: Service, subject_token) -> list[event_pb2.ImpactAnalysisCompleted]:
    """Every ImpactAnalysisCompleted stored so far (replayed from the start of the log)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.app.port}") as channel:
        call = EventServiceStub(channel).SubscribeEvents(
            event_service_pb2.SubscribeEventsRequest(
                event_types=[event_pb2.EVENT_TYPE_IMPACT_ANALYSIS_COMPLETED], start_after_cursor="0"
            ),
            metadata=subject_token,
        )
        found = []
        try:
            while True:
                message = await asyncio.wait_for(call.read(), 1.0)
                if message.event.HasField("impact_analysis_completed"):
                    found.append(message.event.impact_analysis_completed)
        except TimeoutError:
            return found
        finally:
            call.cancel()


async def test_analysis_matches_a_plain_run_and_is_stored_once(service: Service) -> None:
    stub = impact(service)
    request_id = str(uuid.uuid4())
    sent = request(request_id=request_id, publish_to_underwriting=True)
    first = await stub.AnalyzeLoanImpact(sent, metadata=service.auth(), timeout=60)
    analysis = first.analysis
    assert analysis.analysis_id.startswith("analysis_") and analysis.loan_id == "loan_77"
    assert analysis.paths == PATHS and analysis.method == pb.IMPACT_METHOD_FAST

    run = await service.stub.RunSimulation(
        simulation_service_pb2.RunSimulationRequest(config=small_config(paths=PATHS)),
        metadata=service.auth(),
        timeout=60,
    )
    metrics, risk = run.simulation.result.metrics, run.simulation.result.risk
    assert analysis.portfolio_metrics_before.irr == metrics.lp_net_irr.mean
    assert analysis.portfolio_metrics_before.equity_multiple == metrics.lp_moic.mean
    assert analysis.portfolio_metrics_before.prob_hurdle == risk.prob_hurdle
    delta = analysis.deltas.lp_net_irr
    assert delta.before == metrics.lp_net_irr.mean and delta.ci95_lower <= delta.delta <= delta.ci95_upper
    assert analysis.recommendation.decision != pb.DECISION_UNSPECIFIED and analysis.recommendation.reasons
    # no portfolio id: the Underwriting body cannot be formed; the call still answers
    assert first.publish_status.code == code_pb2.FAILED_PRECONDITION

    again = await stub.AnalyzeLoanImpact(sent, metadata=service.auth(), timeout=60)
    assert again.analysis == analysis and again.publish_status == first.publish_status
    events = await events_of(service, service.auth())
    assert [e.analysis_id for e in events] == [analysis.analysis_id]
    assert events[0].lp_net_irr_delta == delta.delta
    someone_else = bearer(issue_dev_token(service.data_dir, [s for s in SCOPES if s != ADMIN_SCOPE], subject="eve"))
    assert await events_of(service, someone_else) == []  # another caller's loan and decision stay private

    reused = await refusal(
        stub.AnalyzeLoanImpact(request(request_id=request_id, paths=300), metadata=service.auth(), timeout=60)
    )
    assert (reused.code, reused.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")

    other_caller = bearer(issue_dev_token(service.data_dir, SCOPES, subject="someone-else"))
    theirs = await stub.AnalyzeLoanImpact(sent, metadata=other_caller, timeout=60)
    assert theirs.analysis.analysis_id != analysis.analysis_id  # request ids are per owner


async def test_every_bad_field_is_named(service: Service) -> None:
    stub = impact(service)
    bad = request(
        paths=50,
        loan_application=application(property_value=0),
        policy=pb.ImpactPolicy(max_ltv=2.0, zone_caps=pb.ZoneCaps(red=1.5)),
        request_id="not-a-uuid",
    )
    details = await refusal(stub.AnalyzeLoanImpact(bad, metadata=service.auth(), timeout=30))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details.bad_request.field_violations}
    assert fields == {
        "paths",
        "request_id",
        "loan_application.property_value",
        "policy.max_ltv",
        "policy.zone_caps.red",
    }

    for region in ("", "atlantis"):  # required (at the edge); then a region of the fund's book
        unknown_region = request(loan_application=application(property_region=region))
        details = await refusal(stub.AnalyzeLoanImpact(unknown_region, metadata=service.auth(), timeout=30))
        assert [v.field for v in details.bad_request.field_violations] == ["loan_application.property_region"]

    read_only = bearer(issue_dev_token(service.data_dir, ["simulation:read"]))
    details = await refusal(stub.AnalyzeLoanImpact(request(), metadata=read_only, timeout=30))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED

    # a fund of about 40,000 loans held whole for 5,000 paths does not fit a worker: refused before running
    huge = small_config(fund={"size": 1e10, "deployment_target_fraction": 0.8})
    details = await refusal(
        stub.AnalyzeLoanImpact(request(base_config=huge, paths=5000), metadata=service.auth(), timeout=30)
    )
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RUN_TOO_COSTLY")
    assert "paths" in {v.field for v in details.bad_request.field_violations}  # what sets them here


async def test_live_book_and_the_push_to_underwriting(settings, tmp_path) -> None:
    await seed_portfolio(settings.data_dir, "portfolio_9", small_book(6))
    async with running(settings) as service:
        stub = impact(service)
        sent = service_pb2.AnalyzeLoanImpactRequest(
            loan_application=application(property_region="unassigned"),
            portfolio_id="portfolio_9",
            paths=PATHS,
            publish_to_underwriting=True,
            method=pb.IMPACT_METHOD_EXACT,
        )
        reply = await stub.AnalyzeLoanImpact(sent, metadata=service.auth(), timeout=60)
        analysis = reply.analysis
        assert analysis.portfolio_id == "portfolio_9" and analysis.method == pb.IMPACT_METHOD_EXACT
        assert reply.publish_status.code == code_pb2.OK
        # six loans of 200k plus one of 200k: the loan is 1/7 of the book
        assert abs(analysis.risk_impact.loan_share - 1 / 7) < 1e-12
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.app.port}") as channel:
            pushes = await IntegrationServiceStub(channel).ListPushes(
                integration_service_pb2.ListPushesRequest(parent="integrations/underwriting"),
                metadata=service.auth(),
                timeout=10,
            )
        assert [p.key for p in pushes.pushes] == [analysis.analysis_id]


async def test_the_cli_asks_the_server_for_a_live_book_analysis(settings, capsys) -> None:
    await seed_portfolio(settings.data_dir, "portfolio_9", small_book(6))
    async with running(settings) as service:
        token = issue_dev_token(service.data_dir, ["impact:write"])
        argv = [
            "--portfolio",
            "portfolio_9",
            "--server",
            f"127.0.0.1:{service.app.port}",
            "--token",
            token,
            "--amount",
            "200000",
            "--property-value",
            "500000",
            "--zone",
            "green",
            "--region",
            "unassigned",
            "--json",
        ]
        assert await asyncio.to_thread(impact_cli.main, [*argv, "--paths", "100"]) == 0
        analysis = json.loads(capsys.readouterr().out)
        assert analysis["portfolio_id"] == "portfolio_9" and analysis["paths"] == "100"
        assert abs(analysis["risk_impact"]["loan_share"] - 1 / 7) < 1e-12
        assert await asyncio.to_thread(impact_cli.main, [*argv, "--paths", "50000"]) == 2  # paths named
        assert "--paths" in capsys.readouterr().err
