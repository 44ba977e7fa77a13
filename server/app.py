"""Assembling the gRPC server: interceptors, health, reflection, binding, and an orderly shutdown.

``build_server`` wires generic infrastructure around the services it is given; ``serve`` runs it until
SIGTERM or SIGINT. Shutdown follows the conventions doc: health goes NOT_SERVING, ``shutting_down`` is
set so streams can end with OK and a final cursor, ``server.stop(grace)`` lets unary calls finish,
background tasks are cancelled, and close hooks (job runner, adapters, store) run last, newest first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.auth import TokenVerifier, verifier_from_settings
from server.call_limits import Budgets, CallLimits
from server.interceptors import (
    AuthInterceptor,
    CallLimitInterceptor,
    CorrelationInterceptor,
    ErrorInterceptor,
    MessageInterceptor,
    MetricsInterceptor,
)
from server.observability import Metrics, MetricsServer, configure_logging, start_metrics_server
from server.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
CloseHook = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ServiceBinding:
    """One service to serve: how to register it, and the scope each of its methods requires.

    ``add_to_server`` is the generated ``add_<Name>Servicer_to_server(servicer, server)``; ``scopes``
    maps short method names (``"CreateSimulation"``) to scopes. Methods left out are refused.
    """

    name: str  # full service name, e.g. "equihome.simulation.v1.SimulationService"
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: object
    scopes: Mapping[str, str]

    def method_scopes(self) -> dict[str, str]:
        """The scope map keyed by full method name, as the auth interceptor wants it."""
        return {f"/{self.name}/{method}": scope for method, scope in self.scopes.items()}


class Lifecycle:
    """Shared by the server and the services: the shutdown signal, background tasks and close hooks.

    Create it first and hand it to the servicers, so streaming handlers can watch ``shutting_down``
    (or wrap their source in ``until_shutdown``) and services can register what must be closed.
    """

    def __init__(self) -> None:
        self.shutting_down = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._close_hooks: list[tuple[str, CloseHook]] = []

    def add_background_task(
        self, coroutine: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run ``coroutine`` until it ends or shutdown cancels it; a crash is logged when it happens."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s crashed", task.get_name(), exc_info=task.exception())

    def add_close_hook(self, hook: CloseHook, *, name: str | None = None) -> None:
        """Await ``hook()`` at shutdown, after the server stopped; hooks run newest first."""
        self._close_hooks.append((name or getattr(hook, "__qualname__", repr(hook)), hook))

    async def until_shutdown(self, source: AsyncIterable[T]) -> AsyncIterator[T]:
        """Items of ``source`` until it ends or shutdown begins, whichever is first.

        A streaming handler that yields from this ends normally (status OK) when the server starts
        shutting down, so the client can resume from the last cursor it got. Once shutdown has begun
        no further item is delivered, even one already available. ``source`` is closed at the end.
        """
        iterator = aiter(source)
        stop = asyncio.ensure_future(self.shutting_down.wait())
        following: asyncio.Future[T] | None = None
        try:
            while not self.shutting_down.is_set():
                following = asyncio.ensure_future(anext(iterator))
                await asyncio.wait({following, stop}, return_when=asyncio.FIRST_COMPLETED)
                if self.shutting_down.is_set() and not following.done():
                    return
                try:
                    item = following.result()  # a failure of the source surfaces here, even during shutdown
                except StopAsyncIteration:
                    return
                following = None
                if self.shutting_down.is_set():
                    return
                yield item
        finally:
            stop.cancel()
            if following is not None and not following.done():
                following.cancel()
                await asyncio.wait({following})
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    async def close(self) -> None:
        """Cancel the background tasks, then run the close hooks; errors are logged and re-raised together."""
        problems: list[Exception] = []
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                problems.append(outcome)  # already logged by _task_done
        for name, hook in reversed(self._close_hooks):
            try:
                await hook()
            except Exception as error:
                log.error("close hook %s failed", name, exc_info=error)
                problems.append(error)
        self._close_hooks.clear()
        if problems:
            raise ExceptionGroup("errors while closing the service", problems)


class BindError(RuntimeError):
    """The server could not listen on the configured address (usually: the port is taken)."""


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments per the conventions doc: no SO_REUSEPORT, explicit sizes, tolerant keepalive."""
    options = [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", settings.min_ping_interval_ms),
        ("grpc.keepalive_permit_without_calls", int(settings.keepalive_permit_without_calls)),
    ]
    if settings.max_connection_age_ms is not None:
        options.append(("grpc.max_connection_age_ms", settings.max_connection_age_ms))
    return options


class AppServer:
    """A built (bound, not yet started) server with its health service, metrics and lifecycle."""

    def __init__(
        self,
        settings: Settings,
        server: grpc.aio.Server,
        port: int,
        health_servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
        metrics: Metrics,
        lifecycle: Lifecycle,
    ):
        self.settings = settings
        self.server = server
        self.port = port
        self.health = health_servicer
        self.service_names = tuple(service_names)
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.metrics_server: MetricsServer | None = None
        self._shutdown: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the metrics exporter, then serve and mark every service (and the server, "") SERVING.

        Raises ``BindError`` when the metrics port is taken, before any call is served.
        """
        if self.settings.metrics_enabled:
            host, port = self.settings.metrics_host, self.settings.metrics_port
            try:
                self.metrics_server = start_metrics_server(self.metrics, host, port)
            except OSError as error:
                raise BindError(
                    f"cannot serve metrics on {host}:{port}: {error.strerror or error} (is the port already in "
                    "use? change --metrics-port or pass --no-metrics-enabled)"
                ) from None
        await self.server.start()
        for name in (*self.service_names, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={
                "address": f"{self.settings.host}:{self.port}",
                "services": list(self.service_names),
                "metrics_port": self.metrics_server.port if self.metrics_server else None,
            },
        )

    async def set_serving(self, service: str, serving: bool) -> None:
        """Report a service (e.g. one whose upstream is down) as SERVING or NOT_SERVING."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(service, status)

    async def wait(self) -> None:
        """Return once the server has stopped."""
        await self.server.wait_for_termination()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop in order (see the module doc); safe to call more than once and concurrently."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(
                self._stop(self.settings.grace_period_s if grace is None else grace)
            )
        await asyncio.shield(self._shutdown)

    async def _stop(self, grace: float) -> None:
        log.info("shutting down", extra={"grace_s": grace})
        await self.health.enter_graceful_shutdown()
        self.lifecycle.shutting_down.set()
        await self.server.stop(grace)
        try:
            await self.lifecycle.close()
        finally:
            if self.metrics_server is not None:
                self.metrics_server.close()
            log.info("stopped")


def build_server(
    settings: Settings,
    services: Sequence[ServiceBinding],
    *,
    lifecycle: Lifecycle | None = None,
    metrics: Metrics | None = None,
    verifier: TokenVerifier | None = None,
) -> AppServer:
    """Create and bind the server for ``services``; call from inside the event loop, then ``start()``.

    ``verifier`` overrides the one built from the settings (which may create the dev key); it is
    ignored when auth is disabled.
    """
    lifecycle = lifecycle or Lifecycle()
    metrics = metrics or Metrics()
    names = [binding.name for binding in services]
    if len(set(names)) != len(names):
        raise ValueError(f"a service is bound twice: {names}")
    scopes = {method: scope for binding in services for method, scope in binding.method_scopes().items()}

    if settings.insecure_disable_auth:
        log.warning(
            "AUTHENTICATION IS DISABLED (--insecure-disable-auth): every caller gets every scope. "
            "Never run like this outside a developer machine."
        )
        verifier = None
    elif verifier is None:
        verifier = verifier_from_settings(settings)
        log.info("authenticating callers", extra={"auth_mode": settings.auth_mode})
    if verifier is not None:
        lifecycle.add_close_hook(verifier.aclose, name="token verifier")

    limits = CallLimits(Budgets.from_settings(settings), on_refused=metrics.count_limited)
    server = grpc.aio.server(
        interceptors=[
            CorrelationInterceptor(),
            AuthInterceptor(verifier, scopes, metrics=metrics),
            CallLimitInterceptor(limits),
            MetricsInterceptor(metrics),
            ErrorInterceptor(),
            MessageInterceptor(settings.max_message_bytes),
        ],
        options=server_options(settings),
    )
    for binding in services:
        binding.add_to_server(binding.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.port}"
    credentials = tls_credentials(settings) if settings.tls else None
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as error:
        raise BindError(f"cannot listen on {address}: is the port already in use?") from error
    if not settings.tls and not is_loopback(settings.host):
        log.warning(
            "PLAINTEXT ON A NETWORK INTERFACE: %s is reachable beyond this machine without TLS, so tokens, "
            "configs and results cross the network readable by anyone on the path. Set tls_cert_file and "
            "tls_key_file (and tls_client_ca_file for mTLS), or bind 127.0.0.1.",
            address,
        )
    return AppServer(settings, server, port, health_servicer, names, metrics, lifecycle)


def tls_credentials(settings: Settings) -> grpc.ServerCredentials:
    """Server credentials from the PEM files of the settings; with a client CA, client certificates are
    required and must chain to it (mTLS). The files are checked first (``BindError`` says what is wrong):
    gRPC itself only reports that it could not listen."""
    cert_file, key_file, ca_file = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    assert cert_file is not None and key_file is not None
    try:
        chain, key = cert_file.read_bytes(), key_file.read_bytes()
        client_ca = ca_file.read_bytes() if ca_file else None
    except OSError as error:
        raise BindError(f"cannot read TLS file {error.filename}: {error.strerror}") from None
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(cert_file, key_file, password=b"")  # an encrypted key fails, never prompts
        if ca_file is not None:
            check.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as error:
        raise BindError(
            f"the TLS files are not a PEM certificate chain, its unencrypted private key and (for mTLS) a CA "
            f"bundle: {error.reason or error}"
        ) from None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to bind) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it resolves beyond loopback


async def serve(
    settings: Settings,
    services: Sequence[ServiceBinding],
    *,
    lifecycle: Lifecycle | None = None,
    metrics: Metrics | None = None,
    on_started: Callable[[AppServer], None] | None = None,
) -> None:
    """Run the server until SIGTERM or SIGINT, then shut down gracefully. A second signal kills at once."""
    configure_logging(settings.log_level)
    log.info("starting", extra={"settings": settings.redacted()})
    app = build_server(settings, services, lifecycle=lifecycle, metrics=metrics)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for number in signals:
        loop.add_signal_handler(number, stop.set)
    try:
        await app.start()
        if on_started is not None:
            on_started(app)
        await stop.wait()
        log.info("shutdown signal received")
    finally:
        for number in signals:
            loop.remove_signal_handler(number)  # a second Ctrl-C now interrupts the shutdown itself
        await app.shutdown()
