"""Fund metrics against hand-computed values (domain §4.3–§4.5, §10.2) and independent formulas."""

import math
import statistics

import numpy as np
import pytest

from simulation.metrics import (
    DEFAULT_QUANTILES,
    annualised_roi,
    conditional_irr_at_risk,
    conditional_value_at_risk,
    discounted_payback,
    effective_n,
    fan_chart,
    hhi,
    histogram,
    irr_at_risk,
    max_drawdown,
    multiples,
    payback_period,
    prob_at_least,
    prob_below,
    running_mean_ci,
    sharpe,
    sortino,
    summarize,
    value_at_risk,
    volatility,
)

RETURNS = [0.05, -0.02, 0.03, -0.01, 0.04]  # §10.2; sorted: −0.02, −0.01, 0.03, 0.04, 0.05
YEARS = [0.0, 1.0, 2.0, 3.0]


# Multiples ------------------------------------------------------------------------------------------


def test_moic_and_roi():
    result = multiples([100, 0, 0, 0], [0, 30, 40, 50])
    assert result.moic == pytest.approx(1.2)
    assert result.roi == pytest.approx(0.2)
    assert multiples([100, 0, 0, 0], [0, 20, 30, 40]).roi == pytest.approx(-0.1)


def test_contributions_count_by_magnitude_and_rows_are_paths():
    result = multiples([[-100, 0], [50, 50], [0, 0]], [[0, 150], [0, 50], [0, 10]])
    assert result.moic[:2] == pytest.approx([1.5, 0.5])
    assert np.isnan(result.moic[2]) and np.isnan(result.roi[2])


def test_annualised_roi():
    assert annualised_roi(1.2, 2.0) == pytest.approx(math.sqrt(1.2) - 1)
    assert np.isnan(annualised_roi(-0.5, 2.0))
    with pytest.raises(ValueError):
        annualised_roi(1.2, 0.0)


# Payback --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flows", "expected"),
    [
        ([-100, 30, 40, 50], 2.6),  # 2 + 30/50
        ([-100, 50, 50], 2.0),  # 1 + 50/50
        ([-100, 150, 50], 2 / 3),  # 0 + 100/150
    ],
)
def test_payback_reference_values(flows, expected):
    assert payback_period(flows, YEARS[: len(flows)]) == pytest.approx(expected)


def test_payback_never_reached_is_nan():
    assert np.isnan(payback_period([-100, 20, 20, 20], YEARS))
    assert np.isnan(payback_period([100, 20, 20, 20], YEARS))  # never under water
    assert np.isnan(payback_period([-100, np.nan, 80, 50], YEARS))


def test_payback_interpolates_in_uneven_periods_and_per_row():
    times = [0.0, 0.5, 1.0, 1.5]
    result = payback_period([[-100, 30, 40, 50], [-100, 0, 0, 200], [-100, 20, 20, 20]], times)
    assert result[0] == pytest.approx(1.0 + 0.6 * 0.5)
    assert result[1] == pytest.approx(1.0 + 0.5 * 0.5)
    assert np.isnan(result[2])


def test_payback_counts_from_the_first_time_under_water():
    # Cumulative: 10, −90, −50, 10: under water from t=1, back above zero inside (2, 3].
    assert payback_period([10, -100, 40, 60], YEARS) == pytest.approx(2 + 50 / 60)


def test_discounted_payback():
    # At 10 %: −100, 60/1.1, 60/1.21 → shortfall after year 1 is 100 − 60/1.1 = 50/1.1.
    assert discounted_payback([-100, 60, 60], YEARS[:3], 0.10) == pytest.approx(1 + (50 / 1.1) / (60 / 1.21))


def test_payback_of_no_periods():
    assert np.isnan(payback_period(np.zeros(0), np.zeros(0)))


# Risk across paths ----------------------------------------------------------------------------------


def test_volatility_and_sharpe_reference():
    assert volatility(RETURNS) == pytest.approx(statistics.stdev(RETURNS))
    assert volatility(RETURNS) == pytest.approx(0.031145, abs=5e-7)
    assert sharpe(RETURNS, 0.01) == pytest.approx(0.25686, abs=5e-6)


def test_sortino_by_hand():
    # MAR 0: shortfalls 0, −0.02, 0, −0.01, 0 → DD = sqrt((0.0004 + 0.0001)/5) = 0.01; mean 0.018.
    assert sortino(RETURNS, 0.0) == pytest.approx(1.8)
    # MAR 1 %: shortfalls −0.03, −0.02 → DD = sqrt(0.0013/5); excess mean 0.008.
    assert sortino(RETURNS, 0.01) == pytest.approx(0.008 / math.sqrt(0.0013 / 5))


def test_ratios_are_nan_when_undefined():
    assert volatility([0.1, 0.1, 0.1]) == 0.0
    assert np.isnan(sharpe([0.1, 0.1, 0.1], 0.03))  # no volatility
    assert np.isnan(sortino([0.1, 0.2], 0.05))  # nothing below the MAR
    assert np.isnan(volatility([0.1]))
    assert np.isnan(sharpe([], 0.03))


def test_capital_var_and_cvar_on_losses():
    losses = -np.array(RETURNS)  # sorted: −0.05, −0.04, −0.03, 0.01, 0.02
    assert value_at_risk(losses, 0.95) == pytest.approx(0.018)  # 0.01 + 0.8·0.01
    assert value_at_risk(losses, 0.99) == pytest.approx(0.0196)  # 0.01 + 0.96·0.01
    assert conditional_value_at_risk(losses, 0.95) == pytest.approx(0.02)
    assert conditional_value_at_risk(losses, 0.99) == pytest.approx(0.02)


def test_capital_cvar_averages_the_tail():
    losses = np.arange(10) / 10  # 0.0 … 0.9; the 80 % quantile sits at 7.2/9 of the way: 0.72
    assert value_at_risk(losses, 0.80) == pytest.approx(0.72)
    assert conditional_value_at_risk(losses, 0.80) == pytest.approx((0.8 + 0.9) / 2)


def test_irr_var_and_cvar_as_levels():
    assert irr_at_risk(RETURNS, 0.95) == pytest.approx(-0.018)  # −0.02 + 0.2·0.01
    assert irr_at_risk(RETURNS, 0.99) == pytest.approx(-0.0196)
    assert conditional_irr_at_risk(RETURNS, 0.95) == pytest.approx(-0.02)
    irrs = np.arange(10) / 100  # the 20 % quantile is 0.018; IRRs at or below: 0.00, 0.01
    assert irr_at_risk(irrs, 0.80) == pytest.approx(0.018)
    assert conditional_irr_at_risk(irrs, 0.80) == pytest.approx(0.005)


def test_risk_measures_ignore_nans_and_survive_empty_input():
    with_nans = [np.nan, *RETURNS, np.nan]
    assert value_at_risk(-np.array(with_nans), 0.95) == pytest.approx(0.018)
    assert sharpe(with_nans, 0.01) == pytest.approx(0.25686, abs=5e-6)
    for measure in (value_at_risk, conditional_value_at_risk, irr_at_risk, conditional_irr_at_risk):
        assert np.isnan(measure([np.nan], 0.95))
    with pytest.raises(ValueError):
        value_at_risk(RETURNS, 1.0)


def test_probabilities_count_only_non_nan_values():
    x = [0.1, 0.2, np.nan, 0.15, 0.05]
    assert prob_at_least(x, 0.15) == (0.5, 4)  # 0.2 and 0.15 (inclusive)
    assert prob_below(x, 0.15) == (0.5, 4)
    value, count = prob_below([np.nan], 1.0)
    assert np.isnan(value) and count == 0


# Drawdown -------------------------------------------------------------------------------------------


def test_max_drawdown_reference_values():
    assert max_drawdown([100, 110, 105, 95, 100, 90, 95]) == pytest.approx(20 / 110)
    assert max_drawdown([100, 90, 80, 70]) == pytest.approx(0.3)
    assert max_drawdown([100, 101, 102, 103]) == 0.0


def test_max_drawdown_per_row_with_guards():
    result = max_drawdown([[100, 90, 80, 70], [0, 10, 20, 15], [-5, -10, 20, 10], [100, np.nan, 80, 90]])
    assert result[0] == pytest.approx(0.3)
    assert np.isnan(result[1:]).all()  # a zero peak, a negative peak, a NaN


# Concentration --------------------------------------------------------------------------------------


def test_zone_hhi_and_effective_number():
    assert hhi([0.6, 0.3, 0.1]) == pytest.approx(0.46)
    assert hhi([60, 30, 10]) == pytest.approx(0.46)
    assert effective_n([0.6, 0.3, 0.1]) == pytest.approx(1 / 0.46)


def test_hhi_over_leading_axes():
    weights = np.array([[[1, 1, 1, 1], [1, 0, 0, 0]], [[0, 0, 0, 0], [3, 1, 0, 0]]])
    result = hhi(weights)
    assert result.shape == (2, 2)
    assert result[0] == pytest.approx([0.25, 1.0])
    assert np.isnan(result[1, 0])
    assert result[1, 1] == pytest.approx(0.75**2 + 0.25**2)
    with pytest.raises(ValueError):
        hhi([0.5, -0.5])


# Distribution summaries -----------------------------------------------------------------------------


def test_summary_against_statistics():
    rng = np.random.default_rng(11)
    data = list(rng.normal(0.08, 0.03, 257))
    summary = summarize([*data, np.nan, np.nan])
    cut_points = statistics.quantiles(data, n=100, method="inclusive")  # numpy's "linear" rule
    assert summary.count == 257 and summary.nan_count == 2
    assert summary.mean == pytest.approx(statistics.fmean(data))
    assert summary.std == pytest.approx(statistics.stdev(data))
    assert (summary.min, summary.max) == (min(data), max(data))
    assert list(summary.quantiles) == list(DEFAULT_QUANTILES)
    for pct in DEFAULT_QUANTILES:
        assert summary.quantiles[pct] == pytest.approx(cut_points[pct - 1])
    assert summary.standard_error == pytest.approx(statistics.stdev(data) / math.sqrt(257))
    assert summary.ci95_half_width == pytest.approx(1.96 * statistics.stdev(data) / math.sqrt(257))


def test_summary_of_nothing_is_nan():
    summary = summarize([np.nan, np.nan])
    assert summary.count == 0 and summary.nan_count == 2
    assert np.isnan([summary.mean, summary.std, summary.min, summary.max, summary.standard_error]).all()
    assert np.isnan(list(summary.quantiles.values())).all()


def test_histogram_drops_nans():
    counts, edges = histogram([0.0, 0.1, 0.4, np.nan, 1.0], bins=[0.0, 0.5, 1.0])
    assert list(counts) == [3, 1]  # numpy's last bin is closed
    assert list(edges) == [0.0, 0.5, 1.0]


def test_fan_chart_matches_per_year_percentiles():
    rng = np.random.default_rng(5)
    series = rng.normal(size=(41, 3))
    series[::4, 1] = np.nan
    series[:, 2] = np.nan
    bands = fan_chart(series)
    assert bands.shape == (5, 3)
    for column in range(2):
        values = [v for v in series[:, column] if not math.isnan(v)]
        cut_points = statistics.quantiles(values, n=100, method="inclusive")
        assert bands[:, column] == pytest.approx([cut_points[q - 1] for q in (5, 25, 50, 75, 95)])
    assert np.isnan(bands[:, 2]).all()


def test_running_mean_and_confidence_half_width():
    data = [3.0, 1.0, np.nan, 4.0, 1.0, 5.0]
    values = [v for v in data if not math.isnan(v)]
    mean, half_width = running_mean_ci(data)
    assert mean == pytest.approx([statistics.fmean(values[:k]) for k in range(1, 6)])
    assert np.isnan(half_width[0])
    expected = [1.96 * statistics.stdev(values[:k]) / math.sqrt(k) for k in range(2, 6)]
    assert half_width[1:] == pytest.approx(expected)
    empty_mean, empty_half_width = running_mean_ci([])
    assert empty_mean.size == empty_half_width.size == 0
