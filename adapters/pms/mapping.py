"""Portfolio Management System JSON <-> our messages. Pure functions; no I/O.

A loan's ``property_id`` and ``region`` are not in the guide (the sandbox can add them); they are kept
when present, as ``PortfolioLoan`` documents. Update types this API does not know map to
``PORTFOLIO_UPDATE_TYPE_UNSPECIFIED``, as the proto documents.

Required: ids (portfolio, loan), a loan's zone, the ``loans`` array and a history period's ``date``.
Everything else may be left out and is then unset (``metrics`` objects, ``historical_performance``: empty).
"""

from __future__ import annotations

import datetime
from typing import Any

from adapters.json_reader import JsonObject, PayloadError, json_type
from adapters.vocabulary import metrics_from_json, metrics_to_json, zone_from_json, zone_to_json
from equihome.events.v1 import event_pb2
from equihome.integration.v1 import integration_pb2, integration_service_pb2
from equihome.optimization.v1 import allocation_pb2
from equihome.type.v1 import loan_pb2, metrics_pb2
from google.type import date_pb2

UPDATE_TYPES: dict[str, event_pb2.PortfolioUpdateType.ValueType] = {
    "loan_added": event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_ADDED,
    "loan_removed": event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_REMOVED,
    "loan_updated": event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_UPDATED,
    "loan_exited": event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_EXITED,
}

ACTION_TYPES: dict[allocation_pb2.ActionType.ValueType, str] = {
    allocation_pb2.ACTION_TYPE_INCREASE_ALLOCATION: "increase_allocation",
    allocation_pb2.ACTION_TYPE_DECREASE_ALLOCATION: "decrease_allocation",
}


LOAN_NUMBERS = ("loan_amount", "property_value", "ltv", "appreciation_rate", "origination_year", "exit_year")
COMPOSITION_METRICS = tuple(field.name for field in integration_pb2.CompositionMetrics.DESCRIPTOR.fields)
PERIOD_NUMBERS = ("nav", "distributions", "contributions")


def loan_from_json(loan: JsonObject) -> loan_pb2.PortfolioLoan:
    """A composition loan or the ``loan`` of ``portfolio_updated`` (which has fewer fields)."""
    return loan_pb2.PortfolioLoan(
        id=loan.identifier("id"),
        zone=loan.parsed("zone", zone_from_json),
        region=loan.optional_identifier("region"),
        property_id=loan.optional_identifier("property_id"),
        **{name: loan.optional_number(name) for name in LOAN_NUMBERS},
    )


def composition_from_json(body: Any) -> integration_pb2.PortfolioComposition:
    """``GET /api/pms/portfolios/{id}/composition``."""
    document = JsonObject(body)
    composition = integration_pb2.PortfolioComposition(
        portfolio_id=document.identifier("portfolio_id"),
        loans=[loan_from_json(JsonObject(item, path)) for item, path in document.array("loans")],
    )
    metrics = document.optional_object("metrics")
    if metrics is not None:
        composition.metrics.CopyFrom(
            integration_pb2.CompositionMetrics(**{name: metrics.optional_number(name) for name in COMPOSITION_METRICS})
        )
    return composition


def date_from_json(value: Any, field: str) -> date_pb2.Date:
    if not isinstance(value, str):
        raise PayloadError(field, f"expected an ISO date string, got {json_type(value)}")
    try:
        day = datetime.date.fromisoformat(value)
    except ValueError:
        raise PayloadError(field, f"{value!r} is not an ISO date (yyyy-mm-dd)") from None
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def performance_period_from_json(period: JsonObject) -> integration_pb2.PerformancePeriod:
    return integration_pb2.PerformancePeriod(
        date=period.parsed("date", date_from_json),
        **{name: period.optional_number(name) for name in PERIOD_NUMBERS},
    )


def performance_from_json(body: Any) -> integration_service_pb2.GetPortfolioMetricsResponse:
    """``GET /api/pms/portfolios/{id}/metrics``, as the read-through's response without freshness."""
    document = JsonObject(body)
    history = [
        performance_period_from_json(JsonObject(item, path))
        for item, path in document.optional_array("historical_performance")
    ]
    history.sort(key=lambda period: (period.date.year, period.date.month, period.date.day))
    return integration_service_pb2.GetPortfolioMetricsResponse(
        portfolio_id=document.identifier("portfolio_id"),
        metrics=optional_metrics(document),
        historical_performance=history,
    )


def optional_metrics(document: JsonObject) -> metrics_pb2.PortfolioMetrics | None:
    """The ``metrics`` member; None (the field stays unset) when it was left out."""
    metrics = document.optional_object("metrics")
    return None if metrics is None else metrics_from_json(metrics)


def recommendations_to_json(
    optimization_id: str, recommendation: allocation_pb2.AllocationRecommendation
) -> dict[str, Any]:
    """The body of ``POST /api/pms/portfolios/{portfolio_id}/recommendations``.

    ``expected_metrics`` carries every metric that is set (the guide shows four; PMS gets the rest too).
    """
    if not optimization_id:
        raise PayloadError("optimization_id", "must not be empty")
    if not recommendation.HasField("target_allocation"):
        raise PayloadError("recommendation.target_allocation", "missing")
    target = recommendation.target_allocation
    actions = []
    for index, action in enumerate(recommendation.actions):
        field = f"recommendation.actions[{index}]"
        if action.action_type not in ACTION_TYPES:
            raise PayloadError(f"{field}.action_type", "must be INCREASE_ALLOCATION or DECREASE_ALLOCATION")
        actions.append(
            {
                "action_type": ACTION_TYPES[action.action_type],
                "zone": zone_to_json(action.zone, f"{field}.zone"),
                "amount": action.amount,
            }
        )
    return {
        "optimization_id": optimization_id,
        "recommendations": {
            "target_allocation": {"green": target.green, "orange": target.orange, "red": target.red},
            "expected_metrics": metrics_to_json(recommendation.expected_metrics),
            "actions": actions,
        },
    }


def update_type_from_json(value: Any, field: str) -> event_pb2.PortfolioUpdateType.ValueType:
    if not isinstance(value, str):
        raise PayloadError(field, f"expected an update type string, got {json_type(value)}")
    return UPDATE_TYPES.get(value, event_pb2.PORTFOLIO_UPDATE_TYPE_UNSPECIFIED)


def portfolio_updated_from_json(data: JsonObject) -> event_pb2.PortfolioUpdated:
    return event_pb2.PortfolioUpdated(
        portfolio_id=data.identifier("portfolio_id"),
        update_type=data.optional_parsed("update_type", update_type_from_json),
        loan=loan_from_json(data.object("loan")),
    )


def metrics_updated_from_json(data: JsonObject) -> event_pb2.MetricsUpdated:
    return event_pb2.MetricsUpdated(portfolio_id=data.identifier("portfolio_id"), metrics=optional_metrics(data))
