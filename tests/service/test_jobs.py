"""Simulation jobs through the real service: views, watching, cancelling, back-pressure, idempotency."""

from __future__ import annotations

import asyncio
import uuid

import grpc

from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.settings import Settings
from tests.service.conftest import LONG_PATHS, Service, refusal, running, seed_portfolio, small_book, small_config

Simulation = simulation_pb2.Simulation
BASIC, SUMMARY, FULL = (
    simulation_pb2.SIMULATION_VIEW_BASIC,
    simulation_pb2.SIMULATION_VIEW_SUMMARY,
    simulation_pb2.SIMULATION_VIEW_FULL,
)


def sequences(messages: list[service_pb2.WatchSimulationResponse]) -> list[int]:
    return [message.sequence for message in messages]


async def test_a_job_runs_to_success_and_every_view_serves_it(service: Service) -> None:
    created = await service.create(small_config(paths=600), display_name="small fund")
    watched = await service.until_end(created.name)
    basic, summary, full = [await service.get(created.name, view) for view in (BASIC, SUMMARY, FULL)]
    listed = await service.list()

    assert created.state == Simulation.STATE_PENDING and created.display_name == "small fund"
    assert created.effective_config.monte_carlo.paths == 600 and created.seed == 20231
    assert sequences(watched) == sorted(set(sequences(watched)))  # strictly increasing
    assert [m.simulation.state for m in watched[:-1]].count(Simulation.STATE_SUCCEEDED) == 0
    final = watched[-1].simulation
    assert final.state == Simulation.STATE_SUCCEEDED
    assert final.result == summary.result and not summary.result.HasField("path_detail")
    assert summary.result.metadata.paths == 600 and summary.progress.paths_completed == 600
    assert summary.HasField("end_time") and summary.HasField("expire_time")
    assert not basic.HasField("result") and not basic.HasField("config")
    assert len(full.result.path_detail.lp_net_irr) == 600
    assert [s.name for s in listed.simulations] == [created.name]
    assert not listed.simulations[0].HasField("result")  # List defaults to BASIC


async def test_cancel_stops_a_running_job(service: Service) -> None:
    created = await service.create(small_config(paths=LONG_PATHS, chunk_paths=200))
    progressed = await service.until_progress(created.name)

    cancelled = (await service.cancel(created.name)).simulation
    again = await service.cancel(created.name)

    assert progressed.simulation.state == Simulation.STATE_RUNNING
    assert cancelled.state == Simulation.STATE_CANCELLED
    assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert 0 < cancelled.progress.paths_completed < LONG_PATHS
    assert service.runs_in_flight() == 0  # the worker let go of the job
    assert again.simulation.state == Simulation.STATE_CANCELLED


async def test_a_finished_job_cannot_be_cancelled(service: Service) -> None:
    created = await service.create(small_config())
    await service.until_end(created.name)

    details = await refusal(service.cancel(created.name))

    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RUN_STATE_CONFLICT")


async def test_a_full_runner_refuses_cleanly_and_a_queued_job_can_be_cancelled(settings: Settings) -> None:
    one_worker = settings.model_copy(update={"max_concurrent_runs": 1, "max_queued_runs": 1})
    async with running(one_worker) as service:
        first = await service.create(small_config(paths=LONG_PATHS))
        queued = await service.create(small_config(paths=LONG_PATHS))
        refused = await refusal(
            service.stub.CreateSimulation(
                service_pb2.CreateSimulationRequest(simulation=Simulation(config=small_config())),
                metadata=service.auth(),
            )
        )
        listed = await service.list()
        cancelled = [(await service.cancel(name)).simulation for name in (queued.name, first.name)]

    assert (refused.code, refused.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RUN_CAPACITY_EXHAUSTED")
    assert refused.retry_after is not None and refused.retry_after > 0
    assert {s.name for s in listed.simulations} == {first.name, queued.name}  # nothing half-created
    assert [s.state for s in cancelled] == [Simulation.STATE_CANCELLED] * 2
    assert cancelled[0].progress.paths_completed == 0 and not cancelled[0].HasField("start_time")


async def test_several_watchers_receive_the_same_end(service: Service) -> None:
    created = await service.create(small_config(paths=1500))

    views = await asyncio.gather(*(service.until_end(created.name) for _ in range(3)))

    finals = [watched[-1].simulation for watched in views]
    assert all(final.state == Simulation.STATE_SUCCEEDED for final in finals)
    assert finals[0].result.metadata.paths == 1500
    assert finals[1].result == finals[0].result and finals[2].result == finals[0].result
    for watched in views:
        assert sequences(watched) == sorted(set(sequences(watched)))


async def test_a_watcher_that_hangs_up_resumes_from_the_current_state(service: Service) -> None:
    created = await service.create(small_config(paths=6000, chunk_paths=200))
    seen = await service.until_progress(created.name)

    resumed = await service.until_end(created.name)

    first = resumed[0]
    assert first.sequence >= seen.sequence
    assert first.simulation.progress.paths_completed >= seen.simulation.progress.paths_completed
    assert sequences(resumed) == sorted(set(sequences(resumed)))
    assert resumed[-1].simulation.state == Simulation.STATE_SUCCEEDED
    assert resumed[-1].simulation.result.metadata.paths == 6000


async def test_create_is_idempotent_with_a_request_id(service: Service) -> None:
    request_id = str(uuid.uuid4())
    first = await service.create(small_config(), request_id=request_id)
    retried = await service.create(small_config(), request_id=request_id)
    reused = await refusal(
        service.stub.CreateSimulation(
            service_pb2.CreateSimulationRequest(
                simulation=Simulation(config=small_config(paths=301)), request_id=request_id
            ),
            metadata=service.auth(),
        )
    )
    listed = await service.list()

    assert retried.name == first.name
    assert (reused.code, reused.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    assert [s.name for s in listed.simulations] == [first.name]


async def test_list_pages_and_filters(settings: Settings) -> None:
    for portfolio in ("portfolio_a", "portfolio_b"):
        await seed_portfolio(settings.data_dir, portfolio, small_book())
    async with running(settings) as service:
        await _list_pages_and_filters(service)


async def _list_pages_and_filters(service: Service) -> None:
    names = []
    for portfolio in ("portfolio_a", "portfolio_a", "portfolio_b"):
        request = service_pb2.CreateSimulationRequest(
            simulation=Simulation(config=small_config(), portfolio_id=portfolio)
        )
        names.append((await service.stub.CreateSimulation(request, metadata=service.auth())).simulation.name)
    for name in names:
        await service.until_end(name)

    first = await service.list(page_size=2)
    rest = await service.list(page_size=2, page_token=first.next_page_token)
    of_a = await service.list(portfolio_id="portfolio_a", view=SUMMARY)
    running_now = await service.list(states=[Simulation.STATE_RUNNING])
    changed_filter = await refusal(
        service.list(page_size=2, page_token=first.next_page_token, portfolio_id="another")
    )

    assert [s.name for s in [*first.simulations, *rest.simulations]] == names[::-1]  # newest first
    assert rest.next_page_token == ""
    assert {s.name for s in of_a.simulations} == set(names[:2])
    assert all(s.result.metadata.paths == 300 for s in of_a.simulations)
    assert list(running_now.simulations) == []
    assert changed_filter.reason == "PAGE_TOKEN_INVALID"


async def test_large_chunks_and_many_workers_are_served_in_small_single_process_chunks(service: Service) -> None:
    # Cancellation is checked between chunks; results do not depend on chunking, so the server may cap it.
    created = await service.create(small_config(paths=1200, chunk_paths=50_000))
    served = created.effective_config.monte_carlo
    assert served.chunk_paths == 1000 and served.workers == 1
    final = (await service.until_end(created.name))[-1].simulation
    assert final.state == Simulation.STATE_SUCCEEDED and final.progress.chunks_total == 2
