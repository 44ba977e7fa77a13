"""Bearer-token authentication and per-method scopes, through a real server and a real JWKS endpoint."""

from __future__ import annotations

import base64
import json
import logging
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import empty_pb2, wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from joserfc import jwk

from server import errors
from server.auth import (
    SCOPES,
    DevKeyError,
    TokenVerifier,
    dev_key_paths,
    ensure_dev_key,
    issue_dev_token,
    sign_token,
    signing_keys_from_url,
    verifier_from_settings,
)
from server.settings import DEFAULT_AUDIENCE, DEFAULT_ISSUER, Settings
from tests.server.conftest import Metadata, bearer, start_app
from tests.server.echo_service import SERVICE, EchoClient

HELLO = wrappers_pb2.StringValue(value="hello")


async def refusal(call: object) -> errors.ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return errors.unpack(caught.value)


def dev_key(settings: Settings) -> jwk.Key:
    return jwk.import_key(json.loads(ensure_dev_key(settings.data_dir).read_text()))


def token(key: jwk.Key, **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "scopes": ["simulation:read"],
        "issuer": DEFAULT_ISSUER,
        "audience": DEFAULT_AUDIENCE,
    }
    return sign_token(key, **(claims | overrides))


async def test_valid_token_reaches_the_handler_with_its_principal(
    client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    assert (await client.echo(HELLO, metadata=auth_for("simulation:read"))).value == "hello"
    assert (await client.whoami(empty_pb2.Empty(), metadata=auth_for("simulation:read"))).value == "dev"


async def test_missing_or_malformed_token_is_unauthenticated(client: EchoClient) -> None:
    missing = await refusal(client.echo(HELLO))
    wrong_scheme = await refusal(client.echo(HELLO, metadata=(("authorization", "Basic dXNlcjpwYXNz"),)))
    garbage = await refusal(client.echo(HELLO, metadata=bearer("not-a-jwt")))

    assert (missing.code, missing.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    assert (wrong_scheme.code, wrong_scheme.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    assert (garbage.code, garbage.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    assert missing.error_info is not None and missing.error_info.domain == errors.ERROR_DOMAIN


async def test_bad_signature_unknown_key_and_alg_none_are_refused(
    client: EchoClient, settings: Settings
) -> None:
    real = dev_key(settings)
    impostor = jwk.generate_key("EC", "P-256", parameters={"kid": real.kid, "alg": "ES256"})
    stranger = jwk.generate_key("EC", "P-256", parameters={"alg": "ES256"}, auto_kid=True)
    header = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": real.kid}).encode()).rstrip(b"=").decode()
    )
    unsigned = header + "." + token(real).split(".")[1] + "."

    for forged in (token(impostor), token(stranger), unsigned):
        details = await refusal(client.echo(HELLO, metadata=bearer(forged)))
        assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_expired_token_is_refused_as_expired(client: EchoClient, settings: Settings) -> None:
    expired = token(dev_key(settings), ttl=60, now=int(time.time()) - 3600)

    details = await refusal(client.echo(HELLO, metadata=bearer(expired)))

    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_a_remembered_token_still_expires(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = verifier_from_settings(settings)
    valid = token(dev_key(settings), ttl=600)
    first = await verifier.verify(valid)
    again = await verifier.verify(valid)  # served from memory
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)

    with pytest.raises(errors.Unauthenticated) as expired:
        await verifier.verify(valid)

    assert again is first
    assert expired.value.reason == "TOKEN_EXPIRED"


@pytest.mark.parametrize(
    ("claim", "override"), [("aud", {"audience": "someone-else"}), ("iss", {"issuer": "evil"})]
)
async def test_wrong_audience_or_issuer_is_refused(
    client: EchoClient, settings: Settings, claim: str, override: dict[str, str]
) -> None:
    details = await refusal(client.echo(HELLO, metadata=bearer(token(dev_key(settings), **override))))

    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    assert dict(details.error_info.metadata) == {"claim": claim}  # type: ignore[union-attr]


async def test_missing_scope_is_permission_denied(
    client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    details = await refusal(client.echo(HELLO, metadata=auth_for("simulation:write", "events:read")))

    assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
    assert dict(details.error_info.metadata) == {"required_scope": "simulation:read"}  # type: ignore[union-attr]


async def test_streaming_method_checks_its_own_scope(
    client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    call = client.follow(empty_pb2.Empty(), metadata=auth_for("simulation:read"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass

    assert errors.unpack(caught.value).error_info.metadata["required_scope"] == "events:read"  # type: ignore[union-attr]


async def test_method_missing_from_the_scope_map_is_denied(
    client: EchoClient, auth_for: Callable[..., Metadata]
) -> None:
    details = await refusal(client.unmapped(empty_pb2.Empty(), metadata=auth_for(*SCOPES)))

    assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED")


async def test_health_and_reflection_need_no_token(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    ours = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    listed = {
        service.name async for response in responses for service in response.list_services_response.service
    }

    assert overall.status == ours.status == health_pb2.HealthCheckResponse.SERVING
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed


async def test_disabled_auth_admits_anyone_but_still_fails_closed(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="server.app"):
        app = await start_app(settings.model_copy(update={"insecure_disable_auth": True}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            client = EchoClient(channel)
            assert (await client.echo(HELLO)).value == "hello"
            details = await refusal(client.unmapped(empty_pb2.Empty()))
    finally:
        await app.shutdown(grace=0)

    assert details.reason == "METHOD_NOT_ALLOWED"
    assert any("AUTHENTICATION IS DISABLED" in record.message for record in caplog.records)


def test_dev_key_is_private_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    key_path = ensure_dev_key(tmp_path)
    paths = dev_key_paths(tmp_path)
    public = json.loads(paths.public.read_text())

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert ensure_dev_key(tmp_path) == key_path  # idempotent: the same key stays
    assert "d" not in public["keys"][0]  # the public set holds no private part

    key_path.chmod(0o644)
    with pytest.raises(DevKeyError, match="chmod 600"):
        issue_dev_token(tmp_path, ["simulation:read"])


def test_unknown_scope_is_refused_when_issuing() -> None:
    key = jwk.generate_key("EC", "P-256", auto_kid=True)
    with pytest.raises(ValueError, match="unknown scope"):
        sign_token(key, scopes=["simulation:superuser"], issuer="i", audience="a")


class _Jwks:
    """A real HTTP JWKS endpoint in a thread, whose key set the test can rotate (or break)."""

    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                if owner.document is None:
                    self.send_error(503)
                    return
                body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/.well-known/jwks.json"

    def publish(self, *keys: jwk.Key) -> None:
        self.document = {"keys": [key.as_dict(private=False) for key in keys]}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks() -> Iterator[_Jwks]:
    endpoint = _Jwks()
    yield endpoint
    endpoint.close()


async def test_jwks_url_keys_are_cached_and_refreshed_for_a_new_kid(jwks: _Jwks) -> None:
    old = jwk.generate_key("EC", "P-256", parameters={"alg": "ES256"}, auto_kid=True)
    new = jwk.generate_key("RSA", 2048, parameters={"alg": "RS256"}, auto_kid=True)
    jwks.publish(old)
    async with httpx.AsyncClient() as http:
        keys = signing_keys_from_url(jwks.url, http, min_reload_interval=0)
        verifier = TokenVerifier(keys, issuer=DEFAULT_ISSUER, audience=DEFAULT_AUDIENCE)

        assert (await verifier.verify(token(old))).scopes == {"simulation:read"}
        assert (await verifier.verify(token(old))).subject == "dev"
        fetches_while_cached = jwks.fetches
        jwks.publish(old, new)  # the issuer rotates in a new key
        rotated = await verifier.verify(token(new, scopes=["events:read"]))

    assert fetches_while_cached == 1
    assert rotated.scopes == {"events:read"}
    assert jwks.fetches == 2


async def test_unreachable_jwks_is_unavailable_with_retry_info(jwks: _Jwks) -> None:
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(
            signing_keys_from_url(jwks.url, http), issuer=DEFAULT_ISSUER, audience=DEFAULT_AUDIENCE
        )
        key = jwk.generate_key("EC", "P-256", parameters={"alg": "ES256"}, auto_kid=True)
        with pytest.raises(errors.Unavailable) as caught:
            await verifier.verify(token(key))

    assert caught.value.reason == "AUTH_KEYS_UNAVAILABLE" and caught.value.retry_after > 0
