"""What a user sees first: the commands' help without any library warning, and `make run`'s server ending
its start-up with a banner that names the address, a token command, a first grpcurl call, and where
reports and metrics are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.conftest import REPO, ServerProcess, repository_like, user_environment

EQUIHOME_SIM = str(Path(sys.executable).with_name("equihome-sim"))
RUN_COMMAND = ".venv/bin/equihome-sim serve --integrations sandbox"  # what `make run` runs


def make_run_command() -> str:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    return recipe.splitlines()[1].strip().replace("$(VENV)", ".venv")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["simulate", "--help"],
        ["simulate", "docs/examples/default_fund.json", "--help"],
        ["serve", "--help"],
        ["token", "--help"],
        ["report", "--help"],
        ["remote", "--help"],
        ["remote", "create", "--help"],
        ["sandbox", "--help"],
    ],
    ids=" ".join,
)
def test_help_prints_no_warning(args: list[str]) -> None:
    done = subprocess.run(
        [EQUIHOME_SIM, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=user_environment(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "usage:" in done.stdout
    assert "warning" not in done.stdout.lower()


def test_make_run_ends_its_start_up_with_a_banner_and_no_warning(tmp_path: Path) -> None:
    assert make_run_command() == RUN_COMMAND
    server = ServerProcess.start(RUN_COMMAND, repository_like(tmp_path / "repo"))
    try:
        banner = server.banner
        before = "".join(server.output).split(banner, 1)[0]
        address = server.address
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
        assert "export EQUIHOME_TOKEN=$(.venv/bin/equihome-sim token --all-scopes)" in banner
        assert (
            'grpcurl -plaintext -H "authorization: Bearer $EQUIHOME_TOKEN"' in banner and address in banner
        )
        assert "equihome-sim report simulations/ID" in banner
        assert "metrics  http://127.0.0.1:" in banner
        assert len(banner.splitlines()) <= 10
        assert '"message": "serving"' in before and '"message": "integrations started"' in before
    finally:
        status = server.stop()
    everything = "".join(server.output)
    assert status == 0, everything
    assert "Warning" not in everything and "warning" not in everything.lower(), everything
