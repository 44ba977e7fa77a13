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
from numba import njit

from . import hazards, loans, market
from .book import LoanBook, truncated_normal_ppf
from .config import SimulationConfig, Stress, ZONES
from .streams import LoanDraws, Purpose, draw_paths

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
    zone_shocks: market.ZoneShocks | None  # the stressed zone market, None without price stress

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
        stress = config.stress
        return cls(
            config=config,
            months=config.term_months,
            n_regions=len(region_spread),
            drift=drift,
            vol=vol,
            region_vol=region_vol,
            region_spread=region_spread,
            property_vol=0.0 if deterministic else mkt.property_vol,
            default_hazard=(zero if deterministic else np.array([z.default_hazard for z in zones]))
            * stress.default_multiplier.as_array(),
            default_weight=_default_weights(drift, vol, region_spread, region_vol, config.term_months,
                                            mkt.default_drawdown_sensitivity),
            exit_hazard=exit_hazard * stress.exit_multiplier.as_array(),
            recovery_haircut=np.array([z.recovery_haircut for z in zones]) * (1.0 - stress.recovery_haircut),
            min_hold_months=int(round(mkt.min_hold_years * MONTHS_PER_YEAR)),
            fixed_hold_months=int(round(mkt.avg_exit_year * MONTHS_PER_YEAR)) if deterministic else None,
            zone_shocks=_zone_shocks(stress, drift, vol, config.term_months),
        )

    def series(self, zone: np.ndarray, region: np.ndarray) -> np.ndarray:
        return zone * self.n_regions + region

    @functools.cached_property
    def economics(self) -> tuple:
        """The loan terms as the kernels take them: share method code, fixed share, tier thresholds and
        shares, share_depreciation, senior_ltv, sale_cost."""
        terms = self.config.loans
        return (loans.SHARE_METHODS.index(terms.appreciation_share_method.value), terms.appreciation_share_rate,
                np.asarray(terms.tiered.thresholds, dtype=float), np.asarray(terms.tiered.shares, dtype=float),
                terms.share_depreciation, terms.senior_ltv, terms.sale_cost)


def _zone_shocks(stress: Stress, drift: np.ndarray, vol: np.ndarray, months: int) -> market.ZoneShocks | None:
    """The stressed zone market month by month, or None when the stress leaves prices alone."""
    window = (np.arange(months) >= stress.window_start_month) & (np.arange(months) < stress.window_end_month)
    price_stress = (stress.price_shock.as_array() != 0.0).any() or window.any() and (
        (stress.drift_shift.as_array() != 0.0).any() or (stress.vol_multiplier.as_array() != 1.0).any())
    if not price_stress:
        return None
    inside = window[:, np.newaxis]
    jump_from = np.arange(months + 1)[:, np.newaxis] >= stress.price_shock_month
    return market.ZoneShocks(
        drift=np.where(inside, drift + stress.drift_shift.as_array(), drift),
        vol=np.where(inside, vol * stress.vol_multiplier.as_array(), vol),
        log_jump=np.where(jump_from, np.log1p(stress.price_shock.as_array()), 0.0))


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


@functools.lru_cache(maxsize=16)
def params_for(config: SimulationConfig) -> ModelParams:
    """``ModelParams.from_config``, cached: every chunk of a run (and every run of a config) shares it."""
    return ModelParams.from_config(config)


@functools.lru_cache(maxsize=256)
def _expected_weight(monthly_drift: float, monthly_sd: float, months: int, beta_d: float) -> np.ndarray:
    return hazards.expected_drawdown_weight(monthly_drift, monthly_sd, months, beta_d)


@dataclass(frozen=True)
class ChunkMarket:
    series_log: np.ndarray  # (paths, zones * regions, months + 1) log price index per (zone, region)
    cum_exit: np.ndarray
    cum_default: np.ndarray

    @functools.cached_property
    def index(self) -> np.ndarray:
        """The price index itself, ``exp(series_log)``, for valuing properties without an exp per loan."""
        return np.exp(self.series_log)


def simulate_market(params: ModelParams, first_path: int, n_paths: int) -> ChunkMarket:
    seed, m = params.config.monte_carlo.seed, params.months
    corr = params.config.market.correlation.matrix()
    zone_log = draw_paths(seed, Purpose.MARKET, (0,), first_path, n_paths, lambda rng, b: market.zone_log_indices(
        rng, b, m, params.drift, params.vol, corr, params.zone_shocks))
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


Sampler = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
EXPONENTIAL: Sampler = np.random.Generator.standard_exponential
NORMAL: Sampler = np.random.Generator.standard_normal
UNIFORM: Sampler = np.random.Generator.random


def resolve(params: ModelParams, mkt: ChunkMarket, loans_: Loans, generation: int,
            first_path: int, n_paths: int, n_slots: int) -> Outcomes:
    """How each loan of a generation ends: competing hazards on the chunk's market, then the cash."""
    cfg = params.config

    plan = LoanDraws(first_path, n_paths, n_slots, loans_.slot, loans_.path)

    def draws(purpose: Purpose, sampler: Sampler) -> np.ndarray:
        return plan.draw(cfg.monte_carlo.seed, purpose, (generation,), sampler)

    fixed_hold = params.fixed_hold_months
    exit_draw = draws(Purpose.EXIT, EXPONENTIAL) if fixed_hold is None else np.zeros(len(loans_.path))
    default_draw = draws(Purpose.DEFAULT, EXPONENTIAL)
    property_draw = draws(Purpose.PROPERTY, NORMAL)
    event, cash_month, cash, defaulted, forced = _resolve_loans(
        mkt.series_log, mkt.index, mkt.cum_exit, mkt.cum_default, loans_.path, params.series(loans_.zone, loans_.region),
        loans_.zone, loans_.origination, loans_.amount, loans_.value0, loans_.rate, loans_.share,
        loans_.planned_exit, exit_draw, default_draw, property_draw,
        -1 if fixed_hold is None else fixed_hold, params.min_hold_months, cfg.market.exit_appreciation_sensitivity,
        params.exit_hazard, params.default_hazard, params.property_vol, cfg.loans.term_months, params.months,
        cfg.fund.fund_end_haircut, cfg.market.foreclosure_cost, cfg.market.foreclosure_months,
        params.recovery_haircut, *params.economics)
    return Outcomes(loans=loans_, generation=generation, event_month=event, cash_month=cash_month,
                    cash=cash, defaulted=defaulted, forced=forced)


@njit(cache=True, nogil=True)
def _resolve_loans(series_log, index, cum_exit, cum_default, path, series, zone, origination, amount, value0, rate,
                   share_override, planned_exit, exit_draw, default_draw, property_draw, fixed_hold, min_hold,
                   beta_a, exit_hazard, default_hazard, property_vol, term_months, m_end, fund_end_haircut,
                   foreclosure_cost, foreclosure_months, recovery_haircut, share_method, fixed_share,
                   tier_thresholds, tier_shares, share_depreciation, senior_ltv, sale_cost):
    """Per loan: the first of voluntary exit, default, maturity and fund end, and the cash it brings.

    Exit: first passage of ``E_exit·I(o)^β_a / λ0_z`` on the series' cumulative exit intensity from the end of
    the minimum hold (or ``o + fixed_hold`` in deterministic mode; a planned exit replaces either). Default:
    first passage of ``E_def / PD_z`` from origination (never with a zero PD). A default wins a tie. Sale
    value: the series index move times the property's own log-normal factor; a default recovers from the
    collateral after the foreclosure delay (cut at fund end); a loan liquidated at fund end takes the
    fund-end haircut.
    """
    n = path.size
    event, cash_month = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    cash = np.empty(n)
    defaulted, forced = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.bool_)
    for k in range(n):
        p, s, z, o = path[k], series[k], zone[k], origination[k]
        log_origination = series_log[p, s, o]
        if planned_exit[k] >= 0:
            exit_month = planned_exit[k]
        elif fixed_hold >= 0:
            exit_month = o + fixed_hold
        else:
            weight = np.exp(min(max(beta_a * log_origination, -hazards.MAX_LOG_WEIGHT), hazards.MAX_LOG_WEIGHT))
            exit_month = hazards.first_passage_month(cum_exit[p, s], o + min_hold,
                                                     exit_draw[k] * weight / exit_hazard[z])
        default_threshold = default_draw[k] / default_hazard[z] if default_hazard[z] > 0.0 else np.inf
        default_month = hazards.first_passage_month(cum_default[p, s], o, default_threshold)
        maturity = o + term_months
        end = min(exit_month, default_month, maturity, m_end)
        is_default = default_month <= end
        years = (end - o) / MONTHS_PER_YEAR
        noise = -0.5 * property_vol**2 * years + property_vol * np.sqrt(years) * property_draw[k]
        value = value0[k] * index[p, s, end] / index[p, s, o] * np.exp(noise)
        senior = senior_ltv * value0[k]
        event[k], defaulted[k] = end, is_default
        forced[k] = not is_default and end == m_end and exit_month > m_end and maturity > m_end
        if is_default:
            cash_month[k] = min(end + foreclosure_months, m_end)
            cash[k] = loans.recovery_at(amount[k], years, rate[k], value, foreclosure_cost, senior,
                                        recovery_haircut[z])
        else:
            share = share_override[k]
            if np.isnan(share):
                share = loans.share_at(share_method, amount[k] / value0[k], value / value0[k] - 1.0, fixed_share,
                                       tier_thresholds, tier_shares)
            proceeds = loans.proceeds_at(amount[k], value0[k], value, years, rate[k], share, share_depreciation,
                                         senior, sale_cost)
            cash_month[k] = end
            cash[k] = proceeds * (1.0 - fund_end_haircut) if forced[k] else proceeds
    return event, cash_month, cash, defaulted, forced


def add_exposure(flow: np.ndarray, out: Outcomes) -> None:
    """Add a generation's principal to the monthly change of outstanding principal by zone,
    ``flow`` (paths, months + 1, zones): +L at origination, −L when the loan leaves the book."""
    _add_exposure(flow, out.loans.path, out.loans.zone, out.loans.origination, out.event_month, out.loans.amount)


@njit(cache=True, nogil=True)
def _add_exposure(flow, path, zone, origination, event_month, amount):
    for k in range(path.size):
        flow[path[k], origination[k], zone[k]] += amount[k]
        flow[path[k], event_month[k], zone[k]] -= amount[k]


def reinvestments(params: ModelParams, last: Outcomes, exposure: np.ndarray, first_path: int, n_paths: int,
                  n_slots: int) -> Loans | None:
    """Loans bought with the principal recycled from the latest generation, or None. ``exposure`` is the
    outstanding principal by zone of every generation so far, ``(paths, months + 1, zones)``."""
    cfg, fund = params.config, params.config.fund
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

    plan = LoanDraws(first_path, n_paths, n_slots, parent.slot, parent.path)

    def uniforms(kind: int) -> np.ndarray:
        return plan.draw(cfg.monte_carlo.seed, Purpose.REINVEST, (*keys, kind), UNIFORM)

    zone = _rebalanced_zones(params, exposure[parent.path, c[idx]], uniforms(0))
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


def _rebalanced_zones(params: ModelParams, exposure: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Zone draws from ``(1-k)·target + k·normalised positive gaps`` (domain §1.8), given each new loan's
    path's outstanding principal by zone ``(loans, zones)`` when it is funded."""
    return _pick_zones(params.config.book.generated.zone_allocation.as_array(),
                       params.config.fund.rebalancing_strength, exposure, u)


@njit(cache=True, nogil=True)
def _pick_zones(target, k, exposure, u):
    """For each loan: the zone shares of its path's book (the target where the book is empty), the positive
    gaps to target normalised (the target where there is no gap), the blend, and the zone whose
    cumulative weight ``u`` falls in."""
    n_zones = target.size
    zones = np.empty(u.size, dtype=np.int64)
    weights = np.empty(n_zones)
    for i in range(u.size):
        total = exposure[i].sum()
        gap_sum = 0.0
        for z in range(n_zones):
            share = exposure[i, z] / total if total > 0.0 else target[z]
            weights[z] = max(0.0, target[z] - share)
            gap_sum += weights[z]
        cumulative, zones[i] = 0.0, n_zones - 1
        for z in range(n_zones - 1):
            gap_weight = weights[z] / gap_sum if gap_sum > 0.0 else target[z]
            cumulative += (1.0 - k) * target[z] + k * gap_weight
            if u[i] <= cumulative:
                zones[i] = z
                break
    return zones


def run_lifecycles(params: ModelParams, book: LoanBook, first_path: int, n_paths: int) -> tuple[ChunkMarket, list[Outcomes]]:
    mkt = simulate_market(params, first_path, n_paths)
    loans_: Loans | None = initial_loans(book, n_paths)
    outcomes: list[Outcomes] = []
    exposure_change = np.zeros((n_paths, params.months + 1, len(ZONES)))
    while loans_ is not None and len(loans_.path):
        outcomes.append(resolve(params, mkt, loans_, len(outcomes), first_path, n_paths, len(book)))
        add_exposure(exposure_change, outcomes[-1])
        loans_ = reinvestments(params, outcomes[-1], np.cumsum(exposure_change, axis=1), first_path, n_paths,
                               len(book))
    return mkt, outcomes
