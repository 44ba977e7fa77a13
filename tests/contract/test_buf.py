"""``buf lint`` (STANDARD) and ``buf format`` must pass on the proto tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _buf() -> str:
    local = Path(sys.executable).parent / "buf"
    found = str(local) if local.exists() else shutil.which("buf")
    if found is None:
        pytest.skip("buf binary not installed (dev dependency buf-bin)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_buf(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_buf_lint_clean() -> None:
    result = _run("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format_clean() -> None:
    result = _run("format", "-d", "--exit-code")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_config_lints_standard_and_ignores_only_vendored_google() -> None:
    text = (ROOT / "buf.yaml").read_text()
    assert "version: v2" in text and "- STANDARD" in text and "- FILE" in text
    lint, breaking = text.split("\nlint:")[1].split("\nbreaking:")
    ignored = [line.strip() for line in lint.splitlines() if line.strip().startswith("- protos/")]
    assert ignored == ["- protos/google"]
    # The one breaking-check exception: issue 8's implicit -> explicit presence of upstream fields.
    exceptions = [line.strip() for line in breaking.splitlines() if line.strip().endswith(":") and line.startswith("    ")]
    assert exceptions in ([], ["FIELD_SAME_CARDINALITY:"])
