"""``equihome-sim`` command line: one entry point, one module per subcommand.

Subcommand modules are imported lazily so that ``simulate`` never pays for gRPC start-up.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "simulate": ("server.simulate_cli", "run a fund simulation from a JSON config"),
    "serve": ("server.serve_cli", "start the gRPC service"),
    "token": ("server.token_cli", "make a dev signing key and print a caller token"),
    "sandbox": ("adapters.sandbox.cli", "run the sandbox of the external systems"),
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


if __name__ == "__main__":
    raise SystemExit(main())
