"""A grpcurl-like client: it learns the API from server reflection alone, then calls RunSimulation.

Run as ``python -m tests.service.reflection_client HOST:PORT TOKEN``; prints what it found as JSON. It runs
in its own process so that no generated ``equihome`` module is loaded and its blocking calls never share
an event loop with the server.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SERVICE = "equihome.simulation.v1.SimulationService"
CONFIG = {
    "fund": {"size": 5_000_000, "deployment_target_fraction": 0.8},
    "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000},
    "monte_carlo": {"paths": 200},
}


def discover_and_run(address: str, token: str) -> dict[str, Any]:
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        services = {
            name: sorted(pool.FindServiceByName(name).methods_by_name) for name in database.get_services()
        }
        method = pool.FindServiceByName(SERVICE).methods_by_name["RunSimulation"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        run = channel.unary_unary(
            f"/{SERVICE}/RunSimulation",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        request = json_format.ParseDict({"config": CONFIG}, request_class())
        response = run(request, metadata=[("authorization", f"Bearer {token}")], timeout=60)
    return {
        "services": services,
        "response": json_format.MessageToDict(response, preserving_proto_field_name=True),
        "generated_code_loaded": sorted(name for name in sys.modules if name.startswith("equihome")),
    }


if __name__ == "__main__":
    print(json.dumps(discover_and_run(sys.argv[1], sys.argv[2])))
