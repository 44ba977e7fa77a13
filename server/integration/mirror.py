"""The local mirror of the upstream systems' data, in the service's SQLite store.

What is mirrored (``mirror_items``, one row per item, serialised protobuf):

| kind          | scope        | id           | message                         | from                              |
|---------------|--------------|--------------|---------------------------------|-----------------------------------|
| ``loan``      | portfolio id | loan id      | ``PortfolioLoan``               | PMS composition, portfolio_updated |
| ``metrics``   | portfolio id | portfolio id | ``PortfolioMetrics``            | PMS metrics, metrics_updated      |
| ``market_risk`` |            | region id    | ``RegionMarketRisk``            | TLS market risk, market_risk_updated |
| ``zone``      |              | property id  | ``ZoneClassification``          | TLS zones, zone_classification_updated |
| ``terms``     |              | loan id      | ``LoanApprovalTerms``           | Underwriting loan_approved        |

``mirror_sources`` lists what is tracked (each PMS portfolio, TLS market risk, TLS zones) with when its
REST reads last succeeded (``synced_us``) and were last attempted (``attempted_us``).

Two writers: live events (``apply_events``), and REST snapshots (``compare`` then ``settle``). Both merge:
a field present in the new data replaces the mirror's, an absent one keeps it (absent means "not sent",
not "removed"). Conflicts between them go to the newest observation: ``settle`` leaves an item alone if a
live event touched it after the REST read began (the next pass checks it again).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from equihome.events.v1 import event_pb2
from equihome.integration.v1 import integration_pb2
from equihome.type.v1 import loan_pb2, metrics_pb2
from server.store import Store, transaction

LOAN, METRICS, MARKET_RISK, ZONE, TERMS = "loan", "metrics", "market_risk", "zone", "terms"
MESSAGES: dict[str, type[Message]] = {
    LOAN: loan_pb2.PortfolioLoan,
    METRICS: metrics_pb2.PortfolioMetrics,
    MARKET_RISK: integration_pb2.RegionMarketRisk,
    ZONE: integration_pb2.ZoneClassification,
    TERMS: event_pb2.LoanApprovalTerms,
}
PORTFOLIO, MARKET_RISK_SOURCE, ZONES_SOURCE = "portfolio", "market_risk", "zones"
MAX_PORTFOLIOS = 100  # tracked portfolios; a PMS inventing more is ignored beyond this
MAX_TERMS = 100_000  # approval terms kept (oldest dropped)
KEPT_RECONCILIATIONS = 1000  # per system
REMOVED_TYPES = (event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_REMOVED, event_pb2.PORTFOLIO_UPDATE_TYPE_LOAN_EXITED)


def now_us() -> int:
    return time.time_ns() // 1000


def merged(old: Message | None, new: Message) -> Message:
    """``old`` with every field ``new`` has set laid over it."""
    result = type(new)()
    if old is not None:
        result.CopyFrom(old)
    result.MergeFrom(new)
    return result


def modified(old: Message, new: Message) -> bool:
    """Whether a field set in both has different values (a field only ``new`` has is news, not drift)."""
    present = {field.name for field, _ in old.ListFields()}
    return any(field.name in present and getattr(old, field.name) != value for field, value in new.ListFields())


@dataclass(frozen=True)
class Stored:
    message: Message
    updated_us: int


@dataclass(frozen=True)
class Change:
    """An item whose REST snapshot differs from the mirror. ``new`` None: the system no longer has it.
    ``drift``: the mirror had it wrong (not merely unknown or incomplete)."""

    kind: str
    scope: str
    id: str
    old: Message | None
    new: Message | None
    drift: bool


@dataclass(frozen=True)
class Source:
    kind: str  # PORTFOLIO, MARKET_RISK_SOURCE or ZONES_SOURCE
    scope: str
    synced_us: int | None
    attempted_us: int | None

    @property
    def stale(self) -> bool:
        """The last attempt to confirm it failed."""
        return self.attempted_us is not None and (self.synced_us is None or self.attempted_us > self.synced_us)


@dataclass(frozen=True)
class MirrorBook:
    """A portfolio's loans and what the simulation needs with them."""

    portfolio: Source
    loans: list[loan_pb2.PortfolioLoan]
    terms: dict[str, event_pb2.LoanApprovalTerms]  # loan id -> approval terms seen
    market_risk: dict[str, integration_pb2.RegionMarketRisk]
    market_risk_source: Source | None


class Mirror:
    def __init__(self, store: Store):
        self._store = store

    # Live events.

    async def apply_events(self, events: Sequence[tuple[event_pb2.Event, int]]) -> None:
        """Apply live events (each with when it was received, epoch µs) in one transaction, in order."""

        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                for event, received_us in events:
                    _apply(connection, event, received_us)

        await self._store.call(work)

    # REST snapshots.

    async def compare(
        self, kind: str, scope: str, fetched: Mapping[str, Message | None], *, complete: bool, synced: bool
    ) -> list[Change]:
        """How ``fetched`` (id -> message, None for "the system does not know it") differs from the mirror.
        With ``complete`` the snapshot holds every item of (kind, scope) and mirror items missing from it are
        removed. ``synced``: the source was confirmed before, so differences are drift (else first load)."""
        stored = await self.items(kind, scope)
        changes = []
        for item_id, message in fetched.items():
            old = stored.get(item_id)
            if message is None:
                if old is not None:
                    changes.append(Change(kind, scope, item_id, old.message, None, drift=synced))
            elif old is None:
                changes.append(Change(kind, scope, item_id, None, message, drift=synced and kind == LOAN))
            elif merged(old.message, message) != old.message:
                drift = synced and modified(old.message, message)
                changes.append(Change(kind, scope, item_id, old.message, merged(old.message, message), drift))
        if complete:
            for item_id, old in stored.items():
                if item_id not in fetched:
                    changes.append(Change(kind, scope, item_id, old.message, None, drift=synced))
        return changes

    async def settle(
        self, changes: Sequence[Change], started_us: int, sources: Iterable[tuple[str, str]]
    ) -> list[Change]:
        """Write ``changes`` except those a live event touched since ``started_us`` (when the REST reads
        began), mark ``sources`` synced, in one transaction; returns the changes written."""

        def work(connection: sqlite3.Connection) -> list[Change]:
            written = []
            with transaction(connection):
                for change in changes:
                    current = _item(connection, change.kind, change.scope, change.id)
                    if current is not None and current.updated_us >= started_us:
                        continue
                    if change.new is None:
                        _delete(connection, change.kind, change.scope, change.id)
                    else:
                        _put(connection, change.kind, change.scope, change.id, change.new, now_us())
                    written.append(change)
                for kind, scope in sources:
                    connection.execute(
                        "INSERT INTO mirror_sources (kind, scope, synced_us, attempted_us) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (kind, scope) DO UPDATE SET synced_us = excluded.synced_us, "
                        "attempted_us = excluded.attempted_us",
                        (kind, scope, started_us, started_us),
                    )
            return written

        return await self._store.call(work)

    async def attempted(self, kind: str, scope: str, at_us: int) -> None:
        """A REST read of the source was attempted at ``at_us`` (and failed, unless ``settle`` follows)."""

        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                connection.execute(
                    "INSERT INTO mirror_sources (kind, scope, attempted_us) VALUES (?, ?, ?) "
                    "ON CONFLICT (kind, scope) DO UPDATE SET attempted_us = excluded.attempted_us",
                    (kind, scope, at_us),
                )

        await self._store.call(work)

    # Reads.

    async def items(self, kind: str, scope: str = "") -> dict[str, Stored]:
        def work(connection: sqlite3.Connection) -> dict[str, Stored]:
            rows = connection.execute(
                "SELECT id, payload, updated_us FROM mirror_items WHERE kind = ? AND scope = ?", (kind, scope)
            )
            return {item_id: Stored(MESSAGES[kind].FromString(payload), updated) for item_id, payload, updated in rows}

        return await self._store.call(work)

    async def sources(self, kind: str | None = None) -> list[Source]:
        def work(connection: sqlite3.Connection) -> list[Source]:
            query = "SELECT kind, scope, synced_us, attempted_us FROM mirror_sources"
            rows = connection.execute(query + (" WHERE kind = ?" if kind else ""), (kind,) if kind else ())
            return [Source(*row) for row in rows]

        return await self._store.call(work)

    async def track(self, kind: str, scope: str = "") -> None:
        """Track a source from now on (no-op if tracked)."""

        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                _track(connection, kind, scope)

        await self._store.call(work)

    async def tracked_regions(self) -> set[str]:
        """Regions with a market risk in the mirror or a loan in a mirrored portfolio."""

        def work(connection: sqlite3.Connection) -> set[str]:
            regions = {row[0] for row in connection.execute("SELECT id FROM mirror_items WHERE kind = ?", (MARKET_RISK,))}
            for (payload,) in connection.execute("SELECT payload FROM mirror_items WHERE kind = ?", (LOAN,)):
                loan = loan_pb2.PortfolioLoan.FromString(payload)
                if loan.HasField("region"):
                    regions.add(loan.region)
            return regions

        return await self._store.call(work)

    async def tracked_properties(self) -> set[str]:
        """Properties with a zone in the mirror or linked to a mirrored loan."""

        def work(connection: sqlite3.Connection) -> set[str]:
            rows = connection.execute(
                "SELECT id FROM mirror_items WHERE kind = ? UNION SELECT link FROM mirror_items "
                "WHERE kind = ? AND link IS NOT NULL",
                (ZONE, LOAN),
            )
            return {row[0] for row in rows}

        return await self._store.call(work)

    async def book(self, portfolio_id: str) -> MirrorBook | None:
        """The portfolio's loans with their terms and the market risk of the mirror; None if it was never
        loaded."""
        portfolio = next((source for source in await self.sources(PORTFOLIO) if source.scope == portfolio_id), None)
        if portfolio is None or portfolio.synced_us is None:
            return None
        loans = [stored.message for stored in (await self.items(LOAN, portfolio_id)).values()]
        market_risk = {item_id: stored.message for item_id, stored in (await self.items(MARKET_RISK)).items()}
        risk_sources = await self.sources(MARKET_RISK_SOURCE)
        return MirrorBook(
            portfolio=portfolio,
            loans=sorted(loans, key=lambda loan: loan.id),  # type: ignore[attr-defined]
            terms=await self._terms([loan.id for loan in loans]),  # type: ignore[attr-defined]
            market_risk=market_risk,  # type: ignore[arg-type]
            market_risk_source=risk_sources[0] if risk_sources else None,
        )

    async def _terms(self, loan_ids: Sequence[str]) -> dict[str, event_pb2.LoanApprovalTerms]:
        """The approval terms seen for these loans."""

        def work(connection: sqlite3.Connection) -> dict[str, event_pb2.LoanApprovalTerms]:
            terms = {}
            for start in range(0, len(loan_ids), 500):
                chunk = list(loan_ids[start : start + 500])
                rows = connection.execute(
                    f"SELECT id, payload FROM mirror_items WHERE kind = ? AND scope = '' AND id IN "
                    f"({', '.join('?' * len(chunk))})",
                    (TERMS, *chunk),
                )
                terms.update({loan_id: event_pb2.LoanApprovalTerms.FromString(payload) for loan_id, payload in rows})
            return terms

        return await self._store.call(work)

    # The record of reconciliations.

    async def record_reconciliation(self, system: str, run: integration_pb2.Reconciliation) -> None:
        """Keep ``run``; the newest KEPT_RECONCILIATIONS per system are kept."""

        def work(connection: sqlite3.Connection) -> None:
            with transaction(connection):
                connection.execute(
                    "INSERT INTO reconciliations (system, start_us, payload) VALUES (?, ?, ?)",
                    (system, run.start_time.ToMicroseconds(), run.SerializeToString()),
                )
                connection.execute(
                    "DELETE FROM reconciliations WHERE system = ? AND id <= (SELECT id FROM reconciliations "
                    "WHERE system = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (system, system, KEPT_RECONCILIATIONS),
                )

        await self._store.call(work)

    async def reconciliations(self, system: str, limit: int = 1) -> list[integration_pb2.Reconciliation]:
        """The newest ``limit`` reconciliations with ``system``, newest first."""

        def work(connection: sqlite3.Connection) -> list[integration_pb2.Reconciliation]:
            rows = connection.execute(
                "SELECT payload FROM reconciliations WHERE system = ? ORDER BY id DESC LIMIT ?", (system, limit)
            )
            return [integration_pb2.Reconciliation.FromString(payload) for (payload,) in rows]

        return await self._store.call(work)


# --- Store-thread helpers -------------------------------------------------------------------------


def _item(connection: sqlite3.Connection, kind: str, scope: str, item_id: str) -> Stored | None:
    row = connection.execute(
        "SELECT payload, updated_us FROM mirror_items WHERE kind = ? AND scope = ? AND id = ?", (kind, scope, item_id)
    ).fetchone()
    return None if row is None else Stored(MESSAGES[kind].FromString(row[0]), row[1])


def _put(connection: sqlite3.Connection, kind: str, scope: str, item_id: str, message: Message, at_us: int) -> None:
    link = message.property_id if kind == LOAN and message.HasField("property_id") else None  # type: ignore[attr-defined]
    connection.execute(
        "INSERT INTO mirror_items (kind, scope, id, link, payload, updated_us) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, scope, id) DO UPDATE SET link = excluded.link, payload = excluded.payload, "
        "updated_us = excluded.updated_us",
        (kind, scope, item_id, link, message.SerializeToString(), at_us),
    )


def _merge(connection: sqlite3.Connection, kind: str, scope: str, item_id: str, new: Message, at_us: int) -> None:
    old = _item(connection, kind, scope, item_id)
    _put(connection, kind, scope, item_id, merged(old.message if old else None, new), at_us)


def _delete(connection: sqlite3.Connection, kind: str, scope: str, item_id: str) -> None:
    connection.execute("DELETE FROM mirror_items WHERE kind = ? AND scope = ? AND id = ?", (kind, scope, item_id))


def _track(connection: sqlite3.Connection, kind: str, scope: str) -> bool:
    """Track a source; False when it is a new portfolio beyond MAX_PORTFOLIOS."""
    if connection.execute("SELECT 1 FROM mirror_sources WHERE kind = ? AND scope = ?", (kind, scope)).fetchone():
        return True
    if kind == PORTFOLIO:
        (count,) = connection.execute("SELECT COUNT(*) FROM mirror_sources WHERE kind = ?", (PORTFOLIO,)).fetchone()
        if count >= MAX_PORTFOLIOS:
            return False
    connection.execute("INSERT INTO mirror_sources (kind, scope) VALUES (?, ?)", (kind, scope))
    return True


def _apply(connection: sqlite3.Connection, event: event_pb2.Event, at_us: int) -> None:
    case = event.WhichOneof("payload")
    payload: Any = getattr(event, case) if case else None
    if case == "zone_classification_updated":
        zone = integration_pb2.ZoneClassification(property_id=payload.property_id, zone=payload.new_zone)
        _merge(connection, ZONE, "", payload.property_id, zone, at_us)
        rows = connection.execute(
            "SELECT scope, id FROM mirror_items WHERE kind = ? AND link = ?", (LOAN, payload.property_id)
        ).fetchall()
        for scope, loan_id in rows:
            _merge(connection, LOAN, scope, loan_id, loan_pb2.PortfolioLoan(id=loan_id, zone=payload.new_zone), at_us)
    elif case == "market_risk_updated":
        risk = integration_pb2.RegionMarketRisk(
            region_id=payload.region_id,
            risk_level=payload.new_risk_level,
            risk_score=payload.risk_score if payload.HasField("risk_score") else None,
            appreciation_forecast=(
                payload.appreciation_forecast if payload.HasField("appreciation_forecast") else None
            ),
        )
        _merge(connection, MARKET_RISK, "", payload.region_id, risk, at_us)
    elif case == "portfolio_updated":
        if not _track(connection, PORTFOLIO, payload.portfolio_id):
            return
        if payload.update_type in REMOVED_TYPES:
            _delete(connection, LOAN, payload.portfolio_id, payload.loan.id)
        else:
            _merge(connection, LOAN, payload.portfolio_id, payload.loan.id, payload.loan, at_us)
    elif case == "metrics_updated":
        if _track(connection, PORTFOLIO, payload.portfolio_id):
            _merge(connection, METRICS, payload.portfolio_id, payload.portfolio_id, payload.metrics, at_us)
    elif case == "loan_approved" and payload.HasField("terms"):
        _merge(connection, TERMS, "", payload.loan_id, payload.terms, at_us)
        connection.execute(
            "DELETE FROM mirror_items WHERE kind = ? AND updated_us < (SELECT updated_us FROM mirror_items "
            "WHERE kind = ? ORDER BY updated_us DESC LIMIT 1 OFFSET ?)",
            (TERMS, TERMS, MAX_TERMS),
        )
