"""The registry binds every service of the contract, with the scopes of docs/api.md; the ones not built
yet answer UNIMPLEMENTED through the error model."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.api import field_behavior_pb2
from google.protobuf import symbol_database
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.errors import ErrorDetails
from server.services import EVENTS, IMPACT, INTEGRATION, OPTIMIZATION, SCOPES, SIMULATION
from tests.service.conftest import Metadata, Service, refusal

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
NOT_BUILT = [OPTIMIZATION]


def test_every_rpc_has_the_scope_the_docs_give_it() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| ([a-z]+:[a-z]+) \|", DOCS.read_text(), re.MULTILINE))
    for service in [SIMULATION, IMPACT, EVENTS, INTEGRATION, *NOT_BUILT]:
        assert set(SCOPES[service.full_name]) == set(service.methods_by_name), service.full_name
        for method, scope in SCOPES[service.full_name].items():
            assert rows[method] == scope, method


async def test_every_service_reports_serving(service: Service) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = [
            (await health.Check(health_pb2.HealthCheckRequest(service=s.full_name))).status
            for s in [SIMULATION, IMPACT, EVENTS, INTEGRATION, *NOT_BUILT]
        ]
    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 5


def with_required_fields(message: Message) -> Message:
    """``message`` with every REQUIRED field set to some value, so a call gets past the request checks."""
    for field in message.DESCRIPTOR.fields:
        if field_behavior_pb2.REQUIRED not in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]:
            continue
        value = getattr(message, field.name)
        if field.message_type is not None:
            with_required_fields(value.add() if field.is_repeated else value)
            if not field.is_repeated:
                value.SetInParent()
        elif field.is_repeated:
            value.append(1 if field.enum_type is not None else "x")
        elif field.enum_type is not None:
            setattr(message, field.name, 1)
        elif field.type == field.TYPE_STRING:
            setattr(message, field.name, "x")
    return message


async def call_once(channel: grpc.aio.Channel, method: MethodDescriptor, metadata: Metadata) -> ErrorDetails:
    """Call ``method`` with a request holding only its REQUIRED fields, expecting it to fail."""
    request = with_required_fields(symbol_database.Default().GetSymbol(method.input_type.full_name)())
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:
        stream = channel.unary_stream(path, request_serializer=type(request).SerializeToString)
        return await refusal(stream(request, metadata=metadata, timeout=10).read())
    unary = channel.unary_unary(path, request_serializer=type(request).SerializeToString)
    return await refusal(unary(request, metadata=metadata, timeout=10))


@pytest.mark.parametrize("not_built", NOT_BUILT, ids=lambda s: s.name)
async def test_services_not_built_yet_answer_unimplemented(
    service: Service, not_built: ServiceDescriptor
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.app.port}") as channel:
        for method in not_built.methods:
            scope = SCOPES[not_built.full_name][method.name]
            details = await call_once(channel, method, service.auth(scope))
            unauthorised = await call_once(channel, method, service.auth("simulation:read"))

            assert (details.code, details.reason) == (grpc.StatusCode.UNIMPLEMENTED, "NOT_IMPLEMENTED")
            assert details.error_info is not None
            assert details.error_info.metadata["method"] == f"{not_built.full_name}/{method.name}"
            assert method.name in details.message
            assert unauthorised.code == grpc.StatusCode.PERMISSION_DENIED
            assert unauthorised.reason == "SCOPE_MISSING"
