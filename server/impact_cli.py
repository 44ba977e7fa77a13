"""``equihome-sim impact --amount L --property-value V --zone Z --region R [CONFIG.json] [--json]``.

Analyses one loan application against the fund of a config file (engine defaults without one): before/after
metrics with paired 95 % intervals, risk impact, and the decision with every rule checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from simulation.config import ZONES, ConfigError, load_config
from simulation.impact import Applicant, CandidateLoan, ImpactResult, Policy, analyze, build_base

MAX_PATHS = 20_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equihome-sim impact", description=__doc__.splitlines()[0])
    parser.add_argument(
        "config", nargs="?", type=Path, help="fund config (JSON); engine defaults when omitted"
    )
    parser.add_argument("--loan-id", default="application")
    parser.add_argument("--amount", type=float, required=True, help="requested loan amount, fund currency")
    parser.add_argument(
        "--property-value", type=float, required=True, help="property value V0, fund currency"
    )
    parser.add_argument("--zone", choices=ZONES, required=True)
    parser.add_argument("--region", required=True, help="a region of the fund's book, e.g. sydney_north")
    parser.add_argument("--origination-month", type=int, default=0)
    parser.add_argument("--interest-rate", type=float)
    parser.add_argument("--credit-score", type=int)
    parser.add_argument("--zone-ineligible", action="store_true", help="TLS closed the zone to new loans")
    parser.add_argument("--paths", type=int, help=f"paths, 1 to {MAX_PATHS:,} (default: the config's)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--exact", action="store_true", help="re-simulate the fund with the loan in full")
    parser.add_argument("--compare", action="store_true", help="also run the exact path and show the gap")
    parser.add_argument("--no-counter-offer", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    err = Console(stderr=True)
    try:
        data = json.loads(args.config.read_text()) if args.config else {}
        monte_carlo = data.setdefault("monte_carlo", {})
        if args.paths is not None:
            if not 1 <= args.paths <= MAX_PATHS:
                raise ValueError(f"--paths: must lie in [1, {MAX_PATHS:,}]")
            monte_carlo["paths"] = args.paths
        if args.seed is not None:
            monte_carlo["seed"] = args.seed
        config = load_config(data)
        regions = [r.name for r in config.book.regions]
        if args.region not in regions:
            raise ValueError(f"--region: not a region of the fund's book {regions}")
        loan = CandidateLoan(
            args.loan_id,
            args.amount,
            args.property_value,
            ZONES.index(args.zone),
            regions.index(args.region),
            args.origination_month,
            args.interest_rate,
        )
        loan.check(config)
    except (OSError, json.JSONDecodeError, ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    result = analyze(
        build_base(config),
        loan,
        Policy(counter_offer=not args.no_counter_offer),
        Applicant(zone_eligible=not args.zone_ineligible, credit_score=args.credit_score),
        exact=args.exact,
        compare=args.compare,
    )
    if args.json:
        print(json.dumps(_document(result), indent=2, allow_nan=False, default=float))
    else:
        _print(Console(), result)
    return 0


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _document(result: ImpactResult) -> dict:
    rec = result.recommendation
    return {
        "loan_id": result.loan.loan_id,
        "method": result.method,
        "paths": result.paths,
        "seed": result.seed,
        "fast_path_exact": result.fast_path_exact,
        "portfolio_metrics_before": {k: _finite(v) for k, v in result.before.items()},
        "portfolio_metrics_after": {k: _finite(v) for k, v in result.after.items()},
        "deltas": {
            k: {f: _finite(v) for f, v in dataclasses.asdict(d).items()} for k, d in result.deltas.items()
        },
        "risk_impact": {k: _finite(float(v)) for k, v in result.risk.items()},
        "recommendation": {
            "decision": rec.decision,
            "approve": rec.decision != "REJECT",
            "recommended_loan_amount": rec.amount,
            "recommended_ltv": rec.ltv,
            "confidence_score": rec.confidence,
            "reasons": [
                {**dataclasses.asdict(r), "observed": _finite(r.observed), "limit": _finite(r.limit)}
                for r in rec.rules
            ],
        },
        "gap": result.gap,
        "elapsed_seconds": result.elapsed_seconds,
    }


def _print(console: Console, result: ImpactResult) -> None:
    table = Table(title=f"Impact of {result.loan.loan_id} ({result.method} path, {result.paths:,} paths)")
    for column in ("metric", "before", "after", "delta", "95 % CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, d in result.deltas.items():
        table.add_row(
            name,
            f"{d.before:.6g}",
            f"{d.after:.6g}",
            f"{d.delta:+.4g}",
            f"[{d.ci95_lower:+.4g}, {d.ci95_upper:+.4g}]",
        )
    console.print(table)
    risk = Table(title="Risk impact")
    risk.add_column("measure")
    risk.add_column("value", justify="right")
    for name, value in result.risk.items():
        risk.add_row(name, f"{float(value):.6g}")
    console.print(risk)
    rec = result.recommendation
    console.print(
        f"[bold]{rec.decision}[/bold]  amount {rec.amount:,.0f}  LTV {rec.ltv:.3f}  "
        f"confidence {rec.confidence:.2f}"
    )
    rules = Table(title="Rules")
    for column in ("rule", "severity", "binding", "observed", "limit", "zone/region"):
        rules.add_column(column)
    for r in rec.rules:
        rules.add_row(
            r.rule,
            r.severity,
            "yes" if r.binding else "",
            f"{r.observed:.6g}",
            f"{r.limit:.6g}",
            r.zone or r.region,
        )
    console.print(rules)
    if not result.fast_path_exact:
        console.print(
            "note: the fund recycles proceeds and re-balances recycled loans around the new loan, so the "
            "fast path approximates the exact path (use --compare to see the gap)"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
