"""``equihome-sim simulate CONFIG.json [--paths N] [--seed S] [--workers W] [--json OUT] [--explain]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, \
    TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from server.mapping.engine_json import engine_document
from simulation.config import ConfigError, load_config
from simulation.engine import Progress as RunProgress
from simulation.engine import run
from simulation.pathmetrics import CASHFLOW_LINES
from simulation.results import SimulationResult

PERCENT = {"gross_irr", "fund_irr", "lp_net_irr", "gp_irr", "lp_roi", "max_drawdown", "default_rate",
           "loss_rate", "recycling_ratio"}
MONEY = {"lp_npv", "gp_carry", "gp_total_income", "lp_contributions", "lp_distributions", "min_cash"}
COUNTS = {"loans_funded"}
BALANCES = {"cash_end", "nav"}  # year-end levels in the cash-flow table, not flows
CASHFLOW_LABELS = {
    "contributions": "calls", "exit_proceeds": "exits", "recoveries": "recoveries", "cash_interest": "interest",
    "fee_income": "fee income", "initial_originations": "initial loans", "recycled_originations": "recycled",
    "management_fees": "mgmt fees", "expenses": "expenses", "distributions": "distributed",
    "distributions_lp": "to LPs", "distributions_gp_commitment": "to GP cmt", "carried_interest": "carry",
    "cash_end": "cash end", "nav": "NAV",
}
YEARS = {"payback_years", "wal_years"}

LEGEND = {
    "gross_irr": "IRR of the loans alone: fundings vs exit proceeds and recoveries (+ fee income if the fund's)",
    "fund_irr": "IRR of the fund: capital called vs distributions, after fees and expenses, before carry",
    "lp_net_irr": "IRR of the LPs: their contributions vs their distributions after carry (the headline)",
    "gp_irr": "IRR of the GP's commitment plus carry",
    "gross_moic": "loan proceeds per dollar lent (each recycled dollar counts as lent again)",
    "fund_moic": "distributions per dollar of capital called",
    "lp_moic": "LP distributions per dollar the LPs paid in",
    "lp_roi": "LP MOIC − 1",
    "lp_dpi": "LP distributions / LP paid-in at fund end",
    "payback_years": "years until the LPs' cumulative net cash turns non-negative",
    "lp_npv": "NPV of the LP cash flows at reporting.discount_rate",
    "gp_carry": "carried interest paid to the GP",
    "gp_total_income": "carry + management fees + origination fees the GP keeps",
    "lp_contributions": "capital the LPs paid in",
    "lp_distributions": "cash the LPs received",
    "recycling_ratio": "principal lent again from exit proceeds / commitments",
    "min_cash": "lowest month-end fund cash (negative: an overdraft)",
    "max_drawdown": "largest fall of total value (NAV + distributions) from its peak",
    "wal_years": "weighted average life of the loans funded",
    "default_rate": "share of the loans funded that defaulted",
    "loss_rate": "credit losses / principal funded",
    "loans_funded": "loans funded over the life, recycled ones included",
    "volatility": "standard deviation of the LP net IRR across paths",
    "Sharpe": "(mean LP IRR − risk-free rate) / volatility",
    "Sortino": "(mean LP IRR − MAR) / downside deviation below the MAR",
    "capital VaR": "share of LP capital lost on the worst paths' boundary (≥ 0; 0 = capital returned)",
    "capital CVaR": "mean share of LP capital lost on the worst (1 − confidence) of paths",
    "IRR VaR": "LP net IRR at the (1 − confidence) quantile: a level, not a loss",
    "± s.e.": "standard error of the figure (bootstrap of the paths)",
}


class PathRate(ProgressColumn):
    """Paths per second, once the first chunk is in."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} paths/s" if task.speed else "… paths/s")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equihome-sim simulate", description=__doc__)
    parser.add_argument("config", type=Path, help="JSON config (see docs/model.md; {} is the default fund)")
    parser.add_argument("--paths", type=int, help="Monte Carlo paths (overrides monte_carlo.paths)")
    parser.add_argument("--seed", type=int, help="base seed (overrides monte_carlo.seed)")
    parser.add_argument("--workers", type=int, help="worker processes (overrides monte_carlo.workers)")
    parser.add_argument("--json", type=Path, dest="json_out",
                        help="write the full result and its effective config as JSON here (input of `report`)")
    parser.add_argument("--per-path", action="store_true", help="include per-path metrics in the JSON")
    parser.add_argument("--explain", action="store_true", help="print one line of legend per metric")
    return parser.parse_args(argv)


def load(args: argparse.Namespace) -> dict[str, Any]:
    data = json.loads(args.config.read_text())
    mc = data.setdefault("monte_carlo", {})
    for key in ("paths", "seed", "workers"):
        if getattr(args, key) is not None:
            mc[key] = getattr(args, key)
    return data


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    try:
        config = load_config(load(args))
    except (OSError, json.JSONDecodeError) as exc:
        console.print(f"[red]cannot read {args.config}: {exc}")
        return 2
    except ConfigError as exc:
        for field, message in exc.violations:
            console.print(f"[red]invalid config[/] {field}: {message}")
        return 2
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("paths"), PathRate(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("paths", total=None)

        def report(p: RunProgress) -> None:
            bar.update(task, completed=p.paths_done, total=p.paths_total)

        result = run(config, progress=report, keep_paths=args.per_path)
    out = Console(width=None if sys.stdout.isatty() else 200)
    out.print(summary_table(result), risk_table(result), cashflow_table(result))
    if args.explain:
        out.print(legend_table())
    if args.json_out:
        args.json_out.write_text(json.dumps(engine_document(result, config), indent=1))
        console.print(f"full result written to {args.json_out}")
    return 0


def _fmt(name: str, value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if name in PERCENT:
        return f"{value:.2%}"
    if name in MONEY:
        return f"{round(value / 1e6, 2) + 0.0:,.2f}M"
    if name in YEARS:
        return f"{value:.2f} y"
    return f"{value:.4f}"


def _fmt_count(value: float, *, mean: bool) -> str:
    return "n/a" if value != value else f"{value:,.1f}" if mean else f"{value:,.0f}"


def summary_table(result: SimulationResult) -> Table:
    info = result.info
    funded = result.metrics["loans_funded"].mean
    title = (f"{info.paths:,} paths · seed {info.seed} · engine {info.engine_version} · "
             f"{info.loans_in_book:,} loans in the book, {funded:,.0f} funded on average (recycled included) · "
             f"money in {info.currency} · {info.elapsed_seconds:.2f} s")
    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    for column in ("mean", "std", "P5", "P50", "P95", "NaN"):
        table.add_column(column, justify="right")
    for name, s in result.metrics.items():
        q = s.quantiles
        if name in COUNTS:
            cells = [_fmt_count(s.mean, mean=True), _fmt_count(s.std, mean=True),
                     *(_fmt_count(q[p], mean=False) for p in (5, 50, 95))]
        else:
            cells = [_fmt(name, v) for v in (s.mean, s.std, q[5], q[50], q[95])]
        label = f"{name} ({info.currency})" if name in MONEY else name
        table.add_row(label, *cells, str(s.nan_count))
    return table


def risk_table(result: SimulationResult) -> Table:
    risk, errors = result.risk, result.risk.standard_errors
    table = Table(title="risk across paths (LP net IRR and LP capital)")
    table.add_column("measure", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("± s.e.", justify="right")
    pct = "lp_net_irr"  # formatted as a percentage

    def row(label: str, kind: str, value: float, error: float) -> None:
        table.add_row(label, _fmt(kind, value), _fmt(kind, error))

    row("volatility", pct, risk.volatility, errors.volatility)
    row("Sharpe", "", risk.sharpe, errors.sharpe)
    row("Sortino", "", risk.sortino, errors.sortino)
    row("P(IRR ≥ hurdle)", pct, risk.prob_hurdle, errors.prob_hurdle)
    row("P(IRR ≥ target)", pct, risk.prob_target_irr, errors.prob_target_irr)
    row("P(MOIC ≥ target)", pct, risk.prob_target_multiple, errors.prob_target_multiple)
    row("P(loss of capital)", pct, risk.prob_loss, errors.prob_loss)
    for tail, tail_error in zip(risk.tails, errors.tails):
        level = f"{tail.confidence:.0%}"
        row(f"IRR VaR {level} (IRR level)", pct, tail.irr_var, tail_error.irr_var)
        row(f"IRR CVaR {level} (IRR level)", pct, tail.irr_cvar, tail_error.irr_cvar)
        row(f"capital VaR {level} (share lost, ≥ 0)", pct, tail.capital_var, tail_error.capital_var)
        row(f"capital CVaR {level} (share lost, ≥ 0)", pct, tail.capital_cvar, tail_error.capital_cvar)
    return table


def cashflow_table(result: SimulationResult) -> Table:
    """Mean yearly cash flows, a row per fund year; sources less uses is the change in year-end cash."""
    flows = result.cashflows
    years = len(flows["cash_end"])
    table = Table(title=f"mean cash flows by fund year, {result.info.currency} millions (year 0 is inception): "
                        "sources − uses = change in cash_end; distributions = lp + gp_commitment + carry")
    table.add_column("year", justify="right")
    for line in CASHFLOW_LINES:
        table.add_column(CASHFLOW_LABELS[line], justify="right", min_width=len(CASHFLOW_LABELS[line]))
    for year in range(years):
        table.add_row(str(year), *(_millions(flows[line][year]) for line in CASHFLOW_LINES))
    table.add_row("total", *("" if line in BALANCES else _millions(sum(flows[line])) for line in CASHFLOW_LINES))
    return table


def _millions(value: float) -> str:
    return f"{round(value / 1e6, 2) + 0.0:,.2f}"


def legend_table() -> Table:
    table = Table(title="legend")
    table.add_column("metric", no_wrap=True)
    table.add_column("meaning")
    for name, meaning in LEGEND.items():
        table.add_row(name, meaning)
    return table


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
