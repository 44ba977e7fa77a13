"""The published service config and the deadlines on a real channel to a real (small, sync) gRPC server
whose SimulationService fails as told: UNAVAILABLE is retried by the channel only because of the config,
a RetryInfo is honoured with the server's delay, and a slow answer ends at the call's deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from equihome.simulation.v1 import simulation_service_pb2_grpc as service_grpc
from server import errors
from server.remote.client import CallPolicy, RemoteError, SimulationClient, open_channel, service_config

NAME = "simulations/3f0d5c55-3f55-4d6b-9a55-8c1f5d1e2a77"


class FlakyService(service_grpc.SimulationServiceServicer):
    """GetSimulation fails with each of ``failures`` in turn, then answers (after ``delay_s``)."""

    def __init__(self) -> None:
        self.failures: list[errors.ServiceError | grpc.StatusCode] = []
        self.delay_s = 0.0
        self.calls = 0
        self.lock = threading.Lock()

    def GetSimulation(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            self.calls += 1
            failure = self.failures.pop(0) if self.failures else None
        if isinstance(failure, grpc.StatusCode):
            context.abort(failure, "plain failure")
        if failure is not None:
            context.abort_with_status(rpc_status.to_status(errors.to_status(failure)))
        time.sleep(self.delay_s)
        return service_pb2.GetSimulationResponse(simulation=simulation_pb2.Simulation(name=request.name))


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyService, str]]:
    service = FlakyService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_grpc.add_SimulationServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield service, f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_the_service_config_makes_the_channel_retry_unavailable(flaky: tuple[FlakyService, str]) -> None:
    service, address = flaky
    service.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    with open_channel(address) as channel:
        assert SimulationClient(channel, target=address).get(NAME).name == NAME
    assert service.calls == 3


def test_without_the_service_config_the_first_unavailable_is_final(flaky: tuple[FlakyService, str]) -> None:
    service, address = flaky
    service.failures = [grpc.StatusCode.UNAVAILABLE]
    with grpc.insecure_channel(address, options=[("grpc.enable_retries", 0)]) as channel:
        with pytest.raises(RemoteError) as raised:
            SimulationClient(channel, target=address).get(NAME)
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert service.calls == 1


def test_the_channel_gives_up_after_the_configured_attempts(flaky: tuple[FlakyService, str]) -> None:
    service, address = flaky
    service.failures = [grpc.StatusCode.UNAVAILABLE] * 10
    with open_channel(address) as channel, pytest.raises(RemoteError):
        SimulationClient(channel, target=address).get(NAME)
    assert '"maxAttempts": 5' in service_config()
    assert service.calls == 5


def test_retry_info_is_honoured_on_a_real_channel(flaky: tuple[FlakyService, str]) -> None:
    service, address = flaky
    service.failures = [
        errors.ResourceExhausted("queue full", retry_after=0.05, reason="RUN_CAPACITY_EXHAUSTED")
    ]
    waited: list[float] = []
    with open_channel(address) as channel:
        client = SimulationClient(channel, target=address, sleep=lambda s: (waited.append(s), time.sleep(s)))
        assert client.get(NAME).name == NAME
    assert waited == [0.05]
    assert service.calls == 2


def test_a_slow_answer_ends_at_the_calls_deadline(flaky: tuple[FlakyService, str]) -> None:
    service, address = flaky
    service.delay_s = 2.0
    with open_channel(address) as channel:
        client = SimulationClient(channel, target=address, policy=CallPolicy(timeout_s=0.2))
        with pytest.raises(RemoteError) as raised:
            client.get(NAME)
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "raise --timeout" in raised.value.explain()
    assert service.calls == 1  # DEADLINE_EXCEEDED is never retried
