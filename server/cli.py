"""``equihome-sim`` command line: one entry point, one module per subcommand.

Subcommand modules are imported lazily so that ``simulate`` never pays for gRPC start-up.
"""

from __future__ import annotations

import importlib
import sys
import warnings

COMMANDS = {
    "simulate": ("server.simulate_cli", "run a fund simulation from a JSON config"),
    "optimize": ("server.optimize_cli", "optimise the zone allocation of a fund or a live portfolio"),
    "stress": ("server.stress_cli", "stress scenarios, a stress grid or a sensitivity tornado of a fund"),
    "report": ("server.report_cli", "write a self-contained HTML report of a result"),
    "serve": ("server.serve_cli", "start the gRPC service"),
    "remote": ("server.remote_cli", "create, watch, get, list and cancel runs on a server"),
    "token": ("server.token_cli", "make a dev signing key and print a caller token"),
    "sandbox": ("adapters.sandbox.cli", "run the sandbox of the external systems"),
    "impact": ("server.impact_cli", "analyse the portfolio impact of one loan application"),
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"} or args[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: equihome-sim COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        return 0 if args and args[0] in {"-h", "--help"} else 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]) or 0)


def quiet_library_warnings() -> None:
    """Keep libraries' deprecation notices off the user's console (they are for us; pytest still shows them).

    Authlib turns its own on with an "always" filter when it is imported, ahead of any filter set before,
    so it is imported here first and then silenced. ``python -W`` or ``PYTHONWARNINGS`` still win.
    """
    if sys.warnoptions:
        return
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)


# At import, not in main(): the server's spawned job workers import this module (the `equihome-sim`
# script is their __main__) but do not call main(), and they import Authlib too.
quiet_library_warnings()


if __name__ == "__main__":
    raise SystemExit(main())
