"""Wiring the integrations from the settings: adapters, event bus, cache, read-throughs and health.

``IntegrationRuntime.start(settings, store, registry)`` builds everything for ``settings.integrations``:

* ``off``: no upstream; the event bus still serves this service's own events; the read-throughs answer
  UNAVAILABLE.
* ``sandbox``: the built-in sandbox is started in-process on a free loopback port with its demo
  credentials, and the adapters are pointed at it (docs/sandbox.md).
* ``external``: the configured URLs and credentials (secrets from the settings or their files).

For each system: a token provider, a REST client (retries, breaker), a WebSocket subscription feeding
the bus, and a monitor that GetIntegration and the health rule read. ``aclose`` stops it all, storing
the events still queued first.

Health rule (docs/integration.md): with integrations on, IntegrationService and EventService are
NOT_SERVING while every upstream system is down (last contact failed and no WebSocket connected), and
SERVING otherwise; with integrations off, IntegrationService is NOT_SERVING and EventService SERVING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import CollectorRegistry

from adapters.frames import Frame
from adapters.http import ResiliencePolicy, UpstreamHttpClient
from adapters.metrics import AdapterMetrics
from adapters.monitor import UpstreamMonitor
from adapters.oauth import ClientCredentials, TokenProvider, read_secret_file
from adapters.pms.client import PmsClient
from adapters.systems import Upstream
from adapters.traffic_light.client import TrafficLightClient
from adapters.underwriting.client import UnderwritingClient
from adapters.websocket import EventSubscription, SocketPolicy
from equihome.events.v1 import event_pb2, event_service_pb2
from equihome.integration.v1 import integration_pb2, integration_service_pb2
from server.integration.bus import EventBus
from server.integration.cache import ReadCache
from server.integration.links import UpstreamLink, disabled_status, integration_status
from server.integration.metrics import BusMetrics
from server.integration.reads import IntegrationReads, ReadThrough
from server.observability import correlation_id_var
from server.settings import Settings
from server.store import Store

log = logging.getLogger(__name__)

INTEGRATION_SERVICE = integration_service_pb2.DESCRIPTOR.services_by_name["IntegrationService"].full_name
EVENT_SERVICE = event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name
PRUNE_INTERVAL_S = 60.0

SetServing = Callable[[str, bool], Awaitable[None]]


@dataclass(frozen=True)
class UpstreamEndpoint:
    base_url: str
    ws_url: str
    credentials: ClientCredentials


@dataclass(frozen=True)
class UpstreamClients:
    traffic_light: TrafficLightClient
    pms: PmsClient
    underwriting: UnderwritingClient


def configured_endpoints(settings: Settings) -> dict[Upstream, UpstreamEndpoint]:
    """The endpoints of ``integrations = external``; secrets from the settings or their files."""
    endpoints = {}
    for system in Upstream:
        prefix = system.name.lower()
        secret = getattr(settings, f"{prefix}_client_secret")
        secret_file = getattr(settings, f"{prefix}_client_secret_file")
        credentials = ClientCredentials(
            token_url=getattr(settings, f"{prefix}_token_url"),
            client_id=getattr(settings, f"{prefix}_client_id"),
            client_secret=secret if secret is not None else read_secret_file(secret_file),
            scopes=system.scopes,
        )
        endpoints[system] = UpstreamEndpoint(
            getattr(settings, f"{prefix}_base_url"), getattr(settings, f"{prefix}_ws_url"), credentials
        )
    return endpoints


class IntegrationRuntime:
    def __init__(self, settings: Settings, bus: EventBus, cache: ReadCache):
        self.settings = settings
        self.mode = settings.integrations
        self.bus = bus
        self.cache = cache
        self.links: dict[Upstream, UpstreamLink] = {}
        self.clients: UpstreamClients | None = None
        self.reads: IntegrationReads | None = None
        self.sandbox: object | None = None  # adapters.sandbox.Sandbox in sandbox mode
        self.adapter_metrics: AdapterMetrics | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._exit = contextlib.AsyncExitStack()
        self._health_changed = asyncio.Event()

    @classmethod
    async def start(cls, settings: Settings, store: Store, registry: CollectorRegistry) -> IntegrationRuntime:
        bus = EventBus(
            store,
            BusMetrics(registry),
            subscriber_buffer=settings.event_subscriber_buffer,
            retention=timedelta(hours=settings.event_retention_hours),
        )
        runtime = cls(settings, bus, ReadCache(store))
        try:
            await bus.start()
            runtime._exit.push_async_callback(bus.close)
            runtime._tasks.append(asyncio.create_task(runtime._prune_forever(), name="event log pruning"))
            if settings.integrations != "off":
                await runtime._connect(registry)
        except BaseException:
            await runtime.aclose()
            raise
        log.info("integrations started", extra={"mode": runtime.mode, "head_cursor": bus.head})
        return runtime

    async def _connect(self, registry: CollectorRegistry) -> None:
        if self.settings.integrations == "sandbox":
            endpoints = await self._start_sandbox()
        else:
            endpoints = configured_endpoints(self.settings)
        metrics = self.adapter_metrics = AdapterMetrics(registry)
        policy = ResiliencePolicy(
            timeout_s=self.settings.integration_timeout_s,
            get_attempts=self.settings.integration_get_attempts,
            breaker_threshold=self.settings.integration_breaker_threshold,
            breaker_reset_s=self.settings.integration_breaker_reset_s,
        )
        socket_policy = SocketPolicy(
            connections=self.settings.integration_ws_connections,
            ping_interval_s=self.settings.integration_ws_ping_interval_s,
            ping_timeout_s=self.settings.integration_ws_ping_timeout_s,
            idle_timeout_s=self.settings.integration_ws_idle_timeout_s,
        )
        for system, endpoint in endpoints.items():
            tokens = TokenProvider(
                system,
                endpoint.credentials,
                timeout=policy.timeout,
                on_fetch=lambda system, ok: metrics.token_fetches.labels(
                    system=system.value, outcome="ok" if ok else "failed"
                ).inc(),
            )
            self._exit.push_async_callback(tokens.aclose)
            monitor = UpstreamMonitor(system)
            monitor.on_change(lambda _: self._health_changed.set())
            http = UpstreamHttpClient(
                system,
                endpoint.base_url,
                tokens,
                monitor,
                metrics,
                policy=policy,
                correlation_id=correlation_id_var.get,
            )
            self._exit.push_async_callback(http.aclose)
            self.links[system] = UpstreamLink(system, tokens, monitor, http)
            subscription = EventSubscription(
                system,
                endpoint.ws_url,
                tokens,
                monitor,
                metrics,
                self._publish_upstream,
                policy=socket_policy,
            )
            self._tasks.append(asyncio.create_task(subscription.run(), name=f"{system.value} events"))
        self.clients = UpstreamClients(
            TrafficLightClient(self.links[Upstream.TRAFFIC_LIGHT].http),
            PmsClient(self.links[Upstream.PMS].http),
            UnderwritingClient(self.links[Upstream.UNDERWRITING].http),
        )
        self.reads = IntegrationReads(
            ReadThrough(self.cache), self.clients.traffic_light, self.clients.pms, self.clients.underwriting
        )

    async def _start_sandbox(self) -> dict[Upstream, UpstreamEndpoint]:
        # Imported here: only this mode runs the sandbox; the adapters never import it.
        from adapters.sandbox import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SandboxConfig, running_sandbox
        from pydantic import SecretStr

        config = SandboxConfig(events_per_second=self.settings.integration_sandbox_events_per_second)
        sandbox = await self._exit.enter_async_context(running_sandbox(config))
        self.sandbox = sandbox
        log.info("sandbox started", extra={"sandbox_url": sandbox.base_url})
        return {
            system: UpstreamEndpoint(
                sandbox.system_url(system.value),
                sandbox.ws_url(system.value),
                ClientCredentials(
                    sandbox.token_url, DEMO_CLIENT_ID, SecretStr(DEMO_CLIENT_SECRET), system.scopes
                ),
            )
            for system in Upstream
        }

    def _publish_upstream(self, event: event_pb2.Event, frame: Frame) -> None:
        origin = frame.timestamp.timestamp() if frame.timestamp is not None else None
        self.bus.publish(event, origin_time=origin)

    async def _prune_forever(self) -> None:
        while True:
            await self.bus.prune()
            await asyncio.sleep(PRUNE_INTERVAL_S)

    # Reports.

    async def integration(self, system: Upstream) -> integration_pb2.Integration:
        link = self.links.get(system)
        return disabled_status(system) if link is None else await integration_status(link, self.cache)

    def serving(self) -> dict[str, bool]:
        """The health rule (module doc): service name -> SERVING?"""
        if self.mode == "off":
            return {INTEGRATION_SERVICE: False, EVENT_SERVICE: True}
        up = not all(link.monitor.down for link in self.links.values())
        return {INTEGRATION_SERVICE: up, EVENT_SERVICE: up}

    def follow_health(self, set_serving: SetServing) -> None:
        """Keep the gRPC health of the two services in line with the rule from now on."""
        self._tasks.append(asyncio.create_task(self._follow_health(set_serving), name="integration health"))

    async def _follow_health(self, set_serving: SetServing) -> None:
        reported: dict[str, bool] = {}
        while True:
            self._health_changed.clear()
            for service, serving in self.serving().items():
                if reported.get(service) != serving:
                    await set_serving(service, serving)
                    reported[service] = serving
                    log.info("service health changed", extra={"service": service, "serving": serving})
            await self._health_changed.wait()

    async def aclose(self) -> None:
        """Stop the subscriptions and tasks, store queued events, close clients and the sandbox."""
        for task in self._tasks:
            task.cancel()
        outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.error("integration task had failed", exc_info=outcome)
        await self._exit.aclose()
