"""The remote client's behaviour under each status code, against grpcio-testing's fake channel: the test
plays the server, answering each call the client makes (grpc_testing has no aio support, which is one
reason the client is synchronous). Retries by the service config are the real channel's job and are
tested on a real server in ``test_retries.py``."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import grpc_testing
import pytest
from grpc_status import rpc_status

from equihome.simulation.v1 import simulation_pb2, simulation_service_pb2
from server import errors
from server.remote.client import CallPolicy, RemoteError, SimulationClient

Simulation = simulation_pb2.Simulation
SERVICE = simulation_service_pb2.DESCRIPTOR.services_by_name["SimulationService"]
METHODS = SERVICE.methods_by_name
NAME = "simulations/7d2c1c8e-6a4b-4f7e-9d55-0c3f4a1b2e90"
OK = grpc.StatusCode.OK


class FakeServer:
    """A fake channel, the client on it, and the sleeps the client asked for (never really slept)."""

    def __init__(self, policy: CallPolicy | None = None):
        self.timeouts: list[tuple[str, float | None]] = []
        self.channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
        recorded = _TimeoutRecorder(self.channel, self.timeouts)
        self.sleeps: list[float] = []
        self.client = SimulationClient(
            recorded, token="secret-token", policy=policy or CallPolicy(), sleep=self.sleeps.append
        )
        self._pool = ThreadPoolExecutor(1)

    def start(self, call: Callable[[SimulationClient], Any]) -> Future[Any]:
        return self._pool.submit(call, self.client)

    def answer(self, method: str, response: Any = None, error: errors.ServiceError | None = None) -> Any:
        """Take the client's next call of ``method`` and end it with ``response`` or ``error``."""
        metadata, request, rpc = self.channel.take_unary_unary(METHODS[method])
        assert ("authorization", "Bearer secret-token") in metadata
        if error is None:
            rpc.terminate(response, (), OK, "")
        else:
            status = rpc_status.to_status(errors.to_status(error))
            rpc.terminate(None, status.trailing_metadata, status.code, status.details)
        return request

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _TimeoutRecorder:
    """The fake channel, noting each call's method and deadline (grpc.intercept_channel passes keyword
    arguments grpc_testing's callables do not take)."""

    def __init__(self, channel: Any, timeouts: list[tuple[str, float | None]]):
        self._channel, self._timeouts = channel, timeouts

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._recording(method, self._channel.unary_unary(method, *args, **kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._recording(method, self._channel.unary_stream(method, *args, **kwargs))

    def _recording(self, method: str, callable_: Any) -> Any:
        def call(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            self._timeouts.append((method, timeout))
            return callable_(request, timeout=timeout, metadata=metadata)

        return call


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def get_response(state: int = Simulation.STATE_SUCCEEDED) -> simulation_service_pb2.GetSimulationResponse:
    return simulation_service_pb2.GetSimulationResponse(simulation=Simulation(name=NAME, state=state))


def test_an_answer_is_returned_with_the_deadline_and_token_of_the_policy(fake: FakeServer) -> None:
    future = fake.start(lambda client: client.get(NAME))
    request = fake.answer("GetSimulation", get_response())
    assert future.result().name == NAME
    assert request.name == NAME and request.view == simulation_pb2.SIMULATION_VIEW_SUMMARY
    assert fake.timeouts == [(f"/{SERVICE.full_name}/GetSimulation", CallPolicy().timeout_s)]
    assert fake.sleeps == []


class Exhausted(errors.ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED  # and no RetryInfo: nothing says when a retry could work


class NotImplementedYet(errors.ServiceError):
    code = grpc.StatusCode.UNIMPLEMENTED


REFUSALS = [
    pytest.param(
        errors.InvalidArgument(
            "bad", [("simulation.config.fees.expense_rate", "too high")], reason="CONFIG_INVALID"
        ),
        "simulation.config.fees.expense_rate: too high",
        id="INVALID_ARGUMENT",
    ),
    pytest.param(
        errors.NotFound(
            f"Simulation {NAME} does not exist.", reason="SIMULATION_NOT_FOUND", metadata={"name": NAME}
        ),
        "SIMULATION_NOT_FOUND",
        id="NOT_FOUND",
    ),
    pytest.param(
        errors.Unauthenticated("no token", reason="TOKEN_MISSING"), "EQUIHOME_TOKEN", id="UNAUTHENTICATED"
    ),
    pytest.param(
        errors.PermissionDenied(
            "scope", reason="SCOPE_MISSING", metadata={"required_scope": "simulation:read"}
        ),
        "lacks the scope simulation:read",
        id="PERMISSION_DENIED",
    ),
    pytest.param(
        errors.FailedPrecondition("done", reason="RUN_STATE_CONFLICT"),
        "RUN_STATE_CONFLICT",
        id="FAILED_PRECONDITION",
    ),
    pytest.param(
        Exhausted("subscriber too slow", reason="SUBSCRIBER_TOO_SLOW"),
        "SUBSCRIBER_TOO_SLOW",
        id="RESOURCE_EXHAUSTED-without-RetryInfo",
    ),
    pytest.param(
        errors.Unavailable("shutting down", retry_after=600.0, reason="SHUTTING_DOWN"),
        "retrying in 600 s",
        id="UNAVAILABLE-delay-above-the-limit",
    ),
    pytest.param(NotImplementedYet("later", reason="NOT_IMPLEMENTED"), "NOT_IMPLEMENTED", id="UNIMPLEMENTED"),
    pytest.param(
        errors.DeadlineExceeded("too slow", reason="DEADLINE_TOO_SHORT"),
        "DEADLINE_TOO_SHORT",
        id="DEADLINE_EXCEEDED",
    ),
    pytest.param(
        errors.Cancelled("cancelled", reason="SIMULATION_CANCELLED"), "SIMULATION_CANCELLED", id="CANCELLED"
    ),
    pytest.param(
        errors.ServiceError("Internal error.", metadata={"correlation_id": "c-42"}),
        "correlation id c-42",
        id="INTERNAL",
    ),
]


@pytest.mark.parametrize(("error", "explained"), REFUSALS)
def test_a_refusal_without_a_usable_retry_info_is_raised_at_once_and_explained(
    fake: FakeServer, error: errors.ServiceError, explained: str
) -> None:
    future = fake.start(lambda client: client.get(NAME))
    fake.answer("GetSimulation", error=error)
    with pytest.raises(RemoteError) as raised:
        future.result()
    assert raised.value.code == error.code
    assert explained in raised.value.explain()
    assert fake.sleeps == []


def test_unavailable_without_retry_info_is_left_to_the_channel_and_says_where_it_looked(
    fake: FakeServer,
) -> None:
    future = fake.start(lambda client: client.get(NAME))
    _, _, rpc = fake.channel.take_unary_unary(METHODS["GetSimulation"])
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    with pytest.raises(RemoteError) as raised:
        future.result()
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert "Cannot reach the server at 127.0.0.1:50051" in raised.value.explain()
    assert fake.sleeps == []


@pytest.mark.parametrize(
    "error",
    [
        errors.ResourceExhausted("every worker busy", retry_after=2.5, reason="RUN_CAPACITY_EXHAUSTED"),
        errors.Unavailable("upstream down", retry_after=1.5, reason="UPSTREAM_UNAVAILABLE"),
    ],
    ids=["RESOURCE_EXHAUSTED", "UNAVAILABLE"],
)
def test_retry_info_is_honoured_with_the_servers_delay(fake: FakeServer, error: errors._Retryable) -> None:
    future = fake.start(lambda client: client.get(NAME))
    fake.answer("GetSimulation", error=error)
    fake.answer("GetSimulation", get_response())
    assert future.result().name == NAME
    assert fake.sleeps == [error.retry_after]


def test_retry_info_is_honoured_a_bounded_number_of_times() -> None:
    fake = FakeServer(CallPolicy(retry_info_attempts=2))
    try:
        future = fake.start(lambda client: client.get(NAME))
        for _ in range(3):
            fake.answer("GetSimulation", error=errors.ResourceExhausted("busy", retry_after=1.0))
        with pytest.raises(RemoteError) as raised:
            future.result()
        assert raised.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert fake.sleeps == [1.0, 1.0]
    finally:
        fake.close()


def test_a_retried_create_keeps_its_request_id_so_the_server_returns_the_first_job(fake: FakeServer) -> None:
    request = simulation_service_pb2.CreateSimulationRequest(simulation=Simulation(display_name="fund"))
    future = fake.start(lambda client: client.create(request))
    first = fake.answer("CreateSimulation", error=errors.ResourceExhausted("busy", retry_after=0.5))
    second = fake.answer(
        "CreateSimulation",
        simulation_service_pb2.CreateSimulationResponse(
            simulation=Simulation(name=NAME, state=Simulation.STATE_PENDING)
        ),
    )
    assert future.result().name == NAME
    assert first.request_id and first.request_id == second.request_id
    assert first.simulation.display_name == "fund"
    assert not request.request_id  # the caller's request is left as it was


def test_list_follows_page_tokens_up_to_the_limit(fake: FakeServer) -> None:
    future = fake.start(lambda client: [sim.name for sim in client.list(page_size=2, limit=3)])
    first = fake.answer(
        "ListSimulations",
        simulation_service_pb2.ListSimulationsResponse(
            simulations=[Simulation(name="simulations/a"), Simulation(name="simulations/b")],
            next_page_token="p2",
        ),
    )
    second = fake.answer(
        "ListSimulations",
        simulation_service_pb2.ListSimulationsResponse(
            simulations=[Simulation(name="simulations/c"), Simulation(name="simulations/d")],
            next_page_token="p3",
        ),
    )
    assert future.result() == ["simulations/a", "simulations/b", "simulations/c"]
    assert (first.page_token, second.page_token) == ("", "p2")
    assert all(timeout == CallPolicy().timeout_s for _, timeout in fake.timeouts)


def test_cancel_sends_the_name_with_a_deadline(fake: FakeServer) -> None:
    future = fake.start(lambda client: client.cancel(NAME))
    request = fake.answer(
        "CancelSimulation",
        simulation_service_pb2.CancelSimulationResponse(
            simulation=Simulation(name=NAME, state=Simulation.STATE_CANCELLED)
        ),
    )
    assert future.result().state == Simulation.STATE_CANCELLED
    assert request.name == NAME
    assert fake.timeouts == [(f"/{SERVICE.full_name}/CancelSimulation", CallPolicy().timeout_s)]


def snapshot(sequence: int, state: int, done: int = 0) -> simulation_service_pb2.WatchSimulationResponse:
    simulation = Simulation(name=NAME, state=state)
    simulation.progress.paths_completed = done
    return simulation_service_pb2.WatchSimulationResponse(simulation=simulation, sequence=sequence)


def watching(fake: FakeServer) -> tuple[Future[list[tuple[int, int]]], queue.Queue[tuple[int, int]]]:
    """Watch in the client's thread; each snapshot is also put on a queue, so the test can wait until the
    client has it (grpc_testing drops unread messages when a stream ends with an error)."""
    seen: queue.Queue[tuple[int, int]] = queue.Queue()

    def consume(client: SimulationClient) -> list[tuple[int, int]]:
        snapshots = []
        for simulation in client.watch(NAME):
            snapshots.append((simulation.state, simulation.progress.paths_completed))
            seen.put(snapshots[-1])
        return snapshots

    return fake.start(consume), seen


def test_watch_reconnects_after_a_broken_stream_and_drops_snapshots_it_has_seen(fake: FakeServer) -> None:
    future, seen = watching(fake)
    _, request, rpc = fake.channel.take_unary_stream(METHODS["WatchSimulation"])
    rpc.send_response(snapshot(2, Simulation.STATE_RUNNING, 0))
    rpc.send_response(snapshot(3, Simulation.STATE_RUNNING, 100))
    assert [seen.get(timeout=10), seen.get(timeout=10)] == [
        (Simulation.STATE_RUNNING, 0),
        (Simulation.STATE_RUNNING, 100),
    ]
    rpc.terminate((), grpc.StatusCode.UNAVAILABLE, "connection reset")
    _, again, rpc = fake.channel.take_unary_stream(METHODS["WatchSimulation"])
    rpc.send_response(snapshot(3, Simulation.STATE_RUNNING, 100))  # the current state, already seen
    rpc.send_response(snapshot(6, Simulation.STATE_SUCCEEDED, 300))
    rpc.terminate((), OK, "")
    assert future.result() == [
        (Simulation.STATE_RUNNING, 0),
        (Simulation.STATE_RUNNING, 100),
        (Simulation.STATE_SUCCEEDED, 300),
    ]
    assert request == again and request.name == NAME
    assert fake.sleeps == [1.0]  # backoff of the first reconnect
    assert [timeout for _, timeout in fake.timeouts] == [CallPolicy().watch_window_s] * 2


def test_watch_reopens_the_stream_when_its_window_ends_without_counting_a_failure(fake: FakeServer) -> None:
    future, seen = watching(fake)
    _, _, rpc = fake.channel.take_unary_stream(METHODS["WatchSimulation"])
    rpc.send_response(snapshot(2, Simulation.STATE_RUNNING))
    assert seen.get(timeout=10) == (Simulation.STATE_RUNNING, 0)
    rpc.terminate((), grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    _, _, rpc = fake.channel.take_unary_stream(METHODS["WatchSimulation"])
    rpc.send_response(snapshot(5, Simulation.STATE_FAILED))
    rpc.terminate((), OK, "")
    assert [state for state, _ in future.result()] == [Simulation.STATE_RUNNING, Simulation.STATE_FAILED]
    assert fake.sleeps == []


def test_watch_gives_up_after_the_allowed_reconnects(fake: FakeServer) -> None:
    fake.client.policy = CallPolicy(watch_reconnects=2)
    future = fake.start(lambda client: list(client.watch(NAME)))
    for _ in range(3):
        _, _, rpc = fake.channel.take_unary_stream(METHODS["WatchSimulation"])
        rpc.terminate((), grpc.StatusCode.UNAVAILABLE, "connection refused")
    with pytest.raises(RemoteError) as raised:
        future.result()
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert fake.sleeps == [1.0, 2.0]


def test_watch_raises_a_refusal_at_once(fake: FakeServer) -> None:
    future = fake.start(lambda client: list(client.watch(NAME)))
    _, _, rpc = fake.channel.take_unary_stream(METHODS["WatchSimulation"])
    status = rpc_status.to_status(errors.to_status(errors.NotFound("gone", reason="SIMULATION_NOT_FOUND")))
    rpc.terminate(status.trailing_metadata, status.code, status.details)
    with pytest.raises(RemoteError) as raised:
        future.result()
    assert raised.value.details.reason == "SIMULATION_NOT_FOUND"
    assert fake.sleeps == []
