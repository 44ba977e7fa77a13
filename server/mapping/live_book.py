"""A portfolio's live book (from the mirror) as the engine's book: a pure function of the mirror's data.

The engine simulates a fund from its inception (month 0). The PMS reports each loan's
``origination_year`` and ``exit_year`` in years from inception (the guide's example: 0 and 5), so the
book keeps that one time axis:

* ``origination_month`` = round(12 * origination_year); a negative one is refused. A loan whose PMS record
  lacks it (e.g. known so far only from a ``portfolio_updated`` event) is taken to originate at the as-of
  time: the latest origination in the book;
* ``planned_exit_month`` = round(12 * exit_year), capped at the fund's last month, when it comes after
  the origination; otherwise the exit is simulated;
* the **as-of time** is when the run was accepted, and the fund's age then is the latest origination in
  the book (``fund_age_months``): the run simulates the fund's whole life holding this book, the months
  before the as-of time included (the engine cannot start mid-life);
* ``interest_rate`` comes from the Underwriting approval terms seen for the loan (``loan_approved``),
  else the config's rate; the appreciation share follows the config's method;
* regions are the loans' regions (``unassigned`` for loans the PMS reports none for; a name the engine
  cannot take has its other characters replaced by ``_``), weighted by principal, so recycled loans keep
  the book's regional mix;
* each region's ``drift_spread`` comes from the TLS ``appreciation_forecast``, relative to the book's
  principal-weighted mean forecast: (1 + f_region) / (1 + f_mean) - 1, clipped to [-0.2, 0.2]. TLS thus
  moves regions against each other while the level of appreciation stays the config's zone drifts; a
  region without a forecast gets 0;
* no loans are generated unless the caller sets ``book.generate``; ``fund.size``, when the caller leaves
  it unset, stays the default if the book fits it, else becomes the smallest whole million that carries
  the book, its costs and reserve through deployment.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from google.protobuf import timestamp_pb2

from equihome.simulation.v1 import simulation_pb2
from equihome.type.v1 import loan_pb2, system_pb2
from server.errors import FailedPrecondition, InvalidArgument
from server.integration.mirror import MirrorBook, Source
from server.mapping.config import EngineData, invalid_config
from simulation.config import ConfigError, FundTerms, SimulationConfig, load_config

UNASSIGNED_REGION = "unassigned"
MAX_SPREAD = 0.2
MILLION = 1_000_000.0
PROBE_SIZE = 1e15  # a fund size any book fits, to check everything else first
MAX_LISTED = 10
ZONE_NAMES = {1: "green", 2: "orange", 3: "red"}


@dataclass(frozen=True)
class LiveBook:
    config: SimulationConfig
    snapshot: simulation_pb2.BookSnapshot


def live_book_config(base: EngineData, book: MirrorBook, *, request_path: str, as_of_us: int) -> LiveBook:
    """The engine config of ``base`` (the caller's config, as engine data) with ``book`` as its book."""
    given = base.get("book", {})
    conflicts = [(f"{request_path}.book.{name}", "comes from the portfolio") for name in ("loans", "regions") if given.get(name)]
    if conflicts:
        raise InvalidArgument(
            "A live-book run takes its loans and regions from the portfolio; leave book.loans and book.regions empty.",
            conflicts,
            reason="FIELD_INVALID",
        )
    term_months = 12 * base.get("fund", {}).get("term_years", FundTerms.model_fields["term_years"].default)
    known = [round(12 * loan.origination_year) for loan in book.loans if loan.HasField("origination_year")]
    age = max(known, default=0)
    loans = [_engine_loan(loan, book, term_months, age) for loan in book.loans]
    if not loans:
        raise FailedPrecondition(
            f"Portfolio {book.portfolio.scope} has no loans to simulate.",
            reason="LIVE_BOOK_UNAVAILABLE",
            metadata={"portfolio_id": book.portfolio.scope},
        )
    regions, without_forecast = _regions(loans, book)
    data = {**base, "book": {**given, "loans": loans, "regions": regions, "generate": given.get("generate", False)}}
    size_derived = "size" not in base.get("fund", {})
    data["fund"] = {**base.get("fund", {}), "size": _fund_size(data, request_path)}
    config = _validated(data, request_path)
    default_size = FundTerms.model_fields["size"].default
    snapshot = simulation_pb2.BookSnapshot(
        portfolio_id=book.portfolio.scope,
        as_of_time=_timestamp(as_of_us),
        loan_count=len(loans),
        total_principal=sum(loan["amount"] for loan in loans),
        sources=_freshness(book, as_of_us),
        fund_age_months=age,
        fund_size_derived=size_derived and config.fund.size != default_size,
        loans_without_terms=sum(loan.get("interest_rate") is None for loan in loans),
        regions_without_forecast=without_forecast,
    )
    return LiveBook(config, snapshot)


def _engine_loan(loan: loan_pb2.PortfolioLoan, book: MirrorBook, term_months: int, age: int) -> dict[str, Any]:
    missing = [name for name in ("loan_amount", "property_value") if not loan.HasField(name) or getattr(loan, name) <= 0]
    if missing or loan.zone not in ZONE_NAMES:
        problem = f"lacks a positive {' and '.join(missing)}" if missing else "has no zone"
        raise FailedPrecondition(
            f"PMS loan {loan.id} of portfolio {book.portfolio.scope} {problem}; it cannot be simulated.",
            reason="UPSTREAM_DATA_INVALID",
            metadata={"portfolio_id": book.portfolio.scope, "loan_id": loan.id},
        )
    origination = round(12 * loan.origination_year) if loan.HasField("origination_year") else age
    if origination < 0:
        raise FailedPrecondition(
            f"PMS loan {loan.id} originates before the fund's inception (year {loan.origination_year}).",
            reason="UPSTREAM_DATA_INVALID",
            metadata={"portfolio_id": book.portfolio.scope, "loan_id": loan.id},
        )
    engine_loan: dict[str, Any] = {
        "id": loan.id,
        "amount": loan.loan_amount,
        "property_value": loan.property_value,
        "zone": ZONE_NAMES[loan.zone],
        "region": _region_name(loan.region) if loan.HasField("region") else UNASSIGNED_REGION,
        "origination_month": origination,
    }
    if loan.HasField("exit_year") and round(12 * loan.exit_year) > origination:
        engine_loan["planned_exit_month"] = min(round(12 * loan.exit_year), max(term_months, origination + 1))
    terms = book.terms.get(loan.id)
    if terms is not None and terms.HasField("interest_rate") and 0 <= terms.interest_rate <= 0.5:
        engine_loan["interest_rate"] = terms.interest_rate
    return engine_loan


def _region_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:64] or UNASSIGNED_REGION


def _regions(loans: list[dict[str, Any]], book: MirrorBook) -> tuple[list[dict[str, Any]], list[str]]:
    """Regions weighted by principal, with spreads from the TLS forecasts; and those without one."""
    principal: dict[str, float] = defaultdict(float)
    for loan in loans:
        principal[loan["region"]] += loan["amount"]
    forecasts = {
        name: risk.appreciation_forecast
        for name, risk in ((name, book.market_risk.get(name)) for name in principal)
        if risk is not None and risk.HasField("appreciation_forecast") and risk.appreciation_forecast > -1
    }
    known = sum(principal[name] for name in forecasts)
    mean = sum(principal[name] * forecast for name, forecast in forecasts.items()) / known if known else 0.0
    total = sum(principal.values())
    regions = []
    for name in sorted(principal):
        spread = (1 + forecasts[name]) / (1 + mean) - 1 if name in forecasts else 0.0
        regions.append({"name": name, "weight": principal[name] / total, "drift_spread": max(-MAX_SPREAD, min(MAX_SPREAD, spread))})
    return regions, sorted(set(principal) - set(forecasts))


class _Fundability:
    """Which fund sizes carry the book with its costs and reserve through deployment (the engine's check)."""

    def __init__(self, data: EngineData):
        try:  # every other check, at a size any book fits
            self._probe: SimulationConfig | None = load_config({**data, "fund": {**data.get("fund", {}), "size": PROBE_SIZE}})
        except ConfigError:
            self._probe = None  # something else is wrong; validation names it

    def fits(self, size: float) -> bool:
        if self._probe is None:
            return True
        at_size = self._probe.model_copy(update={"fund": self._probe.fund.model_copy(update={"size": size})})
        return at_size.committed_during_deployment() <= size

    def smallest(self) -> float:
        """The smallest whole million that fits."""
        assert self._probe is not None
        size = math.ceil(sum(loan.amount for loan in self._probe.book.loans) / MILLION) * MILLION
        while not self.fits(size) and size < PROBE_SIZE:
            size += MILLION
        return size


def _fund_size(data: EngineData, request_path: str) -> float:
    """The caller's size if it carries the book; unset, the default if that does, else the smallest whole
    million that does."""
    fundability = _Fundability(data)
    given = data.get("fund", {}).get("size")
    size = given if given is not None else FundTerms.model_fields["size"].default
    if fundability.fits(size):
        return size
    if given is None:
        return fundability.smallest()
    needed = fundability.smallest()
    raise InvalidArgument(
        f"The live book does not fit a fund of {size:,.0f} with its costs and reserve; it needs at least "
        f"{needed:,.0f} (or leave fund.size unset).",
        [(f"{request_path}.fund.size", f"at least {needed:,.0f} for this book")],
        reason="CONFIG_INVALID",
        metadata={"fund_size": f"{size:.0f}", "needed": f"{needed:.0f}"},
    )


def _validated(data: EngineData, request_path: str) -> SimulationConfig:
    try:
        return load_config(data)
    except ConfigError as error:
        raise invalid_config(error, request_path) from None


def _freshness(book: MirrorBook, as_of_us: int) -> list[system_pb2.DataFreshness]:
    """When each source was last confirmed by its system, and how old that was at the as-of time."""
    sources: list[tuple[system_pb2.System.ValueType, Source | None]] = [
        (system_pb2.SYSTEM_PORTFOLIO_MANAGEMENT, book.portfolio),
        (system_pb2.SYSTEM_TRAFFIC_LIGHT, book.market_risk_source),
    ]
    reports = []
    for system, source in sources:
        if source is not None and source.synced_us is not None:
            report = system_pb2.DataFreshness(stale=source.stale, source=system, fetch_time=_timestamp(source.synced_us))
            report.data_age.FromMicroseconds(max(0, as_of_us - source.synced_us))
            reports.append(report)
    return reports


def _timestamp(microseconds: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(microseconds)
    return stamp
