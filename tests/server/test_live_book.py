"""The live book mapping (mirror -> engine config) on hand-made data; expected values by hand."""

from __future__ import annotations

import pytest

from equihome.events.v1 import event_pb2
from equihome.integration.v1 import integration_pb2
from equihome.type.v1 import loan_pb2, system_pb2, zone_pb2
from server.errors import FailedPrecondition, InvalidArgument
from server.integration.mirror import MirrorBook, Source
from server.mapping.live_book import live_book_config

AS_OF_US = 1_800_000_000_000_000
HOUR_US = 3_600_000_000


def loan(loan_id: str, amount: float, value: float, zone: int, **fields: object) -> loan_pb2.PortfolioLoan:
    return loan_pb2.PortfolioLoan(id=loan_id, loan_amount=amount, property_value=value, zone=zone, **fields)


def book(loans: list[loan_pb2.PortfolioLoan], **overrides: object) -> MirrorBook:
    values: dict[str, object] = {
        "portfolio": Source("portfolio", "p1", synced_us=AS_OF_US - HOUR_US, attempted_us=AS_OF_US - HOUR_US),
        "loans": loans,
        "terms": {},
        "market_risk": {},
        "market_risk_source": Source("market_risk", "", synced_us=AS_OF_US - 2 * HOUR_US, attempted_us=AS_OF_US),
    }
    return MirrorBook(**(values | overrides))  # type: ignore[arg-type]


def risk(region: str, forecast: float | None) -> integration_pb2.RegionMarketRisk:
    return integration_pb2.RegionMarketRisk(region_id=region, appreciation_forecast=forecast)


def test_loans_times_terms_and_regions_map_as_documented() -> None:
    loans = [
        loan("a", 200_000, 500_000, zone_pb2.ZONE_GREEN, region="north", origination_year=1.5, exit_year=6.0),
        loan("b", 300_000, 600_000, zone_pb2.ZONE_RED, region="south", origination_year=0, exit_year=0),
        loan("c", 100_000, 400_000, zone_pb2.ZONE_ORANGE),
    ]
    terms = {"a": event_pb2.LoanApprovalTerms(interest_rate=0.07, term_years=10)}
    market = {"north": risk("north", 0.06), "south": risk("south", 0.03)}

    live = live_book_config({}, book(loans, terms=terms, market_risk=market), request_path="config", as_of_us=AS_OF_US)

    a, b, c = live.config.book.loans
    assert (a.origination_month, a.planned_exit_month, a.interest_rate, a.zone.value) == (18, 72, 0.07, "green")
    assert (b.origination_month, b.planned_exit_month, b.interest_rate) == (0, None, None)  # exit not after origination
    assert (c.region, c.origination_month) == ("unassigned", 18)  # not reported: the as-of time (fund age)
    regions = {region.name: region for region in live.config.book.regions}
    assert {name: region.weight for name, region in regions.items()} == pytest.approx(
        {"north": 200 / 600, "south": 300 / 600, "unassigned": 100 / 600}
    )
    mean = (200_000 * 0.06 + 300_000 * 0.03) / 500_000  # principal-weighted, regions with a forecast only
    assert regions["north"].drift_spread == pytest.approx(1.06 / (1 + mean) - 1)
    assert regions["south"].drift_spread == pytest.approx(1.03 / (1 + mean) - 1)
    assert regions["unassigned"].drift_spread == 0.0
    assert not live.config.book.generate and live.config.fund.size == 100_000_000  # the default carries 0.6M

    snapshot = live.snapshot
    assert (snapshot.portfolio_id, snapshot.loan_count, snapshot.total_principal) == ("p1", 3, 600_000)
    assert snapshot.as_of_time.ToMicroseconds() == AS_OF_US and snapshot.fund_age_months == 18
    assert (snapshot.loans_without_terms, list(snapshot.regions_without_forecast)) == (2, ["unassigned"])
    pms, tls = snapshot.sources
    assert (pms.source, pms.data_age.ToMicroseconds(), pms.stale) == (system_pb2.SYSTEM_PORTFOLIO_MANAGEMENT, HOUR_US, False)
    assert (tls.source, tls.data_age.ToMicroseconds(), tls.stale) == (system_pb2.SYSTEM_TRAFFIC_LIGHT, 2 * HOUR_US, True)
    assert not snapshot.fund_size_derived


def test_a_book_too_big_for_the_default_fund_gets_the_smallest_million_that_carries_it() -> None:
    loans = [loan(f"l{i}", 250_000, 625_000, zone_pb2.ZONE_GREEN) for i in range(400)]  # 100M

    live = live_book_config({}, book(loans), request_path="config", as_of_us=AS_OF_US)

    # By hand, defaults: committed = book 100M + organisation 0.25M + reserve 3 % S + 3 y x (2 % + 0.5 %) S
    # + 3 y x 0.1M fixed <= S  =>  S >= 100.55M / (1 - 0.03 - 0.075) = 112.35M  =>  113M.
    assert live.config.fund.size == 113_000_000 and live.snapshot.fund_size_derived


def test_a_given_fund_size_is_kept_and_too_small_a_one_is_refused_naming_the_field() -> None:
    loans = [loan(f"l{i}", 250_000, 625_000, zone_pb2.ZONE_GREEN) for i in range(400)]

    kept = live_book_config({"fund": {"size": 150_000_000}}, book(loans), request_path="config", as_of_us=AS_OF_US)
    with pytest.raises(InvalidArgument) as caught:
        live_book_config({"fund": {"size": 100_000_000}}, book(loans), request_path="simulation.config", as_of_us=AS_OF_US)

    assert kept.config.fund.size == 150_000_000 and not kept.snapshot.fund_size_derived
    assert caught.value.field_violations == [("simulation.config.fund.size", "at least 113,000,000 for this book")]


def test_the_callers_book_loans_or_regions_conflict_with_the_portfolio() -> None:
    with pytest.raises(InvalidArgument) as caught:
        live_book_config(
            {"book": {"regions": [{"name": "x"}]}}, book([loan("a", 1, 2, zone_pb2.ZONE_RED)]),
            request_path="config", as_of_us=AS_OF_US,
        )  # fmt: skip
    assert caught.value.field_violations == [("config.book.regions", "comes from the portfolio")]


@pytest.mark.parametrize(
    "bad",
    [
        loan_pb2.PortfolioLoan(id="x", property_value=500_000, zone=zone_pb2.ZONE_GREEN),  # no amount
        loan_pb2.PortfolioLoan(id="x", loan_amount=200_000, property_value=500_000),  # no zone
        loan("x", 200_000, 500_000, zone_pb2.ZONE_GREEN, origination_year=-1),
    ],
)
def test_a_loan_the_engine_cannot_simulate_is_a_failed_precondition_naming_it(bad: loan_pb2.PortfolioLoan) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        live_book_config({}, book([bad]), request_path="config", as_of_us=AS_OF_US)
    assert caught.value.reason == "UPSTREAM_DATA_INVALID" and caught.value.metadata["loan_id"] == "x"


def test_region_names_the_engine_cannot_take_are_cleaned_and_exits_past_the_fund_end_capped() -> None:
    odd = loan("a", 200_000, 500_000, zone_pb2.ZONE_GREEN, region="inner west/2", exit_year=12.5)
    soon = loan("b", 200_000, 500_000, zone_pb2.ZONE_GREEN, exit_year=9.5)

    live = live_book_config({"fund": {"term_years": 10}}, book([odd, soon]), request_path="config", as_of_us=AS_OF_US)

    first, second = live.config.book.loans
    assert (first.region, first.planned_exit_month, second.planned_exit_month) == ("inner_west_2", 120, 114)
