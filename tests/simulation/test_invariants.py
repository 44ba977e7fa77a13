"""Conservation invariants over random configurations (hypothesis)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from simulation import pathmetrics
from simulation.config import SimulationConfig

from .conftest import small_fund
from .test_engine import pipeline

fund_terms = st.fixed_dictionaries({
    "capital_call_mode": st.sampled_from(["as_needed", "upfront"]),
    "reserve_fraction": st.floats(0.0, 0.05),
    "cash_rate": st.floats(0.0, 0.05),
    "reinvestment_period_years": st.sampled_from([0.0, 3.0, 5.0]),
    "recycle_gain_fraction": st.floats(0.0, 1.0),
    "distribution_frequency_months": st.sampled_from([1, 3, 6, 12]),
    "fund_end_haircut": st.floats(0.0, 0.2),
})
fee_terms = st.fixed_dictionaries({
    "management_fee_rate": st.floats(0.0, 0.025),
    "management_fee_basis": st.sampled_from(["committed", "invested", "nav"]),
    "management_fee_timing": st.sampled_from(["advance", "arrears"]),
    "origination_fee_recipient": st.sampled_from(["gp", "fund"]),
    "disposition_fee_rate": st.floats(0.0, 0.02),
})
waterfall_terms = st.fixed_dictionaries({
    "hurdle_rate": st.floats(0.0, 0.12),
    "carry_rate": st.floats(0.0, 0.3),
    "catch_up": st.sampled_from(["full", "none"]),
    "structure": st.sampled_from(["european", "american"]),
})


def random_config(fund, fees, waterfall, seed) -> SimulationConfig:
    return small_fund(fund=fund, fees=fees, waterfall=waterfall, monte_carlo={"paths": 40, "seed": seed})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fund_terms, fee_terms, waterfall_terms, st.integers(0, 10_000))
def test_committed_fees_total_rate_times_size_times_term(fund, fees, waterfall, seed):
    config = random_config(fund, fees, waterfall, seed)
    _, _, _, cost, _ = pipeline(config)
    if fees["management_fee_basis"] == "committed":
        expected = fees["management_fee_rate"] * config.fund.size * config.fund.term_years
        np.testing.assert_allclose(cost.management_fees.sum(axis=1), expected, rtol=1e-12, atol=1e-6)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fund_terms, fee_terms, waterfall_terms, st.integers(0, 10_000))
def test_waterfall_splits_every_distribution_and_final_tvpi_is_dpi(fund, fees, waterfall, seed):
    config = random_config(fund, fees, waterfall, seed)
    params, outcomes, flows, cost, cash = pipeline(config)
    times = np.arange(params.months + 1) / 12
    lp_class, carry = pathmetrics._split(params, cash, cost, flows, outcomes, times)
    np.testing.assert_allclose(lp_class + carry, cash.distributions, atol=1e-6)
    assert np.all(carry.sum(axis=1) >= -1e-9)
    result = pathmetrics.compute(params, outcomes, flows, cost, cash)
    lp_moic = lp_class.sum(axis=1) / cash.calls.sum(axis=1)  # LP-class cash per dollar called
    np.testing.assert_allclose(result.yearly["lp_tvpi"][:, -1], lp_moic, rtol=1e-12)
    np.testing.assert_allclose(result.scalars["lp_moic"], lp_moic, rtol=1e-12)
    np.testing.assert_allclose(result.yearly["nav"][:, -1], cash.cash[:, -1], atol=1e-6)


def _leaf_fields(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        models = [a for a in nested if issubclass(a, BaseModel)]
        if models:
            names |= _leaf_fields(models[0])
        else:
            names.add(name)
    return names


def test_every_config_field_is_read_by_the_engine():
    """Domain P-8: a field the model never reads is silently ignored. Every leaf must appear in code."""
    source = "\n".join(p.read_text() for p in Path("simulation").glob("*.py") if p.name != "config.py")
    config_source = Path("simulation/config.py").read_text()
    unread = sorted(name for name in _leaf_fields(SimulationConfig)
                    if not re.search(rf"\.{name}\b", source) and not re.search(rf"self\.{name}\b", config_source))
    assert unread == []
