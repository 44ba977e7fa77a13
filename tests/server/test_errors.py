"""The error model over the wire: details survive the trip, unexpected errors leak nothing."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.protobuf import wrappers_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server import errors
from tests.server.conftest import Metadata
from tests.server.echo_service import SECRET, EchoClient


async def failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_invalid_argument_carries_error_info_and_field_violations(
    client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    error = await failure(
        client.fail(wrappers_pb2.StringValue(value="invalid"), metadata=auth_for("simulation:read"))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = errors.unpack(error)
    assert details.message == "The name 'x y' is not valid."
    assert details.error_info is not None
    assert (details.reason, details.error_info.domain) == ("NAME_INVALID", errors.ERROR_DOMAIN)
    assert dict(details.error_info.metadata) == {"name": "x y"}
    assert details.bad_request is not None
    assert [(v.field, v.description) for v in details.bad_request.field_violations] == [
        ("simulation.name", "must not contain spaces")
    ]
    status = rpc_status.from_call(error)
    assert sum(detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) for detail in status.details) == 1


@pytest.mark.parametrize(
    ("kind", "code", "retry_after"),
    [
        ("exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED, 2.5),
        ("unavailable", grpc.StatusCode.UNAVAILABLE, 0.25),
    ],
)
async def test_retryable_errors_carry_retry_info(
    client: EchoClient,
    auth_for: Callable[..., Metadata],
    kind: str,
    code: grpc.StatusCode,
    retry_after: float,
) -> None:
    error = await failure(
        client.fail(wrappers_pb2.StringValue(value=kind), metadata=auth_for("simulation:read"))
    )

    details = errors.unpack(error)
    assert details.code == code
    assert details.retry_after == retry_after
    assert details.bad_request is None


async def test_not_found_has_default_reason(client: EchoClient, auth_for: Callable[..., Metadata]) -> None:
    error = await failure(
        client.fail(wrappers_pb2.StringValue(value="not_found"), metadata=auth_for("simulation:read"))
    )

    details = errors.unpack(error)
    assert (details.code, details.reason, dict(details.error_info.metadata)) == (  # type: ignore[union-attr]
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        {"name": "runs/1"},
    )


async def test_unexpected_exception_is_internal_without_traceback_or_secret(
    client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    call = client.fail(wrappers_pb2.StringValue(value="boom"), metadata=auth_for("simulation:read"))
    error = await failure(call)

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == errors.INTERNAL_MESSAGE
    everything_sent = f"{error.details()} {error.trailing_metadata()} {error.debug_error_string()}"
    assert "hunter2" not in everything_sent and "Traceback" not in everything_sent
    details = errors.unpack(error)
    correlation_id = dict(await call.initial_metadata())["x-correlation-id"]
    assert details.reason == "INTERNAL"
    assert dict(details.error_info.metadata) == {"correlation_id": correlation_id}  # type: ignore[union-attr]


async def test_stream_error_after_messages_keeps_messages_and_details(
    client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    call = client.count(wrappers_pb2.Int32Value(value=-1), metadata=auth_for("simulation:read"))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for item in call:
            received.append(item.value)

    assert received == [0]
    details = errors.unpack(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RUN_FINISHED")


async def test_unexpected_exception_in_stream_is_internal(
    client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    call = client.count(wrappers_pb2.Int32Value(value=-2), metadata=auth_for("simulation:read"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass

    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in caught.value.details()
    assert errors.unpack(caught.value).reason == "INTERNAL"


async def test_successful_stream_ends_ok(client: EchoClient, auth_for: Callable[..., Metadata]) -> None:
    call = client.count(wrappers_pb2.Int32Value(value=3), metadata=auth_for("simulation:read"))

    assert [item.value async for item in call] == [0, 1, 2]
    assert await call.code() == grpc.StatusCode.OK


def test_status_has_exactly_the_details_that_apply() -> None:
    status = errors.to_status(errors.ResourceExhausted("busy", retry_after=3, metadata={"limit": 2}))  # type: ignore[dict-item]

    kinds = [detail.TypeName() for detail in status.details]
    assert kinds == ["google.rpc.ErrorInfo", "google.rpc.RetryInfo"]
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert dict(info.metadata) == {"limit": "2"}


def test_reason_must_be_upper_snake_case() -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):
        errors.NotFound("gone", reason="not-found")
    with pytest.raises(ValueError, match="retry_after"):
        errors.Unavailable("down", retry_after=float("nan"))


def test_unknown_exception_becomes_generic_internal() -> None:
    status = errors.to_status(KeyError("api_key=abc"), correlation_id="c-1")

    assert status.code == grpc.StatusCode.INTERNAL.value[0]
    assert status.message == errors.INTERNAL_MESSAGE
    assert "api_key" not in str(status)
