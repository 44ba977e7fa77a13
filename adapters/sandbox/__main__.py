"""``python -m adapters.sandbox``: the same as ``equihome-sim sandbox``."""

from adapters.sandbox.cli import main

raise SystemExit(main(prog="python -m adapters.sandbox"))
