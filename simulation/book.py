"""The initial loan book: explicit loans from a portfolio system plus generated loans.

The book is drawn once per simulation (from its own seed stream), so path-to-path variation is
market and event risk, not a different portfolio on every path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from .config import DeploymentPace, GeneratedBook, SimulationConfig, ZONES


@dataclass(frozen=True)
class LoanBook:
    """Column arrays, one entry per loan. ``share`` is NaN where the configured method applies."""

    ids: tuple[str, ...]
    amount: np.ndarray
    value0: np.ndarray
    zone: np.ndarray
    region: np.ndarray
    origination_month: np.ndarray
    rate: np.ndarray
    share: np.ndarray
    planned_exit_month: np.ndarray  # -1 where the exit is left to the hazard model

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def ltv(self) -> np.ndarray:
        return self.amount / self.value0


def truncated_normal(rng: np.random.Generator, mean: float, sd: float, low: float, high: float,
                     size: int | tuple[int, ...]) -> np.ndarray:
    """Draws of N(mean, sd) truncated to [low, high]."""
    return truncated_normal_ppf(rng.random(size), mean, sd, low, high)


def truncated_normal_ppf(u: np.ndarray, mean: float, sd: float, low: float, high: float) -> np.ndarray:
    """Inverse CDF of N(mean, sd) truncated to [low, high] at uniforms ``u``; ``mean`` when sd is 0."""
    if sd == 0.0:
        return np.full(np.shape(u), float(np.clip(mean, low, high)))
    lo, hi = ndtr((low - mean) / sd), ndtr((high - mean) / sd)
    return np.clip(mean + sd * ndtri(lo + (hi - lo) * u), low, high)


def exact_counts(weights: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` items by ``weights`` with the largest-remainder method (counts sum to n)."""
    quotas = weights / weights.sum() * n
    counts = np.floor(quotas).astype(np.int64)
    remainder_order = np.argsort(-(quotas - counts), kind="stable")
    counts[remainder_order[: n - counts.sum()]] += 1
    return counts


def deployment_quantiles(pace: DeploymentPace, n: int) -> np.ndarray:
    """``D^-1((i + 0.5) / n)`` for the deployment CDF ``D`` of the pace (domain §2.3)."""
    v = (np.arange(n) + 0.5) / n
    if pace is DeploymentPace.EVEN:
        return v
    if pace is DeploymentPace.FRONT_LOADED:
        return 1.0 - np.sqrt(1.0 - v)
    if pace is DeploymentPace.BACK_LOADED:
        return np.sqrt(v)
    grid = np.linspace(0.0, 1.0, 4097)
    return np.interp(v, 3 * grid**2 - 2 * grid**3, grid)  # smoothstep bell curve


def deployable_amount(config: SimulationConfig) -> float:
    """Capital the generated part of the book deploys: the target less the explicit loans."""
    explicit = sum(loan.amount for loan in config.book.loans)
    return max(0.0, config.fund.size * config.fund.deployment_target_fraction - explicit)


def generated_sizes(rng: np.random.Generator, params: GeneratedBook, target: float) -> np.ndarray:
    """Truncated-normal loan sizes, rescaled within the size bounds so they sum to ``target``."""
    n = int(round(target / params.avg_loan_size))
    if n == 0:
        return np.zeros(0)
    sizes = truncated_normal(rng, params.avg_loan_size, params.loan_size_sd,
                             params.min_loan_size, params.max_loan_size, n)
    for _ in range(8):
        free = (sizes > params.min_loan_size) & (sizes < params.max_loan_size)
        gap = target - sizes.sum()
        if abs(gap) < 0.005 or not free.any():
            break
        sizes[free] *= 1.0 + gap / sizes[free].sum()
        np.clip(sizes, params.min_loan_size, params.max_loan_size, out=sizes)
    return sizes


def build_book(config: SimulationConfig, rng: np.random.Generator) -> LoanBook:
    """Explicit loans first (in the given order), then the generated ones."""
    region_names = [r.name for r in config.book.regions]
    explicit = config.book.loans
    default_rate = config.loans.interest_rate
    columns: dict[str, list] = {
        "ids": [loan.id for loan in explicit],
        "amount": [loan.amount for loan in explicit],
        "value0": [loan.property_value for loan in explicit],
        "zone": [ZONES.index(loan.zone.value) for loan in explicit],
        "region": [region_names.index(loan.region) for loan in explicit],
        "origination_month": [loan.origination_month for loan in explicit],
        "rate": [default_rate if loan.interest_rate is None else loan.interest_rate for loan in explicit],
        "share": [np.nan if loan.appreciation_share is None else loan.appreciation_share for loan in explicit],
        "planned_exit_month": [-1 if loan.planned_exit_month is None else loan.planned_exit_month
                               for loan in explicit],
    }
    if config.book.generate:
        _append_generated(config, rng, columns)
    return LoanBook(
        ids=tuple(columns["ids"]),
        amount=np.asarray(columns["amount"], dtype=float),
        value0=np.asarray(columns["value0"], dtype=float),
        zone=np.asarray(columns["zone"], dtype=np.int64),
        region=np.asarray(columns["region"], dtype=np.int64),
        origination_month=np.asarray(columns["origination_month"], dtype=np.int64),
        rate=np.asarray(columns["rate"], dtype=float),
        share=np.asarray(columns["share"], dtype=float),
        planned_exit_month=np.asarray(columns["planned_exit_month"], dtype=np.int64),
    )


def _append_generated(config: SimulationConfig, rng: np.random.Generator, columns: dict[str, list]) -> None:
    params = config.book.generated
    sizes = generated_sizes(rng, params, deployable_amount(config))
    n = len(sizes)
    ltv = truncated_normal(rng, params.ltv_mean, params.ltv_sd, params.min_ltv, params.max_ltv, n)
    zone = rng.permutation(np.repeat(np.arange(len(ZONES)), exact_counts(params.zone_allocation.as_array(), n)))
    weights = np.array([r.weight for r in config.book.regions])
    region = rng.permutation(np.repeat(np.arange(len(weights)), exact_counts(weights, n)))
    months = config.fund.deployment_period_years * 12
    origination = np.floor(months * deployment_quantiles(config.fund.deployment_pace, n)).astype(np.int64)
    columns["ids"] += [f"gen-{i:05d}" for i in range(n)]
    columns["amount"] += sizes.tolist()
    columns["value0"] += (sizes / ltv).tolist()
    columns["zone"] += zone.tolist()
    columns["region"] += region.tolist()
    columns["origination_month"] += origination.tolist()
    columns["rate"] += [config.loans.interest_rate] * n
    columns["share"] += [np.nan] * n
    columns["planned_exit_month"] += [-1] * n
