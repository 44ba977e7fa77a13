"""Stress scenarios in the engine: shocks on top of the unstressed run's random numbers (domain §7.2)."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import engine, lifecycle
from simulation.config import Stress

from .conftest import small_fund


def run(stress: dict | None = None, **changes):
    config = small_fund(monte_carlo={"paths": 200}, stress=stress or {}, **changes)
    return engine.run(config, keep_paths=True)


def test_a_zero_shock_reproduces_the_base_run_path_by_path():
    base = run()
    neutral = run({"price_shock": {"green": 0.0}, "vol_multiplier": {"red": 1.0}, "window_start_month": 12,
                   "window_end_month": 60, "default_multiplier": {"orange": 1.0}})
    for name, values in base.paths.items():
        np.testing.assert_array_equal(neutral.paths[name], values, err_msg=name)


def test_the_price_shock_moves_every_index_by_the_same_factor_from_its_month():
    """Same normals, so the stressed log index is the base one plus ln(1 + shock) from the shock month."""
    base = small_fund(monte_carlo={"paths": 50})
    shocked = small_fund(monte_carlo={"paths": 50},
                         stress={"price_shock": {"green": -0.3, "orange": -0.2, "red": -0.5}, "price_shock_month": 24})
    before = lifecycle.simulate_market(lifecycle.params_for(base), 0, 50).series_log
    after = lifecycle.simulate_market(lifecycle.params_for(shocked), 0, 50).series_log
    regions = len(base.book.regions)
    for zone, shock in enumerate((-0.3, -0.2, -0.5)):
        rows = slice(zone * regions, (zone + 1) * regions)
        np.testing.assert_allclose(after[:, rows, :24], before[:, rows, :24], rtol=0, atol=1e-12)
        np.testing.assert_allclose(after[:, rows, 24:] - before[:, rows, 24:], np.log1p(shock), rtol=0, atol=1e-12)


def test_a_deeper_price_shock_lowers_the_lp_return():
    means = [run({"price_shock": {"green": s, "orange": s, "red": s}, "price_shock_month": 24})
             .metrics["lp_net_irr"].mean for s in (0.0, -0.1, -0.3, -0.5)]
    assert means == sorted(means, reverse=True)


def test_multipliers_scale_the_hazards_and_haircut_the_recoveries():
    config = small_fund(stress={"default_multiplier": {"green": 2.0, "orange": 3.0, "red": 4.0},
                                "exit_multiplier": {"green": 0.3, "orange": 0.3, "red": 0.3},
                                "recovery_haircut": 0.25})
    base, stressed = lifecycle.params_for(small_fund()), lifecycle.params_for(config)
    np.testing.assert_allclose(stressed.default_hazard, base.default_hazard * [2.0, 3.0, 4.0], rtol=1e-15)
    np.testing.assert_allclose(stressed.exit_hazard, base.exit_hazard * 0.3, rtol=1e-15)
    np.testing.assert_allclose(stressed.recovery_haircut, base.recovery_haircut * 0.75, rtol=1e-15)
    np.testing.assert_array_equal(stressed.default_weight, base.default_weight)  # the unstressed calibration


@pytest.mark.parametrize("stress", [{"price_shock": {"red": -0.99}}, {"vol_multiplier": {"green": 11.0}},
                                    {"window_start_month": 50, "window_end_month": 40}])
def test_out_of_range_stresses_are_rejected(stress):
    with pytest.raises(ValueError):
        Stress.model_validate(stress)
