"""Wiring the integrations from the settings: adapters, event bus, mirror, outbox, read-throughs, health.

``IntegrationRuntime.start(settings, store, registry)`` builds everything for ``settings.integrations``:

* ``off``: no upstream; the event bus still serves this service's own events, the mirror holds what it
  held, pushes wait in the outbox; the read-throughs answer UNAVAILABLE.
* ``sandbox``: the built-in sandbox is started in-process on a free loopback port with its demo
  credentials, and the adapters are pointed at it (docs/sandbox.md). Its portfolio and regions are
  mirrored from the start.
* ``external``: the configured URLs and credentials (secrets from the settings or their files).

For each system: read- and write-scope token providers, a REST client (retries, breaker), a WebSocket
event source, and a monitor that GetIntegration and the health rule read. The runtime is the sources'
``EventReceiver``: each live event goes to the bus (stored, fanned out) and to the mirror; a coverage
gap asks the mirror sync for a reconciliation. The outbox delivers pushes through the REST push sink.
``aclose`` stops it all, storing the events still queued first.

Health rule (docs/integration.md): with integrations on, IntegrationService and EventService are
NOT_SERVING while every upstream system is down (last contact failed and no WebSocket connected), and
SERVING otherwise; with integrations off, IntegrationService is NOT_SERVING and EventService SERVING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import SecretStr
from prometheus_client import CollectorRegistry

from adapters.http import ResiliencePolicy, UpstreamHttpClient
from adapters.metrics import AdapterMetrics
from adapters.monitor import UpstreamMonitor
from adapters.oauth import SystemTokens, read_secret_file
from adapters.pms.client import PmsClient
from adapters.pushes import RestPushSink
from adapters.systems import Upstream
from adapters.traffic_light.client import TrafficLightClient
from adapters.underwriting.client import UnderwritingClient
from adapters.websocket import EventSubscription, SocketPolicy
from equihome.events.v1 import event_pb2, event_service_pb2
from equihome.integration.v1 import integration_pb2, integration_service_pb2
from server.integration.bus import EventBus
from server.integration.cache import ReadCache
from server.integration.links import UpstreamLink, disabled_status, integration_status
from server.integration.metrics import BusMetrics, OutboxMetrics, SyncMetrics
from server.integration.mirror import PORTFOLIO, Mirror, now_us
from server.integration.outbox import DeliveryPolicy, Outbox, OutboxDelivery, PushState
from server.integration.reads import IntegrationReads, ReadThrough
from server.integration.sync import MirrorFeed, MirrorSync, SyncPolicy
from server.observability import correlation_id_var
from server.settings import Settings, id_list
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
    token_url: str
    client_id: str
    client_secret: SecretStr


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
        endpoints[system] = UpstreamEndpoint(
            getattr(settings, f"{prefix}_base_url"),
            getattr(settings, f"{prefix}_ws_url"),
            getattr(settings, f"{prefix}_token_url"),
            getattr(settings, f"{prefix}_client_id"),
            secret if secret is not None else read_secret_file(secret_file),
        )
    return endpoints


class IntegrationRuntime:
    def __init__(self, settings: Settings, store: Store, registry: CollectorRegistry):
        self.settings = settings
        self.mode = settings.integrations
        self.bus = EventBus(
            store,
            BusMetrics(registry),
            subscriber_buffer=settings.event_subscriber_buffer,
            retention=timedelta(hours=settings.event_retention_hours),
        )
        self.cache = ReadCache(store)
        self.mirror = Mirror(store)
        self._outbox_metrics = OutboxMetrics(registry)
        self.outbox = Outbox(store, self._outbox_metrics)
        self.portfolios: tuple[str, ...] = ()  # mirrored from the start (the sandbox's included)
        self._registry = registry
        self.links: dict[Upstream, UpstreamLink] = {}
        self.clients: UpstreamClients | None = None
        self.reads: IntegrationReads | None = None
        self.sync: MirrorSync | None = None
        self._feed = MirrorFeed(self.mirror)
        self.sandbox: Any = None  # adapters.sandbox.Sandbox in sandbox mode
        self.adapter_metrics: AdapterMetrics | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._exit = contextlib.AsyncExitStack()
        self._health_changed = asyncio.Event()

    @classmethod
    async def start(cls, settings: Settings, store: Store, registry: CollectorRegistry) -> IntegrationRuntime:
        runtime = cls(settings, store, registry)
        try:
            await runtime.bus.start()
            runtime._exit.push_async_callback(runtime.bus.close)
            runtime._spawn(runtime._prune_forever(), "event log and outbox pruning")
            runtime._spawn(runtime._feed.run(), "mirror feed")
            if settings.integrations != "off":
                await runtime._connect()
        except BaseException:
            await runtime.aclose()
            raise
        log.info("integrations started", extra={"mode": runtime.mode, "head_cursor": runtime.bus.head})
        return runtime

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    async def _connect(self) -> None:
        settings = self.settings
        portfolios, regions = id_list(settings.integration_mirror_portfolios), id_list(settings.integration_mirror_regions)
        if settings.integrations == "sandbox":
            endpoints = await self._start_sandbox()
            portfolios += (self.sandbox.config.portfolio_id,)
            regions += tuple(self.sandbox.world.regions)
        else:
            endpoints = configured_endpoints(settings)
        self.portfolios = portfolios
        metrics = self.adapter_metrics = AdapterMetrics(self._registry)
        policy = ResiliencePolicy(
            timeout_s=settings.integration_timeout_s,
            get_attempts=settings.integration_get_attempts,
            breaker_threshold=settings.integration_breaker_threshold,
            breaker_reset_s=settings.integration_breaker_reset_s,
        )

        def count_fetch(system: Upstream, ok: bool) -> None:
            metrics.token_fetches.labels(system=system.value, outcome="ok" if ok else "failed").inc()

        sources = []
        for system, endpoint in endpoints.items():
            tokens = SystemTokens.create(
                system,
                endpoint.token_url,
                endpoint.client_id,
                endpoint.client_secret,
                timeout=policy.timeout,
                on_fetch=count_fetch,
            )
            self._exit.push_async_callback(tokens.aclose)
            monitor = UpstreamMonitor(system)
            monitor.on_change(lambda _: self._health_changed.set())
            http = UpstreamHttpClient(
                system, endpoint.base_url, tokens, monitor, metrics, policy=policy, correlation_id=correlation_id_var.get
            )
            self._exit.push_async_callback(http.aclose)
            self.links[system] = UpstreamLink(system, tokens, monitor, http)
            channels = id_list(getattr(settings, f"{system.name.lower()}_ws_channels"))
            sources.append(
                EventSubscription(
                    system, endpoint.ws_url, tokens.read, monitor, metrics, policy=self._socket_policy(channels)
                )
            )
        self.clients = UpstreamClients(
            TrafficLightClient(self.links[Upstream.TRAFFIC_LIGHT].http),
            PmsClient(self.links[Upstream.PMS].http),
            UnderwritingClient(self.links[Upstream.UNDERWRITING].http),
        )
        self.reads = IntegrationReads(
            ReadThrough(self.cache), self.clients.traffic_light, self.clients.pms, self.clients.underwriting
        )
        sync = MirrorSync(
            self.mirror,
            self._feed,
            self.clients.traffic_light,
            self.clients.pms,
            self.bus.publish,
            SyncMetrics(self._registry),
            SyncPolicy(
                poll_interval_s=settings.integration_poll_interval_s,
                reconcile_interval_s=settings.integration_reconcile_interval_s,
                grace_s=settings.integration_reconcile_grace_s,
                portfolios=portfolios,
                regions=regions,
            ),
        )
        delivery = OutboxDelivery(
            self.outbox,
            RestPushSink({system: link.http for system, link in self.links.items()}),
            self._outbox_metrics,
            DeliveryPolicy(
                max_age_s=settings.integration_push_max_age_s, max_backoff_s=settings.integration_push_max_backoff_s
            ),
        )
        if settings.integration_sync:
            self.sync = sync
            self._spawn(sync.run(), "mirror sync")
        self._spawn(delivery.run(), "push delivery")
        for source in sources:
            self._spawn(source.run(self), f"{source.system.value} events")

    def _socket_policy(self, channels: tuple[str, ...]) -> SocketPolicy:
        return SocketPolicy(
            connections=self.settings.integration_ws_connections,
            channels=channels,
            ping_interval_s=self.settings.integration_ws_ping_interval_s,
            ping_timeout_s=self.settings.integration_ws_ping_timeout_s,
            idle_timeout_s=self.settings.integration_ws_idle_timeout_s,
        )

    async def _start_sandbox(self) -> dict[Upstream, UpstreamEndpoint]:
        # Imported here: only this mode runs the sandbox; the adapters never import it.
        from adapters.sandbox import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SandboxConfig, running_sandbox

        extensions = dict.fromkeys(id_list(self.settings.integration_sandbox_extensions), True)
        config = SandboxConfig(
            events_per_second=self.settings.integration_sandbox_events_per_second, extensions=extensions
        )
        sandbox = await self._exit.enter_async_context(running_sandbox(config))
        self.sandbox = sandbox
        log.info("sandbox started", extra={"sandbox_url": sandbox.base_url})
        return {
            system: UpstreamEndpoint(
                sandbox.system_url(system.value),
                sandbox.ws_url(system.value),
                sandbox.token_url,
                DEMO_CLIENT_ID,
                SecretStr(DEMO_CLIENT_SECRET),
            )
            for system in Upstream
        }

    # The event sources' receiver.

    def event(self, event: event_pb2.Event, origin_time: float | None) -> None:
        self.bus.publish(event, origin_time=origin_time)
        self._feed.put(event, now_us())

    def coverage_gap(self, system: Upstream, since: float) -> None:
        if self.sync is not None:
            self.sync.coverage_gap(system, since)

    async def _prune_forever(self) -> None:
        while True:
            await self.bus.prune()
            await self.outbox.prune()
            await asyncio.sleep(PRUNE_INTERVAL_S)

    # Reports.

    async def integration(self, system: Upstream) -> integration_pb2.Integration:
        link = self.links.get(system)
        report = disabled_status(system) if link is None else await integration_status(link, self.cache)
        await self._add_mirror_and_pushes(system, report)
        return report

    async def _add_mirror_and_pushes(self, system: Upstream, report: integration_pb2.Integration) -> None:
        sources = [source for source in await self.mirror.sources() if _source_system(source.kind) is system]
        if sources and all(source.synced_us is not None for source in sources):
            synced_us = min(source.synced_us for source in sources if source.synced_us is not None)
            report.mirror_sync_time.FromMicroseconds(synced_us)
            report.mirror_age.FromMicroseconds(max(0, now_us() - synced_us))
        else:
            report.mirror_age.FromMicroseconds(0)
        last = await self.mirror.reconciliations(system.value, limit=1)
        if last:
            report.last_reconciliation.CopyFrom(last[0])
        counts = await self.outbox.counts(system)
        report.pending_pushes = counts[PushState.PENDING]
        report.dead_letter_pushes = counts[PushState.DEAD_LETTER]

    def serving(self) -> dict[str, bool]:
        """The health rule (module doc): service name -> SERVING?"""
        if self.mode == "off":
            return {INTEGRATION_SERVICE: False, EVENT_SERVICE: True}
        up = not all(link.monitor.down for link in self.links.values())
        return {INTEGRATION_SERVICE: up, EVENT_SERVICE: up}

    def follow_health(self, set_serving: SetServing) -> None:
        """Keep the gRPC health of the two services in line with the rule from now on."""
        self._spawn(self._follow_health(set_serving), "integration health")

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
        """Stop the sources and tasks, store queued events, close clients and the sandbox."""
        for task in self._tasks:
            task.cancel()
        outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.error("integration task had failed", exc_info=outcome)
        await self._exit.aclose()


def _source_system(kind: str) -> Upstream:
    return Upstream.PMS if kind == PORTFOLIO else Upstream.TRAFFIC_LIGHT
