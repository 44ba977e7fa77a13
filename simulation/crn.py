"""Re-simulation on common random numbers, and paired statistics of one run against another.

Two configs with the same seed and path count draw the same random numbers path by path (``streams``):
a changed input moves each path, never reshuffles it. So a stressed run and its base are compared path by
path, and the paired differences carry far less noise than two independent runs would (domain §7.2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import engine
from .book import LoanBook
from .config import SimulationConfig
from .executors import CancelCheck, ChunkExecutor, executor_for
from .aggregate import BOOTSTRAP_BATCH_VALUES
from .metrics import Z_95
from .pathmetrics import PathResults
from .streams import Purpose, generator

BOOTSTRAP_REPLICATES = 200
BOOTSTRAP_KEY = 11  # the study's own bootstrap stream, apart from the run's (aggregate.py)

RunsProgress = Callable[[int, int], None]  # (paths done over every run, paths in every run)


def same_draws(base: SimulationConfig, other: SimulationConfig) -> bool:
    """Whether ``other`` draws the same random numbers as ``base`` path by path."""
    return (other.monte_carlo.seed, engine.path_count(other)) == (base.monte_carlo.seed, engine.path_count(base))


def runs(configs: Sequence[SimulationConfig], *, progress: RunsProgress | None = None,
         cancelled: CancelCheck | None = None, executor: ChunkExecutor | None = None) -> Iterator[PathResults]:
    """Per-path results of every config, in order, on the first one's random numbers, one run at a time
    (a caller that reduces each run as it comes holds one run in memory, whatever the number of runs). A
    book is built once for every config that shares its inputs (most variants leave the book alone)."""
    first = configs[0]
    if not all(same_draws(first, config) for config in configs):
        raise ValueError("every config of a comparison must share the seed and the number of paths")
    executor = executor if executor is not None else executor_for(first)
    plan = engine.chunks(first, executor.parallelism)
    per_run = engine.path_count(first)
    total = per_run * len(configs)
    books: dict[str, LoanBook] = {}
    for index, config in enumerate(configs):
        key = config.model_dump_json(include={"book", "fund", "loans", "monte_carlo"})
        book = books.get(key)
        if book is None:
            book = books[key] = engine.book_for(config)

        def report(step: engine.Progress, done_before: int = index * per_run) -> None:
            if progress is not None:
                progress(done_before + step.paths_done, total)

        yield engine.simulate_paths(config, book, executor, plan, progress=report, cancelled=cancelled)


def run_all(configs: Sequence[SimulationConfig], **options: Any) -> list[PathResults]:
    """Every run of ``runs`` at once."""
    return list(runs(configs, **options))


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95 % confidence interval."""

    value: float
    ci_low: float
    ci_high: float

    @staticmethod
    def nan() -> Estimate:
        return Estimate(float("nan"), float("nan"), float("nan"))


def mean_delta(base: np.ndarray, other: np.ndarray) -> Estimate:
    """Mean of the paired differences ``other − base`` over paths where both are finite, with its normal
    95 % interval (the standard error of the paired differences)."""
    both = np.isfinite(base) & np.isfinite(other)
    diff = other[both] - base[both]
    if diff.size == 0:
        return Estimate.nan()
    mean = float(diff.mean())
    half = Z_95 * float(diff.std(ddof=1)) / np.sqrt(diff.size) if diff.size > 1 else float("nan")
    return Estimate(mean, mean - half, mean + half)


def mean_deltas(base: np.ndarray, other: np.ndarray) -> list[Estimate]:
    """``mean_delta`` of each column of ``(paths, columns)`` arrays."""
    return [mean_delta(base[:, j], other[:, j]) for j in range(base.shape[1])]


Statistic = Callable[[np.ndarray], np.ndarray]  # rows of samples (rows, paths), sorted -> one figure per row




def bootstrap_deltas(base: np.ndarray, other: np.ndarray, statistics: Sequence[Statistic],
                     seed: int) -> list[Estimate]:
    """``statistic(other) − statistic(base)`` for each statistic, with a paired percentile bootstrap 95 %
    interval: each replicate resamples whole paths, the same ones in both runs, so the interval keeps the
    pairing. Paths where either value is NaN are left out of both. Every statistic gets the same
    resamples, each row sorted ascending once for all of them; replicates are drawn in batches of at most
    ``BOOTSTRAP_BATCH_VALUES`` values."""
    both = np.isfinite(base) & np.isfinite(other)
    base, other = base[both], other[both]
    if base.size < 2:
        return [Estimate.nan() for _ in statistics]
    rng = generator(seed, Purpose.BOOTSTRAP, BOOTSTRAP_KEY)
    batch = max(1, BOOTSTRAP_BATCH_VALUES // base.size)
    spreads: list[list[np.ndarray]] = [[] for _ in statistics]
    for start in range(0, BOOTSTRAP_REPLICATES, batch):
        picks = rng.integers(0, base.size, (min(batch, BOOTSTRAP_REPLICATES - start), base.size))
        before, after = (np.sort(values[picks], axis=1) for values in (base, other))
        for spread, statistic in zip(spreads, statistics):
            spread.append(statistic(after) - statistic(before))
    points = [np.sort(values)[np.newaxis, :] for values in (base, other)]
    out = []
    for spread, statistic in zip(spreads, statistics):
        point = float(statistic(points[1])[0] - statistic(points[0])[0])
        low, high = np.nanpercentile(np.concatenate(spread), [2.5, 97.5])
        out.append(Estimate(point, float(low), float(high)))
    return out


def bootstrap_delta(base: np.ndarray, other: np.ndarray, statistic: Statistic, seed: int) -> Estimate:
    """``bootstrap_deltas`` of one statistic."""
    return bootstrap_deltas(base, other, [statistic], seed)[0]
