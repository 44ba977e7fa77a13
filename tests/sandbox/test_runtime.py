"""Running the sandbox: the event clock, split ports, shutdown, and slow consumers."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from adapters.sandbox import Sandbox, SandboxConfig, System, running_sandbox
from adapters.sandbox.broadcast import CLOSE_POLICY_VIOLATION, Broadcaster, CloseRequest
from tests.sandbox.support import bearer, fetch_token, receive_json, subscribe


async def test_the_clock_publishes_events_without_being_asked(http: httpx.AsyncClient) -> None:
    async with running_sandbox(SandboxConfig(events_per_second=200)) as sandbox:
        token = await fetch_token(http, sandbox, scope="traffic-light:read")
        async with connect(f"{sandbox.ws_url('traffic-light')}?token={token}") as ws:
            await subscribe(ws, sandbox, "traffic-light")
            frames = [await receive_json(ws) for _ in range(10)]

    assert {frame["event"] for frame in frames} <= {"zone_classification_updated", "market_risk_updated"}


async def test_the_clock_rate_is_read_and_set_over_http(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    url = f"{sandbox.base_url}/sandbox/clock"

    before = (await http.get(url)).json()
    after = (await http.post(url, json={"events_per_second": 50, "systems": ["pms"]})).json()

    assert before["events_per_second"] == {"traffic-light": 0, "pms": 0, "underwriting": 0}
    assert after["events_per_second"] == {"traffic-light": 0, "pms": 50, "underwriting": 0}


async def test_split_ports_serve_each_system_on_its_own_port(http: httpx.AsyncClient) -> None:
    async with running_sandbox(SandboxConfig(events_per_second=0, split_ports=True)) as sandbox:
        token = await fetch_token(http, sandbox)
        pms_url = sandbox.system_url("pms")
        composition = await http.get(
            f"{pms_url}/api/pms/portfolios/portfolio_456/composition", headers=bearer(token)
        )
        zones_on_pms_port = await http.get(
            f"{pms_url}/api/traffic-light/zones?properties=property_1", headers=bearer(token)
        )
        urls = {sandbox.base_url, *(sandbox.system_url(system) for system in System)}

    assert len(urls) == 4
    assert composition.status_code == 200
    assert zones_on_pms_port.status_code == 404


async def test_stopping_the_sandbox_closes_sockets_with_going_away(http: httpx.AsyncClient) -> None:
    async with running_sandbox(SandboxConfig(events_per_second=0)) as sandbox:
        token = await fetch_token(http, sandbox)
        ws = await connect(f"{sandbox.ws_url('pms')}?token={token}")
        await subscribe(ws, sandbox, "pms")

    with pytest.raises(ConnectionClosed) as closed:
        await receive_json(ws)
    assert closed.value.rcvd.code == 1001


async def test_a_slow_subscriber_is_detached_without_holding_up_the_others() -> None:
    broadcaster = Broadcaster(System.PMS, System.PMS.channels(per_event=False), queue_size=3, frame_ids=False)
    slow, fast = broadcaster.attach(), broadcaster.attach()
    slow.channels.add("portfolio_updates")
    fast.channels.add("portfolio_updates")

    delivered = []
    for _ in range(5):
        broadcaster.publish("metrics_updated", {"portfolio_id": "portfolio_456", "metrics": {}})
        delivered.append(await fast.next_item())

    assert [frame.id for frame in delivered] == [1, 2, 3, 4, 5]
    assert slow.closing == CloseRequest(CLOSE_POLICY_VIOLATION, "slow consumer: send queue full")
    assert await slow.next_item() == slow.closing
    assert list(broadcaster.subscriptions) == [fast]


async def test_a_socket_is_closed_when_its_token_expires(http: httpx.AsyncClient) -> None:
    async with running_sandbox(SandboxConfig(events_per_second=0, token_lifetime_seconds=2)) as sandbox:
        token = await fetch_token(http, sandbox, scope="pms:read")
        async with connect(f"{sandbox.ws_url('pms')}?token={token}") as ws:
            await subscribe(ws, sandbox, "pms")
            with pytest.raises(ConnectionClosed) as closed:
                await receive_json(ws)

    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "access token expired"
