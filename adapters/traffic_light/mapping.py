"""Traffic Light System JSON <-> our messages. Pure functions; no I/O.

Partial batches: the guide does not say what happens to ids the TLS does not know. Whatever it does
(leave them out, or list them in the sandbox's ``unknown_properties`` / ``unknown_regions``), every
requested id without an entry is reported as missing, in request order.

Required: ids, zones (``zones`` values, ``new_zone``). Everything else may be left out and is then unset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters.json_reader import JsonObject, PayloadError
from adapters.vocabulary import risk_level_from_json, zone_from_json
from equihome.events.v1 import event_pb2
from equihome.integration.v1 import integration_pb2
from equihome.optimization.v1 import allocation_pb2


@dataclass(frozen=True)
class ZoneBatch:
    """Zones of the requested properties the TLS knows (request order), and the ids it did not classify."""

    classifications: list[integration_pb2.ZoneClassification]
    missing_property_ids: list[str]


@dataclass(frozen=True)
class MarketRiskBatch:
    """Market risk of the requested regions the TLS knows (request order), and the ids it did not report."""

    market_risks: list[integration_pb2.RegionMarketRisk]
    missing_region_ids: list[str]


def zones_from_json(body: Any, requested: Sequence[str]) -> ZoneBatch:
    """``{"zones": {"<property>": "green", ...}}`` for the ``requested`` property ids."""
    document = JsonObject(body)
    zones = document.object("zones")
    document.optional_strings("unknown_properties")  # an extension; checked for type, implied below
    classified = {
        property_id: zone_from_json(value, path) for property_id, value, path in zones.entries()
    }
    return ZoneBatch(
        classifications=[
            integration_pb2.ZoneClassification(property_id=property_id, zone=classified[property_id])
            for property_id in requested
            if property_id in classified
        ],
        missing_property_ids=[property_id for property_id in requested if property_id not in classified],
    )


def region_market_risk_from_json(region_id: str, entry: JsonObject) -> integration_pb2.RegionMarketRisk:
    return integration_pb2.RegionMarketRisk(
        region_id=region_id,
        risk_level=entry.optional_parsed("risk_level", risk_level_from_json),
        risk_score=entry.optional_number("risk_score"),
        appreciation_forecast=entry.optional_number("appreciation_forecast"),
    )


def market_risk_from_json(body: Any, requested: Sequence[str]) -> MarketRiskBatch:
    """``{"market_risk": {"<region>": {"risk_level", "risk_score", "appreciation_forecast"}}}``."""
    document = JsonObject(body)
    reported = document.object("market_risk")
    document.optional_strings("unknown_regions")
    risks = {
        region_id: region_market_risk_from_json(region_id, JsonObject(value, path))
        for region_id, value, path in reported.entries()
    }
    return MarketRiskBatch(
        market_risks=[risks[region_id] for region_id in requested if region_id in risks],
        missing_region_ids=[region_id for region_id in requested if region_id not in risks],
    )


def recommendations_to_json(
    portfolio_id: str, recommendation: allocation_pb2.AllocationRecommendation
) -> dict[str, Any]:
    """The body of ``POST /api/traffic-light/recommendations``."""
    if not portfolio_id:
        raise PayloadError("portfolio_id", "must not be empty")
    if not recommendation.HasField("target_allocation"):
        raise PayloadError("recommendation.target_allocation", "missing")
    target = recommendation.target_allocation
    regions: dict[str, float] = {}
    for index, region in enumerate(recommendation.region_allocations):
        if not region.region:
            raise PayloadError(f"recommendation.region_allocations[{index}].region", "must not be empty")
        if region.region in regions:
            raise PayloadError(f"recommendation.region_allocations[{index}].region", "appears twice")
        regions[region.region] = region.weight
    return {
        "portfolio_id": portfolio_id,
        "recommendations": {
            "green_zone_allocation": target.green,
            "orange_zone_allocation": target.orange,
            "red_zone_allocation": target.red,
            "region_allocations": regions,
        },
    }


def zone_classification_updated_from_json(data: JsonObject) -> event_pb2.ZoneClassificationUpdated:
    return event_pb2.ZoneClassificationUpdated(
        property_id=data.identifier("property_id"),
        old_zone=data.optional_parsed("old_zone", zone_from_json),
        new_zone=data.parsed("new_zone", zone_from_json),
        reason=data.optional_string("reason"),
    )


def market_risk_updated_from_json(data: JsonObject) -> event_pb2.MarketRiskUpdated:
    return event_pb2.MarketRiskUpdated(
        region_id=data.identifier("region_id"),
        old_risk_level=data.optional_parsed("old_risk_level", risk_level_from_json),
        new_risk_level=data.optional_parsed("new_risk_level", risk_level_from_json),
        risk_score=data.optional_number("risk_score"),
        appreciation_forecast=data.optional_number("appreciation_forecast"),
    )
