"""Fixtures: a real aio server on 127.0.0.1:0 running the test echo service, and a real channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from server.app import AppServer, Lifecycle, build_server
from server.auth import issue_dev_token
from server.settings import Settings
from tests.server.echo_service import EchoClient, echo_binding

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(port=0, metrics_enabled=False, data_dir=tmp_path / "data", grace_period_s=2.0)


async def start_app(settings: Settings) -> AppServer:
    lifecycle = Lifecycle()
    app = build_server(settings, [echo_binding(lifecycle)], lifecycle=lifecycle)
    await app.start()
    return app


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[AppServer]:
    app = await start_app(settings)
    yield app
    await app.shutdown(grace=0)


@pytest.fixture
async def channel(app: AppServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield channel


@pytest.fixture
def client(channel: grpc.aio.Channel) -> EchoClient:
    return EchoClient(channel)


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def auth_for(settings: Settings) -> Callable[..., Metadata]:
    """``auth_for("simulation:read")``: call metadata with a dev token holding those scopes."""

    def make(*scopes: str) -> Metadata:
        return bearer(issue_dev_token(settings.data_dir, scopes))

    return make
