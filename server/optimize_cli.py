"""``equihome-sim optimize [CONFIG.json | --portfolio ID] [options] [--json OUT]``.

With a config file the optimisation runs here, in this process (no server needed). With ``--portfolio`` it
runs on a server (``--server``/``--token`` as in ``remote``) on that portfolio's live book, e.g. the
sandbox's ``portfolio_456`` under ``equihome-sim serve --integrations sandbox``; ``--send`` then also sends
the recommendation to TLS and PMS. Either way it prints the recommendation, its re-simulation and the
frontier as tables; ``--json`` writes the whole ``Optimization`` (proto JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from equihome.optimization.v1 import allocation_pb2
from equihome.optimization.v1 import optimization_service_pb2 as pb
from equihome.optimization.v1.optimization_service_pb2_grpc import OptimizationServiceStub
from server.errors import InvalidArgument, unpack
from server.mapping.optimization import (
    OBJECTIVES,
    check_against_config,
    check_request,
    optimization_proto,
    optimizer_request,
    run_config,
)
from server.remote.client import open_channel
from server.remote_cli import connection_parser
from simulation import ENGINE_VERSION
from simulation.config import ZONES, ConfigError, load_config
from simulation.optimize.run import optimize
from simulation.optimize.spec import OptimizationError

OBJECTIVE_NAMES = {objective.value: value for value, objective in OBJECTIVES.items() if value}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="equihome-sim optimize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection_parser()],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "config", nargs="?", type=Path, help="JSON fund config (engine format; {} is the default)"
    )
    source.add_argument("--portfolio", help="optimise this PMS portfolio's live book on the server")
    parser.add_argument("--objective", choices=sorted(OBJECTIVE_NAMES), default="max_sharpe")
    parser.add_argument("--paths", type=int, help="Monte Carlo paths (100 to 20,000; default the config's)")
    parser.add_argument("--seed", type=int, help="base seed (default the config's)")
    parser.add_argument("--frontier-points", type=int, default=20)
    parser.add_argument("--target-return", type=float, help="target mean LP IRR (objective target_return)")
    parser.add_argument("--max-capital-cvar", type=float, help="capital CVaR 95 %% limit")
    parser.add_argument("--min-prob-hurdle", type=float, help="minimum P(LP IRR >= hurdle)")
    parser.add_argument("--max-zone-hhi", type=float, help="maximum HHI of the zone weights")
    parser.add_argument("--max-turnover", type=float, help="maximum turnover against the current book")
    parser.add_argument(
        "--guardrail-caps", action="store_true", help="cap zones at the guardrails (r 5 %%, o 30 %%)"
    )
    parser.add_argument("--regions", action="store_true", help="optimise region weights too")
    parser.add_argument(
        "--resimulate-key-points",
        action="store_true",
        help="also re-simulate the current, min-risk and max-Sharpe allocations",
    )
    parser.add_argument(
        "--send", action="store_true", help="send the recommendation to TLS and PMS (--portfolio)"
    )
    parser.add_argument("--json", type=Path, dest="json_out", help="write the Optimization as JSON here")
    return parser.parse_args(argv)


def request_of(args: argparse.Namespace) -> pb.OptimizeAllocationRequest:
    request = pb.OptimizeAllocationRequest(
        objective=OBJECTIVE_NAMES[args.objective],
        frontier_points=args.frontier_points,
        optimize_regions=args.regions,
        apply_guardrail_caps=args.guardrail_caps,
        resimulate_key_points=args.resimulate_key_points,
        send_recommendations=args.send,
        portfolio_id=args.portfolio or "",
    )
    options = {
        "paths": args.paths,
        "seed": args.seed,
        "target_return": args.target_return,
        "max_capital_cvar_95": args.max_capital_cvar,
        "min_prob_hurdle": args.min_prob_hurdle,
        "max_zone_hhi": args.max_zone_hhi,
        "max_turnover": args.max_turnover,
    }
    for name, value in options.items():
        if value is not None:
            setattr(request, name, value)
    return request


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    errors = Console(stderr=True)
    request = request_of(args)
    try:
        check_request(request)
        optimization = remote(args, request) if args.portfolio else local(args, request, errors)
    except InvalidArgument as refused:
        for field, problem in refused.field_violations:
            errors.print(f"[red]invalid[/] {field}: {problem}")
        return 2
    except ConfigError as invalid:
        for field, problem in invalid.violations:
            errors.print(f"[red]invalid config[/] {field}: {problem}")
        return 2
    except (OSError, json.JSONDecodeError) as unreadable:
        errors.print(f"[red]cannot read {args.config}: {unreadable}")
        return 2
    except OptimizationError as failure:
        errors.print(f"[red]no allocation satisfies the request[/] ({failure.reason}): {failure}")
        return 1
    except grpc.RpcError as failure:
        details = unpack(failure)
        errors.print(f"[red]{details.code.name}[/] ({details.reason or 'no reason'}): {details.message}")
        return 1
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(*tables(optimization))
    if args.json_out:
        args.json_out.write_text(json_format.MessageToJson(optimization))
        errors.print(f"optimisation written to {args.json_out}")
    return 0


def local(
    args: argparse.Namespace, request: pb.OptimizeAllocationRequest, errors: Console
) -> pb.Optimization:
    started = time.perf_counter()
    config = run_config(request, load_config(json.loads(args.config.read_text())))
    check_against_config(request, config)
    with Progress(
        TextColumn("optimising"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f} %"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task = bar.add_task("work", total=None)
        outcome = optimize(
            config,
            optimizer_request(request, config),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    return optimization_proto(
        outcome, config, engine_version=ENGINE_VERSION, elapsed_seconds=time.perf_counter() - started
    )


def remote(args: argparse.Namespace, request: pb.OptimizeAllocationRequest) -> pb.Optimization:
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    with open_channel(args.server) as channel:
        answer = OptimizationServiceStub(channel).OptimizeAllocation(
            request, metadata=metadata, timeout=max(args.timeout, 300.0)
        )
    return answer.optimization


def tables(optimization: pb.Optimization) -> list[Table]:
    recommended, current = optimization.recommended, optimization.current
    title = (
        f"{pb.Optimization.DESCRIPTOR.fields_by_name['objective'].enum_type.values_by_number[optimization.objective].name}"
        f" · {optimization.paths:,} paths · seed {optimization.seed} · "
        f"{optimization.elapsed.ToTimedelta().total_seconds():.1f} s"
        + (f" · {optimization.optimization_id}" if optimization.optimization_id else "")
    )
    allocation = Table(title=f"allocation: {title}")
    allocation.add_column("zone")
    for column in ("current", "recommended", "change"):
        allocation.add_column(column, justify="right")
    for zone in ZONES:
        before, after = getattr(current.weights, zone), getattr(recommended.weights, zone)
        allocation.add_row(zone, f"{before:.1%}", f"{after:.1%}", f"{after - before:+.1%}")
    actions = Table(title=f"actions on an investable capital of {optimization.investable_capital:,.0f}")
    actions.add_column("action")
    actions.add_column("zone")
    actions.add_column("amount", justify="right")
    for action in optimization.recommendation.actions:
        kind = allocation_pb2.ActionType.Name(action.action_type).removeprefix("ACTION_TYPE_").lower()
        actions.add_row(kind, ZONES[action.zone - 1], f"{action.amount:,.0f}")
    figures = Table(title="the recommendation: surrogate (sub-fund paths) vs re-simulated (whole fund model)")
    figures.add_column("figure")
    for column in ("current (surrogate)", "surrogate", "re-simulated", "gap"):
        figures.add_column(column, justify="right")
    for name, label, percent in FIGURES:
        cells = [getattr(current.surrogate, name), getattr(recommended.surrogate, name)]
        if recommended.HasField("resimulated"):
            cells += [getattr(recommended.resimulated, name), getattr(recommended.gap, name)]
        figures.add_row(label, *(f"{v:.2%}" if percent else f"{v:.3f}" for v in cells))
    frontier = Table(title="efficient frontier (surrogate)")
    for column in ("green", "orange", "red", "mean IRR", "volatility", "Sharpe", "CVaR 95", "P(hurdle)"):
        frontier.add_column(column, justify="right")
    for point in optimization.frontier:
        s = point.surrogate
        frontier.add_row(
            *(f"{getattr(point.weights, zone):.1%}" for zone in ZONES),
            f"{s.expected_return:.2%}",
            f"{s.volatility:.2%}",
            f"{s.sharpe_ratio:.3f}",
            f"{s.capital_cvar_95:.2%}",
            f"{s.prob_hurdle:.1%}",
        )
    binding = Table(title="binding constraints")
    binding.add_column("constraint")
    binding.add_column("value", justify="right")
    binding.add_column("limit", justify="right")
    for item in optimization.binding_constraints:
        binding.add_row(item.name, f"{item.value:.4f}", f"{item.limit:.4f}")
    return [allocation, actions, figures, frontier, binding]


FIGURES = (
    ("expected_return", "mean LP net IRR", True),
    ("volatility", "volatility", True),
    ("sharpe_ratio", "Sharpe", False),
    ("capital_cvar_95", "capital CVaR 95 %", True),
    ("prob_hurdle", "P(IRR ≥ hurdle)", True),
    ("expected_moic", "mean LP MOIC", False),
)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
