"""The studies table (server/store.py ``StudyStore``): per-owner request ids, pages, retention, restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server import errors
from server.store import RunState, Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path)
    try:
        yield store
    finally:
        await store.close()


async def create(store: Store, name: str, owner: str = "alice", request_id: str | None = None,
                 request_hash: str | None = None):
    return await store.studies.create(f"studies/{name}", b"spec", owner=owner, kind="stress_test",
                                      progress_total=400, request_id=request_id, request_hash=request_hash)


async def test_request_ids_are_idempotent_per_owner_and_refuse_another_request(store: Store) -> None:
    first, created = await create(store, "a", request_id="r", request_hash="h")
    again, created_again = await create(store, "b", request_id="r", request_hash="h")
    assert created and not created_again and again.name == first.name
    _, bobs = await create(store, "c", owner="bob", request_id="r", request_hash="h")
    assert bobs
    with pytest.raises(errors.InvalidArgument) as refused:
        await create(store, "d", request_id="r", request_hash="other")
    assert refused.value.reason == "REQUEST_ID_REUSED"


async def test_updates_stamp_start_and_end_and_keep_the_result(store: Store) -> None:
    await create(store, "a")
    running = await store.studies.update("studies/a", state=RunState.RUNNING)
    assert running.start_time is not None and running.end_time is None
    done = await store.studies.update("studies/a", state=RunState.SUCCEEDED, progress_done=400, result=b"r")
    assert (done.state, done.progress_done, done.progress_total, done.result) == (RunState.SUCCEEDED, 400, 400, b"r")
    assert done.end_time >= done.start_time
    with pytest.raises(errors.NotFound) as missing:
        await store.studies.get("studies/none")
    assert missing.value.reason == "STUDY_NOT_FOUND"


async def test_pages_cover_an_owners_studies_once_newest_first_without_results(store: Store) -> None:
    for index in range(5):
        await create(store, f"s{index}")
        await store.studies.update(f"studies/s{index}", result=b"big result")
    await create(store, "other", owner="bob")
    seen, token = [], ""
    while True:
        page, token = await store.studies.list(owner="alice", page_size=2, page_token=token)
        assert len(page) <= 2 and all(study.result is None for study in page)
        seen += [study.name for study in page]
        if not token:
            break
    assert seen == [f"studies/s{index}" for index in reversed(range(5))]
    _, token = await store.studies.list(owner="alice", page_size=2)
    with pytest.raises(errors.InvalidArgument):  # the token is bound to its filter
        await store.studies.list(owner="bob", page_size=2, page_token=token)
    with pytest.raises(errors.InvalidArgument):
        await store.studies.list(owner="alice", page_size=2, page_token=token[:-2] + "xx")


async def test_only_studies_of_a_previous_process_become_interrupted(store: Store) -> None:
    await create(store, "old")
    started = datetime.now(UTC)
    await create(store, "new")
    assert await store.studies.mark_unfinished_interrupted(started) == 1
    assert (await store.studies.get("studies/old")).state is RunState.INTERRUPTED
    assert (await store.studies.get("studies/new")).state is RunState.PENDING


async def test_purge_deletes_studies_a_week_after_they_end(store: Store) -> None:
    day_us = 86_400 * 1_000_000
    for name in ("old", "recent"):
        await create(store, name, request_id=f"req-{name}", request_hash="h")
        await store.studies.update(f"studies/{name}", state=RunState.SUCCEEDED)

    def age(connection: sqlite3.Connection) -> None:
        connection.execute("UPDATE studies SET create_us = create_us - ?", (9 * day_us,))
        connection.execute("UPDATE studies SET end_us = end_us - ? WHERE name = 'studies/old'", (8 * day_us,))
        connection.execute("UPDATE studies SET end_us = end_us - ? WHERE name = 'studies/recent'", (6 * day_us,))
        connection.commit()

    await store.call(age)
    assert await store.studies.purge_expired() == 1
    with pytest.raises(errors.NotFound):
        await store.studies.get("studies/old")
    _, created = await create(store, "again", request_id="req-recent", request_hash="x")
    assert created  # the request id was forgotten
