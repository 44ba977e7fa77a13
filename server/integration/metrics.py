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


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.events_missed = Counter(
            "equihome_upstream_ws_events_missed",
            "Upstream changes no WebSocket delivered, found by reconciliation and published as events.",
            ["system"],
            registry=registry,
        )
        self.drift = Counter(
            "equihome_mirror_drift",
            "Mirrored items found different from the upstream's REST reads, per system and kind.",
            ["system", "kind"],
            registry=registry,
        )
        self.reconciliations = Counter(
            "equihome_reconciliations",
            "Passes of the mirror against an upstream, per system, trigger and outcome (complete, partial).",
            ["system", "trigger", "outcome"],
            registry=registry,
        )


class OutboxMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.attempts = Counter(
            "equihome_push_attempts",
            "Attempts to deliver a push, per system and outcome (delivered, retry, dead_letter).",
            ["system", "outcome"],
            registry=registry,
        )
        self.pending = Gauge(
            "equihome_pushes_pending", "Pushes waiting for delivery, per system.", ["system"], registry=registry
        )
