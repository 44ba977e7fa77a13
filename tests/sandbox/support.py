"""Helpers for talking to a running sandbox the way the engine's adapters will: httpx and websockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

from adapters.sandbox import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, System

RECEIVE_TIMEOUT = 5.0


async def fetch_token(
    http: httpx.AsyncClient,
    sandbox: Sandbox,
    scope: str | None = None,
    client_id: str = DEMO_CLIENT_ID,
    client_secret: str = DEMO_CLIENT_SECRET,
) -> str:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
    if scope is not None:
        form["scope"] = scope
    response = await http.post(sandbox.token_url, data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_guide_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``response`` is an error in the guide's format; returns its ``error`` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "correlation_id"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert {"service", "endpoint", "status_code"} <= set(error["details"])
    assert error["details"]["status_code"] == status
    assert error["details"]["endpoint"] == response.request.url.path
    assert error["correlation_id"] == response.headers["X-Correlation-ID"]
    return error


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        return json.loads(await ws.recv())


def channel_of(system: str) -> str:
    """The guide-style channel carrying every event of ``system``."""
    (channel,) = System(system).channels(per_event=False)
    return channel


def subscribers(sandbox: Sandbox, system: str, channel: str) -> int:
    return sum(channel in sub.channels for sub in sandbox.state.broadcasters[System(system)].subscriptions)


async def subscribe(ws: ClientConnection, sandbox: Sandbox, system: str, channel: str | None = None) -> None:
    """Send the guide's subscribe message (default: the system's channel) and wait until the sandbox has
    applied it, so events published afterwards are delivered. The guide sends no acknowledgement, so
    this looks at the sandbox's own state."""
    channel = channel or channel_of(system)
    before = subscribers(sandbox, system, channel)
    await ws.send(json.dumps({"event": "subscribe", "data": {"channel": channel}}))
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while subscribers(sandbox, system, channel) <= before:
            await asyncio.sleep(0.002)
