"""Underwriting System JSON <-> our messages. Pure functions; no I/O.

Property types: the guide shows ``single_family``; ``townhouse``, ``apartment`` and ``multi_family``
(also ``duplex``, which the proto files under multi-family) have their own values, anything else is
``PROPERTY_TYPE_OTHER``.

Required: loan ids and the property zone. Everything else may be left out and is then unset; the loan
parameters' ``property_value`` and ``requested_loan_amount``, which have no presence, are then 0, and
``property_region`` empty.
"""

from __future__ import annotations

from typing import Any

from adapters.json_reader import JsonObject, PayloadError, json_type
from adapters.vocabulary import metrics_to_json, zone_from_json
from equihome.events.v1 import event_pb2
from equihome.impact.v1 import impact_analysis_pb2
from equihome.type.v1 import loan_pb2

PROPERTY_TYPES: dict[str, loan_pb2.PropertyType.ValueType] = {
    "single_family": loan_pb2.PROPERTY_TYPE_SINGLE_FAMILY,
    "townhouse": loan_pb2.PROPERTY_TYPE_TOWNHOUSE,
    "apartment": loan_pb2.PROPERTY_TYPE_APARTMENT,
    "multi_family": loan_pb2.PROPERTY_TYPE_MULTI_FAMILY,
    "duplex": loan_pb2.PROPERTY_TYPE_MULTI_FAMILY,
}


def property_type_from_json(value: Any, field: str) -> loan_pb2.PropertyType.ValueType:
    if not isinstance(value, str):
        raise PayloadError(field, f"expected a property type string, got {json_type(value)}")
    return PROPERTY_TYPES.get(value, loan_pb2.PROPERTY_TYPE_OTHER)


def loan_parameters_from_json(body: Any) -> loan_pb2.LoanApplication:
    """``GET /api/underwriting/loans/{loan_id}/parameters``."""
    document = JsonObject(body)
    return loan_pb2.LoanApplication(
        loan_id=document.identifier("loan_id"),
        property_value=document.optional_number("property_value"),
        requested_loan_amount=document.optional_number("requested_loan_amount"),
        property_zone=document.parsed("property_zone", zone_from_json),
        property_region=document.optional_identifier("property_region"),
        requested_ltv=document.optional_number("requested_ltv"),
        borrower_credit_score=document.optional_integer("borrower_credit_score"),
        property_type=document.optional_parsed("property_type", property_type_from_json),
    )


def portfolio_impact_to_json(analysis: impact_analysis_pb2.ImpactAnalysis) -> dict[str, Any]:
    """The body of ``POST /api/underwriting/loans/{loan_id}/portfolio-impact`` (loan id in the path)."""
    for name in ("analysis_id", "loan_id", "portfolio_id"):
        if not getattr(analysis, name):
            raise PayloadError(f"analysis.{name}", "must not be empty")
    risk = analysis.risk_impact
    recommendation = analysis.recommendation
    return {
        "analysis_id": analysis.analysis_id,
        "portfolio_id": analysis.portfolio_id,
        "impact": {
            "portfolio_metrics_before": metrics_to_json(analysis.portfolio_metrics_before),
            "portfolio_metrics_after": metrics_to_json(analysis.portfolio_metrics_after),
            "risk_impact": {
                "var_change": risk.var_change,
                "concentration_risk_change": risk.concentration_risk_change,
                "diversification_benefit": risk.diversification_benefit,
            },
            "recommendation": {
                "approve": recommendation.approve,
                "recommended_loan_amount": recommendation.recommended_loan_amount,
                "recommended_ltv": recommendation.recommended_ltv,
                "confidence_score": recommendation.confidence_score,
            },
        },
    }


def loan_application_submitted_from_json(data: JsonObject) -> event_pb2.LoanApplicationSubmitted:
    return event_pb2.LoanApplicationSubmitted(
        loan_id=data.identifier("loan_id"),
        property_value=data.optional_number("property_value"),
        requested_loan_amount=data.optional_number("requested_loan_amount"),
        property_zone=data.parsed("property_zone", zone_from_json),
    )


def loan_approved_from_json(data: JsonObject) -> event_pb2.LoanApproved:
    approved = event_pb2.LoanApproved(
        loan_id=data.identifier("loan_id"),
        approved_loan_amount=data.optional_number("approved_loan_amount"),
        approved_ltv=data.optional_number("approved_ltv"),
    )
    terms = data.optional_object("terms")
    if terms is not None:
        approved.terms.CopyFrom(
            event_pb2.LoanApprovalTerms(
                interest_rate=terms.optional_number("interest_rate"),
                term_years=terms.optional_integer("term"),
                origination_fee=terms.optional_number("origination_fee"),
            )
        )
    return approved
