"""Benchmark of the simulation core (not a test): ``make bench`` or ``python -m bench.simulation_core``.

In one run, on the default 100M fund (monthly, 10 years):

* start-up of the shared worker pool (spawn, imports, compiled kernels), paid once per process;
* 10,000 paths on 1 worker (in process) and on 2 workers (the warm shared pool): seconds, paths/s and the
  peak RSS of the whole process tree, and the scaling 1 → 2 workers;
* the previous engine version (a git revision, default ``BASELINE``) on the same runs, in a subprocess on a
  snapshot of its ``simulation/``, for the speed ratio;
* 100,000 paths on 2 workers: seconds and peak RSS;
* the profile's top entries (2,000 paths in process);
* a naive per-loan Python loop of the same model on a few paths.

Targets (issue #13): 10,000 paths ≤ 1.5 s on 2 workers, scaling ≥ 1.8×, 100,000 paths < 1.5 GiB.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench import naive
from bench.memory import PeakTreeRss
from simulation import ENGINE_VERSION, engine, executors
from simulation.config import load_config
from simulation.lifecycle import ModelParams

GIB = 1024**3
BASELINE = "4b60b3a"  # engine 2.0.0: the money fixes, before the fast core
REPO = Path(__file__).resolve().parent.parent


def default_fund(paths: int, workers: int) -> dict:
    return {"monte_carlo": {"paths": paths, "workers": workers, "chunk_paths": 1000, "seed": 20231}}


def measure(paths: int, workers: int, repeat: int = 1) -> dict[str, float]:
    """Best of ``repeat`` runs (wall clock), with the peak RSS of the process tree over all of them."""
    config = load_config(default_fund(paths, workers))
    best = float("inf")
    with PeakTreeRss() as peak:
        for _ in range(repeat):
            started = time.perf_counter()
            result = engine.run(config)
            best = min(best, time.perf_counter() - started)
    return {"paths": paths, "workers": workers, "seconds": best, "paths_per_s": paths / best,
            "peak_rss_gib": peak.bytes / GIB, "lp_irr_mean": result.metrics["lp_net_irr"].mean}


BASELINE_RUNNER = """
import json, sys, time, threading, psutil
from simulation import ENGINE_VERSION, engine
from simulation.config import load_config
paths, workers, repeat = (int(a) for a in sys.argv[1:4])
config = load_config({"monte_carlo": {"paths": paths, "workers": workers, "chunk_paths": 1000, "seed": 20231}})
peak, stop = [0], threading.Event()
def sample():
    me = psutil.Process()
    while not stop.is_set():
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try: total += child.memory_info().rss
            except psutil.Error: pass
        peak[0] = max(peak[0], total); stop.wait(0.02)
thread = threading.Thread(target=sample, daemon=True); thread.start()
best = float("inf")
for _ in range(repeat):
    started = time.perf_counter(); result = engine.run(config); best = min(best, time.perf_counter() - started)
stop.set(); thread.join()
print(json.dumps({"version": ENGINE_VERSION, "seconds": best, "peak_rss_gib": peak[0] / 1024**3,
                  "lp_irr_mean": result.metrics["lp_net_irr"].mean}))
"""


def baseline(revision: str, runs: list[tuple[int, int]], repeat: int) -> list[dict]:
    """The engine at ``revision``, measured in a subprocess on a snapshot of its ``simulation/`` package."""
    with tempfile.TemporaryDirectory() as snapshot:
        archive = subprocess.run(["git", "archive", revision, "simulation"], cwd=REPO, capture_output=True,
                                 check=True).stdout
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(snapshot, filter="data")
        out = []
        for paths, workers in runs:
            done = subprocess.run([sys.executable, "-c", BASELINE_RUNNER, str(paths), str(workers), str(repeat)],
                                  cwd=snapshot, capture_output=True, text=True, check=True)
            out.append({"paths": paths, "workers": workers, **json.loads(done.stdout)})
        return out


def profile_top(paths: int, entries: int) -> str:
    config = load_config(default_fund(paths, 1))
    engine.run(config)
    profiler = cProfile.Profile()
    profiler.runcall(engine.run, config)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(entries)
    lines = text.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
    return "\n".join(lines[start:start + entries + 1])


def naive_paths_per_second(paths: int) -> float:
    config = load_config({})
    params = ModelParams.from_config(config)
    book = engine.book_for(config)
    started = time.perf_counter()
    naive.run(params, book, paths, seed=1)
    return paths / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the previous engine")
    parser.add_argument("--no-baseline", action="store_true", help="skip the previous engine")
    parser.add_argument("--skip-100k", action="store_true", help="skip the 100,000-path memory run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (the best is kept)")
    parser.add_argument("--naive-paths", type=int, default=3)
    args = parser.parse_args()

    started = time.perf_counter()
    executors.shared_pool(2).warm_up()
    startup = time.perf_counter() - started
    print(f"engine {ENGINE_VERSION}: shared pool of 2 workers started and warm in {startup:.2f} s "
          "(once per process, off every run's path)")

    runs = [measure(10_000, 1, args.repeat), measure(10_000, 2, args.repeat)]
    if not args.skip_100k:
        runs.append(measure(100_000, 2))
    print(f"{'paths':>8} {'workers':>7} {'seconds':>8} {'paths/s':>9} {'peak RSS':>9} {'mean LP IRR':>11}")
    for r in runs:
        print(f"{r['paths']:>8,} {r['workers']:>7} {r['seconds']:>8.2f} {r['paths_per_s']:>9,.0f}"
              f" {r['peak_rss_gib']:>7.2f} GiB {r['lp_irr_mean']:>11.4%}")
    one, two = runs[0], runs[1]
    scaling = one["seconds"] / two["seconds"]
    print(f"scaling 1 -> 2 workers: {scaling:.2f}x")

    if not args.no_baseline:
        old = baseline(args.baseline, [(10_000, 1), (10_000, 2)], args.repeat)
        for new, previous in zip((one, two), old):
            print(f"previous engine {previous['version']} ({args.baseline}), 10,000 paths on {previous['workers']} "
                  f"worker(s): {previous['seconds']:.2f} s, peak RSS {previous['peak_rss_gib']:.2f} GiB -> "
                  f"now {new['seconds']:.2f} s: {previous['seconds'] / new['seconds']:.2f}x faster")

    print("profile, 2,000 paths in process (top entries by own time):")
    print(profile_top(2000, 12))
    naive_rate = naive_paths_per_second(args.naive_paths)
    print(f"naive per-loan Python loop: {naive_rate:.2f} paths/s; vectorised engine on 2 workers: "
          f"{two['paths_per_s'] / naive_rate:,.0f}x faster")

    print(f"target 10k paths <= 1.5 s on 2 workers: {'met' if two['seconds'] <= 1.5 else 'MISSED'} "
          f"({two['seconds']:.2f} s)")
    print(f"target scaling >= 1.8x: {'met' if scaling >= 1.8 else 'MISSED'} ({scaling:.2f}x)")
    if not args.skip_100k:
        big = runs[-1]
        print(f"target 100k paths peak RSS < 1.5 GiB: {'met' if big['peak_rss_gib'] < 1.5 else 'MISSED'} "
              f"({big['peak_rss_gib']:.2f} GiB, {big['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
