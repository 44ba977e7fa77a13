"""Automatic re-optimisation against the strict sandbox: a TLS change gives one re-optimisation and one
POST of the guide's payload to each of TLS and PMS; a burst of ten changes still gives one; a later change
whose recommendation did not move sends nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from adapters.sandbox import Sandbox
from equihome.events.v1 import event_pb2
from equihome.optimization.v1 import optimization_service_pb2 as pb
from equihome.optimization.v1.optimization_service_pb2_grpc import OptimizationServiceStub
from server import optimize_cli
from server.app import Lifecycle, build_server
from server.integration.reoptimise import Reoptimiser
from server.integration.runtime import IntegrationRuntime
from server.jobs import JobRunner
from server.observability import Metrics
from server.services import ServiceDependencies, build_bindings
from server.store import Store
from tests.integration.conftest import Service, eventually, service_settings, take

PORTFOLIO = "portfolio_456"
TLS_PATH = "/api/traffic-light/recommendations"
PMS_PATH = f"/api/pms/portfolios/{PORTFOLIO}/recommendations"
REOPTIMISING = {
    "reoptimize": True,
    "reoptimize_debounce_s": 1.0,
    "reoptimize_paths": 100,
    "integration_sync": True,
    "reoptimize_threshold": 0.02,
}


def recommendation_posts(sandbox: Sandbox) -> tuple[list, list]:
    tls = [post for post in sandbox.received("traffic-light") if post.path == TLS_PATH]
    pms = [post for post in sandbox.received("pms") if post.path == PMS_PATH]
    return tls, pms


def assert_guide_payloads(tls_body: dict, pms_body: dict) -> None:
    """The two bodies exactly as the integration guide shows them."""
    assert set(tls_body) == {"portfolio_id", "recommendations"} and tls_body["portfolio_id"] == PORTFOLIO
    tls = tls_body["recommendations"]
    assert set(tls) == {
        "green_zone_allocation",
        "orange_zone_allocation",
        "red_zone_allocation",
        "region_allocations",
    }
    assert (
        abs(tls["green_zone_allocation"] + tls["orange_zone_allocation"] + tls["red_zone_allocation"] - 1)
        < 1e-9
    )
    assert set(pms_body) == {"optimization_id", "recommendations"}
    pms = pms_body["recommendations"]
    assert set(pms) == {"target_allocation", "expected_metrics", "actions"}
    assert pms["target_allocation"] == {
        "green": tls["green_zone_allocation"],
        "orange": tls["orange_zone_allocation"],
        "red": tls["red_zone_allocation"],
    }
    assert {"irr", "equity_multiple", "roi", "sharpe_ratio"} <= set(pms["expected_metrics"])
    for action in pms["actions"]:
        assert set(action) == {"action_type", "zone", "amount"}
        assert (
            action["action_type"] in {"increase_allocation", "decrease_allocation"} and action["amount"] > 0
        )


@dataclass
class Reoptimising:
    """The service and its re-optimiser, assembled as ``conftest.start_service`` does."""

    service: Service
    reoptimiser: Reoptimiser

    def quiet(self, runs: int) -> bool:
        """``runs`` rounds done, none under way or waiting."""
        return self.reoptimiser.runs == runs and not self.reoptimiser.running and not self.reoptimiser.pending


@pytest.fixture
async def reoptimising(sandbox: Sandbox, tmp_path: Path) -> AsyncIterator[Reoptimising]:
    settings = service_settings(sandbox, tmp_path / "data", **REOPTIMISING)
    lifecycle, metrics = Lifecycle(), Metrics()
    store = await Store.open(settings.data_dir)
    lifecycle.add_close_hook(store.close, name="store")
    runner = JobRunner.from_settings(settings, metrics)
    await runner.start()
    lifecycle.add_close_hook(runner.shutdown, name="job runner")
    runtime = await IntegrationRuntime.start(settings, store, metrics.registry)
    lifecycle.add_close_hook(runtime.aclose, name="integrations")
    bindings = build_bindings(ServiceDependencies(settings, lifecycle, metrics, store, runner, runtime))
    app = build_server(settings, bindings, lifecycle=lifecycle, metrics=metrics)
    await app.start()
    servicer = next(b.servicer for b in bindings if b.name.endswith("OptimizationService"))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    service = Service(sandbox, settings, app, runtime, metrics, channel)
    try:
        await service.connected()
        yield Reoptimising(service, servicer.optimizations.reoptimiser)
    finally:
        await channel.close()
        await app.shutdown(grace=0)


async def test_one_zone_change_gives_one_reoptimisation_and_one_post_to_each_system(
    sandbox: Sandbox, reoptimising: Reoptimising
) -> None:
    service = reoptimising.service
    completed = await service.subscribe(event_types=[event_pb2.EVENT_TYPE_OPTIMIZATION_COMPLETED])
    sandbox.emit("traffic-light", "zone_classification_updated")
    await eventually(lambda: all(len(posts) == 1 for posts in recommendation_posts(sandbox)), timeout=120)
    (tls,), (pms,) = recommendation_posts(sandbox)
    assert_guide_payloads(tls.body, pms.body)
    assert tls.idempotency_key == f"traffic_light_recommendations:{pms.body['optimization_id']}"
    event = (await take(completed, 1))[0].optimization_completed
    assert event.automatic and event.sent and event.optimization_id == pms.body["optimization_id"]
    await eventually(lambda: reoptimising.quiet(1))

    stub = OptimizationServiceStub(service.channel)
    stored = await stub.GetOptimization(pb.GetOptimizationRequest(optimization_id=event.optimization_id))
    assert stored.optimization.portfolio_id == PORTFOLIO and len(stored.optimization.deliveries) == 2


async def test_a_burst_of_ten_changes_gives_one_run_and_an_unmoved_recommendation_is_not_sent_again(
    sandbox: Sandbox, reoptimising: Reoptimising
) -> None:
    for _ in range(10):
        sandbox.emit("traffic-light", "zone_classification_updated")
    await eventually(lambda: all(len(posts) == 1 for posts in recommendation_posts(sandbox)), timeout=120)
    await eventually(lambda: reoptimising.quiet(1))
    assert [len(posts) for posts in recommendation_posts(sandbox)] == [1, 1]

    sandbox.emit("traffic-light", "market_risk_updated")  # same book, same seed: the same recommendation
    await eventually(lambda: reoptimising.quiet(2), timeout=120)
    assert [len(posts) for posts in recommendation_posts(sandbox)] == [1, 1]
    assert reoptimising.reoptimiser.sent == 1


async def test_the_cli_optimises_a_live_portfolio_on_the_server_and_sends_it(
    sandbox: Sandbox,
    make_service: Callable[..., Awaitable[Service]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    service = await make_service(sandbox, integration_sync=True)
    out = tmp_path / "optimization.json"
    argv = [
        "--portfolio",
        PORTFOLIO,
        "--server",
        f"127.0.0.1:{service.app.port}",
        "--paths",
        "100",
        "--frontier-points",
        "3",
        "--send",
        "--json",
        str(out),
    ]
    assert await asyncio.to_thread(optimize_cli.main, argv) == 0
    assert "efficient frontier" in capsys.readouterr().out
    written = json.loads(out.read_text())
    await eventually(lambda: all(len(posts) == 1 for posts in recommendation_posts(sandbox)))
    (tls,), (pms,) = recommendation_posts(sandbox)
    assert pms.body["optimization_id"] == written["optimizationId"]
    assert_guide_payloads(tls.body, pms.body)
