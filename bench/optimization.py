"""Benchmark of the allocation optimiser (not a test): ``python -m bench.optimization``.

In one run, on the default 100M fund at 5,000 paths, with chunks on the threads a server job uses:

* baseline: one plain 5,000-path run of the fund;
* OptimizeAllocation's computation (``run_optimization``'s ``optimize``): three single-zone sub-funds,
  the objective (max Sharpe), a 20-point efficient frontier and the re-simulation of the recommendation,
  end to end, ``--repeat`` times (each figure and the median), and its ratio to the baseline;
* the same split into its phases (sub-fund paths, solves and frontier, re-simulation), and the frontier
  again under a capital CVaR limit (Rockafellar–Uryasev: thousands of scenario rows per solve);
* peak RSS of the process;
* the same request through the service: ``OptimizeAllocation`` over gRPC on ``equihome-sim serve`` (its
  job runner and worker process), twice (the first call also loads the solver into the worker).

Target (issue #11): ≤ 15 s for the 20-point frontier with re-simulation.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from bench.grpc_service import start_server
from bench.memory import PeakTreeRss
from equihome.optimization.v1 import optimization_service_pb2 as pb
from equihome.optimization.v1.optimization_service_pb2_grpc import OptimizationServiceStub
from server.auth import SCOPES, issue_dev_token
from server.mapping.simulation import RUN_PARALLELISM
from simulation import engine, executors
from simulation.config import load_config
from simulation.optimize.assets import allocation_config, simulate_assets, zone_assets
from simulation.optimize.frontier import efficient_frontier
from simulation.optimize.problem import AllocationModel
from simulation.optimize.run import optimize
from simulation.optimize.spec import Goal, Limits, Request

TARGET_S = 15.0
MIB = 1024 * 1024


def timed(work):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    value = work()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    config = load_config({"monte_carlo": {"paths": args.paths}})
    threads = executors.ThreadPool(RUN_PARALLELISM)
    engine.run(load_config({"monte_carlo": {"paths": 200}}), executor=threads)  # compile and warm up

    with PeakTreeRss() as peak:
        _, baseline = timed(lambda: engine.run(config, executor=threads))
        print(f"baseline: one {args.paths:,}-path run of the default fund: {baseline:.2f} s")

        totals = []
        for attempt in range(args.repeat):
            outcome, seconds = timed(lambda: optimize(config, Request(frontier_points=20), executor=threads))
            totals.append(seconds)
            gap = outcome.recommendation.gap
            print(
                f"OptimizeAllocation, 20-point frontier + re-simulation, run {attempt + 1}: {seconds:.2f} s "
                f"({seconds / baseline:.1f} baseline runs); recommendation "
                f"{', '.join(f'{w:.3f}' for w in outcome.recommendation.solution.zone_weights)}, "
                f"IRR gap {gap.expected_return:+.5f}, volatility gap {gap.volatility:+.5f}"
            )
        median = statistics.median(totals)
        verdict = "met" if median <= TARGET_S else "MISSED"
        print(
            f"OptimizeAllocation median {median:.2f} s, max {max(totals):.2f} s — target ≤ {TARGET_S:g} s: {verdict}"
        )

        paths, simulate_s = timed(lambda: simulate_assets(config, zone_assets(), executor=threads))
        goal = Goal(risk_free_rate=config.reporting.risk_free_rate, hurdle_rate=config.waterfall.hurdle_rate)
        model = AllocationModel(paths, Limits(current=(0.6, 0.3, 0.1)), goal)
        (solution, frontier), solve_s = timed(lambda: (model.solve(), efficient_frontier(model, 20)))
        _, resimulate_s = timed(
            lambda: engine.run(allocation_config(config, solution.zone_weights), executor=threads)
        )
        print(
            f"phases: 3 sub-funds {simulate_s:.2f} s · objective + 20-point frontier {solve_s:.2f} s · "
            f"re-simulation {resimulate_s:.2f} s"
        )
        tail = Limits(current=(0.6, 0.3, 0.1), max_capital_cvar_95=0.05)
        tail_model = AllocationModel(paths, tail, goal)
        _, tail_s = timed(lambda: efficient_frontier(tail_model, 20))
        print(f"20-point frontier under a capital CVaR limit ({paths.paths:,} scenario rows): {tail_s:.2f} s")
    print(f"peak RSS {peak.bytes / MIB:,.0f} MiB")
    through_the_service(args.paths)


def through_the_service(paths: int) -> None:
    with tempfile.TemporaryDirectory(prefix="equihome-bench-") as scratch:
        data_dir = Path(scratch) / "data"
        server, port = start_server(data_dir, Path(scratch) / "server.log", "--no-metrics-enabled")
        try:
            metadata = (("authorization", f"Bearer {issue_dev_token(data_dir, SCOPES)}"),)
            request = pb.OptimizeAllocationRequest(paths=paths, frontier_points=20)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = OptimizationServiceStub(channel)
                for call in ("first", "second"):
                    answer, seconds = timed(
                        lambda: stub.OptimizeAllocation(request, metadata=metadata, timeout=300)
                    )
                    print(
                        f"OptimizeAllocation over gRPC ({call} call): {seconds:.2f} s, "
                        f"{len(answer.optimization.frontier)} frontier points — target ≤ {TARGET_S:g} s: "
                        f"{'met' if seconds <= TARGET_S else 'MISSED'}"
                    )
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
