"""Conformance against the strict sandbox (the guide exactly, optional fields sometimes left out): each of
the six events and five reads arrives typed, every field as the world has it, and a field the system left
out is unset. Expectations are written here from the world model, not from our mapping functions."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.sandbox import Sandbox
from adapters.systems import Upstream
from equihome.events.v1 import event_pb2
from equihome.integration.v1 import integration_service_pb2 as pb
from equihome.type.v1 import loan_pb2, market_pb2, zone_pb2
from tests.integration.conftest import Service, take
from tests.sandbox import guide_examples as guide

ZONES = {"green": zone_pb2.ZONE_GREEN, "orange": zone_pb2.ZONE_ORANGE, "red": zone_pb2.ZONE_RED}
LEVELS = {"low": market_pb2.RISK_LEVEL_LOW, "medium": market_pb2.RISK_LEVEL_MEDIUM, "high": market_pb2.RISK_LEVEL_HIGH}
UPDATES = {"loan_added": event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_ADDED, "loan_exited": event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_EXITED}
PROPERTY_TYPES = {
    "single_family": loan_pb2.PROPERTY_TYPE_SINGLE_FAMILY,
    "townhouse": loan_pb2.PROPERTY_TYPE_TOWNHOUSE,
    "apartment": loan_pb2.PROPERTY_TYPE_APARTMENT,
    "duplex": loan_pb2.PROPERTY_TYPE_MULTI_FAMILY,
}


def present(message: Any, field: str, expected: Any) -> None:
    """``field`` of ``message`` equals ``expected``, or is unset when ``expected`` is None (left out)."""
    if expected is None:
        assert not message.HasField(field), field
    else:
        assert message.HasField(field) and getattr(message, field) == pytest.approx(expected), field


EVENTS = guide.EVENT_SOURCES


async def test_each_guide_event_arrives_typed_with_what_the_system_sent(service: Service) -> None:
    call = await service.subscribe()
    frames: dict[str, list[Any]] = {system: [] for system, _ in EVENTS}
    for _ in range(12):  # enough draws that omitted optional fields show up too
        for system, name in EVENTS:
            frame = service.sandbox.emit(system, name)
            assert frame is not None
            frames[system].append(frame)

    events = await take(call, sum(map(len, frames.values())))

    for system, sent in frames.items():  # in order within a system; systems interleave
        received = [event for event in events if event.source == Upstream(system).proto]
        for frame, event in zip(sent, received, strict=True):
            assert event.origin == event_pb2.EVENT_ORIGIN_LIVE
            check_event(frame.event, frame.data, getattr(event, frame.event))
    frames_sent = [frame for sent in frames.values() for frame in sent]
    omitted = sum(len(frame.data) < len(full_fields(frame.event)) or omitted_nested(frame) for frame in frames_sent)
    assert omitted > 0, "the strict sandbox left no optional field out; the test proves less than it says"
    call.cancel()


def omitted_nested(frame: Any) -> bool:
    data = frame.data
    return ("loan" in data and "ltv" not in data["loan"]) or ("terms" in data and "origination_fee" not in data["terms"])


def full_fields(name: str) -> set[str]:
    return {
        "zone_classification_updated": {"property_id", "old_zone", "new_zone", "reason"},
        "market_risk_updated": {"region_id", "old_risk_level", "new_risk_level", "risk_score", "appreciation_forecast"},
        "portfolio_updated": {"portfolio_id", "update_type", "loan"},
        "metrics_updated": {"portfolio_id", "metrics"},
        "loan_application_submitted": {"loan_id", "property_value", "requested_loan_amount", "property_zone"},
        "loan_approved": {"loan_id", "approved_loan_amount", "approved_ltv", "terms"},
    }[name]


def check_event(name: str, data: dict[str, Any], typed: Any) -> None:
    if name == "zone_classification_updated":
        assert typed.property_id == data["property_id"] and typed.new_zone == ZONES[data["new_zone"]]
        assert typed.old_zone == ZONES.get(data.get("old_zone"), zone_pb2.ZONE_UNSPECIFIED)
        assert typed.reason == data.get("reason", "")
    elif name == "market_risk_updated":
        assert typed.region_id == data["region_id"] and typed.new_risk_level == LEVELS[data["new_risk_level"]]
        assert typed.old_risk_level == LEVELS.get(data.get("old_risk_level"), market_pb2.RISK_LEVEL_UNSPECIFIED)
        present(typed, "risk_score", data.get("risk_score"))
        present(typed, "appreciation_forecast", data.get("appreciation_forecast"))
    elif name == "portfolio_updated":
        loan = data["loan"]
        assert (typed.portfolio_id, typed.update_type) == (data["portfolio_id"], UPDATES[data["update_type"]])
        assert (typed.loan.id, typed.loan.zone) == (loan["id"], ZONES[loan["zone"]])
        for field in ("loan_amount", "property_value", "ltv"):
            present(typed.loan, field, loan.get(field))
    elif name == "metrics_updated":
        assert typed.portfolio_id == data["portfolio_id"]
        for field in ("irr", "equity_multiple", "roi"):
            present(typed.metrics, field, data["metrics"].get(field))
    elif name == "loan_application_submitted":
        assert (typed.loan_id, typed.property_zone) == (data["loan_id"], ZONES[data["property_zone"]])
        present(typed, "property_value", data["property_value"])
        present(typed, "requested_loan_amount", data["requested_loan_amount"])
    else:
        terms = data["terms"]
        assert typed.loan_id == data["loan_id"]
        present(typed, "approved_loan_amount", data["approved_loan_amount"])
        present(typed, "approved_ltv", data.get("approved_ltv"))
        present(typed.terms, "interest_rate", terms["interest_rate"])
        present(typed.terms, "term_years", terms["term"])
        present(typed.terms, "origination_fee", terms.get("origination_fee"))


def served(sandbox: Sandbox, kind: str, item_id: str, full: dict[str, Any]) -> dict[str, Any]:
    """What the strict sandbox serves for an item: ``full`` without the optional fields it lacks."""
    return sandbox.state.omissions.item(kind, item_id, full)


async def test_the_five_reads_carry_the_worlds_values_and_leave_out_what_the_system_did(service: Service) -> None:
    sandbox, world = service.sandbox, service.sandbox.world
    portfolio = world.portfolio
    loans = list(portfolio.loans.values())

    zones = await service.integrations.GetZoneClassifications(
        pb.GetZoneClassificationsRequest(property_ids=[loan.property.id for loan in loans[:100]])
    )
    risks = await service.integrations.GetMarketRisk(pb.GetMarketRiskRequest(region_ids=list(world.regions)))
    composition = (await service.integrations.GetPortfolioComposition(pb.GetPortfolioCompositionRequest(portfolio_id=portfolio.id))).composition
    metrics = await service.integrations.GetPortfolioMetrics(pb.GetPortfolioMetricsRequest(portfolio_id=portfolio.id))
    application = world.loans["loan_401"]
    parameters = (await service.integrations.GetLoanParameters(pb.GetLoanParametersRequest(loan_id="loan_401"))).loan_application

    assert [(item.property_id, item.zone) for item in zones.classifications] == [
        (loan.property.id, ZONES[loan.property.zone.value]) for loan in loans[:100]
    ]
    for risk in risks.market_risks:
        region = world.regions[risk.region_id]
        sent = served(sandbox, "market_risk", region.id, {"appreciation_forecast": region.appreciation_forecast})
        assert (risk.risk_level, risk.risk_score) == (LEVELS[region.risk_level.value], region.risk_score)
        present(risk, "appreciation_forecast", sent.get("appreciation_forecast"))
    assert len(risks.market_risks) == len(world.regions)

    assert [loan.id for loan in composition.loans] == [loan.id for loan in loans]
    for typed, loan in zip(composition.loans, loans, strict=True):
        sent = served(sandbox, "composition_loan", loan.id, {"ltv": loan.ltv, "appreciation_rate": loan.property.appreciation_rate})
        assert (typed.loan_amount, typed.property_value, typed.zone) == (loan.amount, loan.property.value, ZONES[loan.property.zone.value])
        assert (typed.origination_year, typed.exit_year) == (loan.origination_year, loan.exit_year)
        present(typed, "ltv", sent.get("ltv"))
        present(typed, "appreciation_rate", sent.get("appreciation_rate"))
        assert not typed.HasField("region") and not typed.HasField("property_id")  # extensions are off
    assert composition.metrics.total_loan_amount == sum(loan.amount for loan in loans)

    sent = served(sandbox, "performance", portfolio.id, {"historical_performance": 1, "metrics": dict(portfolio.metrics)})
    for name, value in portfolio.metrics.items():
        present(metrics.metrics, name, sent["metrics"].get(name))
    expected_history = portfolio.historical_performance if "historical_performance" in sent else []
    assert [(p.date.year, p.date.month, p.nav) for p in metrics.historical_performance] == [
        (int(period["date"][:4]), int(period["date"][5:7]), period["nav"]) for period in expected_history
    ]

    sent = served(sandbox, "loan_parameters", "loan_401", {
        "requested_ltv": application.requested_ltv,
        "borrower_credit_score": application.borrower_credit_score,
        "property_type": application.property.property_type,
    })  # fmt: skip
    assert (parameters.property_value, parameters.requested_loan_amount) == (application.property.value, application.requested_amount)
    assert (parameters.property_zone, parameters.property_region) == (ZONES[application.property.zone.value], application.property.region_id)
    present(parameters, "requested_ltv", sent.get("requested_ltv"))
    present(parameters, "borrower_credit_score", sent.get("borrower_credit_score"))
    assert parameters.property_type == PROPERTY_TYPES.get(sent.get("property_type"), loan_pb2.PROPERTY_TYPE_UNSPECIFIED)
