"""The registry binds every service of the contract, with the scopes of docs/api.md, and each reports
serving."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.services import EVENTS, IMPACT, INTEGRATION, OPTIMIZATION, SCOPES, SIMULATION, STUDY
from tests.service.conftest import Service

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
SERVICES = [SIMULATION, IMPACT, OPTIMIZATION, STUDY, EVENTS, INTEGRATION]


def test_every_rpc_has_the_scope_the_docs_give_it() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| ([a-z]+:[a-z]+) \|", DOCS.read_text(), re.MULTILINE))
    for service in SERVICES:
        assert set(SCOPES[service.full_name]) == set(service.methods_by_name), service.full_name
        for method, scope in SCOPES[service.full_name].items():
            assert rows[method] == scope, method


async def test_every_service_reports_serving(service: Service) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = [
            (await health.Check(health_pb2.HealthCheckRequest(service=s.full_name))).status
            for s in SERVICES
        ]
    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * len(SERVICES)

