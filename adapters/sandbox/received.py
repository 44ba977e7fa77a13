"""What the engine POSTed to the systems, kept for read-back by tests (``GET /sandbox/received``)."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from adapters.sandbox.frames import utc_timestamp
from adapters.sandbox.systems import System

KEPT_POSTS = 10_000


@dataclass(frozen=True)
class ReceivedPost:
    id: str
    system: System
    path: str
    body: dict[str, Any]
    client_id: str
    correlation_id: str
    idempotency_key: str | None  # the ``Idempotency-Key`` header, if the client sent one
    received_at: str

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "system": self.system.value}


class ReceivedLog:
    """The latest KEPT_POSTS accepted POST bodies, oldest first."""

    def __init__(self) -> None:
        self._posts: deque[ReceivedPost] = deque(maxlen=KEPT_POSTS)
        self._numbers = itertools.count(1)

    def record(
        self,
        system: System,
        path: str,
        body: dict[str, Any],
        *,
        client_id: str,
        correlation_id: str,
        idempotency_key: str | None,
    ) -> ReceivedPost:
        post = ReceivedPost(
            id=f"received_{next(self._numbers)}",
            system=system,
            path=path,
            body=body,
            client_id=client_id,
            correlation_id=correlation_id,
            idempotency_key=idempotency_key,
            received_at=utc_timestamp(),
        )
        self._posts.append(post)
        return post

    def posts(self, system: System | None = None) -> list[ReceivedPost]:
        return [post for post in self._posts if system is None or post.system is system]

    def clear(self) -> None:
        self._posts.clear()
