"""Pure mapping functions against the integration guide's own JSON examples, both directions."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from adapters.frames import decode_frame, event_from_frame
from adapters.http import read_error_body, retry_after_seconds
from adapters.json_reader import JsonObject, PayloadError
from adapters.pms import mapping as pms
from adapters.systems import Upstream
from adapters.traffic_light import mapping as traffic_light
from adapters.underwriting import mapping as underwriting
from equihome.events.v1 import event_pb2
from equihome.impact.v1 import impact_analysis_pb2
from equihome.optimization.v1 import allocation_pb2
from equihome.type.v1 import loan_pb2, market_pb2, metrics_pb2, zone_pb2
from tests.sandbox import guide_examples as guide

GREEN, ORANGE, RED = zone_pb2.ZONE_GREEN, zone_pb2.ZONE_ORANGE, zone_pb2.ZONE_RED


def test_zones_of_the_guide_with_a_missing_property() -> None:
    batch = traffic_light.zones_from_json(guide.ZONES, ["property_id2", "property_id3", "property_id1"])

    assert [(item.property_id, item.zone) for item in batch.classifications] == [
        ("property_id2", ORANGE),
        ("property_id1", GREEN),
    ]
    assert batch.missing_property_ids == ["property_id3"]


def test_market_risk_of_the_guide() -> None:
    batch = traffic_light.market_risk_from_json(guide.MARKET_RISK, ["region_id1", "region_id2"])

    first, second = batch.market_risks
    assert (first.region_id, first.risk_level, first.risk_score, first.appreciation_forecast) == (
        "region_id1", market_pb2.RISK_LEVEL_LOW, 2.3, 0.05,
    )  # fmt: skip
    assert second.risk_level == market_pb2.RISK_LEVEL_MEDIUM and batch.missing_region_ids == []


def test_extra_fields_are_tolerated_and_unknown_vocabulary_handled_as_documented() -> None:
    body = copy.deepcopy(guide.MARKET_RISK)
    body["market_risk"]["region_id1"] |= {"risk_level": "extreme", "analyst": "jo"}
    body["generated_by"] = "tls-v9"

    (risk, _) = traffic_light.market_risk_from_json(body, ["region_id1", "region_id2"]).market_risks
    assert risk.risk_level == market_pb2.RISK_LEVEL_UNSPECIFIED  # the proto's "a level this API does not know"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"zones": {"p1": 3}}, "zones.p1"),
        ({"zones": {"p1": "purple"}}, "zones.p1"),
        ({"zones": ["p1"]}, "zones"),
        ({}, "zones"),
        ({"zones": {}, "unknown_properties": [1]}, "unknown_properties[0]"),
    ],
)
def test_wrong_zone_payloads_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        traffic_light.zones_from_json(body, ["p1"])
    assert caught.value.field == field


def test_composition_of_the_guide() -> None:
    composition = pms.composition_from_json(guide.COMPOSITION)

    (loan,) = composition.loans
    assert (loan.id, loan.loan_amount, loan.property_value, loan.ltv, loan.zone) == ("loan_1", 250000, 500000, 0.5, GREEN)
    assert (loan.appreciation_rate, loan.origination_year, loan.exit_year) == (0.05, 0, 5)
    assert not loan.HasField("region")  # not in the guide's payload
    assert composition.metrics.total_initial_value == 200000000
    assert composition.metrics.weighted_appreciation_rate == 0.04


def test_a_string_where_the_guide_has_a_number_is_refused_with_its_path() -> None:
    body = copy.deepcopy(guide.COMPOSITION)
    body["loans"][0]["loan_amount"] = "250000"

    with pytest.raises(PayloadError, match=r"loans\[0\]\.loan_amount: expected a number, got string"):
        pms.composition_from_json(body)


def test_booleans_are_not_numbers() -> None:
    with pytest.raises(PayloadError) as caught:
        JsonObject({"nav": True}, "period").number("nav")
    assert caught.value.field == "period.nav"


def test_performance_of_the_guide() -> None:
    performance = pms.performance_from_json(guide.PERFORMANCE)

    assert performance.portfolio_id == "portfolio_456"
    assert performance.metrics == metrics_pb2.PortfolioMetrics(
        irr=0.12, equity_multiple=2.1, roi=1.1, sharpe_ratio=1.5, sortino_ratio=2.2, var_95=0.08
    )
    first, second = performance.historical_performance
    assert (first.date.year, first.date.month, first.date.day, first.nav, first.contributions) == (
        2023, 1, 1, 100000000, 100000000,
    )  # fmt: skip
    assert (second.date.month, second.nav) == (2, 101000000)


def test_a_bad_date_is_refused() -> None:
    body = copy.deepcopy(guide.PERFORMANCE)
    body["historical_performance"][1]["date"] = "2023-02-30"
    with pytest.raises(PayloadError) as caught:
        pms.performance_from_json(body)
    assert caught.value.field == "historical_performance[1].date"


def test_loan_parameters_of_the_guide() -> None:
    application = underwriting.loan_parameters_from_json(guide.LOAN_PARAMETERS)

    assert application == loan_pb2.LoanApplication(
        loan_id="loan_1",
        property_value=500000,
        requested_loan_amount=250000,
        requested_ltv=0.5,
        property_zone=GREEN,
        property_region="region_id1",
        borrower_credit_score=750,
        property_type=loan_pb2.PROPERTY_TYPE_SINGLE_FAMILY,
    )


def test_a_fractional_credit_score_is_refused() -> None:
    with pytest.raises(PayloadError, match="borrower_credit_score"):
        underwriting.loan_parameters_from_json(guide.LOAN_PARAMETERS | {"borrower_credit_score": 750.5})


# Outbound: our messages -> exactly the guide's request bodies.


def recommendation() -> allocation_pb2.AllocationRecommendation:
    return allocation_pb2.AllocationRecommendation(
        target_allocation=zone_pb2.ZoneWeights(green=0.7, orange=0.25, red=0.05),
        region_allocations=[
            zone_pb2.RegionWeight(region="region_id1", weight=0.4),
            zone_pb2.RegionWeight(region="region_id2", weight=0.6),
        ],
        expected_metrics=metrics_pb2.PortfolioMetrics(irr=0.14, equity_multiple=2.3, roi=1.3, sharpe_ratio=1.8),
        actions=[
            allocation_pb2.AllocationAction(
                action_type=allocation_pb2.ACTION_TYPE_INCREASE_ALLOCATION, zone=GREEN, amount=10000000
            ),
            allocation_pb2.AllocationAction(
                action_type=allocation_pb2.ACTION_TYPE_DECREASE_ALLOCATION, zone=ORANGE, amount=5000000
            ),
            allocation_pb2.AllocationAction(
                action_type=allocation_pb2.ACTION_TYPE_DECREASE_ALLOCATION, zone=RED, amount=5000000
            ),
        ],
    )


def test_tls_recommendations_are_the_guides_body() -> None:
    assert traffic_light.recommendations_to_json("portfolio_456", recommendation()) == guide.TLS_RECOMMENDATIONS


def test_pms_recommendations_are_the_guides_body() -> None:
    assert pms.recommendations_to_json("optimization_123", recommendation()) == guide.PMS_RECOMMENDATIONS


def test_an_action_without_zone_cannot_be_sent() -> None:
    unsendable = recommendation()
    unsendable.actions[1].zone = zone_pb2.ZONE_UNSPECIFIED
    with pytest.raises(PayloadError) as caught:
        pms.recommendations_to_json("optimization_123", unsendable)
    assert caught.value.field == "recommendation.actions[1].zone"


def test_portfolio_impact_is_the_guides_body() -> None:
    analysis = impact_analysis_pb2.ImpactAnalysis(
        analysis_id="analysis_123",
        loan_id="loan_1",
        portfolio_id="portfolio_456",
        portfolio_metrics_before=metrics_pb2.PortfolioMetrics(irr=0.12, equity_multiple=2.1, roi=1.1, sharpe_ratio=1.5),
        portfolio_metrics_after=metrics_pb2.PortfolioMetrics(
            irr=0.125, equity_multiple=2.15, roi=1.15, sharpe_ratio=1.55
        ),
        risk_impact=impact_analysis_pb2.RiskImpact(
            var_change=0.002, concentration_risk_change=-0.01, diversification_benefit=0.005, zone_hhi_after=0.4
        ),
        recommendation=impact_analysis_pb2.Recommendation(
            decision=impact_analysis_pb2.DECISION_APPROVE,
            approve=True,
            recommended_loan_amount=250000,
            recommended_ltv=0.5,
            confidence_score=0.85,
        ),
    )
    assert underwriting.portfolio_impact_to_json(analysis) == guide.PORTFOLIO_IMPACT


# WebSocket frames.


@pytest.mark.parametrize("name", sorted(guide.EVENTS))
def test_every_guide_event_maps_to_its_typed_payload(name: str) -> None:
    system = next(system for system in Upstream if name in system.events)
    frame = decode_frame(json.dumps(guide.EVENTS[name]))
    received = datetime(2025, 11, 25, 4, 12, 39, tzinfo=UTC)

    event = event_from_frame(system, frame, received)

    assert event.WhichOneof("payload") == name and event.source == system.proto
    assert event.origin == event_pb2.EVENT_ORIGIN_LIVE and event.time.ToDatetime(UTC) == received
    assert frame.timestamp is None


def test_members_beyond_the_guide_are_ignored_and_the_content_key_is_canonical() -> None:
    extended = guide.METRICS_UPDATED | {"id": 7, "timestamp": "2025-11-25T04:12:38.020940Z", "sequence": 9}
    reordered = {"data": dict(reversed(guide.METRICS_UPDATED["data"].items())), "event": "metrics_updated"}
    odd_stamp = guide.METRICS_UPDATED | {"timestamp": 1764043958.02}

    frames = [decode_frame(json.dumps(body)) for body in (guide.METRICS_UPDATED, extended, reordered, odd_stamp)]

    assert len({frame.key for frame in frames}) == 1
    assert frames[1].timestamp == datetime(2025, 11, 25, 4, 12, 38, 20940, tzinfo=UTC)
    assert frames[3].timestamp is None  # not the guide's: costs only the lag measurement


def test_guide_events_carry_their_data() -> None:
    def event(name: str, system: Upstream) -> event_pb2.Event:
        return event_from_frame(system, decode_frame(json.dumps(guide.EVENTS[name])), datetime.now(UTC))

    zone = event("zone_classification_updated", Upstream.TRAFFIC_LIGHT).zone_classification_updated
    assert (zone.property_id, zone.old_zone, zone.new_zone, zone.reason) == (
        "property_id1", GREEN, ORANGE, "Market conditions deteriorated",
    )  # fmt: skip
    added = event("portfolio_updated", Upstream.PMS).portfolio_updated
    assert added.update_type == event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_ADDED and added.loan.loan_amount == 300000
    assert not added.loan.HasField("appreciation_rate")
    updated = event("metrics_updated", Upstream.PMS).metrics_updated
    assert updated.metrics == metrics_pb2.PortfolioMetrics(irr=0.13, equity_multiple=2.2, roi=1.2)
    approved = event("loan_approved", Upstream.UNDERWRITING).loan_approved
    assert (approved.terms.term_years, approved.terms.origination_fee) == (10, 7500)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"event": "metrics_updated", "data": {"portf', "(frame)"),
        ('{"event": 5, "data": {}}', "event"),
        ('{"event": "metrics_updated"}', "data"),
        ('["event"]', "(body)"),
        ("[" * 100_000 + "]" * 100_000, "(frame)"),
    ],
)
def test_malformed_frames_are_refused_naming_the_problem(text: str, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_frame(text)
    assert caught.value.field == field


def test_a_frame_with_mistyped_data_is_refused_at_mapping() -> None:
    frame = decode_frame(json.dumps({"event": "loan_approved", "data": guide.LOAN_APPROVED["data"] | {"approved_ltv": "0.5"}}))
    with pytest.raises(PayloadError) as caught:
        event_from_frame(Upstream.UNDERWRITING, frame, datetime.now(UTC))
    assert caught.value.field == "data.approved_ltv"


def test_an_event_of_another_system_is_refused() -> None:
    frame = decode_frame(json.dumps(guide.METRICS_UPDATED))
    with pytest.raises(PayloadError, match="traffic-light does not publish"):
        event_from_frame(Upstream.TRAFFIC_LIGHT, frame, datetime.now(UTC))


# The guide's error format.


def test_the_guides_error_body_is_read() -> None:
    response = httpx.Response(503, json=guide.ERROR)

    said = read_error_body(response.content)

    assert said["code"] == "integration_error" and said["correlation_id"] == "corr_123456"
    assert retry_after_seconds(response, said["details"]) == 60


def test_retry_after_falls_back_to_the_header_and_non_guide_bodies_are_empty() -> None:
    response = httpx.Response(503, text="<html>bad gateway</html>", headers={"Retry-After": "12"})

    assert read_error_body(response.content) == {}
    assert retry_after_seconds(response, {}) == 12


# Optional fields: only identity fields are required (docs/integration.md, "Optional fields").


IDENTITY_ONLY = {
    "zone_classification_updated": {"property_id": "p1", "new_zone": "red"},
    "market_risk_updated": {"region_id": "r1"},
    "portfolio_updated": {"portfolio_id": "f1", "loan": {"id": "l1", "zone": "green"}},
    "metrics_updated": {"portfolio_id": "f1"},
    "loan_application_submitted": {"loan_id": "l1", "property_zone": "orange"},
    "loan_approved": {"loan_id": "l1"},
}


@pytest.mark.parametrize("name", sorted(IDENTITY_ONLY))
def test_events_with_only_their_identity_fields_map_with_everything_else_unset(name: str) -> None:
    system = next(system for system in Upstream if name in system.events)
    frame = decode_frame(json.dumps({"event": name, "data": IDENTITY_ONLY[name]}))

    payload = getattr(event_from_frame(system, frame, datetime.now(UTC)), name)

    assert {field.name for field, _ in payload.ListFields()} == set(IDENTITY_ONLY[name])


def test_an_event_missing_an_identity_field_is_refused() -> None:
    for name, data in IDENTITY_ONLY.items():
        system = next(system for system in Upstream if name in system.events)
        for field in data:
            frame = decode_frame(json.dumps({"event": name, "data": {k: v for k, v in data.items() if k != field}}))
            with pytest.raises(PayloadError) as caught:
                event_from_frame(system, frame, datetime.now(UTC))
            assert caught.value.field == f"data.{field}"


def test_reads_without_their_optional_fields_map_with_them_unset() -> None:
    risk = traffic_light.market_risk_from_json({"market_risk": {"r1": {}}}, ["r1"]).market_risks[0]
    composition = pms.composition_from_json({"portfolio_id": "f1", "loans": [{"id": "l1", "zone": "red"}]})
    performance = pms.performance_from_json({"portfolio_id": "f1"})
    parameters = underwriting.loan_parameters_from_json({"loan_id": "l1", "property_zone": "green"})

    assert risk == traffic_light.integration_pb2.RegionMarketRisk(region_id="r1")
    assert not risk.HasField("risk_score") and not risk.HasField("appreciation_forecast")
    assert composition.loans[0] == loan_pb2.PortfolioLoan(id="l1", zone=RED) and not composition.HasField("metrics")
    assert not composition.loans[0].HasField("loan_amount")
    assert list(performance.historical_performance) == [] and not performance.HasField("metrics")
    assert parameters == loan_pb2.LoanApplication(loan_id="l1", property_zone=GREEN)
    assert not parameters.HasField("borrower_credit_score")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"portfolio_id": "f" * 129, "loans": []}, "portfolio_id"),
        ({"portfolio_id": "f1", "loans": [{"id": "l1", "zone": "red", "region": "r" * 129}]}, "loans[0].region"),
        ({"portfolio_id": "f1", "loans": [{"id": "l", "zone": "red"}] * 100_001}, "loans"),
    ],
)
def test_hostile_sizes_are_refused(body: Any, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        pms.composition_from_json(body)
    assert caught.value.field == field


def test_an_over_long_reason_is_refused() -> None:
    data = guide.ZONE_CLASSIFICATION_UPDATED["data"] | {"reason": "x" * 1001}
    frame = decode_frame(json.dumps({"event": "zone_classification_updated", "data": data}))
    with pytest.raises(PayloadError) as caught:
        event_from_frame(Upstream.TRAFFIC_LIGHT, frame, datetime.now(UTC))
    assert caught.value.field == "data.reason"
