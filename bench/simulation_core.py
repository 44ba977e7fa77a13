"""Benchmark of the simulation core (not a test): ``make bench`` or ``python -m bench.simulation_core``.

Runs the 100M default fund (monthly, 10 years) at 10,000 paths on 2 workers and at 100,000 paths,
printing paths/s, loan-months/s and peak RSS of the whole process tree, and in the same run a naive
per-loan Python loop on a small sample for the speed ratio. Targets (issue #2): 10,000 paths in
≤ 5 s with peak RSS ≤ 1.5 GiB; 100,000 paths with peak RSS < 2 GiB.
"""

from __future__ import annotations

import argparse
import time

from bench.memory import PeakTreeRss
from bench import naive
from simulation import engine
from simulation.config import load_config
from simulation.lifecycle import ModelParams

GIB = 1024**3


def measure(paths: int, workers: int, chunk: int) -> dict[str, float]:
    config = load_config({"monte_carlo": {"paths": paths, "workers": workers, "chunk_paths": chunk}})
    with PeakTreeRss() as peak:
        started = time.perf_counter()
        result = engine.run(config)
        seconds = time.perf_counter() - started
    loan_months = paths * result.info.loans_in_book * config.term_months
    return {"paths": paths, "workers": workers, "seconds": seconds, "paths_per_s": paths / seconds,
            "loan_months_per_s": loan_months / seconds, "peak_rss_gib": peak.bytes / GIB,
            "lp_irr_mean": result.metrics["lp_net_irr"].mean}


def naive_paths_per_second(paths: int) -> float:
    config = load_config({})
    params = ModelParams.from_config(config)
    book = engine.book_for(config)
    started = time.perf_counter()
    naive.run(params, book, paths, seed=1)
    return paths / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-100k", action="store_true", help="skip the 100,000-path memory run")
    parser.add_argument("--naive-paths", type=int, default=5)
    args = parser.parse_args()

    runs = [measure(10_000, 2, 1000), measure(10_000, 1, 1000)]
    if not args.skip_100k:
        runs.append(measure(100_000, 2, 2000))
    naive_rate = naive_paths_per_second(args.naive_paths)

    print(f"{'paths':>8} {'workers':>7} {'seconds':>8} {'paths/s':>9} {'loan-months/s':>14} {'peak RSS':>9}"
          f" {'mean LP IRR':>11}")
    for r in runs:
        print(f"{r['paths']:>8,} {r['workers']:>7} {r['seconds']:>8.2f} {r['paths_per_s']:>9,.0f}"
              f" {r['loan_months_per_s']:>14,.3g} {r['peak_rss_gib']:>7.2f} GiB {r['lp_irr_mean']:>11.4%}")
    best = runs[0]
    print(f"naive per-loan Python loop: {naive_rate:.2f} paths/s ({args.naive_paths} paths)")
    print(f"vectorised / naive: {best['paths_per_s'] / naive_rate:,.0f}x")
    print(f"target 10k paths <= 5 s: {'met' if best['seconds'] <= 5 else 'MISSED'} ({best['seconds']:.2f} s); "
          f"peak RSS <= 1.5 GiB: {'met' if best['peak_rss_gib'] <= 1.5 else 'MISSED'}")
    if not args.skip_100k:
        big = runs[-1]
        print(f"target 100k paths peak RSS < 2 GiB: {'met' if big['peak_rss_gib'] < 2 else 'MISSED'} "
              f"({big['peak_rss_gib']:.2f} GiB)")


if __name__ == "__main__":
    main()
