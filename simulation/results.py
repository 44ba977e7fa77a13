"""Typed results of a simulation run; ``to_dict`` gives plain JSON-ready data."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import Summary

FAN_QUANTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class RunInfo:
    seed: int
    engine_version: str
    currency: str
    paths: int
    deterministic: bool
    chunk_paths: int
    chunks: int
    workers: int
    loans_in_book: int
    elapsed_seconds: float


@dataclass(frozen=True)
class TailRisk:
    """IRR VaR/CVaR are levels (low quantiles of LP net IRR); capital ones are non-negative losses, the share
    of paid-in capital lost, ``max(0, 1 − LP MOIC)``."""

    confidence: float
    irr_var: float
    irr_cvar: float
    capital_var: float
    capital_cvar: float


RISK_SCALARS = ("volatility", "sharpe", "sortino", "calmar", "prob_hurdle", "prob_target_irr",
                "prob_target_multiple", "prob_loss")


@dataclass(frozen=True)
class RiskMetrics:
    volatility: float
    sharpe: float
    sortino: float
    calmar: float
    prob_hurdle: float
    prob_target_irr: float
    prob_target_multiple: float
    prob_loss: float
    tails: tuple[TailRisk, ...]
    standard_errors: RiskMetrics | None = None  # bootstrap standard error of each figure, same shape


@dataclass(frozen=True)
class FanChart:
    years: np.ndarray
    quantiles: tuple[int, ...]
    values: np.ndarray  # (len(quantiles), len(years))


@dataclass(frozen=True)
class Histogram:
    counts: np.ndarray
    edges: np.ndarray


@dataclass(frozen=True)
class Concentration:
    """Exposure concentration of the initial book by principal."""

    zone_hhi: float
    zone_effective_n: float
    region_hhi: float
    region_effective_n: float
    loan_hhi: float
    loan_effective_n: float
    zone_shares: dict[str, float]
    region_shares: dict[str, float]


@dataclass(frozen=True)
class ZoneCredit:
    zone: str
    loans: float  # loans funded, summed over paths
    defaults: float
    exposure: float  # principal funded, summed over paths
    pd_lifetime: float  # defaults / loans
    pd_annual: float  # defaults / loan-years on the book
    lgd: float  # losses / exposure at default (principal plus accrued interest)
    expected_loss: float  # losses / principal funded


@dataclass(frozen=True)
class Convergence:
    metric: str
    standard_error: float
    ci95_half_width: float


@dataclass(frozen=True)
class SimulationResult:
    info: RunInfo
    metrics: dict[str, Summary]
    irr_nan_reasons: dict[str, dict[str, int]]
    risk: RiskMetrics
    fan_charts: dict[str, FanChart]
    histograms: dict[str, Histogram]
    concentration: Concentration
    credit: tuple[ZoneCredit, ...]
    cashflows: dict[str, np.ndarray]  # mean over paths of each year's flow, years 0..term
    convergence: Convergence
    paths: dict[str, np.ndarray] | None = None  # per-path metrics, only when asked for

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
