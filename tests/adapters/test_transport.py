"""Tokens, REST resilience and frame merging, against the real sandbox where there is one to talk to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from adapters.errors import UpstreamUnavailable
from adapters.http import ResiliencePolicy, UpstreamHttpClient
from adapters.metrics import AdapterMetrics
from adapters.monitor import UpstreamMonitor
from adapters.oauth import ClientCredentials, TokenProvider, TokenState, read_secret_file
from adapters.resequencer import Resequencer
from adapters.sandbox import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, SandboxConfig, running_sandbox
from adapters.systems import Upstream
from adapters.traffic_light.client import TrafficLightClient
from equihome.optimization.v1 import allocation_pb2
from equihome.type.v1 import zone_pb2


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(SandboxConfig(events_per_second=0)) as running:
        yield running


def credentials(sandbox: Sandbox, secret: str = DEMO_CLIENT_SECRET) -> ClientCredentials:
    return ClientCredentials(sandbox.token_url, DEMO_CLIENT_ID, SecretStr(secret), Upstream.TRAFFIC_LIGHT.scopes)


@pytest.fixture
async def tokens(sandbox: Sandbox) -> AsyncIterator[TokenProvider]:
    provider = TokenProvider(Upstream.TRAFFIC_LIGHT, credentials(sandbox), timeout=httpx.Timeout(5))
    yield provider
    await provider.aclose()


async def test_concurrent_callers_share_one_token_fetch(tokens: TokenProvider) -> None:
    got = await asyncio.gather(*(tokens.token() for _ in range(20)))

    assert tokens.fetches == 1 and len({token.value for token in got}) == 1
    assert tokens.state is TokenState.VALID


async def test_a_burst_of_401s_costs_one_refetch(tokens: TokenProvider) -> None:
    rejected = await tokens.token()

    renewed = await asyncio.gather(*(tokens.refresh(rejected) for _ in range(10)))

    assert tokens.fetches == 2 and len({token.value for token in renewed}) == 1 and renewed[0] is not rejected


async def test_tokens_are_refreshed_ahead_of_expiry() -> None:
    async with running_sandbox(SandboxConfig(events_per_second=0, token_lifetime_seconds=2)) as sandbox:
        provider = TokenProvider(Upstream.TRAFFIC_LIGHT, credentials(sandbox), timeout=httpx.Timeout(5))
        first = await provider.token()
        assert first.refresh_at == pytest.approx(first.expires_at - 1)  # half the lifetime, under the minute
        while (await provider.token()) is first:
            await asyncio.sleep(0.05)
        assert provider.fetches == 2 and provider.state is TokenState.VALID
        await provider.aclose()


async def test_secrets_are_masked_and_read_from_files(sandbox: Sandbox, tmp_path: Path) -> None:
    secret_file = tmp_path / "tls-secret"
    secret_file.write_text(DEMO_CLIENT_SECRET + "\n")
    creds = ClientCredentials(sandbox.token_url, DEMO_CLIENT_ID, read_secret_file(secret_file), ("traffic-light:read",))
    provider = TokenProvider(Upstream.TRAFFIC_LIGHT, creds, timeout=httpx.Timeout(5))

    token = await provider.token()

    for shown in (repr(creds), repr(provider), repr(token), str(creds)):
        assert DEMO_CLIENT_SECRET not in shown and token.value not in shown
    await provider.aclose()


async def test_a_wrong_secret_fails_without_leaking_it(sandbox: Sandbox) -> None:
    provider = TokenProvider(Upstream.TRAFFIC_LIGHT, credentials(sandbox, "wrong-secret"), timeout=httpx.Timeout(5))
    with pytest.raises(Exception) as caught:
        await provider.token()
    assert provider.state is TokenState.FAILED and provider.last_error == "token endpoint answered invalid_client"
    assert "wrong-secret" not in str(caught.value) and sandbox.token_url not in str(caught.value)
    await provider.aclose()


@pytest.fixture
async def client(sandbox: Sandbox, tokens: TokenProvider) -> AsyncIterator[tuple[TrafficLightClient, AdapterMetrics]]:
    metrics = AdapterMetrics(CollectorRegistry())
    policy = ResiliencePolicy(get_attempts=3, retry_initial_s=0.01, retry_max_s=0.05, breaker_threshold=10)
    http = UpstreamHttpClient(
        Upstream.TRAFFIC_LIGHT, sandbox.system_url("traffic-light"), tokens, UpstreamMonitor(Upstream.TRAFFIC_LIGHT),
        metrics, policy=policy,
    )  # fmt: skip
    yield TrafficLightClient(http), metrics
    await http.aclose()


def requests(metrics: AdapterMetrics, method: str, outcome: str) -> float:
    return metrics.requests.labels(system="traffic-light", method=method, outcome=outcome)._value.get()


async def test_gets_are_retried_on_server_errors(sandbox: Sandbox, client: tuple[TrafficLightClient, AdapterMetrics]) -> None:
    tls, metrics = client
    sandbox.set_faults({"traffic-light": {"error_rate": 1.0}})

    with pytest.raises(UpstreamUnavailable) as caught:
        await tls.zones(["property_1"])

    assert caught.value.status == 500 and caught.value.code == "internal_error"
    assert requests(metrics, "GET", "500") == 3


async def test_posts_are_never_retried(sandbox: Sandbox, client: tuple[TrafficLightClient, AdapterMetrics]) -> None:
    tls, metrics = client
    sandbox.set_faults({"traffic-light": {"error_rate": 1.0}})
    recommendation = allocation_pb2.AllocationRecommendation(
        target_allocation=zone_pb2.ZoneWeights(green=0.7, orange=0.25, red=0.05)
    )

    with pytest.raises(UpstreamUnavailable):
        await tls.send_recommendations("portfolio_456", recommendation)

    assert requests(metrics, "POST", "500") == 1
    sandbox.reset_faults()
    acknowledgement = await tls.send_recommendations("portfolio_456", recommendation)
    assert acknowledgement.status == "accepted" and acknowledgement.id is not None


# Merging the frames of redundant connections.


async def test_the_resequencer_delivers_each_id_once_in_order_and_reports_gaps() -> None:
    delivered: list[int] = []
    missed: list[tuple[int, int]] = []
    merge: Resequencer[int] = Resequencer(delivered.append, lambda a, b: missed.append((a, b)), hold_s=0.05)

    for connection, frame_id in [(0, 1), (1, 1), (0, 2), (1, 3), (0, 3), (1, 2), (0, 4)]:
        merge.push(connection, frame_id, frame_id)
    assert delivered == [1, 2, 3, 4] and missed == []

    merge.push(0, 7, 7)  # 5 and 6 never come
    assert delivered == [1, 2, 3, 4]
    await asyncio.sleep(0.1)
    assert delivered == [1, 2, 3, 4, 7] and missed == [(5, 6)]
    assert not merge.push(1, 6, 6)  # too late: already given up on
    merge.close()


async def test_frames_without_id_only_come_from_the_primary_connection() -> None:
    delivered: list[str] = []
    merge: Resequencer[str] = Resequencer(delivered.append, lambda a, b: None, hold_s=0.05)

    assert merge.push(0, None, "a") and not merge.push(1, None, "a")
    assert delivered == ["a"]
