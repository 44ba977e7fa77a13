"""``equihome-sim sandbox``: serve the three external systems and their token endpoint.

Flags override a ``--config`` JSON file (a SandboxConfig), which overrides the defaults. Fault flags
apply to all three systems; ``--faults`` takes a per-target JSON patch and is applied last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adapters.sandbox.config import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    ClientRegistration,
    Extensions,
    SandboxConfig,
)
from adapters.sandbox.faults import MalformedKind
from adapters.sandbox.runtime import run_sandbox
from adapters.sandbox.systems import AUTH_TARGET

PLAIN_SETTINGS = (
    "seed",
    "events_per_second",
    "loan_count",
    "application_count",
    "split_ports",
    "token_lifetime_seconds",
    "omit_optional_fields",
)
SYSTEM_FAULT_FLAGS: dict[str, type] = {
    "latency_ms": float,
    "latency_jitter_ms": float,
    "error_rate": float,
    "outage_retry_after": int,
    "rate_limit_per_second": float,
    "rate_limit_burst": int,
    "ws_drop_after_events": int,
    "ws_drop_every_seconds": float,
    "malformed_frame_rate": float,
}
SYSTEM_FAULT_SWITCHES = ("outage", "reject_all_tokens", "ws_silent")
TOKEN_FAULT_SWITCHES = ("issue_expired_tokens", "sign_with_wrong_key")


def build_parser(prog: str = "equihome-sim sandbox") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the Traffic Light, Portfolio Management and Underwriting systems "
        "and their OAuth token endpoint.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600, help="0 picks a free port")
    parser.add_argument("--config", type=Path, help="JSON file with a SandboxConfig")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--events-per-second", type=float, help="per system; 0 stops the event clock")
    parser.add_argument("--loans", dest="loan_count", type=int, help="portfolio loans at start")
    parser.add_argument("--applications", dest="application_count", type=int, help="pending applications")
    parser.add_argument(
        "--split-ports",
        action="store_true",
        default=None,
        help="serve auth+admin and each system on its own port: port, port+1..3",
    )
    parser.add_argument("--client-id", help=f"OAuth client id (default {DEMO_CLIENT_ID})")
    parser.add_argument("--client-secret", help=f"OAuth client secret (default {DEMO_CLIENT_SECRET})")
    parser.add_argument("--token-lifetime", dest="token_lifetime_seconds", type=int, help="seconds")
    parser.add_argument(
        "--omit-optional-fields", type=float, help="share of optional fields left out (default 0.1)"
    )
    parser.add_argument(
        "--extensions",
        help=f"comma-separated extensions to the guide to switch on: {', '.join(Extensions.model_fields)}",
    )

    faults = parser.add_argument_group("faults (all three systems)")
    for knob, kind in SYSTEM_FAULT_FLAGS.items():
        faults.add_argument(_flag(knob), dest=knob, type=kind)
    faults.add_argument("--malformed-frame-kind", choices=[kind.value for kind in MalformedKind])
    for knob in SYSTEM_FAULT_SWITCHES:
        faults.add_argument(_flag(knob), dest=knob, action="store_true", default=None)
    tokens = parser.add_argument_group("token endpoint faults")
    for knob in TOKEN_FAULT_SWITCHES:
        tokens.add_argument(_flag(knob), dest=knob, action="store_true", default=None)
    parser.add_argument(
        "--faults", dest="faults_json", help='per-target JSON patch, e.g. \'{"pms": {"error_rate": 0.2}}\''
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """The configuration the parsed flags describe; raises ValidationError or ValueError if invalid."""
    base = SandboxConfig.from_json_file(args.config) if args.config else SandboxConfig()
    settings: dict[str, Any] = base.model_dump()
    settings.update(_given(args, PLAIN_SETTINGS))
    if args.client_id is not None or args.client_secret is not None:
        settings["clients"] = [
            ClientRegistration(
                client_id=args.client_id or DEMO_CLIENT_ID,
                client_secret=args.client_secret or DEMO_CLIENT_SECRET,
            )
        ]
    system_knobs = _given(args, [*SYSTEM_FAULT_FLAGS, *SYSTEM_FAULT_SWITCHES, "malformed_frame_kind"])
    faults = base.faults.everywhere(system_knobs).merged({AUTH_TARGET: _given(args, TOKEN_FAULT_SWITCHES)})
    if args.faults_json:
        patch = json.loads(args.faults_json)
        if not isinstance(patch, dict):
            raise ValueError("--faults must be a JSON object keyed by target")
        faults = faults.merged(patch)
    settings["faults"] = faults
    if args.extensions:
        names = [name.strip() for name in args.extensions.split(",") if name.strip()]
        unknown = sorted(set(names) - set(Extensions.model_fields))
        if unknown:
            raise ValueError(f"unknown extensions {unknown}; expected some of {list(Extensions.model_fields)}")
        settings["extensions"] = {**settings["extensions"], **dict.fromkeys(names, True)}
    return SandboxConfig.model_validate(settings)


def main(argv: Sequence[str] | None = None, prog: str = "equihome-sim sandbox") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValidationError, ValueError, OSError) as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # the banner already says it started
    asyncio.run(run_sandbox(args.host, args.port, config, announce=lambda text: print(text, flush=True)))
    return 0


def _flag(knob: str) -> str:
    return "--" + knob.replace("_", "-")


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
