"""The impact analysis of one loan application: paired runs, concentration, rules, decision, counter-offer.

``analyze`` takes a ``Base`` (``paths.build_base``; cache it to answer later applications on the fast path)
and the application; the candidate fund is computed on the fast path, or re-simulated in full (``exact``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from ..executors import CancelCheck, ChunkExecutor
from .. import metrics
from ..metrics import Z_95
from ..pathmetrics import PathResults
from . import concentration as conc
from .candidate import CandidateLoan
from .deltas import BOOTSTRAP_REPLICATES, MetricDelta, Paired, paired
from .paths import Base, LoanPaths, exact_path, fast_path
from .rules import Measures, Policy, Rule, amount_cap, evaluate, hard_rules_pass

TAIL_CONFIDENCE = 0.95
OFFER_ROUNDING = 100.0  # counter-offers are whole hundreds of the fund currency
# figure -> (delta name, side) for the Underwriting ``portfolio_metrics_before/after``
PORTFOLIO_METRICS = {
    "irr": "lp_net_irr",
    "equity_multiple": "lp_moic",
    "roi": "lp_roi",
    "sharpe_ratio": "sharpe_ratio",
    "sortino_ratio": "sortino_ratio",
    "var_95": "capital_var_95",
    "var_99": "capital_var_99",
    "cvar_95": "capital_cvar_95",
    "cvar_99": "capital_cvar_99",
    "volatility": "volatility",
    "prob_hurdle": "prob_hurdle",
}


@dataclass(frozen=True)
class Applicant:
    """What the rules know of the application beyond the loan: TLS eligibility and the borrower."""

    zone_eligible: bool = True
    credit_score: int | None = None


DEFAULT_POLICY = Policy()
NO_APPLICANT_DETAILS = Applicant()


@dataclass(frozen=True)
class Recommendation:
    decision: str  # APPROVE, COUNTER_OFFER or REJECT
    amount: float  # requested (APPROVE), counter-offer, or 0 (REJECT)
    ltv: float
    confidence: float  # share of bootstrap replicates in which the decision holds
    rules: list[Rule]  # at the recommended amount (the requested one for REJECT)


@dataclass(frozen=True)
class ImpactResult:
    loan: CandidateLoan
    method: str  # "fast" or "exact"
    paths: int
    seed: int
    currency: str
    deltas: dict[str, MetricDelta]
    before: dict[str, float]  # Underwriting portfolio_metrics_before
    after: dict[str, float]
    risk: dict[str, float]  # Underwriting risk_impact, extended
    recommendation: Recommendation
    fast_path_exact: bool  # the fast path reproduces the exact path (no recycled loan re-balances)
    gap: dict[str, float] | None  # fast-path delta minus exact-path delta, when compared
    elapsed_seconds: float


@dataclass(frozen=True)
class _Evaluation:
    loan: CandidateLoan
    candidate: PathResults
    paired: Paired
    loan_paths: LoanPaths
    measures: Measures
    passed: bool


def analyze(
    base: Base,
    loan: CandidateLoan,
    policy: Policy = DEFAULT_POLICY,
    applicant: Applicant = NO_APPLICANT_DETAILS,
    *,
    exact: bool = False,
    compare: bool = False,
    executor: ChunkExecutor | None = None,
    cancelled: CancelCheck | None = None,
) -> ImpactResult:
    started = time.perf_counter()
    loan.check(base.config)
    fast, loan_paths = fast_path(base, loan)
    exact_results = exact_path(base, loan, executor, cancelled) if exact or compare else None
    evaluation = _evaluate(base, loan, policy, applicant, exact_results if exact else fast, loan_paths)
    gap = None
    if compare:
        fast_deltas = paired(base.config, base.results, fast, replicates=0, memo=base.memo).deltas
        gap = {name: fast_deltas[name].delta - d.delta for name, d in evaluation.paired.deltas.items()}
    recommendation = _recommend(base, evaluation, policy, applicant)
    deltas = evaluation.paired.deltas
    return ImpactResult(
        loan=loan,
        method="exact" if exact else "fast",
        paths=base.paths,
        seed=base.config.monte_carlo.seed,
        currency=base.config.fund.currency,
        deltas=deltas,
        before={k: deltas[v].before for k, v in PORTFOLIO_METRICS.items()},
        after={k: deltas[v].after for k, v in PORTFOLIO_METRICS.items()},
        risk=_risk_impact(base, evaluation),
        recommendation=recommendation,
        fast_path_exact=not base.rebalances,
        gap=gap,
        elapsed_seconds=time.perf_counter() - started,
    )


def _evaluate(
    base: Base,
    loan: CandidateLoan,
    policy: Policy,
    applicant: Applicant,
    candidate: PathResults | None,
    loan_paths: LoanPaths | None,
    replicates: int = BOOTSTRAP_REPLICATES,
) -> _Evaluation:
    if candidate is None or loan_paths is None:
        candidate, loan_paths = fast_path(base, loan)
    pair = paired(base.config, base.results, candidate, replicates, base.memo)
    measures = _measures(base, loan, policy, applicant, pair, loan_paths)
    return _Evaluation(loan, candidate, pair, loan_paths, measures, bool(hard_rules_pass(policy, measures)))


def _measures(
    base: Base, loan: CandidateLoan, policy: Policy, applicant: Applicant, pair: Paired, loan_paths: LoanPaths
) -> Measures:
    config, d = base.config, pair.deltas
    before, after = conc.before_after(base.book, loan, len(config.book.regions))
    senior = config.loans.senior_ltv * loan.property_value
    return {
        "zone": float(loan.zone),
        "hurdle": config.waterfall.hurdle_rate,
        "zone_eligible": 1.0 if applicant.zone_eligible else 0.0,
        "credit_score": float(applicant.credit_score) if applicant.credit_score is not None else math.inf,
        "ltv": loan.ltv,
        "amount": loan.amount,
        "stress_ltv": (loan.amount + senior) / (loan.property_value * (1.0 - policy.stress_price_decline)),
        "loan_irr": metrics.finite_mean(loan_paths.irr),
        "expected_loss": float(loan_paths.loss.mean() / loan.amount),
        "zone_share_before": float(before.zone_shares[loan.zone]),
        "zone_share_after": float(after.zone_shares[loan.zone]),
        "region_share_before": float(before.region_shares[loan.region]),
        "region_share_after": float(after.region_shares[loan.region]),
        "loan_share": loan.amount / (base.book.amount.sum() + loan.amount),
        **{
            f"{name}_{side}": getattr(d[name], side)
            for name in ("capital_var_99", "capital_cvar_99", "prob_hurdle")
            for side in ("before", "after")
        },
        **{
            f"{name}_tolerance": Z_95 * d[name].standard_error
            for name in ("capital_var_99", "capital_cvar_99", "prob_hurdle")
        },
        "lp_net_irr_change": d["lp_net_irr"].delta,
        "sharpe_change": d["sharpe_ratio"].delta,
    }


def _replicate_measures(evaluation: _Evaluation) -> Measures:
    """The point measures with the fund figures replaced by their bootstrap replicates."""
    r = evaluation.paired.replicates
    if not r:
        return evaluation.measures
    out = dict(evaluation.measures)
    for name in ("capital_var_99", "capital_cvar_99", "prob_hurdle"):
        for side in ("before", "after"):
            out[f"{name}_{side}"] = r[f"{name}_{side}"]
    out["lp_net_irr_change"] = r["lp_net_irr_after"] - r["lp_net_irr_before"]
    out["sharpe_change"] = r["sharpe_ratio_after"] - r["sharpe_ratio_before"]
    return out


def _confidence(policy: Policy, evaluation: _Evaluation) -> float:
    """Share of the bootstrap replicates whose hard rules give the point verdict (1 without replicates)."""
    verdicts = np.atleast_1d(hard_rules_pass(policy, _replicate_measures(evaluation)))
    return float(np.mean(verdicts == evaluation.passed))


def _region_name(base: Base, loan: CandidateLoan) -> str:
    return base.config.book.regions[loan.region].name


def _recommend(base: Base, evaluation: _Evaluation, policy: Policy, applicant: Applicant) -> Recommendation:
    loan = evaluation.loan
    rules = evaluate(policy, evaluation.measures, _region_name(base, loan))
    if evaluation.passed:
        return Recommendation("APPROVE", loan.amount, loan.ltv, _confidence(policy, evaluation), rules)
    failed = {r.rule for r in rules if r.severity == "FAIL"}
    offer = _counter_offer(base, evaluation, policy, applicant) if policy.counter_offer else None
    if offer is None:
        return Recommendation("REJECT", 0.0, 0.0, _confidence(policy, evaluation), _mark(rules, failed))
    accepted, binding = offer
    offer_rules = _mark(evaluate(policy, accepted.measures, _region_name(base, loan)), binding)
    return Recommendation(
        "COUNTER_OFFER", accepted.loan.amount, accepted.loan.ltv, _confidence(policy, accepted), offer_rules
    )


def _mark(rules: list[Rule], binding: set[str]) -> list[Rule]:
    return [replace(r, binding=r.rule in binding) for r in rules]


def _counter_offer(
    base: Base, requested: _Evaluation, policy: Policy, applicant: Applicant
) -> tuple[_Evaluation, set[str]] | None:
    """The largest amount at the same property value that passes every hard rule, by bisection on the fast
    path (point figures) between the fund's minimum loan size and the closed-form bound of the amount-only
    rules; the accepted amount is then re-evaluated with its bootstrap. None when no amount passes."""
    loan, config = requested.loan, base.config
    book = base.book
    bound, bound_rules = amount_cap(
        policy,
        requested.measures,
        loan.property_value,
        config.loans.senior_ltv,
        float(book.amount.sum()),
        float(book.amount[book.zone == loan.zone].sum()),
        float(book.amount[book.region == loan.region].sum()),
    )
    high_amount = _round_down(min(loan.amount, bound))
    low_amount = min(config.book.generated.min_loan_size, high_amount)
    if low_amount <= 0 or high_amount < low_amount:
        return None
    resolution = max(OFFER_ROUNDING, 0.01 * loan.amount)

    def trial(amount: float) -> _Evaluation:
        return _evaluate(base, loan.with_amount(amount), policy, applicant, None, None, replicates=0)

    def failing(evaluation: _Evaluation) -> set[str]:
        return {r.rule for r in evaluate(policy, evaluation.measures, "") if r.severity == "FAIL"}

    # binding: what fails at the requested amount, what bounds the amount in closed form, and what fails
    # just above the offer
    binding = failing(requested) | (set(bound_rules) if high_amount < loan.amount else set())
    high = trial(high_amount)
    if high.passed:
        return _evaluate(base, high.loan, policy, applicant, None, None), binding
    low = trial(low_amount)
    if not low.passed:
        return None
    while high.loan.amount - low.loan.amount > resolution:
        middle = trial(_round_down((low.loan.amount + high.loan.amount) / 2))
        if middle.loan.amount <= low.loan.amount:
            break
        low, high = (middle, high) if middle.passed else (low, middle)
    return _evaluate(base, low.loan, policy, applicant, None, None), binding | failing(high)


def _round_down(amount: float) -> float:
    return math.floor(amount / OFFER_ROUNDING) * OFFER_ROUNDING


def _risk_impact(base: Base, evaluation: _Evaluation) -> dict[str, float]:
    loan, d, lp = evaluation.loan, evaluation.paired.deltas, evaluation.loan_paths
    before, after = conc.before_after(base.book, loan, len(base.config.book.regions))
    weight = loan.amount / (base.book.amount.sum() + loan.amount)
    return {
        "var_change": d["capital_var_95"].delta,
        "cvar_change": d["capital_cvar_99"].delta,
        "concentration_risk_change": conc.concentration_risk_change(before, after),
        "diversification_benefit": conc.diversification_benefit(
            base.results.scalars["gross_irr"], evaluation.candidate.scalars["gross_irr"], lp.irr, weight
        ),
        "zone_hhi_before": before.zone_hhi,
        "zone_hhi_after": after.zone_hhi,
        "region_hhi_before": before.region_hhi,
        "region_hhi_after": after.region_hhi,
        "loan_hhi_before": before.loan_hhi,
        "loan_hhi_after": after.loan_hhi,
        "top5_share_before": before.top5_share,
        "top5_share_after": after.top5_share,
        "top10_share_before": before.top10_share,
        "top10_share_after": after.top10_share,
        "zone_share_after": float(after.zone_shares[loan.zone]),
        "region_share_after": float(after.region_shares[loan.region]),
        "loan_share": weight,
        "stress_ltv": evaluation.measures["stress_ltv"],
        "expected_loss": evaluation.measures["expected_loss"],
        "probability_of_default": float(lp.defaulted.mean()),
        "loan_irr": evaluation.measures["loan_irr"],
        "tail_loss_contribution": _tail_contribution(evaluation),
    }


def _tail_contribution(evaluation: _Evaluation) -> float:
    """Euler contribution of the loan to the fund's tail: ``E[loss_loan | fund in tail] / amount``, the tail
    being the worst ``1 − TAIL_CONFIDENCE`` of paths by the LP net IRR of the fund with the loan."""
    irr = evaluation.candidate.scalars["lp_net_irr"]
    finite = np.flatnonzero(~np.isnan(irr))
    if finite.size == 0:
        return float("nan")
    worst = finite[np.argsort(irr[finite], kind="stable")[: math.ceil((1.0 - TAIL_CONFIDENCE) * finite.size)]]
    return float(evaluation.loan_paths.loss[worst].mean() / evaluation.loan.amount)
