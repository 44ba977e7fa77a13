"""The durable outbox against the strict sandbox: a push survives outages and restarts and is delivered
once, retries honour retry_after, refusals become dead letters visible (and retryable) over gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from adapters import pushes
from adapters.sandbox import Sandbox
from equihome.integration.v1 import integration_pb2
from equihome.integration.v1 import integration_service_pb2 as pb
from equihome.optimization.v1 import allocation_pb2
from equihome.type.v1 import metrics_pb2, zone_pb2
from server.integration.outbox import PushKeyReused
from tests.integration.conftest import Service, eventually

Push = integration_pb2.Push
PMS = "integrations/portfolio-management"
FAST_RETRIES = {"integration_push_max_backoff_s": 0.2}


def recommendation() -> allocation_pb2.AllocationRecommendation:
    return allocation_pb2.AllocationRecommendation(
        target_allocation=zone_pb2.ZoneWeights(green=0.7, orange=0.25, red=0.05),
        expected_metrics=metrics_pb2.PortfolioMetrics(irr=0.14, equity_multiple=2.3),
        actions=[
            allocation_pb2.AllocationAction(
                action_type=allocation_pb2.ACTION_TYPE_INCREASE_ALLOCATION, zone=zone_pb2.ZONE_GREEN, amount=1e6
            )
        ],
    )


PUSH = pushes.pms_recommendations("portfolio_456", "optimization_7", recommendation())
GUIDE_BODY = {
    "optimization_id": "optimization_7",
    "recommendations": {
        "target_allocation": {"green": 0.7, "orange": 0.25, "red": 0.05},
        "expected_metrics": {"irr": 0.14, "equity_multiple": 2.3},
        "actions": [{"action_type": "increase_allocation", "zone": "green", "amount": 1e6}],
    },
}


async def pushes_of(service: Service, *states: int) -> list[integration_pb2.Push]:
    return list((await service.integrations.ListPushes(pb.ListPushesRequest(parent=PMS, states=states))).pushes)


async def attempted(service: Service, count: int) -> bool:
    listed = await pushes_of(service)
    return bool(listed) and listed[0].attempts >= count


async def delivered(service: Service) -> bool:
    return [push.state for push in await pushes_of(service)] == [Push.STATE_DELIVERED]


async def test_a_push_made_while_the_upstream_returns_503_is_delivered_once_after_it_recovers(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    service = await make_service(sandbox, **FAST_RETRIES)
    sandbox.set_faults({"pms": {"outage": True, "outage_retry_after": 1}})

    assert await service.runtime.outbox.submit(PUSH)
    await eventually(lambda: attempted(service, 2))

    (pending,) = await pushes_of(service)
    assert (pending.state, pending.last_status_code) == (Push.STATE_PENDING, 503)
    waited = pending.next_attempt_time.ToMicroseconds() - pending.last_attempt_time.ToMicroseconds()
    assert waited >= 1_000_000  # the system's retry_after, though our own backoff is shorter
    report = (await service.integrations.GetIntegration(pb.GetIntegrationRequest(name=PMS))).integration
    assert (report.pending_pushes, report.dead_letter_pushes) == (1, 0)
    assert sandbox.received("pms") == []

    sandbox.reset_faults()
    await eventually(lambda: delivered(service), timeout=20)

    (post,) = sandbox.received("pms")
    assert post.body == GUIDE_BODY and post.path == "/api/pms/portfolios/portfolio_456/recommendations"
    assert post.idempotency_key == "pms_recommendations:optimization_7"
    assert not await service.runtime.outbox.submit(PUSH)  # the same push again: already stored, not resent
    (done,) = await pushes_of(service)
    assert done.state == Push.STATE_DELIVERED and done.HasField("deliver_time") and len(sandbox.received("pms")) == 1


async def test_a_push_pending_at_shutdown_is_delivered_once_after_the_restart(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    first = await make_service(sandbox, **FAST_RETRIES)
    sandbox.set_faults({"pms": {"outage": True, "outage_retry_after": 0}})
    await first.runtime.outbox.submit(PUSH)
    await eventually(lambda: attempted(first, 1))
    await first.app.shutdown(grace=1)

    sandbox.reset_faults()
    second = await make_service(sandbox, **FAST_RETRIES)
    await eventually(lambda: delivered(second), timeout=20)

    (post,) = sandbox.received("pms")
    assert post.body == GUIDE_BODY


async def test_a_refused_push_is_a_dead_letter_visible_and_retryable(service: Service) -> None:
    unknown = pushes.pms_recommendations("portfolio_999", "optimization_8", recommendation())
    await service.runtime.outbox.submit(unknown)

    await eventually(lambda: _states(service, [Push.STATE_DEAD_LETTER]))
    (dead,) = await pushes_of(service, Push.STATE_DEAD_LETTER)
    assert (dead.attempts, dead.last_status_code, dead.kind, dead.key) == (1, 404, "pms_recommendations", "optimization_8")
    report = (await service.integrations.GetIntegration(pb.GetIntegrationRequest(name=PMS))).integration
    assert report.dead_letter_pushes == 1

    retried = (await service.integrations.RetryPush(pb.RetryPushRequest(name=dead.name))).push
    assert retried.state == Push.STATE_PENDING
    await eventually(lambda: attempted(service, 2))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.integrations.RetryPush(pb.RetryPushRequest(name=f"{PMS}/pushes/999"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def _states(service: Service, states: list[int]) -> bool:
    return [push.state for push in await pushes_of(service)] == states


async def test_a_key_reused_for_another_body_is_refused_and_lists_page(service: Service) -> None:
    service.sandbox.set_faults({"pms": {"outage": True}})  # keep them pending
    for index in range(3):
        await service.runtime.outbox.submit(pushes.pms_recommendations("portfolio_456", f"optimization_{index}", recommendation()))
    other = recommendation()
    other.target_allocation.green, other.target_allocation.orange = 0.6, 0.35

    with pytest.raises(PushKeyReused):
        await service.runtime.outbox.submit(pushes.pms_recommendations("portfolio_456", "optimization_1", other))
    first = await service.integrations.ListPushes(pb.ListPushesRequest(parent=PMS, page_size=2))
    rest = await service.integrations.ListPushes(pb.ListPushesRequest(parent=PMS, page_size=2, page_token=first.next_page_token))

    assert [push.key for push in [*first.pushes, *rest.pushes]] == ["optimization_2", "optimization_1", "optimization_0"]
    assert rest.next_page_token == ""


async def test_a_push_not_accepted_before_its_deadline_is_a_dead_letter(
    sandbox: Sandbox, make_service: Callable[..., Awaitable[Service]]
) -> None:
    service = await make_service(sandbox, integration_push_max_age_s=0.5, **FAST_RETRIES)
    sandbox.set_faults({"pms": {"outage": True, "outage_retry_after": 0}})

    await service.runtime.outbox.submit(PUSH)

    await eventually(lambda: _states(service, [Push.STATE_DEAD_LETTER]))
    (dead,) = await pushes_of(service)
    assert dead.attempts >= 1 and dead.last_status_code in (0, 503)  # 0: the open circuit answered
