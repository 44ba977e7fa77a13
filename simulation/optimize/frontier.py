"""The efficient frontier: minimum variance for mean targets evenly spaced from the minimum-variance
allocation's mean to the highest attainable mean, every point inside the request's feasible set."""

from __future__ import annotations

from collections.abc import Callable

import cvxpy as cp
import numpy as np

from .problem import SOLVER, AllocationModel, Objective, OptimizationError, Solution

Tick = Callable[[], None]  # called after each point (progress, cancellation)


def efficient_frontier(model: AllocationModel, points: int, tick: Tick | None = None) -> list[Solution]:
    """``points`` solutions, ascending mean and volatility; the first is the minimum-variance allocation."""
    low = model.solve(Objective.MIN_VARIANCE)
    high = model.solve(Objective.MAX_RETURN)
    low_mean, high_mean = float(model.mean @ low.weights), float(model.mean @ high.weights)
    w, target = cp.Variable(len(model.paths.assets)), cp.Parameter()
    variance = cp.quad_form(w, cp.psd_wrap(model.covariance))
    problem = cp.Problem(cp.Minimize(variance), [*model.constraints(w, 1.0), model.mean @ w >= target])
    out = [low]
    if tick is not None:
        tick()
    for value in np.linspace(low_mean, high_mean, points)[1:]:
        target.value = min(float(value), high_mean - 1e-12 * max(1.0, abs(high_mean)))
        problem.solve(solver=SOLVER)
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            raise OptimizationError(
                "SOLVER_FAILED", f"the frontier point at mean {value:.6f} ended {problem.status}"
            )
        out.append(model.solution(w.value))
        if tick is not None:
            tick()
    return out
