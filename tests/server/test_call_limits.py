"""Call budgets: each group is held to its own limits, and releasing a call gives its room back."""

from __future__ import annotations

import pytest

from server import errors
from server.call_limits import UNAUTHENTICATED, Budgets, CallLimits, Kind

UNARY, STREAM = Kind.UNARY, Kind.STREAM


def limits(refused: list[tuple[str, Kind]] | None = None) -> CallLimits:
    seen = [] if refused is None else refused
    budgets = Budgets(
        per_caller={UNARY: 2, STREAM: 3},
        authenticated={UNARY: 3, STREAM: 100},
        unauthenticated={UNARY: 1, STREAM: 2},
    )
    return CallLimits(budgets, on_refused=lambda group, kind: seen.append((group, kind)))


def test_a_caller_is_held_to_its_own_budget_per_kind() -> None:
    calls = limits()
    releases = [calls.admit("alice", UNARY), calls.admit("alice", UNARY)]
    streams = [calls.admit("alice", STREAM) for _ in range(3)]  # streams have a budget of their own

    with pytest.raises(errors.ResourceExhausted) as refused:
        calls.admit("alice", UNARY)
    bob = calls.admit("bob", UNARY)  # another caller is not affected
    releases[0]()
    again = calls.admit("alice", UNARY)  # a released call gives its room back

    assert refused.value.reason == "CALL_LIMIT_EXHAUSTED"
    assert refused.value.metadata == {"group": "caller", "kind": "unary", "limit": "2"}
    assert refused.value.retry_after > 0
    assert calls.open_calls("alice", UNARY) == 2 and calls.open_calls("alice", STREAM) == 3
    for release in (releases[1], again, bob, *streams):
        release()
    assert calls.open_calls("alice", UNARY) == calls.open_calls("bob", UNARY) == 0


def test_authenticated_callers_together_and_unauthenticated_callers_have_separate_budgets() -> None:
    refused: list[tuple[str, Kind]] = []
    calls = limits(refused)
    held = [calls.admit(caller, UNARY) for caller in ("a", "b", "c")]  # the server-wide unary budget
    anonymous = [calls.admit(UNAUTHENTICATED, STREAM), calls.admit(UNAUTHENTICATED, STREAM)]

    with pytest.raises(errors.ResourceExhausted) as server_wide:
        calls.admit("d", UNARY)
    with pytest.raises(errors.ResourceExhausted) as unauthenticated:
        calls.admit(UNAUTHENTICATED, STREAM)
    unauthenticated_unary = calls.admit(UNAUTHENTICATED, UNARY)  # untouched by the others
    stream = calls.admit("d", STREAM)

    assert server_wide.value.metadata["group"] == "server"
    assert unauthenticated.value.metadata == {"group": "unauthenticated", "kind": "stream", "limit": "2"}
    assert refused == [("server", UNARY), ("unauthenticated", STREAM)]
    for release in (*held, *anonymous, unauthenticated_unary, stream):
        release()
