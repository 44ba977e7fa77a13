"""Fair call budgets: how many unary calls and how many streams each group of callers may hold open.

Unary calls and streams have separate budgets, so idle streams can never use up the room that short calls
need (or the reverse). Each authenticated caller (token subject) has its own budget of each kind, and all
authenticated callers together have a server-wide one; callers without a token (health Watch, reflection)
share a budget of their own, apart from everyone else's. A call that would exceed any budget of its group
is refused at once with RESOURCE_EXHAUSTED (CALL_LIMIT_EXHAUSTED) and RetryInfo; nothing queues. Health
``Check`` is never counted, so health checks always answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from server.errors import ResourceExhausted
from server.settings import Settings

RETRY_AFTER_S = 1.0
UNAUTHENTICATED = None  # the caller of a call made without a token


class Kind(StrEnum):
    UNARY = "unary"
    STREAM = "stream"


@dataclass(frozen=True)
class Budgets:
    """Open calls allowed, by kind: per caller, for all authenticated callers, for unauthenticated ones."""

    per_caller: dict[Kind, int]
    authenticated: dict[Kind, int]
    unauthenticated: dict[Kind, int]

    @classmethod
    def from_settings(cls, settings: Settings) -> Budgets:
        return cls(
            per_caller={Kind.UNARY: settings.max_unary_per_caller, Kind.STREAM: settings.max_streams_per_caller},
            authenticated={Kind.UNARY: settings.max_concurrent_unary, Kind.STREAM: settings.max_concurrent_streams},
            unauthenticated={
                Kind.UNARY: settings.max_unauthenticated_unary,
                Kind.STREAM: settings.max_unauthenticated_streams,
            },
        )


class CallLimits:
    """Counts open calls and admits or refuses new ones. Event-loop only (no locking)."""

    def __init__(self, budgets: Budgets, on_refused: Callable[[str, Kind], None] | None = None):
        self._budgets = budgets
        self._on_refused = on_refused
        self._per_caller: dict[Kind, Counter[str]] = {kind: Counter() for kind in Kind}
        self._authenticated: Counter[Kind] = Counter()
        self._unauthenticated: Counter[Kind] = Counter()

    def admit(self, caller: str | None, kind: Kind) -> Callable[[], None]:
        """Count one call of ``caller`` (None: no token); returns the function that ends it.

        Raises ``ResourceExhausted`` when the caller's group is at a limit.
        """
        if caller is UNAUTHENTICATED:
            self._check("unauthenticated", kind, self._unauthenticated[kind], self._budgets.unauthenticated[kind])
            self._unauthenticated[kind] += 1

            def release_unauthenticated() -> None:
                self._unauthenticated[kind] -= 1

            return release_unauthenticated
        callers = self._per_caller[kind]
        self._check("caller", kind, callers[caller], self._budgets.per_caller[kind])
        self._check("server", kind, self._authenticated[kind], self._budgets.authenticated[kind])
        callers[caller] += 1
        self._authenticated[kind] += 1

        def release() -> None:
            callers[caller] -= 1
            if callers[caller] <= 0:
                del callers[caller]  # only callers with open calls are remembered
            self._authenticated[kind] -= 1

        return release

    def open_calls(self, caller: str | None, kind: Kind) -> int:
        if caller is UNAUTHENTICATED:
            return self._unauthenticated[kind]
        return self._per_caller[kind][caller]

    def _check(self, group: str, kind: Kind, open_now: int, limit: int) -> None:
        if open_now < limit:
            return
        if self._on_refused is not None:
            self._on_refused(group, kind)
        whose = {
            "caller": "This caller has",
            "server": "Authenticated callers together have",
            "unauthenticated": "Callers without a token together have",
        }[group]
        raise ResourceExhausted(
            f"{whose} {limit} {kind.value} calls open, the most allowed; retry when one has ended.",
            RETRY_AFTER_S,
            reason="CALL_LIMIT_EXHAUSTED",
            metadata={"group": group, "kind": kind.value, "limit": str(limit)},
        )
