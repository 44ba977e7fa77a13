"""Prometheus collectors of the event bus, in the registry the server exports."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BusMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.published = Counter(
            "equihome_events_published",
            "Events stored and fanned out, per type.",
            ["type"],
            registry=registry,
        )
        self.pending = Gauge(
            "equihome_events_pending", "Events waiting to be stored in the event log.", registry=registry
        )
        self.subscribers = Gauge(
            "equihome_event_subscribers", "Open SubscribeEvents streams.", registry=registry
        )
        self.cut_off = Counter(
            "equihome_event_subscribers_cut_off",
            "Subscribers ended with SUBSCRIBER_TOO_SLOW.",
            registry=registry,
        )
        self.unreadable = Counter(
            "equihome_events_unreadable",
            "Stored events that could not be decoded (skipped).",
            registry=registry,
        )
        self.upstream_lag = Histogram(
            "equihome_event_upstream_lag_seconds",
            "From the upstream's frame timestamp to fan-out (clock skew included).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
