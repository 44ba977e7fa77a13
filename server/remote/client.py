"""A synchronous client of SimulationService for scripts and the ``equihome-sim remote`` commands.

Three layers keep a call short and safe:

* every call has a deadline (``CallPolicy.timeout_s``; a watch is a series of streams of at most
  ``watch_window_s`` each, reopened until the run ends);
* the channel retries UNAVAILABLE by the published service config (``service_config.json`` beside this
  module; docs/api.md, Retries), with exponential backoff and retry throttling;
* a call that still fails with UNAVAILABLE or RESOURCE_EXHAUSTED *and* a ``google.rpc.RetryInfo`` is tried
  again after the delay the server asked for, a few times (``retry_info_attempts``), never for a delay
  above ``max_retry_delay_s``. Creates carry a ``request_id`` fixed before the first try, so a retry
  returns the job the first try created (AIP-155).

Any other failure raises ``RemoteError`` with the code, reason and details of the server's status.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from equihome.simulation.v1.simulation_service_pb2_grpc import SimulationServiceStub
from server.errors import ErrorDetails, unpack

Simulation = simulation_pb2.Simulation

SERVICE_CONFIG_PATH = Path(__file__).with_name("service_config.json")
DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENV = "EQUIHOME_SERVER"
TOKEN_ENV = "EQUIHOME_TOKEN"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # the server's limit (docs/api.md, Limits)
RETRY_INFO_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
TERMINAL_STATES = frozenset(
    {
        Simulation.STATE_SUCCEEDED,
        Simulation.STATE_FAILED,
        Simulation.STATE_CANCELLED,
        Simulation.STATE_INTERRUPTED,
    }
)


@dataclass(frozen=True)
class CallPolicy:
    timeout_s: float = 30.0  # deadline of each unary call
    watch_window_s: float = 300.0  # deadline of each WatchSimulation stream; the watch reopens it
    retry_info_attempts: int = 3  # tries after the first that a server's RetryInfo may ask for
    max_retry_delay_s: float = 60.0  # a RetryInfo asking for longer is not waited for
    watch_reconnects: int = 5  # consecutive broken watch streams tolerated before giving up


class RemoteError(Exception):
    """A call failed; ``details`` has the server's code, message, reason and rich details."""

    def __init__(self, details: ErrorDetails, target: str, timeout_s: float):
        self.details = details
        self.target = target
        self.timeout_s = timeout_s
        super().__init__(self.explain())

    @property
    def code(self) -> grpc.StatusCode:
        return self.details.code

    def explain(self) -> str:
        """What went wrong and, where there is one, what to do about it."""
        details = self.details
        reason = f" ({details.reason})" if details.reason else ""
        lines = [f"{details.code.name}{reason}: {details.message}"]
        if details.bad_request is not None:
            lines += [
                f"  {violation.field}: {violation.description}"
                for violation in details.bad_request.field_violations
            ]
        hint = self._hint()
        if hint:
            lines.append(hint)
        return "\n".join(lines)

    def _hint(self) -> str:
        details, code = self.details, self.details.code
        metadata = details.error_info.metadata if details.error_info is not None else {}
        if code is grpc.StatusCode.UNAVAILABLE and details.reason is None:
            return f"Cannot reach the server at {self.target}: is it running? Set --server or {SERVER_ENV}."
        if code is grpc.StatusCode.UNAUTHENTICATED:
            return (
                f"Pass a token with --token or {TOKEN_ENV}, e.g. "
                f"export {TOKEN_ENV}=$(.venv/bin/equihome-sim token --all-scopes)"
            )
        if code is grpc.StatusCode.PERMISSION_DENIED and "required_scope" in metadata:
            return f"The token lacks the scope {metadata['required_scope']}; make one that has it."
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and details.reason is None:
            return f"No answer within {self.timeout_s:g} s; raise --timeout if the server is busy."
        if "correlation_id" in metadata:
            return f"Quote correlation id {metadata['correlation_id']} when reporting this."
        if details.retry_after is not None:
            return f"The server suggests retrying in {details.retry_after:g} s."
        return ""


def service_config() -> str:
    """The published service config (JSON): retry policy and default deadlines per service."""
    return SERVICE_CONFIG_PATH.read_text()


def open_channel(target: str) -> grpc.Channel:
    """A plaintext channel to ``target`` that retries by the published service config."""
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.service_config", service_config()),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )


OnRetry = Callable[[ErrorDetails, float], None]


class SimulationClient:
    """Create, read, list, cancel and watch simulation jobs on one server."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        target: str = DEFAULT_SERVER,
        token: str | None = None,
        policy: CallPolicy = CallPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        on_retry: OnRetry | None = None,
    ):
        self.target = target
        self.policy = policy
        self._stub = SimulationServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._sleep = sleep
        self._on_retry = on_retry or (lambda details, delay: None)

    def create(self, request: service_pb2.CreateSimulationRequest) -> Simulation:
        """The created job (PENDING). A ``request_id`` is added when the request has none."""
        if not request.request_id:
            keyed = service_pb2.CreateSimulationRequest()
            keyed.CopyFrom(request)
            keyed.request_id = str(uuid.uuid4())
            request = keyed
        return self._call(self._stub.CreateSimulation, request).simulation

    def get(self, name: str, view: int = simulation_pb2.SIMULATION_VIEW_SUMMARY) -> Simulation:
        return self._call(
            self._stub.GetSimulation, service_pb2.GetSimulationRequest(name=name, view=view)
        ).simulation

    def list(
        self,
        *,
        states: tuple[int, ...] = (),
        portfolio_id: str = "",
        page_size: int = 50,
        limit: int | None = None,
    ) -> Iterator[Simulation]:
        """Jobs newest first, following ``next_page_token`` until ``limit`` jobs or the last page."""
        returned, page_token = 0, ""
        while True:
            request = service_pb2.ListSimulationsRequest(
                page_size=page_size, states=states, portfolio_id=portfolio_id, page_token=page_token
            )
            response = self._call(self._stub.ListSimulations, request)
            for simulation in response.simulations:
                if limit is not None and returned >= limit:
                    return
                returned += 1
                yield simulation
            if not response.next_page_token:
                return
            page_token = response.next_page_token

    def cancel(self, name: str) -> Simulation:
        return self._call(
            self._stub.CancelSimulation, service_pb2.CancelSimulationRequest(name=name)
        ).simulation

    def watch(
        self,
        name: str,
        *,
        view: int = simulation_pb2.SIMULATION_VIEW_SUMMARY,
        min_update_interval_s: float = 1.0,
        on_reconnect: OnRetry | None = None,
    ) -> Iterator[Simulation]:
        """Snapshots of the job until it is terminal (the last one, in ``view``).

        The stream is reopened when its window ends, when the server ends it without a terminal state
        (shutdown) and when it breaks with UNAVAILABLE; the first message of a new stream is the current
        state, and snapshots older than one already seen (``sequence``) are dropped.
        """
        request = service_pb2.WatchSimulationRequest(name=name, view=view)
        request.min_update_interval.FromNanoseconds(round(min_update_interval_s * 1e9))
        reconnect = on_reconnect or self._on_retry
        last_sequence, broken = 0, 0
        while True:
            call = self._stub.WatchSimulation(
                request, timeout=self.policy.watch_window_s, metadata=self._metadata
            )
            failure: ErrorDetails | None = None
            try:
                for message in call:
                    broken = 0
                    if message.sequence <= last_sequence:
                        continue
                    last_sequence = message.sequence
                    yield message.simulation
                    if message.simulation.state in TERMINAL_STATES:
                        return
            except grpc.RpcError as error:
                failure = unpack(error)
                if failure.code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # the window ended; the next stream starts with the current state
                if failure.code not in RETRY_INFO_CODES:
                    raise RemoteError(failure, self.target, self.policy.watch_window_s) from None
            finally:
                call.cancel()
            broken += 1
            failure = failure or ErrorDetails(
                grpc.StatusCode.UNAVAILABLE, "the server ended the stream early"
            )
            if broken > self.policy.watch_reconnects:
                raise RemoteError(failure, self.target, self.policy.watch_window_s)
            delay = failure.retry_after if failure.retry_after is not None else min(2.0 ** (broken - 1), 10.0)
            reconnect(failure, delay)
            self._sleep(delay)

    def _call(self, method: Any, request: Any) -> Any:
        retries = 0
        while True:
            try:
                return method(request, timeout=self.policy.timeout_s, metadata=self._metadata)
            except grpc.RpcError as error:
                details = unpack(error)
                delay = details.retry_after
                if (
                    details.code in RETRY_INFO_CODES
                    and delay is not None
                    and delay <= self.policy.max_retry_delay_s
                    and retries < self.policy.retry_info_attempts
                ):
                    retries += 1
                    self._on_retry(details, delay)
                    self._sleep(delay)
                    continue
                raise RemoteError(details, self.target, self.policy.timeout_s) from None
