"""Waterfalls against the hand-computed examples of domain §3.4 / §10.4 and the invariants of §3.2.

Unless a test says otherwise the terms are the §3.4 ones: hurdle 8 % annual effective, carry 20 %,
full catch-up, GP commitment 2 % of LP-class capital. Hand values are written out in full
precision (``1.08**5 = 1.4693280768`` exactly) and compared to 1e-6.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from simulation.waterfall import COMPOUNDING_MODES, WaterfallTerms, american, european, split_lp_class

TERMS = WaterfallTerms()
EXACT = 1e-6
ANNUAL_GRID = np.arange(6.0)  # t = 0..5 years


def one_in_one_out(contribution: float, distribution: float, years: float, terms: WaterfallTerms = TERMS):
    """European waterfall of a single contribution at t=0 and a single distribution at ``years``."""
    return european([[contribution, 0.0]], [[0.0, distribution]], [0.0, years], terms)


def irr(flows: np.ndarray, times: np.ndarray) -> float:
    return brentq(lambda r: float(np.sum(flows * (1.0 + r) ** -times)), -0.9, 1.0)


def last(result, field: str) -> float:
    """The value of a one-path result field in the final period."""
    return float(getattr(result, field)[0, -1])


# --------------------------------------------------------------------------------------------------
# §3.4 worked examples, European


def test_e1_single_distribution_full_catch_up():
    result = one_in_one_out(100.0, 180.0, 5.0)
    # pref = 100 (1.08^5 - 1) = 46.93280768; catch-up = 0.25 pref = 11.73320192;
    # split pool = 80 - 46.93280768 - 11.73320192 = 21.3339904 -> LP 17.06719232, GP 4.26679808.
    assert last(result, "return_of_capital") == pytest.approx(100.0, abs=EXACT)
    assert last(result, "preferred_return") == pytest.approx(46.93280768, abs=EXACT)
    assert last(result, "catch_up_gp") == pytest.approx(11.73320192, abs=EXACT)
    assert last(result, "catch_up_lp") == pytest.approx(0.0, abs=EXACT)
    assert last(result, "split_lp") == pytest.approx(17.06719232, abs=EXACT)
    assert last(result, "split_gp") == pytest.approx(4.26679808, abs=EXACT)
    # GP carry 16 = 20 % x 80 profit; LP-class 164.
    assert last(result, "gp_carry") == pytest.approx(16.0, abs=EXACT)
    assert last(result, "lp_class") == pytest.approx(164.0, abs=EXACT)
    assert result.hurdle_shortfall[0] == pytest.approx(0.0, abs=EXACT)


def test_e1_lp_and_gp_commitment_shares():
    result = one_in_one_out(100.0, 180.0, 5.0)
    # Reading of E1: "ROC+pref split LP 143.9942 / GP-commit 2.9387" is the pro-rata (98 / 2) split
    # of the tier-1+2 cash 146.93280768: 0.98 x = 143.9941515264, 0.02 x = 2.9386561536. The GP
    # commitment shares every LP-class amount the same way, so of the whole 164 it gets 3.28.
    priority = result.return_of_capital + result.preferred_return
    lp, gp_commitment = split_lp_class(priority, TERMS.gp_commitment)
    assert lp[0, -1] == pytest.approx(143.9941515264, abs=EXACT)
    assert gp_commitment[0, -1] == pytest.approx(2.9386561536, abs=EXACT)
    assert round(lp[0, -1], 4) == 143.9942 and round(gp_commitment[0, -1], 4) == 2.9387
    # ROC 100 -> LP 98, GP commitment 2.
    assert split_lp_class(result.return_of_capital, TERMS.gp_commitment)[0][0, -1] == pytest.approx(98.0)
    assert last(result, "lp") == pytest.approx(0.98 * 164.0, abs=EXACT)
    assert last(result, "gp_commitment_share") == pytest.approx(0.02 * 164.0, abs=EXACT)


def test_e1_net_irr():
    result = one_in_one_out(100.0, 180.0, 5.0)
    # LP-class multiple 1.64 -> net IRR 1.64^(1/5) - 1 = 10.400 %.
    lp_class_flows = np.array([-100.0, last(result, "lp_class")])
    assert irr(lp_class_flows, np.array([0.0, 5.0])) == pytest.approx(0.10400, abs=5e-6)


def test_e2_partial_catch_up():
    result = one_in_one_out(100.0, 180.0, 5.0, WaterfallTerms(catch_up_rate=0.5))
    # tier-3 cash X = 0.2 x 46.93280768 / (0.5 - 0.2) = 31.288538453333 -> GP 15.644269226667, LP same;
    # remaining 80 - 46.93280768 - 31.288538453333 = 1.778653866667 -> LP 1.422923093333, GP 0.355730773333.
    assert last(result, "preferred_return") == pytest.approx(46.93280768, abs=EXACT)
    assert last(result, "catch_up_gp") == pytest.approx(15.644269226667, abs=EXACT)
    assert last(result, "catch_up_lp") == pytest.approx(15.644269226667, abs=EXACT)
    assert last(result, "split_lp") == pytest.approx(1.422923093333, abs=EXACT)
    assert last(result, "split_gp") == pytest.approx(0.355730773333, abs=EXACT)
    assert last(result, "gp_carry") == pytest.approx(16.0, abs=EXACT)


def test_e3_shortfall():
    result = one_in_one_out(100.0, 140.0, 5.0)
    # ROC 100, pref 40 of 46.93280768 owed -> shortfall 6.93280768, GP nothing.
    assert last(result, "return_of_capital") == pytest.approx(100.0, abs=EXACT)
    assert last(result, "preferred_return") == pytest.approx(40.0, abs=EXACT)
    assert last(result, "gp_carry") == pytest.approx(0.0, abs=EXACT)
    assert result.hurdle_shortfall[0] == pytest.approx(6.93280768, abs=EXACT)
    # LP IRR = 1.40^(1/5) - 1 = 6.96 %.
    flows = np.array([-100.0, last(result, "lp_class")])
    assert irr(flows, np.array([0.0, 5.0])) == pytest.approx(0.0696, abs=5e-5)


E4_TIMES = np.arange(7.0)
E4_CONTRIBUTIONS = np.array([[100.0, 0, 0, 0, 0, 0, 0]])
E4_DISTRIBUTIONS = np.array([[0.0, 0, 0, 50, 0, 0, 120]])


def check_e4(result, t3: int, t6: int) -> None:
    # t=3: H = 100 x 1.08^3 = 125.9712; tier 1 pays 50 -> K 50, unpaid pref 25.9712.
    assert result.return_of_capital[0, t3] == pytest.approx(50.0, abs=EXACT)
    assert result.preferred_return[0, t3] == pytest.approx(0.0, abs=EXACT)
    assert result.unreturned_capital[0, t3] == pytest.approx(50.0, abs=EXACT)
    assert result.unpaid_preferred[0, t3] == pytest.approx(25.9712, abs=EXACT)
    # t=6: H = 75.9712 x 1.259712 = 95.7018322944 -> pref 45.7018322944, catch-up 11.4254580736,
    # split pool 12.872709632 -> LP 10.2981677056, GP 2.5745419264; carry 14 = 20 % x 70.
    assert result.return_of_capital[0, t6] == pytest.approx(50.0, abs=EXACT)
    assert result.preferred_return[0, t6] == pytest.approx(45.7018322944, abs=EXACT)
    assert result.catch_up_gp[0, t6] == pytest.approx(11.4254580736, abs=EXACT)
    assert result.split_lp[0, t6] == pytest.approx(10.2981677056, abs=EXACT)
    assert result.split_gp[0, t6] == pytest.approx(2.5745419264, abs=EXACT)
    assert result.total_gp_carry[0] == pytest.approx(14.0, abs=EXACT)
    assert result.lp_class[0, t6] == pytest.approx(106.0, abs=EXACT)


def test_e4_multi_period_compounding_pref():
    result = european(E4_CONTRIBUTIONS, E4_DISTRIBUTIONS, E4_TIMES, TERMS)
    check_e4(result, t3=3, t6=6)
    # LP flows -100, +50 (t3), +106 (t6) -> LP IRR 9.404 %.
    flows = np.array([-100.0, result.lp_class[0, 3], result.lp_class[0, 6]])
    assert irr(flows, np.array([0.0, 3.0, 6.0])) == pytest.approx(0.09404, abs=5e-6)


def test_e4_on_a_monthly_grid_gives_the_same_numbers():
    contributions = np.zeros((1, 73))
    distributions = np.zeros((1, 73))
    contributions[0, 0], distributions[0, 36], distributions[0, 72] = 100.0, 50.0, 120.0
    result = european(contributions, distributions, np.arange(73) / 12, TERMS)
    check_e4(result, t3=36, t6=72)


def test_catch_up_also_covers_pref_paid_in_earlier_periods():
    contributions = np.array([[100.0, 0, 0, 0, 0, 0, 0]])
    distributions = np.array([[0.0, 0, 0, 0, 0, 120, 60]])
    result = european(contributions, distributions, np.arange(7.0), TERMS)
    # t=5: ROC 100, pref 20 of 46.93280768, nothing left for the GP.
    assert result.preferred_return[0, 5] == pytest.approx(20.0, abs=EXACT)
    assert result.gp_carry[0, 5] == 0.0
    # t=6: pref owed 26.93280768 x 1.08 = 29.0874322944 paid; cumulative pref 49.0874322944 ->
    # catch-up 0.25 x that = 12.2718580736; split 60 - 29.0874322944 - 12.2718580736 = 18.640709632
    # -> GP 3.7281419264. Carry 16 = 20 % x 80.
    assert result.preferred_return[0, 6] == pytest.approx(29.0874322944, abs=EXACT)
    assert result.catch_up_gp[0, 6] == pytest.approx(12.2718580736, abs=EXACT)
    assert result.split_gp[0, 6] == pytest.approx(3.7281419264, abs=EXACT)
    assert result.total_gp_carry[0] == pytest.approx(16.0, abs=EXACT)


def test_e5_european_side():
    distributions = np.array([[0.0, 0, 80, 0, 0, 40]])
    contributions = np.array([[100.0, 0, 0, 0, 0, 0]])
    result = european(contributions, distributions, ANNUAL_GRID, TERMS)
    # t=2: H = 116.64, pay 80 -> K 20, unpaid pref 16.64; t=5: H = 36.64 x 1.259712 = 46.15584768,
    # pay 40 -> 6.15584768 still owed, hurdle never met, carry 0.
    assert result.unreturned_capital[0, 2] == pytest.approx(20.0, abs=EXACT)
    assert result.unpaid_preferred[0, 2] == pytest.approx(16.64, abs=EXACT)
    assert result.hurdle_shortfall[0] == pytest.approx(6.15584768, abs=EXACT)
    assert result.total_gp_carry[0] == pytest.approx(0.0, abs=EXACT)


def test_e5_deal_a_on_its_own_flows():
    # Deal A: 50 at t=0, 80 at t=2: pref 50 (1.08^2 - 1) = 8.32, catch-up 2.08, split GP 3.92 -> carry 6.
    result = european([[50.0, 0.0, 0.0]], [[0.0, 0.0, 80.0]], [0.0, 1.0, 2.0], TERMS)
    assert last(result, "preferred_return") == pytest.approx(8.32, abs=EXACT)
    assert last(result, "catch_up_gp") == pytest.approx(2.08, abs=EXACT)
    assert last(result, "split_gp") == pytest.approx(3.92, abs=EXACT)
    assert last(result, "gp_carry") == pytest.approx(6.0, abs=EXACT)


# --------------------------------------------------------------------------------------------------
# §10.4 toy funds


def test_toy_fund_b_full_catch_up_gives_carry_on_all_profit():
    result = one_in_one_out(10_000_000.0, 19_557_814.76, 7.0)
    # pref 1e7 (1.08^7 - 1) = 7,138,242.687795; catch-up 0.25 pref = 1,784,560.671949;
    # split pool 9,557,814.76 - 7,138,242.687795 - 1,784,560.671949 = 635,011.400256.
    assert last(result, "preferred_return") == pytest.approx(7_138_242.687795, abs=EXACT)
    assert last(result, "catch_up_gp") == pytest.approx(1_784_560.671949, abs=EXACT)
    split_pool = last(result, "split_lp") + last(result, "split_gp")
    assert split_pool == pytest.approx(635_011.400256, abs=EXACT)
    assert split_pool == pytest.approx(635_011.41, abs=0.01)
    # Carry 20 % x 9,557,814.76 = 1,911,562.952; LP-class 17,646,251.808; LP IRR 8.4516 %.
    assert last(result, "gp_carry") == pytest.approx(1_911_562.952, abs=EXACT)
    assert last(result, "lp_class") == pytest.approx(17_646_251.808, abs=EXACT)
    flows = np.array([-10_000_000.0, last(result, "lp_class")])
    assert irr(flows, np.array([0.0, 7.0])) == pytest.approx(0.084516, abs=5e-7)


def test_toy_fund_a_profit_below_the_hurdle_pays_no_carry():
    result = one_in_one_out(10_000_000.0, 16_659_317.79, 7.0)
    # pref owed 7,138,242.687795 > profit 6,659,317.79 -> all profit is pref, shortfall 478,924.897795.
    assert last(result, "preferred_return") == pytest.approx(6_659_317.79, abs=EXACT)
    assert last(result, "gp_carry") == 0.0
    assert result.hurdle_shortfall[0] == pytest.approx(478_924.897795, abs=EXACT)
    # LP IRR = gross IRR = 1.665931779^(1/7) - 1 = 7.5636 %.
    flows = np.array([-10_000_000.0, last(result, "lp_class")])
    assert irr(flows, np.array([0.0, 7.0])) == pytest.approx(0.075636, abs=5e-7)


# --------------------------------------------------------------------------------------------------
# Compounding, catch-up variants, fee offset, vectorisation


@pytest.mark.parametrize(
    ("compounding", "pref"),
    [
        ("annual", 100 * (1.08**2.5 - 1)),  # 21.215843716900
        ("quarterly", 100 * (1.02**10 - 1)),  # 21.899441999476
        ("monthly", 100 * ((1 + 0.08 / 12) ** 30 - 1)),  # 22.059235959497
        ("continuous", 100 * math.expm1(0.08 * 2.5)),  # 22.140275816017
        ("simple", 100 * 0.08 * 2.5),  # 20
    ],
)
def test_compounding_modes_single_in_out_over_a_quarterly_grid(compounding, pref):
    times = np.arange(11) * 0.25  # 0 .. 2.5 years, the flows only at the ends
    contributions, distributions = np.zeros((1, 11)), np.zeros((1, 11))
    contributions[0, 0], distributions[0, -1] = 100.0, 1000.0
    result = european(contributions, distributions, times, WaterfallTerms(compounding=compounding))
    assert last(result, "preferred_return") == pytest.approx(pref, abs=EXACT)
    assert last(result, "catch_up_gp") == pytest.approx(0.25 * pref, abs=EXACT)
    assert last(result, "gp_carry") == pytest.approx(0.2 * 900.0, abs=EXACT)


def test_simple_pref_does_not_compound_on_unpaid_pref():
    result = european(E4_CONTRIBUTIONS, E4_DISTRIBUTIONS, E4_TIMES, WaterfallTerms(compounding="simple"))
    # t=3: pref 0.08 x 100 x 3 = 24 unpaid, ROC 50; t=6: 24 + 0.08 x 50 x 3 = 36 -> ROC 50, pref 36,
    # catch-up 9, split 25 -> LP 20, GP 5; carry 14 = 20 % x 70.
    assert result.unpaid_preferred[0, 3] == pytest.approx(24.0, abs=EXACT)
    assert result.preferred_return[0, 6] == pytest.approx(36.0, abs=EXACT)
    assert result.catch_up_gp[0, 6] == pytest.approx(9.0, abs=EXACT)
    assert result.split_lp[0, 6] == pytest.approx(20.0, abs=EXACT)
    assert result.split_gp[0, 6] == pytest.approx(5.0, abs=EXACT)


@pytest.mark.parametrize("catch_up_rate", [0.0, 0.15, 0.2])
def test_catch_up_at_or_below_carry_is_no_catch_up(catch_up_rate):
    result = one_in_one_out(100.0, 180.0, 5.0, WaterfallTerms(catch_up_rate=catch_up_rate))
    # No tier 3: split pool 80 - 46.93280768 = 33.06719232 -> LP 26.453753856, GP 6.613438464.
    assert last(result, "catch_up_gp") == 0.0 and last(result, "catch_up_lp") == 0.0
    assert last(result, "split_lp") == pytest.approx(26.453753856, abs=EXACT)
    assert last(result, "split_gp") == pytest.approx(6.613438464, abs=EXACT)


def e1_on_annual_grid(terms: WaterfallTerms, fees: list[float]):
    contributions = np.array([[100.0, 0, 0, 0, 0, 0]])
    distributions = np.array([[0.0, 0, 0, 0, 0, 180]])
    return european(contributions, distributions, ANNUAL_GRID, terms, management_fees=np.array([fees]))


def test_management_fee_offset_reduces_carry_and_pays_the_lp_class():
    result = e1_on_annual_grid(WaterfallTerms(management_fee_offset=0.5), [2.0, 2, 2, 2, 2, 0])
    # Offset 0.5 x 10 of fees = 5 off the E1 carry of 16 -> 11; LP-class 164 + 5 = 169. Tiers unchanged.
    assert last(result, "catch_up_gp") == pytest.approx(11.73320192, abs=EXACT)
    assert last(result, "fee_offset") == pytest.approx(5.0, abs=EXACT)
    assert last(result, "gp_carry") == pytest.approx(11.0, abs=EXACT)
    assert last(result, "lp_class") == pytest.approx(169.0, abs=EXACT)


def test_management_fee_offset_never_makes_carry_negative():
    result = e1_on_annual_grid(WaterfallTerms(management_fee_offset=1.0), [4.0, 4, 4, 4, 4, 0])
    # Offset 20 > carry 16 -> carry 0, everything (180) to the LP-class.
    assert last(result, "gp_carry") == pytest.approx(0.0, abs=EXACT)
    assert last(result, "lp_class") == pytest.approx(180.0, abs=EXACT)


def test_management_fee_offset_withholds_later_carry_but_never_reverses_paid_carry():
    contributions = np.array([[100.0, 0, 0, 0, 0, 0, 0, 0]])
    distributions = np.array([[0.0, 0, 0, 0, 0, 180, 0, 20]])
    fees = np.array([[0.0, 0, 0, 0, 0, 0, 10, 0]])
    terms = WaterfallTerms(management_fee_offset=1.0)
    result = european(contributions, distributions, np.arange(8.0), terms, management_fees=fees)
    # t=5: carry 16, no credit yet. t=6: fees 10 -> credit 10, no carry to offset and none reversed.
    # t=7: 20 falls in the split -> GP 4 gross, all withheld (credit 10 -> 6). Carry stays 16.
    assert result.gp_carry[0].tolist() == pytest.approx([0, 0, 0, 0, 0, 16, 0, 0], abs=EXACT)
    assert result.fee_offset[0, 7] == pytest.approx(4.0, abs=EXACT)
    assert result.lp_class[0, 7] == pytest.approx(20.0, abs=EXACT)


def test_paths_are_independent_rows():
    grid = np.arange(7.0)
    contributions = np.zeros((3, 7))
    contributions[:, 0] = 100.0
    distributions = np.zeros((3, 7))
    distributions[0, 5] = 180.0  # E1
    distributions[1, 5] = 140.0  # E3
    distributions[2, [3, 6]] = 50.0, 120.0  # E4
    together = european(contributions, distributions, grid, TERMS)
    # Hand totals: carry 16 / 0 / 14; E3's shortfall 6.93280768 at t=5 compounds to t=6:
    # x 1.08 = 7.4874322944.
    assert together.total_gp_carry == pytest.approx([16.0, 0.0, 14.0], abs=EXACT)
    assert together.hurdle_shortfall == pytest.approx([0.0, 7.4874322944, 0.0], abs=EXACT)
    for row in range(3):
        alone = european(contributions[row : row + 1], distributions[row : row + 1], grid, TERMS)
        for field in ("return_of_capital", "preferred_return", "catch_up_gp", "split_lp", "split_gp"):
            np.testing.assert_array_equal(getattr(together, field)[row], getattr(alone, field)[0])


# --------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hurdle_rate", -0.01),
        ("hurdle_rate", math.nan),
        ("carry_rate", -0.1),
        ("carry_rate", 1.0),
        ("catch_up_rate", -0.5),
        ("catch_up_rate", 1.5),
        ("gp_commitment", -0.02),
        ("gp_commitment", 1.0),
        ("management_fee_offset", -0.1),
        ("management_fee_offset", 1.1),
        ("compounding", "weekly"),
    ],
)
def test_invalid_terms_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        WaterfallTerms(**{field: value})


@pytest.mark.parametrize(
    ("name", "contributions", "distributions", "times"),
    [
        ("distributions", [[100.0, 0.0]], [[0.0, -1.0]], [0.0, 1.0]),
        ("contributions", [[100.0, math.nan]], [[0.0, 1.0]], [0.0, 1.0]),
        ("distributions", [[100.0, 0.0]], [[0.0, 1.0, 2.0]], [0.0, 1.0]),
        ("times", [[100.0, 0.0]], [[0.0, 1.0]], [1.0, 1.0]),
        ("contributions", [100.0, 0.0], [[0.0, 1.0]], [0.0, 1.0]),
    ],
)
def test_invalid_flows_are_rejected(name, contributions, distributions, times):
    with pytest.raises(ValueError, match=name):
        european(contributions, distributions, times, TERMS)


# --------------------------------------------------------------------------------------------------
# American


E5_FUND_CONTRIBUTIONS = np.array([[100.0, 0, 0, 0, 0, 0]])


def e5_american(**options):
    """E5: deals of 50 at t=0; A returns 80 at t=2, B returns 40 at t=5."""
    return american(
        deal_contribution=[[50.0, 50.0]],
        deal_start_time=[[0.0, 0.0]],
        deal_proceeds=[[80.0, 40.0]],
        deal_end_time=[[2.0, 5.0]],
        distributions=[[0.0, 0, 80, 0, 0, 40]],
        contributions=E5_FUND_CONTRIBUTIONS,
        times=ANNUAL_GRID,
        terms=TERMS,
        **options,
    )


@pytest.mark.parametrize("loss_carryforward", [True, False])
def test_e5_american_carry_and_clawback(loss_carryforward):
    result = e5_american(loss_carryforward=loss_carryforward)
    # Deal A: carry 6.00 at t=2 (nothing earlier to recoup); deal B: loss, no carry.
    # European entitlement 0 -> clawback 6.00 at the final period.
    assert result.carry_paid[0].tolist() == pytest.approx([0, 0, 6, 0, 0, 0], abs=EXACT)
    assert result.european_carry[0] == pytest.approx(0.0, abs=EXACT)
    assert result.clawback[0] == pytest.approx(6.0, abs=EXACT)
    assert result.gp_carry[0].tolist() == pytest.approx([0, 0, 6, 0, 0, -6], abs=EXACT)
    assert result.lp_class[0].tolist() == pytest.approx([0, 0, 74, 0, 0, 46], abs=EXACT)
    assert result.total_gp_carry[0] == pytest.approx(0.0, abs=EXACT)


def test_e5_without_clawback_the_gp_keeps_the_deal_carry():
    result = e5_american(clawback=False)
    assert result.clawback[0] == 0.0
    assert result.european_carry[0] == pytest.approx(0.0, abs=EXACT)
    assert result.total_gp_carry[0] == pytest.approx(6.0, abs=EXACT)
    assert result.lp_class[0, -1] == pytest.approx(40.0, abs=EXACT)


def test_inactive_deal_slots_are_ignored():
    result = american(
        deal_contribution=[[50.0, math.nan, 50.0, 0.0]],
        deal_start_time=[[0.0, math.nan, 0.0, 0.0]],
        deal_proceeds=[[80.0, math.nan, 40.0, 1000.0]],
        deal_end_time=[[2.0, math.nan, 5.0, 1.0]],
        distributions=[[0.0, 0, 80, 0, 0, 40]],
        contributions=E5_FUND_CONTRIBUTIONS,
        times=ANNUAL_GRID,
        terms=TERMS,
    )
    assert result.carry_paid[0].tolist() == pytest.approx([0, 0, 6, 0, 0, 0], abs=EXACT)
    assert result.clawback[0] == pytest.approx(6.0, abs=EXACT)


def loss_then_gain(loss_carryforward: bool):
    """Deal A: 50 at t=0 returns 40 at t=2 (a loss); deal B: 50 at t=0 returns 100 at t=5."""
    return american(
        deal_contribution=[[50.0, 50.0]],
        deal_start_time=[[0.0, 0.0]],
        deal_proceeds=[[40.0, 100.0]],
        deal_end_time=[[2.0, 5.0]],
        distributions=[[0.0, 0, 40, 0, 0, 100]],
        contributions=E5_FUND_CONTRIBUTIONS,
        times=ANNUAL_GRID,
        terms=TERMS,
        loss_carryforward=loss_carryforward,
    )


# Deal A shortfall: 50 + 8.32 - 40 = 18.32. Deal B: pref 50 (1.08^5 - 1) = 23.46640384, excess over the
# hurdle 100 - 73.46640384 = 26.53359616. European: t=2 ROC 40 (K 60, unpaid pref 16.64); t=5
# H = 76.64 x 1.259712 = 96.54432768 -> ROC 60, pref 36.54432768, catch-up 3.45567232 = carry.
def test_loss_carryforward_recoups_earlier_losses_before_carry():
    result = loss_then_gain(loss_carryforward=True)
    # B's excess after repaying 18.32: 8.21359616 -> catch-up 0.25 x 23.46640384 = 5.86660096,
    # split 2.3469952 -> GP 0.46939904; carry 6.336. Clawback 6.336 - 3.45567232 = 2.88032768.
    assert result.carry_paid[0, 5] == pytest.approx(6.336, abs=EXACT)
    assert result.european_carry[0] == pytest.approx(3.45567232, abs=EXACT)
    assert result.clawback[0] == pytest.approx(2.88032768, abs=EXACT)


def test_without_loss_carryforward_each_deal_stands_alone():
    result = loss_then_gain(loss_carryforward=False)
    # B alone: full catch-up -> 20 % x 50 profit = 10. Clawback 10 - 3.45567232 = 6.54432768.
    assert result.carry_paid[0, 5] == pytest.approx(10.0, abs=EXACT)
    assert result.clawback[0] == pytest.approx(6.54432768, abs=EXACT)


@pytest.mark.parametrize("slots", [(0, 1), (1, 0)])
def test_losses_ending_at_the_same_time_are_recouped_first(slots):
    proceeds, contributions = np.empty((1, 2)), np.full((1, 2), 50.0)
    proceeds[0, list(slots)] = 40.0, 80.0  # loss deal, gain deal, both ending at t=2
    result = american(
        deal_contribution=contributions,
        deal_start_time=np.zeros((1, 2)),
        deal_proceeds=proceeds,
        deal_end_time=np.full((1, 2), 2.0),
        distributions=[[0.0, 0, 120, 0, 0, 0]],
        contributions=E5_FUND_CONTRIBUTIONS,
        times=ANNUAL_GRID,
        terms=TERMS,
        clawback=False,
    )
    # Gain excess 80 - 58.32 = 21.68, less the loss shortfall 18.32 -> 3.36: catch-up 2.08 + 20 % x 1.28.
    assert result.carry_paid[0, 2] == pytest.approx(2.336, abs=EXACT)


@pytest.mark.parametrize(
    ("catch_up_rate", "carry"),
    [
        (1.0, 1.68),  # excess 60 - 58.32 = 1.68 < catch-up target 2.08: all of it
        (0.5, 0.84),  # target 0.2 x 8.32 / 0.3 = 5.5467 not reached: half of 1.68
        (0.0, 0.336),  # no catch-up: 20 % of 1.68
    ],
)
def test_deal_carry_by_catch_up_structure(catch_up_rate, carry):
    result = american(
        deal_contribution=[[50.0]],
        deal_start_time=[[0.0]],
        deal_proceeds=[[60.0]],
        deal_end_time=[[2.0]],
        distributions=[[0.0, 0, 60, 0, 0, 0]],
        contributions=[[50.0, 0, 0, 0, 0, 0]],
        times=ANNUAL_GRID,
        terms=WaterfallTerms(catch_up_rate=catch_up_rate),
        clawback=False,
    )
    assert result.carry_realised[0, 2] == pytest.approx(carry, abs=EXACT)


def test_carry_beyond_a_periods_distribution_is_deferred():
    result = american(
        deal_contribution=[[50.0, 50.0]],
        deal_start_time=[[0.0, 0.0]],
        deal_proceeds=[[80.0, 40.0]],
        deal_end_time=[[2.0, 5.0]],
        distributions=[[0.0, 0, 4, 76, 0, 40]],
        contributions=E5_FUND_CONTRIBUTIONS,
        times=ANNUAL_GRID,
        terms=TERMS,
    )
    # Carry 6 earned at t=2, only 4 distributed then -> 4 paid, 2 paid at t=3. European: t=2 ROC 4,
    # t=3 ROC 76 (K 20), t=5 ROC 20 + pref 20 of 33.24755968 -> carry 0, clawback 6.
    assert result.carry_realised[0].tolist() == pytest.approx([0, 0, 6, 0, 0, 0], abs=EXACT)
    assert result.carry_paid[0].tolist() == pytest.approx([0, 0, 4, 2, 0, 0], abs=EXACT)
    assert result.unpaid_carry[0] == pytest.approx(0.0, abs=EXACT)
    assert result.clawback[0] == pytest.approx(6.0, abs=EXACT)


def test_carry_without_a_distribution_to_pay_it_stays_unpaid():
    result = american(
        deal_contribution=[[50.0]],
        deal_start_time=[[0.0]],
        deal_proceeds=[[80.0]],
        deal_end_time=[[2.0]],
        distributions=np.zeros((1, 6)),
        contributions=[[50.0, 0, 0, 0, 0, 0]],
        times=ANNUAL_GRID,
        terms=TERMS,
    )
    assert result.unpaid_carry[0] == pytest.approx(6.0, abs=EXACT)
    assert result.carry_paid.sum() == 0.0
    assert result.clawback[0] == 0.0


def test_deal_ending_between_grid_times_is_credited_at_the_period_end():
    result = american(
        deal_contribution=[[50.0]],
        deal_start_time=[[0.0]],
        deal_proceeds=[[80.0]],
        deal_end_time=[[1.5]],
        distributions=[[0.0, 0, 80, 0, 0, 0]],
        contributions=[[50.0, 0, 0, 0, 0, 0]],
        times=ANNUAL_GRID,
        terms=TERMS,
        clawback=False,
    )
    # Period 2 spans (1, 2]. Pref 50 (1.08^1.5 - 1) = 6.117503... < 30 profit -> carry 20 % x 30 = 6.
    assert result.carry_realised[0].tolist() == pytest.approx([0, 0, 6, 0, 0, 0], abs=EXACT)


def test_american_fee_offset():
    fees = np.array([[10.0, 0, 0, 0, 0, 0]])
    result = e5_american(management_fees=fees)  # default offset 0: fees change nothing
    assert result.carry_paid[0, 2] == pytest.approx(6.0, abs=EXACT)
    terms = WaterfallTerms(management_fee_offset=0.5)
    result = american(
        [[50.0, 50.0]], [[0.0, 0.0]], [[80.0, 40.0]], [[2.0, 5.0]], [[0.0, 0, 80, 0, 0, 40]],
        E5_FUND_CONTRIBUTIONS, ANNUAL_GRID, terms, management_fees=fees,
    )
    # Credit 0.5 x 10 = 5 -> carry 6 - 5 = 1 paid at t=2; European carry 0 -> clawback 1.
    assert result.carry_paid[0, 2] == pytest.approx(1.0, abs=EXACT)
    assert result.fee_offset[0, 2] == pytest.approx(5.0, abs=EXACT)
    assert result.clawback[0] == pytest.approx(1.0, abs=EXACT)


def test_american_paths_are_independent_rows():
    result = american(
        deal_contribution=[[50.0, 50.0], [50.0, 50.0]],
        deal_start_time=np.zeros((2, 2)),
        deal_proceeds=[[80.0, 40.0], [40.0, 100.0]],
        deal_end_time=[[2.0, 5.0], [2.0, 5.0]],
        distributions=[[0.0, 0, 80, 0, 0, 40], [0.0, 0, 40, 0, 0, 100]],
        contributions=np.repeat(E5_FUND_CONTRIBUTIONS, 2, axis=0),
        times=ANNUAL_GRID,
        terms=TERMS,
    )
    # Row 0 is E5, row 1 the loss-then-gain case above.
    assert result.carry_paid.sum(axis=1) == pytest.approx([6.0, 6.336], abs=EXACT)
    assert result.clawback == pytest.approx([6.0, 2.88032768], abs=EXACT)


@pytest.mark.parametrize(
    ("name", "end_time", "start_time"),
    [("deal_end_time", 5.5, 0.0), ("deal_end_time", 1.0, 2.0), ("deal_start_time", 2.0, math.nan)],
)
def test_invalid_deals_are_rejected(name, end_time, start_time):
    with pytest.raises(ValueError, match=name):
        american(
            [[50.0]], [[start_time]], [[80.0]], [[end_time]], np.zeros((1, 6)), np.zeros((1, 6)),
            ANNUAL_GRID, TERMS,
        )


# --------------------------------------------------------------------------------------------------
# Properties (§3.2 invariants)

TOLERANCE = 1e-9
TIER_FIELDS = ("return_of_capital", "preferred_return", "catch_up_gp", "catch_up_lp", "split_lp", "split_gp")
amounts = st.one_of(st.just(0.0), st.floats(0.01, 30.0), st.floats(0.01, 500.0))


@st.composite
def any_terms(draw, **fixed) -> WaterfallTerms:
    values = {
        "hurdle_rate": draw(st.floats(0.0, 0.3)),
        "compounding": draw(st.sampled_from(COMPOUNDING_MODES)),
        "carry_rate": draw(st.floats(0.0, 0.5)),
        "catch_up_rate": draw(st.one_of(st.just(1.0), st.just(0.0), st.floats(0.0, 1.0))),
        "gp_commitment": draw(st.floats(0.0, 0.1)),
    }
    return WaterfallTerms(**(values | fixed))


@st.composite
def fund_flows(draw, calls_before_distributions: bool = False):
    """(contributions, distributions, times) of 1-3 paths over 1-8 periods of uneven length."""
    paths, periods = draw(st.integers(1, 3)), draw(st.integers(1, 8))
    steps = draw(st.lists(st.sampled_from([1 / 12, 0.25, 0.5, 1.0, 1.7]), min_size=periods, max_size=periods))
    times = np.cumsum(steps) - steps[0]
    shape = st.lists(amounts, min_size=paths * periods, max_size=paths * periods)
    contributions = np.array(draw(shape)).reshape(paths, periods)
    distributions = np.array(draw(shape)).reshape(paths, periods)
    if calls_before_distributions:
        first_distribution = draw(st.integers(0, periods - 1))
        contributions[:, first_distribution + 1 :] = 0.0
        distributions[:, :first_distribution] = 0.0
    return contributions, distributions, times


def scale_of(contributions: np.ndarray, distributions: np.ndarray) -> float:
    return TOLERANCE * (1.0 + contributions.sum() + distributions.sum())


def cumulative_profit(contributions: np.ndarray, distributions: np.ndarray) -> np.ndarray:
    return np.cumsum(distributions - contributions, axis=1)


@settings(max_examples=200, deadline=None)
@given(fund_flows(), any_terms())
def test_tiers_sum_to_each_distribution(flows, terms):
    contributions, distributions, times = flows
    result = european(contributions, distributions, times, terms)
    tiers = sum(getattr(result, field) for field in TIER_FIELDS)
    assert np.all(np.abs(tiers - distributions) <= TOLERANCE * (1.0 + distributions))
    paid_out = result.lp_class + result.gp_carry
    assert np.all(np.abs(paid_out - distributions) <= TOLERANCE * (1.0 + distributions))
    assert np.all(result.lp + result.gp_commitment_share == pytest.approx(result.lp_class))


@settings(max_examples=200, deadline=None)
@given(fund_flows(), any_terms())
def test_no_tier_is_paid_while_an_earlier_tier_is_owed(flows, terms):
    contributions, distributions, times = flows
    result = european(contributions, distributions, times, terms)
    catch_up = result.catch_up_gp + result.catch_up_lp
    split = result.split_lp + result.split_gp
    paid_pref = result.preferred_return > 0
    paid_catch_up = catch_up > 0
    paid_split = split > 0
    assert np.all(result.unreturned_capital[paid_pref | paid_catch_up | paid_split] == 0.0)
    assert np.all(result.unpaid_preferred[paid_catch_up | paid_split] == 0.0)
    # Tier 4 only once the GP has caught up: X_cum = carry / (c - carry) x pref paid so far.
    c, carry = terms.catch_up_rate, terms.carry_rate
    per_pref = carry / (c - carry) if c > carry else 0.0
    shortfall = per_pref * np.cumsum(result.preferred_return, axis=1) - np.cumsum(catch_up, axis=1)
    assert np.all(shortfall[paid_split] <= scale_of(contributions, distributions))


@settings(max_examples=200, deadline=None)
@given(fund_flows(), any_terms(catch_up_rate=1.0))
def test_full_catch_up_pays_carry_on_all_profit_once_in_the_split(flows, terms):
    contributions, distributions, times = flows
    result = european(contributions, distributions, times, terms)
    in_split = (result.split_lp + result.split_gp) > 0
    carry_on_profit = terms.carry_rate * cumulative_profit(contributions, distributions)
    error = np.cumsum(result.gp_carry, axis=1) - carry_on_profit
    assert np.all(np.abs(error[in_split]) <= scale_of(contributions, distributions))


@settings(max_examples=200, deadline=None)
@given(fund_flows(), any_terms())
def test_carry_never_exceeds_carry_on_profit_once_capital_is_returned(flows, terms):
    # With calls after distributions, cash profit can dip while capital is out; the bound holds
    # whenever all contributed capital has been returned.
    contributions, distributions, times = flows
    result = european(contributions, distributions, times, terms)
    bound = terms.carry_rate * np.maximum(cumulative_profit(contributions, distributions), 0.0)
    excess = np.cumsum(result.gp_carry, axis=1) - bound
    assert np.all(excess[result.unreturned_capital == 0.0] <= scale_of(contributions, distributions))


@settings(max_examples=200, deadline=None)
@given(fund_flows(calls_before_distributions=True), any_terms(catch_up_rate=1.0))
def test_calls_then_distributions_carry_is_bounded_at_every_date(flows, terms):
    contributions, distributions, times = flows
    result = european(contributions, distributions, times, terms)
    cumulative_carry = np.cumsum(result.gp_carry, axis=1)
    profit = cumulative_profit(contributions, distributions)
    tolerance = scale_of(contributions, distributions)
    assert np.all(cumulative_carry <= terms.carry_rate * np.maximum(profit, 0.0) + tolerance)
    # Once the split has been reached, carry is exactly carry x profit from then on.
    reached_split = np.cumsum(result.split_lp + result.split_gp, axis=1) > 0
    assert np.all(np.abs(cumulative_carry - terms.carry_rate * profit)[reached_split] <= tolerance)


@settings(max_examples=200, deadline=None)
@given(fund_flows(calls_before_distributions=True), any_terms(hurdle_rate=0.0, catch_up_rate=1.0))
def test_zero_hurdle_carry_is_carry_on_profit(flows, terms):
    contributions, distributions, times = flows
    result = european(contributions, distributions, times, terms)
    expected = terms.carry_rate * np.maximum(cumulative_profit(contributions, distributions), 0.0)
    error = np.cumsum(result.gp_carry, axis=1) - expected
    assert np.all(np.abs(error) <= scale_of(contributions, distributions))


@settings(max_examples=100, deadline=None)
@given(fund_flows(), any_terms(carry_rate=0.0))
def test_zero_carry_sends_everything_to_the_lp_class(flows, terms):
    contributions, distributions, times = flows
    result = european(contributions, distributions, times, terms)
    assert np.all(result.gp_carry == 0.0)
    assert np.allclose(result.lp_class, distributions, rtol=TOLERANCE, atol=0.0)


@settings(max_examples=200, deadline=None)
@given(fund_flows(), any_terms(), st.floats(0.0, 0.3))
def test_raising_the_hurdle_never_raises_carry(flows, terms, extra_hurdle):
    contributions, distributions, times = flows
    low = european(contributions, distributions, times, terms)
    higher_terms = WaterfallTerms(**(vars(terms) | {"hurdle_rate": terms.hurdle_rate + extra_hurdle}))
    high = european(contributions, distributions, times, higher_terms)
    rise = np.cumsum(high.gp_carry, axis=1) - np.cumsum(low.gp_carry, axis=1)
    assert np.all(rise <= scale_of(contributions, distributions))


@st.composite
def quarterly_flows(draw):
    paths, quarters = draw(st.integers(1, 3)), draw(st.integers(1, 12))
    shape = st.lists(amounts, min_size=paths * quarters, max_size=paths * quarters)
    contributions = np.array(draw(shape)).reshape(paths, quarters)
    distributions = np.array(draw(shape)).reshape(paths, quarters)
    return contributions, distributions


def monthly(quarterly: np.ndarray) -> np.ndarray:
    """The same flows on a monthly grid: two zero months after each quarter date."""
    paths, quarters = quarterly.shape
    flows = np.zeros((paths, 3 * (quarters - 1) + 1))
    flows[:, ::3] = quarterly
    return flows


@settings(max_examples=200, deadline=None)
@given(quarterly_flows(), any_terms())
def test_monthly_and_quarterly_grids_agree(flows, terms):
    contributions, distributions = flows
    quarters = contributions.shape[1]
    by_quarter = european(contributions, distributions, np.arange(quarters) * 0.25, terms)
    by_month = european(
        monthly(contributions), monthly(distributions), np.arange(3 * (quarters - 1) + 1) / 12, terms
    )
    tolerance = scale_of(contributions, distributions)
    for field in TIER_FIELDS:
        on_month_grid = getattr(by_month, field)
        assert np.all(np.abs(on_month_grid[:, ::3] - getattr(by_quarter, field)) <= tolerance)
        assert np.all(np.delete(on_month_grid, np.s_[::3], axis=1) == 0.0)
    assert np.all(np.abs(by_month.hurdle_shortfall - by_quarter.hurdle_shortfall) <= tolerance)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(1.0, 100.0),
    st.floats(0.0, 300.0),
    st.integers(0, 4),
    st.integers(1, 8),
    any_terms(),
)
def test_single_deal_american_carry_matches_the_european_waterfall_of_its_flows(
    contribution, proceeds, start, holding, terms
):
    # The American closed form for one deal against the period-by-period European engine.
    times = np.arange(13) * 0.5
    deal_end = start + holding
    deal_flows_in, deal_flows_out = np.zeros((1, 13)), np.zeros((1, 13))
    deal_flows_in[0, start], deal_flows_out[0, deal_end] = contribution, proceeds
    on_its_own = european(deal_flows_in, deal_flows_out, times, terms)
    result = american(
        [[contribution]], [[times[start]]], [[proceeds]], [[times[deal_end]]],
        deal_flows_out, deal_flows_in, times, terms,
    )
    expected = on_its_own.total_gp_carry[0]
    assert result.carry_realised[0, deal_end] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert result.clawback[0] == pytest.approx(0.0, abs=1e-9)
