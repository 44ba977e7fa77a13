"""Traffic Light System REST client: the typed reads (its POST is a push: ``adapters/pushes.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.errors import decoding
from adapters.http import UpstreamHttpClient
from adapters.json_reader import PayloadError
from adapters.traffic_light.mapping import MarketRiskBatch, ZoneBatch, market_risk_from_json, zones_from_json

PREFIX = "/api/traffic-light"


def id_list(ids: Sequence[str], field: str) -> str:
    """The guide's comma-separated query list; an id that is empty or holds a comma cannot be sent."""
    for index, identifier in enumerate(ids):
        if not identifier or "," in identifier:
            raise PayloadError(f"{field}[{index}]", "must be non-empty and free of commas")
    return ",".join(ids)


class TrafficLightClient:
    def __init__(self, http: UpstreamHttpClient):
        self.http = http

    async def zones(self, property_ids: Sequence[str]) -> ZoneBatch:
        """``GET /api/traffic-light/zones?properties=...``: the zones it knows, and the ids it does not."""
        path = f"{PREFIX}/zones"
        body = await self.http.get_json(path, {"properties": id_list(property_ids, "property_ids")})
        with decoding(self.http.system, path):
            return zones_from_json(body, property_ids)

    async def market_risk(self, region_ids: Sequence[str]) -> MarketRiskBatch:
        """``GET /api/traffic-light/market-risk?regions=...``."""
        path = f"{PREFIX}/market-risk"
        body = await self.http.get_json(path, {"regions": id_list(region_ids, "region_ids")})
        with decoding(self.http.system, path):
            return market_risk_from_json(body, region_ids)
