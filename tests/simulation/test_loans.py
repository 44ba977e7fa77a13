"""Loan economics against the domain's worked examples (§1.2, §10.4.1) and hand-computed cases."""

import numpy as np
import pytest

from simulation.loans import accrued_interest, appreciation_share, default_recovery, exit_proceeds
from simulation.market import property_log_noise, region_log_walks, series_log_index, zone_log_indices

CENT = 0.005
AMOUNT, VALUE0, RATE, YEARS = 250_000.0, 500_000.0, 0.05, 7.0
THRESHOLDS, SHARES = (0.2, 0.5, 1.0), (0.10, 0.20, 0.30, 0.40)


def proceeds(value_t, share=0.5, share_depreciation=False, senior_debt=0.0, sale_cost=0.0, years=YEARS):
    return exit_proceeds(
        np.array([AMOUNT]), np.array([VALUE0]), np.array([value_t]), np.array([years]), np.array([RATE]),
        np.array([share]), share_depreciation, np.array([senior_debt]), sale_cost,
    )[0]  # fmt: skip


def test_worked_example_upside():
    value_t = VALUE0 * 1.04**7
    ltv, growth = np.array([AMOUNT / VALUE0]), np.array([value_t / VALUE0 - 1.0])
    share = appreciation_share("ltv_based", ltv, growth, 0.0, THRESHOLDS, SHARES)
    assert share[0] == 0.5
    assert value_t == pytest.approx(657_965.89, abs=CENT)
    assert accrued_interest(AMOUNT, RATE, YEARS) == pytest.approx(87_500.00, abs=CENT)
    exit_value = proceeds(value_t, share[0])
    assert exit_value == pytest.approx(416_482.94, abs=CENT)
    assert exit_value - AMOUNT - 87_500.0 == pytest.approx(78_982.94, abs=CENT)
    assert exit_value / AMOUNT == pytest.approx(1.665932, abs=5e-7)  # §10.4.1 loan MOIC
    assert (exit_value / AMOUNT) ** (1.0 / 7.0) - 1.0 == pytest.approx(0.075636, abs=5e-7)  # loan IRR


def test_worked_example_downside():
    value_t = VALUE0 * 0.98**7
    assert value_t == pytest.approx(434_062.77, abs=CENT)
    assert proceeds(value_t) == pytest.approx(337_500.00, abs=CENT)
    loss = proceeds(value_t) - proceeds(value_t, share_depreciation=True)
    assert loss == pytest.approx(32_968.62, abs=CENT)


def test_claim_is_capped_by_the_homeowners_equity():
    # V_T 600k: claim 250,000 + 87,500 + 0.5 * 100,000 = 387,500
    assert proceeds(600_000.0) == pytest.approx(387_500.0, abs=CENT)
    # equity after a 5 % sale cost and 250k senior debt: 570,000 - 250,000 = 320,000
    assert proceeds(600_000.0, senior_debt=250_000.0, sale_cost=0.05) == pytest.approx(320_000.0, abs=CENT)
    # underwater: the senior lender takes everything
    assert proceeds(600_000.0, senior_debt=700_000.0) == 0.0


def test_claim_is_never_negative():
    # fixed share 0.9 on a 20 % LTV loan whose property lost 90 %: 100,000 + 0 + 0.9 * (50,000 - 500,000) < 0
    exit_value = exit_proceeds(
        np.array([100_000.0]), np.array([VALUE0]), np.array([50_000.0]), np.array([0.0]), np.array([RATE]),
        np.array([0.9]), True, np.array([0.0]), 0.0,
    )  # fmt: skip
    np.testing.assert_array_equal(exit_value, [0.0])


def test_proceeds_vectorise_over_loans():
    exit_value = exit_proceeds(
        np.array([250_000.0, 100_000.0]), np.array([500_000.0, 400_000.0]), np.array([600_000.0, 300_000.0]),
        np.array([7.0, 2.0]), np.array([0.05, 0.06]), np.array([0.5, 0.25]), False, np.zeros(2), 0.0,
    )  # fmt: skip
    # second loan: 100,000 + 100,000 * 0.06 * 2 = 112,000, no gain to share
    np.testing.assert_allclose(exit_value, [387_500.0, 112_000.0], rtol=1e-14)


def test_share_methods():
    ltv = np.array([0.3, 0.5])
    growth = np.array([0.1, 0.6])
    np.testing.assert_array_equal(appreciation_share("ltv_based", ltv, growth, 0.5, THRESHOLDS, SHARES), ltv)
    fixed = appreciation_share("fixed", ltv, growth, 0.35, THRESHOLDS, SHARES)
    np.testing.assert_array_equal(fixed, [0.35, 0.35])
    with pytest.raises(ValueError):
        appreciation_share("bespoke", ltv, growth, 0.5, THRESHOLDS, SHARES)


def test_tiered_share_starts_each_tier_at_its_threshold():
    growth = np.array([-0.1, 0.0, 0.19, 0.2, 0.35, 0.5, 0.99, 1.0, 2.0])
    share = appreciation_share("tiered", np.full(9, 0.4), growth, 0.5, THRESHOLDS, SHARES)
    np.testing.assert_array_equal(share, [0.1, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4])


def test_tiered_share_applies_to_the_gain_not_the_exit_value():
    # V_T 750k: growth 0.5 -> share 0.3 of the 250k gain = 75,000 (V2's V_T * a base would give 112,500)
    share = appreciation_share("tiered", np.array([0.5]), np.array([0.5]), 0.5, THRESHOLDS, SHARES)[0]
    assert proceeds(750_000.0, share) == pytest.approx(250_000.0 + 87_500.0 + 75_000.0, abs=CENT)


@pytest.mark.parametrize(
    ("value_at_default", "senior_debt", "haircut", "expected"),
    [
        (400_000.0, 0.0, 0.90, 258_750.0),  # claim 287,500 < collateral 360,000; * 0.9
        (300_000.0, 50_000.0, 0.85, 187_000.0),  # collateral 270,000 - 50,000 = 220,000; * 0.85
        (100_000.0, 150_000.0, 0.80, 0.0),  # senior debt exceeds the foreclosure value
    ],
)
def test_default_recovery(value_at_default, senior_debt, haircut, expected):
    recovery = default_recovery(
        np.array([AMOUNT]), np.array([3.0]), np.array([RATE]), np.array([value_at_default]), 0.10,
        np.array([senior_debt]), np.array([haircut]),
    )  # fmt: skip
    assert recovery[0] == pytest.approx(expected, abs=CENT)


def test_mark_to_model_is_the_claim_at_the_mark_date():
    # after 3 years at an index value of 550k: 250,000 + 37,500 + 0.5 * 50,000
    mark = exit_proceeds(
        np.array([AMOUNT]), np.array([VALUE0]), np.array([550_000.0]), np.array([3.0]), np.array([RATE]),
        np.array([0.5]), False, np.array([0.0]), 0.0,
    )  # fmt: skip
    assert mark[0] == pytest.approx(312_500.0, abs=CENT)


def test_zero_volatility_property_value_follows_its_zone():
    # a green-zone loan originated at month 12 and sold at month 96 with every volatility 0
    rng = np.random.default_rng(31)
    drift = np.array([0.04, 0.03, 0.02])
    zone_log = zone_log_indices(rng, 1, 120, drift, np.zeros(3), np.eye(3))
    region_log = region_log_walks(rng, 1, 120, 2, 0.0)
    series_log = series_log_index(zone_log, region_log, np.array([0, 2]), np.array([1, 0]))
    log_ratio = series_log[0, 0, 96] - series_log[0, 0, 12] + property_log_noise(rng.standard_normal(1), np.array([7.0]), 0.0)
    value_t = VALUE0 * np.exp(log_ratio)
    np.testing.assert_allclose(value_t / VALUE0, 1.04**7, rtol=1e-13)
    assert proceeds(value_t[0]) == pytest.approx(416_482.94, abs=CENT)
