"""Who receives ``OptimizationCompleted``: a caller's own optimisation reaches that caller (and admins) only;
an automatic re-optimisation (owner "") reaches every subscriber; portfolio filters apply."""

from __future__ import annotations

from equihome.events.v1 import event_pb2
from server.integration.event_keys import EventFilter, event_key


def completed(owner: str, portfolio_id: str = "portfolio_456") -> event_pb2.Event:
    return event_pb2.Event(
        optimization_completed=event_pb2.OptimizationCompleted(
            optimization_id="optimization_" + "1" * 32, portfolio_id=portfolio_id, owner=owner
        )
    )


def test_a_callers_optimisation_reaches_only_that_caller_and_admins() -> None:
    key = event_key(completed("alice"))
    assert key.type == event_pb2.EVENT_TYPE_OPTIMIZATION_COMPLETED
    assert EventFilter.of(owner="alice").matches(key)
    assert not EventFilter.of(owner="mallory").matches(key)
    assert EventFilter.of(owner=None).matches(key)  # admins


def test_an_automatic_reoptimisation_reaches_everyone_and_filters_by_portfolio() -> None:
    key = event_key(completed(""))
    assert EventFilter.of(owner="mallory").matches(key)
    assert EventFilter.of(portfolio_id="portfolio_456", owner="bob").matches(key)
    assert not EventFilter.of(portfolio_id="portfolio_789").matches(key)
    types = [event_pb2.EVENT_TYPE_OPTIMIZATION_COMPLETED]
    assert EventFilter.of(types=types).matches(key)
    assert not EventFilter.of(types=[event_pb2.EVENT_TYPE_SIMULATION_COMPLETED]).matches(key)
