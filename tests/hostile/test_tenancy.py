"""Finding "no tenancy": a caller with sub=bob could list, read and cancel sub=alice's simulations; request_id
was global, so bob replaying alice's id got alice's job; the caller was never recorded; one caller could
fill the whole queue."""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import duration_pb2

from equihome.events.v1 import event_pb2, event_service_pb2
from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from tests.hostile.conftest import HOSTILE_SETTINGS, LONG_PATHS, Callers, ServerProcess
from tests.service.conftest import refusal, small_config

Simulation = simulation_pb2.Simulation
ADMIN = "simulation:admin"


async def create(callers: Callers, metadata: object, paths: int = 300, request_id: str = "") -> Simulation:
    request = service_pb2.CreateSimulationRequest(
        simulation=Simulation(config=small_config(paths=paths)), request_id=request_id
    )
    return (await callers.simulations.CreateSimulation(request, metadata=metadata, timeout=30)).simulation


async def names(callers: Callers, metadata: object) -> set[str]:
    listed = await callers.simulations.ListSimulations(
        service_pb2.ListSimulationsRequest(page_size=1000), metadata=metadata, timeout=10
    )
    return {simulation.name for simulation in listed.simulations}


async def test_callers_see_and_touch_only_their_own_runs(server: ServerProcess, callers: Callers) -> None:
    alice, bob = server.token("alice"), server.token("bob")
    run = await create(callers, alice, paths=LONG_PATHS)
    name = run.name

    got = await refusal(callers.simulations.GetSimulation(service_pb2.GetSimulationRequest(name=name), metadata=bob))
    cancelled = await refusal(
        callers.simulations.CancelSimulation(service_pb2.CancelSimulationRequest(name=name), metadata=bob)
    )
    watched = await refusal(
        callers.simulations.WatchSimulation(service_pb2.WatchSimulationRequest(name=name), metadata=bob).read()
    )
    bobs = await names(callers, bob)
    still_running = await callers.simulations.GetSimulation(
        service_pb2.GetSimulationRequest(name=name), metadata=alice
    )

    assert run.owner == "alice"
    for details in (got, cancelled, watched):  # to bob, alice's run does not exist
        assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "SIMULATION_NOT_FOUND")
    assert name not in bobs
    assert still_running.simulation.state in (Simulation.STATE_PENDING, Simulation.STATE_RUNNING)

    admin = server.token("root", "simulation:read", "simulation:write", ADMIN)
    as_admin = await callers.simulations.GetSimulation(service_pb2.GetSimulationRequest(name=name), metadata=admin)
    await callers.simulations.CancelSimulation(service_pb2.CancelSimulationRequest(name=name), metadata=admin)

    assert name in await names(callers, admin)
    assert as_admin.simulation.owner == "alice"


async def test_request_ids_are_per_caller(server: ServerProcess, callers: Callers) -> None:
    request_id = str(uuid.uuid4())
    alices = await create(callers, server.token("alice-2"), request_id=request_id)
    retried = await create(callers, server.token("alice-2"), request_id=request_id)
    bobs = await create(callers, server.token("bob-2"), request_id=request_id)

    assert retried.name == alices.name  # a retry of one's own request is idempotent
    assert bobs.name != alices.name and bobs.owner == "bob-2"  # another caller's id is not shared


async def test_one_caller_cannot_fill_the_queue(server: ServerProcess, callers: Callers) -> None:
    quota = int(HOSTILE_SETTINGS["max_active_runs_per_caller"])
    greedy, patient = server.token("greedy"), server.token("patient")
    mine = [await create(callers, greedy, paths=LONG_PATHS) for _ in range(quota)]
    refused = await refusal(callers.simulations.CreateSimulation(
        service_pb2.CreateSimulationRequest(simulation=Simulation(config=small_config())), metadata=greedy,
    ))  # fmt: skip
    theirs = await create(callers, patient)
    for run in mine:
        await callers.simulations.CancelSimulation(service_pb2.CancelSimulationRequest(name=run.name), metadata=greedy)

    assert (refused.code, refused.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RUN_QUOTA_EXHAUSTED")
    assert refused.error_info.metadata == {"owner": "greedy", "max_active_runs": str(quota)}
    assert refused.retry_after is not None
    assert theirs.owner == "patient"


async def test_simulation_events_reach_only_their_owner_and_admins(server: ServerProcess, callers: Callers) -> None:
    request = event_service_pb2.SubscribeEventsRequest(
        event_types=[event_pb2.EVENT_TYPE_SIMULATION_COMPLETED], heartbeat_interval=duration_pb2.Duration(seconds=1)
    )
    owner = server.token("carol")
    streams = {who: callers.events.SubscribeEvents(request, metadata=server.token(who)) for who in ("carol", "dave")}
    for stream in streams.values():
        assert (await stream.read()).event.HasField("heartbeat")  # attached
    run = await create(callers, owner)
    async for _ in callers.simulations.WatchSimulation(
        service_pb2.WatchSimulationRequest(name=run.name), metadata=owner
    ):
        pass
    owners_events, completed_at = await completions_until(streams.pop("carol"), run.name)
    others_events, _ = await completions_until(streams.pop("dave"), cursor=completed_at)

    assert owners_events == [run.name]
    assert others_events == []

    admin = callers.events.SubscribeEvents(
        event_service_pb2.SubscribeEventsRequest(start_after_cursor=str(completed_at - 1)),
        metadata=server.token("root", "events:read", ADMIN),
    )  # an admin resuming just before the completion receives it
    admins_events, _ = await completions_until(admin, run.name)
    assert admins_events == [run.name]


async def completions_until(
    stream: grpc.aio.UnaryStreamCall, name: str = "", cursor: int = 0
) -> tuple[list[str], int]:
    """Completed simulations a subscription delivers, until the completion of ``name`` or a message at or past
    ``cursor`` (a heartbeat's cursor covers every event before it); returns them and the last cursor."""
    names_ = []
    while True:
        event = (await stream.read()).event
        if not event.HasField("heartbeat"):
            names_.append(event.simulation_completed.name)
        if (name and names_ and names_[-1] == name) or (cursor and int(event.cursor) >= cursor):
            stream.cancel()
            return names_, int(event.cursor)


async def test_the_caller_is_in_the_log(server: ServerProcess, callers: Callers) -> None:
    run = await create(callers, server.token("erin"))

    lines = [line for line in server.log_lines() if line.get("caller") == "erin"]
    assert any(line["message"] == "call finished" and line["method"].endswith("/CreateSimulation") for line in lines)
    assert run.owner == "erin"
