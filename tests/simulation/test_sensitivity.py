"""Sensitivities on common random numbers (simulation/sensitivity.py), checked against closed forms.

The toy fund (conftest: 40 loans of 250k at LTV 0.5, no fees, every loan exits at year 7) pays per loan
``L·(1 + 7r) + 0.5·V0·((1+g)^7 − 1)`` with ``V0 = 2L``, so its gross MOIC is ``1 + 7r + (1+g)^7 − 1``:
linear in the interest rate ``r``, and known in closed form for any drift ``g``.
"""

from __future__ import annotations

import math

import pytest

from simulation import sensitivity
from simulation.config import ConfigError, load_config

from .conftest import small_fund, toy_fund


def gross_moic(rate: float, drift: float) -> float:
    return 1.0 + 7.0 * rate + (1.0 + drift) ** 7 - 1.0


def bar(tornado, parameter, metric):
    return next(b for b in tornado.bars if b.parameter == parameter and b.metric == metric)


def test_the_elasticity_of_a_linear_metric_is_its_closed_form():
    result = sensitivity.tornado(toy_fund(0.04), ["interest_rate", "appreciation_drift"], 0.2, ["gross_moic"])
    rate = bar(result, "interest_rate", "gross_moic")
    assert rate.base == pytest.approx(gross_moic(0.05, 0.04), abs=1e-9)
    assert rate.low.value == pytest.approx(gross_moic(0.04, 0.04), abs=1e-9)
    assert rate.high.value == pytest.approx(gross_moic(0.06, 0.04), abs=1e-9)
    # dMOIC/dr = 7, so the elasticity at r = 5 % is 7 · 0.05 / MOIC.
    assert rate.elasticity == pytest.approx(7 * 0.05 / gross_moic(0.05, 0.04), rel=1e-9)
    drift = bar(result, "appreciation_drift", "gross_moic")
    low, high = gross_moic(0.05, 0.032), gross_moic(0.05, 0.048)
    assert (drift.low.value, drift.high.value) == pytest.approx((low, high), abs=1e-9)
    assert drift.elasticity == pytest.approx((high - low) / gross_moic(0.05, 0.04) / 0.4, rel=1e-9)
    assert drift.swing == pytest.approx(high - low, rel=1e-9)


def test_carry_is_proportional_to_the_carry_rate_once_the_gp_is_caught_up():
    """Toy fund B (7 % drift) clears the hurdle with room: carry = rate × profit, an elasticity of 1."""
    result = sensitivity.tornado(toy_fund(0.07), ["carry_rate"], 0.2, ["gp_carry"])
    carry = bar(result, "carry_rate", "gp_carry")
    profit = 40 * (250_000 * (1 + 7 * 0.05) + 250_000 * (1.07**7 - 1)) - 10_000_000
    assert (carry.low.value, carry.base, carry.high.value) == pytest.approx(
        (0.16 * profit, 0.20 * profit, 0.24 * profit), abs=1e-4)
    assert carry.elasticity == pytest.approx(1.0, rel=1e-9)


def test_signs_known_by_construction_on_a_stochastic_fund():
    config = small_fund(monte_carlo={"paths": 200, "chunk_paths": 100})
    result = sensitivity.tornado(config, ["management_fee", "default_hazard", "interest_rate"], 0.2, ["lp_net_irr"])
    assert bar(result, "management_fee", "lp_net_irr").elasticity < 0
    assert bar(result, "default_hazard", "lp_net_irr").elasticity < 0
    assert bar(result, "interest_rate", "lp_net_irr").elasticity > 0
    for b in result.bars:  # each side's paired change is its mean's difference from the base
        assert b.high.delta.value == pytest.approx(b.high.value - b.base, abs=1e-12)
        assert b.high.delta.ci_low <= b.high.delta.value <= b.high.delta.ci_high
    swings = [b.swing for b in result.bars]
    assert swings == sorted(swings, reverse=True)


def test_a_side_stops_where_the_config_stops_being_valid():
    """Default fund: 0.88 book + 0.0025 organisation + 0.03 reserve + 3 · 0.001 fixed + 3 · (fee + 0.005)
    running costs must fit in the commitments, so the fee can rise to (1 − 0.9155) / 3 − 0.005."""
    config = load_config({})
    with pytest.raises(ConfigError):
        sensitivity.scaled(config, sensitivity.PARAMETERS["management_fee"], 1.2)
    largest_fee = (1 - 0.9155) / 3 - 0.005
    factor = sensitivity.feasible_factor(config, sensitivity.PARAMETERS["management_fee"], 1.2)
    assert factor * 0.02 == pytest.approx(largest_fee, abs=1e-8)
    assert factor * 0.02 <= largest_fee


def test_clipped_fields_report_the_change_applied():
    config = load_config({})  # recoveries 0.90 / 0.85 / 0.80 cannot rise 20 %: capped at 1
    moved, change = sensitivity.scaled(config, sensitivity.PARAMETERS["recovery"], 1.2)
    assert [z.recovery_haircut for z in moved.market.zones()] == pytest.approx([1.0, 1.0, 0.96])
    assert change == pytest.approx((1 / 0.9 - 1 + 1 / 0.85 - 1 + 0.2) / 3)


def test_morris_finds_the_constant_effect_of_a_linear_input_and_none_of_an_idle_one():
    """Gross MOIC of toy fund A moves by 7 · Δr and not at all with the carry rate. SALib scales each
    range to [0, 1], so one unit is the whole ±20 % range of r (0.04 → 0.06): an effect of 7 · 0.02."""
    result = sensitivity.morris(toy_fund(0.04), ["interest_rate", "carry_rate"], 0.2, "gross_moic", budget_runs=12)
    effects = {e.parameter: e for e in result.effects}
    assert result.runs == 12 and result.trajectories == 4
    assert effects["interest_rate"].mu_star == pytest.approx(0.14, rel=1e-9)
    assert effects["interest_rate"].mu == pytest.approx(0.14, rel=1e-9)
    assert effects["interest_rate"].sigma == pytest.approx(0.0, abs=1e-9)
    assert effects["carry_rate"].mu_star == pytest.approx(0.0, abs=1e-12)
    assert [e.parameter for e in result.effects] == ["interest_rate", "carry_rate"]


@pytest.mark.parametrize("call, message", [
    (lambda c: sensitivity.tornado(c, ["nonsense"]), "parameters"),
    (lambda c: sensitivity.tornado(c, ["ltv", "ltv"]), "parameters"),
    (lambda c: sensitivity.tornado(c, ["ltv"], 0.0), "relative_change"),
    (lambda c: sensitivity.tornado(c, ["ltv"], 0.2, ["carry"]), "metrics"),
    (lambda c: sensitivity.morris(c, ["ltv", "hurdle_rate"], budget_runs=5), "morris_budget_runs"),
])
def test_bad_requests_name_the_field(call, message):
    with pytest.raises(ValueError, match=message):
        call(toy_fund(0.04))


def test_twenty_percent_moves_keep_every_default_parameter_valid_or_report_how_far_they_went():
    config = load_config({"monte_carlo": {"paths": 10}})
    variants = sensitivity.tornado_configs(config, sensitivity.DEFAULT_PARAMETERS, 0.2)
    changes = [change for _, change in variants]
    assert len(variants) == 2 * len(sensitivity.DEFAULT_PARAMETERS) >= 20
    assert all(-0.2 - 1e-12 <= change <= 0.2 + 1e-12 and not math.isnan(change) for change in changes)
