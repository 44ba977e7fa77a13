"""The cost model: book sizes and generations computed by hand, the shape of the estimates, and (heavy) the
estimate against the engine's measured memory."""

from __future__ import annotations

import math

import pytest

from simulation import cost, engine
from simulation.config import load_config
from simulation.streams import BLOCK_PATHS

SMALL = {
    "fund": {"size": 5_000_000, "deployment_target_fraction": 0.8},
    "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000},
}
LOAN = {"amount": 100_000, "property_value": 250_000, "zone": "green", "region": "sydney_north"}


def test_the_book_counts_explicit_and_generated_loans() -> None:
    # 0.8 x 5M = 4M to deploy, 2 x 100k of it explicit: 3.8M / 250k = 15.2 -> 15 generated, 17 in all.
    with_loans = load_config(SMALL | {"book": {"loans": [LOAN | {"id": "a"}, LOAN | {"id": "b"}]}})
    only_explicit = load_config(SMALL | {"book": {"loans": [LOAN | {"id": "a"}], "generate": False}})

    assert cost.book_loans(with_loans) == 17
    assert cost.book_loans(with_loans) == len(engine.book_for(with_loans))  # as the engine draws it
    assert cost.book_loans(only_explicit) == 1
    assert cost.book_loans(load_config({})) == 352  # 88M / 250k


def test_generations_follow_the_reinvestment_window_and_the_holding_time() -> None:
    # Default fund: window = min(5 y, 10 y - 2 y) = 60 months, half the 36-month deployment already spent:
    # 42 months left. Hold = 12 months + 1 / (ln 2 / (84 - 12) + 0.02 / 12) = 12 + 88.54 months.
    exit_rate, default_rate = math.log(2) / 72, 0.02 / 12
    expected = 1 + 42 / (12 + 1 / (exit_rate + default_rate))
    no_recycling = load_config({"fund": {"recycle_principal_fraction": 0.0}})
    no_window = load_config({"fund": {"reinvestment_period_years": 1.0}})  # 12 months < 18 already spent

    assert cost.generations(load_config({})) == pytest.approx(expected, rel=1e-12)
    assert cost.generations(no_recycling) == 1.0
    assert cost.generations(no_window) == 1.0


def test_deterministic_runs_hold_every_loan_to_the_median_exit() -> None:
    config = load_config({"monte_carlo": {"deterministic": True}})

    assert cost.generations(config) == pytest.approx(1 + 42 / 84)
    assert cost.estimate(config).paths == 1


def test_the_estimate_grows_with_paths_by_the_results_kept_per_path() -> None:
    small, large = (load_config(SMALL | {"monte_carlo": {"paths": paths}}) for paths in (1000, 3000))
    growth = cost.estimate(large).peak_bytes - cost.estimate(small).peak_bytes

    assert growth == pytest.approx(2000 * (cost.RESULT_PATH_BYTES + 11 * cost.RESULT_PATH_YEAR_BYTES))
    assert cost.estimate(large).work == pytest.approx(3 * cost.estimate(small).work)


def test_absurd_configs_price_as_infinite_instead_of_overflowing() -> None:
    trillion = load_config({"fund": {"size": 1e308}})
    tiny_loans = load_config({"book": {"generated": {"avg_loan_size": 1e-300, "min_loan_size": 1e-300}}})

    assert cost.estimate(trillion).peak_bytes > 1e300
    assert cost.estimate(tiny_loans).peak_bytes == math.inf and cost.estimate(tiny_loans).work == math.inf
    assert cost.largest_chunk_within(tiny_loans, 2**40, 1000) is None


def test_the_largest_chunk_within_a_budget_is_whole_blocks_and_the_next_block_would_not_fit() -> None:
    config = load_config({"fund": {"size": 1e9}, "monte_carlo": {"paths": 5000}})
    budget = cost.WORKER_BASE_BYTES + 200 * 2**20

    chunk = cost.largest_chunk_within(config, budget, 1000)

    assert chunk is not None and chunk % BLOCK_PATHS == 0 and BLOCK_PATHS <= chunk < 1000
    assert cost.estimate(config, chunk).peak_bytes <= budget < cost.estimate(config, chunk + BLOCK_PATHS).peak_bytes
    assert cost.largest_chunk_within(config, 2**40, 1000) == 1000  # everything fits: the cap


@pytest.mark.heavy
@pytest.mark.parametrize("data", [
    {},
    {"fund": {"size": 4e8}, "market": {"avg_exit_year": 2.0, "min_hold_years": 0.5},
     "book": {"regions": [{"name": f"r{index}"} for index in range(12)]}},
], ids=["default", "big recycling book"])  # fmt: skip
def test_the_estimate_covers_what_a_chunk_really_uses(data: dict) -> None:  # type: ignore[type-arg]
    """Measured in a fresh process (bench.cost_calibration): the chunk's address-space growth stays
    under the estimate of the chunk, and not far under it."""
    from bench.cost_calibration import measure

    config = load_config(data)
    estimate = cost.estimate(config, 200)
    chunk_estimate = (estimate.peak_bytes - cost.WORKER_BASE_BYTES - cost.BOOK_LOAN_BYTES * estimate.loans
                      - config.monte_carlo.paths * cost.result_bytes_per_path(config))  # fmt: skip

    measured = measure(data, 200)["bytes"]

    assert measured <= chunk_estimate <= 2.5 * measured
