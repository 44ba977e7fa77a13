"""RunSimulation: a small run inside the call, through the same job runner, bounded by the deadline."""

from __future__ import annotations

import asyncio
import math

import grpc
import numpy as np

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.mapping.config import config_to_engine
from server.settings import Settings
from simulation import engine
from simulation.config import load_config
from tests.service.conftest import LONG_PATHS, Service, refusal, running, small_config

Simulation = simulation_pb2.Simulation


async def test_the_result_comes_back_inline_equal_to_the_engine(service: Service) -> None:
    no_gp_outflow = {"size": 5_000_000, "deployment_target_fraction": 0.8, "gp_commitment": 0}
    config = small_config(paths=400, fund=no_gp_outflow)
    request = service_pb2.RunSimulationRequest(config=config, view=simulation_pb2.SIMULATION_VIEW_FULL)
    reply = await service.stub.RunSimulation(request, metadata=service.auth(), timeout=30)
    expected = engine.run(load_config(config_to_engine(config)), keep_paths=True)

    simulation = reply.simulation
    assert simulation.name == "" and simulation.state == Simulation.STATE_SUCCEEDED
    assert not simulation.HasField("expire_time") and not simulation.HasField("book_snapshot")
    result = simulation.result
    assert result.metrics.lp_net_irr.mean == expected.metrics["lp_net_irr"].mean
    assert result.risk.prob_loss == expected.risk.prob_loss
    np.testing.assert_array_equal(result.path_detail.lp_moic, expected.paths["lp_moic"])
    assert math.isnan(result.metrics.gp_irr.mean)  # NaN on the wire
    assert result.metrics.gp_irr.nan_count == 400


async def test_a_deadline_that_expires_first_cancels_the_job(settings: Settings) -> None:
    one_worker = settings.model_copy(update={"max_concurrent_runs": 1, "max_queued_runs": 2})
    async with running(one_worker) as service:
        blocker = await service.create(small_config(paths=LONG_PATHS))
        await service.until_progress(blocker.name)  # the only worker is busy: the next run queues

        details = await refusal(
            service.stub.RunSimulation(
                service_pb2.RunSimulationRequest(config=small_config()), metadata=service.auth(), timeout=1.0
            )
        )
        queued_after_deadline = service.app.metrics.sample("equihome_runs_queued")

        call = service.stub.RunSimulation(
            service_pb2.RunSimulationRequest(config=small_config()), metadata=service.auth(), timeout=30
        )
        while service.app.metrics.sample("equihome_runs_queued") != 1:
            await asyncio.sleep(0.01)
        call.cancel()
        while service.app.metrics.sample("equihome_runs_queued") != 0:
            await asyncio.sleep(0.01)  # the server noticed the caller left and dropped its job
        await service.stub.CancelSimulation(
            service_pb2.CancelSimulationRequest(name=blocker.name), metadata=service.auth()
        )

    assert (details.code, details.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_TOO_SHORT")
    assert queued_after_deadline == 0
    assert await call.code() == grpc.StatusCode.CANCELLED
