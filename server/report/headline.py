"""The headline of a simulation result: the few figures a fund manager reads first, each with its context.

Shared by the report (cards at the top) and the terminal (``equihome-sim remote``), so both say the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from equihome.simulation.v1 import simulation_pb2, simulation_result_pb2
from server.report.units import Unit, Units
from simulation.config import FundTerms

ENGINE_DEFAULT_CURRENCY = FundTerms.model_fields["currency"].default


@dataclass(frozen=True)
class Highlight:
    """A headline figure: label, value and a line of context."""

    label: str
    value: str
    note: str = ""


def headline(simulation: simulation_pb2.Simulation) -> tuple[Highlight, ...]:
    units = units_of(simulation)
    metrics, risk, config = simulation.result.metrics, simulation.result.risk, simulation.effective_config
    irr, moic = metrics.lp_net_irr, metrics.lp_moic
    hurdle, target = config.waterfall.hurdle_rate, config.reporting.target_irr
    percent, multiple, money = Unit.PERCENT, Unit.MULTIPLE, Unit.MONEY
    return (
        Highlight(
            "LP net IRR (mean, 95% CI)",
            units.estimate(irr.mean, irr.ci95_half_width, percent),
            f"median {quantile(units, irr, 50, percent)}, "
            f"P5–P95 {quantile(units, irr, 5, percent)} to {quantile(units, irr, 95, percent)}",
        ),
        Highlight(
            "LP MOIC (mean, 95% CI)",
            units.estimate(moic.mean, moic.ci95_half_width, multiple),
            f"median {quantile(units, moic, 50, multiple)}, P5 {quantile(units, moic, 5, multiple)}",
        ),
        Highlight(
            f"P(IRR ≥ {units.format(hurdle, percent)} hurdle)",
            units.format(risk.prob_hurdle, percent),
            f"P(IRR ≥ {units.format(target, percent)} target) {units.format(risk.prob_target_irr, percent)}",
        ),
        Highlight(
            "IRR VaR 95%",
            units.format(risk.irr_var_95, percent),
            f"CVaR 95% {units.format(risk.irr_cvar_95, percent)}",
        ),
        Highlight(
            "GP carried interest (mean)",
            units.format(metrics.gp_carry.mean, money),
            f"GP total income {units.format(metrics.gp_total_income.mean, money)}",
        ),
    )


def units_of(simulation: simulation_pb2.Simulation) -> Units:
    """The units of a run's figures: its currency, from the result or else the config (runs stored before
    results named it were in the engine's default currency)."""
    currency = simulation.result.metadata.currency or simulation.effective_config.fund.currency
    return Units(currency or ENGINE_DEFAULT_CURRENCY)


def quantile(
    units: Units, summary: simulation_result_pb2.MetricSummary, percentile: float, unit: Unit
) -> str:
    """The summary's value at ``percentile``, formatted; n/a when the summary has no such quantile."""
    for point in summary.quantiles:
        if point.percentile == percentile:
            return units.format(point.value, unit)
    return "n/a"
