"""``equihome-sim token``: print a caller token signed by the local dev key (created if missing).

Only the token goes to stdout, so ``TOKEN=$(equihome-sim token --all-scopes)`` works; use it as
``grpcurl -H "authorization: Bearer $TOKEN" ...``. The data directory, issuer and audience come from the
same flags, ``EQUIHOME_*`` variables and TOML file as the server's, so the token matches what it expects.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from server.auth import SCOPES, issue_dev_token
from server.settings import SettingsError, settings_from_sources


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equihome-sim token",
        description="Print a bearer token signed by the dev key under the data directory.",
    )
    # The few server settings a token depends on; absent flags fall back to EQUIHOME_* and the file.
    parser.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help="the server's TOML settings file"
    )
    parser.add_argument(
        "--data-dir", dest="data_dir", default=argparse.SUPPRESS, help="data directory (./data)"
    )
    parser.add_argument("--auth-issuer", dest="auth_issuer", default=argparse.SUPPRESS, help="token issuer")
    parser.add_argument(
        "--auth-audience", dest="auth_audience", default=argparse.SUPPRESS, help="token audience"
    )
    parser.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        default=[],
        choices=SCOPES,
        metavar="SCOPE",
        help=f"grant this scope (repeatable): {', '.join(SCOPES)}",
    )
    parser.add_argument("--all-scopes", action="store_true", help="grant every scope")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    parser.add_argument("--subject", default="dev", help="the token's subject, sub (default dev)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    scopes = list(SCOPES) if arguments.all_scopes else list(dict.fromkeys(arguments.scopes))
    if not scopes:
        parser.error("name at least one --scope, or pass --all-scopes")
    if arguments.ttl <= 0:
        parser.error("--ttl must be a positive number of seconds")
    try:
        settings = settings_from_sources(vars(arguments), os.environ)
    except SettingsError as error:
        parser.error(str(error))
    if settings.auth_mode != "dev_key":
        print(
            f"warning: the server is configured for auth mode {settings.auth_mode!r}; "
            "it will not accept dev-key tokens",
            file=sys.stderr,
        )
    token = issue_dev_token(
        settings.data_dir,
        scopes,
        ttl=arguments.ttl,
        subject=arguments.subject,
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
    )
    print(token)
    return 0
