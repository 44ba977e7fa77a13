"""``equihome-sim simulate CONFIG.json [--paths N] [--seed S] [--workers W] [--json OUT]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from server.mapping.engine_json import engine_document
from simulation.config import ConfigError, load_config
from simulation.engine import Progress as RunProgress
from simulation.engine import run
from simulation.results import SimulationResult

PERCENT = {"gross_irr", "fund_irr", "lp_net_irr", "gp_irr", "lp_roi", "max_drawdown", "default_rate",
           "loss_rate", "recycling_ratio"}
MONEY = {"lp_npv", "gp_carry", "gp_total_income", "lp_contributions", "lp_distributions", "min_cash"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equihome-sim simulate", description=__doc__)
    parser.add_argument("config", type=Path, help="JSON config (see docs/model.md; {} is the default fund)")
    parser.add_argument("--paths", type=int, help="Monte Carlo paths (overrides monte_carlo.paths)")
    parser.add_argument("--seed", type=int, help="base seed (overrides monte_carlo.seed)")
    parser.add_argument("--workers", type=int, help="worker processes (overrides monte_carlo.workers)")
    parser.add_argument("--json", type=Path, dest="json_out",
                        help="write the full result and its effective config as JSON here (input of `report`)")
    parser.add_argument("--per-path", action="store_true", help="include per-path metrics in the JSON")
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
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("paths"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("paths", total=None)

        def report(p: RunProgress) -> None:
            bar.update(task, completed=p.paths_done, total=p.paths_total)

        result = run(config, progress=report, keep_paths=args.per_path)
    Console().print(summary_table(result), risk_table(result))
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
        return f"{value / 1e6:,.2f}M"
    return f"{value:.4f}"


def summary_table(result: SimulationResult) -> Table:
    info = result.info
    title = (f"{info.paths:,} paths · seed {info.seed} · engine {info.engine_version} · "
             f"{info.loans_in_book} loans · {info.elapsed_seconds:.2f} s")
    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    for column in ("mean", "std", "P5", "P50", "P95", "NaN"):
        table.add_column(column, justify="right")
    for name, s in result.metrics.items():
        q = s.quantiles
        table.add_row(name, *(_fmt(name, v) for v in (s.mean, s.std, q[5], q[50], q[95])), str(s.nan_count))
    return table


def risk_table(result: SimulationResult) -> Table:
    risk = result.risk
    table = Table(title="risk (LP net IRR across paths)")
    table.add_column("measure", no_wrap=True)
    table.add_column("value", justify="right")
    pct = "lp_net_irr"  # formatted as a percentage
    rows = [("volatility", _fmt(pct, risk.volatility)), ("Sharpe", _fmt("", risk.sharpe)),
            ("Sortino", _fmt("", risk.sortino)), ("P(IRR ≥ hurdle)", _fmt(pct, risk.prob_hurdle)),
            ("P(IRR ≥ target)", _fmt(pct, risk.prob_target_irr)),
            ("P(MOIC ≥ target)", _fmt(pct, risk.prob_target_multiple)), ("P(loss)", _fmt(pct, risk.prob_loss))]
    for tail in risk.tails:
        level = f"{tail.confidence:.0%}"
        rows += [(f"IRR VaR {level}", _fmt(pct, tail.irr_var)), (f"IRR CVaR {level}", _fmt(pct, tail.irr_cvar)),
                 (f"capital VaR {level} (loss)", _fmt(pct, tail.capital_var)),
                 (f"capital CVaR {level} (loss)", _fmt(pct, tail.capital_cvar))]
    for row in rows:
        table.add_row(*row)
    return table


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
