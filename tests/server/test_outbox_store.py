"""The outbox in the producer's transaction: a push is stored with its result or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import pushes
from equihome.impact.v1 import impact_analysis_pb2
from server.integration.outbox import enqueue
from server.store import Store, transaction

ANALYSIS = impact_analysis_pb2.ImpactAnalysis(analysis_id="analysis_1", loan_id="loan_1", portfolio_id="portfolio_456")


async def test_a_push_commits_and_rolls_back_with_its_result(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)

    def produce(fail: bool) -> None:
        def work(connection):  # type: ignore[no-untyped-def]
            with transaction(connection):
                connection.execute("CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY)")
                connection.execute("INSERT INTO results VALUES (?)", (f"result_{fail}",))
                enqueue(connection, pushes.portfolio_impact(ANALYSIS if not fail else _other()))
                if fail:
                    raise RuntimeError("the producer failed after enqueueing")

        return work

    await store.call(produce(False))
    with pytest.raises(RuntimeError):
        await store.call(produce(True))

    rows = await store.call(lambda c: c.execute("SELECT kind, key FROM outbox").fetchall())
    results = await store.call(lambda c: c.execute("SELECT id FROM results").fetchall())
    assert rows == [("portfolio_impact", "analysis_1")] and results == [("result_False",)]
    await store.close()


def _other() -> impact_analysis_pb2.ImpactAnalysis:
    return impact_analysis_pb2.ImpactAnalysis(analysis_id="analysis_2", loan_id="loan_2", portfolio_id="portfolio_456")
