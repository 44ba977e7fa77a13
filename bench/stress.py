"""Benchmark of stress tests and sensitivities (not a test): ``python -m bench.stress``.

On the default 100M fund at 5,000 paths, in one process, each figure next to its baseline measured in the
same run (one plain ``engine.run`` of the base on the same executor):

* the three named scenarios plus the base (``scenarios.stress_test``): seconds and the ratio to one base
  run (target ≤ 3×);
* a 10-parameter tornado at ±20 % (``sensitivity.tornado``, 21 runs): seconds and base runs' worth
  (target ≤ 25);
* both on one core (in process) and on the 2 threads a server job uses (``ThreadPool(2)``), best of
  ``--repeat``; the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench.memory import PeakTreeRss
from simulation import engine, executors, scenarios, sensitivity
from simulation.config import load_config

GIB = 1024**3


def best_of(repeat: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__)
    parser.add_argument("--paths", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    config = load_config({"monte_carlo": {"paths": args.paths, "chunk_paths": 1000, "seed": 20231}})
    engine.run(load_config({"monte_carlo": {"paths": 200}}))  # compiled kernels loaded before timing
    presets = list(scenarios.PRESETS.values())
    print(f"default fund, {args.paths:,} paths, best of {args.repeat}")
    with PeakTreeRss() as peak:
        for label, make in (("in process (1 core)", executors.InProcess), ("2 threads (a server job)",
                                                                           lambda: executors.ThreadPool(2))):
            executor = make()
            base = best_of(args.repeat, lambda: engine.run(config, executor=executor))
            stress = best_of(args.repeat, lambda: scenarios.stress_test(config, presets, executor=executor))
            tornado = best_of(1, lambda: sensitivity.tornado(config, executor=executor))
            print(f"\n{label}")
            print(f"  one base run (engine.run)              {base:7.2f} s   (baseline)")
            print(f"  3 named scenarios + base (4 runs)      {stress:7.2f} s   {stress / base:5.2f} x base   target <= 3")
            print(f"  10-parameter tornado (21 runs)         {tornado:7.2f} s   {tornado / base:5.2f} base runs "
                  "target <= 25")
    print(f"\npeak RSS of the process tree: {peak.bytes / GIB:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
