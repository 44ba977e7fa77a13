"""Benchmark of the gRPC service (not a test): ``python -m bench.grpc_service``.

Starts a real ``equihome-sim serve`` subprocess on a fresh data directory, then, from a separate client
process:

(a) unary ``GetSimulation`` (SUMMARY, the default view, of a finished run) at 32 concurrent callers, in
    three rounds of 20,000 calls: calls/s, p50 and p99 latency, and the server process's CPU use per round
    (the median round is the figure; the spread shows how noisy the machine is);
(b) ``RunSimulation`` of the default 100M fund at 10,000 paths, alternating with the core ``engine.run`` on
    the same config in the client process: wall times and the gRPC + serialisation overhead, from the
    fastest of each (the least disturbed by other load on the machine);
(c) a small run answering at once: ``RunSimulation`` of the default fund at 1,000 paths, warm (workers
    started and warmed at server start, caches hot), 20 calls one after the other: p50 and p99 latency.

Targets: ≥ 2,000 GetSimulation/s with p99 ≤ 25 ms; RunSimulation at most 10 % slower than the core at
10,000 paths (issue #3); a warm 1,000-path RunSimulation ≤ 250 ms p50 (issue #13).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
from google.protobuf import json_format

from equihome.simulation.v1 import simulation_config_pb2, simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from equihome.simulation.v1.simulation_service_pb2_grpc import SimulationServiceStub
from server.auth import SCOPES, issue_dev_token
from simulation import engine
from simulation.config import load_config

CALLERS = 32
GET_CALLS = 20_000
GET_ROUNDS = 3
WARM_UP_CALLS = 1_000
RUN_PATHS = 10_000
RUN_REPEATS = 4
SMALL_RUN_CALLS = 20
SMALL_RUN_CONFIG = {"monte_carlo": {"paths": 1000}}
SMALL_FUND = {
    "fund": {"size": 5_000_000, "deployment_target_fraction": 0.8},
    "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000},
    "monte_carlo": {"paths": 500},
}
RUN_CONFIG = {"monte_carlo": {"paths": RUN_PATHS}}
EQUIHOME_SIM = Path(sys.executable).with_name("equihome-sim")


# --- The client process ----------------------------------------------------------------------------


def proto_config(data: dict[str, Any]) -> simulation_config_pb2.SimulationConfig:
    return json_format.ParseDict(data, simulation_config_pb2.SimulationConfig())


async def finished_run(stub: SimulationServiceStub, metadata: Any) -> str:
    simulation = simulation_pb2.Simulation(config=proto_config(SMALL_FUND))
    created = await stub.CreateSimulation(
        service_pb2.CreateSimulationRequest(simulation=simulation), metadata=metadata
    )
    name = created.simulation.name
    async for _ in stub.WatchSimulation(service_pb2.WatchSimulationRequest(name=name), metadata=metadata):
        pass
    return name


async def get_load(
    stub: SimulationServiceStub, metadata: Any, name: str, calls: int
) -> tuple[float, list[float]]:
    """``calls`` GetSimulation calls spread over CALLERS concurrent callers: (seconds, latencies)."""
    request = service_pb2.GetSimulationRequest(name=name)
    latencies: list[float] = []
    remaining = calls

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await stub.GetSimulation(request, metadata=metadata, timeout=10)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return time.perf_counter() - started, latencies


async def client(address: str, token: str, server_pid: int) -> dict[str, Any]:
    metadata = (("authorization", f"Bearer {token}"),)
    server = psutil.Process(server_pid)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = SimulationServiceStub(channel)
        name = await finished_run(stub, metadata)
        await get_load(stub, metadata, name, WARM_UP_CALLS)
        rounds = []
        for _ in range(GET_ROUNDS):
            cpu_before = sum(server.cpu_times()[:2])
            seconds, latencies = await get_load(stub, metadata, name, GET_CALLS)
            rounds.append({
                "calls_per_s": len(latencies) / seconds,
                "p50_ms": float(np.percentile(latencies, 50) * 1000),
                "p99_ms": float(np.percentile(latencies, 99) * 1000),
                "server_cpu_cores": (sum(server.cpu_times()[:2]) - cpu_before) / seconds,
            })  # fmt: skip

        run = service_pb2.RunSimulationRequest(config=proto_config(RUN_CONFIG))
        await stub.RunSimulation(service_pb2.RunSimulationRequest(config=proto_config(SMALL_FUND)),
                                 metadata=metadata, timeout=60)  # a warm worker, as a busy server has
        config = load_config(RUN_CONFIG)
        run_seconds, core_seconds = [], []
        for _ in range(RUN_REPEATS):
            started = time.perf_counter()
            reply = await stub.RunSimulation(run, metadata=metadata, timeout=300)
            run_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            core = engine.run(config)
            core_seconds.append(time.perf_counter() - started)
        small = service_pb2.RunSimulationRequest(config=proto_config(SMALL_RUN_CONFIG))
        await stub.RunSimulation(small, metadata=metadata, timeout=60)  # the config's caches, as in use
        small_seconds = []
        for _ in range(SMALL_RUN_CALLS):
            started = time.perf_counter()
            await stub.RunSimulation(small, metadata=metadata, timeout=60)
            small_seconds.append(time.perf_counter() - started)
    if reply.simulation.result.metrics.lp_net_irr.mean != core.metrics["lp_net_irr"].mean:
        raise RuntimeError("the service and the core disagree on the result")
    return {"get_rounds": rounds, "run_seconds": run_seconds, "core_seconds": core_seconds,
            "small_run_seconds": small_seconds}


# --- The driver ------------------------------------------------------------------------------------


def start_server(
    data_dir: Path, log: Path, *arguments: str, environment: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """``equihome-sim serve`` on a free port with ``data_dir``, logging to ``log``; ``arguments`` are more
    flags, ``environment`` its variables (default: this process's). Returns it once it serves, and its port."""
    process = subprocess.Popen(
        [str(EQUIHOME_SIM), "serve", "--port", "0", "--data-dir", str(data_dir), *arguments],
        stdout=subprocess.PIPE, stderr=log.open("wb"), env=environment,
    )  # fmt: skip
    assert process.stdout is not None
    banner = process.stdout.readline().decode()
    port = re.search(r"serving gRPC on [^ ]+:(\d+)", banner)
    if port is None:
        process.kill()
        raise RuntimeError(f"the server did not start: {banner!r}; see {log}")
    return process, int(port.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(  # the client process's entry point
        "--client", nargs=3, metavar=("ADDRESS", "TOKEN", "SERVER_PID"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.client:
        address, token, pid = args.client
        print(json.dumps(asyncio.run(client(address, token, int(pid)))))
        return

    with tempfile.TemporaryDirectory(prefix="equihome-bench-") as scratch:
        data_dir = Path(scratch) / "data"
        server, port = start_server(data_dir, Path(scratch) / "server.log", "--no-metrics-enabled")
        try:
            token = issue_dev_token(data_dir, SCOPES)
            command = [sys.executable, "-m", "bench.grpc_service", "--client", f"127.0.0.1:{port}", token]
            command.append(str(server.pid))
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        finally:
            server.terminate()
            server.wait(timeout=30)
    measured = json.loads(output)

    rounds = sorted(measured["get_rounds"], key=lambda r: r["calls_per_s"])
    print(f"GetSimulation (SUMMARY, {CALLERS} concurrent callers, {GET_ROUNDS} rounds of {GET_CALLS:,})")
    for r in rounds:
        print(f"  {r['calls_per_s']:,.0f} calls/s   p50 {r['p50_ms']:.2f} ms   p99 {r['p99_ms']:.2f} ms"
              f"   server CPU {r['server_cpu_cores']:.2f} cores")
    median = rounds[len(rounds) // 2]
    print("  target (median round): >= 2,000 calls/s with p99 <= 25 ms:",
          "met" if median["calls_per_s"] >= 2000 and median["p99_ms"] <= 25 else "MISSED")
    grpc_s, core_s = min(measured["run_seconds"]), min(measured["core_seconds"])
    overhead = grpc_s / core_s - 1
    print(f"RunSimulation, default 100M fund, {RUN_PATHS:,} paths ({RUN_REPEATS} alternating runs each)")
    print(f"  gRPC {_seconds(measured['run_seconds'])}")
    print(f"  core {_seconds(measured['core_seconds'])}")
    print(f"  fastest: gRPC {grpc_s:.2f} s vs core {core_s:.2f} s, overhead {overhead:+.1%}"
          f" (medians {statistics.median(measured['run_seconds']):.2f} s vs"
          f" {statistics.median(measured['core_seconds']):.2f} s)")
    print("  target: overhead <= 10 %:", "met" if overhead <= 0.10 else "MISSED")
    small = np.array(measured["small_run_seconds"]) * 1000
    p50, p99 = np.percentile(small, 50), np.percentile(small, 99)
    print(f"RunSimulation, default fund, 1,000 paths, warm, {len(small)} calls: p50 {p50:.0f} ms, p99 {p99:.0f} ms"
          f" (min {small.min():.0f} ms)")
    print("  target: p50 <= 250 ms:", "met" if p50 <= 250 else "MISSED")


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{value:.2f} s" for value in values)


if __name__ == "__main__":
    main()
