"""Portfolio Management System REST client: the typed reads (its POST is a push: ``adapters/pushes.py``)."""

from __future__ import annotations

from urllib.parse import quote

from adapters.errors import decoding
from adapters.http import UpstreamHttpClient
from adapters.json_reader import PayloadError
from adapters.pms.mapping import composition_from_json, performance_from_json
from equihome.integration.v1 import integration_pb2, integration_service_pb2


def portfolio_path(portfolio_id: str, leaf: str) -> str:
    if not portfolio_id:
        raise PayloadError("portfolio_id", "must not be empty")
    return f"/api/pms/portfolios/{quote(portfolio_id, safe='')}/{leaf}"


class PmsClient:
    def __init__(self, http: UpstreamHttpClient):
        self.http = http

    async def composition(self, portfolio_id: str) -> integration_pb2.PortfolioComposition:
        """``GET /api/pms/portfolios/{portfolio_id}/composition``."""
        path = portfolio_path(portfolio_id, "composition")
        body = await self.http.get_json(path)
        with decoding(self.http.system, path):
            return composition_from_json(body)

    async def performance(self, portfolio_id: str) -> integration_service_pb2.GetPortfolioMetricsResponse:
        """``GET /api/pms/portfolios/{portfolio_id}/metrics`` (metrics and history, no freshness)."""
        path = portfolio_path(portfolio_id, "metrics")
        body = await self.http.get_json(path)
        with decoding(self.http.system, path):
            return performance_from_json(body)
