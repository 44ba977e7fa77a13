"""Keeping the mirror in step with the upstream systems (the guide's "Data Synchronization").

* **Initial load**: at start, every tracked source is read over REST (nothing found then is drift).
* **Incremental updates**: every live WebSocket event is applied to the mirror (``MirrorFeed``).
* **Change polling**: every ``poll_interval_s`` the cheap reads are compared with the mirror: each tracked
  PMS portfolio (composition and metrics) and the TLS market risk of the tracked regions.
* **Reconciliation**: every ``reconcile_interval_s``, and at once after every WebSocket of a system was
  down (``coverage_gap``), a full pass that adds the TLS zones of the tracked properties.

A pass reads, compares, then waits ``grace_s`` before it repairs: a live event for a change the read
already saw is usually on its way, and an item a live event touched since the read began is left to the
event (the next pass checks it). What is still different is drift: repaired, recorded in the pass's
``Reconciliation``, and published as a typed event with origin RECONCILIATION (counted in
``equihome_upstream_ws_events_missed_total``). The Underwriting System has no read to reconcile with: its
events missed while no socket listened are lost (docs/integration.md).

Tracked: the configured portfolios and regions, portfolios seen in events, regions with a market risk or a
loan in the mirror, properties with a zone in the mirror or linked to a loan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from adapters.errors import UpstreamError
from adapters.json_reader import PayloadError
from adapters.pms.client import PmsClient
from adapters.systems import Upstream
from adapters.traffic_light.client import TrafficLightClient
from equihome.events.v1 import event_pb2
from equihome.integration.v1 import integration_pb2
from server.integration.bus import take_batch
from server.integration.metrics import SyncMetrics
from server.integration.mirror import (
    LOAN,
    MARKET_RISK,
    MARKET_RISK_SOURCE,
    METRICS,
    PORTFOLIO,
    ZONE,
    ZONES_SOURCE,
    Change,
    Mirror,
    Source,
    now_us,
)

log = logging.getLogger(__name__)

Reconciliation = integration_pb2.Reconciliation
Trigger = Reconciliation.Trigger
Drift = integration_pb2.Drift
REASON = "found by reconciliation"
MAX_DRIFT_LISTED = 100
MAX_TRACKED_PROPERTIES = 50_000
FEED_BATCH = 1000


@dataclass(frozen=True)
class SyncPolicy:
    poll_interval_s: float = 60.0
    reconcile_interval_s: float = 3600.0
    grace_s: float = 2.0
    batch_size: int = 100  # ids per zones / market-risk read
    portfolios: tuple[str, ...] = ()  # tracked from the start
    regions: tuple[str, ...] = ()


class MirrorFeed:
    """Live events into the mirror, in order, batched, off the event loop's hot path."""

    def __init__(self, mirror: Mirror):
        self._mirror = mirror
        self._queue: asyncio.Queue[tuple[event_pb2.Event, int]] = asyncio.Queue()

    def put(self, event: event_pb2.Event, received_us: int) -> None:
        self._queue.put_nowait((event, received_us))

    async def flush(self) -> None:
        """Until every event put so far is in the mirror."""
        await self._queue.join()

    async def run(self) -> None:
        while True:
            batch = await take_batch(self._queue, FEED_BATCH)
            try:
                await self._mirror.apply_events(batch)
            except Exception:
                log.exception("live events could not be applied to the mirror; reconciliation will repair it")
            finally:
                for _ in batch:
                    self._queue.task_done()


class _Wanted:
    """The pass a system is asked for next: a full one beats a poll."""

    def __init__(self) -> None:
        self.trigger: Trigger.ValueType | None = None
        self.wake = asyncio.Event()

    def ask(self, trigger: Trigger.ValueType) -> None:
        if self.trigger is None or self.trigger == Reconciliation.TRIGGER_POLL:
            self.trigger = trigger
        self.wake.set()

    def take(self) -> Trigger.ValueType | None:
        trigger, self.trigger = self.trigger, None
        self.wake.clear()
        return trigger


@dataclass
class _Part:
    """One source read in a pass: its changes, or why it could not be read."""

    source: tuple[str, str]
    changes: list[Change]
    checked: int
    error: str = ""


class MirrorSync:
    SYSTEMS = (Upstream.TRAFFIC_LIGHT, Upstream.PMS)

    def __init__(
        self,
        mirror: Mirror,
        feed: MirrorFeed,
        traffic_light: TrafficLightClient,
        pms: PmsClient,
        publish: Callable[[event_pb2.Event], None],
        metrics: SyncMetrics,
        policy: SyncPolicy,
    ):
        self._mirror = mirror
        self._feed = feed
        self._traffic_light = traffic_light
        self._pms = pms
        self._publish = publish
        self._metrics = metrics
        self.policy = policy
        self._wanted = {system: _Wanted() for system in self.SYSTEMS}
        self._locks = {system: asyncio.Lock() for system in self.SYSTEMS}
        self.passes = 0  # passes finished since start (for tests and status)

    def coverage_gap(self, system: Upstream, since: float) -> None:
        if system in self._wanted:
            log.info(
                "every websocket was down; reconciling",
                extra={"upstream": system.value, "blind_s": round(time.time() - since, 3)},
            )
            self._wanted[system].ask(Reconciliation.TRIGGER_COVERAGE_GAP)

    def request(self, system: Upstream, trigger: Trigger.ValueType = Reconciliation.TRIGGER_SCHEDULE) -> None:
        """Ask for a pass of ``system`` soon (operations, tests)."""
        self._wanted[system].ask(trigger)

    async def run(self) -> None:
        for portfolio_id in self.policy.portfolios:
            await self._mirror.track(PORTFOLIO, portfolio_id)
        async with asyncio.TaskGroup() as group:
            for system in self.SYSTEMS:
                group.create_task(self._schedule(system), name=f"{system.value} mirror sync")

    async def _schedule(self, system: Upstream) -> None:
        wanted = self._wanted[system]
        wanted.ask(Reconciliation.TRIGGER_INITIAL_LOAD)
        loop = asyncio.get_running_loop()
        next_poll = next_full = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wanted.wake.wait(), max(0.0, min(next_poll, next_full) - loop.time()))
            trigger = wanted.take()
            if trigger is None:
                full_due = loop.time() >= next_full
                trigger = Reconciliation.TRIGGER_SCHEDULE if full_due else Reconciliation.TRIGGER_POLL
            try:
                await self.reconcile(system, trigger)
            except Exception:  # a bug or a store failure: keep the schedule going, the next pass may work
                log.exception("mirror pass failed", extra={"upstream": system.value})
            next_poll = loop.time() + self.policy.poll_interval_s
            if trigger != Reconciliation.TRIGGER_POLL:
                next_full = loop.time() + self.policy.reconcile_interval_s

    async def load_portfolio(self, portfolio_id: str) -> Reconciliation:
        """Read a portfolio the mirror does not hold yet, and the market risk of its regions, now; raises
        the ``UpstreamError`` if the PMS does not know it or cannot be reached."""
        await self._pms.composition(portfolio_id)  # fail here, with the PMS's error, rather than in the pass
        await self._mirror.track(PORTFOLIO, portfolio_id)
        run = await self.reconcile(Upstream.PMS, Reconciliation.TRIGGER_ON_DEMAND, portfolios=[portfolio_id])
        await self.reconcile(Upstream.TRAFFIC_LIGHT, Reconciliation.TRIGGER_ON_DEMAND, full=False)
        return run

    # One pass.

    async def reconcile(
        self,
        system: Upstream,
        trigger: Trigger.ValueType,
        *,
        portfolios: Sequence[str] | None = None,
        full: bool | None = None,
    ) -> Reconciliation:
        """Compare ``system``'s sources with its REST reads, repair the mirror, publish the drift; never
        raises for upstream trouble (the pass is then incomplete)."""
        full = trigger != Reconciliation.TRIGGER_POLL if full is None else full
        async with self._locks[system]:
            run = Reconciliation(trigger=trigger, start_time=_timestamp(now_us()))
            started_us = run.start_time.ToMicroseconds()
            if system is Upstream.TRAFFIC_LIGHT:
                parts = await self._traffic_light_parts(full)
            else:
                parts = await self._pms_parts(portfolios)
            if any(change.drift for part in parts for change in part.changes):
                await asyncio.sleep(self.policy.grace_s)  # give live events for these changes time to land
            await self._feed.flush()
            good = [part for part in parts if not part.error]
            written = await self._mirror.settle(
                [change for part in good for change in part.changes], started_us, [part.source for part in good]
            )
            for part in parts:
                if part.error:
                    await self._mirror.attempted(*part.source, started_us)
            self._report(system, run, parts, written)
        await self._mirror.record_reconciliation(system.value, run)
        self.passes += 1
        return run

    def _report(self, system: Upstream, run: Reconciliation, parts: list[_Part], written: list[Change]) -> None:
        run.end_time.CopyFrom(_timestamp(now_us()))
        errors = [part.error for part in parts if part.error]
        run.complete = not errors
        run.error_message = "; ".join(errors)[:1000]
        run.items_checked = sum(part.checked for part in parts)
        drifted = [change for change in written if change.drift]
        run.drift_count = len(drifted)
        for change in drifted:
            item_id = f"{change.scope}/{change.id}" if change.kind == LOAN else change.id
            if len(run.drift) < MAX_DRIFT_LISTED:
                run.drift.add(kind=change.kind, item_id=item_id, change=_drift_change(change))
            self._metrics.drift.labels(system=system.value, kind=change.kind).inc()
            event = change_event(change, system)
            if event is not None:
                self._publish(event)
                self._metrics.events_missed.labels(system=system.value).inc()
        outcome = "complete" if run.complete else "partial"
        trigger = Trigger.Name(run.trigger).removeprefix("TRIGGER_").lower()
        self._metrics.reconciliations.labels(system=system.value, trigger=trigger, outcome=outcome).inc()
        if drifted or errors:
            log.info(
                "mirror reconciled",
                extra={"upstream": system.value, "trigger": trigger, "drift": len(drifted), "errors": errors},
            )

    async def _traffic_light_parts(self, full: bool) -> list[_Part]:
        sources = await self._sources()
        regions = _queryable(set(self.policy.regions) | await self._mirror.tracked_regions())
        parts = [
            await self._part(
                (MARKET_RISK_SOURCE, ""),
                sources,
                [(MARKET_RISK, "", lambda: self._market_risk(regions), False)],
            )
        ]
        if full:
            properties = _queryable(await self._mirror.tracked_properties())[:MAX_TRACKED_PROPERTIES]
            parts.append(
                await self._part((ZONES_SOURCE, ""), sources, [(ZONE, "", lambda: self._zones(properties), False)])
            )
        return parts

    async def _pms_parts(self, only: Sequence[str] | None) -> list[_Part]:
        sources = await self._sources()
        portfolios = only if only is not None else sorted(scope for kind, scope in sources if kind == PORTFOLIO)
        parts = []
        for portfolio_id in portfolios:
            reads = [
                (LOAN, portfolio_id, lambda pid=portfolio_id: self._loans(pid), True),
                (METRICS, portfolio_id, lambda pid=portfolio_id: self._metrics_of(pid), False),
            ]
            parts.append(await self._part((PORTFOLIO, portfolio_id), sources, reads))
        return parts

    async def _part(
        self,
        source: tuple[str, str],
        sources: dict[tuple[str, str], Source],
        reads: Iterable[tuple[str, str, Callable[[], Awaitable[dict[str, Message | None]]], bool]],
    ) -> _Part:
        known = sources.get(source)
        synced = known is not None and known.synced_us is not None
        part = _Part(source, [], 0)
        try:
            for kind, scope, read, complete in reads:
                fetched = await read()
                part.checked += len(fetched)
                part.changes += await self._mirror.compare(kind, scope, fetched, complete=complete, synced=synced)
        except UpstreamError as error:
            part.error, part.changes = error.message, []
        except PayloadError as error:  # an id the system's query lists cannot carry
            part.error, part.changes = f"{source[0]}: {error}", []
        return part

    async def _sources(self) -> dict[tuple[str, str], Source]:
        return {(source.kind, source.scope): source for source in await self._mirror.sources()}

    # Reads.

    async def _market_risk(self, regions: Sequence[str]) -> dict[str, Message | None]:
        async def read(chunk: Sequence[str]) -> tuple[list[Message], list[str]]:
            batch = await self._traffic_light.market_risk(chunk)
            return list(batch.market_risks), batch.missing_region_ids

        return await self._in_batches(regions, read, "region_id")

    async def _zones(self, properties: Sequence[str]) -> dict[str, Message | None]:
        async def read(chunk: Sequence[str]) -> tuple[list[Message], list[str]]:
            batch = await self._traffic_light.zones(chunk)
            return list(batch.classifications), batch.missing_property_ids

        return await self._in_batches(properties, read, "property_id")

    async def _in_batches(
        self,
        ids: Sequence[str],
        read: Callable[[Sequence[str]], Awaitable[tuple[list[Message], list[str]]]],
        id_field: str,
    ) -> dict[str, Message | None]:
        """A TLS batch read over ``ids``, ``batch_size`` at a time: id -> item, or None if unknown."""
        fetched: dict[str, Message | None] = {}
        for start in range(0, len(ids), self.policy.batch_size):
            found, missing = await read(ids[start : start + self.policy.batch_size])
            fetched |= {getattr(item, id_field): item for item in found}
            fetched |= dict.fromkeys(missing)
        return fetched

    async def _loans(self, portfolio_id: str) -> dict[str, Message | None]:
        composition = await self._pms.composition(portfolio_id)
        return {loan.id: loan for loan in composition.loans}

    async def _metrics_of(self, portfolio_id: str) -> dict[str, Message | None]:
        return {portfolio_id: (await self._pms.performance(portfolio_id)).metrics}


def change_event(change: Change, system: Upstream) -> event_pb2.Event | None:
    """The event a live socket would have sent for ``change`` (origin RECONCILIATION), if there is one."""
    event = event_pb2.Event(source=system.proto, origin=event_pb2.EVENT_ORIGIN_RECONCILIATION)
    event.time.GetCurrentTime()
    old, new = change.old, change.new
    if change.kind == ZONE and old is not None and new is not None:
        event.zone_classification_updated.CopyFrom(
            event_pb2.ZoneClassificationUpdated(
                property_id=change.id, old_zone=old.zone, new_zone=new.zone, reason=REASON  # type: ignore[attr-defined]
            )
        )
    elif change.kind == MARKET_RISK and old is not None and new is not None:
        event.market_risk_updated.CopyFrom(
            event_pb2.MarketRiskUpdated(
                region_id=change.id,
                old_risk_level=old.risk_level,  # type: ignore[attr-defined]
                new_risk_level=new.risk_level,  # type: ignore[attr-defined]
                risk_score=new.risk_score if new.HasField("risk_score") else None,  # type: ignore[attr-defined]
                appreciation_forecast=(
                    new.appreciation_forecast  # type: ignore[attr-defined]
                    if new.HasField("appreciation_forecast")
                    else None
                ),
            )
        )
    elif change.kind == LOAN:
        update = (
            event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_ADDED
            if old is None
            else event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_REMOVED
            if new is None
            else event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_UPDATED
        )
        event.portfolio_updated.CopyFrom(
            event_pb2.PortfolioUpdated(portfolio_id=change.scope, update_type=update, loan=new or old)
        )
    elif change.kind == METRICS and new is not None:
        event.metrics_updated.CopyFrom(event_pb2.MetricsUpdated(portfolio_id=change.scope, metrics=new))
    else:
        return None
    return event


def _drift_change(change: Change) -> Drift.Change.ValueType:
    if change.old is None:
        return Drift.CHANGE_ADDED
    return Drift.CHANGE_REMOVED if change.new is None else Drift.CHANGE_MODIFIED


def _queryable(ids: Iterable[str]) -> list[str]:
    """The ids a comma-separated query can carry (an upstream may have sent others in events)."""
    return sorted(identifier for identifier in ids if identifier and "," not in identifier)


def _timestamp(microseconds: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(microseconds)
    return stamp
