"""Stress tests by re-simulation on common random numbers (simulation/scenarios.py, simulation/crn.py).

Expected values come from independent runs of the engine (``engine.run`` twice, its own aggregation) or
from hand computation, never from the stress module's own output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulation import crn, engine, scenarios
from simulation.config import Stress, ZONES
from simulation.scenarios import GridAxis, Scenario

from .conftest import small_fund

PATHS = 200


def fund(seed: int = 3, **changes):
    return small_fund(monte_carlo={"paths": PATHS, "chunk_paths": 100, "seed": seed}, **changes)


def uniform(field: str, value: float) -> dict:
    return {field: {zone: value for zone in ZONES}}


def test_a_zero_shock_reproduces_the_base_exactly():
    zero = Stress.model_validate({**uniform("price_shock", 0.0), **uniform("vol_multiplier", 1.0),
                                  "window_start_month": 12, "window_end_month": 48, "price_shock_month": 24})
    report = scenarios.stress_test(fund(), [Scenario("zero", zero)])
    outcome = report.scenarios[0]
    for figure in (*outcome.figures, *outcome.dpi_path):
        assert figure.base == figure.stressed or (math.isnan(figure.base) and math.isnan(figure.stressed)), figure
        if not math.isnan(figure.delta.value):
            assert (figure.delta.value, figure.delta.ci_low, figure.delta.ci_high) == (0.0, 0.0, 0.0), figure
    assert [c.base_breached for c in outcome.guardrails] == [c.stressed_breached for c in outcome.guardrails]


def price_shock_runs(**changes):
    shocks = (0.0, -0.1, -0.2, -0.35, -0.5)
    return crn.run_all([scenarios.stressed_config(fund(**changes), Stress.model_validate(
        {**uniform("price_shock", s), "price_shock_month": 24})) for s in shocks])


def test_a_deeper_price_shock_never_raises_the_lp_irr_on_any_path_when_event_timing_is_fixed():
    """With the hazards blind to prices, a shock changes what each loan pays, never when: every path's LP
    IRR falls (or stays) with each deeper shock."""
    runs = price_shock_runs(market={"exit_appreciation_sensitivity": 0.0, "default_drawdown_sensitivity": 0.0})
    irr = np.array([r.scalars["lp_net_irr"] for r in runs])
    assert np.isfinite(irr).all()
    steps = np.diff(irr, axis=0)  # each row: the next deeper shock minus the one before, per path
    assert (steps <= 1e-12).all(), f"max rise {steps.max():.3g}"
    assert (steps < 0).any(axis=1).all()  # and each step does lower some paths


def test_with_price_dependent_hazards_a_path_gains_only_when_its_loans_timing_moved():
    """Falling prices make defaults likelier and exits rarer (domain §2.4), so a deeper shock moves when
    loans end. A simple-interest claim repaid sooner is a higher annual rate, so such a path can gain; a
    path whose timing did not move never does, and the mean always falls."""
    runs = price_shock_runs()
    irr = np.array([r.scalars["lp_net_irr"] for r in runs])
    life = np.array([r.scalars["wal_years"] for r in runs])
    funded = np.array([r.scalars["loans_funded"] for r in runs])
    rises = np.diff(irr, axis=0) > 1e-12
    moved = (np.diff(life, axis=0) != 0) | (np.diff(funded, axis=0) != 0)
    assert not (rises & ~moved).any()
    means = irr.mean(axis=1)
    assert (np.diff(means) < 0).all()


def test_stress_deltas_match_two_independent_engine_runs():
    """The stress module's paired figures equal the differences of two separate, aggregated engine runs."""
    preset = scenarios.PRESETS["severe_recession"]
    base_config = fund()
    report = scenarios.stress_test(base_config, [preset])
    outcome = report.scenarios[0]
    base = engine.run(base_config, keep_paths=True)
    stressed = engine.run(scenarios.stressed_config(base_config, preset.stress), keep_paths=True)
    for name in ("lp_net_irr", "lp_moic", "gp_carry", "wal_years"):
        assert np.isfinite(base.paths[name]).all() and np.isfinite(stressed.paths[name]).all()
        expected = stressed.metrics[name].mean - base.metrics[name].mean
        assert outcome.figure(name).delta.value == pytest.approx(expected, rel=1e-9, abs=1e-12), name
    assert outcome.figure("prob_hurdle").delta.value == pytest.approx(
        stressed.risk.prob_hurdle - base.risk.prob_hurdle, abs=1e-12)
    for tail in (0, 1):
        level = base.risk.tails[tail].confidence
        suffix = {0.95: "95", 0.99: "99"}[level]
        for kind in ("capital_var", "capital_cvar"):
            expected = getattr(stressed.risk.tails[tail], kind) - getattr(base.risk.tails[tail], kind)
            assert outcome.figure(f"{kind}_{suffix}").delta.value == pytest.approx(expected, abs=1e-12)
    final_dpi = outcome.dpi_path[-1]
    assert final_dpi.delta.value == pytest.approx(outcome.figure("lp_dpi").delta.value, abs=1e-12)


def test_the_paired_interval_is_the_standard_error_of_the_path_differences():
    base, other = np.array([1.0, 2.0, 3.0, np.nan]), np.array([2.0, 2.0, 5.0, 7.0])
    estimate = crn.mean_delta(base, other)  # differences 1, 0, 2: mean 1, sd 1
    half = 1.96 * 1.0 / math.sqrt(3.0)
    assert (estimate.value, estimate.ci_low, estimate.ci_high) == pytest.approx((1.0, 1.0 - half, 1.0 + half))


def test_paired_intervals_are_far_narrower_than_the_spread_of_independent_runs():
    """Common random numbers: the stressed run's noise cancels against the base's."""
    preset = scenarios.PRESETS["mild_recession"]
    outcome = scenarios.stress_test(fund(), [preset]).scenarios[0]
    paired_half = (outcome.figure("lp_net_irr").delta.ci_high - outcome.figure("lp_net_irr").delta.ci_low) / 2
    base = engine.run(fund(), keep_paths=True).paths["lp_net_irr"]
    other = engine.run(scenarios.stressed_config(fund(seed=99), preset.stress),
                       keep_paths=True).paths["lp_net_irr"]
    independent_half = 1.96 * math.sqrt(base.var(ddof=1) / base.size + other.var(ddof=1) / other.size)
    assert paired_half < independent_half / 3


def test_guardrails_are_read_against_their_limits():
    outcome = scenarios.stress_test(fund(), [scenarios.PRESETS["financial_crisis"]]).scenarios[0]
    checks = {c.rule: c for c in outcome.guardrails}
    var = checks["capital_var_99_max"]
    assert var.limit == 0.15 and var.stressed == outcome.figure("capital_var_99").stressed
    assert var.stressed_breached == (var.stressed > 0.15)
    p5 = checks["irr_p5_min"]
    assert p5.limit == pytest.approx(0.08 - 0.025)
    assert p5.stressed == pytest.approx(np.quantile(
        crn.run_all([scenarios.stressed_config(fund(), scenarios.PRESETS["financial_crisis"].stress)])[0]
        .scalars["lp_net_irr"], 0.05))
    assert p5.stressed_breached == (p5.stressed < p5.limit)


def test_presets_get_more_severe_and_hit_red_hardest():
    order = [scenarios.PRESETS[name].stress for name in ("mild_recession", "severe_recession", "financial_crisis")]
    for milder, harsher in zip(order, order[1:]):
        assert (harsher.price_shock.as_array() < milder.price_shock.as_array()).all()
        assert (harsher.default_multiplier.as_array() > milder.default_multiplier.as_array()).all()
        assert harsher.recovery_haircut > milder.recovery_haircut
    for stress in order:
        shock = stress.price_shock.as_array()
        assert shock[2] < shock[1] < shock[0] < 0  # red falls furthest
        assert stress.default_multiplier.red >= stress.default_multiplier.green
    report = scenarios.stress_test(fund(), list(scenarios.PRESETS.values()))
    means = [s.figure("lp_net_irr").stressed for s in report.scenarios]
    assert means == sorted(means, reverse=True) and means[0] < report.scenarios[0].figure("lp_net_irr").base


def test_a_grid_cell_is_the_scenario_of_its_two_values():
    x = GridAxis("price_shock", (0.0, -0.3))
    y = GridAxis("default_multiplier", (1.0, 3.0))
    cells = scenarios.grid_stress(x, y)
    assert cells[1][1].stress.price_shock.as_array().tolist() == [-0.3] * 3
    assert cells[1][1].stress.default_multiplier.as_array().tolist() == [3.0] * 3
    assert cells[1][1].stress.price_shock_month == scenarios.GRID_TEMPLATE.price_shock_month
    grid = scenarios.run_grid(fund(), x, y)
    assert grid.cells[0][0].figure("lp_net_irr").delta.value == 0.0  # the neutral corner is the base
    alone = scenarios.stress_test(fund(), [cells[1][1]]).scenarios[0]
    assert grid.cells[1][1].figure("lp_net_irr").delta == alone.figure("lp_net_irr").delta
    irr = [[cell.figure("lp_net_irr").stressed for cell in row] for row in grid.cells]
    assert irr[1][0] < irr[0][0] and irr[0][1] < irr[0][0] and irr[1][1] < min(irr[1][0], irr[0][1])


@pytest.mark.parametrize("axes, message", [
    ((GridAxis("price_shock", (0.0,)), GridAxis("price_shock", (0.1,))), "different parameters"),
])
def test_a_grid_needs_two_different_axes(axes, message):
    with pytest.raises(ValueError, match=message):
        scenarios.grid_stress(*axes)


def test_unknown_axes_and_stressed_bases_are_refused():
    with pytest.raises(ValueError, match="unknown grid axis"):
        GridAxis("zone_allocation", (0.1,))
    with pytest.raises(ValueError, match="unstressed"):
        scenarios.stress_test(fund(stress={"recovery_haircut": 0.1}), [scenarios.PRESETS["mild_recession"]])


def test_the_bootstrap_does_not_depend_on_how_its_replicates_are_batched(monkeypatch):
    rng = np.random.default_rng(1)
    base = rng.normal(size=300)
    other = base - 0.1 + rng.normal(size=300) * 0.01
    p5 = lambda rows: np.quantile(rows, 0.05, axis=1)  # noqa: E731
    whole = crn.bootstrap_delta(base, other, p5, seed=3)
    monkeypatch.setattr(crn, "BOOTSTRAP_BATCH_VALUES", 1000)  # 3 replicates at a time
    assert crn.bootstrap_delta(base, other, p5, seed=3) == whole
    assert whole.value == pytest.approx(np.quantile(other, 0.05) - np.quantile(base, 0.05))
    assert whole.ci_low < whole.value < whole.ci_high
