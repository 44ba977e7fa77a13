"""The guide's shared words in both directions: zones, risk levels and the metrics objects.

Zones must be one of the guide's three strings: a loan in an unknown zone cannot be simulated, so an
unknown zone is a ``PayloadError``. Risk levels the API does not know map to ``RISK_LEVEL_UNSPECIFIED``,
as the proto documents. Metrics objects keep the metrics the API knows and skip any others.
"""

from __future__ import annotations

from typing import Any

from adapters.json_reader import JsonObject, PayloadError, json_type
from equihome.type.v1 import market_pb2, metrics_pb2, zone_pb2

ZONES: dict[str, zone_pb2.Zone.ValueType] = {
    "green": zone_pb2.ZONE_GREEN,
    "orange": zone_pb2.ZONE_ORANGE,
    "red": zone_pb2.ZONE_RED,
}
ZONE_NAMES = {value: name for name, value in ZONES.items()}

RISK_LEVELS: dict[str, market_pb2.RiskLevel.ValueType] = {
    "low": market_pb2.RISK_LEVEL_LOW,
    "medium": market_pb2.RISK_LEVEL_MEDIUM,
    "high": market_pb2.RISK_LEVEL_HIGH,
}

# The metric names of the guide's objects are the PortfolioMetrics field names.
METRIC_NAMES: tuple[str, ...] = tuple(field.name for field in metrics_pb2.PortfolioMetrics.DESCRIPTOR.fields)


def zone_from_json(value: Any, field: str) -> zone_pb2.Zone.ValueType:
    if not isinstance(value, str):
        raise PayloadError(field, f"expected a zone string, got {json_type(value)}")
    try:
        return ZONES[value]
    except KeyError:
        raise PayloadError(field, f"unknown zone {value!r}; expected green, orange or red") from None


def zone_to_json(zone: zone_pb2.Zone.ValueType, field: str) -> str:
    try:
        return ZONE_NAMES[zone]
    except KeyError:
        raise PayloadError(field, "zone must be set (green, orange or red)") from None


def risk_level_from_json(value: Any, field: str) -> market_pb2.RiskLevel.ValueType:
    if not isinstance(value, str):
        raise PayloadError(field, f"expected a risk level string, got {json_type(value)}")
    return RISK_LEVELS.get(value, market_pb2.RISK_LEVEL_UNSPECIFIED)


def metrics_from_json(source: JsonObject) -> metrics_pb2.PortfolioMetrics:
    """The known metrics present in ``source``; each must be a number."""
    metrics = metrics_pb2.PortfolioMetrics()
    for name in METRIC_NAMES:
        value = source.optional_number(name)
        if value is not None:
            setattr(metrics, name, value)
    return metrics


def metrics_to_json(metrics: metrics_pb2.PortfolioMetrics) -> dict[str, float]:
    """The metrics that are set, under the guide's names."""
    return {name: getattr(metrics, name) for name in METRIC_NAMES if metrics.HasField(name)}
