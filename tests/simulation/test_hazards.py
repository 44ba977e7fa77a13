"""Hazards: hand-built intensity paths, first passage against a brute-force loop, calibration."""

import math
import warnings

import numpy as np
import pytest

from simulation.hazards import (
    calibrate_exit_hazard,
    cumulative_default_intensity,
    expected_drawdown_weight,
    cumulative_exit_intensity,
    default_thresholds,
    exit_thresholds,
    first_passage,
)
from simulation.market import zone_log_indices

Z_TOL = 4.0
DT = 1.0 / 12.0
DRIFT = np.array([0.055, 0.044, 0.037])


def brute_force_first_passage(cum, path, series, start, threshold):
    last = cum.shape[2] - 1
    months = []
    for p, s, o, t in zip(path, series, start, threshold):
        hits = [m for m in range(o + 1, last + 1) if cum[p, s, m] - cum[p, s, o] >= t]
        months.append(hits[0] if hits else last + 1)
    return np.array(months)


def deterministic_series_log(n_months, drift=DRIFT):
    """(1 path, zones as series, months + 1) log index of the zero-volatility market."""
    rng, n_zones = np.random.default_rng(0), len(drift)
    log_index = zone_log_indices(rng, 1, n_months, drift, np.zeros(n_zones), np.eye(n_zones))
    return np.ascontiguousarray(log_index.transpose(0, 2, 1))


def test_exit_intensity_uses_the_index_at_the_start_of_each_month():
    series_log = np.log(np.array([[[1.0, 1.1, 0.9, 1.2]]]))
    cum = cumulative_exit_intensity(series_log, beta=2.0)
    increments = np.array([1.0, 1.21, 0.81]) * DT
    np.testing.assert_allclose(cum[0, 0], np.concatenate([[0.0], np.cumsum(increments)]), rtol=1e-14)


def test_default_intensity_rises_in_a_drawdown():
    series_log = np.array([[[0.0, 0.1, 0.2, 0.1, -0.1, 0.0, 0.3]]])
    # running maximum 0, .1, .2, .2, .2, .2, .3 -> drawdowns 0, 0, 0, -.1, -.3, -.2, 0
    normaliser = np.array([[1.0, 2.0, 1.0, 4.0, 2.0, 1.0, 1.0]])
    cum = cumulative_default_intensity(series_log, beta_d=5.0, expected_weight=normaliser)
    weights = np.exp(5.0 * np.array([0.0, 0.0, 0.0, 0.1, 0.3, 0.2])) / normaliser[0, :-1]
    np.testing.assert_allclose(np.diff(cum[0, 0]), weights * DT, rtol=1e-14)
    assert cum[0, 0, 0] == 0.0


def test_expected_drawdown_weight_without_volatility_follows_the_deterministic_drawdown():
    # A falling index (−1 %/month) is always at its drawdown: D_k = 0.01·k, weight exp(5·0.01·k).
    means = expected_drawdown_weight(-0.01, 0.0, 24, 5.0)
    np.testing.assert_allclose(means, np.exp(0.05 * np.arange(25)), rtol=1e-12)
    np.testing.assert_array_equal(expected_drawdown_weight(0.004, 0.0, 24, 5.0), 1.0)


def test_expected_drawdown_weight_matches_a_brute_force_simulation():
    """The lattice recursion against 200,000 simulated random walks (an independent computation)."""
    drift, sd, months, beta = 0.0035, 0.0233, 120, 5.0
    rng = np.random.default_rng(11)
    walks = np.zeros((200_000, months + 1))
    np.cumsum(rng.normal(drift, sd, (200_000, months)), axis=1, out=walks[:, 1:])
    drawdown = np.maximum.accumulate(walks, axis=1) - walks
    simulated = np.exp(beta * drawdown)
    standard_error = simulated.std(axis=0) / np.sqrt(len(walks))
    means = expected_drawdown_weight(drift, sd, months, beta)
    assert means[0] == 1.0
    assert np.all(np.abs(means - simulated.mean(axis=0)) <= 4 * standard_error + 1e-3 * means)


def test_huge_exponents_stay_finite_and_ordered():
    series_log = np.array([[[0.0, 50.0, 100.0, -100.0, 0.0]]])
    cum = cumulative_exit_intensity(series_log, beta=20.0)
    assert np.all(np.isfinite(cum)) and np.all(np.diff(cum) >= 0.0)
    assert np.all(np.isfinite(exit_thresholds(np.array([30.0]), np.array([100.0]), 20.0, np.array([1e-100]))))


def test_exit_threshold_scales_the_exponential_draw():
    log_index = np.log(np.array([1.0, 1.5]))
    thresholds = exit_thresholds(np.array([0.5, 2.0]), log_index, 2.0, np.array([0.1, 0.2]))
    np.testing.assert_allclose(thresholds, [5.0, 2.0 * 2.25 / 0.2], rtol=1e-14)


def test_default_threshold_is_infinite_without_hazard():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        thresholds = default_thresholds(np.array([0.7, 0.7]), np.array([0.02, 0.0]))
    np.testing.assert_array_equal(thresholds, [35.0, np.inf])


def test_first_passage_hand_case():
    cum = np.array([[[0.0, 1.0, 1.0, 3.0, 6.0]]])
    one = np.zeros(7, dtype=int)
    start = np.array([0, 0, 1, 1, 0, 4, 9])
    threshold = np.array([0.0, 1.0, 0.5, 2.0, 6.5, 0.0, 0.0])
    # 0 -> month 1 (first month after start); 1.0 reached at month 1; from month 1 the flat month 2
    # does not reach 0.5 but month 3 does; 3 - 1 = 2 at month 3; 6.5 never; a start at or after M never
    np.testing.assert_array_equal(first_passage(cum, one, one, start, threshold), [1, 1, 3, 3, 5, 5, 5])


@pytest.mark.parametrize("integer_valued", [True, False])
def test_first_passage_matches_brute_force(integer_valued):
    rng = np.random.default_rng(21)
    n_paths, n_series, n_months, n_loans = 3, 4, 24, 2_000
    increments = rng.integers(0, 3, (n_paths, n_series, n_months)).astype(float)
    if not integer_valued:
        increments *= rng.random(increments.shape)
    cum = np.concatenate([np.zeros((n_paths, n_series, 1)), np.cumsum(increments, axis=-1)], axis=-1)
    path = rng.integers(0, n_paths, n_loans)
    series = rng.integers(0, n_series, n_loans)
    start = rng.integers(0, n_months + 1, n_loans)
    reached = cum[path, series, rng.integers(0, n_months + 1, n_loans)] - cum[path, series, start]
    threshold = np.select(
        [np.arange(n_loans) % 4 == k for k in range(3)],
        [np.zeros(n_loans), np.full(n_loans, np.inf), np.maximum(reached, 0.0)],
        rng.exponential(3.0, n_loans),
    )
    expected = brute_force_first_passage(cum, path, series, start, threshold)
    assert np.any(expected == n_months + 1) and np.any(expected <= n_months)
    np.testing.assert_array_equal(first_passage(cum, path, series, start, threshold), expected)


@pytest.mark.parametrize("n_loans", [20_000, pytest.param(1_000_000, marks=pytest.mark.heavy)])
def test_constant_hazard_gives_geometric_exit_months(n_loans):
    hazard, start, n_months = 0.5, 12, 240
    series_log = deterministic_series_log(n_months)
    cum = cumulative_exit_intensity(series_log, beta=0.0)
    rng = np.random.default_rng(22)
    zone = rng.integers(0, 3, n_loans)
    draws = rng.standard_exponential(n_loans)
    thresholds = exit_thresholds(draws, series_log[0, zone, 0], 0.0, np.full(n_loans, hazard))
    months = first_passage(cum, np.zeros(n_loans, dtype=int), zone, np.full(n_loans, start), thresholds)
    monthly_exit = 1.0 - math.exp(-hazard * DT)
    for age in (1, 6, 24, 60):
        probability = 1.0 - (1.0 - monthly_exit) ** age
        observed = np.mean(months - start <= age)
        assert abs(observed - probability) < Z_TOL * math.sqrt(probability * (1.0 - probability) / n_loans)


def test_calibration_without_sensitivity_is_ln2_over_the_hazard_window():
    hazard = calibrate_exit_hazard(DRIFT, 0.0, avg_exit_years=7.0, min_hold_years=1.0, max_hold_months=120)
    np.testing.assert_allclose(hazard, math.log(2.0) / 6.0, rtol=1e-14)


@pytest.mark.parametrize("beta", [0.0, 2.0, 10.0])
@pytest.mark.parametrize("drift", [np.array([0.055, 0.044, 0.037]), np.array([-0.03, 0.0, 0.2])])
def test_calibrated_median_exit_age_in_the_deterministic_market(beta, drift):
    hazard = calibrate_exit_hazard(drift, beta, avg_exit_years=7.0, min_hold_years=1.0, max_hold_months=120)
    cum = cumulative_exit_intensity(deterministic_series_log(120, drift), beta)[0]
    # integrated hazard from the end of the minimum hold (month 12) to month 84 is ln 2: P(exit by 84) = 1/2
    np.testing.assert_allclose(hazard * (cum[:, 84] - cum[:, 12]), math.log(2.0), rtol=1e-12)
    assert np.all(hazard * (cum[:, 83] - cum[:, 12]) < math.log(2.0))


def test_calibrated_hazard_halves_the_book_by_the_median_month():
    n_loans, origination = 40_000, 6
    series_log = deterministic_series_log(120)
    hazard = calibrate_exit_hazard(DRIFT, 2.0, avg_exit_years=7.0, min_hold_years=1.0, max_hold_months=120)
    rng = np.random.default_rng(23)
    zone = rng.integers(0, 3, n_loans)
    draws = rng.standard_exponential(n_loans)
    thresholds = exit_thresholds(draws, series_log[0, zone, origination], 2.0, hazard[zone])
    cum = cumulative_exit_intensity(series_log, 2.0)
    end_of_hold = np.full(n_loans, origination + 12)
    months = first_passage(cum, np.zeros(n_loans, dtype=int), zone, end_of_hold, thresholds)
    assert months.min() == origination + 13
    assert abs(np.mean(months - origination <= 84) - 0.5) < Z_TOL * 0.5 / math.sqrt(n_loans)


@pytest.mark.parametrize(
    ("avg_exit_years", "min_hold_years", "max_hold_months"),
    [(7.0, 7.0, 120), (1.0, 0.99, 120), (11.0, 1.0, 120)],
)
def test_calibration_rejects_unreachable_medians(avg_exit_years, min_hold_years, max_hold_months):
    with pytest.raises(ValueError):
        calibrate_exit_hazard(DRIFT, 2.0, avg_exit_years, min_hold_years, max_hold_months)
