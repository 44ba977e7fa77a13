"""``equihome-sim serve``: run the gRPC service until SIGTERM or SIGINT.

With no options it keeps its SQLite store and dev signing key in ``./data`` (created on first start) and
listens on 127.0.0.1:50051; every setting can come from a flag, an ``EQUIHOME_*`` variable or a TOML file
(docs/operations.md). Once started it prints a banner: the address, how to get a token, a first call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from server.app import AppServer, BindError, Lifecycle, ServiceBinding, serve
from server.auth import DevKeyError
from server.integration.runtime import IntegrationRuntime
from server.jobs import JobRunner
from server.services import simulation_job
from server.observability import Metrics, configure_logging
from server.remote.client import DEFAULT_SERVER, TOKEN_ENV
from server.services import ServiceDependencies, build_bindings
from server.settings import Settings, SettingsError, load_settings
from server.store import DataDirInUse, RunStore, Store

log = logging.getLogger(__name__)

PURGE_INTERVAL = timedelta(hours=1)
BANNER_QUIET_S = 1.5  # the banner waits for start-up logging to pause this long...
BANNER_MAX_WAIT_S = 6.0  # ...but no longer than this
BANNER_LAST = "docs"  # the label of the banner's last line


async def open_services(
    settings: Settings,
    lifecycle: Lifecycle,
    metrics: Metrics,
    on_started: list[Callable[[AppServer], None]] | None = None,
) -> list[ServiceBinding]:
    """Open the store (marking runs a previous process left unfinished INTERRUPTED), start the job runner
    and the integrations, register them to be closed at shutdown (integrations, runner, store), and build
    every service. Callbacks for once the server runs (health following the integrations, warm workers)
    are appended to ``on_started``."""
    store = await Store.open(settings.data_dir)
    lifecycle.add_close_hook(store.close, name="store")
    interrupted = await store.runs.mark_unfinished_interrupted()
    if interrupted:
        log.warning("%d simulation(s) left unfinished by the last process are now INTERRUPTED", interrupted)
    lifecycle.add_background_task(purge_expired_runs(store.runs), name="run retention")
    runner = JobRunner.from_settings(settings, metrics, warm_up=simulation_job.warm_up)
    await runner.start()
    lifecycle.add_close_hook(runner.shutdown, name="job runner")
    integrations = await IntegrationRuntime.start(settings, store, metrics.registry)
    lifecycle.add_close_hook(integrations.aclose, name="integrations")
    if on_started is not None:
        on_started.append(lambda app: integrations.follow_health(app.set_serving))
        on_started.append(lambda app: runner.start_workers())
    return build_bindings(ServiceDependencies(settings, lifecycle, metrics, store, runner, integrations))


async def purge_expired_runs(runs: RunStore, every: timedelta = PURGE_INTERVAL) -> None:
    """Apply the run and request-id retention now and then every ``every``."""
    while True:
        deleted = await runs.purge_expired()
        if deleted:
            log.info("expired simulations deleted", extra={"deleted": deleted})
        await asyncio.sleep(every.total_seconds())


def banner(app: AppServer) -> str:
    """What the person at the terminal needs to start: the address, a token, a first call, and where the
    reports and metrics are."""
    settings = app.settings
    address = f"{settings.host}:{app.port}"
    program = _program()
    data = settings.data_dir if settings.data_dir.is_absolute() else f"./{settings.data_dir}"
    server = "" if address == DEFAULT_SERVER else f" --server {address}"
    integrations = settings.integrations
    lines = [f"equihome-sim is serving gRPC on {address} (data in {data}, integrations {integrations})"]
    if settings.auth_mode == "dev_key":
        default_dir = settings.data_dir == Settings.model_fields["data_dir"].default
        data_dir = "" if default_dir else f" --data-dir {settings.data_dir}"
        lines.append(f"  token    export {TOKEN_ENV}=$({program} token --all-scopes{data_dir})")
    elif settings.auth_mode == "disabled":
        lines.append("  token    none needed: authentication is DISABLED, any caller has every scope")
    else:
        lines.append(f"  token    from your identity provider ({settings.auth_mode}), in ${TOKEN_ENV}")
    lines += [
        f'  try      grpcurl -plaintext -H "authorization: Bearer ${TOKEN_ENV}" -d \'{{"page_size": 5}}\' '
        f"{address} equihome.simulation.v1.SimulationService/ListSimulations",
        f"  run      {program} remote create docs/examples/api/create_simulation_default_fund.json "
        f"--report report.html{server}",
        f"  report   {program} report simulations/ID{server}   (an offline HTML file; docs/report.md)",
    ]
    if app.metrics_server is not None:
        lines.append(f"  metrics  http://{settings.metrics_host}:{app.metrics_server.port}/metrics")
    lines.append(f"  {BANNER_LAST}     docs/grpcurl.md, docs/remote.md; Ctrl-C stops the server")
    return "\n".join(lines)


async def announce_when_settled(app: AppServer, quiet_s: float = BANNER_QUIET_S,
                                max_wait_s: float = BANNER_MAX_WAIT_S) -> None:  # fmt: skip
    """Print the banner once start-up logging pauses (integrations connect for a second or two), so it
    ends the start-up output instead of scrolling away in it; after ``max_wait_s`` at the latest."""
    loop = asyncio.get_running_loop()
    latest = _LatestRecord(loop.time)
    root = logging.getLogger()
    root.addHandler(latest)
    try:
        give_up = loop.time() + max_wait_s
        while loop.time() < give_up and loop.time() - latest.time < quiet_s:
            await asyncio.sleep(0.05)
    finally:
        root.removeHandler(latest)
    print(banner(app), flush=True)


class _LatestRecord(logging.Handler):
    """Remembers when the last log record was emitted."""

    def __init__(self, clock: Callable[[], float]):
        super().__init__()
        self._clock = clock
        self.time = clock()

    def emit(self, record: logging.LogRecord) -> None:
        self.time = self._clock()


def _program() -> str:
    """How this command was invoked, relative to the working directory when it lies below it
    (``.venv/bin/equihome-sim`` from the repository root)."""
    invoked = os.path.abspath(sys.argv[0])
    if os.path.basename(invoked) != "equihome-sim":
        return "equihome-sim"
    relative = os.path.relpath(invoked)
    return invoked if relative.startswith("..") else relative


async def run(settings: Settings) -> None:
    lifecycle, metrics = Lifecycle(), Metrics()
    try:
        started: list[Callable[[AppServer], None]] = [
            lambda app: lifecycle.add_background_task(announce_when_settled(app), name="banner")
        ]
        bindings = await open_services(settings, lifecycle, metrics, started)

        def on_started(app: AppServer) -> None:
            for callback in started:
                callback(app)

        await serve(settings, bindings, lifecycle=lifecycle, metrics=metrics, on_started=on_started)
    finally:
        await lifecycle.close()  # after a normal shutdown this finds nothing left to close


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as error:
        print(f"equihome-sim serve: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(run(settings))
    except (BindError, DataDirInUse, DevKeyError) as error:  # the operator can fix these: one line, no trace
        print(f"equihome-sim serve: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
