"""The durable outbox: every push to an upstream system is stored first, then delivered until accepted.

Producing a push (an impact analysis, a recommendation) and storing it happen in one SQLite transaction,
so a result is never stored without its push or the other way round::

    from adapters import pushes
    from server.integration.outbox import enqueue

    def work(connection):                        # run with store.call(work)
        with transaction(connection):
            connection.execute("INSERT INTO analyses ...")           # the result
            enqueue(connection, pushes.portfolio_impact(analysis))   # its push
    await store.call(work)
    outbox.notify()                              # deliver now rather than at the next poll

(``await outbox.submit(push)`` does the same for a push with no result of its own to store.) A push is
identified by (kind, key); storing the same push again is a no-op, and the same key with another body is
refused (``PushKeyReused``), so a retried producer never posts twice.

Delivery (``OutboxDelivery``): one worker per system sends its pending pushes oldest first through a
``PushSink``. Accepted (2xx): DELIVERED. An outage, an open circuit, a rate limit, an auth failure or a
408: retried with exponential backoff and jitter, never before the ``retry_after`` the system asked for.
Refused (404, 400, 409, 422 and other 4xx): a dead letter at once. Not accepted within ``max_age_s`` of being
queued: a dead letter. Dead letters stay visible (IntegrationService.ListPushes) and can be sent again
(RetryPush). Pending pushes survive restarts; a push whose POST was in flight when the process died is sent
again (with the same ``Idempotency-Key``), the one case where a system may receive a push twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from adapters.errors import (
    CircuitOpen,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from adapters.pushes import KINDS, Push
from adapters.systems import Upstream
from adapters.transport import PushSink
from server.errors import FailedPrecondition, InvalidArgument, NotFound
from server.integration.metrics import OutboxMetrics
from server.store import Store, transaction

log = logging.getLogger(__name__)

DELIVERED_RETENTION_S = 7 * 86400
DEAD_LETTER_RETENTION_S = 30 * 86400
RETRIED_ON = (UpstreamUnavailable, CircuitOpen, UpstreamRateLimited, UpstreamAuthFailed)
RETRIED_STATUSES = frozenset({408})


class PushState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD_LETTER = "dead_letter"


class PushKeyReused(InvalidArgument):
    def __init__(self, push: Push):
        super().__init__(
            f"A {push.kind} push with key {push.key!r} was stored before with another body.",
            [("key", "already used for a different push")],
            reason="PUSH_KEY_REUSED",
            metadata={"kind": push.kind, "key": push.key},
        )


@dataclass(frozen=True)
class PushRecord:
    id: int
    push: Push
    state: PushState
    attempts: int
    next_attempt_us: int
    last_attempt_us: int | None
    last_error: str
    last_status: int | None
    receipt_id: str | None
    create_us: int
    queued_us: int  # when it last became pending: created, or retried by hand
    deliver_us: int | None


@dataclass(frozen=True)
class DeliveryPolicy:
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    max_age_s: float = 86400.0  # a push not accepted this long after its creation is a dead letter
    poll_s: float = 1.0  # how often a worker looks for due pushes without being notified


def _now_us() -> int:
    return time.time_ns() // 1000


def _body(push: Push) -> str:
    return json.dumps(push.body, sort_keys=True, separators=(",", ":"))


def enqueue(connection: sqlite3.Connection, push: Push, *, now_us: int | None = None) -> bool:
    """Store ``push`` as PENDING inside the caller's transaction; False if it is stored already. Raises
    ``PushKeyReused`` when its key was used for another body."""
    body = _body(push)
    row = connection.execute("SELECT body FROM outbox WHERE kind = ? AND key = ?", (push.kind, push.key)).fetchone()
    if row is not None:
        if row[0] != body:
            raise PushKeyReused(push)
        return False
    at_us = _now_us() if now_us is None else now_us
    connection.execute(
        "INSERT INTO outbox (system, kind, key, path, body, state, next_attempt_us, create_us, queued_us) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (push.system.value, push.kind, push.key, push.path, body, PushState.PENDING.value, at_us, at_us, at_us),
    )
    return True


_COLUMNS = (
    "id, kind, key, path, body, state, attempts, next_attempt_us, last_attempt_us, last_error, last_status, "
    "receipt_id, create_us, queued_us, deliver_us"
)


def _record(row: Sequence[Any]) -> PushRecord:
    push = Push(kind=row[1], key=row[2], path=row[3], body=json.loads(row[4]))
    return PushRecord(row[0], push, PushState(row[5]), *row[6:])


class Outbox:
    def __init__(self, store: Store, metrics: OutboxMetrics):
        self._store = store
        self._metrics = metrics
        self._notified = asyncio.Event()

    def notify(self) -> None:
        """New pushes were committed: wake the delivery workers."""
        self._notified.set()

    async def wait(self, timeout_s: float) -> None:
        """Until notified or ``timeout_s`` passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._notified.wait(), timeout_s)
        self._notified.clear()

    async def submit(self, push: Push) -> bool:
        """Store ``push`` in a transaction of its own and notify; False if it was stored before."""

        def work(connection: sqlite3.Connection) -> bool:
            with transaction(connection):
                return enqueue(connection, push)

        stored = await self._store.call(work)
        self.notify()
        return stored

    async def next_due(self, system: Upstream) -> tuple[PushRecord | None, int | None]:
        """The oldest pending push of ``system`` that is due, or else when the next one will be (epoch µs)."""

        def work(connection: sqlite3.Connection) -> tuple[PushRecord | None, int | None]:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE system = ? AND state = ? ORDER BY next_attempt_us, id LIMIT 1",
                (system.value, PushState.PENDING.value),
            ).fetchone()
            if row is None:
                return None, None
            record = _record(row)
            return (record, None) if record.next_attempt_us <= _now_us() else (None, record.next_attempt_us)

        return await self._store.call(work)

    async def delivered(self, record: PushRecord, receipt_id: str | None, at_us: int) -> None:
        await self._update(
            record.id,
            state=PushState.DELIVERED.value,
            attempts=record.attempts + 1,
            last_attempt_us=at_us,
            deliver_us=at_us,
            receipt_id=receipt_id,
        )

    async def failed(
        self, record: PushRecord, error: str, status: int | None, retry_at_us: int | None, at_us: int
    ) -> None:
        """An attempt failed at ``at_us``: retry at ``retry_at_us``, or (None) a dead letter."""
        state = PushState.PENDING if retry_at_us is not None else PushState.DEAD_LETTER
        await self._update(
            record.id,
            state=state.value,
            attempts=record.attempts + 1,
            last_attempt_us=at_us,
            next_attempt_us=retry_at_us if retry_at_us is not None else record.next_attempt_us,
            last_error=error[:1000],
            last_status=status,
        )

    async def _update(self, push_id: int, **columns: Any) -> None:
        assignments = ", ".join(f"{column} = ?" for column in columns)

        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                connection.execute(f"UPDATE outbox SET {assignments} WHERE id = ?", (*columns.values(), push_id))

        await self._store.call(work)

    async def page(
        self, system: Upstream, states: Collection[PushState], *, before_id: int | None, size: int
    ) -> list[PushRecord]:
        """Up to ``size`` pushes of ``system`` in ``states`` (all if empty), newest first, older than
        ``before_id``."""
        clauses, parameters = ["system = ?"], [system.value]
        if states:
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            parameters += [state.value for state in states]
        if before_id is not None:
            clauses.append("id < ?")
            parameters.append(str(before_id))

        def work(connection: sqlite3.Connection) -> list[PushRecord]:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?",
                (*parameters, size),
            )
            return [_record(row) for row in rows]

        return await self._store.call(work)

    async def retry(self, system: Upstream, push_id: int) -> PushRecord:
        """A dead letter becomes PENDING, due now."""

        def work(connection: sqlite3.Connection) -> PushRecord:
            with transaction(connection):
                row = connection.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE id = ? AND system = ?", (push_id, system.value)
                ).fetchone()
                if row is None:
                    raise NotFound(f"There is no push {push_id}.", reason="PUSH_NOT_FOUND", metadata={"push": str(push_id)})
                if _record(row).state is not PushState.DEAD_LETTER:
                    raise FailedPrecondition(
                        f"Push {push_id} is {row[5]}; only a dead letter can be retried.",
                        reason="PUSH_STATE_CONFLICT",
                        metadata={"push": str(push_id), "state": row[5]},
                    )
                connection.execute(
                    "UPDATE outbox SET state = ?, next_attempt_us = ?, queued_us = ? WHERE id = ?",
                    (PushState.PENDING.value, _now_us(), _now_us(), push_id),
                )
                return _record(connection.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (push_id,)).fetchone())

        record = await self._store.call(work)
        self.notify()
        return record

    async def counts(self, system: Upstream) -> dict[PushState, int]:
        def work(connection: sqlite3.Connection) -> dict[PushState, int]:
            rows = connection.execute("SELECT state, COUNT(*) FROM outbox WHERE system = ? GROUP BY state", (system.value,))
            counts = dict.fromkeys(PushState, 0)
            counts.update({PushState(state): count for state, count in rows})
            return counts

        return await self._store.call(work)

    async def prune(self) -> int:
        """Forget delivered pushes after 7 days and dead letters after 30."""
        now = _now_us()

        def work(connection: sqlite3.Connection) -> int:
            with transaction(connection):
                delivered = connection.execute(
                    "DELETE FROM outbox WHERE state = ? AND deliver_us < ?",
                    (PushState.DELIVERED.value, now - DELIVERED_RETENTION_S * 1_000_000),
                ).rowcount
                dead = connection.execute(
                    "DELETE FROM outbox WHERE state = ? AND last_attempt_us < ?",
                    (PushState.DEAD_LETTER.value, now - DEAD_LETTER_RETENTION_S * 1_000_000),
                ).rowcount
                return delivered + dead

        return await self._store.call(work)


class OutboxDelivery:
    """One worker per system, delivering its pending pushes through ``sink``."""

    def __init__(self, outbox: Outbox, sink: PushSink, metrics: OutboxMetrics, policy: DeliveryPolicy):
        self._outbox = outbox
        self._sink = sink
        self._metrics = metrics
        self.policy = policy

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for system in sorted(set(KINDS.values())):
                group.create_task(self._work(system), name=f"{system.value} push delivery")

    async def _work(self, system: Upstream) -> None:
        while True:
            try:
                await self._step(system)
            except Exception:  # a store failure: wait, then carry on (pushes stay in the outbox)
                log.exception("push delivery step failed", extra={"upstream": system.value})
                await asyncio.sleep(self.policy.poll_s)

    async def _step(self, system: Upstream) -> None:
        """Deliver the next due push of ``system``, or wait for one."""
        record, next_us = await self._outbox.next_due(system)
        counts = await self._outbox.counts(system)
        self._metrics.pending.labels(system=system.value).set(counts[PushState.PENDING])
        if record is None:
            wait_s = self.policy.poll_s if next_us is None else (next_us - _now_us()) / 1e6
            await self._outbox.wait(max(0.0, min(wait_s, self.policy.poll_s)))
            return
        await self._attempt(system, record)

    async def _attempt(self, system: Upstream, record: PushRecord) -> None:
        where = {"upstream": system.value, "push_kind": record.push.kind, "push_key": record.push.key}
        try:
            acknowledgement = await self._sink.deliver(record.push)
        except UpstreamError as error:
            now = _now_us()
            retry_at = self._retry_at(record, error, now)
            await self._outbox.failed(record, error.message, error.status, retry_at, now)
            outcome = "retry" if retry_at is not None else "dead_letter"
            log.log(logging.WARNING if retry_at else logging.ERROR, "push not delivered (%s)", outcome, extra=where)
        except Exception as error:  # a bug of ours: keep the push, try again later
            log.exception("push delivery failed unexpectedly", extra=where)
            now = _now_us()
            retry_at = self._retry_at(record, None, now)
            await self._outbox.failed(record, f"internal error ({type(error).__name__})", None, retry_at, now)
            outcome = "retry" if retry_at is not None else "dead_letter"
        else:
            await self._outbox.delivered(record, acknowledgement.id, _now_us())
            outcome = "delivered"
            log.info("push delivered", extra={**where, "attempts": record.attempts + 1})
        self._metrics.attempts.labels(system=system.value, outcome=outcome).inc()

    def _retry_at(self, record: PushRecord, error: UpstreamError | None, now_us: int) -> int | None:
        """When to try again (epoch µs), or None for a dead letter."""
        retryable = error is None or isinstance(error, RETRIED_ON) or (
            isinstance(error, UpstreamRejected) and error.status in RETRIED_STATUSES
        )
        if not retryable:
            return None
        backoff = min(self.policy.max_backoff_s, self.policy.initial_backoff_s * 2**record.attempts)
        delay = backoff * random.uniform(0.5, 1.0)
        if error is not None and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        retry_at = now_us + int(delay * 1e6)
        deadline = record.queued_us + int(self.policy.max_age_s * 1e6)
        return retry_at if retry_at <= deadline else None
