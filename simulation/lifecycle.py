"""Loan lifecycles on a chunk of paths: market, competing hazards, exits, recoveries, recycling.

Loans are held as flat arrays, one entry per (loan slot, path). Generation 0 is the initial book;
generation g+1 holds the loans bought with the principal recycled from generation g during the
reinvestment period. Each slot keeps its own random streams, so paths never share numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from . import hazards, loans, market
from .book import LoanBook, truncated_normal_ppf
from .config import SimulationConfig, ZONES
from .streams import Purpose, draw_loans, draw_paths

MONTHS_PER_YEAR = 12


@dataclass(frozen=True)
class ModelParams:
    """Config values resolved for the simulation (deterministic mode applied, hazards calibrated)."""

    config: SimulationConfig
    months: int
    n_regions: int
    drift: np.ndarray
    vol: np.ndarray
    region_vol: float
    region_spread: np.ndarray
    property_vol: float
    default_hazard: np.ndarray
    default_weight: np.ndarray  # (series, months + 1): expected drawdown weight, the PD normaliser
    exit_hazard: np.ndarray
    recovery_haircut: np.ndarray
    min_hold_months: int
    fixed_hold_months: int | None  # deterministic mode: every voluntary exit after this many months

    @classmethod
    def from_config(cls, config: SimulationConfig) -> ModelParams:
        mkt = config.market
        zones = mkt.zones()
        deterministic = config.monte_carlo.deterministic
        drift = np.array([z.drift for z in zones])
        zero = np.zeros(len(ZONES))
        vol = zero if deterministic else np.array([z.vol for z in zones])
        region_vol = 0.0 if deterministic else mkt.region_vol
        exit_hazard = np.array([np.nan if z.exit_hazard is None else z.exit_hazard for z in zones])
        if np.isnan(exit_hazard).any():
            calibrated = hazards.calibrate_exit_hazard(
                drift, mkt.exit_appreciation_sensitivity, mkt.avg_exit_year, mkt.min_hold_years,
                config.loans.term_months, variance=vol**2 + region_vol**2)
            exit_hazard = np.where(np.isnan(exit_hazard), calibrated, exit_hazard)
        region_spread = np.array([r.drift_spread for r in config.book.regions])
        return cls(
            config=config,
            months=config.term_months,
            n_regions=len(region_spread),
            drift=drift,
            vol=vol,
            region_vol=region_vol,
            region_spread=region_spread,
            property_vol=0.0 if deterministic else mkt.property_vol,
            default_hazard=zero if deterministic else np.array([z.default_hazard for z in zones]),
            default_weight=_default_weights(drift, vol, region_spread, region_vol, config.term_months,
                                            mkt.default_drawdown_sensitivity),
            exit_hazard=exit_hazard,
            recovery_haircut=np.array([z.recovery_haircut for z in zones]),
            min_hold_months=int(round(mkt.min_hold_years * MONTHS_PER_YEAR)),
            fixed_hold_months=int(round(mkt.avg_exit_year * MONTHS_PER_YEAR)) if deterministic else None,
        )

    def series(self, zone: np.ndarray, region: np.ndarray) -> np.ndarray:
        return zone * self.n_regions + region


def _default_weights(drift: np.ndarray, vol: np.ndarray, spread: np.ndarray, region_vol: float, months: int,
                     beta_d: float) -> np.ndarray:
    """Expected drawdown weight of every (zone, region) series by month, shape (series, months + 1)."""
    rows = []
    for g, sigma in zip(drift, vol):
        for r in spread:
            variance = sigma**2 + region_vol**2
            monthly_drift = (np.log1p(g) + np.log1p(r) - variance / 2) / MONTHS_PER_YEAR
            rows.append(_expected_weight(float(monthly_drift), float(np.sqrt(variance / MONTHS_PER_YEAR)),
                                         months, beta_d))
    return np.stack(rows)


@functools.lru_cache(maxsize=256)
def _expected_weight(monthly_drift: float, monthly_sd: float, months: int, beta_d: float) -> np.ndarray:
    return hazards.expected_drawdown_weight(monthly_drift, monthly_sd, months, beta_d)


@dataclass(frozen=True)
class ChunkMarket:
    series_log: np.ndarray  # (paths, zones * regions, months + 1) log price index per (zone, region)
    cum_exit: np.ndarray
    cum_default: np.ndarray


def simulate_market(params: ModelParams, first_path: int, n_paths: int) -> ChunkMarket:
    seed, m = params.config.monte_carlo.seed, params.months
    corr = params.config.market.correlation.matrix()
    zone_log = draw_paths(seed, Purpose.MARKET, (0,), first_path, n_paths, lambda rng, b: market.zone_log_indices(
        rng, b, m, params.drift, params.vol, corr))
    region_log = draw_paths(seed, Purpose.MARKET, (1,), first_path, n_paths, lambda rng, b: market.region_log_walks(
        rng, b, m, params.n_regions, params.region_vol, params.region_spread))
    zones, regions = np.divmod(np.arange(len(ZONES) * params.n_regions), params.n_regions)
    series_log = market.series_log_index(zone_log, region_log, zones, regions)
    mkt = params.config.market
    return ChunkMarket(
        series_log=series_log,
        cum_exit=hazards.cumulative_exit_intensity(series_log, mkt.exit_appreciation_sensitivity),
        cum_default=hazards.cumulative_default_intensity(series_log, mkt.default_drawdown_sensitivity,
                                                         params.default_weight),
    )


@dataclass(frozen=True)
class Loans:
    """One generation of loans on a chunk: flat arrays, one entry per (slot, path)."""

    slot: np.ndarray
    path: np.ndarray
    zone: np.ndarray
    region: np.ndarray
    origination: np.ndarray
    amount: np.ndarray
    value0: np.ndarray
    rate: np.ndarray
    share: np.ndarray  # NaN: the configured share method applies
    planned_exit: np.ndarray  # -1: left to the hazard model

    def take(self, index: np.ndarray) -> Loans:
        return Loans(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass(frozen=True)
class Outcomes:
    """How each loan of a generation ends."""

    loans: Loans
    generation: int
    event_month: np.ndarray  # principal leaves the book (exit, maturity, fund end or default)
    cash_month: np.ndarray  # proceeds or recovery arrive
    cash: np.ndarray
    defaulted: np.ndarray
    forced: np.ndarray  # liquidated at fund end


def initial_loans(book: LoanBook, n_paths: int) -> Loans:
    """The book repeated on every path, path-major (entry = path * loans + slot): hazard look-ups
    then walk each path's market rows in order."""
    n = len(book)
    slot = np.tile(np.arange(n), n_paths)
    return Loans(
        slot=slot, path=np.repeat(np.arange(n_paths), n),
        zone=book.zone[slot], region=book.region[slot], origination=book.origination_month[slot],
        amount=book.amount[slot], value0=book.value0[slot], rate=book.rate[slot], share=book.share[slot],
        planned_exit=book.planned_exit_month[slot],
    )


Sampler = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
EXPONENTIAL: Sampler = np.random.Generator.standard_exponential
NORMAL: Sampler = np.random.Generator.standard_normal
UNIFORM: Sampler = np.random.Generator.random


def _slot_draws(params: ModelParams, purpose: Purpose, keys: tuple[int, ...], first_path: int, n_paths: int,
                n_slots: int, loans_: Loans, sampler: Sampler) -> np.ndarray:
    """One draw per loan from the (slot, path) stream of ``purpose``, whatever the loans' order."""
    full = draw_loans(params.config.monte_carlo.seed, purpose, keys, first_path, n_paths, n_slots, sampler)
    return full.reshape(-1)[loans_.slot * n_paths + loans_.path]


def resolve(params: ModelParams, mkt: ChunkMarket, loans_: Loans, generation: int,
            first_path: int, n_paths: int, n_slots: int) -> Outcomes:
    cfg, m_end = params.config, params.months
    s = params.series(loans_.zone, loans_.region)
    o, p = loans_.origination, loans_.path
    log_at_origination = mkt.series_log[p, s, o]

    def draws(purpose: Purpose, sampler: Sampler) -> np.ndarray:
        return _slot_draws(params, purpose, (generation,), first_path, n_paths, n_slots, loans_, sampler)

    if params.fixed_hold_months is not None:
        exit_month = o + params.fixed_hold_months
    else:
        threshold = hazards.exit_thresholds(draws(Purpose.EXIT, EXPONENTIAL), log_at_origination,
                                            cfg.market.exit_appreciation_sensitivity, params.exit_hazard[loans_.zone])
        exit_month = hazards.first_passage(mkt.cum_exit, p, s, o + params.min_hold_months, threshold)
    exit_month = np.where(loans_.planned_exit >= 0, loans_.planned_exit, exit_month)
    default_threshold = hazards.default_thresholds(draws(Purpose.DEFAULT, EXPONENTIAL),
                                                   params.default_hazard[loans_.zone])
    default_month = hazards.first_passage(mkt.cum_default, p, s, o, default_threshold)
    maturity = o + cfg.loans.term_months
    event = np.minimum.reduce([exit_month, default_month, maturity, np.full_like(o, m_end)])
    defaulted = default_month <= event
    forced = ~defaulted & (event == m_end) & (exit_month > m_end) & (maturity > m_end)

    years = (event - o) / MONTHS_PER_YEAR
    idiosyncratic = market.property_log_noise(draws(Purpose.PROPERTY, NORMAL), years, params.property_vol)
    value = loans_.value0 * np.exp(mkt.series_log[p, s, event] - log_at_origination + idiosyncratic)
    senior = cfg.loans.senior_ltv * loans_.value0
    share = share_for(params, loans_.amount, loans_.value0, loans_.share, value)
    proceeds = loans.exit_proceeds(loans_.amount, loans_.value0, value, years, loans_.rate, share,
                                   cfg.loans.share_depreciation, senior, cfg.loans.sale_cost)
    proceeds = np.where(forced, proceeds * (1.0 - cfg.fund.fund_end_haircut), proceeds)
    recovery = loans.default_recovery(
        loans_.amount, years, loans_.rate, value, cfg.market.foreclosure_cost, senior,
        params.recovery_haircut[loans_.zone])
    cash_month = np.where(defaulted, np.minimum(event + cfg.market.foreclosure_months, m_end), event)
    return Outcomes(loans=loans_, generation=generation, event_month=event, cash_month=cash_month,
                    cash=np.where(defaulted, recovery, proceeds), defaulted=defaulted, forced=forced)


def share_for(params: ModelParams, amount: np.ndarray, value0: np.ndarray, override: np.ndarray,
              value: np.ndarray) -> np.ndarray:
    """Appreciation share at property value ``value``: the loan's own share, else the configured method."""
    terms = params.config.loans
    method_share = loans.appreciation_share(
        terms.appreciation_share_method.value, amount / value0, value / value0 - 1.0,
        terms.appreciation_share_rate, np.asarray(terms.tiered.thresholds), np.asarray(terms.tiered.shares))
    return np.where(np.isnan(override), method_share, override)


def zone_exposure(outcomes: list[Outcomes], n_paths: int, months: int) -> np.ndarray:
    """Outstanding principal by zone, ``(paths, months + 1, zones)``."""
    flow = np.zeros(n_paths * (months + 1) * len(ZONES))
    for out in outcomes:
        ln = out.loans
        base = ln.path * (months + 1)
        flow += np.bincount((base + ln.origination) * len(ZONES) + ln.zone, ln.amount, flow.size)
        flow -= np.bincount((base + out.event_month) * len(ZONES) + ln.zone, ln.amount, flow.size)
    return np.cumsum(flow.reshape(n_paths, months + 1, len(ZONES)), axis=1)


def reinvestments(params: ModelParams, previous: list[Outcomes], first_path: int, n_paths: int,
                  n_slots: int) -> Loans | None:
    """Loans bought with the principal recycled from the latest generation, or None."""
    cfg, fund = params.config, params.config.fund
    last = previous[-1]
    window_end = fund.reinvestment_period_years * MONTHS_PER_YEAR
    latest_start = params.months - fund.min_remaining_term_to_reinvest_years * MONTHS_PER_YEAR
    c = last.cash_month
    principal = last.loans.amount
    amount = (fund.recycle_principal_fraction * np.minimum(last.cash, principal)
              + fund.recycle_gain_fraction * np.maximum(0.0, last.cash - principal))
    eligible = (c <= window_end) & (c <= latest_start) & (c < params.months) & (amount > 0.0)
    if not eligible.any():
        return None
    idx = np.flatnonzero(eligible)
    parent = last.loans.take(idx)
    keys = (last.generation + 1,)

    def uniforms(kind: int) -> np.ndarray:
        return _slot_draws(params, Purpose.REINVEST, (*keys, kind), first_path, n_paths, n_slots, parent, UNIFORM)

    zone = _rebalanced_zones(params, previous, parent.path, c[idx], uniforms(0), n_paths)
    region_weights = np.array([r.weight for r in cfg.book.regions])
    region = np.searchsorted(np.cumsum(region_weights) / region_weights.sum(), uniforms(1), side="right")
    gen = cfg.book.generated
    ltv = truncated_normal_ppf(uniforms(2), gen.ltv_mean, gen.ltv_sd, gen.min_ltv, gen.max_ltv)
    new_amount = amount[idx]
    return Loans(
        slot=parent.slot, path=parent.path, zone=zone, region=np.minimum(region, len(region_weights) - 1),
        origination=c[idx], amount=new_amount, value0=new_amount / ltv,
        rate=np.full(len(idx), cfg.loans.interest_rate), share=np.full(len(idx), np.nan),
        planned_exit=np.full(len(idx), -1, dtype=np.int64),
    )


def _rebalanced_zones(params: ModelParams, previous: list[Outcomes], path: np.ndarray, month: np.ndarray,
                      u: np.ndarray, n_paths: int) -> np.ndarray:
    """Zone draws from ``(1-k)·target + k·normalised positive gaps`` (domain §1.8)."""
    target = params.config.book.generated.zone_allocation.as_array()
    k = params.config.fund.rebalancing_strength
    exposure = zone_exposure(previous, n_paths, params.months)[path, month]
    total = exposure.sum(axis=1, keepdims=True)
    share = np.divide(exposure, total, out=np.tile(target, (len(path), 1)), where=total > 0)
    gap = np.maximum(0.0, target - share)
    gap_sum = gap.sum(axis=1, keepdims=True)
    gap_weights = np.divide(gap, gap_sum, out=np.tile(target, (len(path), 1)), where=gap_sum > 0)
    weights = (1.0 - k) * target + k * gap_weights
    cumulative = np.cumsum(weights, axis=1)
    return np.minimum((u[:, None] > cumulative[:, :-1]).sum(axis=1), len(ZONES) - 1)


def run_lifecycles(params: ModelParams, book: LoanBook, first_path: int, n_paths: int) -> tuple[ChunkMarket, list[Outcomes]]:
    mkt = simulate_market(params, first_path, n_paths)
    loans_: Loans | None = initial_loans(book, n_paths)
    outcomes: list[Outcomes] = []
    while loans_ is not None and len(loans_.path):
        outcomes.append(resolve(params, mkt, loans_, len(outcomes), first_path, n_paths, len(book)))
        loans_ = reinvestments(params, outcomes, first_path, n_paths, len(book))
    return mkt, outcomes
