"""Shared config builders for the simulation tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from simulation.config import SimulationConfig, load_config


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def toy_fund(drift: float, **changes: Any) -> SimulationConfig:
    """Domain §10.4 toy fund: 40 loans of 250k at LTV 0.5 funded by 10M at t=0, all exit at t=7."""
    base = {
        "fund": {"size": 10_000_000, "deployment_period_years": 0, "deployment_target_fraction": 1.0,
                 "reserve_fraction": 0.0, "cash_rate": 0.0, "reinvestment_period_years": 0},
        "fees": {"management_fee_rate": 0.0, "expense_rate": 0.0, "fixed_expenses": 0.0,
                 "organisation_costs": 0.0},
        "book": {"regions": [{"name": "sydney"}],
                 "generated": {"avg_loan_size": 250_000, "loan_size_sd": 0, "min_loan_size": 250_000,
                               "max_loan_size": 250_000, "ltv_mean": 0.5, "ltv_sd": 0, "min_ltv": 0.5,
                               "max_ltv": 0.5, "zone_allocation": {"green": 1.0, "orange": 0.0, "red": 0.0}}},
        "market": {"green": {"drift": drift, "vol": 0.0, "default_hazard": 0.0, "recovery_haircut": 0.9},
                   "avg_exit_year": 7.0},
        "monte_carlo": {"deterministic": True},
    }
    return load_config(merged(base, changes))


SMALL_FUND: dict[str, Any] = {
    "fund": {"size": 5_000_000, "deployment_target_fraction": 0.8},
    "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000},
    "monte_carlo": {"paths": 120, "chunk_paths": 50, "seed": 3},
}


def small_fund(**changes: Any) -> SimulationConfig:
    """About 17 loans: quick stochastic runs that still exercise every mechanism."""
    return load_config(merged(SMALL_FUND, changes))


@pytest.fixture
def small() -> SimulationConfig:
    return small_fund()
