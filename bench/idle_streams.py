"""Benchmark: unary GetSimulation throughput and latency while 1,000 idle streams are held open.

    .venv/bin/python -m bench.idle_streams [--watches 500] [--subscriptions 500] [--calls 20000]

Starts a real ``equihome-sim serve`` on a fresh data directory (default settings). A holder process opens
``--watches`` unauthenticated ``grpc.health.v1.Health/Watch`` streams and ``--subscriptions`` authenticated
``SubscribeEvents`` streams (spread over ``--subscribers`` token subjects, as many callers would), over a
few channels, and keeps them open. A load process runs ``GetSimulation`` (SUMMARY of a finished run) at
32 concurrent callers: one round before the streams open (the baseline) and rounds while they are held.
It prints calls/s, p50 and p99 latency and the server's CPU and RSS for each round, and whether the target
holds: >= 1,500 calls/s with p99 <= 30 ms while the streams are open, every stream still open at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.grpc_service import CALLERS, finished_run, get_load, start_server

CHANNELS = 8
WARM_UP_CALLS = 1_000
TARGET_CALLS_PER_S, TARGET_P99_MS = 1_500, 30.0


# --- The stream holder (a separate process) ---------------------------------------------------------


def hold_streams(address: str, tokens: list[str], watches: int, subscriptions: int, connection: Connection) -> None:
    asyncio.run(_hold(address, tokens, watches, subscriptions, connection))


async def _hold(address: str, tokens: list[str], watches: int, subscriptions: int, connection: Connection) -> None:
    import grpc
    from google.protobuf import duration_pb2
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from equihome.events.v1 import event_service_pb2, event_service_pb2_grpc

    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    subscribe = event_service_pb2.SubscribeEventsRequest(heartbeat_interval=duration_pb2.Duration(seconds=60))
    calls = [
        health_pb2_grpc.HealthStub(channels[index % CHANNELS]).Watch(health_pb2.HealthCheckRequest())
        for index in range(watches)
    ] + [
        event_service_pb2_grpc.EventServiceStub(channels[index % CHANNELS]).SubscribeEvents(
            subscribe, metadata=(("authorization", f"Bearer {tokens[index % len(tokens)]}"),)
        )
        for index in range(subscriptions)
    ]
    await asyncio.gather(*(call.wait_for_connection() for call in calls))
    first = await asyncio.gather(*(call.read() for call in calls[:watches]))  # a watch answers at once
    loop = asyncio.get_running_loop()
    connection.send({"open": sum(1 for message in first if message.status == 1) + subscriptions})
    await loop.run_in_executor(None, connection.recv)  # "check"
    still_open = sum(1 for call in calls if not call.done())
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close()
    connection.send({"still_open": still_open})


# --- The load (a separate process) ------------------------------------------------------------------


async def load(address: str, token: str, rounds: int, calls: int, connection: Connection) -> None:
    import grpc

    from equihome.simulation.v1.simulation_service_pb2_grpc import SimulationServiceStub

    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = SimulationServiceStub(channel)
        name = await finished_run(stub, metadata)
        await get_load(stub, metadata, name, WARM_UP_CALLS)
        loop = asyncio.get_running_loop()
        for _ in range(rounds):
            await loop.run_in_executor(None, connection.recv)  # "go"
            seconds, latencies = await get_load(stub, metadata, name, calls)
            connection.send({
                "calls_per_s": len(latencies) / seconds,
                "p50_ms": float(np.percentile(latencies, 50) * 1000),
                "p99_ms": float(np.percentile(latencies, 99) * 1000),
            })  # fmt: skip


def run_load(address: str, token: str, rounds: int, calls: int, connection: Connection) -> None:
    asyncio.run(load(address, token, rounds, calls, connection))


# --- The driver -------------------------------------------------------------------------------------


def measured_round(load_end: Connection, server: psutil.Process) -> dict[str, Any]:
    cpu_before = sum(server.cpu_times()[:2])
    load_end.send("go")
    figures: dict[str, Any] = load_end.recv()
    figures["server_rss_mib"] = server.memory_info().rss / 2**20
    figures["server_cpu_s"] = sum(server.cpu_times()[:2]) - cpu_before
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--watches", type=int, default=500, help="unauthenticated health Watch streams")
    parser.add_argument("--subscriptions", type=int, default=500, help="authenticated SubscribeEvents streams")
    parser.add_argument("--subscribers", type=int, default=10, help="token subjects the subscriptions use")
    parser.add_argument("--calls", type=int, default=20_000, help="GetSimulation calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds while the streams are open")
    args = parser.parse_args()

    from server.auth import SCOPES, issue_dev_token

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="equihome-bench-") as scratch:
        data_dir = Path(scratch) / "data"
        server_process, port = start_server(data_dir, Path(scratch) / "server.log", "--no-metrics-enabled")
        try:
            server = psutil.Process(server_process.pid)
            address = f"127.0.0.1:{port}"
            tokens = [issue_dev_token(data_dir, ["events:read"], subject=f"subscriber-{index}")
                      for index in range(args.subscribers)]  # fmt: skip
            load_end, load_child = context.Pipe()
            loader = context.Process(target=run_load, args=(
                address, issue_dev_token(data_dir, SCOPES, subject="reader"), 1 + args.rounds, args.calls, load_child))
            loader.start()
            baseline = measured_round(load_end, server)
            hold_end, hold_child = context.Pipe()
            holder = context.Process(target=hold_streams, args=(
                address, tokens, args.watches, args.subscriptions, hold_child))
            holder.start()
            opened = hold_end.recv()["open"]
            loaded = [measured_round(load_end, server) for _ in range(args.rounds)]
            hold_end.send("check")
            still_open = hold_end.recv()["still_open"]
            for process in (loader, holder):
                process.join(timeout=60)
        finally:
            server_process.terminate()
            server_process.wait(timeout=30)
    report(args, baseline, loaded, opened, still_open)


def report(args: argparse.Namespace, baseline: dict[str, Any], loaded: list[dict[str, Any]], opened: int,
           still_open: int) -> None:  # fmt: skip
    streams = args.watches + args.subscriptions
    print(f"GetSimulation (SUMMARY), {CALLERS} concurrent callers, rounds of {args.calls:,} calls")

    def line(label: str, figures: dict[str, Any]) -> None:
        print(f"  {label:<26} {figures['calls_per_s']:7,.0f} calls/s   p50 {figures['p50_ms']:6.2f} ms   "
              f"p99 {figures['p99_ms']:6.2f} ms   server CPU {figures['server_cpu_s']:5.1f} s   "
              f"RSS {figures['server_rss_mib']:5.0f} MiB")

    line("baseline (no streams)", baseline)
    for index, figures in enumerate(loaded, 1):
        line(f"{streams:,} streams open, round {index}", figures)
    median = sorted(loaded, key=lambda figures: figures["calls_per_s"])[len(loaded) // 2]
    print(f"  streams: {args.watches} health watches (no token) + {args.subscriptions} subscriptions "
          f"({args.subscribers} callers): {opened} open at the start, {still_open} still open at the end")
    drop = median["calls_per_s"] / baseline["calls_per_s"] - 1
    print(f"  median round vs baseline: {drop:+.1%} calls/s, p99 {median['p99_ms']:.2f} ms vs "
          f"{baseline['p99_ms']:.2f} ms")
    met = (median["calls_per_s"] >= TARGET_CALLS_PER_S and median["p99_ms"] <= TARGET_P99_MS
           and opened == still_open == streams)  # fmt: skip
    print(f"  target (median round): >= {TARGET_CALLS_PER_S:,} calls/s, p99 <= {TARGET_P99_MS:.0f} ms, all "
          f"{streams:,} streams open:", "met" if met else "MISSED")
    print(json.dumps({"baseline": baseline, "loaded": loaded, "median_calls_per_s": statistics.median(
        figures["calls_per_s"] for figures in loaded)}))


if __name__ == "__main__":
    main()
