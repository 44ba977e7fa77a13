"""Per-path results of the fund with and without the candidate loan: the exact and the fast path.

Exact path: the whole pipeline re-run on the book with the loan appended (``candidate.with_candidate``), on
any chunk executor. Fast path: a cached ``Base`` keeps, chunk by chunk, the market paths, every base loan's
outcome, the base loan flows and exposure, and the new slot's own random numbers; a candidate then costs only
its own lifecycle on the cached market, its flows added to the base flows, and the ledger, waterfall and
metrics again.

The loan and its recycled follow-on loans use the very numbers the exact path gives its slot, so the two paths
agree to rounding unless recycled loans re-balance (``fund.rebalancing_strength > 0``): then the exact path
re-chooses the zones of the base's own recycled loans around the new loan's exposure, which the fast path
leaves as they were (``Base.rebalances``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .. import engine, ledger, lifecycle, pathmetrics
from ..book import LoanBook, truncated_normal_ppf
from ..config import ZONES, SimulationConfig, WaterfallStructure
from ..executors import CancelCheck, ChunkExecutor, RunTask, check, executor_for
from ..streams import BLOCK_PATHS, Purpose, block_ranges, draw_loans, generator
from .candidate import CandidateLoan, with_candidate

CREDIT_SCALARS = ("wal_years", "default_rate", "loss_rate", "loans_funded")  # pathmetrics._credit's tallies
LOAN_DRAWS = (
    (Purpose.EXIT, lifecycle.EXPONENTIAL),
    (Purpose.DEFAULT, lifecycle.EXPONENTIAL),
    (Purpose.PROPERTY, lifecycle.NORMAL),
)


def simulate(
    config: SimulationConfig,
    book: LoanBook,
    executor: ChunkExecutor | None = None,
    cancelled: CancelCheck | None = None,
) -> pathmetrics.PathResults:
    """Per-path results of ``book`` under ``config`` (the exact path): what ``engine.run`` aggregates."""
    executor = executor if executor is not None else executor_for(config)
    plan = engine.chunks(config, executor.parallelism)
    parts = dict(executor.run(RunTask(config, book), plan, cancelled))
    return pathmetrics.PathResults.concatenate([parts[i] for i in range(len(plan))])


@dataclass(frozen=True)
class BaseChunk:
    seed: int
    first_path: int
    n_paths: int
    market: lifecycle.ChunkMarket
    outcomes: list[lifecycle.Outcomes]
    flows: ledger.LoanFlows
    # (paths, months + 1, zones) per generation g: outstanding principal by zone of generations 0..g, what
    # the exact path's recycling sees when it funds generation g + 1
    exposure_through: tuple[np.ndarray, ...]
    new_slot_draws: dict[Purpose, np.ndarray]  # (paths,): the appended slot's generation-0 numbers
    # (purpose, stream keys) of a recycled generation -> (blocks, BLOCK_PATHS): in each path block, the numbers
    # after those the block's base loans take, which the new slot's loans take in path order (exact path)
    new_slot_numbers: dict[tuple[Purpose, tuple[int, ...]], np.ndarray]


@dataclass(frozen=True)
class Base:
    """The base fund, kept for fast candidates: its per-path results and each chunk's intermediates."""

    config: SimulationConfig
    book: LoanBook
    results: pathmetrics.PathResults
    chunks: tuple[BaseChunk, ...]
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)  # figures of the base alone

    @property
    def paths(self) -> int:
        return len(self.results.scalars["lp_net_irr"])

    @property
    def rebalances(self) -> bool:
        """True when recycled loans choose their zones around the book, so a new loan changes the base's own
        recycled loans: the fund is then non-linear in its loans and the fast path only approximate."""
        fund = self.config.fund
        recycles = fund.recycle_principal_fraction > 0 or fund.recycle_gain_fraction > 0
        return fund.reinvestment_period_years > 0 and recycles and fund.rebalancing_strength > 0


def build_base(
    config: SimulationConfig, book: LoanBook | None = None, cancelled: CancelCheck | None = None
) -> Base:
    """Simulate the base in this process, chunk by chunk, keeping what the fast path needs."""
    book = book if book is not None else engine.book_for(config)
    params = lifecycle.params_for(config)
    chunks, parts = [], []
    for first, n in engine.chunk_plan(engine.path_count(config), config.monte_carlo.chunk_paths, 1):
        check(cancelled)
        mkt, outcomes = lifecycle.run_lifecycles(params, book, first, n)
        flows = ledger.loan_flows(params, mkt, outcomes, n, ledger.mark_months_for(params))
        cost = ledger.costs(params, flows)
        parts.append(
            pathmetrics.compute(params, outcomes, flows, cost, ledger.run_ledger(params, flows, cost))
        )
        draws = {
            purpose: draw_loans(config.monte_carlo.seed, purpose, (0,), first, n, len(book) + 1, sampler)[-1]
            for purpose, sampler in LOAN_DRAWS
        }
        chunks.append(
            BaseChunk(
                config.monte_carlo.seed,
                first,
                n,
                mkt,
                outcomes,
                flows,
                _exposure_through(params, outcomes, n),
                draws,
                _recycled_numbers(config.monte_carlo.seed, first, n, outcomes),
            )
        )
    return Base(config, book, pathmetrics.PathResults.concatenate(parts), tuple(chunks))


def _exposure_through(
    params: lifecycle.ModelParams, outcomes: list[lifecycle.Outcomes], n_paths: int
) -> tuple[np.ndarray, ...]:
    change = np.zeros((n_paths, params.months + 1, len(ZONES)))
    through = []
    for out in outcomes:
        lifecycle.add_exposure(change, out)
        through.append(np.cumsum(change, axis=1))
    return tuple(through)


RECYCLED_STREAMS = (
    *((purpose, sampler, ()) for purpose, sampler in LOAN_DRAWS),
    *((Purpose.REINVEST, lifecycle.UNIFORM, (kind,)) for kind in range(3)),  # zone, region, LTV
)


def _recycled_numbers(
    seed: int, first_path: int, n_paths: int, outcomes: list[lifecycle.Outcomes]
) -> dict[tuple[Purpose, tuple[int, ...]], np.ndarray]:
    """For every recycled generation the base has, and the one after its last: the numbers each path block
    would hand the new slot's loans, after the ``b`` numbers its base loans of that generation take."""
    blocks = block_ranges(first_path, n_paths)
    table = {}
    for generation in range(1, len(outcomes) + 1):
        path = outcomes[generation].loans.path if generation < len(outcomes) else np.zeros(0, dtype=np.int64)
        before = np.bincount(
            (first_path + path) // BLOCK_PATHS - first_path // BLOCK_PATHS, minlength=len(blocks)
        )
        for purpose, sampler, kind in RECYCLED_STREAMS:
            keys = (generation, *kind)
            numbers = np.empty((len(blocks), BLOCK_PATHS))
            for i, (block, size) in enumerate(blocks):
                numbers[i, :size] = sampler(generator(seed, purpose, *keys, block), (int(before[i]) + size,))[
                    before[i] :
                ]
            table[(purpose, keys)] = numbers
    return table


@dataclass(frozen=True)
class LoanPaths:
    """The candidate's own first lifecycle on every path (identical on the fast and the exact path)."""

    amount: float
    origination_month: int
    defaulted: np.ndarray  # (paths,) bool
    cash: np.ndarray  # proceeds or recovery
    cash_month: np.ndarray
    loss: np.ndarray  # credit loss: exposure at default (principal + accrued interest) less the recovery

    @property
    def irr(self) -> np.ndarray:
        """Per-path annual IRR of the single outlay and single receipt; NaN when both fall in one month."""
        years = (self.cash_month - self.origination_month) / lifecycle.MONTHS_PER_YEAR
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                years > 0, (self.cash / self.amount) ** (1.0 / np.where(years > 0, years, 1.0)) - 1.0, np.nan
            )


def fast_path(base: Base, loan: CandidateLoan) -> tuple[pathmetrics.PathResults, LoanPaths]:
    """Per-path results of the base plus ``loan``, re-running only the loan, the ledger and the metrics."""
    config = base.config
    params = lifecycle.params_for(config)
    # ``compute`` walks the loans' outcomes only for the credit tallies and the American waterfall's deals; the
    # impact reads no credit tally, so under the European waterfall the base loans are not walked again
    european = config.waterfall.structure is WaterfallStructure.EUROPEAN
    parts, firsts = [], []
    for chunk in base.chunks:
        n = chunk.n_paths
        first_loans = _on_every_path(config, loan, slot=len(base.book), n_paths=n)
        chain = [_resolve_new_slot(params, chunk, first_loans, 0)]
        while (follow_on := _follow_on(params, chunk, chain)) is not None:
            chain.append(_resolve_new_slot(params, chunk, follow_on, len(chain)))
        own = ledger.loan_flows(params, chunk.market, chain, n, chunk.flows.mark_months)
        flows = _added(chunk.flows, own)
        cost = ledger.costs(params, flows)
        outcomes = chain if european else chunk.outcomes + chain
        part = pathmetrics.compute(params, outcomes, flows, cost, ledger.run_ledger(params, flows, cost))
        parts.append(part if not european else _without_credit(part))
        firsts.append(chain[0])
    return pathmetrics.PathResults.concatenate(parts), _loan_paths(loan, firsts)


def _on_every_path(config: SimulationConfig, loan: CandidateLoan, slot: int, n_paths: int) -> lifecycle.Loans:
    """The loan in the appended ``slot`` on each of ``n_paths`` paths, as ``lifecycle.initial_loans`` lays out
    a book."""

    def column(value: float) -> np.ndarray:
        return np.full(n_paths, value)

    rate = config.loans.interest_rate if loan.interest_rate is None else loan.interest_rate
    return lifecycle.Loans(
        slot=column(slot),
        path=np.arange(n_paths),
        zone=column(loan.zone),
        region=column(loan.region),
        origination=column(loan.origination_month),
        amount=column(loan.amount),
        value0=column(loan.property_value),
        rate=column(rate),
        share=column(np.nan if loan.appreciation_share is None else loan.appreciation_share),
        planned_exit=column(-1),
    )


def _new_slot_numbers(
    chunk: BaseChunk, purpose: Purpose, keys: tuple[int, ...], path: np.ndarray, sampler: lifecycle.Sampler
) -> np.ndarray:
    """One number per new-slot loan (at most one per path) of a recycled generation ``keys[0]``, as the exact
    path hands them out: in each path block after the block's base loans, in path order."""
    blocks = block_ranges(chunk.first_path, chunk.n_paths)
    table = chunk.new_slot_numbers.get((purpose, keys))
    if table is None:  # deeper than any base generation: no base loan draws before the new slot
        table = np.zeros((len(blocks), BLOCK_PATHS))
        for i, (block, size) in enumerate(blocks):
            table[i, :size] = sampler(generator(chunk.seed, purpose, *keys, block), (size,))
    order = np.argsort(path, kind="stable")
    block_of = (chunk.first_path + path[order]) // BLOCK_PATHS - chunk.first_path // BLOCK_PATHS
    starts = np.searchsorted(block_of, np.arange(len(blocks)))
    values = np.empty(path.size)
    values[order] = table[block_of, np.arange(path.size) - starts[block_of]]
    return values


def _own_exposure(
    chain: list[lifecycle.Outcomes], n_paths: int, path: np.ndarray, month: np.ndarray
) -> np.ndarray:
    """Outstanding principal by zone of the new slot's loans at ``(path, month)`` pairs, ``(pairs, zones)``: a
    loan counts from its origination month up to, not including, the month it leaves the book."""
    out = np.zeros((path.size, len(ZONES)))
    for generation in chain:
        ln = generation.loans
        position = np.full(n_paths, -1)
        position[ln.path] = np.arange(ln.path.size)
        k = position[path]
        pair = np.flatnonzero(k >= 0)
        k = k[pair]
        on_book = (ln.origination[k] <= month[pair]) & (month[pair] < generation.event_month[k])
        np.add.at(out, (pair[on_book], ln.zone[k][on_book]), ln.amount[k][on_book])
    return out


def _follow_on(
    params: lifecycle.ModelParams, chunk: BaseChunk, chain: list[lifecycle.Outcomes]
) -> lifecycle.Loans | None:
    """``lifecycle.reinvestments`` for the new slot alone, with the numbers and the book the exact path gives
    it: the base's generations up to the latest one and the new slot's own."""
    last = chain[-1]
    cfg, fund = params.config, params.config.fund
    window_end = fund.reinvestment_period_years * lifecycle.MONTHS_PER_YEAR
    latest_start = params.months - fund.min_remaining_term_to_reinvest_years * lifecycle.MONTHS_PER_YEAR
    c, principal = last.cash_month, last.loans.amount
    amount = fund.recycle_principal_fraction * np.minimum(
        last.cash, principal
    ) + fund.recycle_gain_fraction * np.maximum(0.0, last.cash - principal)
    eligible = (c <= window_end) & (c <= latest_start) & (c < params.months) & (amount > 0.0)
    if not eligible.any():
        return None
    idx = np.flatnonzero(eligible)
    parent = last.loans.take(idx)

    def uniforms(kind: int) -> np.ndarray:
        return _new_slot_numbers(
            chunk, Purpose.REINVEST, (last.generation + 1, kind), parent.path, lifecycle.UNIFORM
        )

    base_exposure = chunk.exposure_through[min(last.generation, len(chunk.exposure_through) - 1)]
    exposure = base_exposure[parent.path, c[idx]] + _own_exposure(chain, chunk.n_paths, parent.path, c[idx])
    zone = lifecycle._rebalanced_zones(params, exposure, uniforms(0))
    region_weights = np.array([r.weight for r in cfg.book.regions])
    region = np.searchsorted(np.cumsum(region_weights) / region_weights.sum(), uniforms(1), side="right")
    gen = cfg.book.generated
    ltv = truncated_normal_ppf(uniforms(2), gen.ltv_mean, gen.ltv_sd, gen.min_ltv, gen.max_ltv)
    new_amount = amount[idx]
    return lifecycle.Loans(
        slot=parent.slot,
        path=parent.path,
        zone=zone,
        region=np.minimum(region, len(region_weights) - 1),
        origination=c[idx],
        amount=new_amount,
        value0=new_amount / ltv,
        rate=np.full(len(idx), cfg.loans.interest_rate),
        share=np.full(len(idx), np.nan),
        planned_exit=np.full(len(idx), -1, dtype=np.int64),
    )


def _resolve_new_slot(
    params: lifecycle.ModelParams, chunk: BaseChunk, loans_: lifecycle.Loans, generation: int
) -> lifecycle.Outcomes:
    """``lifecycle.resolve`` for the new slot's loans of one generation, with the exact path's numbers."""
    cfg, mkt = params.config, chunk.market
    if generation == 0:
        draws = chunk.new_slot_draws
    else:
        draws = {
            purpose: _new_slot_numbers(chunk, purpose, (generation,), loans_.path, sampler)
            for purpose, sampler in LOAN_DRAWS
        }
    fixed_hold = params.fixed_hold_months
    exit_draw = draws[Purpose.EXIT] if fixed_hold is None else np.zeros(len(loans_.path))
    event, cash_month, cash, defaulted, forced = lifecycle._resolve_loans(
        mkt.series_log,
        mkt.index,
        mkt.cum_exit,
        mkt.cum_default,
        loans_.path,
        params.series(loans_.zone, loans_.region),
        loans_.zone,
        loans_.origination,
        loans_.amount,
        loans_.value0,
        loans_.rate,
        loans_.share,
        loans_.planned_exit,
        exit_draw,
        draws[Purpose.DEFAULT],
        draws[Purpose.PROPERTY],
        -1 if fixed_hold is None else fixed_hold,
        params.min_hold_months,
        cfg.market.exit_appreciation_sensitivity,
        params.exit_hazard,
        params.default_hazard,
        params.property_vol,
        cfg.loans.term_months,
        params.months,
        cfg.fund.fund_end_haircut,
        cfg.market.foreclosure_cost,
        cfg.market.foreclosure_months,
        params.recovery_haircut,
        *params.economics,
    )
    return lifecycle.Outcomes(
        loans=loans_,
        generation=generation,
        event_month=event,
        cash_month=cash_month,
        cash=cash,
        defaulted=defaulted,
        forced=forced,
    )


def _without_credit(part: pathmetrics.PathResults) -> pathmetrics.PathResults:
    """``part`` without the figures that tally loans (they would count the new slot's loans alone)."""
    return pathmetrics.PathResults(
        scalars={k: v for k, v in part.scalars.items() if k not in CREDIT_SCALARS},
        irr_reasons=part.irr_reasons,
        yearly=part.yearly,
        credit=np.full_like(part.credit, np.nan),
        cashflows=part.cashflows,
    )


def _added(base: ledger.LoanFlows, own: ledger.LoanFlows) -> ledger.LoanFlows:
    summed = {
        f.name: getattr(base, f.name) + getattr(own, f.name) for f in fields(base) if f.name != "mark_months"
    }
    return ledger.LoanFlows(mark_months=base.mark_months, **summed)


def _loan_paths(loan: CandidateLoan, firsts: list[lifecycle.Outcomes]) -> LoanPaths:
    event = np.concatenate([o.event_month for o in firsts])
    cash = np.concatenate([o.cash for o in firsts])
    defaulted = np.concatenate([o.defaulted for o in firsts])
    rate = firsts[0].loans.rate[0]
    life = (event - loan.origination_month) / lifecycle.MONTHS_PER_YEAR
    exposure_at_default = loan.amount * (1.0 + rate * life)
    loss = np.where(defaulted, np.maximum(0.0, exposure_at_default - cash), 0.0)
    return LoanPaths(
        amount=loan.amount,
        origination_month=loan.origination_month,
        defaulted=defaulted,
        cash=cash,
        cash_month=np.concatenate([o.cash_month for o in firsts]),
        loss=loss,
    )


def exact_path(
    base: Base,
    loan: CandidateLoan,
    executor: ChunkExecutor | None = None,
    cancelled: CancelCheck | None = None,
) -> pathmetrics.PathResults:
    """Per-path results of the full re-simulation with ``loan`` appended to the base book."""
    return simulate(base.config, with_candidate(base.config, base.book, loan), executor, cancelled)
