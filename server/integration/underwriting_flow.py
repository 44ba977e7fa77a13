"""The automatic Underwriting flow: every submitted loan application is analysed and sent back.

On each ``loan_application_submitted`` in the event log the flow reads the loan's parameters from Underwriting
(``GetLoanParameters``), runs ``AnalyzeLoanImpact`` against the fund's portfolio (its live book), which stores
the analysis, publishes ``ImpactAnalysisCompleted`` and queues the ``portfolio-impact`` POST in the durable
outbox in one transaction with the analysis.

Exactly once: the flow follows the event log by cursor and stores its cursor after each event, so a restart
resumes where it stopped; each application is analysed under the flow's own owner with a request id derived
from the loan id, so an application seen again (a replay, or Underwriting sending it twice) returns the stored
analysis and neither posts nor publishes again. A temporary failure (Underwriting or PMS unavailable, every
worker busy) is retried with backoff before the flow moves on; an application that cannot be analysed (e.g. a
region outside the fund's book) is logged and skipped. At the first start the flow begins at the newest event:
applications submitted before the flow existed are not analysed. The event is published once the analysis
and its push are committed; a crash in that instant loses the event (a replay finds the analysis stored and
does not publish again), never the POST.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid

from adapters.errors import (
    CircuitOpen,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from equihome.events.v1 import event_pb2, event_service_pb2
from equihome.impact.v1 import impact_analysis_service_pb2 as service_pb2
from server import errors
from server.integration.bus import Delivery, EventBus
from server.integration.event_keys import EventFilter
from server.integration.reads import IntegrationReads
from server.services.impact import FLOW_OWNER, ImpactAnalyzer
from server.store import Store, transaction

log = logging.getLogger(__name__)

REQUEST_IDS = uuid.UUID("6f0c1d52-7b51-4f5e-9a36-0d7c2f1e8a10")  # namespace of the flow's request ids
ANALYSIS_BUDGET_S = 300.0
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # then every 30 s
IDLE_POLL_S = 5.0  # the bus wakes the flow; this only bounds a missed wake-up
# Underwriting or the engine's queue is busy or down: wait as long as it takes, the next application needs it too.
WAITED_OUT = (UpstreamUnavailable, UpstreamRateLimited, CircuitOpen, UpstreamAuthFailed, errors.ResourceExhausted)
# The analysis itself failed or ran out of time: a few more tries, then the application is skipped (logged), so
# one application cannot hold up every later one.
RETRIED = (errors.Unavailable, errors.DeadlineExceeded)
MAX_ANALYSIS_ATTEMPTS = 3


def request_id_for(loan_id: str) -> str:
    return str(uuid.uuid5(REQUEST_IDS, loan_id))


class UnderwritingFlow:
    def __init__(
        self,
        bus: EventBus,
        store: Store,
        reads: IntegrationReads,
        analyzer: ImpactAnalyzer,
        *,
        portfolio_id: str,
        paths: int,
    ):
        self._bus = bus
        self._store = store
        self._reads = reads
        self._analyzer = analyzer
        self._portfolio_id = portfolio_id
        self._paths = paths

    async def run(self) -> None:
        subscriber = self._bus.attach(
            EventFilter.of([event_pb2.EVENT_TYPE_LOAN_APPLICATION_SUBMITTED]), catching_up=False
        )
        try:
            cursor = await self._stored_cursor()
            if cursor is None:
                cursor = self._bus.head
                await self._save_cursor(cursor)
            while True:
                subscriber.ready.clear()
                subscriber.buffer.clear()
                deliveries = await self._bus.read_after(cursor)
                for delivery in deliveries:
                    loan_id = _application(delivery)
                    if loan_id is not None:
                        await self._analyse_or_skip(loan_id)
                    cursor = delivery.cursor
                    await self._save_cursor(cursor)
                if not deliveries:
                    try:
                        await asyncio.wait_for(subscriber.ready.wait(), IDLE_POLL_S)
                    except TimeoutError:
                        pass
        finally:
            self._bus.detach(subscriber)

    async def _analyse_or_skip(self, loan_id: str) -> None:
        """Analyse one application; a failure nobody foresaw is logged and the flow goes on to the next one."""
        try:
            await self._analyse(loan_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loan application %s skipped: its analysis failed unexpectedly", loan_id,
                          extra={"loan_id": loan_id})

    async def _analyse(self, loan_id: str) -> None:
        attempt = 0
        while True:
            try:
                parameters = await self._reads.loan_parameters(loan_id, require_fresh=True)
                request = service_pb2.AnalyzeLoanImpactRequest(
                    loan_application=parameters.loan_application,
                    portfolio_id=self._portfolio_id,
                    paths=self._paths,
                    publish_to_underwriting=True,
                    request_id=request_id_for(loan_id),
                )
                done = await self._analyzer.analyze(request, owner=FLOW_OWNER, budget_s=ANALYSIS_BUDGET_S)
                log.info(
                    "loan application analysed",
                    extra={"loan_id": loan_id, "analysis_id": done.record.analysis_id, "new": done.created},
                )
                return
            except (*WAITED_OUT, *RETRIED) as error:
                attempt += 1
                if isinstance(error, RETRIED) and attempt >= MAX_ANALYSIS_ATTEMPTS:
                    log.error("loan application %s skipped after %d failed analyses (%s)", loan_id, attempt,
                              type(error).__name__, extra={"loan_id": loan_id})
                    return
                delay = RETRY_DELAYS_S[min(attempt - 1, len(RETRY_DELAYS_S) - 1)]
                log.warning(
                    "loan application %s not analysed yet (%s); retrying in %.1f s",
                    loan_id,
                    type(error).__name__,
                    delay,
                    extra={"loan_id": loan_id},
                )
                await asyncio.sleep(delay)
            except UpstreamError as error:  # Underwriting's own answer about this loan (not found, invalid…)
                log.warning("loan application %s cannot be read: %s", loan_id, type(error).__name__,
                            extra={"loan_id": loan_id})
                return
            except errors.ServiceError as error:
                fields = "; ".join(f"{f}: {m}" for f, m in getattr(error, "field_violations", []))
                log.warning(
                    "loan application %s cannot be analysed: %s %s",
                    loan_id,
                    error.message,
                    fields,
                    extra={"loan_id": loan_id, "reason": error.reason},
                )
                return

    async def _stored_cursor(self) -> int | None:
        def work(connection: sqlite3.Connection) -> int | None:
            row = connection.execute("SELECT cursor FROM impact_flow_cursor WHERE id = 1").fetchone()
            return None if row is None else int(row[0])

        return await self._store.call(work)

    async def _save_cursor(self, cursor: int) -> None:
        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                connection.execute(
                    "INSERT INTO impact_flow_cursor (id, cursor) VALUES (1, ?) "
                    "ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor",
                    (cursor,),
                )

        await self._store.call(work)


def _application(delivery: Delivery) -> str | None:
    """The loan id of a ``loan_application_submitted`` delivery, else None."""
    if delivery.key is None or delivery.key.type != event_pb2.EVENT_TYPE_LOAN_APPLICATION_SUBMITTED:
        return None
    event = event_service_pb2.SubscribeEventsResponse.FromString(delivery.response).event
    return event.loan_application_submitted.loan_id or None
