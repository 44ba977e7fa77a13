"""``equihome-sim impact --amount L --property-value V --zone Z --region R [CONFIG.json | --portfolio ID]``.

Analyses one loan application: before/after metrics with paired 95 % intervals, the risk impact, and the
decision with every rule checked, as a table (or ``--json``, the ``ImpactAnalysis`` of the API). Against a
config file (engine defaults without one) it runs here; with ``--portfolio`` it asks a running server
(``--server``/``$EQUIHOME_SERVER``, token ``$EQUIHOME_TOKEN``) to analyse the loan on that portfolio's live
book, e.g. the sandbox's ``portfolio_456`` under ``equihome-sim serve --integrations sandbox``.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from equihome.impact.v1 import impact_analysis_pb2 as pb
from equihome.impact.v1 import impact_analysis_service_pb2 as service_pb2
from equihome.impact.v1.impact_analysis_service_pb2_grpc import ImpactAnalysisServiceStub
from equihome.type.v1 import guardrail_pb2, loan_pb2, zone_pb2
from server.errors import unpack
from server.mapping.impact import DELTA_NAMES, RISK_FIELDS, analysis_to_proto, new_analysis_id
from server.remote.client import RemoteError, open_channel
from server.remote_cli import connection_parser
from simulation.config import ZONES, ConfigError, load_config
from simulation.impact import Applicant, CandidateLoan, Policy, analyze, build_base

MAX_PATHS = 5_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equihome-sim impact",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection_parser()],
    )
    parser.add_argument(
        "config", nargs="?", type=Path, help="fund config (JSON); engine defaults when omitted"
    )
    parser.add_argument("--portfolio", help="analyse on this PMS portfolio's live book, on the server")
    parser.add_argument("--loan-id", default="application")
    parser.add_argument("--amount", type=float, required=True, help="requested loan amount, fund currency")
    parser.add_argument(
        "--property-value", type=float, required=True, help="property value V0, fund currency"
    )
    parser.add_argument("--zone", choices=ZONES, required=True)
    parser.add_argument("--region", required=True, help="a region of the fund's book, e.g. sydney_north")
    parser.add_argument("--origination-month", type=int, help="default: 0, or the live book's age")
    parser.add_argument("--interest-rate", type=float)
    parser.add_argument("--credit-score", type=int)
    parser.add_argument(
        "--paths", type=int, help=f"paths, 1 to {MAX_PATHS:,} (default: the config's, 500 on a server)"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--exact", action="store_true", help="re-simulate the fund with the loan in full")
    parser.add_argument("--compare", action="store_true", help="also run the other method and show the gap")
    parser.add_argument("--no-counter-offer", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the ImpactAnalysis as JSON")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    err = Console(stderr=True)
    if args.paths is not None and not 1 <= args.paths <= MAX_PATHS:
        err.print(f"[red]error:[/red] --paths: must lie in [1, {MAX_PATHS:,}]")
        return 2
    if args.portfolio and args.config:
        err.print("[red]error:[/red] give a config file or --portfolio, not both")
        return 2
    try:
        analysis = _on_server(args) if args.portfolio else _here(args)
    except (OSError, json.JSONDecodeError, ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    except RemoteError as exc:
        err.print(exc.explain())
        return 1
    if args.json:
        print(
            json.dumps(
                json_format.MessageToDict(
                    analysis, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                ),
                indent=2,
            )
        )
    else:
        _print(Console(), analysis)
    return 0


def _here(args: argparse.Namespace) -> pb.ImpactAnalysis:
    data = json.loads(args.config.read_text()) if args.config else {}
    monte_carlo = data.setdefault("monte_carlo", {})
    if args.paths is not None:
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
        args.origination_month or 0,
        args.interest_rate,
    )
    loan.check(config)
    policy = Policy(counter_offer=not args.no_counter_offer)
    applicant = Applicant(credit_score=args.credit_score)
    result = analyze(build_base(config), loan, policy, applicant, exact=args.exact, compare=args.compare)
    return analysis_to_proto(result, analysis_id=new_analysis_id(), portfolio_id="")


def _on_server(args: argparse.Namespace) -> pb.ImpactAnalysis:
    application = loan_pb2.LoanApplication(
        loan_id=args.loan_id,
        property_value=args.property_value,
        requested_loan_amount=args.amount,
        property_zone=zone_pb2.Zone.Value(f"ZONE_{args.zone.upper()}"),
        property_region=args.region,
    )
    if args.credit_score is not None:
        application.borrower_credit_score = args.credit_score
    request = service_pb2.AnalyzeLoanImpactRequest(
        loan_application=application,
        portfolio_id=args.portfolio,
        request_id=str(uuid.uuid4()),
        method=pb.IMPACT_METHOD_EXACT if args.exact else pb.IMPACT_METHOD_FAST,
        compare_methods=args.compare,
        policy=pb.ImpactPolicy(counter_offer=not args.no_counter_offer),
    )
    for name in ("paths", "seed", "origination_month", "interest_rate"):
        if getattr(args, name) is not None:
            setattr(request, name, getattr(args, name))
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    with open_channel(args.server) as channel:
        try:
            reply = ImpactAnalysisServiceStub(channel).AnalyzeLoanImpact(
                request, metadata=metadata, timeout=args.timeout
            )
        except grpc.RpcError as error:
            raise RemoteError(unpack(error), args.server, args.timeout) from None
    return reply.analysis


def _print(console: Console, analysis: pb.ImpactAnalysis) -> None:
    method = "exact" if analysis.method == pb.IMPACT_METHOD_EXACT else "fast"
    where = f" on {analysis.portfolio_id}" if analysis.portfolio_id else ""
    table = Table(title=f"Impact of {analysis.loan_id}{where} ({method} path, {analysis.paths:,} paths)")
    for column in ("metric", "before", "after", "delta", "95 % CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name in DELTA_NAMES:
        d = getattr(analysis.deltas, name)
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
    for name in RISK_FIELDS:
        risk.add_row(name, f"{getattr(analysis.risk_impact, name):.6g}")
    console.print(risk)
    rec = analysis.recommendation
    decision = pb.Decision.Name(rec.decision).removeprefix("DECISION_")
    console.print(
        f"[bold]{decision}[/bold]  amount {rec.recommended_loan_amount:,.0f} {analysis.currency}  "
        f"LTV {rec.recommended_ltv:.3f}  confidence {rec.confidence_score:.2f}"
    )
    rules = Table(title="Rules")
    for column in ("rule", "outcome", "binding", "observed", "limit", "zone/region"):
        rules.add_column(column)
    for r in rec.reasons:
        where = zone_pb2.Zone.Name(r.zone).removeprefix("ZONE_").lower() if r.zone else r.region
        rules.add_row(
            guardrail_pb2.GuardrailRule.Name(r.rule).removeprefix("GUARDRAIL_RULE_"),
            guardrail_pb2.Severity.Name(r.severity).removeprefix("SEVERITY_"),
            "yes" if r.binding else "",
            f"{r.observed:.6g}",
            f"{r.limit:.6g}",
            where,
        )
    console.print(rules)
    if not analysis.fast_path_exact and analysis.method != pb.IMPACT_METHOD_EXACT:
        console.print(
            "note: the fund recycles proceeds into loans that re-balance around the book, so the fast "
            "path approximates the exact path (use --compare to see the gap)"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
