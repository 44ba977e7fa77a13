"""A real ``equihome-sim serve`` process for the hostile suite, memory-capped from the outside.

Every test here plays an attacker or a careless caller against a server started exactly as an operator
would start it (a subprocess, its own data directory, dev-key auth). A sampler thread sums the resident
memory of the server and all its children (psutil) for the whole life of the server; if it ever passes
``TREE_RSS_CAP`` the tree is killed at once (so a regression cannot take the machine down) and the test
fails. Each module records the peak it saw, and asserts it stayed under the cap.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from bench.grpc_service import EQUIHOME_SIM  # noqa: F401 (the tests start servers with it too)
from bench.grpc_service import start_server as bench_server
from bench.memory import PeakTreeRss
from equihome.events.v1.event_service_pb2_grpc import EventServiceStub
from equihome.simulation.v1.simulation_service_pb2_grpc import SimulationServiceStub
from grpc_health.v1 import health_pb2_grpc
from server.auth import SCOPES, issue_dev_token

TREE_RSS_CAP = 2 * 1024**3
LONG_PATHS = 200_000  # a run of the small test fund that takes tens of seconds and fits a test worker
Metadata = tuple[tuple[str, str], ...]

# Small enough to drive every limit from a test, and to keep the tree well under the cap.
HOSTILE_SETTINGS = {
    "max_concurrent_runs": "1",
    "max_queued_runs": "8",
    "max_active_runs_per_caller": "3",
    "worker_memory_mib": "1536",
    "metrics_port": "0",
}


@dataclass
class ServerProcess:
    """A running ``equihome-sim serve``: its address, data directory, log and memory watch."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    peak: PeakTreeRss
    metrics_port: int | None = None
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def token(self, subject: str, *scopes: str) -> Metadata:
        """Call metadata for ``subject`` holding ``scopes`` (default: every scope but admin)."""
        granted = scopes or tuple(scope for scope in SCOPES if scope != "simulation:admin")
        return (("authorization", f"Bearer {issue_dev_token(self.data_dir, granted, subject=subject)}"),)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    def workers(self) -> list[psutil.Process]:
        """The server's child processes that run simulations."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [child for child in children if _is_worker(child)]

    def kill_tree(self) -> None:
        for member in reversed(self.peak.tree()):
            with contextlib.suppress(psutil.Error):
                member.kill()


def _is_worker(process: psutil.Process) -> bool:
    """A live worker process (not multiprocessing's resource tracker, not a zombie awaiting its reaping)."""
    with contextlib.suppress(psutil.Error):
        command = " ".join(process.cmdline())
        return ("spawn_main" in command and "resource_tracker" not in command
                and process.status() != psutil.STATUS_ZOMBIE)  # fmt: skip
    return False


def start_server(tmp: Path, settings: Mapping[str, str] = HOSTILE_SETTINGS, *extra: str) -> ServerProcess:
    """Start ``equihome-sim serve`` on a free port with ``settings`` (as EQUIHOME_* variables)."""
    data_dir = tmp / "data"
    log_path = tmp / "server.log"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("EQUIHOME_")}
    environment |= {f"EQUIHOME_{key.upper()}": value for key, value in settings.items()}
    process, port = bench_server(data_dir, log_path, *extra, environment=environment)
    server: ServerProcess

    def kill_tree(total: int) -> None:
        print(f"server tree reached {total / 2**20:.0f} MiB, over the cap: killing it", file=sys.stderr)
        server.kill_tree()

    peak = PeakTreeRss(0.05, pid=process.pid, cap=TREE_RSS_CAP, on_cap=kill_tree)
    server = ServerProcess(process, port, data_dir, log_path, peak)
    peak.__enter__()
    for line in server.log_lines():
        if line.get("message") == "serving":
            server.metrics_port = line.get("metrics_port")
    return server


def stop_server(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill_tree()
    server.peak.__exit__(None, None, None)


@contextlib.contextmanager
def running_server(tmp: Path, settings: Mapping[str, str] = HOSTILE_SETTINGS, *extra: str) -> Iterator[ServerProcess]:
    server = start_server(tmp, settings, *extra)
    try:
        yield server
    finally:
        stop_server(server)
    print(f"\npeak RSS of the server tree: {server.peak.bytes / 2**20:,.0f} MiB (cap {TREE_RSS_CAP / 2**20:,.0f})")
    assert not server.peak.capped, f"the server tree passed {TREE_RSS_CAP} bytes and was killed"
    assert server.peak.bytes < TREE_RSS_CAP, server.peak.bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per module, shared by its tests (each test uses its own callers)."""
    with running_server(tmp_path_factory.mktemp("server")) as server:
        yield server


@dataclass
class Callers:
    """Stubs on one channel to the server."""

    channel: grpc.aio.Channel
    simulations: SimulationServiceStub
    events: EventServiceStub
    health: health_pb2_grpc.HealthStub


@pytest.fixture
async def callers(server: ServerProcess) -> AsyncIterator[Callers]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield Callers(channel, SimulationServiceStub(channel), EventServiceStub(channel),
                      health_pb2_grpc.HealthStub(channel))  # fmt: skip
