"""A small real run of the engine, as ``simulate --json`` would write it, shared by the report tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from server.mapping.engine_json import engine_document
from simulation.config import load_config
from simulation.engine import run
from tests.service.conftest import SMALL_FUND

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def engine_json() -> dict[str, Any]:
    """What `equihome-sim simulate --json` writes for 300 paths of a small fund."""
    config = load_config(copy.deepcopy(SMALL_FUND))
    return json.loads(json.dumps(engine_document(run(config), config)))


@pytest.fixture
def result_file(tmp_path: Path, engine_json: dict[str, Any]) -> Path:
    path = tmp_path / "small_fund.json"
    path.write_text(json.dumps(engine_json))
    return path
