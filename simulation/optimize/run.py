"""One optimisation from a fund config: simulate the assets, solve, trace the frontier, re-simulate.

The surrogate (``R_k · w`` on the asset paths) is linear in the weights, the fund is not (fees, carry and the
waterfall), so the recommended allocation — and, when asked, the frontier's key points and the current
allocation — are run again through the whole engine as a fund generated at those weights. Both figures
are reported, with their gap (re-simulated − surrogate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from simulation import engine
from simulation.config import ZONES, SimulationConfig
from simulation.executors import CancelCheck, ChunkExecutor
from simulation.results import SimulationResult

from .assets import ReturnPaths, allocation_config, simulate_assets, zone_assets, zone_region_assets
from .frontier import efficient_frontier
from .problem import AllocationModel, Solution
from .spec import (
    NO_EXCESS_RETURN,
    Goal,
    Objective,
    OptimizationError,
    Request,
    effective_request,
    simulation_runs,
)
from .surrogate import TAIL_CONFIDENCE, PointMetrics, point_metrics

ACTION_TOLERANCE = 1e-6  # a zone whose weight moves by less than this share of the capital gets no action


@dataclass(frozen=True)
class Point:
    """An allocation with its surrogate metrics and, when re-simulated, the engine's."""

    solution: Solution
    surrogate: PointMetrics
    resimulated: PointMetrics | None = None
    result: SimulationResult | None = None

    @property
    def gap(self) -> PointMetrics | None:
        if self.resimulated is None:
            return None
        return PointMetrics(*(r - s for r, s in zip(_values(self.resimulated), _values(self.surrogate))))


@dataclass(frozen=True)
class Action:
    zone: str
    amount: float  # > 0 increases the zone, < 0 decreases it, fund currency


@dataclass(frozen=True)
class Outcome:
    recommendation: Point
    current: Point
    frontier: tuple[Point, ...]  # ascending volatility
    max_sharpe: Point | None  # None where no allowed mix beats the risk-free rate
    min_risk: Point
    actions: tuple[Action, ...]
    investable_capital: float
    paths: int  # paths in the surrogate (after dropping any with an undefined IRR)
    dropped_paths: int
    objective: Objective


@dataclass
class Work:
    """Progress in units: each simulated path of each run, and each frontier point."""

    total: int
    done: int = 0
    report: Callable[[int, int], None] | None = None
    cancelled: CancelCheck | None = None

    def add(self, units: int) -> None:
        self.done += units
        if self.report is not None:
            self.report(min(self.done, self.total), self.total)
        if self.cancelled is not None and self.cancelled():
            raise engine.Cancelled("cancelled")


def current_weights(config: SimulationConfig, regions: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """The book's zone shares, its asset shares (zone-major, by region when ``regions``) and its principal."""
    book = engine.book_for(config)
    total = float(book.amount.sum())
    zones = np.bincount(book.zone, book.amount, len(ZONES)) / total
    if not regions:
        return zones, zones, total
    cells = np.bincount(
        book.zone * len(config.book.regions) + book.region, book.amount, len(ZONES) * len(config.book.regions)
    )
    return zones, cells / total, total


def optimize(
    config: SimulationConfig,
    request: Request,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancelled: CancelCheck | None = None,
    executor: ChunkExecutor | None = None,
) -> Outcome:
    """Optimise the zone (and region) weights of ``config``'s fund; ``progress(done, total)`` in units of paths
    simulated and frontier points, ``cancelled()`` checked between chunks and points."""
    request = effective_request(request)
    runs = simulation_runs(config, request)
    n_paths = engine.path_count(config)
    work = Work(runs * n_paths + request.frontier_points, report=progress, cancelled=cancelled)
    zones_now, assets_now, capital = current_weights(config, request.optimize_regions)
    limits = request.limits
    if limits.current is None:
        limits = replace(limits, current=tuple(zones_now.tolist()))
    assets = zone_region_assets(config) if request.optimize_regions else zone_assets()
    paths = _simulate(config, assets, work, cancelled, executor)
    goal = Goal(
        objective=request.objective,
        risk_free_rate=config.reporting.risk_free_rate,
        hurdle_rate=config.waterfall.hurdle_rate,
        target_return=request.target_return,
        risk_aversion=request.risk_aversion,
    )
    model = AllocationModel(paths, limits, goal)

    def measured(solution: Solution) -> Point:
        return Point(solution, point_metrics(paths, solution.weights, goal.risk_free_rate, goal.hurdle_rate))

    recommended = measured(model.solve())
    frontier = tuple(
        measured(s) for s in efficient_frontier(model, request.frontier_points, lambda: work.add(1))
    )
    max_sharpe = recommended if request.objective is Objective.MAX_SHARPE else _max_sharpe(model, measured)
    min_risk = frontier[0]
    current = measured(Solution(assets_now, zones_now, _region_totals(config, assets_now, request), ()))

    def resimulated(point: Point) -> Point:
        region_weights = point.solution.region_weights or None
        result = engine.run(
            allocation_config(config, point.solution.zone_weights, region_weights),
            cancelled=cancelled,
            executor=executor,
        )
        work.add(n_paths)
        return replace(point, resimulated=engine_metrics(result), result=result)

    def resimulated_once(point: Point | None) -> Point | None:
        """A key point re-simulated, unless it is the recommendation's allocation, already run (its share of
        the work is then counted done, as is an absent point's)."""
        if point is None or _same_allocation(point, recommended):
            work.add(n_paths)
            return None if point is None else replace(point, resimulated=recommended.resimulated,
                                                      result=recommended.result)
        return resimulated(point)

    recommended = resimulated(recommended)
    if request.resimulate_key_points:
        current, min_risk, max_sharpe = (resimulated_once(p) for p in (current, min_risk, max_sharpe))
    return Outcome(
        recommendation=recommended,
        current=current,
        frontier=frontier,
        max_sharpe=max_sharpe,
        min_risk=min_risk,
        actions=actions(zones_now, recommended.solution.zone_weights, capital),
        investable_capital=capital,
        paths=paths.paths,
        dropped_paths=paths.dropped_paths,
        objective=request.objective,
    )


def _same_allocation(point: Point, other: Point) -> bool:
    return (np.array_equal(point.solution.zone_weights, other.solution.zone_weights)
            and point.solution.region_weights == other.solution.region_weights)


def _max_sharpe(model: AllocationModel, measured: Callable[[Solution], Point]) -> Point | None:
    """The maximum-Sharpe point, or None where no allowed mix beats the risk-free rate."""
    try:
        return measured(model.solve(Objective.MAX_SHARPE))
    except OptimizationError as failure:
        if failure.reason != NO_EXCESS_RETURN:
            raise
        return None


def _simulate(
    config: SimulationConfig,
    assets: tuple,
    work: Work,
    cancelled: CancelCheck | None,
    executor: ChunkExecutor | None,
) -> ReturnPaths:
    base = work.done

    def report(paths_done: int) -> None:
        if work.report is not None:
            work.report(base + paths_done, work.total)

    paths = simulate_assets(config, assets, progress=report, cancelled=cancelled, executor=executor)
    work.add(len(assets) * engine.path_count(config))
    return paths


def _region_totals(config: SimulationConfig, asset_weights: np.ndarray, request: Request) -> dict[str, float]:
    if not request.optimize_regions:
        return {}
    names = [r.name for r in config.book.regions]
    by_region = asset_weights.reshape(len(ZONES), len(names)).sum(axis=0)
    return dict(zip(names, by_region.tolist()))


def actions(current: np.ndarray, target: np.ndarray, capital: float) -> tuple[Action, ...]:
    """One action per zone whose weight changes: ``(target − current) × capital``."""
    return tuple(
        Action(zone, float((t - c) * capital))
        for zone, c, t in zip(ZONES, current, target)
        if abs(t - c) > ACTION_TOLERANCE
    )


def engine_metrics(result: SimulationResult) -> PointMetrics:
    """The surrogate's figures as the engine reports them for a whole run."""
    tail = next(t for t in result.risk.tails if t.confidence == TAIL_CONFIDENCE)
    return PointMetrics(
        expected_return=result.metrics["lp_net_irr"].mean,
        volatility=result.risk.volatility,
        sharpe_ratio=result.risk.sharpe,
        capital_cvar_95=tail.capital_cvar,
        prob_hurdle=result.risk.prob_hurdle,
        expected_moic=result.metrics["lp_moic"].mean,
    )


def _values(point: PointMetrics) -> tuple[float, ...]:
    return (
        point.expected_return,
        point.volatility,
        point.sharpe_ratio,
        point.capital_cvar_95,
        point.prob_hurdle,
        point.expected_moic,
    )
