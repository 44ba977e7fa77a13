"""Labels, units and roles of the figures of the contract's simulation result, in the order the report
lists them. A field the catalogues do not know yet is still listed (``catalogue``), under its own name, so
a new figure is never silently dropped; a test requires an entry for every field all the same.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from server.report.charts import BLUE
from server.report.units import Unit

# MetricSummaries field → (label, unit), in the order the tables list them (LP outcome first).
METRICS: dict[str, tuple[str, Unit]] = {
    "lp_net_irr": ("LP net IRR", Unit.PERCENT),
    "lp_moic": ("LP MOIC (TVPI at end)", Unit.MULTIPLE),
    "lp_dpi": ("LP DPI at end", Unit.MULTIPLE),
    "lp_roi": ("LP ROI", Unit.PERCENT),
    "payback_years": ("LP payback", Unit.YEARS),
    "lp_npv": ("LP NPV", Unit.MONEY),
    "fund_irr": ("Fund IRR (before carry)", Unit.PERCENT),
    "fund_moic": ("Fund MOIC (before carry)", Unit.MULTIPLE),
    "gross_irr": ("Gross IRR (assets)", Unit.PERCENT),
    "gross_moic": ("Gross MOIC (assets)", Unit.MULTIPLE),
    "gp_irr": ("GP IRR", Unit.PERCENT),
    "gp_carry": ("GP carried interest", Unit.MONEY),
    "gp_total_income": ("GP total income", Unit.MONEY),
    "max_drawdown": ("Max drawdown of total value", Unit.PERCENT),
    "wal_years": ("Weighted average life of loans", Unit.YEARS),
    "default_rate": ("Default rate (share of loans)", Unit.PERCENT),
    "loss_rate": ("Loss rate (share of principal)", Unit.PERCENT),
    "recycling_ratio": ("Recycled capital / commitment", Unit.PERCENT),
}
# RiskMetrics field → (label, unit).
RISK: dict[str, tuple[str, Unit]] = {
    "volatility": ("Volatility of LP net IRR", Unit.PERCENT),
    "sharpe": ("Sharpe ratio", Unit.RATIO),
    "sortino": ("Sortino ratio", Unit.RATIO),
    "calmar": ("Calmar ratio", Unit.RATIO),
    "irr_var_95": ("IRR VaR 95% (P5 of LP net IRR)", Unit.PERCENT),
    "irr_cvar_95": ("IRR CVaR 95% (mean IRR of the worst 5%)", Unit.PERCENT),
    "irr_var_99": ("IRR VaR 99% (P1 of LP net IRR)", Unit.PERCENT),
    "irr_cvar_99": ("IRR CVaR 99% (mean IRR of the worst 1%)", Unit.PERCENT),
    "capital_var_95": ("Capital VaR 95% (loss, share of LP paid-in)", Unit.PERCENT),
    "capital_cvar_95": ("Capital CVaR 95% (mean loss of the worst 5%)", Unit.PERCENT),
    "capital_var_99": ("Capital VaR 99% (loss, share of LP paid-in)", Unit.PERCENT),
    "capital_cvar_99": ("Capital CVaR 99% (mean loss of the worst 1%)", Unit.PERCENT),
    "prob_hurdle": ("P(LP net IRR ≥ hurdle)", Unit.PERCENT),
    "prob_target_irr": ("P(LP net IRR ≥ target IRR)", Unit.PERCENT),
    "prob_target_multiple": ("P(LP MOIC ≥ target multiple)", Unit.PERCENT),
    "prob_loss": ("P(LP MOIC < 1)", Unit.PERCENT),
}
RISK_IN_RESULT = "standard_errors"  # RiskMetrics' own field holding the standard error of each figure
NOT_FIGURES = ("year", RISK_IN_RESULT)  # fields of the catalogued messages that are not figures
# CashFlowYear field → (label, role): a source (+) or use (−) of fund cash in the flows chart (they close
# on the change of year-end cash), a part of the distributions, or a level at the year end. Every field
# but a deprecated one is a column of the yearly table.
SOURCE, USE, PART, LEVEL, DEPRECATED = "source", "use", "part", "level", "deprecated"
CASH_FLOWS: dict[str, tuple[str, str]] = {
    "contributions": ("Capital called", SOURCE),
    "exit_proceeds": ("Exit proceeds", SOURCE),
    "recoveries": ("Recoveries", SOURCE),
    "cash_interest": ("Interest on cash", SOURCE),
    "fee_income": ("Fee income", SOURCE),
    "initial_originations": ("Initial loans funded", USE),
    "recycled_originations": ("Recycled loans funded", USE),
    "management_fees": ("Management fees", USE),
    "expenses": ("Expenses", USE),
    "distributions": ("Distributions", USE),
    "distributions_lp": ("to LPs", PART),
    "distributions_gp_commitment": ("to the GP commitment", PART),
    "carried_interest": ("carried interest", PART),
    "cash_end": ("Cash at year end", LEVEL),
    "nav": ("NAV at year end", LEVEL),
    "originations": ("Loans funded (deprecated)", DEPRECATED),
}
FLOW_COLOURS = {
    "contributions": BLUE,
    "exit_proceeds": "#2e9e5b",
    "recoveries": "#86c79a",
    "cash_interest": "#5fa8d3",
    "fee_income": "#a3c4e0",
    "initial_originations": "#c8372d",
    "recycled_originations": "#e07a70",
    "management_fees": "#e8891c",
    "expenses": "#f2b36b",
    "distributions": "#8c5ab8",
}


def catalogue(
    message: Message, labels: dict[str, tuple[str, Any]], default: Any
) -> list[tuple[str, tuple[str, Any]]]:
    """(field, (label, kind)) for each figure of ``message``, in catalogue order, then the figures the
    catalogue does not know yet, under their own names and the ``default`` kind."""
    names = [field.name for field in message.DESCRIPTOR.fields if field.name not in NOT_FIGURES]
    known = [(name, labels[name]) for name in labels if name in names]
    return known + [(name, (name.replace("_", " "), default)) for name in names if name not in labels]
