"""Every request body in docs/examples/api/ sent through grpcurl, as docs/examples/README.md shows, to the
real server; created jobs are followed until they succeed. Each API-format fund is the same fund as its
engine-format twin in docs/examples/."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, json_format, message_factory

from equihome.events.v1 import event_service_pb2  # noqa: F401  (registers the services' descriptors)
from equihome.impact.v1 import impact_analysis_service_pb2  # noqa: F401
from equihome.integration.v1 import integration_service_pb2  # noqa: F401
from equihome.optimization.v1 import optimization_service_pb2  # noqa: F401
from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.auth import SCOPES, issue_dev_token
from server.mapping.config import config_to_engine
from server.remote.client import SimulationClient, open_channel
from simulation.config import load_config
from tests.docs.conftest import REPO, ServerProcess, user_environment

EXAMPLES = REPO / "docs" / "examples"
ROW = re.compile(r"^\| `(api/[^`]+\.json)` \| `([\w.]+)/(\w+)` \|", re.MULTILINE)


def table() -> list[tuple[str, str, str]]:
    """(file, service, method) of every row of the README's table."""
    return ROW.findall((EXAMPLES / "README.md").read_text())


def test_the_table_lists_every_api_example_once() -> None:
    listed = [file for file, _, _ in table()]
    assert sorted(listed) == sorted(f"api/{path.name}" for path in (EXAMPLES / "api").glob("*.json"))
    assert len(set(listed)) == len(listed)


@pytest.mark.parametrize(
    "file", sorted(path.name for path in (EXAMPLES / "api").glob("create_simulation_*.json"))
)
def test_an_api_example_describes_the_same_fund_as_its_engine_twin(file: str) -> None:
    twin = EXAMPLES / file.removeprefix("create_simulation_")
    request = json_format.Parse((EXAMPLES / "api" / file).read_text(), service_pb2.CreateSimulationRequest())
    from_api = load_config(config_to_engine(request.simulation.config))
    assert from_api == load_config(json.loads(twin.read_text()))


def test_every_example_goes_through_grpcurl_to_the_real_server(doc_server: ServerProcess) -> None:
    token = issue_dev_token(doc_server.workdir / "data", SCOPES)
    pool = descriptor_pool.Default()
    created = []
    for file, service, method in table():
        done = subprocess.run(
            [
                "grpcurl",
                "-plaintext",
                "-H",
                f"authorization: Bearer {token}",
                "-max-time",
                "120",
                "-d",
                "@",
                doc_server.address,
                f"{service}/{method}",
            ],
            input=(EXAMPLES / file).read_text(),
            capture_output=True,
            text=True,
            timeout=180,
            cwd=REPO,
            check=False,
            env=user_environment(
                PATH=f"{Path(doc_server.workdir, '.venv', 'bin')}:{user_environment()['PATH']}"
            ),
        )
        assert done.returncode == 0, f"{file}: {done.stderr}"
        output_type = pool.FindMethodByName(f"{service}.{method}").output_type
        reply = json_format.Parse(done.stdout, message_factory.GetMessageClass(output_type)())
        if method == "CreateSimulation":
            request = json.loads((EXAMPLES / file).read_text())
            assert reply.simulation.display_name == request["simulation"]["display_name"]
            created.append(reply.simulation.name)
        if method == "RunSimulation":
            assert reply.simulation.state == simulation_pb2.Simulation.STATE_SUCCEEDED
    assert len(created) == 4
    with open_channel(doc_server.address) as channel:
        client = SimulationClient(channel, target=doc_server.address, token=token)
        for name in created:
            *_, final = client.watch(name, view=simulation_pb2.SIMULATION_VIEW_BASIC)
            assert final.state == simulation_pb2.Simulation.STATE_SUCCEEDED, (name, final.error)
