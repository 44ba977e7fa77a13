"""Structured JSON logs and Prometheus metrics for the service.

Every log line is one JSON object. The call context (correlation id, RPC method) lives in context
variables that the interceptors set, so any ``logging`` call made while serving an RPC carries them
without passing anything around. Metrics live in a dedicated registry (never the global default),
exported over HTTP on the metrics port.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback
from contextvars import ContextVar
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
method_var: ContextVar[str | None] = ContextVar("method", default=None)
caller_var: ContextVar[str | None] = ContextVar("caller", default=None)  # the token subject, once verified

# Attributes every LogRecord has; anything else passed through ``extra=`` is emitted as a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class CallContextFilter(logging.Filter):
    """Stamps the current call's correlation id, method and caller on each record when it is logged.

    Stamping at log time (not format time) keeps the fields right even if a handler formats later,
    from another task or thread.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = correlation_id_var.get()
        if getattr(record, "method", None) is None:
            record.method = method_var.get()
        if getattr(record, "caller", None) is None:
            record.caller = caller_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: the fixed fields first, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", None) or correlation_id_var.get(),
            "method": getattr(record, "method", None) or method_var.get(),
            "caller": getattr(record, "caller", None) or caller_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(entry, default=str)


_HANDLER_NAME = "equihome-json"


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as JSON. Calling it again only changes the level."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if any(handler.get_name() == _HANDLER_NAME for handler in root.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    if root.level > logging.DEBUG:
        for chatty in _CHATTY_LIBRARIES:  # one line per upstream request or socket: debug detail
            logging.getLogger(chatty).setLevel(logging.WARNING)


_CHATTY_LIBRARIES = ("httpx", "uvicorn.error", "uvicorn.access")


class Metrics:
    """The service's Prometheus collectors, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpc_started = Counter(
            "equihome_grpc_server_started",
            "RPCs started, per method.",
            ["method"],
            registry=self.registry,
        )
        self.rpc_handled = Counter(
            "equihome_grpc_server_handled",
            "RPCs completed, per method and final status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "equihome_grpc_server_handling_seconds",
            "Time from the start of an RPC to its final status, per method.",
            ["method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.rpc_in_flight = Gauge(
            "equihome_grpc_server_in_flight",
            "RPCs being handled right now, per method.",
            ["method"],
            registry=self.registry,
        )
        self.auth_denied = Counter(
            "equihome_grpc_server_auth_denied",
            "RPCs refused by authentication or authorisation, per method and reason.",
            ["method", "reason"],
            registry=self.registry,
        )
        self.runs_in_flight = Gauge(
            "equihome_runs_in_flight",
            "Jobs executing in the worker pool.",
            registry=self.registry,
        )
        self.runs_queued = Gauge(
            "equihome_runs_queued",
            "Jobs accepted and waiting for a free worker.",
            registry=self.registry,
        )
        self.calls_limited = Counter(
            "equihome_grpc_server_limited",
            "Calls refused because their group had its budget of open calls of that kind.",
            ["group", "kind"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes...
        self.workers = WorkerCollector(self.registry)

    def count_limited(self, group: str, kind: str) -> None:
        self.calls_limited.labels(group=group, kind=kind).inc()

    def set_run_load(self, running: int, queued: int) -> None:
        """The job runner calls this whenever its running or queued count changes."""
        self.runs_in_flight.set(running)
        self.runs_queued.set(queued)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The current value of one sample (``None`` if absent); handy for tests and health reports."""
        return self.registry.get_sample_value(name, labels or {})


class WorkerCollector(Collector):
    """CPU time and resident memory of the worker processes, read from ``/proc`` at each scrape.

    The job runner reports its workers' pids with ``track``. On systems without ``/proc`` nothing is
    exported.
    """

    def __init__(self, registry: CollectorRegistry):
        self.pids: Callable[[], Iterable[int]] = tuple
        self._page_bytes = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        registry.register(self)

    def track(self, pids: Callable[[], Iterable[int]]) -> None:
        self.pids = pids

    def collect(self) -> Iterator[GaugeMetricFamily]:
        memory = GaugeMetricFamily(
            "equihome_worker_resident_memory_bytes", "Resident memory of each worker process.", labels=["pid"]
        )
        cpu = CounterMetricFamily(
            "equihome_worker_cpu_seconds", "CPU time (user + system) of each worker process.", labels=["pid"]
        )
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue  # exited since it was listed, or no /proc here
            cpu.add_metric([str(pid)], (int(stat[11]) + int(stat[12])) / self._ticks)
            memory.add_metric([str(pid)], int(stat[21]) * self._page_bytes)
        yield memory
        yield cpu


@dataclass
class MetricsServer:
    """The running Prometheus HTTP exporter (a daemon thread, so the event loop is never involved)."""

    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def start_metrics_server(metrics: Metrics, host: str, port: int) -> MetricsServer:
    """Serve ``metrics`` at ``http://host:port/metrics``; port 0 picks a free port."""
    httpd, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(httpd, thread)
