"""Market paths: exact zero-volatility limits, correlation factors, moments within standard errors.

Statistical checks compare sample moments with closed-form ones and allow ``Z_TOL`` standard errors,
the standard errors coming from the closed-form distribution, not from the sample.
"""

import numpy as np
import pytest

from simulation.market import (
    correlation_factor,
    property_log_noise,
    region_log_walks,
    series_log_index,
    zone_log_indices,
)

Z_TOL = 4.0
DRIFT = np.array([0.055, 0.044, 0.037])
VOL = np.array([0.075, 0.090, 0.105])
CORR = np.array([[1.0, 0.7, 0.5], [0.7, 1.0, 0.8], [0.5, 0.8, 1.0]])
PATH_COUNTS = [4_000, pytest.param(100_000, marks=pytest.mark.heavy)]


def test_zero_volatility_index_is_compound_growth():
    log_index = zone_log_indices(np.random.default_rng(1), 2, 120, DRIFT, np.zeros(3), CORR)
    months = np.arange(121)
    expected = (1.0 + DRIFT[None, :]) ** (months[:, None] / 12.0)
    assert log_index.shape == (2, 121, 3)
    np.testing.assert_allclose(np.exp(log_index[0]), expected, rtol=1e-14)
    np.testing.assert_array_equal(log_index[0], log_index[1])


def test_hand_case_index_after_seven_years():
    log_index = zone_log_indices(np.random.default_rng(1), 1, 84, np.array([0.04]), np.zeros(1), np.eye(1))
    assert 500_000.0 * np.exp(log_index[0, 84, 0]) == pytest.approx(657_965.89, abs=0.005)


def test_correlation_factor_reproduces_the_matrix():
    factor = correlation_factor(CORR)
    np.testing.assert_allclose(factor @ factor.T, CORR, atol=1e-14)


def test_correlation_factor_handles_a_singular_matrix():
    factor = correlation_factor(np.ones((3, 3)))
    np.testing.assert_allclose(factor @ factor.T, np.ones((3, 3)), atol=1e-12)


def test_perfectly_correlated_zones_move_together():
    rng = np.random.default_rng(2)
    log_index = zone_log_indices(rng, 50, 24, np.full(3, 0.03), np.full(3, 0.1), np.ones((3, 3)))
    np.testing.assert_allclose(log_index[..., 1], log_index[..., 0], atol=1e-6)
    np.testing.assert_allclose(log_index[..., 2], log_index[..., 0], atol=1e-6)


@pytest.mark.parametrize(
    "matrix",
    [
        np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]),  # eigenvalue -0.8
        np.array([[1.0, 0.5], [0.4, 1.0]]),  # not symmetric
        np.array([[2.0, 0.5], [0.5, 1.0]]),  # not a correlation matrix
    ],
)
def test_correlation_factor_rejects_invalid_matrices(matrix):
    with pytest.raises(ValueError):
        correlation_factor(matrix)


@pytest.mark.parametrize("n_paths", PATH_COUNTS)
def test_monthly_zone_returns_have_the_configured_moments(n_paths):
    log_index = zone_log_indices(np.random.default_rng(3), n_paths, 120, DRIFT, VOL, CORR)
    returns = np.diff(log_index, axis=1).reshape(-1, 3)
    n = returns.shape[0]
    dt = 1.0 / 12.0
    mean_error = returns.mean(axis=0) - (np.log1p(DRIFT) - 0.5 * VOL**2) * dt
    assert np.all(np.abs(mean_error) < Z_TOL * VOL * np.sqrt(dt / n))
    variance = VOL**2 * dt
    assert np.all(np.abs(returns.var(axis=0) - variance) < Z_TOL * variance * np.sqrt(2.0 / n))
    pairs = np.triu_indices(3, 1)
    sample_corr, corr = np.corrcoef(returns.T)[pairs], CORR[pairs]
    assert np.all(np.abs(sample_corr - corr) < Z_TOL * (1.0 - corr**2) / np.sqrt(n))


@pytest.mark.parametrize("n_paths", PATH_COUNTS)
def test_expected_index_grows_at_the_drift(n_paths):
    years = 10
    log_index = zone_log_indices(np.random.default_rng(4), n_paths, 12 * years, DRIFT, VOL, CORR)
    terminal = np.exp(log_index[:, -1])
    expected = (1.0 + DRIFT) ** years
    std = expected * np.sqrt(np.expm1(VOL**2 * years))
    assert np.all(np.abs(terminal.mean(axis=0) - expected) < Z_TOL * std / np.sqrt(n_paths))


@pytest.mark.parametrize("n_paths", PATH_COUNTS)
def test_region_walks_preserve_the_mean_and_add_variance(n_paths):
    vol, years = 0.2, 5
    walks = region_log_walks(np.random.default_rng(5), n_paths, 12 * years, 3, vol)
    assert walks.shape == (n_paths, 61, 3)
    np.testing.assert_array_equal(walks[:, 0], 0.0)
    terminal = walks[:, -1]
    variance = vol**2 * years
    assert np.all(np.abs(terminal.mean(axis=0) + 0.5 * variance) < Z_TOL * np.sqrt(variance / n_paths))
    assert np.all(np.abs(terminal.var(axis=0) - variance) < Z_TOL * variance * np.sqrt(2.0 / n_paths))
    exp_std = np.sqrt(np.expm1(variance))
    assert np.all(np.abs(np.exp(terminal).mean(axis=0) - 1.0) < Z_TOL * exp_std / np.sqrt(n_paths))
    cross = np.corrcoef(terminal.T)[np.triu_indices(3, 1)]
    assert np.all(np.abs(cross) < Z_TOL / np.sqrt(n_paths))


def test_zero_volatility_region_walks_are_zero_and_still_draw():
    rng_zero, rng_vol = np.random.default_rng(6), np.random.default_rng(6)
    np.testing.assert_array_equal(region_log_walks(rng_zero, 3, 12, 2, 0.0), 0.0)
    region_log_walks(rng_vol, 3, 12, 2, 0.05)
    assert rng_zero.standard_normal() == rng_vol.standard_normal()


def test_series_index_adds_zone_and_region_with_months_last():
    zone_log = np.arange(2 * 3 * 3, dtype=float).reshape(2, 3, 3)  # (paths, months + 1, zones)
    region_log = 100.0 * np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)  # (paths, months + 1, regions)
    series = series_log_index(zone_log, region_log, np.array([2, 0, 2]), np.array([0, 1, 1]))
    assert series.shape == (2, 3, 3)
    assert series.flags.c_contiguous
    # path 1, series 2 = zone 2 + region 1: zone values 11, 14, 17; region values 700, 900, 1100
    np.testing.assert_array_equal(series[1, 2], [711.0, 914.0, 1117.0])
    # path 0, series 1 = zone 0 + region 1: zone values 0, 3, 6; region values 100, 300, 500
    np.testing.assert_array_equal(series[0, 1], [100.0, 303.0, 506.0])


@pytest.mark.parametrize("n_draws", [20_000, pytest.param(1_000_000, marks=pytest.mark.heavy)])
def test_property_noise_has_random_walk_moments(n_draws):
    vol, years = 0.1, 4.0
    noise = property_log_noise(np.random.default_rng(7).standard_normal(n_draws), np.full(n_draws, years), vol)
    variance = vol**2 * years
    assert abs(noise.mean() + 0.5 * variance) < Z_TOL * np.sqrt(variance / n_draws)
    assert abs(noise.var() - variance) < Z_TOL * variance * np.sqrt(2.0 / n_draws)
    assert abs(np.exp(noise).mean() - 1.0) < Z_TOL * np.sqrt(np.expm1(variance) / n_draws)


def test_property_noise_vanishes_without_time_or_volatility():
    rng = np.random.default_rng(8)
    np.testing.assert_array_equal(property_log_noise(rng.standard_normal(5), np.zeros(5), 0.3), 0.0)
    np.testing.assert_array_equal(property_log_noise(rng.standard_normal(5), np.full(5, 3.0), 0.0), 0.0)
    with pytest.raises(ValueError):
        property_log_noise(rng.standard_normal(1), np.array([-1.0]), 0.1)


def test_same_seed_reproduces_every_draw():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return (
            zone_log_indices(rng, 5, 24, DRIFT, VOL, CORR),
            region_log_walks(rng, 5, 24, 4, 0.03),
            property_log_noise(rng.standard_normal(7), np.linspace(0.0, 5.0, 7), 0.05),
        )

    for first, again, other in zip(draw(11), draw(11), draw(12)):
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first[..., 1:], other[..., 1:])
