"""The report of a portfolio impact analysis (an ``ImpactAnalysis``, as AnalyzeLoanImpact returns it).

Every figure is read from the analysis; nothing is recomputed. The page shows the decision, the fund before and
after the loan with each paired delta and its 95 % interval, the change of the rate metrics as a chart with
error bars, every rule checked (binding ones marked) and the risk impact.
"""

from __future__ import annotations

import plotly.graph_objects as go

from equihome.impact.v1 import impact_analysis_pb2 as pb
from equihome.type.v1 import guardrail_pb2, zone_pb2
from server.report.charts import BLUE
from server.report.headline import Highlight
from server.report.page import Chart, Report, Section, Table
from server.report.units import Unit, Units

Analysis = pb.ImpactAnalysis
BASIS_POINTS = 1e4
# delta field -> (label, unit)
DELTAS = {
    "lp_net_irr": ("Mean LP net IRR", Unit.PERCENT),
    "fund_irr": ("Mean fund IRR", Unit.PERCENT),
    "lp_irr_p5": ("LP net IRR, 5th percentile", Unit.PERCENT),
    "lp_moic": ("Mean LP MOIC", Unit.MULTIPLE),
    "lp_roi": ("Mean LP ROI", Unit.PERCENT),
    "sharpe_ratio": ("Sharpe ratio", Unit.RATIO),
    "sortino_ratio": ("Sortino ratio", Unit.RATIO),
    "volatility": ("Volatility of LP net IRR", Unit.PERCENT),
    "prob_hurdle": ("Probability of clearing the hurdle", Unit.PERCENT),
    "capital_var_95": ("Capital VaR 95 %", Unit.PERCENT),
    "capital_var_99": ("Capital VaR 99 %", Unit.PERCENT),
    "capital_cvar_95": ("Capital CVaR 95 %", Unit.PERCENT),
    "capital_cvar_99": ("Capital CVaR 99 %", Unit.PERCENT),
    "gp_carry": ("Mean GP carry", Unit.MONEY),
}
CHARTED = ("lp_net_irr", "fund_irr", "lp_irr_p5", "volatility")  # rates: deltas in basis points
# risk_impact field -> (label, unit)
RISK = {
    "var_change": ("Change of capital VaR 95 %", Unit.PERCENT),
    "cvar_change": ("Change of capital CVaR 99 %", Unit.PERCENT),
    "concentration_risk_change": ("Change of the concentration score", Unit.RATIO),
    "diversification_benefit": ("Diversification benefit", Unit.RATIO),
    "zone_hhi_before": ("Zone HHI before", Unit.RATIO),
    "zone_hhi_after": ("Zone HHI after", Unit.RATIO),
    "region_hhi_before": ("Region HHI before", Unit.RATIO),
    "region_hhi_after": ("Region HHI after", Unit.RATIO),
    "loan_hhi_before": ("Loan HHI before", Unit.RATIO),
    "loan_hhi_after": ("Loan HHI after", Unit.RATIO),
    "top5_share_before": ("Top-5 loan share before", Unit.PERCENT),
    "top5_share_after": ("Top-5 loan share after", Unit.PERCENT),
    "top10_share_before": ("Top-10 loan share before", Unit.PERCENT),
    "top10_share_after": ("Top-10 loan share after", Unit.PERCENT),
    "zone_share_after": ("Share of the loan's zone after", Unit.PERCENT),
    "region_share_after": ("Share of the loan's region after", Unit.PERCENT),
    "loan_share": ("Share of the loan", Unit.PERCENT),
    "stress_ltv": ("Stress LTV", Unit.PERCENT),
    "probability_of_default": ("Probability of default", Unit.PERCENT),
    "expected_loss": ("Expected loss (of the amount)", Unit.PERCENT),
    "loan_irr": ("Expected IRR of the loan", Unit.PERCENT),
    "tail_loss_contribution": ("Tail loss contribution (Euler, of the amount)", Unit.PERCENT),
}
DECISIONS = {
    pb.DECISION_APPROVE: "Approve",
    pb.DECISION_COUNTER_OFFER: "Counter-offer",
    pb.DECISION_REJECT: "Reject",
}
SEVERITIES = {
    guardrail_pb2.SEVERITY_FAIL: "FAIL",
    guardrail_pb2.SEVERITY_WARN: "WARN",
    guardrail_pb2.SEVERITY_INFO: "pass",
}
# rule -> unit of its observed value and limit
RULE_UNITS = {
    "TICKET_SIZE_MAX": Unit.MONEY,
    "CREDIT_SCORE_MIN": Unit.COUNT,
    "ZONE_ELIGIBILITY": Unit.COUNT,
    "SHARPE_CHANGE_MIN": Unit.RATIO,
}


def impact_report(analysis: Analysis) -> Report:
    units = Units(analysis.currency or "AUD")
    rec = analysis.recommendation
    method = "fast path" if analysis.method != pb.IMPACT_METHOD_EXACT else "exact re-simulation"
    return Report(
        title=f"Portfolio impact of loan {analysis.loan_id}",
        subtitle=f"{analysis.paths:,} paired paths ({method}), money in {units.currency}, rates annual",
        facts=(
            ("Analysis", analysis.analysis_id),
            ("Portfolio", analysis.portfolio_id or "the config sent"),
            ("Zone", zone_pb2.Zone.Name(analysis.property_zone).removeprefix("ZONE_").lower()),
            ("Seed", str(analysis.seed)),
            ("Engine", analysis.engine_version),
        ),
        highlights=(
            Highlight(
                "Decision",
                DECISIONS.get(rec.decision, "n/a"),
                f"confidence {units.format(rec.confidence_score, Unit.PERCENT)}",
            ),
            Highlight(
                "Recommended amount",
                units.format(rec.recommended_loan_amount, Unit.MONEY),
                f"LTV {units.format(rec.recommended_ltv, Unit.PERCENT)}",
            ),
            Highlight(
                "Change of mean LP net IRR",
                _basis_points(analysis.deltas.lp_net_irr.delta),
                "95 % interval " + _interval_bp(analysis.deltas.lp_net_irr),
            ),
        ),
        sections=(_before_after(analysis, units), _rules(analysis, units), _risk(analysis, units)),
        notes=_notes(analysis),
    )


def _basis_points(value: float) -> str:
    return f"{value * BASIS_POINTS:+,.2f} bp"


def _interval_bp(delta: pb.MetricDelta) -> str:
    return f"[{delta.ci95_lower * BASIS_POINTS:+,.2f}, {delta.ci95_upper * BASIS_POINTS:+,.2f}] bp"


def _delta(units: Units, value: float, unit: Unit) -> str:
    text = units.format(value, unit)
    return text if text.startswith("-") or text == "n/a" else f"+{text}"


def _before_after(analysis: Analysis, units: Units) -> Section:
    rows = []
    for name, (label, unit) in DELTAS.items():
        d = getattr(analysis.deltas, name)
        rows.append(
            (
                label,
                units.format(d.before, unit),
                units.format(d.after, unit),
                _delta(units, d.delta, unit),
                f"[{_delta(units, d.ci95_lower, unit)}, {_delta(units, d.ci95_upper, unit)}]",
            )
        )
    table = Table(
        ("Metric", "Before", "After", "Change", "95 % interval of the change"),
        tuple(rows),
        caption="Paired differences on common random numbers: the same market and loan draws in both.",
    )
    deltas = [getattr(analysis.deltas, name) for name in CHARTED]
    figure = go.Figure(
        go.Scatter(
            x=[d.delta * BASIS_POINTS for d in deltas],
            y=[DELTAS[name][0] for name in CHARTED],
            mode="markers",
            marker={"color": BLUE, "size": 10},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [(d.ci95_upper - d.delta) * BASIS_POINTS for d in deltas],
                "arrayminus": [(d.delta - d.ci95_lower) * BASIS_POINTS for d in deltas],
            },
        )
    )
    figure.add_vline(x=0.0, line_dash="dot")
    figure.update_layout(height=320, xaxis_title="change, basis points", margin={"l": 220})
    chart = Chart("impact-deltas", figure, caption="Change of the rate metrics with their 95 % intervals.")
    return Section(
        "before-after",
        "The fund before and after the loan",
        "Each figure of the fund without the loan, with it, and the change.",
        (table, chart),
    )


def _rules(analysis: Analysis, units: Units) -> Section:
    rows = []
    for rule in analysis.recommendation.reasons:
        name = guardrail_pb2.GuardrailRule.Name(rule.rule).removeprefix("GUARDRAIL_RULE_")
        unit = RULE_UNITS.get(name, Unit.PERCENT)
        where = zone_pb2.Zone.Name(rule.zone).removeprefix("ZONE_").lower() if rule.zone else rule.region
        rows.append(
            (
                name,
                SEVERITIES.get(rule.severity, "n/a"),
                "yes" if rule.binding else "",
                units.format(rule.observed, unit),
                units.format(rule.limit, unit),
                where,
                rule.message,
            )
        )
    table = Table(
        ("Rule", "Outcome", "Binding", "Observed", "Limit", "Zone / region", "Note"),
        tuple(rows),
        caption="Failures first; binding rules decided the outcome or bound the counter-offer.",
        numeric=False,
    )
    return Section(
        "rules", "Rules checked", "Loan checks and fund guardrails after adding the loan.", (table,)
    )


def _risk(analysis: Analysis, units: Units) -> Section:
    rows = tuple(
        (label, units.format(getattr(analysis.risk_impact, name), unit))
        for name, (label, unit) in RISK.items()
    )
    return Section(
        "risk",
        "Risk impact",
        "Concentration, diversification and the loan's own credit risk.",
        (Table(("Measure", "Value"), rows),),
    )


def _notes(analysis: Analysis) -> tuple[str, ...]:
    if analysis.fast_path_exact or analysis.method == pb.IMPACT_METHOD_EXACT:
        return ()
    note = (
        "The fund recycles proceeds into loans that re-balance around the book, so the fast path "
        "approximates the exact re-simulation (ask compare_methods for the gap)."
    )
    return (note,)
