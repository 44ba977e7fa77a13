"""The synthetic world: deterministic from the seed, plausible, and the same across the three systems."""

from __future__ import annotations

import statistics

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from adapters.sandbox import Sandbox, SandboxConfig, System, running_sandbox
from adapters.sandbox.config import Extensions
from adapters.sandbox.omissions import Omissions
from adapters.sandbox.views import Views
from adapters.sandbox.dynamics import WorldDynamics
from adapters.sandbox.synthetic import REGION_IDS, generate_world
from adapters.sandbox.world import PIPELINE_LIMIT, ZONE_APPRECIATION_BANDS, Zone
from tests.sandbox.support import bearer, fetch_token, receive_json, subscribe


VIEWS = Views(Omissions(0.0, seed=7), loan_links=True)


def test_same_seed_same_world_and_another_seed_another() -> None:
    first = VIEWS.composition(generate_world(SandboxConfig(seed=7)).portfolio)
    again = VIEWS.composition(generate_world(SandboxConfig(seed=7)).portfolio)
    other = VIEWS.composition(generate_world(SandboxConfig(seed=8)).portfolio)

    assert first == again
    assert first != other


def test_default_portfolio_follows_the_recommended_distributions() -> None:
    world = generate_world(SandboxConfig())
    loans = list(world.portfolio.loans.values())

    assert world.portfolio.id == "portfolio_456"
    assert len(loans) == 400
    assert world.zone_counts() == {Zone.GREEN: 240, Zone.ORANGE: 120, Zone.RED: 40}
    assert all(100_000 <= loan.amount <= 500_000 for loan in loans)
    assert statistics.mean(loan.amount for loan in loans) == pytest.approx(250_000, rel=0.04)
    assert all(0.145 <= loan.ltv <= 0.655 for loan in loans)
    assert statistics.mean(loan.ltv for loan in loans) == pytest.approx(0.40, abs=0.02)
    assert {loan.property.region_id for loan in loans} == set(REGION_IDS)
    for loan in loans:
        low, high = ZONE_APPRECIATION_BANDS[loan.property.zone]
        assert low <= loan.property.appreciation_rate <= high
        assert 0 <= loan.origination_year <= 3
        assert loan.origination_year < loan.exit_year <= 10


async def test_zone_reclassification_shows_in_the_tls_and_the_pms(http: httpx.AsyncClient) -> None:
    linked = SandboxConfig(events_per_second=0, omit_optional_fields=0, extensions=Extensions(loan_links=True))
    async with running_sandbox(linked) as sandbox:
        token = await fetch_token(http, sandbox)
        async with connect(sandbox, "traffic-light", token) as ws:
            await subscribe(ws, sandbox, "traffic-light")
            sandbox.emit("traffic-light", "zone_classification_updated")
            change = (await receive_json(ws))["data"]

        zones = await http.get(
            f"{sandbox.system_url('traffic-light')}/api/traffic-light/zones",
            params={"properties": change["property_id"]},
            headers=bearer(token),
        )
        composition = await get_composition(sandbox, http, token)

    assert change["old_zone"] != change["new_zone"]
    assert zones.json()["zones"] == {change["property_id"]: change["new_zone"]}
    on_property = [loan for loan in composition["loans"] if loan["property_id"] == change["property_id"]]
    assert all(loan["zone"] == change["new_zone"] for loan in on_property)


async def test_market_risk_change_shows_in_the_market_risk_endpoint(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    change = sandbox.emit("traffic-light", "market_risk_updated").data

    response = await http.get(
        f"{sandbox.system_url('traffic-light')}/api/traffic-light/market-risk",
        params={"regions": change["region_id"]},
        headers=bearer(token),
    )

    assert response.json()["market_risk"][change["region_id"]] == {
        "risk_level": change["new_risk_level"],
        "risk_score": change["risk_score"],
        "appreciation_forecast": change["appreciation_forecast"],
    }


async def test_application_is_approved_then_funded_into_the_portfolio(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    async with connect(sandbox, "underwriting", token) as underwriting, connect(sandbox, "pms", token) as pms:
        await subscribe(underwriting, sandbox, "underwriting")
        await subscribe(pms, sandbox, "pms")
        sandbox.emit("underwriting", "loan_application_submitted")
        sandbox.emit("underwriting", "loan_approved")
        sandbox.emit("pms", "portfolio_updated")
        submitted = (await receive_json(underwriting))["data"]
        approved = (await receive_json(underwriting))["data"]
        funded = (await receive_json(pms))["data"]

    parameters = await http.get(
        f"{sandbox.system_url('underwriting')}/api/underwriting/loans/{submitted['loan_id']}/parameters",
        headers=bearer(token),
    )
    composition = await get_composition(sandbox, http, token)

    assert parameters.json()["requested_loan_amount"] == submitted["requested_loan_amount"]
    assert approved["loan_id"] == "loan_401"  # the oldest pending application is decided first
    assert approved["terms"] == {
        "interest_rate": 0.05,
        "term": 10,
        "origination_fee": pytest.approx(0.03 * approved["approved_loan_amount"]),
    }
    assert funded["update_type"] == "loan_added"
    assert funded["loan"]["id"] == approved["loan_id"]
    assert funded["loan"]["loan_amount"] == approved["approved_loan_amount"]
    assert approved["loan_id"] in {loan["id"] for loan in composition["loans"]}
    assert len(composition["loans"]) == 401


async def test_metrics_update_shows_in_the_metrics_endpoint(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    change = sandbox.emit("pms", "metrics_updated").data

    response = await http.get(
        f"{sandbox.system_url('pms')}/api/pms/portfolios/portfolio_456/metrics", headers=bearer(token)
    )

    metrics = response.json()["metrics"]
    assert {name: metrics[name] for name in change["metrics"]} == change["metrics"]


def test_a_long_run_keeps_the_world_bounded_and_the_zone_mix_near_60_30_10() -> None:
    world = generate_world(SandboxConfig())
    dynamics = WorldDynamics(world, seed=7, views=VIEWS)

    for _ in range(5_000):
        for system in System:
            assert dynamics.happen_somehow(system) is not None

    counts = world.zone_counts()
    portfolio_size = len(world.portfolio.loans)
    assert 380 <= portfolio_size <= 420
    assert counts[Zone.GREEN] / portfolio_size == pytest.approx(0.6, abs=0.1)
    assert counts[Zone.RED] / portfolio_size == pytest.approx(0.1, abs=0.06)
    assert len(world.loans) <= portfolio_size + 2 * PIPELINE_LIMIT


async def get_composition(sandbox: Sandbox, http: httpx.AsyncClient, token: str) -> dict:
    response = await http.get(
        f"{sandbox.system_url('pms')}/api/pms/portfolios/portfolio_456/composition", headers=bearer(token)
    )
    assert response.status_code == 200
    return response.json()


def connect(sandbox: Sandbox, system: str, token: str) -> ws_connect:
    return ws_connect(f"{sandbox.ws_url(system)}?token={token}")
