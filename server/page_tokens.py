"""Opaque, signed page tokens (AIP-158): a JSON payload behind an HMAC-SHA256 signature.

A token is valid only for the secret that signed it and for the ``scope`` it was issued in (e.g.
``runs`` plus the filter), so a tampered token, a foreign token or a changed filter is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from server.errors import InvalidArgument

_SIGNATURE_BYTES = 32


def sign(secret: bytes, scope: str, payload: Any) -> str:
    body = json.dumps({"s": scope, "p": payload}, separators=(",", ":")).encode()
    signature = hmac.new(secret, body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(signature + body).decode().rstrip("=")


def verify(secret: bytes, scope: str, token: str) -> Any:
    """The payload of ``token``; ``InvalidArgument`` (PAGE_TOKEN_INVALID) unless it is genuine and in scope."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise _invalid("page_token is not a token this server issued.") from None
    signature, body = raw[:_SIGNATURE_BYTES], raw[_SIGNATURE_BYTES:]
    if not hmac.compare_digest(signature, hmac.new(secret, body, hashlib.sha256).digest()):
        raise _invalid("page_token is not a token this server issued.")
    content = json.loads(body)
    if content["s"] != scope:
        raise _invalid("page_token was issued for a different filter; start again without it.",
                       "issued for a different filter")
    return content["p"]


def _invalid(message: str, violation: str = "not valid") -> InvalidArgument:
    return InvalidArgument(message, [("page_token", violation)], reason="PAGE_TOKEN_INVALID")
