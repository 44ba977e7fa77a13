"""A subscriber that does not read: run as ``python -m tests.integration.slow_subscriber PORT``.

It subscribes with a small, fixed HTTP/2 window (no BDP probing), so its stream stalls after a few
messages, waits for a line on stdin, then drains the stream and prints the final status code and the
ErrorInfo reason. It is a separate process because an aio client sharing the server's process and
event loop is no model of a remote slow client.
"""

from __future__ import annotations

import sys

import grpc

from equihome.events.v1 import event_service_pb2, event_service_pb2_grpc
from server.errors import unpack


def main(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.http2.bdp_probe", 0)]) as channel:
        call = event_service_pb2_grpc.EventServiceStub(channel).SubscribeEvents(
            event_service_pb2.SubscribeEventsRequest()
        )
        sys.stdin.readline()
        received = 0
        try:
            for _ in call:
                received += 1
        except grpc.RpcError as error:
            details = unpack(error)
            print(details.code.name, details.reason, received, flush=True)
            return
        print("OK", "", received, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
