"""What an optimisation is asked: the objective, the bounds and limits, and the run's shape. Plain data,
free of the solver, so the server can check and price a request without loading it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from simulation.config import ZONES, SimulationConfig

DEFAULT_ZONE_BOUNDS = ((0.30, 0.80), (0.10, 0.50), (0.00, 0.30))  # domain §6.2
# Domain §9.4 guardrails: green ≤ 100 %, orange ≤ 30 %, red ≤ 5 % of NAV.
GUARDRAIL_ZONE_CAPS = (1.00, 0.30, 0.05)
DEFAULT_MAX_CAPITAL_CVAR_95 = 0.20
DEFAULT_MIN_PROB_HURDLE = 0.70
NO_EXCESS_RETURN = "NO_EXCESS_RETURN"


class Objective(StrEnum):
    MAX_SHARPE = "max_sharpe"
    MIN_VARIANCE = "min_variance"
    MAX_RETURN = "max_return"
    TARGET_RETURN = "target_return"
    MEAN_VARIANCE_UTILITY = "mean_variance_utility"
    MAX_RETURN_CVAR_LIMITED = "max_return_cvar_limited"


class OptimizationError(ValueError):
    """No allocation satisfies the request; ``reason`` is a short machine code."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class Limits:
    zone_bounds: tuple[tuple[float, float], ...] = DEFAULT_ZONE_BOUNDS  # (min, max) per ZONES
    region_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)  # on region totals
    max_zone_hhi: float | None = None
    max_turnover: float | None = None  # ½ Σ |zone weight − current|; needs ``current``
    current: tuple[float, ...] | None = None  # current zone weights
    max_capital_cvar_95: float | None = None
    min_prob_hurdle: float | None = None


@dataclass(frozen=True)
class Goal:
    objective: Objective = Objective.MAX_SHARPE
    risk_free_rate: float = 0.03
    hurdle_rate: float = 0.08
    target_return: float | None = None  # TARGET_RETURN
    risk_aversion: float = 2.0  # MEAN_VARIANCE_UTILITY


@dataclass(frozen=True)
class Request:
    limits: Limits = Limits()
    objective: Objective = Objective.MAX_SHARPE
    target_return: float | None = None
    risk_aversion: float = 2.0
    optimize_regions: bool = False
    frontier_points: int = 20
    resimulate_key_points: bool = False  # also re-simulate the current, minimum-risk and max-Sharpe points


def effective_request(request: Request) -> Request:
    """The tail-limited objective without explicit limits uses the defaults (capital CVaR 95 % ≤ 0.20,
    P(hurdle) ≥ 0.70)."""
    if request.objective is not Objective.MAX_RETURN_CVAR_LIMITED:
        return request
    limits = request.limits
    return replace(
        request,
        limits=replace(
            limits,
            max_capital_cvar_95=_default(limits.max_capital_cvar_95, DEFAULT_MAX_CAPITAL_CVAR_95),
            min_prob_hurdle=_default(limits.min_prob_hurdle, DEFAULT_MIN_PROB_HURDLE),
        ),
    )


def _default(value: float | None, default: float) -> float:
    return default if value is None else value


def simulation_runs(config: SimulationConfig, request: Request) -> int:
    """Engine runs one optimisation makes: one per asset, the recommendation, and the key points if asked."""
    assets = len(ZONES) * (len(config.book.regions) if request.optimize_regions else 1)
    return assets + 1 + (3 if request.resimulate_key_points else 0)
