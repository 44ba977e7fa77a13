"""End-to-end checks of the simulation core against hand-computed cases (domain §10.4)."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import ENGINE_VERSION, engine, ledger, lifecycle
from simulation.book import build_book
from simulation.streams import Purpose, generator

from .conftest import small_fund, toy_fund

# Per loan: 250,000 + 250,000·0.05·7 + 0.5·(500,000·1.04^7 − 500,000) = 416,482.94 (domain §1.2).
LOAN_PROCEEDS_4 = 250_000 + 87_500 + 0.5 * (500_000 * 1.04**7 - 500_000)
# Same loan with 7 % appreciation: 250,000 + 87,500 + 0.5·(500,000·1.07^7 − 500,000) = 488,945.37.
LOAN_PROCEEDS_7 = 250_000 + 87_500 + 0.5 * (500_000 * 1.07**7 - 500_000)


def pipeline(config):
    """The chunk pipeline, step by step, so tests can look inside the ledger."""
    params = lifecycle.ModelParams.from_config(config)
    book = engine.book_for(config)
    n = engine.path_count(config)
    mkt, outcomes = lifecycle.run_lifecycles(params, book, 0, n)
    flows = ledger.loan_flows(params, mkt, outcomes, n, ledger.mark_months_for(params))
    cost = ledger.costs(params, flows)
    return params, outcomes, flows, cost, ledger.run_ledger(params, flows, cost)


def test_toy_fund_a_has_no_carry_and_lp_irr_equals_gross():
    result = engine.run(toy_fund(0.04), keep_paths=True)
    assert LOAN_PROCEEDS_4 == pytest.approx(416_482.94, abs=0.005)
    assert result.paths["lp_distributions"][0] / 0.98 == pytest.approx(40 * LOAN_PROCEEDS_4, abs=1e-4)
    assert 40 * LOAN_PROCEEDS_4 == pytest.approx(16_659_317.79, abs=0.005)
    assert result.metrics["gross_moic"].mean == pytest.approx(1.665932, abs=1e-6)
    assert result.metrics["gross_irr"].mean == pytest.approx(0.075636, abs=1e-6)
    assert result.metrics["gp_carry"].mean == 0.0
    assert result.metrics["lp_net_irr"].mean == pytest.approx(result.metrics["gross_irr"].mean, abs=1e-12)


def test_toy_fund_b_pays_exactly_twenty_percent_of_profit_as_carry():
    result = engine.run(toy_fund(0.07), keep_paths=True)
    total = 40 * LOAN_PROCEEDS_7
    assert total == pytest.approx(19_557_814.76, abs=0.005)
    assert result.metrics["gross_irr"].mean == pytest.approx(0.100569, abs=1e-6)
    assert result.metrics["gp_carry"].mean == pytest.approx(1_911_562.95, abs=0.01)
    assert result.metrics["gp_carry"].mean == pytest.approx(0.2 * (total - 10_000_000), abs=1e-6)
    # LP class receives 17,646,251.81 on 10M: LP MOIC 1.764625, LP IRR 1.764625^(1/7) − 1 = 8.4516 %.
    assert result.metrics["lp_moic"].mean == pytest.approx(1.764625, abs=1e-6)
    assert result.metrics["lp_net_irr"].mean == pytest.approx(0.084516, abs=1e-6)


def test_deterministic_run_records_seed_version_and_single_path():
    result = engine.run(toy_fund(0.04, monte_carlo={"seed": 99, "paths": 500}))
    assert result.info.paths == 1
    assert result.info.seed == 99
    assert result.info.engine_version == ENGINE_VERSION


def test_management_fees_total_rate_times_commitment_times_term():
    # 2 % on 100M committed over a 10-year term = 20,000,000 (not 22M: domain P-6).
    config = small_fund(fund={"size": 100_000_000}, monte_carlo={"paths": 50})
    _, _, _, cost, _ = pipeline(config)
    np.testing.assert_allclose(cost.management_fees.sum(axis=1), 20_000_000, rtol=0, atol=1e-6)


def test_arrears_fees_are_the_same_total_one_quarter_later():
    advance = pipeline(small_fund(monte_carlo={"paths": 50}))[3].management_fees
    arrears = pipeline(small_fund(fees={"management_fee_timing": "arrears"}, monte_carlo={"paths": 50}))[3]
    np.testing.assert_allclose(arrears.management_fees[:, 3:], advance[:, :-3], atol=1e-9)


def test_calls_stay_within_commitments_and_the_book_runs_off(small):
    params, _, flows, cost, cash = pipeline(small)
    assert np.all(cash.calls.sum(axis=1) <= small.fund.size + 1e-6)
    assert np.all(cash.cash[:, -1] >= -1e-6)
    assert np.all(flows.outstanding[:, -1] == pytest.approx(0.0, abs=1e-6))


def test_every_loan_ends_by_fund_end_and_maturity(small):
    params, outcomes, *_ = pipeline(small)
    for out in outcomes:
        assert np.all(out.event_month <= params.months)
        assert np.all(out.event_month <= out.loans.origination + small.loans.term_months)
        assert np.all(out.cash_month <= params.months)
        assert np.all(out.event_month > out.loans.origination)


def test_results_identical_for_any_chunk_size_and_worker_count():
    one_process = small_fund(monte_carlo={"paths": 500, "chunk_paths": 100})
    two_workers = small_fund(monte_carlo={"paths": 500, "chunk_paths": 300, "workers": 2})
    assert engine.chunks(one_process) != engine.chunks(two_workers)  # 5 × 100 vs 200, 200, 100
    base = engine.run(one_process, keep_paths=True)
    other = engine.run(two_workers, keep_paths=True)
    for name, values in base.paths.items():
        np.testing.assert_array_equal(values, other.paths[name], err_msg=name)


def test_different_seeds_give_different_paths():
    a = engine.run(small_fund(monte_carlo={"seed": 1}), keep_paths=True)
    b = engine.run(small_fund(monte_carlo={"seed": 2}), keep_paths=True)
    assert not np.array_equal(a.paths["lp_net_irr"], b.paths["lp_net_irr"])


def test_zero_volatility_and_fixed_exits_give_zero_spread_equal_to_deterministic():
    changes = {"market": {z: {"drift": 0.05, "vol": 0.0, "default_hazard": 0.0, "recovery_haircut": 0.9}
                          for z in ("green", "orange", "red")} | {"region_vol": 0.0, "property_vol": 0.0}}
    explicit = [{"id": f"l{i}", "amount": 200_000, "property_value": 500_000, "zone": "green",
                 "region": "sydney_north", "origination_month": i, "planned_exit_month": 60 + i}
                for i in range(10)]
    no_recycling = {"reinvestment_period_years": 0}
    mc = small_fund(book={"loans": explicit, "generate": False}, fund=no_recycling, **changes)
    det = small_fund(book={"loans": explicit, "generate": False}, fund=no_recycling,
                     monte_carlo={"deterministic": True}, **changes)
    mc_result, det_result = engine.run(mc), engine.run(det)
    assert mc_result.metrics["lp_net_irr"].std == pytest.approx(0.0, abs=1e-12)
    assert mc_result.metrics["lp_net_irr"].mean == pytest.approx(det_result.metrics["lp_net_irr"].mean, abs=1e-12)


def test_hurdle_zero_full_catch_up_pays_carry_rate_on_profit():
    result = engine.run(small_fund(waterfall={"hurdle_rate": 0.0}), keep_paths=True)
    p = result.paths
    g = 0.02
    profit = (p["lp_distributions"] / (1 - g) + p["gp_carry"]) - p["lp_contributions"] / (1 - g)
    positive = profit > 0
    np.testing.assert_allclose(p["gp_carry"][positive], 0.2 * profit[positive], rtol=1e-9)


@pytest.mark.parametrize("section,field,low,high,metric,direction", [
    ("market_drift", None, 0.02, 0.06, "lp_moic", +1),
    ("market_pd", None, 0.005, 0.05, "lp_moic", -1),
    ("fees", "management_fee_rate", 0.01, 0.025, "lp_net_irr", -1),
    ("waterfall", "hurdle_rate", 0.04, 0.10, "gp_carry", -1),
])
def test_monotonicity_under_common_random_numbers(section, field, low, high, metric, direction):
    def config(value):
        if section == "market_drift":
            return small_fund(market={z: {"drift": value, "vol": 0.08, "default_hazard": 0.01,
                                          "recovery_haircut": 0.9} for z in ("green", "orange", "red")})
        if section == "market_pd":
            return small_fund(market={z: {"drift": 0.04, "vol": 0.08, "default_hazard": value,
                                          "recovery_haircut": 0.9} for z in ("green", "orange", "red")})
        return small_fund(**{section: {field: value}})

    lo = engine.run(config(low)).metrics[metric].mean
    hi = engine.run(config(high)).metrics[metric].mean
    assert direction * (hi - lo) > 0


def test_appending_a_loan_leaves_every_other_loans_outcome_unchanged():
    loans = [{"id": f"l{i}", "amount": 200_000, "property_value": 450_000, "zone": z,
              "region": "sydney_east", "origination_month": i}
             for i, z in enumerate(["green", "orange", "red", "green"])]
    extra = {"id": "new", "amount": 300_000, "property_value": 700_000, "zone": "orange",
             "region": "sydney_west", "origination_month": 2}
    base = small_fund(book={"loans": loans, "generate": False}, fund={"reinvestment_period_years": 0})
    more = small_fund(book={"loans": [*loans, extra], "generate": False}, fund={"reinvestment_period_years": 0})
    _, out_base, *_ = pipeline(base)
    _, out_more, *_ = pipeline(more)
    kept = out_more[0].loans.slot < 4
    for name in ("event_month", "cash_month", "cash", "defaulted"):
        np.testing.assert_array_equal(getattr(out_base[0], name), getattr(out_more[0], name)[kept], err_msg=name)


def test_recycling_only_inside_the_reinvestment_window(small):
    params, outcomes, flows, *_ = pipeline(small)
    window = small.fund.reinvestment_period_years * 12
    months = np.nonzero(flows.recycled.sum(axis=0))[0]
    assert months.size and months.max() <= window
    for out in outcomes[1:]:
        assert np.all(out.loans.origination <= window)


def test_generated_book_hits_the_deployment_target_within_bounds():
    config = small_fund(fund={"size": 100_000_000, "deployment_target_fraction": 0.88})
    book = build_book(config, generator(config.monte_carlo.seed, Purpose.BOOK))
    params = config.book.generated
    assert book.amount.sum() == pytest.approx(0.88 * 100_000_000, abs=1.0)
    assert book.amount.min() >= params.min_loan_size and book.amount.max() <= params.max_loan_size
    assert params.min_ltv <= book.ltv.min() and book.ltv.max() <= params.max_ltv
    zone_counts = np.bincount(book.zone, minlength=3) / len(book)
    np.testing.assert_allclose(zone_counts, [0.6, 0.3, 0.1], atol=1 / len(book))
