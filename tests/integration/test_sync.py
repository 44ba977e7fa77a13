"""The mirror of the sandbox's systems: initial load, live events, and reconciliation that finds, repairs,
publishes and counts what no socket delivered. Expectations come from the sandbox's world."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.sandbox import Sandbox
from adapters.systems import Upstream
from equihome.events.v1 import event_pb2
from equihome.integration.v1 import integration_pb2
from equihome.integration.v1 import integration_service_pb2 as pb
from server.integration.mirror import LOAN, MARKET_RISK, METRICS
from tests.integration.conftest import Service, eventually, take

Reconciliation = integration_pb2.Reconciliation
PORTFOLIO = "portfolio_456"


@pytest.fixture
async def service(sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]) -> Service:
    """A service that keeps its mirror in step (off in the other integration tests)."""
    running = await make_service(sandbox, integration_sync=True)
    await running.connected()
    return running


async def reconcile_now(service: Service, system: Upstream) -> Reconciliation:
    """Ask for a full pass of ``system`` and return it once it has run."""
    assert service.runtime.sync is not None
    asked_us = time.time_ns() // 1000
    service.runtime.sync.request(system)

    async def ran() -> bool:
        newest = await service.runtime.mirror.reconciliations(system.value)
        return bool(newest) and newest[0].start_time.ToMicroseconds() >= asked_us

    await eventually(ran)
    return (await service.runtime.mirror.reconciliations(system.value))[0]


async def mirror_matches_world(service: Service) -> bool:
    world = service.sandbox.world
    loans = await service.runtime.mirror.items(LOAN, PORTFOLIO)
    risks = await service.runtime.mirror.items(MARKET_RISK)
    metrics = await service.runtime.mirror.items(METRICS, PORTFOLIO)
    return (
        {loan_id: (item.message.loan_amount, item.message.zone) for loan_id, item in loans.items()}  # type: ignore[attr-defined]
        == {loan.id: (loan.amount, _zone(loan.property.zone.value)) for loan in world.portfolio.loans.values()}
        and {region: item.message.risk_score for region, item in risks.items()}  # type: ignore[attr-defined]
        == {region.id: region.risk_score for region in world.regions.values()}
        and PORTFOLIO in metrics
        and metrics[PORTFOLIO].message.irr == world.portfolio.metrics["irr"]  # type: ignore[attr-defined]
    )


def _zone(name: str) -> int:
    return {"green": 1, "orange": 2, "red": 3}[name]


async def test_the_initial_load_and_live_events_keep_the_mirror_equal_to_the_world(service: Service) -> None:
    await eventually(lambda: mirror_matches_world(service))
    for system, event in [
        ("pms", "portfolio_updated"), ("pms", "portfolio_updated"), ("pms", "metrics_updated"),
        ("traffic-light", "market_risk_updated"), ("underwriting", "loan_approved"), ("pms", "portfolio_updated"),
    ]:  # fmt: skip
        assert service.sandbox.emit(system, event) is not None
    await eventually(lambda: mirror_matches_world(service))

    report = (await service.integrations.GetIntegration(pb.GetIntegrationRequest(name="integrations/portfolio-management"))).integration
    # The first socket's connection ends the blindness of the start-up: a catch-up pass follows the first load.
    triggers = (Reconciliation.TRIGGER_INITIAL_LOAD, Reconciliation.TRIGGER_COVERAGE_GAP)
    assert report.HasField("mirror_sync_time") and report.last_reconciliation.trigger in triggers
    assert report.last_reconciliation.complete and report.last_reconciliation.drift_count == 0


def world_state(service: Service) -> dict[str, Any]:
    world = service.sandbox.world
    return {
        "loans": {loan.id for loan in world.portfolio.loans.values()},
        "scores": {region.id: region.risk_score for region in world.regions.values()},
        "metrics": {name: world.portfolio.metrics[name] for name in ("irr", "equity_multiple", "roi")},
    }


async def test_changes_no_socket_delivered_are_found_repaired_published_and_counted(service: Service) -> None:
    await eventually(lambda: mirror_matches_world(service))
    call = await service.subscribe(heartbeat_interval={"seconds": 300})
    live = service.sandbox.emit("pms", "metrics_updated")  # delivered: reconciliation must not repeat it
    (delivered,) = await take(call, 1)
    assert live and delivered.origin == event_pb2.EVENT_ORIGIN_LIVE
    await eventually(lambda: mirror_matches_world(service))
    before = world_state(service)
    service.sandbox.set_faults({"pms": {"ws_silent": True}, "traffic-light": {"ws_silent": True}})
    lost = [service.sandbox.emit("pms", "portfolio_updated") for _ in range(3)]
    lost += [service.sandbox.emit("traffic-light", "market_risk_updated") for _ in range(3)]
    lost.append(service.sandbox.emit("pms", "metrics_updated"))
    sent = {d.frame.id: d.sockets for system in ("pms", "traffic-light") for d in service.sandbox.deliveries(system)}
    assert all(frame is not None and sent[frame.id] == 0 for frame in lost)  # no socket carried them
    after = world_state(service)

    pms_run = await reconcile_now(service, Upstream.PMS)
    tls_run = await reconcile_now(service, Upstream.TRAFFIC_LIGHT)

    added, removed = after["loans"] - before["loans"], before["loans"] - after["loans"]
    moved = {region for region, score in after["scores"].items() if score != before["scores"][region]}
    expected = len(added) + len(removed) + 1 + len(moved)  # + 1: the metrics
    recovered = await take(call, expected)
    assert all(event.origin == event_pb2.EVENT_ORIGIN_RECONCILIATION for event in recovered)
    loans = [event.portfolio_updated for event in recovered if event.HasField("portfolio_updated")]
    assert {loan.loan.id for loan in loans if loan.update_type == event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_ADDED} == added
    assert {loan.loan.id for loan in loans if loan.update_type == event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_REMOVED} == removed
    (metrics,) = [event.metrics_updated for event in recovered if event.HasField("metrics_updated")]
    assert {name: getattr(metrics.metrics, name) for name in after["metrics"]} == after["metrics"]
    risks = {event.market_risk_updated.region_id: event.market_risk_updated for event in recovered if event.HasField("market_risk_updated")}
    assert {region: risk.risk_score for region, risk in risks.items()} == {region: after["scores"][region] for region in moved}
    assert await mirror_matches_world(service)

    assert (pms_run.drift_count, tls_run.drift_count) == (len(added) + len(removed) + 1, len(moved))
    assert {(drift.kind, drift.change) for drift in pms_run.drift} <= {
        ("loan", integration_pb2.Drift.CHANGE_ADDED), ("loan", integration_pb2.Drift.CHANGE_REMOVED),
        ("metrics", integration_pb2.Drift.CHANGE_MODIFIED),
    }  # fmt: skip
    missed = sum(service.sample("equihome_upstream_ws_events_missed_total", system=s) for s in ("pms", "traffic-light"))
    assert missed == expected
    report = (await service.integrations.GetIntegration(pb.GetIntegrationRequest(name="integrations/portfolio-management"))).integration
    assert report.last_reconciliation == pms_run and report.mirror_age.ToMicroseconds() >= 0
    call.cancel()


async def test_when_every_socket_was_down_a_reconciliation_follows_at_once(service: Service) -> None:
    await eventually(lambda: mirror_matches_world(service))
    monitor = service.runtime.links[Upstream.PMS].monitor
    service.sandbox.set_faults({"pms": {"outage": True, "outage_retry_after": 0}})
    await eventually(lambda: monitor.socket_state != "connected")
    service.sandbox.emit("pms", "metrics_updated")  # the world moves; no socket is there to say so
    gaps = service.sample("equihome_upstream_ws_coverage_gaps_total", system="pms")
    recovered_us = time.time_ns() // 1000
    service.sandbox.reset_faults()

    async def caught_up() -> bool:
        newest = await service.runtime.mirror.reconciliations("pms")
        return (
            bool(newest)
            and newest[0].trigger == Reconciliation.TRIGGER_COVERAGE_GAP
            and newest[0].start_time.ToMicroseconds() >= recovered_us
            and newest[0].complete
        )

    await eventually(caught_up)
    assert await mirror_matches_world(service)
    assert service.sample("equihome_upstream_ws_coverage_gaps_total", system="pms") == gaps + 1
