"""The three pushes of the guide as ready-to-send requests, and the REST sink that sends them.

A ``Push`` is what the outbox stores and delivers: the system, the guide's path and JSON body, and an
idempotency key. The constructors map our messages with the systems' pure mappings, so a message the
guide cannot express is refused (``PayloadError`` naming the field) before anything is stored.

Keys: PMS recommendations by ``optimization_id``, portfolio impact analyses by ``analysis_id``, TLS
recommendations by a key the caller gives (the guide's TLS body has no id; the optimisation id is the
natural one). A key is unique per kind. It is sent as the ``Idempotency-Key`` header, which the guide does
not define: a system that honours it drops a repeat, one that does not ignores it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.acknowledgement import Acknowledgement, acknowledgement_from_json
from adapters.http import UpstreamHttpClient
from adapters.json_reader import MAX_ID_CHARS, PayloadError
from adapters.pms.client import portfolio_path
from adapters.pms.mapping import recommendations_to_json as pms_recommendations_to_json
from adapters.systems import Upstream
from adapters.traffic_light.mapping import recommendations_to_json as tls_recommendations_to_json
from adapters.underwriting.client import loan_path
from adapters.underwriting.mapping import portfolio_impact_to_json
from equihome.impact.v1 import impact_analysis_pb2
from equihome.optimization.v1 import allocation_pb2

log = logging.getLogger(__name__)

TLS_RECOMMENDATIONS = "traffic_light_recommendations"
PMS_RECOMMENDATIONS = "pms_recommendations"
PORTFOLIO_IMPACT = "portfolio_impact"
KINDS = {TLS_RECOMMENDATIONS: Upstream.TRAFFIC_LIGHT, PMS_RECOMMENDATIONS: Upstream.PMS, PORTFOLIO_IMPACT: Upstream.UNDERWRITING}


@dataclass(frozen=True)
class Push:
    kind: str  # one of KINDS
    key: str  # unique per kind
    path: str  # the guide's path, ids filled in
    body: Mapping[str, Any]  # the guide's JSON body

    @property
    def system(self) -> Upstream:
        return KINDS[self.kind]

    @property
    def idempotency_key(self) -> str:
        return f"{self.kind}:{self.key}"


def _checked_key(key: str, field: str) -> str:
    if not key or len(key) > MAX_ID_CHARS:
        raise PayloadError(field, f"must be 1 to {MAX_ID_CHARS} characters")
    return key


def traffic_light_recommendations(
    portfolio_id: str, recommendation: allocation_pb2.AllocationRecommendation, *, key: str
) -> Push:
    """``POST /api/traffic-light/recommendations``."""
    body = tls_recommendations_to_json(portfolio_id, recommendation)
    return Push(TLS_RECOMMENDATIONS, _checked_key(key, "key"), "/api/traffic-light/recommendations", body)


def pms_recommendations(
    portfolio_id: str, optimization_id: str, recommendation: allocation_pb2.AllocationRecommendation
) -> Push:
    """``POST /api/pms/portfolios/{portfolio_id}/recommendations``, keyed by ``optimization_id``."""
    body = pms_recommendations_to_json(optimization_id, recommendation)
    path = portfolio_path(portfolio_id, "recommendations")
    return Push(PMS_RECOMMENDATIONS, _checked_key(optimization_id, "optimization_id"), path, body)


def portfolio_impact(analysis: impact_analysis_pb2.ImpactAnalysis) -> Push:
    """``POST /api/underwriting/loans/{loan_id}/portfolio-impact``, keyed by ``analysis_id``."""
    body = portfolio_impact_to_json(analysis)
    path = loan_path(analysis.loan_id, "portfolio-impact")
    return Push(PORTFOLIO_IMPACT, _checked_key(analysis.analysis_id, "analysis.analysis_id"), path, body)


class RestPushSink:
    """Delivers pushes as the guide's POSTs, through each system's REST client (token with the write
    scope, correlation id, circuit breaker; never retried here: the outbox retries)."""

    def __init__(self, clients: Mapping[Upstream, UpstreamHttpClient]):
        self._clients = clients

    async def deliver(self, push: Push) -> Acknowledgement:
        """POST it; an accepted push whose answer we cannot read is still accepted (logged)."""
        client = self._clients[push.system]
        answer = await client.post_json(push.path, push.body, idempotency_key=push.idempotency_key)
        try:
            return acknowledgement_from_json(answer)
        except PayloadError as problem:
            log.warning(
                "push accepted with an unreadable answer: %s",
                problem,
                extra={"system": push.system.value, "endpoint": push.path},
            )
            return Acknowledgement()
