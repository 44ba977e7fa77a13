"""``equihome-sim remote COMMAND``: drive a running service from the shell.

    create REQUEST.json [--watch] [--report OUT.html]   create a job from a CreateSimulationRequest body
    watch NAME [--report OUT.html]                      follow a job with a progress bar until it ends
    get NAME [--json]                                   show a job (or print it as protobuf JSON)
    list [--state S] [--portfolio-id P] [--limit N]     list jobs, newest first
    cancel NAME                                         cancel a pending or running job

Every command takes ``--server`` (or ``EQUIHOME_SERVER``, default 127.0.0.1:50051), ``--token`` (or
``EQUIHOME_TOKEN``) and ``--timeout`` (the deadline of each call). NAME is ``simulations/ID`` or the ID.
Reports of finished runs: ``equihome-sim report simulations/ID``. Exit status: 0 when the command did
what it was asked (a watched job SUCCEEDED), 1 when the server refused or the job did not succeed, 2 for
a bad command line or request file, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import json_format
from google.rpc import code_pb2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.errors import ErrorDetails
from server.remote.client import (
    DEFAULT_SERVER,
    SERVER_ENV,
    TOKEN_ENV,
    CallPolicy,
    RemoteError,
    SimulationClient,
    open_channel,
)
from server.report.headline import headline

Simulation = simulation_pb2.Simulation
STATES = {name.removeprefix("STATE_").lower(): number for name, number in Simulation.State.items() if number}
VIEWS = {
    "basic": simulation_pb2.SIMULATION_VIEW_BASIC,
    "summary": simulation_pb2.SIMULATION_VIEW_SUMMARY,
    "full": simulation_pb2.SIMULATION_VIEW_FULL,
}
INTERRUPTED_EXIT = 130


class UsageError(Exception):
    """A bad argument or request file (exit status 2)."""


def connection_parser() -> argparse.ArgumentParser:
    """The options every command that calls the server takes; use it as ``parents=[...]``."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("server")
    group.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"host:port of the service (${SERVER_ENV}, default {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token (${TOKEN_ENV}); make one with `equihome-sim token --all-scopes`",
    )
    group.add_argument(
        "--timeout",
        type=_positive,
        default=CallPolicy.timeout_s,
        metavar="SECONDS",
        help=f"deadline of each call (default {CallPolicy.timeout_s:g})",
    )
    return parser


@contextlib.contextmanager
def connect(args: argparse.Namespace, console: Console) -> Iterator[SimulationClient]:
    def retrying(details: ErrorDetails, delay: float) -> None:
        console.print(
            f"[yellow]{details.code.name} ({details.reason or 'no reason'}): retrying in {delay:g} s"
        )

    with open_channel(args.server) as channel:
        yield SimulationClient(
            channel,
            target=args.server,
            token=args.token,
            policy=CallPolicy(timeout_s=args.timeout),
            on_retry=retrying,
        )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="equihome-sim remote", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [connection_parser()]

    create = commands.add_parser("create", parents=common, help="create a simulation job")
    create.add_argument(
        "request",
        type=Path,
        help="CreateSimulationRequest in protobuf JSON, as grpcurl -d takes it (docs/examples/api/)",
    )
    create.add_argument("--display-name", help="replace simulation.display_name")
    create.add_argument("--portfolio-id", help="replace simulation.portfolio_id")
    create.add_argument("--paths", type=_positive_int, help="replace config.monte_carlo.paths")
    create.add_argument("--seed", type=int, help="replace config.monte_carlo.seed")
    create.add_argument("--request-id", help="idempotency key (UUID4); default: a new one")
    create.add_argument("--watch", action="store_true", help="follow the job until it ends")
    create.add_argument(
        "--report", type=Path, metavar="OUT.html", help="when it succeeds, write its report (implies --watch)"
    )

    watch = commands.add_parser(
        "watch", parents=common, help="follow a job with a progress bar until it ends"
    )
    watch.add_argument("name", type=_run_name, help="simulations/ID or ID")
    watch.add_argument("--report", type=Path, metavar="OUT.html", help="when it succeeds, write its report")

    get = commands.add_parser("get", parents=common, help="show a job")
    get.add_argument("name", type=_run_name, help="simulations/ID or ID")
    get.add_argument("--view", choices=VIEWS, default="summary", help="how much to read (default summary)")
    get.add_argument("--json", action="store_true", help="print the GetSimulationResponse as protobuf JSON")

    listing = commands.add_parser("list", parents=common, help="list jobs, newest first")
    listing.add_argument(
        "--state", action="append", choices=STATES, default=[], help="only jobs in this state (repeatable)"
    )
    listing.add_argument("--portfolio-id", default="", help="only jobs of this portfolio")
    listing.add_argument(
        "--limit", type=_positive_int, default=20, help="at most this many jobs (default 20)"
    )

    cancel = commands.add_parser("cancel", parents=common, help="cancel a pending or running job")
    cancel.add_argument("name", type=_run_name, help="simulations/ID or ID")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console, errors = _console(), Console(stderr=True)
    command = {"create": create, "watch": watch, "get": get, "list": list_jobs, "cancel": cancel}[
        args.command
    ]
    try:
        with connect(args, errors) as client:
            return command(client, args, console, errors)
    except UsageError as error:
        print(f"equihome-sim remote {args.command}: {error}", file=sys.stderr)
        return 2
    except RemoteError as error:
        print(error.explain(), file=sys.stderr)
        return 1
    except OSError as error:  # the report file could not be written
        print(f"equihome-sim remote {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return INTERRUPTED_EXIT


# Commands.


def create(client: SimulationClient, args: argparse.Namespace, console: Console, errors: Console) -> int:
    request = read_create_request(args)
    simulation = client.create(request)
    console.print(
        f"created {simulation.name} ({_state(simulation)}, {simulation.progress.paths_total:,} paths)"
    )
    if not (args.watch or args.report):
        console.print(f"follow it with: equihome-sim remote watch {simulation.name}", highlight=False)
        return 0
    return _follow(client, simulation.name, args, console, errors)


def watch(client: SimulationClient, args: argparse.Namespace, console: Console, errors: Console) -> int:
    return _follow(client, args.name, args, console, errors)


def get(client: SimulationClient, args: argparse.Namespace, console: Console, errors: Console) -> int:
    simulation = client.get(args.name, VIEWS[args.view])
    if args.json:
        response = service_pb2.GetSimulationResponse(simulation=simulation)
        print(json_format.MessageToJson(response, indent=1))
        return 0
    console.print(describe(simulation))
    return 0


def list_jobs(client: SimulationClient, args: argparse.Namespace, console: Console, errors: Console) -> int:
    table = Table(box=None)
    table.add_column("name", no_wrap=True, min_width=len("simulations/") + 36)  # the id is a UUID
    for column in ("state", "paths", "created (local time)", "portfolio", "display name"):
        table.add_column(column, justify="right" if column == "paths" else "left")
    states = tuple(STATES[state] for state in args.state)
    for simulation in client.list(
        states=states, portfolio_id=args.portfolio_id, limit=args.limit, page_size=min(args.limit, 1000)
    ):
        progress = simulation.progress
        table.add_row(
            simulation.name,
            _state(simulation),
            f"{progress.paths_completed:,}/{progress.paths_total:,}",
            _local(simulation.create_time.ToDatetime()),
            simulation.portfolio_id,
            simulation.display_name,
        )
    console.print(table)
    return 0


def cancel(client: SimulationClient, args: argparse.Namespace, console: Console, errors: Console) -> int:
    simulation = client.cancel(args.name)
    console.print(f"{simulation.name} is {_state(simulation)} after {_progress(simulation)}")
    return 0


# Helpers.


def read_create_request(args: argparse.Namespace) -> service_pb2.CreateSimulationRequest:
    """The request file with the command line's replacements applied."""
    try:
        body = json.loads(args.request.read_text(encoding="utf-8"))
        request = json_format.ParseDict(body, service_pb2.CreateSimulationRequest())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, json_format.ParseError) as error:
        raise UsageError(
            f"{args.request} is not a CreateSimulationRequest in protobuf JSON ({error}); "
            "see docs/examples/api/"
        ) from None
    simulation = request.simulation
    if args.display_name is not None:
        simulation.display_name = args.display_name
    if args.portfolio_id is not None:
        simulation.portfolio_id = args.portfolio_id
    if args.paths is not None:
        simulation.config.monte_carlo.paths = args.paths
    if args.seed is not None:
        simulation.config.monte_carlo.seed = args.seed
    if args.request_id is not None:
        request.request_id = args.request_id
    return request


def _follow(
    client: SimulationClient, name: str, args: argparse.Namespace, console: Console, errors: Console
) -> int:
    def reconnecting(details: ErrorDetails, delay: float) -> None:
        errors.print(f"[yellow]watch interrupted ({details.code.name}); reconnecting in {delay:g} s")

    simulation = None
    columns = (
        TextColumn("{task.fields[state]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("paths"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    try:
        with Progress(*columns, console=errors, transient=True) as bar:
            task = bar.add_task(name, total=None, state="PENDING", eta="")
            for simulation in client.watch(name, on_reconnect=reconnecting):
                progress = simulation.progress
                remaining = progress.estimated_remaining.ToTimedelta().total_seconds()
                bar.update(
                    task,
                    completed=progress.paths_completed,
                    total=progress.paths_total or None,
                    state=_state(simulation),
                    eta=f"about {remaining:,.0f} s left" if progress.HasField("estimated_remaining") else "",
                )
    except KeyboardInterrupt:
        errors.print(
            f"stopped watching; {name} goes on. Resume with: equihome-sim remote watch {name}",
            highlight=False,
        )
        return INTERRUPTED_EXIT
    assert simulation is not None  # watch yields at least the terminal snapshot or raises
    console.print(describe(simulation))
    if simulation.state != Simulation.STATE_SUCCEEDED:
        return 1
    if args.report:
        from server.report.kinds import write_report  # Plotly is loaded only when a report is asked for

        report = write_report(simulation, args.report)
        console.print(f"report written to {args.report} ({len(report.charts())} charts)")
    return 0


def describe(simulation: Simulation) -> Table:
    """A job as a two-column table: what it is, where it is, how it ended, and its headline."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("name", simulation.name),
        ("display name", simulation.display_name),
        ("portfolio", simulation.portfolio_id),
        ("state", _state(simulation)),
        ("progress", _progress(simulation)),
        ("seed", str(simulation.seed)),
        ("engine", simulation.engine_version),
    ]
    for label, field in (("created", "create_time"), ("started", "start_time"), ("ended", "end_time")):
        if simulation.HasField(field):
            rows.append((label, _local(getattr(simulation, field).ToDatetime())))
    if simulation.HasField("error"):
        rows.append(("error", f"{code_pb2.Code.Name(simulation.error.code)}: {simulation.error.message}"))
    if simulation.HasField("result") and simulation.HasField("effective_config"):
        rows += [(item.label, f"{item.value}   {item.note}") for item in headline(simulation)]
    for label, value in rows:
        if value:
            table.add_row(label, value)
    return table


def _console() -> Console:
    """Standard output; wide when it is not a terminal, so names and tables are never cut for a pipe."""
    return Console(width=None if sys.stdout.isatty() else 200, soft_wrap=not sys.stdout.isatty())


def _state(simulation: Simulation) -> str:
    return Simulation.State.Name(simulation.state).removeprefix("STATE_")


def _progress(simulation: Simulation) -> str:
    progress = simulation.progress
    elapsed = progress.elapsed.ToTimedelta().total_seconds()
    return f"{progress.paths_completed:,}/{progress.paths_total:,} paths in {elapsed:,.1f} s"


def _local(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _run_name(value: str) -> str:
    name = value if value.startswith("simulations/") else f"simulations/{value}"
    if not name.removeprefix("simulations/") or "/" in name.removeprefix("simulations/"):
        raise argparse.ArgumentTypeError(f"{value!r} is not simulations/ID or ID")
    return name


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return number


if __name__ == "__main__":
    raise SystemExit(main())
