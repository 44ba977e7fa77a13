"""AnalyzeLoanImpact at the edge: the request as the engine's loan, policy and applicant (every bound checked,
every violation named by its field), and the engine's ``ImpactResult`` as an ``ImpactAnalysis``."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from equihome.events.v1 import event_pb2
from equihome.impact.v1 import impact_analysis_pb2 as pb
from equihome.impact.v1 import impact_analysis_service_pb2 as service_pb2
from equihome.type.v1 import guardrail_pb2, metrics_pb2, zone_pb2
from server import request_fields
from server.errors import InvalidArgument
from server.mapping.live_book import UNASSIGNED_REGION
from server.mapping.result import seconds_to_duration
from simulation import ENGINE_VERSION
from simulation.config import ZONES, SimulationConfig
from simulation.impact import Applicant, CandidateLoan, ImpactResult, Policy

MIN_PATHS, MAX_PATHS, DEFAULT_PATHS = 100, 5_000, 500
MAX_MONEY = 1e10  # one property or loan, fund currency
LTV_TOLERANCE = 0.005  # the LTV sent may be rounded (the guide shows 0.5); amount / value is what counts
ZONE_CODES = {zone_pb2.ZONE_GREEN: 0, zone_pb2.ZONE_ORANGE: 1, zone_pb2.ZONE_RED: 2}
ZONE_ENUMS = {index: code for code, index in ZONE_CODES.items()}
DECISIONS = {
    "APPROVE": pb.DECISION_APPROVE,
    "COUNTER_OFFER": pb.DECISION_COUNTER_OFFER,
    "REJECT": pb.DECISION_REJECT,
}
SEVERITIES = {
    "FAIL": guardrail_pb2.SEVERITY_FAIL,
    "WARN": guardrail_pb2.SEVERITY_WARN,
    "INFO": guardrail_pb2.SEVERITY_INFO,
}
# policy field (the engine's name too) -> (low, high), bounds inclusive
POLICY_BOUNDS = {
    "max_lp_irr_decrease": (0.0, 1.0),
    "max_capital_cvar_99": (0.0, 1.0),
    "max_capital_var_99": (0.0, 1.0),
    "min_prob_hurdle": (0.0, 1.0),
    "max_ltv": (0.01, 0.99),
    "max_stress_ltv": (0.01, 10.0),
    "stress_price_decline": (0.0, 0.95),
    "max_region_share": (0.0, 1.0),
    "max_single_loan_share": (0.0, 1.0),
    "min_loan_irr_spread": (-0.5, 0.5),
    "max_expected_loss": (0.0, 1.0),
}
DELTA_NAMES = (
    "lp_net_irr",
    "lp_moic",
    "lp_roi",
    "sharpe_ratio",
    "sortino_ratio",
    "prob_hurdle",
    "capital_var_95",
    "capital_var_99",
    "capital_cvar_95",
    "capital_cvar_99",
    "lp_irr_p5",
    "gp_carry",
    "fund_irr",
    "volatility",
)
RISK_FIELDS = (
    "var_change",
    "cvar_change",
    "concentration_risk_change",
    "diversification_benefit",
    "zone_hhi_before",
    "zone_hhi_after",
    "region_hhi_before",
    "region_hhi_after",
    "zone_share_after",
    "region_share_after",
    "loan_share",
    "stress_ltv",
    "expected_loss",
    "loan_hhi_before",
    "loan_hhi_after",
    "top5_share_before",
    "top5_share_after",
    "top10_share_before",
    "top10_share_after",
    "probability_of_default",
    "loan_irr",
    "tail_loss_contribution",
)
METRIC_FIELDS = (
    "irr",
    "equity_multiple",
    "roi",
    "sharpe_ratio",
    "sortino_ratio",
    "var_95",
    "var_99",
    "cvar_95",
    "cvar_99",
    "volatility",
    "prob_hurdle",
)


@dataclass(frozen=True)
class ImpactRequest:
    """A checked request, in engine terms (plain data, picklable for the job)."""

    loan: CandidateLoan
    policy: Policy
    applicant: Applicant
    paths: int
    seed: int | None
    exact: bool
    compare: bool


def check_application(request: service_pb2.AnalyzeLoanImpactRequest) -> None:
    """Bounds that need no config; every violation named."""
    violations = list(_application_violations(request))
    if violations:
        raise InvalidArgument("The loan application is invalid.", violations, reason="FIELD_INVALID")


def _application_violations(request: service_pb2.AnalyzeLoanImpactRequest) -> Any:
    app = request.loan_application
    path = "loan_application"
    if not app.loan_id:
        yield f"{path}.loan_id", "required"
    value, amount = app.property_value, app.requested_loan_amount
    if not (math.isfinite(value) and 0.0 < value <= MAX_MONEY):
        yield f"{path}.property_value", f"must be a number in (0, {MAX_MONEY:g}]"
    elif not (math.isfinite(amount) and 0.0 < amount < value):
        yield f"{path}.requested_loan_amount", "must be a number in (0, property_value)"
    elif app.HasField("requested_ltv") and not abs(app.requested_ltv - amount / value) <= LTV_TOLERANCE:
        yield f"{path}.requested_ltv", "must equal requested_loan_amount / property_value within 0.005"
    if app.property_zone not in ZONE_CODES and not app.property_id:
        yield (
            f"{path}.property_zone",
            "required (green, orange or red) unless property_id names a TLS property",
        )
    if not app.property_region:
        yield f"{path}.property_region", "required"
    if request.HasField("paths") and not MIN_PATHS <= request.paths <= MAX_PATHS:
        yield "paths", f"must lie in [{MIN_PATHS}, {MAX_PATHS}]"
    if request.HasField("seed") and request.seed >= 2**63:
        yield "seed", "must be below 2^63"
    if request.HasField("interest_rate") and not 0.0 <= request.interest_rate <= 0.5:
        yield "interest_rate", "must lie in [0, 0.5]"
    if request.HasField("appreciation_share") and not 0.0 <= request.appreciation_share <= 1.0:
        yield "appreciation_share", "must lie in [0, 1]"
    if request.HasField("origination_month") and request.origination_month < 0:
        yield "origination_month", "must be >= 0"
    if request.request_id and not request_fields.is_uuid(request.request_id):
        yield "request_id", "must be a UUID"
    if request.method not in (pb.IMPACT_METHOD_UNSPECIFIED, pb.IMPACT_METHOD_FAST, pb.IMPACT_METHOD_EXACT):
        yield "method", "unknown value"
    yield from _policy_violations(request.policy)



def _policy_violations(policy: pb.ImpactPolicy) -> Any:
    for name, (low, high) in POLICY_BOUNDS.items():
        if policy.HasField(name) and not low <= getattr(policy, name) <= high:
            yield f"policy.{name}", f"must lie in [{low:g}, {high:g}]"
    for zone in ZONES:
        if policy.ticket_limits.HasField(zone) and not 0.0 < getattr(policy.ticket_limits, zone) <= MAX_MONEY:
            yield f"policy.ticket_limits.{zone}", f"must lie in (0, {MAX_MONEY:g}]"
        if policy.zone_caps.HasField(zone) and not 0.0 <= getattr(policy.zone_caps, zone) <= 1.0:
            yield f"policy.zone_caps.{zone}", "must lie in [0, 1]"
    if policy.HasField("min_credit_score") and not 0 <= policy.min_credit_score <= 1000:
        yield "policy.min_credit_score", "must lie in [0, 1000]"


def policy_from_proto(message: pb.ImpactPolicy) -> Policy:
    defaults = Policy()
    values: dict[str, Any] = {
        name: getattr(message, name) for name in POLICY_BOUNDS if message.HasField(name)
    }
    if message.HasField("min_credit_score"):
        values["min_credit_score"] = message.min_credit_score
    if message.HasField("counter_offer"):
        values["counter_offer"] = message.counter_offer
    for group, engine_name in (("ticket_limits", "ticket_limits"), ("zone_caps", "zone_caps")):
        sent = getattr(message, group)
        values[engine_name] = tuple(
            getattr(sent, zone) if sent.HasField(zone) else default
            for zone, default in zip(ZONES, getattr(defaults, engine_name))
        )
    return Policy(**values)


def impact_request(
    request: service_pb2.AnalyzeLoanImpactRequest,
    config: SimulationConfig,
    zone: zone_pb2.Zone.ValueType,
    default_origination_month: int = 0,
) -> ImpactRequest:
    """The checked request against the fund's ``config``; ``zone`` as sent or looked up in TLS."""
    app = request.loan_application
    regions = [r.name for r in config.book.regions]
    region = app.property_region
    if region not in regions and UNASSIGNED_REGION in regions:
        region = UNASSIGNED_REGION  # a live book whose loans carry no region: the loan joins them
    violations = []
    if region not in regions:
        listed = ", ".join(regions[:10])
        violations.append(
            ("loan_application.property_region", f"must be a region of the fund's book: {listed}")
        )
    month = request.origination_month if request.HasField("origination_month") else default_origination_month
    if month >= config.term_months:
        violations.append(
            ("origination_month", f"must come before the fund end (month {config.term_months})")
        )
    if violations:
        raise InvalidArgument("The loan does not fit the fund.", violations, reason="FIELD_INVALID")
    loan = CandidateLoan(
        loan_id=app.loan_id,
        amount=app.requested_loan_amount,
        property_value=app.property_value,
        zone=ZONE_CODES[zone],
        region=regions.index(region),
        origination_month=month,
        interest_rate=request.interest_rate if request.HasField("interest_rate") else None,
        appreciation_share=request.appreciation_share if request.HasField("appreciation_share") else None,
    )
    policy = policy_from_proto(request.policy)
    applicant = Applicant(
        zone_eligible=policy.zone_caps[loan.zone] > 0.0,
        credit_score=app.borrower_credit_score if app.HasField("borrower_credit_score") else None,
    )
    return ImpactRequest(
        loan=loan,
        policy=policy,
        applicant=applicant,
        paths=request.paths if request.HasField("paths") else DEFAULT_PATHS,
        seed=request.seed if request.HasField("seed") else None,
        exact=request.method == pb.IMPACT_METHOD_EXACT,
        compare=request.compare_methods,
    )


def new_analysis_id() -> str:
    return f"analysis_{uuid.uuid4().hex}"


def _number(value: float) -> float:
    """Proto doubles carry NaN, but a NaN in a payload helps nobody: an undefined figure is sent as 0."""
    return float(value) if math.isfinite(value) else 0.0


def analysis_to_proto(result: ImpactResult, *, analysis_id: str, portfolio_id: str) -> pb.ImpactAnalysis:
    rec = result.recommendation
    analysis = pb.ImpactAnalysis(
        analysis_id=analysis_id,
        loan_id=result.loan.loan_id,
        portfolio_id=portfolio_id,
        property_zone=ZONE_ENUMS[result.loan.zone],
        portfolio_metrics_before=_metrics(result.before),
        portfolio_metrics_after=_metrics(result.after),
        risk_impact=pb.RiskImpact(**{name: _number(result.risk[name]) for name in RISK_FIELDS}),
        recommendation=pb.Recommendation(
            decision=DECISIONS[rec.decision],
            approve=rec.decision != "REJECT",
            recommended_loan_amount=rec.amount,
            recommended_ltv=rec.ltv,
            confidence_score=rec.confidence,
            reasons=[
                guardrail_pb2.RuleEvaluation(
                    rule=guardrail_pb2.GuardrailRule.Value(f"GUARDRAIL_RULE_{r.rule}"),
                    severity=SEVERITIES[r.severity],
                    passed=r.passed,
                    binding=r.binding,
                    observed=_number(r.observed),
                    limit=_number(r.limit),
                    zone=zone_pb2.Zone.Value(f"ZONE_{r.zone.upper()}")
                    if r.zone
                    else zone_pb2.ZONE_UNSPECIFIED,
                    region=r.region,
                    message=r.message,
                )
                for r in rec.rules
            ],
        ),
        paths=result.paths,
        seed=result.seed,
        engine_version=ENGINE_VERSION,
        elapsed=seconds_to_duration(result.elapsed_seconds),
        method=pb.IMPACT_METHOD_EXACT if result.method == "exact" else pb.IMPACT_METHOD_FAST,
        fast_path_exact=result.fast_path_exact,
        currency=result.currency,
    )
    for name in DELTA_NAMES:
        d = result.deltas[name]
        getattr(analysis.deltas, name).CopyFrom(
            pb.MetricDelta(
                before=_number(d.before),
                after=_number(d.after),
                delta=_number(d.delta),
                standard_error=_number(d.standard_error),
                ci95_lower=_number(d.ci95_lower),
                ci95_upper=_number(d.ci95_upper),
            )
        )
    if result.gap is not None:
        for name in DELTA_NAMES:
            getattr(analysis.fast_path_gap, name).delta = _number(result.gap[name])
    return analysis


def _metrics(values: dict[str, float]) -> metrics_pb2.PortfolioMetrics:
    """Figures that are undefined (e.g. a Sharpe ratio without volatility) are left unset."""
    return metrics_pb2.PortfolioMetrics(
        **{name: float(values[name]) for name in METRIC_FIELDS if math.isfinite(values[name])}
    )


def completed_event(analysis: pb.ImpactAnalysis, owner: str) -> event_pb2.ImpactAnalysisCompleted:
    """The event of ``analysis``, for ``owner`` alone ("" = every subscriber)."""
    return event_pb2.ImpactAnalysisCompleted(
        owner=owner,
        analysis_id=analysis.analysis_id,
        loan_id=analysis.loan_id,
        portfolio_id=analysis.portfolio_id,
        decision=analysis.recommendation.decision,
        recommended_loan_amount=analysis.recommendation.recommended_loan_amount,
        confidence_score=analysis.recommendation.confidence_score,
        lp_net_irr_delta=analysis.deltas.lp_net_irr.delta,
    )
