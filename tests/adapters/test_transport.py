"""Tokens, REST resilience and frame merging, against the real sandbox where there is one to talk to."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from adapters.errors import UpstreamDataInvalid, UpstreamNotFound, UpstreamUnavailable
from adapters.http import ResiliencePolicy, UpstreamHttpClient
from adapters.metrics import AdapterMetrics
from adapters.monitor import UpstreamMonitor
from adapters.oauth import ClientCredentials, SystemTokens, TokenProvider, TokenState, read_secret_file
from adapters.stream_merge import StreamMerger
from adapters.sandbox import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, SandboxConfig, running_sandbox
from adapters.systems import Upstream
from adapters import pushes
from adapters.pushes import RestPushSink
from adapters.traffic_light.client import TrafficLightClient
from equihome.optimization.v1 import allocation_pb2
from equihome.type.v1 import zone_pb2


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(SandboxConfig(events_per_second=0)) as running:
        yield running


def credentials(sandbox: Sandbox, secret: str = DEMO_CLIENT_SECRET) -> ClientCredentials:
    return ClientCredentials(sandbox.token_url, DEMO_CLIENT_ID, SecretStr(secret), (Upstream.TRAFFIC_LIGHT.read_scope,))


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
async def client(sandbox: Sandbox) -> AsyncIterator[tuple[TrafficLightClient, AdapterMetrics]]:
    metrics = AdapterMetrics(CollectorRegistry())
    policy = ResiliencePolicy(get_attempts=3, retry_initial_s=0.01, retry_max_s=0.05, breaker_threshold=10)
    tokens = SystemTokens.create(
        Upstream.TRAFFIC_LIGHT, sandbox.token_url, DEMO_CLIENT_ID, SecretStr(DEMO_CLIENT_SECRET), timeout=httpx.Timeout(5)
    )
    http = UpstreamHttpClient(
        Upstream.TRAFFIC_LIGHT, sandbox.system_url("traffic-light"), tokens, UpstreamMonitor(Upstream.TRAFFIC_LIGHT),
        metrics, policy=policy,
    )  # fmt: skip
    yield TrafficLightClient(http), metrics
    await http.aclose()
    await tokens.aclose()


def token_scope(token: Any) -> str:
    """The ``scope`` claim of a JWT (read, not verified: the sandbox checks it)."""
    claims = token.value.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["scope"]


def requests(metrics: AdapterMetrics, method: str, outcome: str) -> float:
    return metrics.requests.labels(system="traffic-light", method=method, outcome=outcome)._value.get()


async def test_gets_are_retried_on_server_errors(sandbox: Sandbox, client: tuple[TrafficLightClient, AdapterMetrics]) -> None:
    tls, metrics = client
    sandbox.set_faults({"traffic-light": {"error_rate": 1.0}})

    with pytest.raises(UpstreamUnavailable) as caught:
        await tls.zones(["property_1"])

    assert caught.value.status == 500 and caught.value.code == "internal_error"
    assert requests(metrics, "GET", "500") == 3


async def test_posts_are_never_retried_and_carry_the_write_scope_only(
    sandbox: Sandbox, client: tuple[TrafficLightClient, AdapterMetrics]
) -> None:
    tls, metrics = client
    sink = RestPushSink({Upstream.TRAFFIC_LIGHT: tls.http})
    sandbox.set_faults({"traffic-light": {"error_rate": 1.0}})
    recommendation = allocation_pb2.AllocationRecommendation(
        target_allocation=zone_pb2.ZoneWeights(green=0.7, orange=0.25, red=0.05)
    )
    push = pushes.traffic_light_recommendations("portfolio_456", recommendation, key="optimization_1")

    with pytest.raises(UpstreamUnavailable):
        await sink.deliver(push)

    assert requests(metrics, "POST", "500") == 1
    sandbox.reset_faults()
    acknowledgement = await sink.deliver(push)
    await tls.zones(["property_1"])
    assert acknowledgement.id is None  # the guide's answer has no body
    (received,) = sandbox.received("traffic-light")
    assert received.idempotency_key == "traffic_light_recommendations:optimization_1"
    read_token, write_token = tls.http.tokens.read, tls.http.tokens.write
    assert [token_scope(await provider.token()) for provider in (read_token, write_token)] == [
        "traffic-light:read", "traffic-light:write"
    ]


# Merging the streams of redundant sockets.


def merger(delivered: list[str]) -> StreamMerger[str]:
    return StreamMerger(delivered.append, window_s=60)


def test_two_sockets_carrying_the_same_stream_deliver_each_event_once() -> None:
    delivered: list[str] = []
    merge = merger(delivered)
    first, second = merge.cursor(), merge.cursor()

    for cursor, key in [(first, "a"), (second, "a"), (first, "b"), (first, "c"), (second, "b"), (second, "c")]:
        merge.push(cursor, key, key)

    assert delivered == ["a", "b", "c"]


def test_an_event_that_really_happens_twice_is_delivered_twice() -> None:
    delivered: list[str] = []
    merge = merger(delivered)
    first, second = merge.cursor(), merge.cursor()

    for cursor, key in [(first, "x"), (first, "x"), (second, "x"), (second, "x"), (second, "y"), (first, "y")]:
        merge.push(cursor, key, key)

    assert delivered == ["x", "x", "y"]


def test_a_socket_that_missed_a_frame_skips_over_it_and_a_late_socket_starts_at_the_end() -> None:
    delivered: list[str] = []
    merge = merger(delivered)
    first, second = merge.cursor(), merge.cursor()
    merge.push(first, "a", "a")
    merge.push(first, "b", "b")  # the second socket got "b" corrupted
    merge.push(second, "a", "a")
    merge.push(second, "c", "c")
    merge.push(first, "c", "c")
    late = merge.cursor()  # opened now: it can only carry what comes next
    merge.push(late, "a", "a")  # the same content again, later: a new event

    assert delivered == ["a", "b", "c", "a"]
    assert late.caught_up_with(late) and first.caught_up_with(second) and not first.caught_up_with(late)


def test_events_older_than_the_window_are_forgotten() -> None:
    now = [0.0]
    delivered: list[str] = []
    merge: StreamMerger[str] = StreamMerger(delivered.append, window_s=10, clock=lambda: now[0])
    first, second = merge.cursor(), merge.cursor()
    merge.push(first, "a", "a")
    now[0] = 11.0
    merge.push(second, "a", "a")  # lagging more than the window: taken for a new event

    assert delivered == ["a", "a"]


async def test_an_answer_larger_than_the_cap_is_refused_as_invalid_data(sandbox: Sandbox) -> None:
    tokens = SystemTokens.create(
        Upstream.PMS, sandbox.token_url, DEMO_CLIENT_ID, SecretStr(DEMO_CLIENT_SECRET), timeout=httpx.Timeout(5)
    )
    http = UpstreamHttpClient(
        Upstream.PMS, sandbox.system_url("pms"), tokens, UpstreamMonitor(Upstream.PMS),
        AdapterMetrics(CollectorRegistry()), policy=ResiliencePolicy(max_response_bytes=1000),
    )  # fmt: skip

    with pytest.raises(UpstreamDataInvalid, match="longer than 1000 bytes"):
        await http.get_json("/api/pms/portfolios/portfolio_456/composition")  # about 60 kB
    with pytest.raises(UpstreamNotFound):  # a small answer is still read (here the guide's error body)
        await http.get_json("/api/pms/portfolios/portfolio_999/composition")

    await http.aclose()
    await tokens.aclose()
