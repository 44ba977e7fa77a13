"""A simulation job publishes its own events on EventService: progress while it runs, then the headline."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import duration_pb2

from equihome.events.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from equihome.simulation.v1 import simulation_pb2

from .conftest import Service, small_config

Simulation = simulation_pb2.Simulation


async def test_a_run_streams_its_progress_and_completion_to_event_subscribers(service: Service) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.app.port}") as channel:
        events = event_service_pb2_grpc.EventServiceStub(channel)
        request = event_service_pb2.SubscribeEventsRequest(event_types=[
            event_pb2.EVENT_TYPE_SIMULATION_PROGRESSED, event_pb2.EVENT_TYPE_SIMULATION_COMPLETED,
        ], heartbeat_interval=duration_pb2.Duration(seconds=1))  # fmt: skip
        stream = events.SubscribeEvents(request, metadata=service.auth("events:read"))
        first = await asyncio.wait_for(stream.read(), timeout=30)
        assert first.event.HasField("heartbeat")  # the subscription is live before the run starts
        created = await service.create(small_config(paths=600, chunk_paths=100))

        async def until_completed() -> list[event_pb2.Event]:
            seen = []
            while (response := await stream.read()) is not grpc.aio.EOF:
                if response.event.WhichOneof("payload") == "heartbeat":
                    continue
                seen.append(response.event)
                if response.event.HasField("simulation_completed"):
                    return seen
            raise AssertionError("the stream ended before the run completed")

        seen = await asyncio.wait_for(until_completed(), timeout=60)
        stream.cancel()

    final = await service.get(created.name)
    progressed = [e.simulation_progressed for e in seen if e.HasField("simulation_progressed")]
    completed = seen[-1].simulation_completed
    assert progressed and all(p.name == created.name for p in progressed)
    done = [p.progress.paths_completed for p in progressed]
    assert done == sorted(done) and done[-1] <= 600
    assert completed.name == created.name and completed.state == Simulation.STATE_SUCCEEDED
    assert completed.end_time == final.end_time
    assert completed.metrics.irr == final.result.metrics.lp_net_irr.mean
    assert completed.metrics.equity_multiple == final.result.metrics.lp_moic.mean
    assert completed.metrics.var_95 == final.result.risk.capital_var_95
    assert [e.source for e in seen] == [seen[0].source] * len(seen) and seen[0].cursor
