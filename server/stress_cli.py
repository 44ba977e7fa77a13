"""``equihome-sim stress CONFIG.json``: stress tests and sensitivities of a fund, on common random numbers.

  equihome-sim stress fund.json                               # the three named scenarios vs the base
  equihome-sim stress fund.json --preset financial_crisis --scenario my_shock.json
  equihome-sim stress fund.json --grid price_shock=0,-0.1,-0.2,-0.3,-0.4 default_multiplier=1,2,3,4,5
  equihome-sim stress fund.json --tornado                     # the ten default parameters at +-20 %
  equihome-sim stress fund.json --tornado interest_rate hurdle_rate --change 0.1 --morris 66

A custom scenario file holds {"name", "description", "stress": {...}} (or a list of them); the stress
fields are those of the config's ``stress`` section (docs/model.md §8b). ``--json OUT`` writes the study in
the API's protobuf JSON, which ``equihome-sim report OUT`` turns into an HTML report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from equihome.study.v1 import study_pb2 as pb
from server.mapping.config import engine_to_config
from server.mapping.study import (
    GRID_PARAMETERS, SENSITIVITY_METRICS, SENSITIVITY_PARAMETERS, sensitivity_result_to_proto, stress_result_to_proto,
    stress_to_proto,
)
from simulation import ENGINE_VERSION, scenarios, sensitivity
from simulation.config import ConfigError, SimulationConfig, load_config

FIGURE_LABELS = {
    "lp_net_irr": ("Δ LP IRR", "pct"), "lp_moic": ("Δ LP MOIC", "x"), "lp_dpi": ("Δ DPI", "x"),
    "gp_carry": ("Δ carry", "money"), "prob_hurdle": ("Δ P(hurdle)", "pct"), "capital_cvar_99": ("Δ CVaR99", "pct"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="equihome-sim stress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="JSON config of the base fund ({} is the default fund)")
    parser.add_argument("--preset", action="append", default=[], choices=sorted(scenarios.PRESETS),
                        help="a named scenario (repeatable; default: all three unless other scenarios are given)")
    parser.add_argument("--scenario", action="append", default=[], type=Path, help="custom scenario JSON file")
    parser.add_argument("--grid", nargs=2, metavar=("X=V1,V2,..", "Y=V1,V2,.."),
                        help=f"two-way grid; axes among {', '.join(scenarios.GRID_AXES)}")
    parser.add_argument("--tornado", nargs="*", metavar="PARAMETER",
                        help=f"sensitivities instead of scenarios; parameters among {', '.join(sensitivity.PARAMETERS)}")
    parser.add_argument("--change", type=float, default=0.2, help="relative move of each parameter (default 0.2)")
    parser.add_argument("--metric", action="append", default=[], choices=sensitivity.METRICS,
                        help="tornado metric (repeatable; default LP IRR, LP MOIC, carry)")
    parser.add_argument("--morris", type=int, default=0, metavar="RUNS", help="also Morris screening in RUNS runs")
    parser.add_argument("--paths", type=int, help="Monte Carlo paths (overrides monte_carlo.paths)")
    parser.add_argument("--seed", type=int, help="base seed (overrides monte_carlo.seed)")
    parser.add_argument("--json", type=Path, dest="json_out", help="write the study as protobuf JSON here")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    try:
        config = _config(args)
        study = _run(args, config, console)
    except (OSError, json.JSONDecodeError) as error:
        console.print(f"[red]cannot read input: {error}")
        return 2
    except ConfigError as error:
        for field, message in error.violations:
            console.print(f"[red]invalid[/] {field}: {message}")
        return 2
    except ValueError as error:
        console.print(f"[red]invalid request:[/] {error}")
        return 2
    out = Console(width=None if sys.stdout.isatty() else 200)
    result = study.result
    if result.HasField("stress_test"):
        out.print(*stress_tables(result.stress_test))
    else:
        out.print(*sensitivity_tables(result.sensitivity))
    if args.json_out:
        args.json_out.write_text(json.dumps({"study": json_format.MessageToDict(study)}, indent=1))
        console.print(f"study written to {args.json_out}")
    return 0


def _config(args: argparse.Namespace) -> SimulationConfig:
    data = json.loads(args.config.read_text())
    mc = data.setdefault("monte_carlo", {})
    for key in ("paths", "seed"):
        if getattr(args, key) is not None:
            mc[key] = getattr(args, key)
    return load_config(data)


def _custom(path: Path) -> list[scenarios.Scenario]:
    data = json.loads(path.read_text())
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items:
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError(f"{path}: a scenario is an object with a name and a stress")
        stress = load_config({"stress": item.get("stress", {})}).stress
        out.append(scenarios.Scenario(str(item["name"]), stress, str(item.get("description", ""))))
    return out


def _axis(text: str) -> scenarios.GridAxis:
    name, _, values = text.partition("=")
    try:
        return scenarios.GridAxis(name, tuple(float(v) for v in values.split(",") if v))
    except ValueError as error:
        raise ValueError(f"--grid {text}: {error}") from None


def _run(args: argparse.Namespace, config: SimulationConfig, console: Console) -> pb.Study:
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("path-runs"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("runs", total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if args.tornado is not None:
            return _sensitivity(args, config, report)
        return _stress(args, config, report)


def _stress(args: argparse.Namespace, config: SimulationConfig, report: Any) -> pb.Study:
    custom = [s for path in args.scenario for s in _custom(path)]
    presets = args.preset or ([] if custom or args.grid else sorted(scenarios.PRESETS, key=list(scenarios.PRESETS).index))
    named = [scenarios.PRESETS[name] for name in presets] + custom
    axes = (_axis(args.grid[0]), _axis(args.grid[1])) if args.grid else None
    cells = [c for row in scenarios.grid_stress(*axes) for c in row] if axes else []
    result = scenarios.stress_test(config, [*named, *cells], progress=report)
    spec = pb.StressTestSpec(config=engine_to_config(config), presets=presets,
                             scenarios=[pb.Scenario(name=s.name, description=s.description, stress=stress_to_proto(s.stress))
                                        for s in custom])
    if axes:
        number = {name: n for n, name in GRID_PARAMETERS.items()}
        spec.grid.x.CopyFrom(pb.GridAxis(parameter=number[axes[0].parameter], values=axes[0].values))
        spec.grid.y.CopyFrom(pb.GridAxis(parameter=number[axes[1].parameter], values=axes[1].values))
        spec.grid.template.CopyFrom(stress_to_proto(scenarios.GRID_TEMPLATE))
    return _study(pb.StudySpec(stress_test=spec),
                  pb.StudyResult(stress_test=stress_result_to_proto(result, len(named), axes)), args)


def _sensitivity(args: argparse.Namespace, config: SimulationConfig, report: Any) -> pb.Study:
    parameters = tuple(args.tornado) or sensitivity.DEFAULT_PARAMETERS
    metrics = tuple(args.metric) or sensitivity.DEFAULT_METRICS
    runs = 2 * len(parameters) + 1
    paths = config.monte_carlo.paths if not config.monte_carlo.deterministic else 1
    morris_runs = (sensitivity.morris_trajectories(parameters, args.morris) * (len(parameters) + 1)
                   if args.morris else 0)
    total = (runs + morris_runs) * paths

    def after(before: int) -> Any:
        return lambda done, _: report(before * paths + done, total)

    tornado = sensitivity.tornado(config, parameters, args.change, metrics, progress=after(0))
    morris = sensitivity.morris(config, parameters, args.change, metrics[0], args.morris,
                                progress=after(runs)) if args.morris else None
    parameter_numbers = {name: n for n, name in SENSITIVITY_PARAMETERS.items()}
    metric_numbers = {name: n for n, name in SENSITIVITY_METRICS.items()}
    spec = pb.SensitivitySpec(config=engine_to_config(config), parameters=[parameter_numbers[p] for p in parameters],
                              relative_change=args.change, metrics=[metric_numbers[m] for m in metrics],
                              morris_budget_runs=args.morris, morris_metric=metric_numbers[metrics[0]])
    return _study(pb.StudySpec(sensitivity=spec),
                  pb.StudyResult(sensitivity=sensitivity_result_to_proto(tornado, morris)), args)


def _study(spec: pb.StudySpec, result: pb.StudyResult, args: argparse.Namespace) -> pb.Study:
    return pb.Study(display_name=args.config.stem, spec=spec, result=result, state=pb.Study.STATE_SUCCEEDED,
                    engine_version=ENGINE_VERSION)


# --- Tables ---------------------------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if value != value:
        return "n/a"
    if unit == "pct":
        return f"{value * 100:+.2f} pp"
    if unit == "money":
        return f"{value / 1e6:+,.2f}M"
    return f"{value:+.4f}"


def _ci(estimate: pb.Estimate, unit: str) -> str:
    return f"{_fmt(estimate.value, unit)} [{_fmt(estimate.ci_low, unit)}, {_fmt(estimate.ci_high, unit)}]"


def _figure(scenario: pb.ScenarioResult, name: str) -> pb.FigureDelta:
    number = pb.StressFigure.Value(f"STRESS_FIGURE_{name.upper()}")
    return next(f for f in scenario.figures if f.figure == number)


def stress_tables(result: pb.StressTestResult) -> list[Table]:
    tables = []
    if result.scenarios:
        table = Table(title=f"scenarios vs base · {result.paths:,} paths on common random numbers (seed {result.seed}) "
                            "· change [95 % CI]")
        table.add_column("scenario", no_wrap=True)
        for label, _ in FIGURE_LABELS.values():
            table.add_column(label, justify="right")
        table.add_column("guardrails breached")
        base = result.scenarios[0]
        table.add_row("base", *(_base_cell(_figure(base, name).base, unit) for name, (_, unit) in FIGURE_LABELS.items()),
                      ", ".join(_rule(c) for c in base.guardrails if c.base_breached) or "none")
        for scenario in result.scenarios:
            table.add_row(scenario.name, *(_ci(_figure(scenario, name).delta, unit)
                                           for name, (_, unit) in FIGURE_LABELS.items()),
                          ", ".join(_rule(c) for c in scenario.guardrails if c.stressed_breached) or "none")
        tables.append(table)
    if result.HasField("grid"):
        grid = result.grid
        x_name, y_name = (pb.GridParameter.Name(a.parameter).removeprefix("GRID_PARAMETER_").lower()
                          for a in (grid.x, grid.y))
        table = Table(title=f"Δ mean LP IRR (pp) by {x_name} (rows) × {y_name} (columns)")
        table.add_column(f"{x_name} \\ {y_name}", no_wrap=True)
        for value in grid.y.values:
            table.add_column(f"{value:g}", justify="right")
        width = len(grid.y.values)
        for i, value in enumerate(grid.x.values):
            cells = grid.cells[i * width:(i + 1) * width]
            table.add_row(f"{value:g}", *(f"{_figure(c, 'lp_net_irr').delta.value * 100:+.2f}" for c in cells))
        tables.append(table)
    return tables


def _base_cell(value: float, unit: str) -> str:
    if unit == "pct":
        return f"{value * 100:.2f} %"
    if unit == "money":
        return f"{value / 1e6:,.2f}M"
    return f"{value:.4f}"


def _rule(check: pb.GuardrailCheck) -> str:
    from equihome.type.v1 import guardrail_pb2

    return guardrail_pb2.GuardrailRule.Name(check.rule).removeprefix("GUARDRAIL_RULE_").lower()


def sensitivity_tables(result: pb.SensitivityResult) -> list[Table]:
    tables = []
    metrics = list(dict.fromkeys(bar.metric for bar in result.bars))
    for metric in metrics:
        name = pb.SensitivityMetric.Name(metric).removeprefix("SENSITIVITY_METRIC_").lower()
        unit = "money" if name in ("gp_carry", "lp_npv") else "pct" if name.endswith(("irr", "rate")) else "x"
        bars = [bar for bar in result.bars if bar.metric == metric]
        table = Table(title=f"tornado of mean {name} · ±{result.relative_change:.0%} per parameter · "
                            f"{result.paths:,} paths on common random numbers · base {_base_cell(bars[0].base, unit)}")
        for column in ("parameter", "low move", "Δ at low [95 % CI]", "high move", "Δ at high [95 % CI]", "swing",
                       "elasticity"):
            table.add_column(column, justify="left" if column == "parameter" else "right")
        for bar in bars:
            table.add_row(pb.SensitivityParameter.Name(bar.parameter).removeprefix("SENSITIVITY_PARAMETER_").lower(),
                          f"{bar.low.change:+.1%}", _ci(bar.low.delta, unit), f"{bar.high.change:+.1%}",
                          _ci(bar.high.delta, unit), _fmt(bar.swing, unit).lstrip("+"), f"{bar.elasticity:+.3f}")
        tables.append(table)
    if result.HasField("morris"):
        morris = result.morris
        table = Table(title=f"Morris screening of {pb.SensitivityMetric.Name(morris.metric).removeprefix('SENSITIVITY_METRIC_').lower()} · "
                            f"{morris.trajectories} trajectories, {morris.runs} runs")
        for column in ("parameter", "μ*", "± 95 %", "μ", "σ"):
            table.add_column(column, justify="left" if column == "parameter" else "right")
        for effect in morris.effects:
            table.add_row(pb.SensitivityParameter.Name(effect.parameter).removeprefix("SENSITIVITY_PARAMETER_").lower(),
                          f"{effect.mu_star:.4g}", f"{effect.mu_star_ci:.2g}", f"{effect.mu:+.4g}", f"{effect.sigma:.4g}")
        tables.append(table)
    return tables


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
