"""Study specs and results: proto <-> the engine's stress tests (``simulation.scenarios``) and
sensitivities (``simulation.sensitivity``).

Reading a spec validates it whole: every bad value is an ``InvalidArgument`` naming its field under the
request path (``spec.scenarios[1].stress.price_shock.red``). What the worker needs comes out as a plain,
picklable job (``StressJob``, ``SensitivityJob``); the worker maps its result back to proto.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from equihome.simulation.v1 import simulation_config_pb2 as config_pb
from equihome.study.v1 import study_pb2 as pb
from equihome.type.v1 import guardrail_pb2
from server.errors import InvalidArgument
from server.mapping.config import config_to_engine, field_path
from simulation import crn, scenarios, sensitivity
from simulation.config import ConfigError, SimulationConfig, Stress, load_config

MAX_SCENARIOS = 20
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 200
MAX_MORRIS_RUNS = 400


def _enum_names(enum: Any, prefix: str) -> dict[int, str]:
    """Enum number -> engine name (``GRID_PARAMETER_PRICE_SHOCK`` -> ``price_shock``), zero left out."""
    return {value.number: value.name.removeprefix(prefix).lower() for value in enum.DESCRIPTOR.values[1:]}


GRID_PARAMETERS = _enum_names(pb.GridParameter, "GRID_PARAMETER_")
SENSITIVITY_PARAMETERS = _enum_names(pb.SensitivityParameter, "SENSITIVITY_PARAMETER_")
SENSITIVITY_METRICS = _enum_names(pb.SensitivityMetric, "SENSITIVITY_METRIC_")
STRESS_FIGURES = {name: number for number, name in _enum_names(pb.StressFigure, "STRESS_FIGURE_").items()}


def _number(names: dict[int, str], name: str) -> int:
    return next(number for number, known in names.items() if known == name)


# --- Specs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StressJob:
    """A stress test as the worker runs it: plain data, already validated."""

    config: dict[str, Any]  # the served base config (``model_dump(mode="json")``)
    scenarios: tuple[tuple[str, str, dict[str, Any]], ...]  # (name, description, stress)
    grid: tuple[str, tuple[float, ...], str, tuple[float, ...], dict[str, Any]] | None  # x, xs, y, ys, template

    @property
    def runs(self) -> int:
        cells = len(self.grid[1]) * len(self.grid[3]) if self.grid else 0
        return 1 + len(self.scenarios) + cells


@dataclass(frozen=True)
class SensitivityJob:
    config: dict[str, Any]
    parameters: tuple[str, ...]
    relative_change: float
    metrics: tuple[str, ...]
    morris_budget_runs: int  # 0: no Morris screening
    morris_metric: str

    @property
    def runs(self) -> int:
        tornado = 2 * len(self.parameters) + 1
        if not self.morris_budget_runs:
            return tornado
        return tornado + sensitivity.morris_trajectories(self.parameters, self.morris_budget_runs) * (
            len(self.parameters) + 1)


def stress_from_proto(message: config_pb.Stress) -> dict[str, Any]:
    """A proto ``Stress`` as the engine's mapping (unset fields left out, so they keep their defaults)."""
    return config_to_engine(config_pb.SimulationConfig(stress=message)).get("stress", {})


def stress_job(spec: pb.StressTestSpec, config: SimulationConfig, path: str) -> StressJob:
    """The stress test of ``spec`` on the admitted base ``config``; ``InvalidArgument`` names every field."""
    problems: list[tuple[str, str]] = []
    if not config.stress.is_neutral:
        problems.append((f"{path}.config.stress", "the base of a stress test must be unstressed: give the "
                                                  "stress as a scenario"))
    chosen: list[tuple[str, str, dict[str, Any]]] = []
    for index, name in enumerate(spec.presets):
        preset = scenarios.PRESETS.get(name)
        if preset is None:
            problems.append((f"{path}.presets[{index}]", f"unknown preset; one of {sorted(scenarios.PRESETS)}"))
        else:
            chosen.append((preset.name, preset.description, preset.stress.model_dump(mode="json")))
    if len(spec.scenarios) > MAX_SCENARIOS:
        problems.append((f"{path}.scenarios", f"at most {MAX_SCENARIOS} scenarios"))
    for index, scenario in enumerate(spec.scenarios[:MAX_SCENARIOS]):
        where = f"{path}.scenarios[{index}]"
        if not 1 <= len(scenario.name) <= MAX_NAME_CHARS:
            problems.append((f"{where}.name", f"1 to {MAX_NAME_CHARS} characters"))
        if len(scenario.description) > MAX_DESCRIPTION_CHARS:
            problems.append((f"{where}.description", f"at most {MAX_DESCRIPTION_CHARS} characters"))
        if not scenario.HasField("stress"):
            problems.append((f"{where}.stress", "required"))
            continue
        stress = stress_from_proto(scenario.stress)
        problems.extend(_stress_problems(config, stress, where))
        chosen.append((scenario.name, scenario.description, stress))
    names = [name for name, _, _ in chosen]
    if len(set(names)) != len(names):
        problems.append((f"{path}.scenarios", "scenario names (presets included) must be unique"))
    grid = _grid(spec.grid, config, f"{path}.grid", problems) if spec.HasField("grid") else None
    if not chosen and grid is None and not problems:
        problems.append((f"{path}.presets", "give at least one preset, scenario or a grid"))
    if problems:
        raise InvalidArgument("The stress test is invalid; the field violations list every problem.", problems,
                              reason="FIELD_INVALID")
    return StressJob(config.model_dump(mode="json"), tuple(chosen), grid)


def _stress_problems(config: SimulationConfig, stress: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """The problems of ``stress`` on the base config (e.g. a shock month after the fund term)."""
    try:
        load_config({**config.model_dump(mode="json"), "stress": stress})
    except ConfigError as error:
        return [(field_path(where, engine_path), message) for engine_path, message in error.violations]
    return []


def _grid(grid: pb.StressGrid, config: SimulationConfig, where: str,
          problems: list[tuple[str, str]]) -> tuple[str, tuple[float, ...], str, tuple[float, ...], dict[str, Any]] | None:
    axes = []
    for label, axis in (("x", grid.x), ("y", grid.y)):
        parameter = GRID_PARAMETERS.get(axis.parameter)
        if parameter is None:
            problems.append((f"{where}.{label}.parameter", "required: a GridParameter"))
        if not 1 <= len(axis.values) <= scenarios.MAX_GRID_STEPS:
            problems.append((f"{where}.{label}.values", f"1 to {scenarios.MAX_GRID_STEPS} values"))
        elif not all(math.isfinite(v) for v in axis.values):
            problems.append((f"{where}.{label}.values", "must be finite numbers"))
        axes.append((parameter, tuple(axis.values)))
    (x, xs), (y, ys) = axes
    if x is not None and x == y:
        problems.append((f"{where}.y.parameter", "must move another parameter than x"))
    template = stress_from_proto(grid.template) if grid.HasField("template") else \
        scenarios.GRID_TEMPLATE.model_dump(mode="json")
    problems.extend(_stress_problems(config, template, f"{where}.template"))
    if problems or x is None or y is None:
        return None
    for label, parameter, values in (("x", x, xs), ("y", y, ys)):
        for index, value in enumerate(values):
            stress = {**template, **scenarios.GRID_AXES[parameter](value)}
            if _stress_problems(config, stress, "stress"):
                problems.append((f"{where}.{label}.values[{index}]", f"{value:g} is outside the range of {parameter}"))
    if not problems:
        for vx in xs:
            for vy in ys:
                cell = {**template, **scenarios.GRID_AXES[x](vx), **scenarios.GRID_AXES[y](vy)}
                for field, message in _stress_problems(config, cell, f"{where}.template")[:1]:
                    problems.append((field, f"with x = {vx:g}, y = {vy:g}: {message}"))
    return None if problems else (x, xs, y, ys, template)


def sensitivity_job(spec: pb.SensitivitySpec, config: SimulationConfig, path: str) -> SensitivityJob:
    problems: list[tuple[str, str]] = []
    parameters = _names(spec.parameters, SENSITIVITY_PARAMETERS, f"{path}.parameters", problems) \
        or sensitivity.DEFAULT_PARAMETERS
    metrics = _names(spec.metrics, SENSITIVITY_METRICS, f"{path}.metrics", problems) or sensitivity.DEFAULT_METRICS
    change = spec.relative_change or 0.2
    if not (math.isfinite(change) and 0.0 < change <= 0.9):
        problems.append((f"{path}.relative_change", "must lie in (0, 0.9]"))
    budget = spec.morris_budget_runs
    if not 0 <= budget <= MAX_MORRIS_RUNS:
        problems.append((f"{path}.morris_budget_runs", f"must lie in [0, {MAX_MORRIS_RUNS}]"))
    elif budget and sensitivity.morris_trajectories(parameters, budget) < sensitivity.MIN_TRAJECTORIES:
        problems.append((f"{path}.morris_budget_runs", f"at least {sensitivity.MIN_TRAJECTORIES} trajectories: "
                                                       f"{sensitivity.MIN_TRAJECTORIES * (len(parameters) + 1)} runs"))
    morris_metric = SENSITIVITY_METRICS.get(spec.morris_metric, "lp_net_irr") if spec.morris_metric else "lp_net_irr"
    if spec.morris_metric and spec.morris_metric not in SENSITIVITY_METRICS:
        problems.append((f"{path}.morris_metric", "unknown SensitivityMetric"))
    if problems:
        raise InvalidArgument("The sensitivity study is invalid; the field violations list every problem.",
                              problems, reason="FIELD_INVALID")
    return SensitivityJob(config.model_dump(mode="json"), tuple(parameters), change, tuple(metrics), budget,
                          morris_metric)


def _names(values: Sequence[int], names: dict[int, str], where: str, problems: list[tuple[str, str]]) -> tuple[str, ...]:
    out = []
    for index, value in enumerate(values):
        if value not in names:
            problems.append((f"{where}[{index}]", "unknown or unspecified value"))
        else:
            out.append(names[value])
    if len(set(out)) != len(out):
        problems.append((where, "values must be distinct"))
    return tuple(out)


# --- Results ---------------------------------------------------------------------------------------


def _estimate(estimate: crn.Estimate) -> pb.Estimate:
    return pb.Estimate(value=estimate.value, ci_low=estimate.ci_low, ci_high=estimate.ci_high)


def stress_to_proto(stress: Stress) -> config_pb.Stress:
    from server.mapping.config import engine_to_config  # the whole-config mapping fills every field

    return engine_to_config(SimulationConfig(stress=stress)).stress


def scenario_to_proto(outcome: scenarios.ScenarioOutcome) -> pb.ScenarioResult:
    return pb.ScenarioResult(
        name=outcome.name,
        description=outcome.description,
        stress=stress_to_proto(outcome.stress),
        figures=[pb.FigureDelta(figure=STRESS_FIGURES[f.figure], base=f.base, stressed=f.stressed,
                                delta=_estimate(f.delta)) for f in outcome.figures],
        dpi_path=[pb.YearDelta(year=year, base=f.base, stressed=f.stressed, delta=_estimate(f.delta))
                  for year, f in enumerate(outcome.dpi_path)],
        guardrails=[pb.GuardrailCheck(
            rule=guardrail_pb2.GuardrailRule.Value(f"GUARDRAIL_RULE_{c.rule.upper()}"),
            figure=STRESS_FIGURES[c.figure], limit=c.limit, upper_limit=c.upper, base=c.base, stressed=c.stressed,
            base_breached=c.base_breached, stressed_breached=c.stressed_breached) for c in outcome.guardrails],
    )


def stress_result_to_proto(report: scenarios.StressReport, named: int,
                           grid: tuple[scenarios.GridAxis, scenarios.GridAxis] | None) -> pb.StressTestResult:
    """``report``'s first ``named`` scenarios are the presets and custom ones, the rest the grid's cells."""
    result = pb.StressTestResult(paths=report.paths, seed=report.seed,
                                 scenarios=[scenario_to_proto(s) for s in report.scenarios[:named]])
    if grid is not None:
        x, y = grid
        result.grid.x.CopyFrom(pb.GridAxis(parameter=_number(GRID_PARAMETERS, x.parameter), values=x.values))
        result.grid.y.CopyFrom(pb.GridAxis(parameter=_number(GRID_PARAMETERS, y.parameter), values=y.values))
        result.grid.cells.extend(scenario_to_proto(s) for s in report.scenarios[named:])
    return result


def sensitivity_result_to_proto(tornado: sensitivity.Tornado, morris: sensitivity.Morris | None) -> pb.SensitivityResult:
    result = pb.SensitivityResult(
        relative_change=tornado.relative_change, paths=tornado.paths, seed=tornado.seed,
        bars=[pb.TornadoBar(
            parameter=_number(SENSITIVITY_PARAMETERS, bar.parameter), metric=_number(SENSITIVITY_METRICS, bar.metric),
            base=bar.base, low=_side(bar.low), high=_side(bar.high), swing=bar.swing, elasticity=bar.elasticity)
            for bar in tornado.bars])
    if morris is not None:
        result.morris.CopyFrom(pb.MorrisResult(
            metric=_number(SENSITIVITY_METRICS, morris.metric), trajectories=morris.trajectories, runs=morris.runs,
            effects=[pb.MorrisEffect(parameter=_number(SENSITIVITY_PARAMETERS, e.parameter), mu=e.mu,
                                     mu_star=e.mu_star, mu_star_ci=e.mu_star_ci, sigma=e.sigma)
                     for e in morris.effects]))
    return result


def _side(side: sensitivity.Side) -> pb.TornadoSide:
    return pb.TornadoSide(change=side.change, value=side.value, delta=_estimate(side.delta))
