"""``equihome-sim token``: prints only a token the server's verifier accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.auth import SCOPES, verifier_from_settings
from server.cli import main as cli_main
from server.settings import Settings


async def test_token_command_prints_a_token_the_server_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EQUIHOME_AUTH_AUDIENCE", "equihome-staging")
    data_dir = tmp_path / "data"

    status = cli_main(
        ["token", "--scope", "simulation:read", "--scope", "events:read", "--data-dir", str(data_dir)]
    )
    token = capsys.readouterr().out

    assert status == 0
    assert token.count("\n") == 1 and token.count(".") == 2  # just the JWT on one line
    verifier = verifier_from_settings(Settings(data_dir=data_dir, auth_audience="equihome-staging"))
    principal = await verifier.verify(token.strip())
    assert principal.scopes == {"simulation:read", "events:read"}


async def test_all_scopes_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"

    assert cli_main(["token", "--all-scopes", "--ttl", "60", "--data-dir", str(data_dir)]) == 0
    token = capsys.readouterr().out.strip()
    principal = await verifier_from_settings(Settings(data_dir=data_dir)).verify(token)
    assert principal.scopes == set(SCOPES)

    for bad in (["token", "--data-dir", str(data_dir)], ["token", "--scope", "simulation:superuser"]):
        with pytest.raises(SystemExit) as refused:
            cli_main(bad)
        assert refused.value.code == 2
