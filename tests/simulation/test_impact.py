"""Portfolio impact: paired runs against independent full runs, fast path against exact path, decisions."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import engine
from simulation.config import load_config
from simulation.impact import Applicant, CandidateLoan, Policy, analyze, build_base, exact_path, fast_path

PER_PATH = ("lp_net_irr", "fund_irr", "lp_moic", "lp_roi", "gp_carry")
REGIONS = [{"name": "north"}, {"name": "south"}]
BOOK = [
    {"id": "g1", "amount": 1_000_000, "property_value": 2_000_000, "zone": "green", "region": "north"},
    {
        "id": "o1",
        "amount": 1_000_000,
        "property_value": 2_500_000,
        "zone": "orange",
        "region": "south",
        "origination_month": 6,
    },
    {
        "id": "r1",
        "amount": 1_000_000,
        "property_value": 2_000_000,
        "zone": "red",
        "region": "south",
        "origination_month": 12,
    },
]
NEW = {
    "id": "new",
    "amount": 1_000_000,
    "property_value": 2_000_000,
    "zone": "green",
    "region": "north",
    "origination_month": 3,
}
CANDIDATE = CandidateLoan("new", 1_000_000, 2_000_000, zone=0, region=0, origination_month=3)


def deterministic(loans: list[dict]) -> dict:
    return {
        "fund": {"size": 10_000_000, "deployment_target_fraction": 0.4},
        "monte_carlo": {"deterministic": True},
        "book": {"generate": False, "regions": REGIONS, "loans": loans},
    }


def test_deterministic_deltas_equal_the_difference_of_two_independent_runs():
    config = load_config(deterministic(BOOK))
    base_run = engine.run(config, keep_paths=True)
    with_loan = engine.run(load_config(deterministic([*BOOK, NEW])), keep_paths=True)
    base = build_base(config)
    for exact in (False, True):
        result = analyze(base, CANDIDATE, exact=exact)
        for name in PER_PATH:
            expected = with_loan.paths[name][0] - base_run.paths[name][0]
            assert result.deltas[name].delta == pytest.approx(expected, abs=1e-9), name
            assert result.deltas[name].before == base_run.paths[name][0]
    assert result.before["irr"] == base_run.metrics["lp_net_irr"].mean
    assert result.after["irr"] == pytest.approx(with_loan.metrics["lp_net_irr"].mean, abs=1e-12)


def test_concentration_by_hand():
    result = analyze(build_base(load_config(deterministic(BOOK))), CANDIDATE)
    risk = result.risk
    # before: zones 1/3 each, regions north 1/3, south 2/3; after: zones 1/2, 1/4, 1/4, regions 1/2, 1/2
    assert risk["zone_hhi_before"] == pytest.approx(1 / 3)
    assert risk["zone_hhi_after"] == pytest.approx(0.375)
    assert risk["region_hhi_before"] == pytest.approx(5 / 9)
    assert risk["region_hhi_after"] == pytest.approx(0.5)
    assert risk["concentration_risk_change"] == pytest.approx(0.5 * (0.375 - 1 / 3) + 0.5 * (0.5 - 5 / 9))
    assert risk["loan_share"] == pytest.approx(0.25)
    assert risk["zone_share_after"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def default_base():
    return build_base(load_config({"monte_carlo": {"paths": 200}}))


def test_base_metrics_equal_a_plain_run(default_base):
    run = engine.run(default_base.config)
    result = analyze(default_base, CandidateLoan("a", 250_000, 500_000, zone=0, region=1))
    assert result.before["irr"] == run.metrics["lp_net_irr"].mean
    assert result.before["equity_multiple"] == run.metrics["lp_moic"].mean
    assert result.before["sharpe_ratio"] == run.risk.sharpe
    assert result.before["prob_hurdle"] == run.risk.prob_hurdle
    assert result.before["cvar_99"] == run.risk.tails[1].capital_cvar
    assert result.before["var_95"] == run.risk.tails[0].capital_var


@pytest.mark.parametrize(("recycle", "waterfall"), [(0.0, "european"), (1.0, "european"), (1.0, "american")])
def test_fast_path_reproduces_the_exact_path_when_recycled_loans_do_not_rebalance(recycle, waterfall):
    config = load_config(
        {
            "monte_carlo": {"paths": 200},
            "fund": {"rebalancing_strength": 0.0, "recycle_principal_fraction": recycle},
            "waterfall": {"structure": waterfall},
        }
    )
    base = build_base(config)
    loan = CandidateLoan("a", 300_000, 500_000, zone=1, region=2, origination_month=4)
    fast, _ = fast_path(base, loan)
    exact = exact_path(base, loan)
    for name in PER_PATH:
        np.testing.assert_allclose(fast.scalars[name], exact.scalars[name], rtol=0, atol=1e-9, err_msg=name)
    assert analyze(base, loan).fast_path_exact


def test_fast_path_within_the_exact_confidence_interval_on_the_default_fund(default_base):
    result = analyze(
        default_base, CandidateLoan("a", 250_000, 500_000, zone=0, region=1), exact=True, compare=True
    )
    assert not result.fast_path_exact  # the default fund recycles and re-balances: the response says so
    for name in ("lp_net_irr", "fund_irr", "lp_moic", "gp_carry", "sharpe_ratio"):
        exact = result.deltas[name]
        fast = exact.delta + result.gap[name]
        assert exact.ci95_lower <= fast <= exact.ci95_upper, name
        assert exact.ci95_lower < exact.delta < exact.ci95_upper


def test_counter_offer_is_the_largest_amount_within_the_ltv_limit(default_base):
    loan = CandidateLoan("b", 450_000, 600_000, zone=0, region=2)  # LTV 0.75 > 0.65
    rec = analyze(default_base, loan).recommendation
    assert rec.decision == "COUNTER_OFFER"
    assert rec.amount == 390_000  # 0.65 × 600,000, a whole hundred
    assert rec.ltv == pytest.approx(0.65)
    binding = {r.rule for r in rec.rules if r.binding}
    assert "LTV_MAX" in binding
    ltv = next(r for r in rec.rules if r.rule == "LTV_MAX")
    assert (ltv.observed, ltv.limit, ltv.passed) == (pytest.approx(0.65), 0.65, True)


def test_ineligible_zone_is_rejected_at_any_amount(default_base):
    result = analyze(
        default_base,
        CandidateLoan("c", 200_000, 500_000, zone=0, region=0),
        applicant=Applicant(zone_eligible=False),
    )
    rec = result.recommendation
    assert (rec.decision, rec.amount) == ("REJECT", 0.0)
    first = rec.rules[0]
    assert (first.rule, first.severity, first.binding) == ("ZONE_ELIGIBILITY", "FAIL", True)
    assert 0.0 <= rec.confidence <= 1.0


def test_a_loan_that_breaks_the_ticket_limit_gets_the_ticket_as_counter_offer(default_base):
    loan = CandidateLoan("d", 380_000, 1_000_000, zone=2, region=0)  # red ticket 300,000
    rec = analyze(default_base, loan, Policy(min_loan_irr_spread=-1.0, max_expected_loss=1.0)).recommendation
    assert (rec.decision, rec.amount) == ("COUNTER_OFFER", 300_000)
    assert {r.rule for r in rec.rules if r.binding} >= {"TICKET_SIZE_MAX"}
