"""Competing monthly hazards for voluntary exit and default, resolved by integrated intensity.

A loan in series s feels an intensity ``λ(m) = c_k · w_s(m − 1)`` in month m: a per-loan constant
``c_k`` times a weight that depends only on the series' log index at the start of the month. With
``C_s(m) = Σ_{j=1..m} w_s(j − 1)·dt`` and an Exp(1) draw E, the loan's event month after its start
month o is the first m with ``C_s(m) − C_s(o) ≥ E / c_k``. One cumulative sum per (path, series)
therefore serves all its loans, and each loan needs one search, not a coin toss per month:
O(paths·series·months + loans·log months).

* voluntary exit: ``c = λ0_z / I_s(o)^β_a``, ``w = I^β_a``, start o + min hold
  (``exit_thresholds``, ``cumulative_exit_intensity``);
* default: ``c = pd_z``, ``w = exp(−β_d·drawdown)``, start o
  (``default_thresholds``, ``cumulative_default_intensity``).

Log weights are clipped to ±``MAX_LOG_WEIGHT`` so no exp overflows: sums of 360 monthly weights and
thresholds divided by a tiny base hazard stay finite. The clip binds only after index moves of
``exp(300/β)``, far outside any price path.
"""

from __future__ import annotations

import numpy as np

from simulation.market import DT, MONTHS_PER_YEAR

MAX_LOG_WEIGHT = 300.0


def cumulative_exit_intensity(series_log: np.ndarray, beta: float) -> np.ndarray:
    """``C(m) = Σ_{j=1..m} I(j−1)^β·dt`` per (path, series), shape (P, S, M + 1), 0 at month 0."""
    return _cumulative(beta * series_log)


def cumulative_default_intensity(series_log: np.ndarray, beta_d: float) -> np.ndarray:
    """``D(m) = Σ_{j=1..m} exp(−β_d·dd(j−1))·dt``, dd = log index minus its running maximum (≤ 0).

    The weight is 1 at a running high and grows in a drawdown, so defaults cluster in falling markets.
    """
    drawdown = series_log - np.maximum.accumulate(series_log, axis=-1)
    return _cumulative(-beta_d * drawdown)


def exit_thresholds(
    exponential: np.ndarray, origination_log_index: np.ndarray, beta: float, base_hazard: np.ndarray
) -> np.ndarray:
    """Each loan's exit threshold on the ``cumulative_exit_intensity`` scale: ``E·I_s(o)^β / λ0_z``.

    ``origination_log_index`` is the loan's series log index at its origination month.
    """
    return exponential * np.exp(_clip(beta * np.asarray(origination_log_index))) / base_hazard


def default_thresholds(exponential: np.ndarray, default_hazard: np.ndarray) -> np.ndarray:
    """Each loan's default threshold on the ``cumulative_default_intensity`` scale: ``E / pd_z``.

    A zero hazard gives an infinite threshold: the loan never defaults.
    """
    exponential, default_hazard = np.broadcast_arrays(exponential, default_hazard)
    thresholds = np.full(exponential.shape, np.inf)
    return np.divide(exponential, default_hazard, out=thresholds, where=default_hazard > 0.0)


def first_passage(
    cum: np.ndarray, path: np.ndarray, series: np.ndarray, start: np.ndarray, threshold: np.ndarray
) -> np.ndarray:
    """Smallest m in [start + 1, M] with ``cum[p, s, m] − cum[p, s, start] ≥ threshold``, else M + 1.

    ``cum`` (P, S, M + 1) is non-decreasing along months; the loan arrays are (K,), thresholds are
    non-negative and may be +inf, and a start at or beyond M never passes. The comparison is the
    floating-point one as written, ties included. Loans that never pass by month M are settled by
    one look-up; the rest share a vectorised binary search over the months (⌈log2 M⌉ gathers).
    """
    _, n_series, n_points = cum.shape
    last_month = n_points - 1
    flat = cum.reshape(-1)
    path, series, start = (np.asarray(a, dtype=np.int64) for a in (path, series, start))
    row_start = (path * n_series + series) * n_points
    first = np.minimum(start, last_month)
    target = _smallest_value_reaching(flat[row_start + first], np.asarray(threshold, dtype=float))
    month = np.full(path.shape, n_points, dtype=np.int64)
    passing = np.flatnonzero((start < last_month) & (flat[row_start + last_month] >= target))
    rows, goal = row_start[passing], target[passing]
    low, high = first[passing] + 1, np.full(passing.shape, last_month)  # answer in [low, high]
    while passing.size and np.any(low < high):
        middle = (low + high) // 2
        reached = flat[rows + middle] >= goal
        high = np.where(reached, middle, high)
        low = np.where(reached, low, middle + 1)
    month[passing] = low
    return month


def calibrate_exit_hazard(
    drift: np.ndarray, beta_a: float, avg_exit_years: float, min_hold_years: float, max_hold_months: int
) -> np.ndarray:
    """Base voluntary-exit intensity λ0 per zone whose median exit age is ``avg_exit_years``.

    In the deterministic market I_t = (1+g)^t a loan of age j months feels ``λ0·q^(j−1)``,
    q = (1+g)^(β_a/12), from month h + 1 on (h = round(12·min_hold_years)), and exits by month n with
    probability 1 − exp(−Λ(n)). The median is n = round(12·avg_exit_years) when
    ``Λ(n) = λ0·dt·Σ_{j=h+1..n} q^(j−1) = ln 2``; the geometric sum is
    ``q^h·(q^(n−h) − 1)/(q − 1)`` (n − h when q = 1), evaluated with expm1 for q near 1.
    Raises ``ValueError`` unless h < n ≤ ``max_hold_months``: a median after the loan's maturity
    cannot be reached.
    """
    hold = round(min_hold_years * MONTHS_PER_YEAR)
    median = round(avg_exit_years * MONTHS_PER_YEAR)
    if median <= hold:
        raise ValueError("the median exit month must come after the minimum holding period")
    if median > max_hold_months:
        raise ValueError(f"a median exit at month {median} falls after the maximum hold of {max_hold_months}")
    log_q = beta_a * np.log1p(np.asarray(drift, dtype=float)) / MONTHS_PER_YEAR
    months_after_hold = median - hold
    geometric = np.full(log_q.shape, float(months_after_hold))
    growing = log_q != 0.0
    geometric[growing] = np.expm1(log_q[growing] * months_after_hold) / np.expm1(log_q[growing])
    return np.log(2.0) / (DT * np.exp(log_q * hold) * geometric)


def _cumulative(log_weight: np.ndarray) -> np.ndarray:
    """``Σ_{j=1..m} exp(log_weight(j−1))·dt`` along the last axis, with a leading 0 at month 0."""
    cum = np.zeros(log_weight.shape)
    np.cumsum(np.exp(_clip(log_weight[..., :-1])) * DT, axis=-1, out=cum[..., 1:])
    return cum


def _clip(log_weight: np.ndarray) -> np.ndarray:
    return np.clip(log_weight, -MAX_LOG_WEIGHT, MAX_LOG_WEIGHT)


def _smallest_value_reaching(base: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Smallest float x with ``x − base ≥ threshold`` in floating point (base, threshold ≥ 0).

    ``base + threshold`` rounds to within one step of it, so one step up, then one step down, fixes it.
    """
    target = base + threshold
    target = np.where(target - base < threshold, np.nextafter(target, np.inf), target)
    below = np.nextafter(target, -np.inf)
    return np.where(below - base >= threshold, below, target)
