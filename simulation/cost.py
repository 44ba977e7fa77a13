"""What a run will cost before it starts: peak memory of the worker that runs it, and its work.

A pure function of the config, cheap enough to call on every request. It never builds the book: the
generated loan count and the recycling generations are estimated from the parameters, so a config that
would need millions of loans is priced (and refused by the caller) without allocating any of them.

Memory (bytes, one worker) is the idle worker, plus the book, plus the larger of the two phases of each
chunk in flight (the market indices of its paths, or those indices' cumulative hazards with every loan of
every generation on its paths; an executor runs ``parallelism`` chunks at once), plus the per-path results
kept until the run ends. Work is in loan-months x
paths: ``paths x (months + 1) x (loans x generations + MARKET_LOAN_EQUIVALENT x series)``, the market
simulation of each zone-region series counted as that many loans.

The constants below are the only calibration. They were fitted to the engine of ``ENGINE_VERSION`` at the
time of writing with ``python -m bench.cost_calibration``, which measures peak traced memory and CPU time
of chunks over a grid of books, terms, regions and recycling, and prints measured against estimated.
Re-run it after changing the engine and update the constants; nothing else here should need to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import SimulationConfig
from .streams import BLOCK_PATHS

MONTHS_PER_YEAR = 12
ZONE_COUNT = 3

# --- Calibration (bench/cost_calibration.py, engine of main at 9d51411) ---------------------------------------------
WORKER_BASE_BYTES = 640 * 2**20  # a warm worker's address space: interpreter, libraries, kernels, chunk threads
BOOK_LOAN_BYTES = 1_500  # per loan of the book, built once per run (explicit loans cost the most)
MARKET_SERIES_MONTH_BYTES = 36  # market phase: per zone-region series, month and path of a chunk
MARKET_PATH_MONTH_BYTES = 200  # market phase: per month and path of a chunk
HAZARD_SERIES_MONTH_BYTES = 56  # loan phase: the cumulative hazards kept, per series, month and path
FIRST_GENERATION_LOAN_BYTES = 90  # loan phase: per loan of the book and path of a chunk
RECYCLED_LOAN_BYTES = 100  # loan phase: per recycled loan and path of a chunk
RESULT_PATH_BYTES = 1_100  # kept for every path until the run ends, and the aggregation's working copies
RESULT_PATH_YEAR_BYTES = 85  # the same, per year-end mark of the fund term
MARKET_LOAN_EQUIVALENT = 33  # work: one zone-region series costs as much CPU as this many loans
SECONDS_PER_WORK = 2.7e-9  # work to CPU seconds on one core of the development machine (for messages)


@dataclass(frozen=True)
class RunCost:
    """The estimate for one run; floats, so an absurd config prices as ``inf`` instead of overflowing."""

    loans: float  # loans in the book: explicit plus generated
    generations: float  # loans per book slot over the run, recycling included (>= 1)
    paths: int
    chunk_paths: int
    paths_in_flight: int  # chunk paths computed at once
    months: int
    peak_bytes: float  # peak address space of the worker running it
    work: float  # loan-months x paths

    @property
    def cpu_seconds(self) -> float:
        return self.work * SECONDS_PER_WORK


def book_loans(config: SimulationConfig) -> float:
    """Explicit loans plus the generated ones, as ``simulation.book`` will draw them."""
    explicit = config.book.loans
    count = float(len(explicit))
    if config.book.generate:
        deployable = max(0.0, config.fund.size * config.fund.deployment_target_fraction - sum(
            loan.amount for loan in explicit))
        generated = deployable / config.book.generated.avg_loan_size
        count += math.floor(generated + 0.5) if generated < 2.0**53 else generated  # inf stays inf
    return count


def generations(config: SimulationConfig) -> float:
    """Expected loans per book slot: 1 plus the renewals that fit in the reinvestment window.

    A slot renews when its loan's cash returns inside the window, on average after the mean holding
    time: the minimum hold plus the mean wait under the exit and default hazards (the fastest zone's).
    Slots originate across the deployment period, so on average half of it is already spent.
    """
    fund, market = config.fund, config.market
    if fund.recycle_principal_fraction == 0.0 and fund.recycle_gain_fraction == 0.0:
        return 1.0
    months = config.term_months
    window = min(fund.reinvestment_period_years * MONTHS_PER_YEAR,
                 months - fund.min_remaining_term_to_reinvest_years * MONTHS_PER_YEAR, months - 1)
    remaining = window - fund.deployment_period_years * MONTHS_PER_YEAR / 2
    if remaining <= 0:
        return 1.0
    hold = round(market.min_hold_years * MONTHS_PER_YEAR)
    median_exit = round(market.avg_exit_year * MONTHS_PER_YEAR)
    if config.monte_carlo.deterministic:
        mean_hold = float(median_exit)
    else:
        zones = market.zones()
        exit_rates = [z.exit_hazard / MONTHS_PER_YEAR if z.exit_hazard is not None
                      else math.log(2.0) / max(median_exit - hold, 1) for z in zones]
        default_rate = max(z.default_hazard for z in zones) / MONTHS_PER_YEAR
        mean_hold = hold + 1.0 / (max(exit_rates) + default_rate)
    mean_hold = max(1.0, min(mean_hold, config.loans.term_months))
    return 1.0 + remaining / mean_hold


def result_bytes_per_path(config: SimulationConfig) -> float:
    """What a run keeps of every path until it ends: scalars, IRR reasons and the year-end series."""
    return RESULT_PATH_BYTES + RESULT_PATH_YEAR_BYTES * (config.fund.term_years + 1)


def served_chunk_paths(config: SimulationConfig, chunk_paths: int | None = None) -> int:
    """Paths per chunk as the engine runs them: whole path blocks, never more than the run's paths."""
    paths = 1 if config.monte_carlo.deterministic else config.monte_carlo.paths
    wanted = chunk_paths if chunk_paths is not None else config.monte_carlo.chunk_paths
    return min(-(-wanted // BLOCK_PATHS) * BLOCK_PATHS, paths)


def estimate(config: SimulationConfig, chunk_paths: int | None = None, parallelism: int = 1) -> RunCost:
    """The cost of running ``config`` with ``chunk_paths`` per chunk (default: the config's own) on an
    executor computing ``parallelism`` chunks at once."""
    paths = 1 if config.monte_carlo.deterministic else config.monte_carlo.paths
    chunk = served_chunk_paths(config, chunk_paths)
    in_flight = min(paths, parallelism * chunk)
    months = config.term_months
    points = months + 1
    series = ZONE_COUNT * len(config.book.regions)
    loans = book_loans(config)
    per_slot = generations(config)
    market_phase = (MARKET_SERIES_MONTH_BYTES * series + MARKET_PATH_MONTH_BYTES) * points
    loan_phase = (HAZARD_SERIES_MONTH_BYTES * series * points
                  + loans * (FIRST_GENERATION_LOAN_BYTES + RECYCLED_LOAN_BYTES * (per_slot - 1.0)))
    peak = (WORKER_BASE_BYTES + BOOK_LOAN_BYTES * loans + in_flight * max(market_phase, loan_phase)
            + paths * result_bytes_per_path(config))
    work = float(paths) * points * (loans * per_slot + MARKET_LOAN_EQUIVALENT * series)
    return RunCost(loans=loans, generations=per_slot, paths=paths, chunk_paths=chunk, paths_in_flight=in_flight,
                   months=months, peak_bytes=peak, work=work)


def largest_chunk_within(
    config: SimulationConfig, max_bytes: float, max_chunk_paths: int, parallelism: int = 1
) -> int | None:
    """The largest chunk (whole blocks, at most ``max_chunk_paths``) whose run, ``parallelism`` chunks at a
    time, peaks within ``max_bytes``; None when even single blocks do not fit. Results do not depend on the
    chunk size."""
    top = served_chunk_paths(config, max_chunk_paths)
    if estimate(config, top, parallelism).peak_bytes <= max_bytes:
        return top
    chunk = top
    while chunk > BLOCK_PATHS:  # at most max_chunk_paths / BLOCK_PATHS steps of cheap arithmetic
        chunk -= BLOCK_PATHS
        if estimate(config, chunk, parallelism).peak_bytes <= max_bytes:
            return chunk
    return None
