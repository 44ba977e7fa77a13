"""Prometheus collectors of the adapters, registered in the registry the server exports."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AdapterMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "equihome_upstream_requests",
            "REST calls to upstream systems, per system, method and outcome (HTTP status or error kind).",
            ["system", "method", "outcome"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "equihome_upstream_request_seconds",
            "Duration of one REST request to an upstream system (retries are separate requests).",
            ["system", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.token_fetches = Counter(
            "equihome_upstream_token_fetches",
            "OAuth token requests per system and outcome (ok, failed).",
            ["system", "outcome"],
            registry=registry,
        )
        self.socket_connects = Counter(
            "equihome_upstream_ws_connects",
            "WebSocket connection attempts per system and outcome (ok, refused, failed).",
            ["system", "outcome"],
            registry=registry,
        )
        self.frames = Counter(
            "equihome_upstream_ws_frames",
            "WebSocket frames received per system and kind (event, duplicate, malformed, control, error).",
            ["system", "kind"],
            registry=registry,
        )
        self.coverage_gaps = Counter(
            "equihome_upstream_ws_coverage_gaps",
            "Times every WebSocket of a system was down and one came back (a catch-up reconciliation follows).",
            ["system"],
            registry=registry,
        )
