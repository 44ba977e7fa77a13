"""Benchmark: sandbox events through the adapters and the event bus to N concurrent gRPC subscribers.

    .venv/bin/python -m bench.event_fanout [--subscribers 200] [--rate 100] [--duration 60]

This process runs the sandbox (emitting ``--rate`` events per second in total, spread over the three
systems), the integration runtime and the gRPC server with the EventService. Separate processes
(spawned, ``--client-processes``) open ``--subscribers`` SubscribeEvents streams over a few channels
and record, per received event, its cursor and the receipt time. Afterwards this process hands them
the upstream frame time of every cursor, and they report deliveries per second and end-to-end latency
(sandbox frame ``timestamp``, the ``frame_ids`` extension -> client receipt, same machine clock). The server's RSS is printed at
start, middle and end of the measured window. Targets (on the 2-core dev machine): >= 20,000
deliveries/s in total, p99 <= 100 ms, flat memory. The RSS includes the bench's own record of origin
times (8 bytes per event).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from array import array
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

CLIENT_CHANNELS = 4


# --- The subscribers (a separate process) -------------------------------------------------------


def run_subscribers(port: int, subscribers: int, connection: Connection) -> None:
    asyncio.run(_subscribe_all(port, subscribers, connection))


async def _subscribe_all(port: int, subscribers: int, connection: Connection) -> None:
    import grpc

    from equihome.events.v1 import event_service_pb2, event_service_pb2_grpc

    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(CLIENT_CHANNELS)]
    cursors = [array("q") for _ in range(subscribers)]
    receipts = [array("d") for _ in range(subscribers)]
    recording = asyncio.Event()

    async def subscriber(index: int) -> None:
        stub = event_service_pb2_grpc.EventServiceStub(channels[index % CLIENT_CHANNELS])
        call = stub.SubscribeEvents(event_service_pb2.SubscribeEventsRequest())
        async for response in call:
            if recording.is_set() and response.event.WhichOneof("payload") != "heartbeat":
                cursors[index].append(int(response.event.cursor))
                receipts[index].append(time.time())

    tasks = [asyncio.create_task(subscriber(index)) for index in range(subscribers)]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, connection.recv)  # "record": every stream is attached
    cpu_start = time.process_time()
    recording.set()
    await loop.run_in_executor(None, connection.recv)  # "stop"
    recording.clear()
    cpu = time.process_time() - cpu_start
    first_cursor, origins = await loop.run_in_executor(None, connection.recv)
    origin_of = {first_cursor + offset: origin for offset, origin in enumerate(origins) if origin == origin}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()

    latencies = array("d")
    delivered = 0
    unmatched = 0
    for per_cursor, per_receipt in zip(cursors, receipts, strict=True):
        delivered += len(per_cursor)
        for cursor, receipt in zip(per_cursor, per_receipt, strict=True):
            origin = origin_of.get(cursor)
            if origin is None:
                unmatched += 1
            else:
                latencies.append(receipt - origin)
    connection.send({"delivered": delivered, "latencies": latencies, "unmatched": unmatched, "cpu_s": cpu})


# --- The server (this process) --------------------------------------------------------------------


async def serve_and_measure(args: argparse.Namespace) -> None:
    from server.app import Lifecycle, build_server
    from server.integration.runtime import IntegrationRuntime
    from server.observability import Metrics
    from server.services.events import events_binding
    from server.settings import Settings
    from server.store import Store

    data_dir = Path(tempfile.mkdtemp(prefix="equihome-fanout-"))
    settings = Settings(
        port=0,
        metrics_enabled=False,
        data_dir=data_dir,
        insecure_disable_auth=True,
        log_level="WARNING",
        integrations="sandbox",
        integration_sandbox_events_per_second=args.rate / 3,
        integration_sandbox_extensions="frame_ids",  # publication timestamps, for the latency
    )
    lifecycle, metrics = Lifecycle(), Metrics()
    store = await Store.open(data_dir)
    lifecycle.add_close_hook(store.close)
    runtime = await IntegrationRuntime.start(settings, store, metrics.registry)
    lifecycle.add_close_hook(runtime.aclose)
    bindings = [events_binding(runtime.bus, lifecycle)]
    app = build_server(settings, bindings, lifecycle=lifecycle, metrics=metrics)
    await app.start()

    # Origin times of the cursors fanned out while measuring: cursors are consecutive, so an array of
    # floats from the first one (8 bytes per event) keeps the harness out of the server's RSS figures.
    origins = array("d")
    first_cursor: list[int] = []
    measuring = False

    def observe(cursor: int, origin: float | None) -> None:
        if not measuring:
            return
        if not first_cursor:
            first_cursor.append(cursor)
        origins.append(float("nan") if origin is None else origin)

    runtime.bus.fan_out_observers.append(observe)
    server = psutil.Process()
    context = multiprocessing.get_context("spawn")
    pipes, clients = [], []
    for share in _shares(args.subscribers, args.client_processes):
        ours, theirs = context.Pipe()
        pipes.append(ours)
        clients.append(context.Process(target=run_subscribers, args=(app.port, share, theirs), daemon=True))
    for client in clients:
        client.start()
    try:
        async with asyncio.timeout(60):
            while runtime.bus.subscriber_count < args.subscribers:
                await asyncio.sleep(0.05)
        await asyncio.sleep(args.warmup)
        _send_all(pipes, "record")
        measuring = True
        rss = [("start", server.memory_info().rss)]
        cpu_start, started = time.process_time(), time.perf_counter()
        await asyncio.sleep(args.duration / 2)
        rss.append(("middle", server.memory_info().rss))
        await asyncio.sleep(args.duration / 2)
        measuring = False
        _send_all(pipes, "stop")
        elapsed = time.perf_counter() - started
        rss.append(("end", server.memory_info().rss))
        server_cpu = time.process_time() - cpu_start
        _send_all(pipes, (first_cursor[0] if first_cursor else 0, origins))
        loop = asyncio.get_running_loop()
        results = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
        result: dict[str, Any] = {
            "delivered": sum(part["delivered"] for part in results),
            "latencies": [latency for part in results for latency in part["latencies"]],
            "unmatched": sum(part["unmatched"] for part in results),
            "cpu_s": sum(part["cpu_s"] for part in results),
        }
    finally:
        for client in clients:
            client.join(timeout=30)
            if client.is_alive():
                client.kill()
        await app.shutdown(grace=0)
    report(args, result, elapsed, len(origins), rss, server_cpu)


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def _send_all(pipes: list[Connection], message: object) -> None:
    for pipe in pipes:
        pipe.send(message)


def report(
    args: argparse.Namespace,
    result: dict[str, Any],
    elapsed: float,
    events: int,
    rss: list[tuple[str, int]],
    server_cpu: float,
) -> None:
    latencies = sorted(result["latencies"])

    def quantile(share: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000

    rate = result["delivered"] / elapsed
    print(
        f"event fan-out: {args.subscribers} subscribers in {args.client_processes} client process(es), "
        f"{args.rate:g} upstream events/s, {elapsed:.1f} s measured"
    )
    print(f"  upstream events fanned out   {events} ({events / elapsed:.1f}/s)")
    print(f"  deliveries                   {result['delivered']} ({rate:,.0f}/s; target >= 20,000/s)")
    print(f"  expected deliveries          {events * args.subscribers} (events x subscribers)")
    print(f"  end-to-end latency           p50 {quantile(0.5):.1f} ms  p99 {quantile(0.99):.1f} ms  "
          f"max {quantile(1.0):.1f} ms  (target p99 <= 100 ms)")  # fmt: skip
    print(f"  deliveries without origin    {result['unmatched']}")
    print(f"  CPU                          server {server_cpu / elapsed:.2f} cores, "
          f"subscribers {result['cpu_s'] / elapsed:.2f} cores (machine has {os.cpu_count()})")  # fmt: skip
    memory = ", ".join(f"{name} {value / 2**20:.1f} MiB" for name, value in rss)
    print(f"  server RSS                   {memory}")


def main() -> None:
    summary = (__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.event_fanout", description=summary)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="upstream events per second, all systems")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(
        "--client-processes", type=int, default=1, help="processes the subscribers are spread over"
    )
    asyncio.run(serve_and_measure(parser.parse_args()))


if __name__ == "__main__":
    main()
