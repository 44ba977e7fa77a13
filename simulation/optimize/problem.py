"""The allocation problem over the asset path matrix, stated with cvxpy and solved by Clarabel.

Weights ``w ≥ 0`` over the assets sum to 1. Constraints: zone bounds (on each zone's total weight), region
bounds (on each region's total, when the assets are zone × region), zone HHI ``Σ z_j² ≤ h`` (a second-order
cone), turnover ``½ Σ |z_j − current_j| ≤ T``, and two tail limits over the ``K`` paths (Rockafellar–
Uryasev): capital CVaR 95 % ``α + Σ_k (ℓ_k − α)⁺ / (0.05 K) ≤ L`` with ``ℓ_k = (1 − M_k·w)⁺``, and the
probability of clearing the hurdle, ``P(R_k·w ≥ h) ≥ p``, replaced by its convex (CVaR) inner approximation
``CVaR_p(h − R·w) ≤ 0``: the mean IRR of the worst ``1 − p`` of paths is at least the hurdle. That implies
the probability constraint (it is conservative); the probability actually reached is reported.

Objectives: maximum Sharpe (the convex reformulation of domain §6.2: ``min yᵀΣy`` s.t. ``(μ − r_f)·y = 1``
and every constraint scaled by ``κ = Σy``; ``w = y / κ``), minimum variance, minimum variance for a target
mean, maximum mean, maximum ``μ·w − λ wᵀΣw``, and maximum mean under the tail limits. Mean and covariance
are those of the paths (sample covariance, ddof 1), so the variance is the path variance of ``R·w``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from simulation.config import ZONES

from .assets import ReturnPaths
from .spec import NO_EXCESS_RETURN, Goal, Limits, Objective, OptimizationError

SOLVER = cp.CLARABEL
CVAR_TAIL = 0.05  # capital CVaR 95 %
BINDING_TOLERANCE = 1e-5
MIN_PATHS = 20  # a 5 % tail of at least one path


@dataclass(frozen=True)
class Binding:
    """A constraint active at the solution: its value there and its limit."""

    name: str
    value: float
    limit: float


@dataclass(frozen=True)
class Solution:
    weights: np.ndarray  # per asset, ≥ 0, sum 1
    zone_weights: np.ndarray  # per ZONES
    region_weights: dict[str, float]  # per region; empty when the assets are whole zones
    binding: tuple[Binding, ...]


class AllocationModel:
    """The feasible set of one request over one path matrix; solves any objective on it."""

    def __init__(self, paths: ReturnPaths, limits: Limits, goal: Goal):
        if paths.paths < MIN_PATHS:
            raise OptimizationError(
                "TOO_FEW_PATHS",
                f"only {paths.paths} paths have an LP IRR for every asset ({paths.dropped_paths} have none); "
                f"at least {MIN_PATHS} are needed",
            )
        self.paths, self.limits, self.goal = paths, limits, goal
        self.zone_matrix = np.array(
            [[1.0 if a.zone == z else 0.0 for a in paths.assets] for z in range(len(ZONES))]
        )
        self.regions = sorted({a.region for a in paths.assets if a.region is not None})
        self.region_matrix = np.array(
            [[1.0 if a.region == r else 0.0 for a in paths.assets] for r in self.regions]
        )
        self.mean = paths.irr.mean(axis=0)
        self.covariance = np.atleast_2d(np.cov(paths.irr, rowvar=False, ddof=1))
        self._check_limits()

    # --- the feasible set, scaled by ``s`` (1, or κ in the max-Sharpe form) -----------------------------

    def constraints(self, w: cp.Variable, s: cp.Expression | float) -> list[cp.Constraint]:
        limits, k = self.limits, self.paths.paths
        zones = self.zone_matrix @ w
        out = [w >= 0, cp.sum(w) == s]
        for z, (low, high) in enumerate(limits.zone_bounds):
            if self.zone_matrix[z].any():
                out += [zones[z] >= low * s, zones[z] <= high * s]
        for r, name in enumerate(self.regions):
            low, high = limits.region_bounds.get(name, (0.0, 1.0))
            totals = self.region_matrix[r] @ w
            out += [totals >= low * s, totals <= high * s]
        if limits.max_zone_hhi is not None:
            out.append(cp.norm(zones, 2) <= np.sqrt(limits.max_zone_hhi) * s)
        if limits.max_turnover is not None:
            current = np.asarray(limits.current, dtype=float)
            out.append(cp.norm(zones - current * s, 1) <= 2.0 * limits.max_turnover * s)
        if limits.max_capital_cvar_95 is not None:
            alpha = cp.Variable()
            loss = cp.pos(s - self.paths.moic @ w)
            out.append(
                alpha + cp.sum(cp.pos(loss - alpha)) / (CVAR_TAIL * k) <= limits.max_capital_cvar_95 * s
            )
        if limits.min_prob_hurdle is not None and limits.min_prob_hurdle > 0.0:
            beta = cp.Variable()
            shortfall = self.goal.hurdle_rate * s - self.paths.irr @ w
            tail = 1.0 - limits.min_prob_hurdle
            out.append(beta + cp.sum(cp.pos(shortfall - beta)) / (tail * k) <= 0.0)
        return out

    def _check_limits(self) -> None:
        lows = sum(low for z, (low, _) in enumerate(self.limits.zone_bounds) if self.zone_matrix[z].any())
        highs = sum(high for z, (_, high) in enumerate(self.limits.zone_bounds) if self.zone_matrix[z].any())
        if lows > 1.0 + 1e-12 or highs < 1.0 - 1e-12:
            raise OptimizationError(
                "BOUNDS_INFEASIBLE",
                f"the zone bounds admit no weights summing to 1 "
                f"(minimums sum to {lows:g}, maximums to {highs:g})",
            )

    # --- objectives ------------------------------------------------------------------------------------

    def solve(self, objective: Objective | None = None, target_return: float | None = None) -> Solution:
        objective = objective or self.goal.objective
        if objective is Objective.MAX_SHARPE:
            return self._max_sharpe()
        w = cp.Variable(len(self.paths.assets))
        mean, variance = self.mean @ w, cp.quad_form(w, cp.psd_wrap(self.covariance))
        extra: list[cp.Constraint] = []
        if objective in (Objective.MAX_RETURN, Objective.MAX_RETURN_CVAR_LIMITED):
            goal = cp.Maximize(mean)
        elif objective is Objective.MEAN_VARIANCE_UTILITY:
            goal = cp.Maximize(mean - self.goal.risk_aversion * variance)
        else:
            goal = cp.Minimize(variance)
            target = self.goal.target_return if objective is Objective.TARGET_RETURN else target_return
            if target is not None:
                extra.append(mean >= target)
        problem = cp.Problem(goal, self.constraints(w, 1.0) + extra)
        self._run(problem, objective)
        return self.solution(w.value)

    def _max_sharpe(self) -> Solution:
        best_mean = self._solution_mean(self.solve(Objective.MAX_RETURN))
        if best_mean <= self.goal.risk_free_rate:
            raise OptimizationError(
                NO_EXCESS_RETURN,
                f"no allowed allocation has a mean LP IRR above the risk-free rate "
                f"{self.goal.risk_free_rate:g} (the best is {best_mean:.4f}); the Sharpe ratio has no maximum",
            )
        y, kappa = cp.Variable(len(self.paths.assets)), cp.Variable(nonneg=True)
        excess = (self.mean - self.goal.risk_free_rate) @ y
        problem = cp.Problem(
            cp.Minimize(cp.quad_form(y, cp.psd_wrap(self.covariance))),
            [excess == 1.0, *self.constraints(y, kappa)],
        )
        self._run(problem, Objective.MAX_SHARPE)
        return self.solution(y.value / kappa.value)

    def _solution_mean(self, solution: Solution) -> float:
        return float(self.mean @ solution.weights)

    def _run(self, problem: cp.Problem, objective: Objective) -> None:
        try:
            problem.solve(solver=SOLVER)
        except cp.error.SolverError as failure:
            raise OptimizationError(
                "SOLVER_FAILED", f"the solver failed on {objective.value}: {failure}"
            ) from None
        if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            raise OptimizationError(
                "CONSTRAINTS_INFEASIBLE",
                "no allocation satisfies every constraint "
                "(zone and region bounds, HHI, turnover, tail limits and target return)",
            )
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            raise OptimizationError(
                "SOLVER_FAILED", f"the solver ended {problem.status} on {objective.value}"
            )

    # --- a solution, cleaned and explained ------------------------------------------------------------

    def solution(self, raw: np.ndarray) -> Solution:
        weights = self.clean(raw)
        zones = self.zone_matrix @ weights
        regions = dict(zip(self.regions, (self.region_matrix @ weights).tolist())) if self.regions else {}
        return Solution(weights, zones, regions, tuple(self.binding(weights)))

    def clean(self, raw: np.ndarray) -> np.ndarray:
        """Solver round-off removed: negatives to 0, then the weights rescaled to sum to exactly 1."""
        weights = np.maximum(np.asarray(raw, dtype=float), 0.0)
        return weights / weights.sum()

    def binding(self, weights: np.ndarray) -> list[Binding]:
        """Every constraint at its limit (within ``BINDING_TOLERANCE``) at ``weights``."""
        limits, found = self.limits, []
        zones = self.zone_matrix @ weights

        def check(name: str, value: float, limit: float, upper: bool = True) -> None:
            if (value >= limit - BINDING_TOLERANCE) if upper else (value <= limit + BINDING_TOLERANCE):
                found.append(Binding(name, float(value), float(limit)))

        for z, (low, high) in enumerate(limits.zone_bounds):
            if self.zone_matrix[z].any():
                check(f"zone_bounds.{ZONES[z]}.max", zones[z], high)
                check(f"zone_bounds.{ZONES[z]}.min", zones[z], low, upper=False)
        for r, name in enumerate(self.regions):
            low, high = limits.region_bounds.get(name, (0.0, 1.0))
            total = self.region_matrix[r] @ weights
            check(f"region_bounds.{name}.max", total, high)
            if low > 0.0:
                check(f"region_bounds.{name}.min", total, low, upper=False)
        if limits.max_zone_hhi is not None:
            check("max_zone_hhi", float(zones @ zones), limits.max_zone_hhi)
        if limits.max_turnover is not None:
            check("max_turnover", turnover(zones, np.asarray(limits.current)), limits.max_turnover)
        if limits.max_capital_cvar_95 is not None:
            loss = np.maximum(0.0, 1.0 - self.paths.moic @ weights)
            check("max_capital_cvar_95", tail_mean(loss, CVAR_TAIL), limits.max_capital_cvar_95)
        if limits.min_prob_hurdle is not None and limits.min_prob_hurdle > 0.0:
            worst = -tail_mean(-(self.paths.irr @ weights), 1.0 - limits.min_prob_hurdle)
            check("min_prob_hurdle", worst, self.goal.hurdle_rate, upper=False)
        return found


def turnover(zones: np.ndarray, current: np.ndarray) -> float:
    """The share of the book that moves: ½ Σ |target − current|."""
    return float(0.5 * np.abs(zones - current).sum())


def tail_mean(values: np.ndarray, tail: float) -> float:
    """Rockafellar–Uryasev CVaR of ``values`` (large is bad) over the worst ``tail`` of paths: the mean of
    the worst ``tail·K`` values, the boundary path counted by its fraction."""
    ordered = np.sort(values)[::-1]
    size = tail * len(ordered)
    whole = int(np.floor(size + 1e-9))
    total = ordered[:whole].sum() + (size - whole) * (ordered[whole] if whole < len(ordered) else 0.0)
    return float(total / size)
