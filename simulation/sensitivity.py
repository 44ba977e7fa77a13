"""Sensitivities by re-simulation (domain §7.2): a one-at-a-time tornado with elasticities, and Morris
screening when a budget is given, all on the base's random numbers (``crn``).

A parameter is a named set of config fields moved together by one factor: ``appreciation_drift`` scales
every zone's drift by ``1 + h``. Each side of the tornado goes as far as ±h, or as far as the config stays
valid (a higher management fee can make the deployment period's costs exceed the commitments): the change
actually applied is reported with the result, and the elasticity uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ConfigError, SimulationConfig, ZONES, load_config
from . import engine
from .metrics import finite_mean
from .crn import Estimate, RunsProgress, mean_delta, runs
from .executors import CancelCheck, ChunkExecutor


@dataclass(frozen=True)
class Parameter:
    name: str
    fields: tuple[str, ...]  # dotted paths in the config, moved by the same factor
    low: float  # bounds of each field's value
    high: float
    description: str


def _zones(template: str) -> tuple[str, ...]:
    return tuple(template.format(zone=zone) for zone in ZONES)


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("appreciation_drift", _zones("market.{zone}.drift"), -0.5, 0.5, "expected house-price growth, every zone"),
    Parameter("volatility", _zones("market.{zone}.vol"), 0.0, 1.0, "house-price volatility, every zone"),
    Parameter("default_hazard", _zones("market.{zone}.default_hazard"), 0.0, 1.0, "default hazard (PD), every zone"),
    Parameter("exit_hazard", _zones("stress.exit_multiplier.{zone}"), 0.0, 10.0, "voluntary-exit hazard, every zone"),
    Parameter("recovery", _zones("market.{zone}.recovery_haircut"), 0.0, 1.0, "recovery rate on default, every zone"),
    Parameter("interest_rate", ("loans.interest_rate",), 0.0, 0.5, "loan interest rate"),
    Parameter("ltv", ("book.generated.ltv_mean", "book.generated.min_ltv", "book.generated.max_ltv"), 0.001, 0.999,
              "loan-to-value of the generated book (mean and bounds)"),
    Parameter("management_fee", ("fees.management_fee_rate",), 0.0, 0.05, "management fee rate"),
    Parameter("hurdle_rate", ("waterfall.hurdle_rate",), 0.0, 0.5, "preferred return (hurdle)"),
    Parameter("carry_rate", ("waterfall.carry_rate",), 0.0, 0.99, "carried interest rate"),
    Parameter("appreciation_share", ("loans.appreciation_share_rate",), 0.0, 1.0,
              "appreciation share (only with the fixed share method)"),
    Parameter("avg_exit_year", ("market.avg_exit_year",), 0.1, 30.0, "median year of voluntary exit"),
)}
DEFAULT_PARAMETERS = ("appreciation_drift", "volatility", "default_hazard", "exit_hazard", "recovery",
                      "interest_rate", "ltv", "management_fee", "hurdle_rate", "carry_rate")
METRICS = ("lp_net_irr", "lp_moic", "lp_dpi", "gp_carry", "gross_irr", "gross_moic", "fund_irr", "lp_npv",
           "default_rate", "loss_rate", "wal_years")
DEFAULT_METRICS = ("lp_net_irr", "lp_moic", "gp_carry")
FEASIBILITY_STEPS = 30  # bisection steps for the largest valid change


def scaled(config: SimulationConfig, parameter: Parameter, factor: float) -> tuple[SimulationConfig, float]:
    """``config`` with the parameter's fields times ``factor`` (each clipped to its bounds), and the change
    applied: the mean relative change of the fields that are not zero. ``ConfigError`` if invalid."""
    data = config.model_dump(mode="json")
    changes = []
    for path in parameter.fields:
        *parents, leaf = path.split(".")
        section = data
        for key in parents:
            section = section[key]
        old = float(section[leaf])
        new = float(np.clip(old * factor, parameter.low, parameter.high))
        section[leaf] = new
        if old != 0.0:
            changes.append(new / old - 1.0)
    return load_config(data), float(np.mean(changes)) if changes else 0.0


def _valid(config: SimulationConfig, parameter: Parameter, factor: float) -> bool:
    try:
        scaled(config, parameter, factor)
    except ConfigError:
        return False
    return True


def feasible_factor(config: SimulationConfig, parameter: Parameter, factor: float) -> float:
    """``factor``, or the one closest to it (towards 1) that keeps the config valid."""
    if _valid(config, parameter, factor):
        return factor
    good, bad = 1.0, factor
    for _ in range(FEASIBILITY_STEPS):
        middle = (good + bad) / 2.0
        good, bad = (middle, bad) if _valid(config, parameter, middle) else (good, middle)
    return good


# --- Tornado ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    change: float  # relative change applied (−0.2 = −20 %)
    value: float  # mean of the metric
    delta: Estimate  # paired change against the base


@dataclass(frozen=True)
class Bar:
    parameter: str
    metric: str
    base: float
    low: Side
    high: Side
    swing: float  # |high − low| of the mean
    elasticity: float  # (ΔY/Y) / (ΔX/X) between the two sides, NaN when Y is 0 or X did not move


@dataclass(frozen=True)
class Tornado:
    relative_change: float
    paths: int
    seed: int
    metrics: tuple[str, ...]
    bars: tuple[Bar, ...]  # by metric, then by swing, largest first

    def for_metric(self, metric: str) -> tuple[Bar, ...]:
        return tuple(bar for bar in self.bars if bar.metric == metric)


def check_request(parameters: Sequence[str], metrics: Sequence[str], relative_change: float) -> None:
    unknown = [p for p in parameters if p not in PARAMETERS]
    if unknown or not parameters or len(set(parameters)) != len(parameters):
        raise ValueError(f"parameters: give distinct names among {sorted(PARAMETERS)}")
    if not metrics or any(m not in METRICS for m in metrics):
        raise ValueError(f"metrics: give names among {list(METRICS)}")
    if not 0.0 < relative_change <= 0.9:
        raise ValueError("relative_change: must lie in (0, 0.9]")


def tornado_configs(config: SimulationConfig, parameters: Sequence[str],
                    relative_change: float) -> list[tuple[SimulationConfig, float]]:
    """The low and high config of each parameter with the change applied, in order."""
    out = []
    for name in parameters:
        parameter = PARAMETERS[name]
        for factor in (1.0 - relative_change, 1.0 + relative_change):
            out.append(scaled(config, parameter, feasible_factor(config, parameter, factor)))
    return out


def tornado(config: SimulationConfig, parameters: Sequence[str] = DEFAULT_PARAMETERS, relative_change: float = 0.2,
            metrics: Sequence[str] = DEFAULT_METRICS, *, progress: RunsProgress | None = None,
            cancelled: CancelCheck | None = None, executor: ChunkExecutor | None = None) -> Tornado:
    """Each parameter moved down and up by ``relative_change`` alone, ``2k + 1`` runs on one set of draws."""
    check_request(parameters, metrics, relative_change)
    variants = tornado_configs(config, parameters, relative_change)
    # Only the metrics asked for are kept of each run.
    kept = [{metric: r.scalars[metric] for metric in metrics}
            for r in runs([config, *(c for c, _ in variants)], progress=progress, cancelled=cancelled,
                          executor=executor)]
    base, moved = kept[0], kept[1:]
    bars = []
    for metric in metrics:
        y0 = base[metric]
        row = []
        for i, name in enumerate(parameters):
            sides = [Side(variants[2 * i + k][1], finite_mean(moved[2 * i + k][metric]),
                          mean_delta(y0, moved[2 * i + k][metric])) for k in (0, 1)]
            row.append(_bar(name, metric, finite_mean(y0), *sides))
        bars.extend(sorted(row, key=lambda bar: -bar.swing if np.isfinite(bar.swing) else 0.0))
    return Tornado(relative_change, len(base[metrics[0]]), config.monte_carlo.seed, tuple(metrics),
                   tuple(bars))


def _bar(parameter: str, metric: str, base: float, low: Side, high: Side) -> Bar:
    moved = high.change - low.change
    if base == 0.0 or moved == 0.0:
        elasticity = float("nan")
    else:
        elasticity = ((high.value - low.value) / abs(base)) / moved
    return Bar(parameter, metric, base, low, high, abs(high.value - low.value), elasticity)


# --- Morris screening ---------------------------------------------------------------------------------

MORRIS_LEVELS = 4
MIN_TRAJECTORIES = 2


@dataclass(frozen=True)
class MorrisEffect:
    parameter: str
    mu: float  # mean elementary effect (signed), per width of the ±h box (SALib normalises each range to 1)
    mu_star: float  # mean absolute elementary effect: the importance
    mu_star_ci: float  # half-width of its 95 % bootstrap interval
    sigma: float  # spread of the effects: non-linearity or interactions


@dataclass(frozen=True)
class Morris:
    metric: str
    relative_change: float
    trajectories: int
    runs: int
    paths: int
    effects: tuple[MorrisEffect, ...]  # by mu_star, largest first


def morris_trajectories(parameters: Sequence[str], budget_runs: int) -> int:
    """Trajectories that fit ``budget_runs`` runs (each trajectory costs one run per parameter, plus one)."""
    return budget_runs // (len(parameters) + 1)


def morris_design(config: SimulationConfig, parameters: Sequence[str], relative_change: float,
                  budget_runs: int) -> tuple[np.ndarray, list[SimulationConfig], dict[str, Any]]:
    """The Morris sample (SALib) in factor space ``[1 − h, 1 + h]`` per parameter, and its configs.
    A sample point whose config is invalid raises ``ValueError`` naming the parameters moved."""
    from SALib.sample import morris as morris_sample

    trajectories = morris_trajectories(parameters, budget_runs)
    if trajectories < MIN_TRAJECTORIES:
        raise ValueError(f"morris_budget_runs: at least {MIN_TRAJECTORIES * (len(parameters) + 1)} runs for "
                         f"{len(parameters)} parameters")
    bounds = []
    for name in parameters:
        parameter = PARAMETERS[name]
        bounds.append([feasible_factor(config, parameter, 1.0 - relative_change),
                       feasible_factor(config, parameter, 1.0 + relative_change)])
    problem = {"num_vars": len(parameters), "names": list(parameters), "bounds": bounds}
    sample = morris_sample.sample(problem, trajectories, num_levels=MORRIS_LEVELS, seed=config.monte_carlo.seed % 2**32)
    configs = [_moved(config, parameters, row) for row in sample]
    return sample, configs, problem


class SensitivityUnanswerable(ValueError):
    """The sensitivity asked for cannot be computed on this fund (found only while it runs)."""


def _moved(config: SimulationConfig, parameters: Sequence[str], factors: np.ndarray) -> SimulationConfig:
    data = config
    try:
        for name, factor in zip(parameters, factors):
            data, _ = scaled(data, PARAMETERS[name], float(factor))
    except ConfigError as error:
        combination = dict(zip(parameters, factors.round(3).tolist()))
        raise SensitivityUnanswerable(f"parameters: the combination {combination} gives an invalid config ({error}); "
                                      "use a smaller relative_change") from None
    return data


def morris(config: SimulationConfig, parameters: Sequence[str] = DEFAULT_PARAMETERS, relative_change: float = 0.2,
           metric: str = "lp_net_irr", budget_runs: int = 66, *, progress: RunsProgress | None = None,
           cancelled: CancelCheck | None = None, executor: ChunkExecutor | None = None) -> Morris:
    """Morris elementary effects of ``metric``'s mean over the ±h box, within ``budget_runs`` runs."""
    from SALib.analyze import morris as morris_analyze

    check_request(parameters, [metric], relative_change)
    sample, configs, problem = morris_design(config, parameters, relative_change, budget_runs)
    y = np.array([finite_mean(r.scalars[metric])
                  for r in runs(configs, progress=progress, cancelled=cancelled, executor=executor)])
    if not np.isfinite(y).all():
        raise SensitivityUnanswerable(f"metric: {metric} has no finite mean on some sample points")
    analysis = morris_analyze.analyze(problem, sample, y, num_levels=MORRIS_LEVELS,
                                      seed=config.monte_carlo.seed % 2**32)
    effects = [MorrisEffect(name, float(analysis["mu"][i]), float(analysis["mu_star"][i]),
                            float(analysis["mu_star_conf"][i]), float(analysis["sigma"][i]))
               for i, name in enumerate(parameters)]
    effects.sort(key=lambda e: -e.mu_star)
    return Morris(metric, relative_change, len(sample) // (len(parameters) + 1), len(sample),
                  engine.path_count(config), tuple(effects))
