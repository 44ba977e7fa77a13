"""The SQLite store: idempotent runs, signed pagination, durability, and the event log."""

from __future__ import annotations

import base64
import sqlite3
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from server import errors
from server.store import _MIGRATIONS, DATABASE_FILE, SCHEMA_VERSION, DataDirInUse, RunState, Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path)
    yield store
    await store.close()


async def test_create_is_idempotent_by_request_id(store: Store) -> None:
    first, created = await store.runs.create(
        "simulations/a", b"config-1", portfolio_id="portfolio_456", request_id="req-1", request_hash="h1"
    )
    again, created_again = await store.runs.create(
        "simulations/b", b"config-1", request_id="req-1", request_hash="h1"
    )

    assert created and not created_again
    assert again == first and again.name == "simulations/a" and again.portfolio_id == "portfolio_456"
    with pytest.raises(errors.NotFound) as missing:
        await store.runs.get("simulations/b")
    assert (missing.value.reason, missing.value.metadata) == (
        "SIMULATION_NOT_FOUND",
        {"name": "simulations/b"},
    )
    with pytest.raises(errors.AlreadyExists):
        await store.runs.create("simulations/a", b"other")


async def test_request_id_reused_for_another_request_is_refused(store: Store) -> None:
    await store.runs.create("simulations/a", b"config-1", request_id="req-1", request_hash="h1")

    with pytest.raises(errors.InvalidArgument) as reused:
        await store.runs.create("simulations/b", b"config-2", request_id="req-1", request_hash="h2")

    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert reused.value.metadata == {"request_id": "req-1"}
    assert [run.name for run in (await store.runs.list()).runs] == ["simulations/a"]


async def test_find_request_answers_a_retry_before_anything_is_created(store: Store) -> None:
    assert await store.runs.find_request("", "req-1", "h1") is None
    first, _ = await store.runs.create("simulations/a", b"config-1", request_id="req-1", request_hash="h1")

    assert await store.runs.find_request("", "req-1", "h1") == first
    with pytest.raises(errors.InvalidArgument) as reused:
        await store.runs.find_request("", "req-1", "h2")
    assert reused.value.reason == "REQUEST_ID_REUSED"


async def test_update_stamps_times_and_compares_state(store: Store) -> None:
    await store.runs.create("simulations/a", b"c")

    running = await store.runs.update("simulations/a", state=RunState.RUNNING, progress=(3, 10))
    done = await store.runs.update(
        "simulations/a", state=RunState.SUCCEEDED, result=b"result", progress=(10, 10)
    )

    assert running.start_time is not None and running.end_time is None
    assert (running.progress_done, running.progress_total) == (3, 10)
    assert done.end_time is not None and done.start_time == running.start_time
    assert (done.state, done.result, done.error) == (RunState.SUCCEEDED, b"result", None)
    with pytest.raises(errors.FailedPrecondition) as conflict:
        await store.runs.update(
            "simulations/a", state=RunState.CANCELLED, expected_states=(RunState.PENDING, RunState.RUNNING)
        )
    assert conflict.value.reason == "RUN_STATE_CONFLICT"


async def test_pages_cover_every_run_once_newest_first(store: Store) -> None:
    for index in range(7):
        await store.runs.create(f"simulations/{index}", b"c")

    names, token, pages = [], "", 0
    while True:
        page = await store.runs.list(page_size=3, page_token=token)
        names += [run.name for run in page.runs]
        pages += 1
        token = page.next_page_token
        if not token:
            break

    assert pages == 3
    assert names == [f"simulations/{index}" for index in reversed(range(7))]


async def test_state_filter_and_filter_bound_tokens(store: Store) -> None:
    for index in range(4):
        await store.runs.create(f"simulations/{index}", b"c")
    await store.runs.update("simulations/1", state=RunState.RUNNING)
    await store.runs.update("simulations/3", state=RunState.RUNNING)

    by_portfolio = await store.runs.list(portfolio_id="portfolio_456")
    assert by_portfolio.runs == [] and by_portfolio.next_page_token == ""
    running = await store.runs.list(states=[RunState.RUNNING], page_size=1)
    assert [run.name for run in running.runs] == ["simulations/3"]
    rest = await store.runs.list(states=[RunState.RUNNING], page_size=1, page_token=running.next_page_token)
    assert [run.name for run in rest.runs] == ["simulations/1"] and rest.next_page_token == ""

    with pytest.raises(errors.InvalidArgument) as mismatch:
        await store.runs.list(states=[RunState.PENDING], page_size=1, page_token=running.next_page_token)
    assert mismatch.value.reason == "PAGE_TOKEN_INVALID"
    assert mismatch.value.field_violations == [("page_token", "issued for a different filter")]


async def test_tampered_or_foreign_page_tokens_are_rejected(store: Store, tmp_path: Path) -> None:
    for index in range(3):
        await store.runs.create(f"simulations/{index}", b"c")
    token = (await store.runs.list(page_size=1)).next_page_token
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-3] ^= 0x01  # flip one bit of the signed body
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    other = await Store.open(tmp_path / "other")  # a different data directory has a different secret
    try:
        await other.runs.create("simulations/x", b"c")
        await other.runs.create("simulations/y", b"c")
        foreign = (await other.runs.list(page_size=1)).next_page_token
    finally:
        await other.close()

    for bad in (tampered, foreign, "not-a-token!"):
        with pytest.raises(errors.InvalidArgument) as caught:
            await store.runs.list(page_size=1, page_token=bad)
        assert caught.value.reason == "PAGE_TOKEN_INVALID"
    with pytest.raises(errors.InvalidArgument) as negative:
        await store.runs.list(page_size=-1)
    assert negative.value.field_violations == [("page_size", "must be >= 0")]


async def test_runs_survive_reopen_and_unfinished_ones_become_interrupted(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)
    await store.runs.create("simulations/done", b"c")
    await store.runs.update("simulations/done", state=RunState.SUCCEEDED, result=b"r")
    await store.runs.create("simulations/pending", b"c")
    await store.runs.create("simulations/running", b"c")
    await store.runs.update("simulations/running", state=RunState.RUNNING)
    token = (await store.runs.list(page_size=1)).next_page_token
    await store.close()

    reopened = await Store.open(tmp_path)
    try:
        interrupted = await reopened.runs.mark_unfinished_interrupted()
        states = {run.name: run.state for run in (await reopened.runs.list()).runs}
        second_page = await reopened.runs.list(page_size=1, page_token=token)  # the secret persisted too
        done = await reopened.runs.get("simulations/done")
    finally:
        await reopened.close()

    assert interrupted == 2
    assert states == {
        "simulations/done": RunState.SUCCEEDED,
        "simulations/pending": RunState.INTERRUPTED,
        "simulations/running": RunState.INTERRUPTED,
    }
    assert [run.name for run in second_page.runs] == ["simulations/pending"]
    assert done.result == b"r"


async def test_database_is_wal_and_versioned(store: Store, tmp_path: Path) -> None:
    journal, version = await store.call(
        lambda connection: (
            connection.execute("PRAGMA journal_mode").fetchone()[0],
            connection.execute("PRAGMA user_version").fetchone()[0],
        )
    )

    assert (journal, version) == ("wal", SCHEMA_VERSION)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / DATABASE_FILE)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()

    with pytest.raises(RuntimeError, match="newer than this server"):
        await Store.open(tmp_path)


async def test_event_log_cursors_read_after_and_prune(store: Store) -> None:
    cursors = await store.events.append_many([b"e1", b"e2", b"e3"], topic="runs")
    other = await store.events.append(b"x", topic="markets")

    after_first = await store.events.read_after(cursors[0], limit=10, topic="runs")
    assert [event.payload for event in after_first] == [b"e2", b"e3"]
    assert [event.cursor for event in await store.events.read_after(0, limit=2)] == cursors[:2]

    assert await store.events.prune(max_count=2) == 2
    assert await store.events.bounds() == (cursors[2], other)
    assert await store.events.append(b"e4") > other  # cursors are never reused after pruning
    assert await store.events.prune(max_age=timedelta(days=1)) == 0
    assert await store.events.prune(max_age=timedelta(0)) == 3
    assert await store.events.bounds() == (0, 0)


async def test_purge_deletes_runs_a_week_after_they_end_and_forgets_old_request_ids(store: Store) -> None:
    day_us = 86_400 * 1_000_000
    for name in ("old", "recent", "unfinished"):
        await store.runs.create(f"simulations/{name}", b"config", request_id=f"req-{name}", request_hash="h")
    for name in ("old", "recent"):
        await store.runs.update(f"simulations/{name}", state=RunState.SUCCEEDED)

    def age(connection: sqlite3.Connection) -> None:
        # "old" ended 8 days ago; "recent" ended 6 days ago; all were created more than 24 h ago
        connection.execute("UPDATE runs SET create_us = create_us - ?", (9 * day_us,))
        connection.execute("UPDATE runs SET end_us = end_us - ? WHERE name = 'simulations/old'", (8 * day_us,))
        connection.execute("UPDATE runs SET end_us = end_us - ? WHERE name = 'simulations/recent'", (6 * day_us,))
        connection.commit()

    await store.call(age)
    assert await store.runs.purge_expired() == 1
    with pytest.raises(errors.NotFound):
        await store.runs.get("simulations/old")
    assert (await store.runs.get("simulations/recent")).state is RunState.SUCCEEDED
    assert (await store.runs.get("simulations/unfinished")).state is RunState.PENDING
    _, created = await store.runs.create("simulations/again", b"config", request_id="req-recent", request_hash="x")
    assert created  # the request id was forgotten, so it no longer maps to the old run


async def test_request_ids_belong_to_their_owner(store: Store) -> None:
    alices, _ = await store.runs.create("simulations/a", b"c", owner="alice", request_id="r", request_hash="h")
    again, created_again = await store.runs.create(
        "simulations/a2", b"c", owner="alice", request_id="r", request_hash="h"
    )
    bobs, bob_created = await store.runs.create("simulations/b", b"c", owner="bob", request_id="r", request_hash="x")

    assert (again.name, created_again) == ("simulations/a", False)
    assert (bobs.name, bob_created, bobs.owner) == ("simulations/b", True, "bob")  # another owner's id is not his
    assert await store.runs.find_request("carol", "r") is None
    assert [run.name for run in (await store.runs.list(owner="alice")).runs] == ["simulations/a"]
    assert {run.name for run in (await store.runs.list()).runs} == {"simulations/a", "simulations/b"}


async def test_a_page_ends_before_its_stored_bytes_pass_the_budget(store: Store) -> None:
    for index in range(5):
        await store.runs.create(f"simulations/{index}", b"c" * 1000)
        await store.runs.update(f"simulations/{index}", state=RunState.SUCCEEDED, result=b"r" * 1000)

    seen, pages, token = [], 0, ""
    while True:
        page = await store.runs.list(page_size=10, page_token=token, max_bytes=4500)
        seen += [run.name for run in page.runs]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    without_results = await store.runs.list(page_size=10, max_bytes=4500, with_result=False)
    one_too_big = await store.runs.list(page_size=10, max_bytes=10)

    assert pages == 3 and sorted(seen) == [f"simulations/{index}" for index in range(5)]  # 2 + 2 + 1 runs
    assert len(without_results.runs) == 4 and all(run.result is None for run in without_results.runs)
    assert len(one_too_big.runs) == 1  # a page always holds a run


async def test_a_database_of_schema_2_gains_owners(tmp_path: Path) -> None:
    """Runs stored before owners were recorded keep everything else and get the owner ''."""
    connection = sqlite3.connect(tmp_path / DATABASE_FILE, isolation_level=None)
    for statement in ";".join(_MIGRATIONS[:2]).split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.execute("PRAGMA user_version = 2")
    connection.execute(
        "INSERT INTO runs (name, request_id, request_hash, state, config, result, create_us, update_us) "
        "VALUES ('simulations/old', 'r', 'h', 'SUCCEEDED', x'01', x'02', 1, 2)"
    )
    connection.close()

    store = await Store.open(tmp_path)
    try:
        old = await store.runs.get("simulations/old")
        replayed = await store.runs.find_request("", "r", "h")
        version = await store.call(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
    finally:
        await store.close()

    assert (old.owner, old.state, old.config, old.result, old.request_id) == ("", RunState.SUCCEEDED, b"\x01",
                                                                              b"\x02", "r")  # fmt: skip
    assert replayed == old
    assert version == SCHEMA_VERSION == 7


async def test_the_data_directory_is_private_and_held_by_one_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / DATABASE_FILE).touch()
    (data_dir / DATABASE_FILE).chmod(0o644)
    store = await Store.open(data_dir)
    try:
        with pytest.raises(DataDirInUse, match="in use by another"):
            await Store.open(data_dir)
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in [data_dir, *data_dir.iterdir()]}
    finally:
        await store.close()
    reopened = await Store.open(data_dir)  # the lock went with the first store
    await reopened.close()

    assert modes.pop("data") == 0o700
    assert set(modes.values()) == {0o600}, modes
