"""The allocation optimiser against brute force, its constraints, its frontier and its re-simulation."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import engine
from simulation.config import load_config
from simulation.optimize.assets import Asset, ReturnPaths, allocation_config, asset_config, zone_assets
from simulation.optimize.frontier import efficient_frontier
from simulation.optimize.problem import AllocationModel, tail_mean
from simulation.optimize.run import actions, engine_metrics, optimize
from simulation.optimize.spec import Goal, Limits, Objective, OptimizationError, Request
from simulation.optimize.surrogate import point_metrics

RF, HURDLE = 0.03, 0.05
K = 400  # a multiple of 20, so the 5 % tail is a whole number of paths (20)


def two_zone_paths(seed: int = 7) -> ReturnPaths:
    """Green steady, orange higher and riskier, partly correlated; MOIC from a 7-year horizon."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(K)
    green = 0.045 + 0.012 * common + 0.006 * rng.standard_normal(K)
    orange = 0.065 + 0.030 * (0.5 * common + 0.87 * rng.standard_normal(K))
    irr = np.column_stack([green, orange])
    return ReturnPaths((Asset(0), Asset(1)), irr, (1.0 + irr) ** 7 - 0.25)


GRID = np.round(np.arange(0.0, 1.0 + 1e-12, 0.0005), 6)  # green weight; orange = 1 − green


def grid_figures(paths: ReturnPaths, green: np.ndarray = GRID) -> dict[str, np.ndarray]:
    """Every candidate's figures, computed directly from the paths (no optimiser code)."""
    weights = np.column_stack([green, 1.0 - green])
    irr, moic = paths.irr @ weights.T, paths.moic @ weights.T  # (K, candidates)
    mean, sd = irr.mean(axis=0), irr.std(axis=0, ddof=1)
    loss = np.sort(np.maximum(0.0, 1.0 - moic), axis=0)[::-1]
    worst_irr = np.sort(irr, axis=0)
    return {
        "mean": mean,
        "var": sd**2,
        "sharpe": (mean - RF) / sd,
        "cvar": loss[: K // 20].mean(axis=0),
        "worst_30_mean": worst_irr[: int(0.3 * K)].mean(axis=0),
        "p_hurdle": (irr >= HURDLE).mean(axis=0),
    }


def solve(
    paths: ReturnPaths, objective: Objective, limits: Limits, hurdle: float = HURDLE, **goal: float
) -> np.ndarray:
    model = AllocationModel(
        paths, limits, Goal(objective=objective, risk_free_rate=RF, hurdle_rate=hurdle, **goal)
    )
    return model.solve().weights


LOOSE = Limits(zone_bounds=((0.0, 1.0), (0.0, 1.0), (0.0, 0.0)))


@pytest.mark.parametrize(
    ("objective", "score", "goal"),
    [
        (Objective.MIN_VARIANCE, lambda f: -f["var"], {}),
        (Objective.MAX_SHARPE, lambda f: f["sharpe"], {}),
        (Objective.MEAN_VARIANCE_UTILITY, lambda f: f["mean"] - 20.0 * f["var"], {"risk_aversion": 20.0}),
    ],
)
def test_two_zone_optimum_matches_a_brute_force_simplex_grid(objective, score, goal):
    paths = two_zone_paths()
    figures = grid_figures(paths)
    best = GRID[np.argmax(score(figures))]
    weights = solve(paths, objective, LOOSE, **goal)
    assert 0.0 < best < 1.0  # an interior optimum, so the comparison is not decided by a bound
    assert weights[0] == pytest.approx(best, abs=2e-3)
    at_solution = score(grid_figures(paths, np.array([weights[0]])))[0]
    assert at_solution >= score(figures).max() - 1e-5 * abs(score(figures).max())  # no grid point does better


def test_tail_limited_optimum_matches_the_grid_under_the_same_limits():
    paths = two_zone_paths()
    figures = grid_figures(paths)
    cvar_limit, hurdle = 0.15, 0.031  # the best-returning mixes break the CVaR limit, the extremes the hurdle
    feasible = (figures["cvar"] <= cvar_limit) & (figures["worst_30_mean"] >= hurdle)
    assert feasible.any() and not feasible.all() and not feasible[-1]
    best = GRID[feasible][np.argmax(figures["mean"][feasible])]
    limits = Limits(zone_bounds=LOOSE.zone_bounds, max_capital_cvar_95=cvar_limit, min_prob_hurdle=0.70)
    weights = solve(paths, Objective.MAX_RETURN_CVAR_LIMITED, limits, hurdle)
    assert weights[0] == pytest.approx(best, abs=2e-3)
    irr = paths.irr @ weights
    assert np.mean(irr >= hurdle) >= 0.70  # the CVaR relaxation implies the probability constraint
    assert tail_mean(np.maximum(0.0, 1.0 - paths.moic @ weights), 0.05) <= cvar_limit + 1e-7


def test_tail_mean_is_the_mean_of_the_worst_share_with_a_fractional_boundary():
    values = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    assert tail_mean(values, 0.4) == pytest.approx((5 + 4) / 2)
    assert tail_mean(values, 0.5) == pytest.approx((5 + 4 + 0.5 * 3) / 2.5)


def three_zone_region_paths() -> ReturnPaths:
    rng = np.random.default_rng(3)
    assets = tuple(Asset(z, r) for z in range(3) for r in ("north", "south"))
    common = rng.standard_normal((K, 1))
    means = np.array([0.045, 0.048, 0.058, 0.061, 0.070, 0.074])
    scale = np.array([0.010, 0.011, 0.020, 0.022, 0.035, 0.036])
    irr = means + scale * (0.6 * common + 0.8 * rng.standard_normal((K, 6)))
    return ReturnPaths(assets, irr, (1.0 + irr) ** 7 - 0.3)


CONSTRAINED = Limits(
    zone_bounds=((0.30, 0.80), (0.10, 0.50), (0.00, 0.30)),
    region_bounds={"north": (0.0, 0.55), "south": (0.2, 0.7)},
    max_zone_hhi=0.45,
    max_turnover=0.25,
    current=(0.6, 0.3, 0.1),
)


@pytest.mark.parametrize("objective", list(Objective))
def test_weights_sum_to_one_and_respect_every_bound(objective):
    paths = three_zone_region_paths()
    model = AllocationModel(
        paths,
        CONSTRAINED,
        Goal(objective=objective, risk_free_rate=RF, hurdle_rate=HURDLE, target_return=0.055),
    )
    solution = model.solve()
    assert_within_limits(solution.weights, CONSTRAINED)
    assert sum(solution.region_weights.values()) == pytest.approx(1.0, abs=1e-12)


def assert_within_limits(weights: np.ndarray, limits: Limits, tol: float = 1e-6) -> None:
    assert weights.min() >= 0.0 and weights.sum() == pytest.approx(1.0, abs=1e-12)
    zones = weights.reshape(3, 2).sum(axis=1)
    regions = weights.reshape(3, 2).sum(axis=0)
    for value, (low, high) in zip(zones, limits.zone_bounds):
        assert low - tol <= value <= high + tol
    for value, name in zip(regions, ("north", "south")):
        low, high = limits.region_bounds[name]
        assert low - tol <= value <= high + tol
    assert (zones**2).sum() <= limits.max_zone_hhi + tol
    assert 0.5 * np.abs(zones - np.array(limits.current)).sum() <= limits.max_turnover + tol


def test_frontier_is_monotone_and_every_point_is_feasible():
    paths = three_zone_region_paths()
    model = AllocationModel(paths, CONSTRAINED, Goal(risk_free_rate=RF, hurdle_rate=HURDLE))
    points = efficient_frontier(model, 20)
    assert len(points) == 20
    means = np.array([paths.irr.mean(axis=0) @ p.weights for p in points])
    vols = np.array([np.std(paths.irr @ p.weights, ddof=1) for p in points])
    assert np.all(np.diff(means) >= -1e-9) and means[-1] > means[0]
    assert np.all(np.diff(vols) >= -1e-7)
    for point in points:
        assert_within_limits(point.weights, CONSTRAINED)
    # no feasible mix beats a frontier point: the minimum-variance one is below every other solve
    assert vols[0] <= np.std(paths.irr @ model.solve(Objective.MAX_SHARPE).weights, ddof=1) + 1e-7


def test_bounds_that_cannot_sum_to_one_are_refused():
    with pytest.raises(OptimizationError) as refused:
        AllocationModel(two_zone_paths(), Limits(zone_bounds=((0.0, 0.3), (0.0, 0.3), (0.0, 0.0))), Goal())
    assert refused.value.reason == "BOUNDS_INFEASIBLE"


def test_actions_move_capital_from_the_current_to_the_target_mix():
    moved = actions(np.array([0.6, 0.3, 0.1]), np.array([0.7, 0.25, 0.05]), 80_000_000.0)
    assert [(a.zone, round(a.amount, 6)) for a in moved] == [
        ("green", 8_000_000.0),
        ("orange", -4_000_000.0),
        ("red", -4_000_000.0),
    ]
    assert actions(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0]), 1e6) == ()


SMALL_FUND = {"monte_carlo": {"paths": 200, "seed": 11}}


def test_a_single_zone_allocation_is_its_own_sub_fund():
    """Surrogate and engine agree exactly where the fund is one asset: the surrogate's columns are the
    sub-funds themselves, simulated with the fund's seed."""
    config = load_config(SMALL_FUND)
    result = engine.run(asset_config(config, Asset(1)), keep_paths=True)
    alone = engine.run(allocation_config(config, np.array([0.0, 1.0, 0.0])))
    paths = ReturnPaths.of((Asset(1),), result.paths["lp_net_irr"][:, None], result.paths["lp_moic"][:, None])
    surrogate = point_metrics(
        paths, np.array([1.0]), config.reporting.risk_free_rate, config.waterfall.hurdle_rate
    )
    resimulated = engine_metrics(alone)
    assert surrogate.expected_return == pytest.approx(resimulated.expected_return, rel=1e-12)
    assert surrogate.volatility == pytest.approx(resimulated.volatility, rel=1e-12)
    assert surrogate.capital_cvar_95 == pytest.approx(resimulated.capital_cvar_95, abs=1e-12)


def test_recommendation_is_resimulated_and_its_gap_reported():
    config = load_config(SMALL_FUND)
    seen: list[tuple[int, int]] = []
    outcome = optimize(
        config, Request(frontier_points=20), progress=lambda done, total: seen.append((done, total))
    )
    point = outcome.recommendation
    weights = point.solution.zone_weights
    independent = engine.run(allocation_config(config, weights))  # the same fund, run on its own
    assert point.resimulated.expected_return == independent.metrics["lp_net_irr"].mean
    assert point.resimulated.volatility == independent.risk.volatility
    assert point.gap.expected_return == pytest.approx(
        independent.metrics["lp_net_irr"].mean - point.surrogate.expected_return, abs=1e-15
    )
    assert abs(point.gap.expected_return) < 0.005  # the surrogate is a close guide on this fund
    assert len(outcome.frontier) == 20
    assert seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    # the actions take the current book to the target: current + Σ moves / capital = target
    current = outcome.current.solution.zone_weights
    moved = np.zeros(3)
    for action in outcome.actions:
        moved[["green", "orange", "red"].index(action.zone)] += action.amount
    assert current + moved / outcome.investable_capital == pytest.approx(weights, abs=1e-6)
    assert abs(sum(a.amount for a in outcome.actions)) < 1e-3


def test_zone_assets_are_the_three_zones():
    assert [a.label for a in zone_assets()] == ["green", "orange", "red"]


def test_region_weights_are_optimised_over_zone_by_region_sub_funds():
    config = load_config(
        {
            **SMALL_FUND,
            "book": {
                "regions": [{"name": "north", "drift_spread": 0.01}, {"name": "south", "drift_spread": -0.01}]
            },
        }
    )
    limits = Limits(region_bounds={"north": (0.0, 0.6), "south": (0.0, 1.0)})
    outcome = optimize(config, Request(limits=limits, optimize_regions=True, frontier_points=4))
    solution = outcome.recommendation.solution
    assert len(solution.weights) == 6 and solution.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert set(solution.region_weights) == {"north", "south"}
    assert sum(solution.region_weights.values()) == pytest.approx(1.0, abs=1e-12)
    assert solution.region_weights["north"] <= 0.6 + 1e-7
    # the better-drifting region is capped: more of it would have raised the Sharpe ratio further
    assert "region_bounds.north.max" in [b.name for b in solution.binding]
    assert outcome.recommendation.resimulated is not None


def test_without_excess_return_the_sharpe_ratio_has_no_maximum():
    paths = two_zone_paths()
    rich = AllocationModel(paths, LOOSE, Goal(objective=Objective.MAX_SHARPE, risk_free_rate=0.5))
    with pytest.raises(OptimizationError) as refused:
        rich.solve()
    assert refused.value.reason == "NO_EXCESS_RETURN"
    config = load_config({**SMALL_FUND, "reporting": {"risk_free_rate": 0.5}})
    outcome = optimize(config, Request(objective=Objective.MIN_VARIANCE, frontier_points=3))
    assert outcome.max_sharpe is None and outcome.recommendation.resimulated is not None  # the others answer
