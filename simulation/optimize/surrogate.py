"""Metrics of an allocation on the asset path matrix: the surrogate ``portfolio return on path k ≈ R_k · w``
(domain §6.2). Each figure uses the engine's own definition (``simulation.metrics``), so a surrogate figure
and the re-simulated one measure the same thing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation import metrics

from .assets import ReturnPaths

TAIL_CONFIDENCE = 0.95


@dataclass(frozen=True)
class PointMetrics:
    expected_return: float  # mean LP net IRR
    volatility: float  # sample standard deviation of the LP net IRR
    sharpe_ratio: float  # (mean − risk-free) / volatility
    capital_cvar_95: float  # mean of the worst 5 % of max(0, 1 − LP MOIC)
    prob_hurdle: float  # P(LP net IRR ≥ hurdle)
    expected_moic: float  # mean LP MOIC


def point_metrics(
    paths: ReturnPaths, weights: np.ndarray, risk_free_rate: float, hurdle_rate: float
) -> PointMetrics:
    irr = paths.irr @ weights
    moic = paths.moic @ weights
    loss = np.maximum(0.0, 1.0 - moic)
    return PointMetrics(
        expected_return=float(irr.mean()),
        volatility=float(metrics.volatility(irr)),
        sharpe_ratio=float(metrics.sharpe(irr, risk_free_rate)),
        capital_cvar_95=float(metrics.conditional_value_at_risk(loss, TAIL_CONFIDENCE)),
        prob_hurdle=float(metrics.prob_at_least(irr, hurdle_rate).value),
        expected_moic=float(moic.mean()),
    )
