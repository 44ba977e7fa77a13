"""Callers of SimulationService are authenticated by bearer token and authorised by scope."""

from __future__ import annotations

import json
import time

import grpc

from joserfc import jwk

from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.auth import ensure_dev_key, sign_token
from server.settings import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from tests.service.conftest import Service, bearer, refusal

LIST = service_pb2.ListSimulationsRequest()


async def test_a_call_without_a_token_is_unauthenticated(service: Service) -> None:
    details = await refusal(service.stub.ListSimulations(LIST))

    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")


async def test_a_token_with_a_forged_signature_is_unauthenticated(service: Service) -> None:
    token = service.auth("simulation:read")[0][1].removeprefix("Bearer ")
    header, claims, signature = token.split(".")
    forged = ".".join([header, claims, signature[::-1]])

    details = await refusal(service.stub.ListSimulations(LIST, metadata=bearer(forged)))

    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_an_expired_token_is_unauthenticated(service: Service) -> None:
    key = jwk.import_key(json.loads(ensure_dev_key(service.data_dir).read_text()))
    expired = sign_token(
        key, scopes=["simulation:read"], issuer=DEFAULT_ISSUER, audience=DEFAULT_AUDIENCE, ttl=60,
        now=int(time.time()) - 3600,
    )  # fmt: skip

    details = await refusal(service.stub.ListSimulations(LIST, metadata=bearer(expired)))

    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_a_token_without_the_scope_is_permission_denied(service: Service) -> None:
    reader = service.auth("simulation:read")
    request = service_pb2.RunSimulationRequest()

    details = await refusal(service.stub.RunSimulation(request, metadata=reader, timeout=10))
    listed = await service.stub.ListSimulations(LIST, metadata=reader)

    assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
    assert details.error_info is not None
    assert dict(details.error_info.metadata) == {"required_scope": "simulation:write"}
    assert list(listed.simulations) == []  # the same token may read
