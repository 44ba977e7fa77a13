"""Market paths on the monthly grid: correlated zone price indices, region walks, property noise.

Every path is a *log* price index, 0 at month 0, on months m = 0..M with dt = 1/12 year. Zones are
indexed 0 green, 1 orange, 2 red. A series is a (zone, region) pair whose log index is the zone's
log index plus the region's log walk.

Draw order: each drawing function makes exactly one ``rng.standard_normal`` call whose shape depends
only on its array arguments' shapes, never on parameter values. A generator therefore hands the same
numbers to the same purpose whatever the drifts and volatilities (common random numbers), and a
volatility of zero still consumes its draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

MONTHS_PER_YEAR = 12
DT = 1.0 / MONTHS_PER_YEAR
PSD_TOLERANCE = 1e-10


def correlation_factor(corr: np.ndarray) -> np.ndarray:
    """A factor ``A`` with ``A @ A.T == corr``, also for singular (semi-definite) matrices.

    Cholesky fails on a singular matrix such as all correlations 1; the eigen-decomposition
    ``corr = V diag(w) V.T`` does not, giving ``A = V diag(sqrt(w))``. Eigenvalues within rounding
    of zero are clipped to zero; a materially negative one raises ``ValueError``.
    """
    corr = np.asarray(corr, dtype=float)
    if corr.ndim != 2 or corr.shape[0] != corr.shape[1]:
        raise ValueError("correlation matrix must be square")
    if not np.allclose(corr, corr.T, rtol=0.0, atol=1e-12):
        raise ValueError("correlation matrix must be symmetric")
    if not np.allclose(np.diag(corr), 1.0, rtol=0.0, atol=1e-12):
        raise ValueError("correlation matrix must have a unit diagonal")
    eigenvalues, eigenvectors = np.linalg.eigh(corr)
    smallest = eigenvalues.min()
    if smallest < -PSD_TOLERANCE:
        raise ValueError(f"correlation matrix is not positive semi-definite (eigenvalue {smallest:.3g})")
    return eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))


@dataclass(frozen=True)
class ZoneShocks:
    """A stressed zone market: per-month annual drift and volatility ``(M, Z)``, and a jump of the log index
    from each month on ``(M + 1, Z)``."""

    drift: np.ndarray
    vol: np.ndarray
    log_jump: np.ndarray


def zone_log_indices(
    rng: np.random.Generator,
    n_paths: int,
    n_months: int,
    drift: np.ndarray,
    vol: np.ndarray,
    corr: np.ndarray,
    shocks: ZoneShocks | None = None,
) -> np.ndarray:
    """Correlated log-GBM zone indices, shape (n_paths, n_months + 1, Z), 0 at month 0.

    ``drift`` is the annual effective expected appreciation g, so each month adds
    ``(ln(1+g) − σ²/2)·dt + σ·√dt·(A ε)_z``. The −σ²/2 Itô term makes E[I_t] = (1+g)^t, and with
    σ = 0 the index is (1+g)^t exactly. ``shocks`` replace the drift and volatility month by month and add
    their jumps; the normals are the same, so a stressed market is its base market, shocked.
    Draws: one ``standard_normal`` of shape (n_paths, n_months, Z).
    """
    drift = np.asarray(drift, dtype=float)
    vol = np.asarray(vol, dtype=float)
    factor = correlation_factor(corr)
    normals = rng.standard_normal((n_paths, n_months, drift.size)) @ factor.T
    if shocks is None:
        return _log_walk(np.log1p(drift) - 0.5 * vol**2, vol, normals)
    steps = (np.log1p(shocks.drift) - 0.5 * shocks.vol**2) * DT + np.sqrt(DT) * shocks.vol * normals
    walk = np.zeros((n_paths, n_months + 1, drift.size))
    np.cumsum(steps, axis=1, out=walk[:, 1:])
    return walk + shocks.log_jump


def region_log_walks(
    rng: np.random.Generator, n_paths: int, n_months: int, n_regions: int, vol: float,
    spread: np.ndarray | None = None,
) -> np.ndarray:
    """Independent region log walks, shape (n_paths, n_months + 1, R), 0 at month 0.

    Each region r drifts by ``ln(1+spread_r) − σ²/2`` per year, so E[exp(walk_t)] = (1+spread_r)^t: with no
    spread a region adds dispersion, not return. Draws: one ``standard_normal`` of shape
    (n_paths, n_months, R), also when vol is 0, so switching a volatility on or off does not shift later
    streams.
    """
    spread = np.zeros(n_regions) if spread is None else np.asarray(spread, dtype=float)
    shocks = rng.standard_normal((n_paths, n_months, n_regions))
    return _log_walk(np.log1p(spread) - 0.5 * vol**2, np.float64(vol), shocks)


def series_log_index(
    zone_log: np.ndarray, region_log: np.ndarray, series_zone: np.ndarray, series_region: np.ndarray
) -> np.ndarray:
    """Log index of each (zone, region) series, shape (n_paths, S, n_months + 1).

    Months are the last, contiguous axis because the hazard code accumulates along it.
    """
    return _series(np.ascontiguousarray(zone_log), np.ascontiguousarray(region_log),
                   np.asarray(series_zone, dtype=np.int64), np.asarray(series_region, dtype=np.int64))


@njit(cache=True, nogil=True)
def _series(zone_log, region_log, series_zone, series_region):
    n_paths, n_points, _ = zone_log.shape
    out = np.empty((n_paths, series_zone.size, n_points))
    for p in range(n_paths):
        for s in range(series_zone.size):
            z, r = series_zone[s], series_region[s]
            for m in range(n_points):
                out[p, s, m] = zone_log[p, m, z] + region_log[p, m, r]
    return out


def property_log_noise(shocks: np.ndarray, years_held: np.ndarray, vol: float) -> np.ndarray:
    """Log of each property's own price factor after ``years_held``: N(−σ²τ/2, σ²τ), shape (K,).

    ``shocks`` are standard normals, one per property (the engine draws them loan-major so every
    loan keeps its own stream). The idiosyncratic component is a mean-preserving random walk started
    at origination. A property is valued only once, at its exit or default date, and the walks of
    different properties are independent, so drawing the walk's value at that one time from its
    marginal law is exact in distribution: no intermediate step is ever observed that the path would
    have to agree with.
    """
    years_held = np.asarray(years_held, dtype=float)
    if np.any(years_held < 0.0):
        raise ValueError("years_held must be non-negative")
    return -0.5 * vol**2 * years_held + vol * np.sqrt(years_held) * shocks


def _log_walk(log_drift: np.ndarray, vol: np.ndarray, shocks: np.ndarray) -> np.ndarray:
    """``m·dt·μ + σ·√dt·Σ_{j≤m} shocks_j`` with a leading 0 at month 0, shape (P, M + 1, width).

    The drift is a product, not a running sum, so a zero-volatility path is exact to rounding.
    """
    n_paths, n_months, width = shocks.shape
    cumulative_shocks = np.zeros((n_paths, n_months + 1, width))
    np.cumsum(shocks, axis=1, out=cumulative_shocks[:, 1:])
    years = np.arange(n_months + 1)[:, None] * DT
    return years * log_drift + np.sqrt(DT) * vol * cumulative_shocks
