"""Underwriting System REST client: loan parameters (its POST is a push: ``adapters/pushes.py``)."""

from __future__ import annotations

from urllib.parse import quote

from adapters.errors import decoding
from adapters.http import UpstreamHttpClient
from adapters.json_reader import PayloadError
from adapters.underwriting.mapping import loan_parameters_from_json
from equihome.type.v1 import loan_pb2


def loan_path(loan_id: str, leaf: str) -> str:
    if not loan_id:
        raise PayloadError("loan_id", "must not be empty")
    return f"/api/underwriting/loans/{quote(loan_id, safe='')}/{leaf}"


class UnderwritingClient:
    def __init__(self, http: UpstreamHttpClient):
        self.http = http

    async def loan_parameters(self, loan_id: str) -> loan_pb2.LoanApplication:
        """``GET /api/underwriting/loans/{loan_id}/parameters``."""
        path = loan_path(loan_id, "parameters")
        body = await self.http.get_json(path)
        with decoding(self.http.system, path):
            return loan_parameters_from_json(body)
