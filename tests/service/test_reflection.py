"""Server reflection is enough to use the API, as grpcurl does: no proto files, no generated code."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.service.conftest import Service

ROOT = Path(__file__).resolve().parents[2]


async def test_a_client_with_only_reflection_discovers_every_service_and_runs_a_simulation(
    service: Service,
) -> None:
    token = service.auth("simulation:write")[0][1].removeprefix("Bearer ")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.service.reflection_client", f"127.0.0.1:{service.app.port}", token,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 0
    found = json.loads(output)

    assert found["generated_code_loaded"] == []
    assert set(found["services"]) == {
        "equihome.simulation.v1.SimulationService",
        "equihome.impact.v1.ImpactAnalysisService",
        "equihome.optimization.v1.OptimizationService",
        "equihome.events.v1.EventService",
        "equihome.integration.v1.IntegrationService",
        "equihome.study.v1.StudyService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert "WatchSimulation" in found["services"]["equihome.simulation.v1.SimulationService"]
    simulation = found["response"]["simulation"]
    assert simulation["state"] == "STATE_SUCCEEDED"
    assert simulation["result"]["metadata"]["paths"] == "200"
    assert simulation["result"]["metrics"]["lp_net_irr"]["count"] == "200"
