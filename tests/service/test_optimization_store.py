"""Stored optimisations: retention keeps the last one sent for each portfolio (re-optimisation compares
with it) and deletes the rest once expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.store import OPTIMIZATION_RETENTION, OptimizationRecord, Store

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def record(name: str, portfolio: str, sent: bool, age: timedelta) -> OptimizationRecord:
    return OptimizationRecord(f"optimization_{name}", "dev", portfolio, False, sent, b"body", NOW - age)


async def test_expired_optimisations_go_but_the_last_sent_per_portfolio_stays(tmp_path: Path) -> None:
    old = OPTIMIZATION_RETENTION + timedelta(days=1)
    store = await Store.open(tmp_path)
    try:
        for item in (
            record("a_sent_older", "a", True, old + timedelta(days=1)),
            record("a_sent_last", "a", True, old),
            record("a_unsent", "a", False, old),
            record("b_recent", "b", False, timedelta(hours=1)),
            record("c_sent_recent", "c", True, timedelta(hours=1)),
            record("none", "", False, old),
        ):
            await store.optimizations.save(item)
        assert await store.optimizations.purge_expired(now=NOW) == 3
        kept = [
            name
            for name in ("a_sent_older", "a_sent_last", "a_unsent", "b_recent", "c_sent_recent", "none")
            if await store.optimizations.get(f"optimization_{name}") is not None
        ]
        last = await store.optimizations.last_sent("a")
    finally:
        await store.close()
    assert kept == ["a_sent_last", "b_recent", "c_sent_recent"]
    assert last is not None and last.optimization_id == "optimization_a_sent_last"
