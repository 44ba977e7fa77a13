"""OptimizeAllocation between protobuf and the optimiser: the request checked field by field into an
engine config and an optimiser ``Request``; an ``Outcome`` into an ``Optimization``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from google.protobuf import duration_pb2

from equihome.optimization.v1 import allocation_pb2
from equihome.optimization.v1 import optimization_service_pb2 as service_pb2
from equihome.type.v1 import metrics_pb2, zone_pb2
from server.errors import InvalidArgument
from simulation.config import ZONES, SimulationConfig
from simulation.optimize.spec import DEFAULT_ZONE_BOUNDS, GUARDRAIL_ZONE_CAPS, Limits, Objective, Request
from simulation.optimize.surrogate import PointMetrics
from simulation.results import SimulationResult

if TYPE_CHECKING:  # the run module loads the solver, which the server process does not need
    from simulation.optimize.run import Outcome, Point

MIN_PATHS, MAX_PATHS = 100, 20_000
MAX_FRONTIER_POINTS = 100
DEFAULT_FRONTIER_POINTS = 20
MAX_REGIONS_OPTIMISED = 8  # 3 × 8 sub-funds
MAX_REGION_BOUNDS = 64
MAX_RISK_AVERSION = 1000.0
OBJECTIVES = {
    allocation_pb2.OBJECTIVE_UNSPECIFIED: Objective.MAX_SHARPE,
    allocation_pb2.OBJECTIVE_MAX_SHARPE: Objective.MAX_SHARPE,
    allocation_pb2.OBJECTIVE_MIN_VARIANCE: Objective.MIN_VARIANCE,
    allocation_pb2.OBJECTIVE_MAX_RETURN: Objective.MAX_RETURN,
    allocation_pb2.OBJECTIVE_TARGET_RETURN: Objective.TARGET_RETURN,
    allocation_pb2.OBJECTIVE_MEAN_VARIANCE_UTILITY: Objective.MEAN_VARIANCE_UTILITY,
    allocation_pb2.OBJECTIVE_MAX_RETURN_CVAR_LIMITED: Objective.MAX_RETURN_CVAR_LIMITED,
}
OBJECTIVE_VALUES = {objective: value for value, objective in OBJECTIVES.items() if value}
ZONE_VALUES = (zone_pb2.ZONE_GREEN, zone_pb2.ZONE_ORANGE, zone_pb2.ZONE_RED)


def check_request(request: service_pb2.OptimizeAllocationRequest) -> None:
    """Refuse every out-of-range option at once (the config is checked by admission)."""
    problems = list(_violations(request))
    if problems:
        raise InvalidArgument(
            "The optimisation request is invalid; the field violations list every problem.",
            problems,
            reason="OPTIMIZATION_INVALID",
        )


def _violations(request: service_pb2.OptimizeAllocationRequest) -> Iterator[tuple[str, str]]:
    if request.objective not in OBJECTIVES:
        yield "objective", "unknown objective"
    for zone in ZONES:
        bounds = getattr(request.zone_bounds, zone)
        yield from _bounds_violations(bounds, f"zone_bounds.{zone}")
    ranges = (
        ("max_region_share", 1e-9, 1.0),
        ("target_return", -1.0, 1.0),
        ("risk_aversion", 0.0, MAX_RISK_AVERSION),
        ("max_capital_cvar_95", 0.0, 1.0),
        ("min_prob_hurdle", 0.0, 0.999),
        ("max_zone_hhi", 1.0 / 3.0, 1.0),
        ("max_turnover", 0.0, 1.0),
    )
    for name, low, high in ranges:
        if request.HasField(name):
            value = getattr(request, name)
            if not (math.isfinite(value) and low <= value <= high):
                yield name, f"must lie within [{low:g}, {high:g}]"
    if request.objective == allocation_pb2.OBJECTIVE_TARGET_RETURN and not request.HasField("target_return"):
        yield "target_return", "required with OBJECTIVE_TARGET_RETURN"
    if request.HasField("frontier_points") and not 2 <= request.frontier_points <= MAX_FRONTIER_POINTS:
        yield "frontier_points", f"must lie within [2, {MAX_FRONTIER_POINTS}]"
    if request.HasField("paths") and not MIN_PATHS <= request.paths <= MAX_PATHS:
        yield "paths", f"must lie within [{MIN_PATHS}, {MAX_PATHS}]"
    if request.HasField("seed") and request.seed >= 2**63:
        yield "seed", "must be below 2^63"
    if len(request.region_bounds) > MAX_REGION_BOUNDS:
        yield "region_bounds", f"at most {MAX_REGION_BOUNDS} items"
    elif request.region_bounds and not request.optimize_regions:
        yield "region_bounds", "only used with optimize_regions"
    seen: set[str] = set()
    for index, item in enumerate(request.region_bounds[:MAX_REGION_BOUNDS]):
        field = f"region_bounds[{index}]"
        if not item.region or len(item.region) > 64:
            yield f"{field}.region", "must be 1 to 64 characters"
        elif item.region in seen:
            yield f"{field}.region", "appears twice"
        seen.add(item.region)
        yield from _bounds_violations(item.bounds, f"{field}.bounds")
    if request.send_recommendations and not request.portfolio_id:
        yield "send_recommendations", "requires portfolio_id"


def _bounds_violations(bounds: allocation_pb2.WeightBounds, field: str) -> Iterator[tuple[str, str]]:
    for side in ("min", "max"):
        if bounds.HasField(side) and not (
            math.isfinite(getattr(bounds, side)) and 0.0 <= getattr(bounds, side) <= 1.0
        ):
            yield f"{field}.{side}", "must lie within [0, 1]"
    if bounds.HasField("min") and bounds.HasField("max") and bounds.min > bounds.max:
        yield f"{field}.min", "must not exceed max"


def run_config(request: service_pb2.OptimizeAllocationRequest, config: SimulationConfig) -> SimulationConfig:
    """``config`` with the request's paths and seed."""
    mc = config.monte_carlo
    update = {
        "paths": request.paths if request.HasField("paths") else mc.paths,
        "seed": request.seed if request.HasField("seed") else mc.seed,
    }
    return config.model_copy(update={"monte_carlo": mc.model_copy(update=update)})


def check_against_config(request: service_pb2.OptimizeAllocationRequest, config: SimulationConfig) -> None:
    """What can only be checked with the fund at hand: its regions and its path count."""
    problems = []
    names = {region.name for region in config.book.regions}
    for index, item in enumerate(request.region_bounds):
        if item.region not in names:
            problems.append((f"region_bounds[{index}].region", "not a region of the fund's book"))
    if request.optimize_regions and len(names) > MAX_REGIONS_OPTIMISED:
        problems.append(
            (
                "optimize_regions",
                f"at most {MAX_REGIONS_OPTIMISED} regions can be optimised; the book has {len(names)}",
            )
        )
    if not MIN_PATHS <= config.monte_carlo.paths <= MAX_PATHS or config.monte_carlo.deterministic:
        problems.append(("paths", f"the optimiser runs {MIN_PATHS} to {MAX_PATHS} random paths"))
    if not problems:
        problems += _weight_sum_violations(optimizer_request(request, config).limits)
    if problems:
        raise InvalidArgument(
            "The optimisation request does not fit the fund; the field violations say why.",
            problems,
            reason="OPTIMIZATION_INVALID",
        )


def _weight_sum_violations(limits: Limits) -> list[tuple[str, str]]:
    """Bounds whose minimums add up to more than 1, or maximums to less: no weights can sum to 1."""
    problems = []
    groups = (("zone_bounds", limits.zone_bounds), ("region_bounds", tuple(limits.region_bounds.values())))
    for field, bounds in groups:
        if not bounds:
            continue
        lows, highs = sum(low for low, _ in bounds), sum(high for _, high in bounds)
        if lows > 1.0 + 1e-12 or highs < 1.0 - 1e-12:
            problems.append((field, f"minimums sum to {lows:g} and maximums to {highs:g}; weights sum to 1"))
    return problems


def optimizer_request(request: service_pb2.OptimizeAllocationRequest, config: SimulationConfig) -> Request:
    zone_bounds = []
    for index, zone in enumerate(ZONES):
        bounds, (low, high) = getattr(request.zone_bounds, zone), DEFAULT_ZONE_BOUNDS[index]
        low = bounds.min if bounds.HasField("min") else low
        high = bounds.max if bounds.HasField("max") else high
        if request.apply_guardrail_caps:
            high = min(high, GUARDRAIL_ZONE_CAPS[index])
        zone_bounds.append((low, high))
    share = request.max_region_share if request.HasField("max_region_share") else 1.0
    region_bounds = {region.name: (0.0, share) for region in config.book.regions}
    for item in request.region_bounds:
        region_bounds[item.region] = (
            item.bounds.min if item.bounds.HasField("min") else 0.0,
            item.bounds.max if item.bounds.HasField("max") else share,
        )
    limits = Limits(
        zone_bounds=tuple(zone_bounds),
        region_bounds=region_bounds if request.optimize_regions else {},
        max_zone_hhi=_optional(request, "max_zone_hhi"),
        max_turnover=_optional(request, "max_turnover"),
        max_capital_cvar_95=_optional(request, "max_capital_cvar_95"),
        min_prob_hurdle=_optional(request, "min_prob_hurdle"),
    )
    return Request(
        limits=limits,
        objective=OBJECTIVES[request.objective],
        target_return=_optional(request, "target_return"),
        risk_aversion=request.risk_aversion if request.HasField("risk_aversion") else 2.0,
        optimize_regions=request.optimize_regions,
        frontier_points=request.frontier_points
        if request.HasField("frontier_points")
        else DEFAULT_FRONTIER_POINTS,
        resimulate_key_points=request.resimulate_key_points,
    )


def _optional(message: object, name: str) -> float | None:
    return getattr(message, name) if message.HasField(name) else None  # type: ignore[attr-defined]


# --- the outcome ------------------------------------------------------------------------------------------


def optimization_proto(
    outcome: Outcome, config: SimulationConfig, *, engine_version: str, elapsed_seconds: float
) -> service_pb2.Optimization:
    """Everything but the id, owner, portfolio, time and deliveries, which the service sets."""
    recommended = outcome.recommendation
    return service_pb2.Optimization(
        objective=OBJECTIVE_VALUES[outcome.objective],
        recommendation=recommendation(outcome),
        recommended=point_proto(recommended),
        current=point_proto(outcome.current),
        frontier=[point_proto(point) for point in outcome.frontier],
        max_sharpe=point_proto(outcome.max_sharpe) if outcome.max_sharpe is not None else None,
        min_risk=point_proto(outcome.min_risk),
        binding_constraints=[
            allocation_pb2.BindingConstraint(name=b.name, value=b.value, limit=b.limit)
            for b in recommended.solution.binding
        ],
        investable_capital=outcome.investable_capital,
        currency=config.fund.currency,
        paths=outcome.paths,
        seed=config.monte_carlo.seed,
        engine_version=engine_version,
        elapsed=_duration(elapsed_seconds),
    )


def recommendation(outcome: Outcome) -> allocation_pb2.AllocationRecommendation:
    point = outcome.recommendation
    message = allocation_pb2.AllocationRecommendation(
        target_allocation=zone_weights(point.solution.zone_weights),
        region_allocations=region_weights(point.solution.region_weights),
        actions=[
            allocation_pb2.AllocationAction(
                action_type=allocation_pb2.ACTION_TYPE_INCREASE_ALLOCATION
                if action.amount > 0
                else allocation_pb2.ACTION_TYPE_DECREASE_ALLOCATION,
                zone=ZONE_VALUES[ZONES.index(action.zone)],
                amount=abs(action.amount),
            )
            for action in outcome.actions
        ],
    )
    if point.result is not None:
        message.expected_metrics.CopyFrom(expected_metrics(point.result))
    return message


def expected_metrics(result: SimulationResult) -> metrics_pb2.PortfolioMetrics:
    """The PMS ``expected_metrics`` of a re-simulated allocation: means of the LP net figures, and the risk."""
    tails = {tail.confidence: tail for tail in result.risk.tails}
    risk = result.risk
    return metrics_pb2.PortfolioMetrics(
        irr=result.metrics["lp_net_irr"].mean,
        equity_multiple=result.metrics["lp_moic"].mean,
        roi=result.metrics["lp_roi"].mean,
        sharpe_ratio=risk.sharpe,
        sortino_ratio=risk.sortino,
        var_95=tails[0.95].capital_var,
        var_99=tails[0.99].capital_var,
        cvar_95=tails[0.95].capital_cvar,
        cvar_99=tails[0.99].capital_cvar,
        volatility=risk.volatility,
        prob_hurdle=risk.prob_hurdle,
    )


def point_proto(point: Point) -> allocation_pb2.FrontierPoint:
    message = allocation_pb2.FrontierPoint(
        weights=zone_weights(point.solution.zone_weights),
        region_weights=region_weights(point.solution.region_weights),
        surrogate=figures(point.surrogate),
    )
    if point.resimulated is not None and point.gap is not None:
        message.resimulated.CopyFrom(figures(point.resimulated))
        message.gap.CopyFrom(figures(point.gap))
    return message


def figures(metrics: PointMetrics) -> allocation_pb2.AllocationFigures:
    return allocation_pb2.AllocationFigures(
        expected_return=metrics.expected_return,
        volatility=metrics.volatility,
        capital_cvar_95=metrics.capital_cvar_95,
        sharpe_ratio=metrics.sharpe_ratio,
        prob_hurdle=metrics.prob_hurdle,
        expected_moic=metrics.expected_moic,
    )


def zone_weights(weights: np.ndarray) -> zone_pb2.ZoneWeights:
    return zone_pb2.ZoneWeights(**{zone: float(w) for zone, w in zip(ZONES, weights)})


def region_weights(weights: dict[str, float]) -> list[zone_pb2.RegionWeight]:
    return [zone_pb2.RegionWeight(region=name, weight=weight) for name, weight in weights.items()]


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration
