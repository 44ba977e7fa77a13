"""Net present value, internal rate of return and XIRR (domain §4.1).

Times are years (float) from fund inception and ``NPV(r) = Σ cf_i (1 + r)^(−t_i)``; without times the
flows are one year apart (``t_i = i``). Cash in is positive.

An IRR exists only for flows with an outflow and an inflow, and is searched on the rate bracket
``[LOWEST_RATE, HIGHEST_RATE]``: a scan on a grid evenly spaced in ``ln(1 + r)`` finds every sign change
of the NPV, each one is solved, and when there are several roots the one closest to the MOIC-implied
rate is returned with ``multiple_roots`` set. Anything else is ``NaN`` with a reason; no stand-in such as
a CAGR is ever returned. Two roots closer together than one grid step (about 2 % in rate near zero) are
not told apart.

``irr`` solves each sign change with Brent's method and is the reference; ``irr_batch`` gives the same
answers for a whole ``(P, T)`` array of paths with vectorised solvers.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import brentq

LOWEST_RATE = -0.9999
HIGHEST_RATE = 10.0

_SCAN_POINTS = 512
_SCAN_LOG_GROWTH = np.linspace(np.log1p(LOWEST_RATE), np.log1p(HIGHEST_RATE), _SCAN_POINTS)
_SCAN_RATES = np.expm1(_SCAN_LOG_GROWTH)
_SCAN_CHUNK_ROWS = 2048  # bounds the (rows, grid) block of NPVs held at once

# Discounting at the lowest rate multiplies a flow by 10^4 per year: beyond this span it overflows.
_MAX_SPAN_YEARS = 75.0

_BRENT_XTOL = 1e-12
_NEWTON_MAX_ITERATIONS = 50
_NEWTON_NPV_RTOL = 1e-12
_BRACKETED_MAX_ITERATIONS = 100
_BRACKETED_LOG_GROWTH_TOL = 1e-13


class IrrReason(IntEnum):
    """Why an IRR is or is not a number."""

    OK = 0
    NO_OUTFLOW = 1
    NO_INFLOW = 2
    NO_ROOT = 3
    EMPTY = 4  # no non-zero flow at all

    @property
    def label(self) -> str:
        """The snake_case name used in reports, e.g. ``"no_outflow"``."""
        return self.name.lower()


@dataclass(frozen=True)
class IrrResult:
    """An IRR with the reason it is (or is not) a number and whether the NPV had several roots."""

    rate: float  # NaN unless reason is OK
    reason: IrrReason
    multiple_roots: bool


def npv(rate: ArrayLike, cashflows: ArrayLike, times: ArrayLike | None = None) -> float | NDArray[np.float64]:
    """NPV of flows ``(..., T)`` at ``rate`` (a scalar, or an array broadcasting against the leading axes)."""
    flows = np.asarray(cashflows, dtype=float)
    t = _times(times, flows.shape[-1])
    rate = np.asarray(rate, dtype=float)
    if np.any(rate <= -1.0):
        raise ValueError("rate must be greater than -1")
    discount = np.exp(-np.multiply.outer(np.log1p(rate), t))
    value = np.sum(flows * discount, axis=-1)
    return float(value) if value.ndim == 0 else value


def irr(cashflows: ArrayLike, times: ArrayLike | None = None) -> IrrResult:
    """IRR of one stream of flows ``(T,)`` by bracket scan and Brent's method."""
    flows, t = _validated(cashflows, times, ndim=1)
    reason = IrrReason(_reasons(flows[np.newaxis])[0])
    if reason is not IrrReason.OK:
        return IrrResult(np.nan, reason, multiple_roots=False)
    nonzero = flows != 0.0
    flows, t = flows[nonzero], t[nonzero]
    offsets = t - t.min()
    changes = _scan(flows[np.newaxis], offsets)
    roots = [float(rate) for rate in _SCAN_RATES[changes.zero_nodes]]
    for cell in changes.crossing_cells:
        low, high = _SCAN_RATES[cell], _SCAN_RATES[cell + 1]
        roots.append(brentq(_shifted_npv, low, high, args=(flows, offsets), xtol=_BRENT_XTOL))
    if not roots:
        return IrrResult(np.nan, IrrReason.NO_ROOT, multiple_roots=False)
    anchor = _moic_implied_rate(flows[np.newaxis], t)[0]
    closest = min(roots, key=lambda root: abs(root - anchor))
    return IrrResult(closest, IrrReason.OK, multiple_roots=len(roots) > 1)


def irr_batch(
    cashflows: ArrayLike, times: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int8], NDArray[np.bool_]]:
    """IRRs of the rows of ``(P, T)`` flows on shared ``times``: ``(rates, reasons, multiple_roots)``.

    Rows whose flows change sign once (in time order) have at most one IRR: a vectorised Newton
    iteration from the MOIC-implied rate finds it. Every other row, and any row Newton does not settle
    inside the bracket, gets ``irr``'s own scan and root choice, vectorised. The results equal ``irr``
    row by row, and a row's result depends on that row alone: every row is computed on all columns,
    so a path's IRR is bit-identical whatever batch (chunk) it is solved in.
    """
    flows, t = _validated(cashflows, times, ndim=2)
    reasons = _reasons(flows)
    rates = np.full(flows.shape[0], np.nan)
    multiple_roots = np.zeros(flows.shape[0], dtype=bool)

    candidates = np.flatnonzero(reasons == IrrReason.OK)
    if candidates.size == 0:
        return rates, reasons, multiple_roots
    candidate_flows = flows[candidates]
    used_times = t

    time_order = np.argsort(used_times, kind="stable")
    single_root = _changes_sign_once(candidate_flows[:, time_order])
    converged, newton_rates = _newton(candidate_flows[single_root], used_times)
    solved = candidates[single_root][converged]
    rates[solved] = newton_rates[converged]

    unsolved = np.isin(candidates, solved, invert=True)
    if unsolved.any():
        rows = candidates[unsolved]
        rates[rows], reasons[rows], multiple_roots[rows] = _irr_by_scan(candidate_flows[unsolved], used_times)
    return rates, reasons, multiple_roots


def xirr(cashflows: ArrayLike, dates: Sequence[datetime.date]) -> IrrResult:
    """IRR of dated flows, with times in years ACT/365 from the first date."""
    if len(dates) != np.shape(cashflows)[-1]:
        raise ValueError("one date is needed per cash flow")
    times = [(date - dates[0]).days / 365.0 for date in dates]
    return irr(cashflows, times)


def _times(times: ArrayLike | None, count: int) -> NDArray[np.float64]:
    t = np.arange(count, dtype=float) if times is None else np.asarray(times, dtype=float)
    if t.shape != (count,):
        raise ValueError(f"times must have shape ({count},), got {t.shape}")
    return t


def _validated(
    cashflows: ArrayLike, times: ArrayLike | None, ndim: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    flows = np.asarray(cashflows, dtype=float)
    if flows.ndim != ndim:
        raise ValueError(f"cash flows must be {ndim}-dimensional, got shape {flows.shape}")
    t = _times(times, flows.shape[-1])
    if not (np.all(np.isfinite(flows)) and np.all(np.isfinite(t))):
        raise ValueError("cash flows and times must be finite")
    if t.size and np.ptp(t) > _MAX_SPAN_YEARS:
        raise ValueError(f"cash flows may span at most {_MAX_SPAN_YEARS:g} years")
    return flows, t


def _reasons(flows: NDArray[np.float64]) -> NDArray[np.int8]:
    """The reason code of each row of ``(P, T)`` flows, OK where both an outflow and an inflow exist."""
    has_outflow = np.any(flows < 0.0, axis=-1)
    has_inflow = np.any(flows > 0.0, axis=-1)
    reasons = np.full(flows.shape[0], IrrReason.OK, dtype=np.int8)
    reasons[~has_inflow] = IrrReason.NO_INFLOW
    reasons[~has_outflow] = IrrReason.NO_OUTFLOW
    reasons[~has_inflow & ~has_outflow] = IrrReason.EMPTY
    return reasons


def _moic_implied_rate(flows: NDArray[np.float64], t: NDArray[np.float64]) -> NDArray[np.float64]:
    """``MOIC^(1/duration) − 1`` per row, clipped to the bracket.

    The duration is the gap between the cash-weighted mean dates of the inflows and of the outflows, so
    one investment returned in one payment gives its exact IRR. A zero duration implies no rate; the
    anchor is then 0.
    """
    inflows = np.clip(flows, 0.0, None)
    outflows = np.clip(-flows, 0.0, None)
    received, paid = inflows.sum(axis=-1), outflows.sum(axis=-1)
    duration = (inflows * t).sum(axis=-1) / received - (outflows * t).sum(axis=-1) / paid
    log_moic = np.log(received / paid)
    log_growth = np.divide(log_moic, duration, out=np.zeros_like(log_moic), where=duration != 0.0)
    return np.expm1(np.clip(log_growth, _SCAN_LOG_GROWTH[0], _SCAN_LOG_GROWTH[-1]))


@dataclass(frozen=True)
class _SignChanges:
    """Where the scanned NPV of each row is exactly zero (grid nodes) or changes sign (grid cells)."""

    zero_rows: NDArray[np.intp]
    zero_nodes: NDArray[np.intp]
    crossing_rows: NDArray[np.intp]
    crossing_cells: NDArray[np.intp]  # cell k lies between nodes k and k + 1


def _scan(flows: NDArray[np.float64], offsets: NDArray[np.float64]) -> _SignChanges:
    """Evaluate each row's NPV on the rate grid; ``offsets`` are times from the earliest flow."""
    growth = np.exp(-np.outer(offsets, _SCAN_LOG_GROWTH))
    chunks = []
    for start in range(0, flows.shape[0], _SCAN_CHUNK_ROWS):
        values = flows[start : start + _SCAN_CHUNK_ROWS] @ growth
        positive, negative = values > 0.0, values < 0.0
        zero_rows, zero_nodes = np.nonzero(~positive & ~negative)
        crossing = (positive[:, :-1] & negative[:, 1:]) | (negative[:, :-1] & positive[:, 1:])
        crossing_rows, crossing_cells = np.nonzero(crossing)
        chunks.append((zero_rows + start, zero_nodes, crossing_rows + start, crossing_cells))
    return _SignChanges(*(np.concatenate(parts) for parts in zip(*chunks, strict=True)))


def _shifted_npv(rate: float, flows: NDArray[np.float64], offsets: NDArray[np.float64]) -> float:
    """NPV valued at the first flow's date: the same roots as NPV, without overflow at low rates."""
    return float(flows @ np.exp(-offsets * np.log1p(rate)))


def _changes_sign_once(flows: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Rows (in time order) whose outflows all precede their inflows, or the other way round.

    By Descartes' rule of signs such a row has at most one IRR. Flows sharing a date count as
    separate, which can only report more sign changes than there are.
    """
    outflow, inflow = flows < 0.0, flows > 0.0
    last = flows.shape[-1] - 1
    first_outflow, first_inflow = np.argmax(outflow, axis=-1), np.argmax(inflow, axis=-1)
    last_outflow = last - np.argmax(outflow[:, ::-1], axis=-1)
    last_inflow = last - np.argmax(inflow[:, ::-1], axis=-1)
    return (last_outflow < first_inflow) | (last_inflow < first_outflow)


def _newton(
    flows: NDArray[np.float64], t: NDArray[np.float64]
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Newton's method on the log growth ``s = ln(1 + r)`` for every row, row by row in a compiled loop.

    Starts at the MOIC-implied rate; a row has converged when its NPV is within ``_NEWTON_NPV_RTOL``
    of its gross discounted flows, and then takes one more step. Returns ``(converged, rates)``.
    """
    offsets = t - t.min()
    log_growth = np.log1p(_moic_implied_rate(flows, t))
    converged = _newton_rows(np.ascontiguousarray(flows), offsets, log_growth, _SCAN_LOG_GROWTH[0],
                             _SCAN_LOG_GROWTH[-1], _NEWTON_NPV_RTOL, _NEWTON_MAX_ITERATIONS)
    return converged, np.expm1(log_growth)


@njit(cache=True, nogil=True, error_model="numpy")
def _newton_rows(flows, offsets, log_growth, lowest, highest, rtol, max_iterations):
    """Iterate each row's ``log_growth`` in place; months without a flow add nothing and are skipped."""
    n_rows, n_times = flows.shape
    converged = np.zeros(n_rows, dtype=np.bool_)
    for row in range(n_rows):
        s = log_growth[row]
        for _ in range(max_iterations):
            value, slope, gross = 0.0, 0.0, 0.0
            for k in range(n_times):
                flow = flows[row, k]
                if flow != 0.0:
                    discounted = flow * np.exp(-s * offsets[k])
                    value += discounted
                    slope -= discounted * offsets[k]
                    gross += abs(discounted)
            stepped = s - value / slope
            settled = abs(value) <= rtol * gross
            s = stepped if np.isnan(stepped) else min(max(stepped, lowest), highest)
            if settled and lowest <= stepped <= highest:
                converged[row] = True
            if settled or not np.isfinite(stepped):
                break
        log_growth[row] = s
    return converged


def _irr_by_scan(
    flows: NDArray[np.float64], t: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.int8], NDArray[np.bool_]]:
    """``irr`` for rows that have an outflow and an inflow, vectorised: the same grid scan and root
    choice, with the sign-change cells solved together by ``_solve_in_cells`` instead of Brent."""
    offsets = t - t.min()
    changes = _scan(flows, offsets)
    found_rows = np.concatenate([changes.zero_rows, changes.crossing_rows])
    roots = np.concatenate(
        [
            _SCAN_RATES[changes.zero_nodes],
            _solve_in_cells(flows[changes.crossing_rows], offsets, changes.crossing_cells),
        ]
    )
    distance = np.abs(roots - _moic_implied_rate(flows, t)[found_rows])
    by_row_then_distance = np.lexsort((distance, found_rows))
    rows_with_roots, first, root_count = np.unique(
        found_rows[by_row_then_distance], return_index=True, return_counts=True
    )
    rates = np.full(flows.shape[0], np.nan)
    rates[rows_with_roots] = roots[by_row_then_distance[first]]
    reasons = np.full(flows.shape[0], IrrReason.NO_ROOT, dtype=np.int8)
    reasons[rows_with_roots] = IrrReason.OK
    multiple_roots = np.zeros(flows.shape[0], dtype=bool)
    multiple_roots[rows_with_roots] = root_count > 1
    return rates, reasons, multiple_roots


def _solve_in_cells(
    flows: NDArray[np.float64], offsets: NDArray[np.float64], cells: NDArray[np.intp]
) -> NDArray[np.float64]:
    """The root of each row's NPV inside its grid cell, for all rows at once.

    Safeguarded Newton on the log growth ``s``: a Newton step is taken when it stays inside the
    shrinking bracket and at most halves the previous step, a bisection otherwise.
    """
    low, high = _SCAN_LOG_GROWTH[cells], _SCAN_LOG_GROWTH[cells + 1]
    negative_at_low = _discounted(flows, offsets, low).sum(axis=-1) < 0.0
    log_growth = 0.5 * (low + high)
    last_step = high - low
    active = np.arange(cells.size)
    for _ in range(_BRACKETED_MAX_ITERATIONS):
        if active.size == 0:
            break
        here = log_growth[active]
        discounted = _discounted(flows[active], offsets, here)
        value, slope = discounted.sum(axis=-1), -(discounted * offsets).sum(axis=-1)
        root_above = (value < 0.0) == negative_at_low[active]
        low[active] = np.where(root_above, here, low[active])
        high[active] = np.where(root_above, high[active], here)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = here - value / slope
        inside = (newton > low[active]) & (newton < high[active])
        take_newton = inside & (np.abs(newton - here) <= 0.5 * last_step[active])
        following = np.where(take_newton, newton, 0.5 * (low[active] + high[active]))
        last_step[active] = np.abs(following - here)
        log_growth[active] = np.where(value == 0.0, here, following)
        active = active[(value != 0.0) & (last_step[active] > _BRACKETED_LOG_GROWTH_TOL)]
    if active.size:
        raise RuntimeError("the bracketed IRR solver did not converge")
    return np.expm1(log_growth)


def _discounted(
    flows: NDArray[np.float64], offsets: NDArray[np.float64], log_growth: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Each row's flows discounted at its own log growth (a row of ``(B, K)`` per rate of ``(B,)``)."""
    return flows * np.exp(-np.outer(log_growth, offsets))
