"""``equihome-sim report SOURCE [-o OUT.html]``: a self-contained HTML report of a result.

SOURCE is the JSON that ``equihome-sim simulate --json`` writes, a result in the API's protobuf JSON (e.g.
a GetSimulation response saved from grpcurl), or ``simulations/ID``, a finished run read from a server
(``--server``, ``--token`` as for ``equihome-sim remote``). The file needs no network: open it in any
browser, mail it, archive it (docs/report.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from server.remote.client import RemoteError
from server.remote_cli import connect, connection_parser
from server.report.kinds import write_report
from server.report.simulation_view import IncompleteResult
from server.report.sources import SourceError, fetch_run, is_run_name, read_file


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="equihome-sim report",
        description=__doc__,
        parents=[connection_parser()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="simulate --json output, a result in protobuf JSON, or simulations/ID")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT.html",
        help="file to write (default: the source file with .html, or ID.html here)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    errors = Console(stderr=True)  # for progress messages of the server connection
    try:
        if is_run_name(args.source):
            with connect(args, errors) as client:
                message = fetch_run(client, args.source)
            output = args.output or Path(args.source.removeprefix("simulations/") + ".html")
        else:
            message = read_file(Path(args.source))
            output = args.output or Path(args.source).with_suffix(".html")
        report = write_report(message, output)
    except (SourceError, IncompleteResult, OSError) as error:
        print(f"equihome-sim report: {error}", file=sys.stderr)
        return 2
    except RemoteError as error:
        print(error.explain(), file=sys.stderr)
        return 1
    size = output.stat().st_size / 2**20
    print(f"report written to {output} ({len(report.charts())} charts, {size:.1f} MiB, works offline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
