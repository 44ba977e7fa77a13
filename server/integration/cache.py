"""The last good answer of each upstream read, in the ``upstream_cache`` table of the service's store.

Entries are per item (one property's zone, one portfolio's composition), keyed
``<system>/<kind>/<id>``, holding serialised protobuf and the time it was fetched. An empty payload
records "the upstream said it does not know this id", so a partial batch can be answered from the cache
too. Writes replace older entries; nothing is deleted (the set of ids is bounded by the upstream's).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapters.systems import Upstream
from server.store import Store, transaction


@dataclass(frozen=True)
class CachedItem:
    payload: bytes  # empty: the upstream did not know the id
    fetch_us: int  # when it was fetched, epoch microseconds


def cache_key(system: Upstream, kind: str, identifier: str) -> str:
    return f"{system.value}/{kind}/{identifier}"


class ReadCache:
    def __init__(self, store: Store):
        self._store = store

    async def put(self, system: Upstream, items: Mapping[str, bytes], fetch_us: int | None = None) -> None:
        """Store ``items`` (key -> payload) as fetched from ``system`` at ``fetch_us`` (default now)."""
        fetch_us = fetch_us if fetch_us is not None else time.time_ns() // 1000
        rows = [(key, system.value, payload, fetch_us) for key, payload in items.items()]

        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                connection.executemany(
                    "INSERT INTO upstream_cache (key, system, payload, fetch_us) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET "
                    "payload = excluded.payload, fetch_us = excluded.fetch_us",
                    rows,
                )

        await self._store.call(work)

    async def get(self, keys: Sequence[str]) -> dict[str, CachedItem]:
        """The cached entries among ``keys`` (absent keys are left out)."""

        def work(connection: sqlite3.Connection) -> dict[str, CachedItem]:
            found: dict[str, CachedItem] = {}
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ", ".join("?" * len(chunk))
                for key, payload, fetch_us in connection.execute(
                    f"SELECT key, payload, fetch_us FROM upstream_cache WHERE key IN ({marks})", chunk
                ):
                    found[key] = CachedItem(bytes(payload), int(fetch_us))
            return found

        return await self._store.call(work)

    async def oldest(self, system: Upstream) -> int | None:
        """When the oldest entry of ``system`` was fetched (epoch µs); None when nothing is cached."""

        def work(connection: sqlite3.Connection) -> int | None:
            (fetch_us,) = connection.execute(
                "SELECT MIN(fetch_us) FROM upstream_cache WHERE system = ?", (system.value,)
            ).fetchone()
            return None if fetch_us is None else int(fetch_us)

        return await self._store.call(work)
