"""The approval rules (domain §8.2 steps 4–6): loan checks and fund guardrails after adding the loan.

Every rule reads named measures (``Measures``); a measure is a number, or an array with one value per
bootstrap replicate, so the same rules give the point decision and its confidence. A fund guardrail fails only
when the figure after adding the loan breaches its limit *and* the loan makes it worse: a fund already outside
a limit can still take a loan that moves it back, or leaves it where it was within the change's 95 %
half-width. The LP IRR rule passes when the fall of the mean LP net IRR is at most epsilon or the Sharpe ratio
does not fall (a loan may trade return for risk-adjusted return).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..config import ZONES

Value = float | np.ndarray
Measures = dict[str, Value]

FAIL, WARN, INFO = "FAIL", "WARN", "INFO"


@dataclass(frozen=True)
class Policy:
    """Limits of the approval rule; defaults documented in ``docs/model.md``."""

    max_lp_irr_decrease: float = 0.0005
    max_capital_cvar_99: float = 0.20
    max_capital_var_99: float = 0.15
    min_prob_hurdle: float = 0.70
    max_ltv: float = 0.65
    max_stress_ltv: float = 0.90
    stress_price_decline: float = 0.20
    ticket_limits: tuple[float, float, float] = (500_000.0, 400_000.0, 300_000.0)  # green, orange, red
    zone_caps: tuple[float, float, float] = (1.0, 0.40, 0.15)
    max_region_share: float = 0.40
    max_single_loan_share: float = 0.02
    min_credit_score: int = 0
    min_loan_irr_spread: float = 0.0  # the loan's expected IRR must reach hurdle + spread
    max_expected_loss: float = 0.02  # fraction of the amount
    counter_offer: bool = True


@dataclass(frozen=True)
class Rule:
    """One rule checked: ``severity`` FAIL (hard limit breached), WARN (soft limit breached) or INFO."""

    rule: str  # the ``GuardrailRule`` name without its prefix, e.g. "LTV_MAX"
    severity: str
    passed: bool
    observed: float
    limit: float
    binding: bool = False
    zone: str = ""
    region: str = ""
    message: str = ""


@dataclass(frozen=True)
class _Check:
    rule: str
    hard: bool
    observed: str  # measure name
    limit: Callable[[Policy, Measures], float]
    passes: Callable[[Measures, float], Value]
    text: str
    scope: str = ""  # "zone" or "region" when zone/region specific


def _at_most(name: str) -> Callable[[Measures, float], Value]:
    return lambda m, limit: m[name] <= limit


def _at_least(name: str) -> Callable[[Measures, float], Value]:
    return lambda m, limit: m[name] >= limit


def _guardrail_max(name: str) -> Callable[[Measures, float], Value]:
    """After the loan within the limit, or not worse than before by more than the change's own 95 %
    half-width (``<name>_tolerance``, 0 for exact shares): noise of a few paths does not decide."""
    return lambda m, limit: (
        (m[f"{name}_after"] <= limit)
        | (m[f"{name}_after"] - m[f"{name}_before"] <= m.get(f"{name}_tolerance", 0.0))
    )


def _guardrail_min(name: str) -> Callable[[Measures, float], Value]:
    return lambda m, limit: (
        (m[f"{name}_after"] >= limit)
        | (m[f"{name}_before"] - m[f"{name}_after"] <= m.get(f"{name}_tolerance", 0.0))
    )


def _irr_or_sharpe(m: Measures, limit: float) -> Value:
    return (m["lp_net_irr_change"] >= limit) | (m["sharpe_change"] >= 0.0)


CHECKS = (
    _Check(
        "ZONE_ELIGIBILITY",
        True,
        "zone_eligible",
        lambda p, m: 1.0,
        _at_least("zone_eligible"),
        "property zone open for new loans (TLS)",
        "zone",
    ),
    _Check(
        "CREDIT_SCORE_MIN",
        True,
        "credit_score",
        lambda p, m: float(p.min_credit_score),
        _at_least("credit_score"),
        "borrower credit score at least the minimum",
    ),
    _Check(
        "LTV_MAX", True, "ltv", lambda p, m: p.max_ltv, _at_most("ltv"), "loan-to-value at most the maximum"
    ),
    _Check(
        "STRESS_LTV_MAX",
        True,
        "stress_ltv",
        lambda p, m: p.max_stress_ltv,
        _at_most("stress_ltv"),
        "LTV after the stress price fall at most the maximum",
    ),
    _Check(
        "TICKET_SIZE_MAX",
        True,
        "amount",
        lambda p, m: p.ticket_limits[int(m["zone"])],
        _at_most("amount"),
        "amount within the zone's ticket limit",
        "zone",
    ),
    _Check(
        "LOAN_IRR_MIN",
        True,
        "loan_irr",
        lambda p, m: float(m["hurdle"]) + p.min_loan_irr_spread,
        _at_least("loan_irr"),
        "expected IRR of the loan at least hurdle + spread",
    ),
    _Check(
        "EXPECTED_LOSS_MAX",
        True,
        "expected_loss",
        lambda p, m: p.max_expected_loss,
        _at_most("expected_loss"),
        "expected loss of the loan (share of the amount) at most the limit",
    ),
    _Check(
        "ZONE_SHARE_MAX",
        True,
        "zone_share_after",
        lambda p, m: p.zone_caps[int(m["zone"])],
        _guardrail_max("zone_share"),
        "zone share of the book within its cap",
        "zone",
    ),
    _Check(
        "REGION_SHARE_MAX",
        True,
        "region_share_after",
        lambda p, m: p.max_region_share,
        _guardrail_max("region_share"),
        "region share of the book within its cap",
        "region",
    ),
    _Check(
        "SINGLE_LOAN_SHARE_MAX",
        False,
        "loan_share",
        lambda p, m: p.max_single_loan_share,
        _at_most("loan_share"),
        "share of the loan in the book within the single-loan cap",
    ),
    _Check(
        "CAPITAL_VAR_99_MAX",
        True,
        "capital_var_99_after",
        lambda p, m: p.max_capital_var_99,
        _guardrail_max("capital_var_99"),
        "capital VaR 99 % after the loan within the limit",
    ),
    _Check(
        "CAPITAL_CVAR_99_MAX",
        True,
        "capital_cvar_99_after",
        lambda p, m: p.max_capital_cvar_99,
        _guardrail_max("capital_cvar_99"),
        "capital CVaR 99 % after the loan within the limit",
    ),
    _Check(
        "HURDLE_PROBABILITY_MIN",
        True,
        "prob_hurdle_after",
        lambda p, m: p.min_prob_hurdle,
        _guardrail_min("prob_hurdle"),
        "probability of clearing the hurdle after the loan at least the minimum",
    ),
    _Check(
        "LP_IRR_CHANGE_MIN",
        True,
        "lp_net_irr_change",
        lambda p, m: -p.max_lp_irr_decrease,
        _irr_or_sharpe,
        "mean LP net IRR falls by at most epsilon, or the Sharpe ratio does not fall",
    ),
)


def hard_rules_pass(policy: Policy, measures: Measures) -> Value:
    """True (per replicate, for array measures) when every hard rule passes."""
    verdict: Value = True
    for check in CHECKS:
        if check.hard:
            verdict = verdict & check.passes(measures, check.limit(policy, measures))
    return verdict


def evaluate(policy: Policy, measures: Measures, region_name: str) -> list[Rule]:
    """Every rule at the point measures, failures first (hard before soft), then in ``CHECKS`` order."""
    rules = []
    zone = ZONES[int(measures["zone"])]
    for check in CHECKS:
        limit = check.limit(policy, measures)
        passed = bool(check.passes(measures, limit))
        severity = INFO if passed else FAIL if check.hard else WARN
        rules.append(
            Rule(
                rule=check.rule,
                severity=severity,
                passed=passed,
                observed=float(measures[check.observed]),
                limit=float(limit),
                zone=zone if check.scope == "zone" else "",
                region=region_name if check.scope == "region" else "",
                message=("passed: " if passed else "failed: ") + check.text,
            )
        )
    order = {FAIL: 0, WARN: 1, INFO: 2}
    return sorted(rules, key=lambda r: order[r.severity])


def amount_cap(
    policy: Policy,
    measures: Measures,
    property_value: float,
    senior_ltv: float,
    book_total: float,
    zone_exposure: float,
    region_exposure: float,
) -> tuple[float, list[str]]:
    """The largest amount the amount-only rules allow (LTV, stress LTV, ticket, zone and region caps) and the
    rules at that bound, solved in closed form: the counter-offer search starts below it."""
    zone = int(measures["zone"])
    caps = {
        "LTV_MAX": policy.max_ltv * property_value,
        "STRESS_LTV_MAX": policy.max_stress_ltv * property_value * (1.0 - policy.stress_price_decline)
        - senior_ltv * property_value,
        "TICKET_SIZE_MAX": policy.ticket_limits[zone],
        "ZONE_SHARE_MAX": _share_cap(policy.zone_caps[zone], book_total, zone_exposure),
        "REGION_SHARE_MAX": _share_cap(policy.max_region_share, book_total, region_exposure),
    }
    bound = min(caps.values())
    return bound, [name for name, cap in caps.items() if cap <= bound * (1 + 1e-12)]


def _share_cap(cap: float, total: float, exposure: float) -> float:
    """Largest L with (exposure + L) / (total + L) <= cap; unbounded for a cap of 1."""
    return np.inf if cap >= 1.0 else max(0.0, (cap * total - exposure) / (1.0 - cap))
