"""Benchmark of stress tests and sensitivities (not a test): ``python -m bench.stress``.

On the default 100M fund at 5,000 paths, in one process, each figure next to its baseline measured in the
same run (one plain ``engine.run`` of the base on the same executor):

* the three named scenarios plus the base (``scenarios.stress_test``): seconds and the ratio to one base
  run (target ≤ 3×);
* a 10-parameter tornado at ±20 % (``sensitivity.tornado``, 21 runs): seconds and base runs' worth
  (target ≤ 25);
* both on one core (in process) and on the 2 threads a server job uses (``ThreadPool(2)``); each figure is
  the median over ``--repeat`` pairs of a base run and the work run back to back (the machine is shared and
  its load drifts); the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from bench.memory import PeakTreeRss
from simulation import engine, executors, scenarios, sensitivity
from simulation.config import load_config

GIB = 1024**3


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def paired(repeat: int, base: Callable[[], object], work: Callable[[], object]) -> tuple[float, float, float]:
    """``repeat`` times a base run then the work, back to back (the machine's load drifts; adjacent runs share
    it): the median base seconds, the median work seconds and the median ratio work / base."""
    pairs = [(timed(base), timed(work)) for _ in range(repeat)]
    ratios = sorted(w / b for b, w in pairs)
    return (statistics.median(b for b, _ in pairs), statistics.median(w for _, w in pairs),
            ratios[len(ratios) // 2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__)
    parser.add_argument("--paths", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    config = load_config({"monte_carlo": {"paths": args.paths, "chunk_paths": 1000, "seed": 20231}})
    engine.run(load_config({"monte_carlo": {"paths": 200}}))  # compiled kernels loaded before timing
    presets = list(scenarios.PRESETS.values())
    print(f"default fund, {args.paths:,} paths; each figure the median of {args.repeat} (base run, work) pairs "
          "run back to back")
    with PeakTreeRss() as peak:
        for label, make in (("in process (1 core)", executors.InProcess), ("2 threads (a server job)",
                                                                           lambda: executors.ThreadPool(2))):
            executor = make()

            def base() -> object:
                return engine.run(config, executor=executor)

            base_s, stress_s, stress_x = paired(
                args.repeat, base, lambda: scenarios.stress_test(config, presets, executor=executor))
            _, tornado_s, tornado_x = paired(args.repeat, base, lambda: sensitivity.tornado(config, executor=executor))
            print(f"\n{label}")
            print(f"  one base run (engine.run)              {base_s:7.2f} s   (baseline)")
            print(f"  3 named scenarios + base (4 runs)      {stress_s:7.2f} s   {stress_x:5.2f} x base    target <= 3")
            print(f"  10-parameter tornado (21 runs)         {tornado_s:7.2f} s   {tornado_x:5.2f} base runs target <= 25")
    print(f"\npeak RSS of the process tree: {peak.bytes / GIB:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
