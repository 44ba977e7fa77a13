"""Automatic re-optimisation: after TLS's ``zone_classification_updated`` or ``market_risk_updated`` the
engine optimises each watched portfolio again and sends the recommendation when it moved.

Debounced: the first change starts a quiet period of ``debounce_s``; every further change restarts it, and
one re-optimisation runs when it ends, however many changes came (a burst gives one run) — or, under a
steady stream of changes, ``max_wait_s`` after the first. While a run is going, changes start the next
quiet period. A run re-optimises each portfolio (``MAX_SHARPE`` on its live
book, ``paths`` paths) and sends it (TLS and PMS, through the outbox) only when a zone weight differs from
the last recommendation sent for that portfolio by more than ``threshold`` (or none was sent yet).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from equihome.events.v1 import event_pb2
from equihome.optimization.v1 import optimization_service_pb2 as service_pb2
from server import errors
from server.integration.bus import EventBus
from server.integration.event_keys import EventFilter
from server.settings import Settings, id_list
from server.store import OptimizationStore

if TYPE_CHECKING:
    from server.services.optimization import Optimizations

log = logging.getLogger(__name__)

TRIGGERS = (event_pb2.EVENT_TYPE_ZONE_CLASSIFICATION_UPDATED, event_pb2.EVENT_TYPE_MARKET_RISK_UPDATED)
RUN_BUDGET_S = 600.0
SYSTEM_OWNER = ""  # owner of automatic re-optimisations: every subscriber sees their events


@dataclass(frozen=True)
class ReoptimisePolicy:
    portfolios: tuple[str, ...]
    debounce_s: float = 5.0
    max_wait_s: float = 60.0
    threshold: float = 0.02  # largest zone-weight move that is not worth sending
    paths: int = 1000


class Reoptimiser:
    def __init__(
        self, bus: EventBus, optimizations: Optimizations, store: OptimizationStore, policy: ReoptimisePolicy
    ):
        self._bus, self._optimizations, self._store, self._policy = bus, optimizations, store, policy
        self._changed = asyncio.Event()
        self.runs = 0  # re-optimisation rounds started (one per burst); for tests and metrics
        self.sent = 0  # recommendations sent
        self.running = False  # a round is under way

    @property
    def pending(self) -> bool:
        """A change is waiting for its quiet period or for the next run."""
        return self._changed.is_set()

    async def run_forever(self) -> None:
        listener = asyncio.create_task(self._listen(), name="re-optimisation triggers")
        try:
            while True:
                await self._changed.wait()
                await self._quiet_period()
                self.runs += 1
                self.running = True
                try:
                    for portfolio_id in self._policy.portfolios:
                        await self._reoptimise(portfolio_id)
                finally:
                    self.running = False
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self) -> None:
        """Flag every zone or market-risk change the bus fans out."""
        while True:
            subscriber = self._bus.attach(EventFilter.of(types=TRIGGERS), catching_up=False)
            try:
                while not subscriber.cut_off:
                    await subscriber.ready.wait()
                    subscriber.ready.clear()
                    if subscriber.buffer or subscriber.cut_off:
                        subscriber.buffer.clear()
                        self._changed.set()
            finally:
                self._bus.detach(subscriber)

    async def _quiet_period(self) -> None:
        """Until ``debounce_s`` pass without a change, or ``max_wait_s`` passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._policy.max_wait_s
        while self._changed.is_set() and loop.time() < deadline:
            self._changed.clear()
            await asyncio.sleep(min(self._policy.debounce_s, max(0.0, deadline - loop.time())))
        self._changed.clear()

    async def _reoptimise(self, portfolio_id: str) -> None:
        request = service_pb2.OptimizeAllocationRequest(portfolio_id=portfolio_id, paths=self._policy.paths)
        try:
            optimization = await self._optimizations.run(
                request, owner=SYSTEM_OWNER, budget_s=RUN_BUDGET_S, automatic=True, send=self._moved_enough
            )
        except errors.ServiceError as failure:
            log.warning(
                "automatic re-optimisation failed",
                extra={"portfolio_id": portfolio_id, "reason": failure.reason},
            )
            return
        except Exception:  # a bug must not end re-optimisation for good: the next change tries again
            log.exception("automatic re-optimisation crashed", extra={"portfolio_id": portfolio_id})
            return
        if optimization.deliveries:
            self.sent += 1
        log.info(
            "automatic re-optimisation",
            extra={
                "portfolio_id": portfolio_id,
                "optimization_id": optimization.optimization_id,
                "sent": bool(optimization.deliveries),
            },
        )

    async def _moved_enough(self, optimization: service_pb2.Optimization) -> bool:
        last = await self._store.last_sent(optimization.portfolio_id)
        if last is None:
            return True
        before = service_pb2.Optimization.FromString(last.body).recommendation.target_allocation
        after = optimization.recommendation.target_allocation
        moved = max(abs(getattr(after, zone) - getattr(before, zone)) for zone in ("green", "orange", "red"))
        return moved > self._policy.threshold


def watched_portfolios(settings: Settings, mirrored: tuple[str, ...]) -> tuple[str, ...]:
    return id_list(settings.reoptimize_portfolios) or mirrored
