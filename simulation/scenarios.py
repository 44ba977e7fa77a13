"""Stress tests by re-simulation (domain §7.2): named and custom scenarios, and a two-way grid.

Every scenario is the base config with a ``Stress`` in place of none, re-simulated on the base's random
numbers (``crn``), and reported as paired differences against the base, each with its 95 % interval: means
of LP IRR, LP MOIC, DPI (at the end and year by year), carry and WAL; the probability of clearing the
hurdle; tail figures (capital VaR/CVaR, IRR P5) by a paired bootstrap; and the fund guardrails each run
breaches. The named presets and the reasoning behind their values are in ``docs/model.md`` §8d.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import metrics
from .config import Stress, SimulationConfig, ZONES, load_config
from .crn import Estimate, RunsProgress, bootstrap_deltas, mean_delta, runs
from .executors import CancelCheck, ChunkExecutor
from .pathmetrics import PathResults


@dataclass(frozen=True)
class Scenario:
    name: str
    stress: Stress
    description: str = ""


def _zones(green: float, orange: float, red: float) -> dict[str, float]:
    return {"green": green, "orange": orange, "red": red}


def _preset(name: str, description: str, **stress: Any) -> Scenario:
    return Scenario(name, Stress.model_validate(stress), description)


# Shocks start at month 24, when the default fund's book is mostly deployed; red moves about twice as far
# as green (domain §7.2: "zone-differentiated, e.g. red x1.5"). docs/model.md §8d gives the sources.
PRESETS: dict[str, Scenario] = {s.name: s for s in (
    _preset("mild_recession", "A correction like Sydney 2017-19: prices -5/-8/-12 %, two slow years, PD x1.5-2.5",
            price_shock=_zones(-0.05, -0.08, -0.12), price_shock_month=24,
            drift_shift=_zones(-0.02, -0.03, -0.04), vol_multiplier=_zones(1.2, 1.3, 1.4),
            window_start_month=24, window_end_month=48,
            default_multiplier=_zones(1.5, 2.0, 2.5), exit_multiplier=_zones(0.8, 0.8, 0.8),
            recovery_haircut=0.05),
    _preset("severe_recession", "A deep recession: prices -12/-18/-25 %, three slow years, PD x2-4, 40 % fewer exits",
            price_shock=_zones(-0.12, -0.18, -0.25), price_shock_month=24,
            drift_shift=_zones(-0.03, -0.045, -0.06), vol_multiplier=_zones(1.5, 1.6, 1.8),
            window_start_month=24, window_end_month=60,
            default_multiplier=_zones(2.0, 3.0, 4.0), exit_multiplier=_zones(0.6, 0.6, 0.6),
            recovery_haircut=0.10),
    _preset("financial_crisis", "A 2008-style crisis: prices -20/-30/-40 %, four slow years, PD x3-5, 70 % fewer exits",
            price_shock=_zones(-0.20, -0.30, -0.40), price_shock_month=24,
            drift_shift=_zones(-0.04, -0.06, -0.08), vol_multiplier=_zones(1.8, 2.0, 2.3),
            window_start_month=24, window_end_month=72,
            default_multiplier=_zones(3.0, 4.0, 5.0), exit_multiplier=_zones(0.3, 0.3, 0.3),
            recovery_haircut=0.15),
)}


# --- Figures compared ---------------------------------------------------------------------------------

Values = Callable[[PathResults, SimulationConfig], np.ndarray]  # one value per path
Statistic = Callable[[np.ndarray], np.ndarray]  # rows of samples -> one figure per row


@dataclass(frozen=True)
class Figure:
    name: str
    values: Values
    statistic: Statistic | None = None  # None: the mean, with a paired normal interval; else bootstrapped


def _scalar(name: str) -> Values:
    return lambda results, config: results.scalars[name]


def _cleared_hurdle(results: PathResults, config: SimulationConfig) -> np.ndarray:
    irr = results.scalars["lp_net_irr"]
    return np.where(np.isfinite(irr), irr >= config.waterfall.hurdle_rate, np.nan)


def _capital_loss(results: PathResults, config: SimulationConfig) -> np.ndarray:
    return np.maximum(0.0, 1.0 - results.scalars["lp_moic"])


def _var(alpha: float) -> Statistic:
    return lambda rows: metrics.value_at_risk(rows, alpha)


def _cvar(alpha: float) -> Statistic:
    return lambda rows: metrics.conditional_value_at_risk(rows, alpha)


FIGURES: tuple[Figure, ...] = (
    Figure("lp_net_irr", _scalar("lp_net_irr")),
    Figure("lp_moic", _scalar("lp_moic")),
    Figure("lp_dpi", _scalar("lp_dpi")),
    Figure("gp_carry", _scalar("gp_carry")),
    Figure("wal_years", _scalar("wal_years")),
    Figure("prob_hurdle", _cleared_hurdle),
    Figure("capital_var_95", _capital_loss, _var(0.95)),
    Figure("capital_var_99", _capital_loss, _var(0.99)),
    Figure("capital_cvar_95", _capital_loss, _cvar(0.95)),
    Figure("capital_cvar_99", _capital_loss, _cvar(0.99)),
    Figure("irr_p5", _scalar("lp_net_irr"), lambda rows: np.quantile(rows, 0.05, axis=1)),
)
FIGURE_NAMES = tuple(f.name for f in FIGURES)


@dataclass(frozen=True)
class Guardrail:
    """A fund guardrail on one figure (domain §9.4): breached when the figure is above ``limit`` (``upper``)
    or below it."""

    rule: str
    figure: str
    upper: bool
    limit: Callable[[SimulationConfig], float]


def _breached(value: float, limit: float, upper: bool) -> bool:
    return bool(np.isfinite(value) and (value > limit if upper else value < limit))


GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail("capital_var_99_max", "capital_var_99", True, lambda c: 0.15),
    Guardrail("capital_cvar_99_max", "capital_cvar_99", True, lambda c: 0.20),
    Guardrail("hurdle_probability_min", "prob_hurdle", False, lambda c: 0.70),
    Guardrail("irr_p5_min", "irr_p5", False, lambda c: c.waterfall.hurdle_rate - 0.025),
    Guardrail("wal_max", "wal_years", True, lambda c: 8.0),
)


# --- Outcomes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureDelta:
    """A figure of the base and of the stressed run, over the paths where both are defined, and the
    paired change with its 95 % interval."""

    figure: str
    base: float
    stressed: float
    delta: Estimate


@dataclass(frozen=True)
class GuardrailCheck:
    rule: str
    figure: str
    limit: float
    upper: bool  # the figure must stay at or below the limit (else at or above)
    base: float
    stressed: float
    base_breached: bool
    stressed_breached: bool


@dataclass(frozen=True)
class ScenarioOutcome:
    name: str
    description: str
    stress: Stress
    figures: tuple[FigureDelta, ...]
    dpi_path: tuple[FigureDelta, ...]  # LP DPI at each year end, years 0..term
    guardrails: tuple[GuardrailCheck, ...]

    def figure(self, name: str) -> FigureDelta:
        return next(f for f in self.figures if f.figure == name)


@dataclass(frozen=True)
class StressReport:
    paths: int
    seed: int
    scenarios: tuple[ScenarioOutcome, ...]


def compare(config: SimulationConfig, scenario: Scenario, base: PathResults, stressed: PathResults) -> ScenarioOutcome:
    """Every figure of ``stressed`` against ``base``, path by path."""
    by_name = _figure_deltas(config, base, stressed)
    figures = tuple(by_name[f.name] for f in FIGURES)
    dpi_base, dpi_stressed = base.yearly["lp_dpi"], stressed.yearly["lp_dpi"]
    dpi_path = tuple(_mean_figure(f"lp_dpi_year_{year}", dpi_base[:, year], dpi_stressed[:, year])
                     for year in range(dpi_base.shape[1]))
    checks = []
    for rail in GUARDRAILS:
        limit = rail.limit(config)
        figure = by_name[rail.figure]
        checks.append(GuardrailCheck(rail.rule, rail.figure, limit, rail.upper, figure.base, figure.stressed,
                                     _breached(figure.base, limit, rail.upper),
                                     _breached(figure.stressed, limit, rail.upper)))
    return ScenarioOutcome(scenario.name, scenario.description, scenario.stress, figures, dpi_path, tuple(checks))


def _figure_deltas(config: SimulationConfig, base: PathResults, stressed: PathResults) -> dict[str, FigureDelta]:
    """Every figure; the bootstrapped ones that read the same per-path values share their resamples."""
    out: dict[str, FigureDelta] = {}
    groups: dict[Values, list[Figure]] = {}
    for figure in FIGURES:
        if figure.statistic is None:
            out[figure.name] = _mean_figure(figure.name, figure.values(base, config), figure.values(stressed, config))
        else:
            groups.setdefault(figure.values, []).append(figure)
    for values, members in groups.items():
        before, after = values(base, config), values(stressed, config)
        both = np.isfinite(before) & np.isfinite(after)
        deltas = bootstrap_deltas(before, after, [f.statistic for f in members], config.monte_carlo.seed)
        for figure, delta in zip(members, deltas):
            point = [float(figure.statistic(np.sort(v[both])[np.newaxis, :])[0]) if both.any() else float("nan")
                     for v in (before, after)]
            out[figure.name] = FigureDelta(figure.name, point[0], point[1], delta)
    return out


def _mean_figure(name: str, before: np.ndarray, after: np.ndarray) -> FigureDelta:
    both = np.isfinite(before) & np.isfinite(after)
    means = [float(v[both].mean()) if both.any() else float("nan") for v in (before, after)]
    return FigureDelta(name, means[0], means[1], mean_delta(before, after))


# --- Running ------------------------------------------------------------------------------------------


def stressed_config(config: SimulationConfig, stress: Stress) -> SimulationConfig:
    """``config`` under ``stress``, validated as a whole (e.g. the shock month inside the fund term)."""
    return load_config({**config.model_dump(mode="json"), "stress": stress.model_dump(mode="json")})


def check_unstressed(config: SimulationConfig) -> None:
    if not config.stress.is_neutral:
        raise ValueError("the base of a stress test must be unstressed: give the stress as a scenario")


def stress_test(config: SimulationConfig, scenarios: Sequence[Scenario], *, progress: RunsProgress | None = None,
                cancelled: CancelCheck | None = None, executor: ChunkExecutor | None = None) -> StressReport:
    """The base and every scenario on the same random numbers, each scenario against the base."""
    check_unstressed(config)
    variants = [stressed_config(config, s.stress) for s in scenarios]
    results = runs([config, *variants], progress=progress, cancelled=cancelled, executor=executor)
    base = next(results)
    outcomes = tuple(compare(config, s, base, r) for s, r in zip(scenarios, results))  # one run held at a time
    return StressReport(paths=len(base.scalars["lp_net_irr"]), seed=config.monte_carlo.seed, scenarios=outcomes)


# --- Grid ---------------------------------------------------------------------------------------------


def _all_zones(field: str) -> Callable[[float], dict[str, Any]]:
    return lambda value: {field: {zone: value for zone in ZONES}}


# What a grid axis moves: its value is set for every zone (or the one scalar), over the template stress.
GRID_AXES: dict[str, Callable[[float], dict[str, Any]]] = {
    "price_shock": _all_zones("price_shock"),
    "drift_shift": _all_zones("drift_shift"),
    "vol_multiplier": _all_zones("vol_multiplier"),
    "default_multiplier": _all_zones("default_multiplier"),
    "exit_multiplier": _all_zones("exit_multiplier"),
    "recovery_haircut": lambda value: {"recovery_haircut": value},
}
MAX_GRID_STEPS = 11
# The window a grid's drift and volatility axes act over, unless the template says otherwise.
GRID_TEMPLATE = Stress(price_shock_month=24, window_start_month=24, window_end_month=60)


@dataclass(frozen=True)
class GridAxis:
    parameter: str
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.parameter not in GRID_AXES:
            raise ValueError(f"parameter: unknown grid axis {self.parameter!r}; one of {sorted(GRID_AXES)}")
        if not 1 <= len(self.values) <= MAX_GRID_STEPS:
            raise ValueError(f"values: between 1 and {MAX_GRID_STEPS} steps")


@dataclass(frozen=True)
class GridReport:
    x: GridAxis
    y: GridAxis
    paths: int
    seed: int
    cells: tuple[tuple[ScenarioOutcome, ...], ...]  # cells[i][j]: x.values[i], y.values[j]


def grid_stress(x: GridAxis, y: GridAxis, template: Stress = GRID_TEMPLATE) -> list[list[Scenario]]:
    """The stress of every cell: the template with the two axes' values."""
    if x.parameter == y.parameter:
        raise ValueError("y.parameter: the two axes must move different parameters")
    base = template.model_dump(mode="json")
    return [[Scenario(f"{x.parameter}={vx:g}, {y.parameter}={vy:g}",
                      Stress.model_validate({**base, **GRID_AXES[x.parameter](vx), **GRID_AXES[y.parameter](vy)}))
             for vy in y.values] for vx in x.values]


def run_grid(config: SimulationConfig, x: GridAxis, y: GridAxis, template: Stress = GRID_TEMPLATE, *,
             progress: RunsProgress | None = None, cancelled: CancelCheck | None = None,
             executor: ChunkExecutor | None = None) -> GridReport:
    cells = grid_stress(x, y, template)
    flat = [cell for row in cells for cell in row]
    report = stress_test(config, flat, progress=progress, cancelled=cancelled, executor=executor)
    rows = tuple(tuple(report.scenarios[i * len(y.values):(i + 1) * len(y.values)]) for i in range(len(x.values)))
    return GridReport(x=x, y=y, paths=report.paths, seed=report.seed, cells=rows)
