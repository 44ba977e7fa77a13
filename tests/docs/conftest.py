"""A real server process started as docs/grpcurl.md starts it, in a scratch directory laid out like the
repository root (``.venv`` and ``docs`` linked), on free ports; and the shell blocks of a Markdown file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.serve_cli import BANNER_LAST

REPO = Path(__file__).resolve().parents[2]
GRPCURL_DOC = REPO / "docs" / "grpcurl.md"
DOC_ADDRESS = "localhost:50051"
SERVE_COMMAND = re.compile(r"^\.venv/bin/equihome-sim serve\b.*$", re.MULTILINE)
BANNER_ADDRESS = re.compile(r"serving gRPC on (\S+:\d+)")
BANNER_END = f"  {BANNER_LAST} "
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ShellBlock:
    """A ```sh block, and the lines from ``ERROR:`` on of the ```text block after it, when that block shows
    the commands failing."""

    code: str
    line: int
    expected_error: tuple[str, ...] | None = None


def shell_blocks(markdown: str) -> list[ShellBlock]:
    fences = list(re.finditer(r"^```(\w*)\n(.*?)^```\n", markdown, re.MULTILINE | re.DOTALL))
    blocks = []
    for index, fence in enumerate(fences):
        if fence.group(1) != "sh":
            continue
        line = markdown.count("\n", 0, fence.start()) + 1
        following = fences[index + 1] if index + 1 < len(fences) else None
        expected = None
        if (
            following is not None
            and following.group(1) == "text"
            and not markdown[fence.end() : following.start()].strip()
            and "\nERROR:\n" in "\n" + following.group(2)
        ):
            shown = ("\n" + following.group(2)).split("\nERROR:\n", 1)[1]
            expected = ("ERROR:", *(text.strip() for text in shown.splitlines() if text.strip()))
        blocks.append(ShellBlock(fence.group(2), line, expected))
    return blocks


def user_environment(**extra: str) -> dict[str, str]:
    """The caller's environment without any EQUIHOME_* setting the tests did not choose."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("EQUIHOME_")}
    env.pop("PYTHONWARNINGS", None)
    return env | extra


def repository_like(directory: Path) -> Path:
    """A scratch directory where ``.venv/bin/...`` and ``docs/...`` resolve as from the repository root."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".venv").symlink_to(sys.prefix)
    (directory / "docs").symlink_to(REPO / "docs")
    return directory


@dataclass
class ServerProcess:
    """``equihome-sim serve`` as a child process; ``output`` is everything it wrote, stdout and stderr
    interleaved as a terminal would show them."""

    process: subprocess.Popen[str]
    workdir: Path
    output: list[str] = field(default_factory=list)
    banner: str = ""
    address: str = ""

    @classmethod
    def start(cls, command: str, workdir: Path) -> ServerProcess:
        env = user_environment(EQUIHOME_PORT="0", EQUIHOME_METRICS_PORT="0")
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=workdir,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = cls(process, workdir)
        banner_seen = threading.Event()
        threading.Thread(target=server._read, args=(banner_seen,), daemon=True).start()
        if not banner_seen.wait(START_TIMEOUT_S) or not server.address:
            server.stop()
            raise AssertionError("the server printed no banner:\n" + "".join(server.output))
        return server

    def _read(self, banner_seen: threading.Event) -> None:
        assert self.process.stdout is not None
        banner: list[str] = []
        for line in self.process.stdout:
            self.output.append(line)
            if not banner_seen.is_set():
                if banner or BANNER_ADDRESS.search(line):
                    banner.append(line)
                if banner and line.startswith(BANNER_END):
                    self.banner = "".join(banner)
                    self.address = BANNER_ADDRESS.search(self.banner).group(1)  # type: ignore[union-attr]
                    banner_seen.set()
        banner_seen.set()

    def stop(self) -> int:
        """SIGINT, as Ctrl-C would; the exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


@pytest.fixture(scope="session")
def doc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server as the first block of docs/grpcurl.md starts it."""
    match = SERVE_COMMAND.search(GRPCURL_DOC.read_text())
    assert match, "docs/grpcurl.md starts no server"
    server = ServerProcess.start(match.group(0), repository_like(tmp_path_factory.mktemp("grpcurl-doc")))
    yield server
    server.stop()
