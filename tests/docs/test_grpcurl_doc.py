"""Every shell block of docs/grpcurl.md, run as written and in order against a server started by its first
block; only the address is changed, to the server's free port. Variables set by one block (the token, a
job's name) are there for the next, as in one terminal session."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.docs.conftest import (
    DOC_ADDRESS,
    GRPCURL_DOC,
    SERVE_COMMAND,
    ServerProcess,
    shell_blocks,
    user_environment,
)

BLOCK_TIMEOUT_S = 180
# Runs one block after the variables of the blocks before it, stopping at the first failing command (of a
# pipeline too), then saves the variables the block set or changed for the blocks after it.
WRAPPER = """
[ -f "$STATE" ] && source "$STATE"
declare -A __old
for __name in $(compgen -v); do __old[$__name]="${{!__name}}"; done
set -eo pipefail
{block}
set +e
for __name in $(compgen -v); do
  case "$__name" in
    __*|BASH*|FUNCNAME|PIPESTATUS|_|COLUMNS|LINES|SHELLOPTS|RANDOM|SRANDOM|SECONDS|LINENO|EPOCH*) ;;
    PWD|OLDPWD) ;;
    *) [[ -v "__old[$__name]" && "${{__old[$__name]}}" == "${{!__name}}" ]] \\
         || declare -p "$__name" >> "$STATE" ;;
  esac
done
"""


def test_every_command_in_the_grpcurl_doc_runs_as_written(doc_server: ServerProcess, tmp_path: Path) -> None:
    blocks = shell_blocks(GRPCURL_DOC.read_text())
    assert SERVE_COMMAND.search(blocks[0].code), "the first block starts the server"
    assert len(blocks) > 10
    state = tmp_path / "state.sh"
    for block in blocks[1:]:
        code = block.code.replace(DOC_ADDRESS, doc_server.address)
        done = subprocess.run(
            ["bash", "-c", WRAPPER.format(block=code)],
            cwd=doc_server.workdir,
            capture_output=True,
            text=True,
            check=False,
            env=user_environment(STATE=str(state)),
            timeout=BLOCK_TIMEOUT_S,
        )
        output = done.stdout + done.stderr
        where = f"docs/grpcurl.md line {block.line}:\n{block.code}\n--- output:\n{output}"
        if block.expected_error is None:
            assert done.returncode == 0, where
            assert "ERROR:" not in output, where
        else:
            assert done.returncode != 0, where
            lines = [line.strip() for line in output.splitlines()]
            for expected in block.expected_error:
                assert expected in lines, f"missing {expected!r} in {where}"
    assert (doc_server.workdir / "run.html").stat().st_size > 1_000_000  # the report block wrote its file
