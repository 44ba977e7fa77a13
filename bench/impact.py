"""Benchmark of the portfolio impact analysis (not a test): ``python -m bench.impact``.

On the default 100M fund (about 350 loans, monthly, 10 years) at 2,000 paths, in this process:

* baseline: one plain ``engine.run`` of the fund (what any full re-simulation costs);
* cold: building the base cache and analysing one application on it;
* fast path with the base cached: p50 / p99 over 50 different applications (amounts, LTVs, zones, regions,
  origination months), counter-offers off so each is one candidate;
* exact path: one application re-simulated in full (plus its fast-path evaluation);
* counter-offer search: applications above the LTV / ticket limits, p50 and max;
* peak RSS of the process.

Targets (issue #10): fast p50 ≤ 150 ms, p99 ≤ 400 ms; exact ≤ 1.5 s; counter-offer ≤ 1 s;
cold ≤ 2.5 s.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from simulation import engine
from simulation.config import load_config
from simulation.impact import CandidateLoan, Policy, analyze, build_base


def applications(count: int, seed: int = 7) -> list[CandidateLoan]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        value = float(rng.uniform(400_000, 1_200_000))
        ltv = float(rng.uniform(0.2, 0.6))
        out.append(
            CandidateLoan(
                f"bench-{i}",
                round(value * ltv, -2),
                value,
                zone=int(rng.integers(0, 3)),
                region=int(rng.integers(0, 4)),
                origination_month=int(rng.integers(0, 24)),
            )
        )
    return out


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=2000)
    parser.add_argument("--applications", type=int, default=50)
    args = parser.parse_args()
    config = load_config({"monte_carlo": {"paths": args.paths}})
    engine.run(load_config({"monte_carlo": {"paths": 100}}))  # load the compiled kernels

    baseline, _ = timed(engine.run, config)
    print(f"baseline  engine.run, {args.paths} paths: {baseline:.3f} s")

    loans = applications(args.applications)
    cold_base, base = timed(build_base, config)
    cold_analysis, _ = timed(analyze, base, loans[0], Policy(counter_offer=False))
    print(
        f"cold      base cache {cold_base:.3f} s + analysis {cold_analysis:.3f} s = "
        f"{cold_base + cold_analysis:.3f} s   (target <= 2.5 s)"
    )

    fast = np.array([timed(analyze, base, loan, Policy(counter_offer=False))[0] for loan in loans])
    p50, p99 = np.percentile(fast, (50, 99))
    print(
        f"fast      {len(loans)} applications: p50 {1e3 * p50:.0f} ms, p99 {1e3 * p99:.0f} ms, "
        f"max {1e3 * fast.max():.0f} ms   (targets <= 150 ms / <= 400 ms)"
    )

    exact, result = timed(analyze, base, loans[0], exact=True, policy=Policy(counter_offer=False))
    print(f"exact     one application: {exact:.3f} s   (target <= 1.5 s)")

    offers = [
        CandidateLoan(f"offer-{i}", 0.75 * value, value, zone=i % 3, region=i % 4)
        for i, value in enumerate((520_000.0, 640_000.0, 700_000.0, 800_000.0, 900_000.0))
    ]
    searches = []
    for loan in offers:
        seconds, result = timed(analyze, base, loan)
        searches.append(seconds)
        rec = result.recommendation
        print(
            f"          {loan.loan_id}: {rec.decision} {rec.amount:,.0f} of {loan.amount:,.0f} "
            f"in {seconds:.3f} s"
        )
    print(
        f"offer     counter-offer search: p50 {np.median(searches):.3f} s, max {max(searches):.3f} s   "
        f"(target <= 1 s)"
    )
    print(f"memory    peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
