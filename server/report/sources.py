"""Where a report's result comes from: a file, or a run on a server.

A file is either what ``equihome-sim simulate --json`` writes (the engine's result and config, mapped to
the contract by ``server.mapping``) or a result in the API's protobuf JSON: a response saved from
grpcurl (``{"simulation": {...}}``) or the bare message of one of the ``kinds``. A server run is read
with GetSimulation in the SUMMARY view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from equihome.simulation.v1 import simulation_pb2
from server.mapping.config import engine_to_config
from server.mapping.engine_json import EngineJsonError, engine_result
from server.mapping.result import result_to_proto
from server.remote.client import SimulationClient
from server.report.kinds import KINDS

Simulation = simulation_pb2.Simulation
MAX_FILE_BYTES = 256 * 1024 * 1024


class SourceError(ValueError):
    """The source cannot be read as a result; the message says why."""


def is_run_name(source: str) -> bool:
    return source.startswith("simulations/")


def read_file(path: Path) -> Message:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SourceError(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise SourceError(f"{path} holds a JSON {type(data).__name__}, not a result object")
    if "info" in data and "metrics" in data:
        return _engine_simulation(data, path)
    return _contract_message(data, path)


def fetch_run(client: SimulationClient, name: str) -> Simulation:
    return client.get(name, simulation_pb2.SIMULATION_VIEW_SUMMARY)


def _engine_simulation(data: dict[str, Any], path: Path) -> Simulation:
    try:
        result, config = engine_result(data)
    except EngineJsonError as error:
        raise SourceError(f"{path}: {error}") from None
    return Simulation(
        display_name=path.stem,
        state=Simulation.STATE_SUCCEEDED,
        effective_config=engine_to_config(config),
        result=result_to_proto(result, config),
        seed=result.info.seed,
        engine_version=result.info.engine_version,
    )


def _contract_message(data: dict[str, Any], path: Path) -> Message:
    problems = []
    for kind in KINDS:
        body = data[kind.response_field] if set(data) == {kind.response_field} else data
        try:
            return json_format.ParseDict(body, kind.message())
        except json_format.ParseError as error:
            problems.append(f"as {kind.message.DESCRIPTOR.full_name}: {error}")
    raise SourceError(
        f"{path} is neither the output of `equihome-sim simulate --json` nor a result in protobuf JSON ("
        + "; ".join(problems)
        + ")"
    )
