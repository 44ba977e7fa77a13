"""Read-through access to upstream data with a cached fallback and a freshness report.

Every read goes to the upstream first. A good answer is stored per item (``ReadCache``) and returned
with ``stale = false``; fetching and storing run in a task of their own, so a caller that gives up (its
deadline passed) still leaves the answer in the cache. When the upstream is down (outage, open circuit, no token, rate limited) the
cached items are served instead, with ``stale = true`` and the age of the oldest item used, provided
every requested item is cached; otherwise, or with ``require_fresh``, the upstream's failure is returned
as the API error. Other failures (404, data we cannot use) are never papered over with old data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from adapters.errors import (
    CircuitOpen,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from adapters.pms.client import PmsClient
from adapters.shielded import ShieldedWork
from adapters.systems import Upstream
from adapters.traffic_light.client import TrafficLightClient
from adapters.underwriting.client import UnderwritingClient
from equihome.integration.v1 import integration_pb2, integration_service_pb2
from equihome.type.v1 import loan_pb2, system_pb2
from server.integration.cache import ReadCache, cache_key
from server.integration.errors import service_error

log = logging.getLogger(__name__)

FALLBACK_ON = (UpstreamUnavailable, CircuitOpen, UpstreamAuthFailed, UpstreamRateLimited)
UNKNOWN = b""  # cached payload of an id the upstream said it does not know


@dataclass(frozen=True)
class Items:
    """Payloads by id (``UNKNOWN`` for ids the upstream does not know) and how fresh they are."""

    payloads: dict[str, bytes]
    freshness: system_pb2.DataFreshness


def freshness(system: Upstream, fetch_us: int, now_us: int, *, stale: bool) -> system_pb2.DataFreshness:
    fetch_time = timestamp_pb2.Timestamp()
    fetch_time.FromMicroseconds(fetch_us)
    age = duration_pb2.Duration()
    age.FromMicroseconds(max(0, now_us - fetch_us) if stale else 0)
    return system_pb2.DataFreshness(stale=stale, data_age=age, fetch_time=fetch_time, source=system.proto)


class ReadThrough:
    """The fetch-or-fallback rule, for reads of any shape."""

    def __init__(self, cache: ReadCache, clock: Callable[[], int] = lambda: time.time_ns() // 1000):
        self._cache = cache
        self._clock = clock
        self._work = ShieldedWork()

    async def items(
        self,
        system: Upstream,
        kind: str,
        ids: Sequence[str],
        fetch: Callable[[], Awaitable[dict[str, bytes]]],
        *,
        require_fresh: bool,
    ) -> Items:
        """``fetch()`` the items ``ids`` of ``kind`` from ``system``, or serve them from the cache."""
        try:
            payloads, fetch_us = await self._work.run(self._fetch_and_store(system, kind, ids, fetch))
        except FALLBACK_ON as error:
            if require_fresh:
                raise service_error(error) from None
            return await self._cached(system, kind, ids, error)
        except UpstreamError as error:
            raise service_error(error, ", ".join(ids)) from None
        return Items(payloads, freshness(system, fetch_us, fetch_us, stale=False))

    async def _fetch_and_store(
        self, system: Upstream, kind: str, ids: Sequence[str], fetch: Callable[[], Awaitable[dict[str, bytes]]]
    ) -> tuple[dict[str, bytes], int]:
        payloads = await fetch()
        fetch_us = self._clock()
        await self._cache.put(system, {cache_key(system, kind, i): payloads[i] for i in ids}, fetch_us)
        return payloads, fetch_us

    async def _cached(self, system: Upstream, kind: str, ids: Sequence[str], error: UpstreamError) -> Items:
        keys = {identifier: cache_key(system, kind, identifier) for identifier in ids}
        found = await self._cache.get(list(keys.values()))
        if len(found) < len(keys):
            log.info(
                "upstream down and not everything cached",
                extra={"system": system.value, "kind": kind, "cached": len(found), "requested": len(keys)},
            )
            raise service_error(error) from None
        oldest = min(item.fetch_us for item in found.values())
        log.info(
            "upstream down; serving cached data",
            extra={"system": system.value, "kind": kind, "age_s": round((self._clock() - oldest) / 1e6, 3)},
        )
        payloads = {identifier: found[key].payload for identifier, key in keys.items()}
        return Items(payloads, freshness(system, oldest, self._clock(), stale=True))


class IntegrationReads:
    """The five typed read-throughs of the IntegrationService."""

    def __init__(
        self,
        read_through: ReadThrough,
        traffic_light: TrafficLightClient,
        pms: PmsClient,
        underwriting: UnderwritingClient,
    ):
        self._read = read_through
        self._traffic_light = traffic_light
        self._pms = pms
        self._underwriting = underwriting

    async def zones(
        self, property_ids: Sequence[str], *, require_fresh: bool
    ) -> integration_service_pb2.GetZoneClassificationsResponse:
        async def fetch() -> dict[str, bytes]:
            batch = await self._traffic_light.zones(property_ids)
            payloads = dict.fromkeys(batch.missing_property_ids, UNKNOWN)
            payloads.update({item.property_id: item.SerializeToString() for item in batch.classifications})
            return payloads

        items = await self._read.items(
            Upstream.TRAFFIC_LIGHT, "zone", property_ids, fetch, require_fresh=require_fresh
        )
        response = integration_service_pb2.GetZoneClassificationsResponse(freshness=items.freshness)
        _sort_into(property_ids, items.payloads, response.classifications, response.missing_property_ids)
        return response

    async def market_risk(
        self, region_ids: Sequence[str], *, require_fresh: bool
    ) -> integration_service_pb2.GetMarketRiskResponse:
        async def fetch() -> dict[str, bytes]:
            batch = await self._traffic_light.market_risk(region_ids)
            payloads = dict.fromkeys(batch.missing_region_ids, UNKNOWN)
            payloads.update({item.region_id: item.SerializeToString() for item in batch.market_risks})
            return payloads

        items = await self._read.items(
            Upstream.TRAFFIC_LIGHT, "market-risk", region_ids, fetch, require_fresh=require_fresh
        )
        response = integration_service_pb2.GetMarketRiskResponse(freshness=items.freshness)
        _sort_into(region_ids, items.payloads, response.market_risks, response.missing_region_ids)
        return response

    async def composition(
        self, portfolio_id: str, *, require_fresh: bool
    ) -> integration_service_pb2.GetPortfolioCompositionResponse:
        async def fetch() -> dict[str, bytes]:
            return {portfolio_id: (await self._pms.composition(portfolio_id)).SerializeToString()}

        items = await self._read.items(
            Upstream.PMS, "composition", [portfolio_id], fetch, require_fresh=require_fresh
        )
        composition = integration_pb2.PortfolioComposition.FromString(items.payloads[portfolio_id])
        return integration_service_pb2.GetPortfolioCompositionResponse(
            composition=composition, freshness=items.freshness
        )

    async def metrics(
        self, portfolio_id: str, *, require_fresh: bool
    ) -> integration_service_pb2.GetPortfolioMetricsResponse:
        async def fetch() -> dict[str, bytes]:
            return {portfolio_id: (await self._pms.performance(portfolio_id)).SerializeToString()}

        items = await self._read.items(
            Upstream.PMS, "metrics", [portfolio_id], fetch, require_fresh=require_fresh
        )
        payload = items.payloads[portfolio_id]
        response = integration_service_pb2.GetPortfolioMetricsResponse.FromString(payload)
        response.freshness.CopyFrom(items.freshness)
        return response

    async def loan_parameters(
        self, loan_id: str, *, require_fresh: bool
    ) -> integration_service_pb2.GetLoanParametersResponse:
        async def fetch() -> dict[str, bytes]:
            return {loan_id: (await self._underwriting.loan_parameters(loan_id)).SerializeToString()}

        items = await self._read.items(
            Upstream.UNDERWRITING, "loan-parameters", [loan_id], fetch, require_fresh=require_fresh
        )
        return integration_service_pb2.GetLoanParametersResponse(
            loan_application=loan_pb2.LoanApplication.FromString(items.payloads[loan_id]),
            freshness=items.freshness,
        )


def _sort_into(ids: Sequence[str], payloads: dict[str, bytes], found: Any, missing: Any) -> None:
    """Each id in request order: its cached message into ``found``, or the id into ``missing``."""
    for item_id in ids:
        payload = payloads[item_id]
        if payload == UNKNOWN:
            missing.append(item_id)
        else:
            found.add().ParseFromString(payload)
