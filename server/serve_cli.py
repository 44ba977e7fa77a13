"""``equihome-sim serve``: run the gRPC service until SIGTERM or SIGINT.

With no options it keeps its SQLite store and dev signing key in ``./data`` (created on first start) and
listens on 127.0.0.1:50051; every setting can come from a flag, an ``EQUIHOME_*`` variable or a TOML file
(docs/operations.md). On start it prints the address and how to get a token.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from server.app import AppServer, Lifecycle, ServiceBinding, serve
from server.integration.runtime import IntegrationRuntime
from server.jobs import JobRunner
from server.services import simulation_job
from server.observability import Metrics, configure_logging
from server.services import ServiceDependencies, build_bindings
from server.settings import Settings, SettingsError, load_settings
from server.store import RunStore, Store

log = logging.getLogger(__name__)

PURGE_INTERVAL = timedelta(hours=1)


async def open_services(
    settings: Settings,
    lifecycle: Lifecycle,
    metrics: Metrics,
    on_started: list[Callable[[AppServer], None]] | None = None,
) -> list[ServiceBinding]:
    """Open the store (marking runs a previous process left unfinished INTERRUPTED), start the job runner
    and the integrations, register them to be closed at shutdown (integrations, runner, store), and build
    every service. Callbacks for once the server runs (health following the integrations) are appended
    to ``on_started``."""
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
    return build_bindings(ServiceDependencies(settings, lifecycle, metrics, store, runner, integrations))


async def purge_expired_runs(runs: RunStore, every: timedelta = PURGE_INTERVAL) -> None:
    """Apply the run and request-id retention now and then every ``every``."""
    while True:
        deleted = await runs.purge_expired()
        if deleted:
            log.info("expired simulations deleted", extra={"deleted": deleted})
        await asyncio.sleep(every.total_seconds())


def announce(app: AppServer) -> None:
    """Tell the person at the terminal where the server is and how to call it."""
    settings = app.settings
    address = f"{settings.host}:{app.port}"
    lines = [f"equihome-sim serving gRPC on {address} (data in {settings.data_dir})"]
    if settings.auth_mode == "dev_key":
        default_dir = settings.data_dir == Settings.model_fields["data_dir"].default
        data_dir = "" if default_dir else f" --data-dir {settings.data_dir}"
        lines += [
            f"get a token:  TOKEN=$(.venv/bin/equihome-sim token --all-scopes{data_dir})",
            f'then:         grpcurl -plaintext -H "authorization: Bearer $TOKEN" {address} list',
        ]
    elif settings.auth_mode == "disabled":
        lines.append("authentication is DISABLED: any caller has every scope")
    else:
        lines.append(f"callers need a token from the identity provider ({settings.auth_mode})")
    print("\n".join(lines), flush=True)


async def run(settings: Settings) -> None:
    lifecycle, metrics = Lifecycle(), Metrics()
    try:
        started: list[Callable[[AppServer], None]] = [announce]
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
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
