"""Correlation ids, structured call logs and Prometheus metrics, observed through real calls."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import wrappers_pb2

from server.app import AppServer
from server.observability import CallContextFilter, JsonFormatter
from server.settings import Settings
from tests.server.conftest import Metadata, start_app
from tests.server.echo_service import SERVICE, EchoClient

ECHO = f"/{SERVICE}/Echo"


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, object]]]]:
    """Capture JSON log lines the way production writes them (JsonFormatter + CallContextFilter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(previous_level)


async def test_caller_correlation_id_is_echoed_and_logged(
    client: EchoClient, auth_for: Callable[..., Metadata], log_lines: Callable[[], list[dict[str, object]]]
) -> None:
    metadata = (*auth_for("simulation:read"), ("x-correlation-id", "req-42"))
    call = client.echo(wrappers_pb2.StringValue(value="hi"), metadata=metadata)

    assert (await call).value == "hi"
    assert dict(await call.initial_metadata())["x-correlation-id"] == "req-42"
    lines = [line for line in log_lines() if line["correlation_id"] == "req-42"]
    assert [line["message"] for line in lines] == ["echo handled", "call finished"]
    assert all(line["method"] == ECHO for line in lines)
    finished = lines[-1]
    assert finished["code"] == "OK" and isinstance(finished["duration_ms"], float)
    assert {"time", "level", "logger"} <= finished.keys()


async def test_correlation_id_is_generated_per_call_and_malformed_ones_replaced(
    client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    async def correlation_id(extra: Metadata = ()) -> str:
        call = client.echo(
            wrappers_pb2.StringValue(value="hi"), metadata=(*auth_for("simulation:read"), *extra)
        )
        await call
        return str(dict(await call.initial_metadata())["x-correlation-id"])

    first, second = await asyncio.gather(correlation_id(), correlation_id())
    injected = await correlation_id((("x-correlation-id", 'x" "level":"ERROR"'),))
    oversized = await correlation_id((("x-correlation-id", "z" * 200),))

    assert len({first, second, injected, oversized}) == 4
    assert all(len(value) == 32 for value in (first, second, injected, oversized))


async def test_metrics_count_calls_codes_and_refusals(
    app: AppServer, client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    metadata = auth_for("simulation:read")
    for _ in range(3):
        await client.echo(wrappers_pb2.StringValue(value="hi"), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError):
        await client.fail(wrappers_pb2.StringValue(value="not_found"), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError):
        await client.echo(wrappers_pb2.StringValue(value="hi"))  # no token
    stream = client.count(wrappers_pb2.Int32Value(value=2), metadata=metadata)
    assert len([item async for item in stream]) == 2

    sample = app.metrics.sample
    assert sample("equihome_grpc_server_started_total", {"method": ECHO}) == 3
    assert sample("equihome_grpc_server_handled_total", {"method": ECHO, "code": "OK"}) == 3
    assert (
        sample("equihome_grpc_server_handled_total", {"method": f"/{SERVICE}/Fail", "code": "NOT_FOUND"}) == 1
    )
    assert sample("equihome_grpc_server_handled_total", {"method": f"/{SERVICE}/Count", "code": "OK"}) == 1
    assert sample("equihome_grpc_server_handling_seconds_count", {"method": ECHO}) == 3
    assert sample("equihome_grpc_server_in_flight", {"method": ECHO}) == 0
    assert sample("equihome_grpc_server_auth_denied_total", {"method": ECHO, "reason": "TOKEN_MISSING"}) == 1


async def test_metrics_are_exported_over_http(settings: Settings, auth_for: Callable[..., Metadata]) -> None:
    app = await start_app(settings.model_copy(update={"metrics_enabled": True, "metrics_port": 0}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            await EchoClient(channel).echo(
                wrappers_pb2.StringValue(value="hi"), metadata=auth_for("simulation:read")
            )
        assert app.metrics_server is not None
        url = f"http://127.0.0.1:{app.metrics_server.port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    finally:
        await app.shutdown(grace=0)

    assert f'equihome_grpc_server_handled_total{{code="OK",method="{ECHO}"}} 1.0' in body
    assert "equihome_runs_in_flight 0.0" in body
    assert "python_gc_objects_collected_total" not in body  # a dedicated registry, not the global one
