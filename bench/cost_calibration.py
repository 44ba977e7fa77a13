"""Calibration of ``simulation/cost.py`` against the engine (not a test): ``python -m bench.cost_calibration``.

For a grid of books (loan count), fund terms (months), regions (zone-region series) and recycling
(generations), a fresh process per case warms the engine up on one small chunk, then runs one chunk of
``--paths`` paths and reports the growth of its address space (``VmPeak`` over ``VmSize`` before the
chunk: what ``RLIMIT_AS`` limits) and the CPU time. Two more cases price the per-path results a whole run
keeps (runs of ``--run-paths`` and five times as many). A warm worker's address space (imports, compiled
kernels, chunk threads) is measured too. The chunks are measured one at a time; the estimate of a job
multiplies them by the threads that compute chunks at once.

Every row prints the measurement next to the estimate, and the ratio. A model is good when the ratios
of memory stay a little above 1 (the estimate is the budget) and work tracks CPU time within a factor
of two. After changing the engine, re-run this and update the constants at the top of ``cost.py``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from itertools import product
from typing import Any

PROBE = r"""
import gc, json, re, sys, time
def status(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
from server.services import simulation_job  # everything a worker imports for a job
from simulation import engine, executors
from simulation.config import load_config
config, paths, mode = load_config(json.loads(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
simulation_job.warm_up()  # what a worker does before its first job
if mode == "warm":  # a warm worker that has run a job on its chunk threads
    engine.run(config, executor=simulation_job.chunk_threads())
    print(json.dumps({"bytes": status("VmSize")}))
    sys.exit()
task = executors.RunTask(config, engine.book_for(config))
executors.simulate_chunk(task, 0, 50)  # this config's first chunk: its arrays' shapes, nothing else
gc.collect()
before = status("VmSize")
cpu = time.process_time()
if mode == "run":
    engine.run(config)
else:
    executors.simulate_chunk(task, 0, paths)
print(json.dumps({"bytes": status("VmPeak") - before, "cpu_s": time.process_time() - cpu}))
"""


def measure(config: dict[str, Any], paths: int, mode: str = "chunk") -> dict[str, float]:
    """In a fresh process: ``chunk``, the growth of one chunk of ``paths`` (and its CPU); ``run``, the
    growth of a whole run; ``warm``, the address space of a warm worker after a run on its threads."""
    output = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(config), str(paths), mode],
        capture_output=True, text=True, check=True,
        env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    return json.loads(output.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def grid() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for size, term, regions, recycling in product((5e6, 1e8, 4e8), (10, 30), (4, 24), (False, True)):
        config: dict[str, Any] = {
            "fund": {"size": size, "term_years": term, "deployment_target_fraction": 0.8},
            "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000},
            "loans": {"term_months": min(360, term * 12)},
            "book": {"regions": [{"name": f"r{index}"} for index in range(regions)]},
        }
        if recycling:
            config["market"] = {"avg_exit_year": 2.0, "min_hold_years": 0.5}
            config["fund"] |= {"reinvestment_period_years": term - 1, "min_remaining_term_to_reinvest_years": 0.5}
        label = f"{size / 1e6:>4.0f}M {term:>2}y {regions:>2} regions{' recycling' if recycling else ''}"
        cases.append((label, config))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cost_calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", type=int, default=400, help="paths of the measured chunk")
    parser.add_argument("--run-paths", type=int, default=10_000, help="paths of the smaller whole run")
    args = parser.parse_args()

    from simulation import cost
    from simulation.config import load_config

    started = time.perf_counter()
    print(f"one chunk of {args.paths} paths: address space grown (MiB) and CPU (s), measured / estimated")
    columns = ("loans", "gen", "MiB", "est", "ratio", "CPU s", "est", "ratio")
    print(f"{'case':<32} " + " ".join(f"{column:>{7 if column in ('MiB', 'est') else 6}}" for column in columns))
    for label, data in grid():
        config = load_config(data)
        estimate = cost.estimate(config, args.paths)
        chunk_bytes = estimate.peak_bytes - cost.WORKER_BASE_BYTES - cost.BOOK_LOAN_BYTES * estimate.loans - (
            config.monte_carlo.paths * cost.result_bytes_per_path(config))
        chunk_work = estimate.work / config.monte_carlo.paths * args.paths
        measured = measure(data, args.paths)
        print(f"{label:<32} {estimate.loans:>6.0f} {estimate.generations:>5.2f} {measured['bytes'] / 2**20:>7.1f} "
              f"{chunk_bytes / 2**20:>7.1f} {chunk_bytes / measured['bytes']:>6.2f} {measured['cpu_s']:>6.2f} "
              f"{chunk_work * cost.SECONDS_PER_WORK:>6.2f} "
              f"{chunk_work * cost.SECONDS_PER_WORK / measured['cpu_s']:>6.2f}")  # fmt: skip
    warm = measure({"monte_carlo": {"paths": 100}}, 100, "warm")["bytes"]
    print(f"a warm worker's address space: {warm / 2**20:.0f} MiB (WORKER_BASE_BYTES: "
          f"{cost.WORKER_BASE_BYTES / 2**20:.0f} MiB)")

    small = {"fund": {"size": 5e6, "deployment_target_fraction": 0.8},
             "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000}}  # fmt: skip
    runs = {}
    for paths in (args.run_paths, 5 * args.run_paths):
        runs[paths] = measure(small | {"monte_carlo": {"paths": paths, "chunk_paths": 1000}}, paths, "run")
    low, high = args.run_paths, 5 * args.run_paths
    per_path = (runs[high]["bytes"] - runs[low]["bytes"]) / (high - low)
    config = load_config(small)
    print(f"results kept per path (10-year fund, runs of {low:,} and {high:,} paths): {per_path:.0f} bytes "
          f"measured, {cost.result_bytes_per_path(config):.0f} estimated")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
