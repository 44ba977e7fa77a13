"""NPV, IRR, XIRR and the batch IRR against hand-computed values (domain §10.2, §10.4)."""

import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulation.irr import IrrReason, irr, irr_batch, npv, xirr

LOAN_PROCEEDS = 416_482.94  # §1.2 worked example: L = 250k, V0 = 500k, r = 5 %, g = 4 %, exit at 7 years


def seven_year_loan(advance: float) -> list[float]:
    return [-advance, 0, 0, 0, 0, 0, 0, LOAN_PROCEEDS]


# NPV ------------------------------------------------------------------------------------------------


def test_npv_reference_value():
    hand = -100 + 30 / 1.1 + 40 / 1.21 + 50 / 1.331
    assert npv(0.10, [-100, 30, 40, 50]) == pytest.approx(hand, abs=1e-12)
    assert npv(0.10, [-100, 30, 40, 50]) == pytest.approx(-2.1037, abs=5e-5)


def test_npv_uses_times_in_years():
    assert npv(0.21, [-100, 110], [0.0, 0.5]) == pytest.approx(-100 + 110 / 1.1, abs=1e-12)


def test_npv_is_vectorised_over_paths_and_rates():
    flows = np.array([[-100, 30, 40, 50], [-100, 0, 0, 133.1]])
    assert npv(0.10, flows) == pytest.approx([-2.1036814, 0.0], abs=1e-6)
    assert npv(np.array([0.0, 0.10]), flows) == pytest.approx([20.0, 0.0], abs=1e-9)


def test_npv_rejects_a_rate_at_or_below_minus_one():
    with pytest.raises(ValueError):
        npv(-1.0, [-1, 2])


# IRR reference values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flows", "expected"),
    [([-100, 30, 40, 50], 0.088963), ([-100, 50, 40, 5], -0.032921)],
)
def test_irr_reference_values(flows, expected):
    result = irr(flows)
    assert result.reason is IrrReason.OK
    assert not result.multiple_roots
    assert result.rate == pytest.approx(expected, abs=5e-7)


def test_irr_with_half_year_times():
    assert irr([-100, 30, 40, 50], [0, 0.5, 1.0, 1.5]).rate == pytest.approx(0.185841, abs=5e-7)


def test_loan_irr_fee_ignored_and_fee_retained():
    ignored = irr(seven_year_loan(250_000)).rate
    retained = irr(seven_year_loan(242_500)).rate
    assert ignored == pytest.approx((LOAN_PROCEEDS / 250_000) ** (1 / 7) - 1, abs=1e-12)
    assert ignored == pytest.approx(0.075636, abs=5e-7)
    assert retained == pytest.approx((LOAN_PROCEEDS / 242_500) ** (1 / 7) - 1, abs=1e-12)
    assert retained == pytest.approx(0.080327, abs=5e-7)


def test_single_payment_is_exact_on_a_monthly_grid():
    flows = np.zeros(25)
    flows[0], flows[24] = -1.0, 1.21
    assert irr(flows, np.arange(25) / 12).rate == pytest.approx(0.1, abs=1e-12)


# IRR without a number -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flows", "reason"),
    [
        ([1, 2, 3], IrrReason.NO_OUTFLOW),
        ([-1, -2, 0], IrrReason.NO_INFLOW),
        ([], IrrReason.EMPTY),
        ([0, 0, 0], IrrReason.EMPTY),
        ([1, -1, 1], IrrReason.NO_ROOT),  # 1 − x + x² > 0 for every discount factor x
        ([-1, 100], IrrReason.NO_ROOT),  # 9,900 % lies beyond the 1,000 % bracket
    ],
)
def test_no_irr_gives_nan_and_the_reason(flows, reason):
    result = irr(flows)
    assert np.isnan(result.rate)
    assert result.reason is reason
    assert not result.multiple_roots


def test_reason_labels():
    assert [reason.label for reason in IrrReason] == ["ok", "no_outflow", "no_inflow", "no_root", "empty"]


def test_non_finite_flows_and_mismatched_times_are_rejected():
    with pytest.raises(ValueError):
        irr([-1, np.nan, 2])
    with pytest.raises(ValueError):
        irr([-1, 2], [0, 1, 2])


# Multiple roots -------------------------------------------------------------------------------------


def test_multiple_roots_pick_the_moic_implied_rate():
    # NPV·(1+r)³ = −(1+r)³ + 6(1+r)² − 11(1+r) + 6 = −r(r − 1)(r − 2): roots 0 %, 100 %, 200 %.
    # MOIC = 12/12 = 1, so the implied rate is 0 whatever the duration.
    result = irr([-1, 6, -11, 6])
    assert result.reason is IrrReason.OK
    assert result.multiple_roots
    assert result.rate == pytest.approx(0.0, abs=1e-10)


def test_multiple_roots_can_pick_the_middle_root():
    # Roots −20 %, 10 %, 40 %: NPV = (x − x1)(x − x2)(x − x3) in the discount factor x = 1/(1+r).
    x1, x2, x3 = 1 / 0.8, 1 / 1.1, 1 / 1.4
    flows = [-x1 * x2 * x3, x1 * x2 + x1 * x3 + x2 * x3, -(x1 + x2 + x3), 1.0]
    inflow_time = (1 * flows[1] + 3 * flows[3]) / (flows[1] + flows[3])
    outflow_time = (0 * flows[0] + 2 * flows[2]) / (flows[0] + flows[2])
    moic = (flows[1] + flows[3]) / -(flows[0] + flows[2])
    implied = moic ** (1 / (inflow_time - outflow_time)) - 1
    assert abs(implied - 0.1) < min(abs(implied + 0.2), abs(implied - 0.4))
    result = irr(flows)
    assert result.multiple_roots
    assert result.rate == pytest.approx(0.1, abs=1e-10)


# XIRR -----------------------------------------------------------------------------------------------


def test_xirr_is_act_365():
    # 2023 has 365 days, 2024 has 366: ACT/365 makes the second year 366/365 years long.
    assert xirr([-1000, 1100], [datetime.date(2023, 1, 1), datetime.date(2024, 1, 1)]).rate == pytest.approx(
        0.1, abs=1e-12
    )
    leap = xirr([-1000, 1100], [datetime.date(2024, 1, 1), datetime.date(2025, 1, 1)]).rate
    assert leap == pytest.approx(1.1 ** (365 / 366) - 1, abs=1e-12)


def test_xirr_with_three_dates_zeroes_the_hand_written_npv():
    dates = [datetime.date(2023, 1, 1), datetime.date(2023, 7, 2), datetime.date(2024, 1, 1)]  # days 0, 182, 365
    rate = xirr([-100, 50, 60], dates).rate
    assert -100 + 50 * (1 + rate) ** (-182 / 365) + 60 / (1 + rate) == pytest.approx(0.0, abs=1e-9)


def test_xirr_needs_one_date_per_flow():
    with pytest.raises(ValueError):
        xirr([-1, 2], [datetime.date(2023, 1, 1)])


# Properties -----------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    investment=st.floats(1.0, 1e6),
    inflow_shares=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=10),
)
def test_npv_at_the_irr_is_zero(investment, inflow_shares):
    flows = [-investment, *(share * investment for share in inflow_shares)]
    result = irr(flows)
    assert result.reason is IrrReason.OK
    assert npv(result.rate, flows) == pytest.approx(0.0, abs=1e-9 * investment)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(-0.5, 3.0),
    interim_times=st.lists(st.floats(0.05, 15.0), max_size=8, unique=True),
    shares=st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8),
    tail=st.floats(0.1, 5.0),
)
def test_irr_recovers_a_constructed_rate(rate, interim_times, shares, tail):
    # −1 at t = 0; interim inflows worth a share of it at `rate`; the rest returned at the end.
    times = sorted(interim_times)
    present_values = 0.9 * np.array(shares[: len(times)]) / max(1.0, sum(shares))
    end = (times[-1] if times else 0.0) + tail
    flows = [-1.0, *(pv * (1 + rate) ** t for pv, t in zip(present_values, times)), 0.0]
    flows[-1] = (1.0 - present_values.sum()) * (1 + rate) ** end
    result = irr(flows, [0.0, *times, end])
    assert result.reason is IrrReason.OK
    assert not result.multiple_roots
    assert result.rate == pytest.approx(rate, abs=1e-9)


# Batch ----------------------------------------------------------------------------------------------


def assert_batch_matches_scalar(flows: np.ndarray, times: np.ndarray) -> None:
    rates, reasons, multiple = irr_batch(flows, times)
    assert rates.shape == reasons.shape == multiple.shape == (flows.shape[0],)
    assert reasons.dtype == np.int8
    for row, (rate, reason, several) in enumerate(zip(rates, reasons, multiple)):
        expected = irr(flows[row], times)
        assert reason == expected.reason, row
        assert several == expected.multiple_roots, row
        if expected.reason is IrrReason.OK:
            # A k-fold root is only fixed to about eps^(1/k): near one (e.g. [-1, 3, -3, 1], a triple root
            # at 0) two solvers may stop at different points where the NPV is zero to rounding.
            both_roots = max(abs(npv(rate, flows[row], times)), abs(npv(expected.rate, flows[row], times))) \
                <= 1e-13 * np.abs(flows[row]).sum()
            assert rate == pytest.approx(expected.rate, abs=1e-9) or both_roots, row
        else:
            assert np.isnan(rate), row


def random_fund_flows(rng: np.random.Generator, paths: int, months: int) -> np.ndarray:
    """Quarterly calls in the first two years, quarterly distributions later, and every kind of odd row;
    the months between quarter ends stay empty except for late fees."""
    flows = np.zeros((paths, months))
    flows[:, 0:24:3] = -rng.uniform(0.5, 2.0, (paths, 8))
    distribution_months = rng.choice(np.arange(36, months, 3), size=(paths, 6))
    np.put_along_axis(flows, distribution_months, rng.uniform(0.5, 4.0, (paths, 6)), axis=1)
    fees_late = rng.random(paths) < 0.3
    flows[fees_late, months - 12 :: 6] -= 0.3  # a fee after the distributions: several sign changes
    dense = rng.random(paths) < 0.1
    flows[dense] = 0.0
    flows[dense, ::3] = rng.normal(0.0, 1.0, (dense.sum(), len(range(0, months, 3))))
    flows[0] = 0.0  # empty
    flows[1] = np.abs(flows[1])  # no outflow
    flows[2] = -np.abs(flows[2])  # no inflow
    flows[3, :] = 0.0
    flows[3, [0, 12, 24]] = [1.0, -1.0, 1.0]  # no root
    flows[4, :] = 0.0
    flows[4, [0, 12]] = [-1.0, 100.0]  # one root, above the bracket
    flows[5, :] = 0.0
    flows[5, [0, 12, 24, 36]] = [-1.0, 6.0, -11.0, 6.0]  # three roots
    flows[6, :] = 0.0
    flows[6, [0, 60]] = [-1.0, 1.5]  # single payment
    return flows


def test_batch_matches_scalar_on_a_monthly_grid_with_zero_columns():
    rng = np.random.default_rng(20240601)
    months = 121
    flows = random_fund_flows(rng, paths=300, months=months)
    assert np.any(np.all(flows == 0.0, axis=0))
    assert_batch_matches_scalar(flows, np.arange(months) / 12)


def test_batch_reasons_for_the_odd_rows():
    rng = np.random.default_rng(7)
    rates, reasons, multiple = irr_batch(random_fund_flows(rng, paths=10, months=61), np.arange(61) / 12)
    assert list(reasons[:7]) == [
        IrrReason.EMPTY,
        IrrReason.NO_OUTFLOW,
        IrrReason.NO_INFLOW,
        IrrReason.NO_ROOT,
        IrrReason.NO_ROOT,
        IrrReason.OK,
        IrrReason.OK,
    ]
    assert np.all(np.isnan(rates[:5]))
    assert multiple[5] and not multiple[6]
    assert rates[5] == pytest.approx(0.0, abs=1e-10)
    assert rates[6] == pytest.approx(1.5 ** (1 / 5) - 1, abs=1e-12)


def test_batch_of_nothing():
    rates, reasons, multiple = irr_batch(np.zeros((3, 0)), np.zeros(0))
    assert np.all(np.isnan(rates)) and list(reasons) == [IrrReason.EMPTY] * 3 and not multiple.any()
    rates, reasons, multiple = irr_batch(np.zeros((0, 4)), np.arange(4.0))
    assert rates.shape == reasons.shape == multiple.shape == (0,)


@settings(max_examples=100, deadline=None)
@given(
    flows=st.integers(1, 6).flatmap(
        lambda periods: st.lists(
            st.lists(st.integers(-4, 4), min_size=periods, max_size=periods), min_size=1, max_size=6
        )
    ),
    spacing=st.sampled_from([1.0, 0.25, 1 / 12]),
)
def test_batch_matches_scalar_on_small_integer_flows(flows, spacing):
    matrix = np.array(flows, dtype=float)
    assert_batch_matches_scalar(matrix, spacing * np.arange(matrix.shape[1]))
