"""Every REST endpoint answers with the guide's paths and field sets, from the synthetic world."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from adapters.sandbox import Sandbox
from adapters.sandbox.synthetic import REGION_IDS
from tests.sandbox import guide_examples as guide
from tests.sandbox.support import assert_guide_error, bearer

ZONES = {"green", "orange", "red"}


@pytest_asyncio.fixture(loop_scope="module")
async def sandbox(shared_sandbox: Sandbox) -> AsyncIterator[Sandbox]:
    """These tests only read the world and POST; they share one sandbox and start with no posts."""
    shared_sandbox.state.received.clear()
    yield shared_sandbox


async def test_zones_answers_each_known_property(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    response = await http.get(
        f"{sandbox.system_url('traffic-light')}/api/traffic-light/zones",
        params={"properties": "property_1,property_2"},
        headers=bearer(token),
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(guide.ZONES)
    world = sandbox.world.properties
    assert body["zones"] == {
        "property_1": world["property_1"].zone.value,
        "property_2": world["property_2"].zone.value,
    }


async def test_zones_batch_with_unknown_properties_leaves_them_out(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    response = await http.get(
        f"{sandbox.system_url('traffic-light')}/api/traffic-light/zones",
        params={"properties": "property_3,no_such_property,property_4"},
        headers=bearer(token),
    )

    assert response.status_code == 200
    body = response.json()
    assert body == {"zones": {pid: sandbox.world.properties[pid].zone.value for pid in ("property_3", "property_4")}}


async def test_zones_without_properties_is_a_bad_request(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    url = f"{sandbox.system_url('traffic-light')}/api/traffic-light/zones"

    response = await http.get(url, headers=bearer(token))

    assert_guide_error(response, 400, "missing_parameter")


async def test_market_risk_has_the_guide_fields_per_region(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    response = await http.get(
        f"{sandbox.system_url('traffic-light')}/api/traffic-light/market-risk",
        params={"regions": ",".join(REGION_IDS) + ",atlantis"},
        headers=bearer(token),
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(guide.MARKET_RISK)
    assert set(body["market_risk"]) == set(REGION_IDS)  # atlantis left out
    expected_fields = set(guide.MARKET_RISK["market_risk"]["region_id1"])
    for risk in body["market_risk"].values():
        assert set(risk) == expected_fields
        assert risk["risk_level"] in {"low", "medium", "high"}
        assert 0 <= risk["risk_score"] <= 10


async def test_composition_has_the_guide_fields_and_adds_up(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    response = await http.get(
        f"{sandbox.system_url('pms')}/api/pms/portfolios/portfolio_456/composition", headers=bearer(token)
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(guide.COMPOSITION)
    assert set(body["metrics"]) == set(guide.COMPOSITION["metrics"])
    loans = body["loans"]
    assert len(loans) == 400
    for loan in loans:
        assert set(loan) == set(guide.COMPOSITION["loans"][0])
        assert loan["zone"] in ZONES
        assert loan["ltv"] == pytest.approx(loan["loan_amount"] / loan["property_value"], abs=1e-4)
    assert body["metrics"]["total_loan_amount"] == sum(loan["loan_amount"] for loan in loans)
    assert body["metrics"]["total_initial_value"] == sum(loan["property_value"] for loan in loans)


async def test_performance_metrics_have_the_guide_fields(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    response = await http.get(
        f"{sandbox.system_url('pms')}/api/pms/portfolios/portfolio_456/metrics", headers=bearer(token)
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(guide.PERFORMANCE)
    assert set(body["metrics"]) == set(guide.PERFORMANCE["metrics"])
    history = body["historical_performance"]
    assert len(history) >= 12
    assert all(set(period) == set(guide.PERFORMANCE["historical_performance"][0]) for period in history)
    assert [period["date"] for period in history[:2]] == ["2023-01-01", "2023-02-01"]


@pytest.mark.parametrize("loan_id", ["loan_1", "loan_401"], ids=["portfolio loan", "pending application"])
async def test_loan_parameters_have_the_guide_fields(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str, loan_id: str
) -> None:
    response = await http.get(
        f"{sandbox.system_url('underwriting')}/api/underwriting/loans/{loan_id}/parameters",
        headers=bearer(token),
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(guide.LOAN_PARAMETERS)
    assert body["loan_id"] == loan_id
    assert body["property_zone"] in ZONES
    assert body["property_region"] in REGION_IDS
    assert 300 <= body["borrower_credit_score"] <= 850


@pytest.mark.parametrize(
    "system, path, what",
    [
        ("pms", "/api/pms/portfolios/portfolio_999/composition", "portfolio"),
        ("pms", "/api/pms/portfolios/portfolio_999/metrics", "portfolio"),
        ("underwriting", "/api/underwriting/loans/loan_999999/parameters", "loan"),
    ],
)
async def test_unknown_ids_are_404_in_the_error_format(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str, system: str, path: str, what: str
) -> None:
    response = await http.get(sandbox.system_url(system) + path, headers=bearer(token))

    error = assert_guide_error(response, 404, "not_found")
    assert error["details"]["service"] == system
    assert error["details"]["resource"] == what


@pytest.mark.parametrize(
    "system, path, body",
    [
        ("traffic-light", "/api/traffic-light/recommendations", None),
        ("pms", "/api/pms/portfolios/portfolio_456/recommendations", guide.PMS_RECOMMENDATIONS),
        ("underwriting", "/api/underwriting/loans/loan_401/portfolio-impact", guide.PORTFOLIO_IMPACT),
    ],
    ids=["traffic-light", "pms", "underwriting"],
)
async def test_posted_recommendations_are_accepted_and_read_back(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str, system: str, path: str, body: dict | None
) -> None:
    body = body or tls_recommendations(sandbox)

    response = await http.post(
        sandbox.system_url(system) + path,
        json=body,
        headers={**bearer(token), "X-Correlation-ID": "corr_post_1", "Idempotency-Key": "push_1"},
    )

    assert response.status_code == 202 and response.content == b"", response.text  # the guide shows no answer
    read_back = await http.get(f"{sandbox.base_url}/sandbox/received", params={"system": system})
    received = read_back.json()["received"]
    assert len(received) == 1 and received[0]["idempotency_key"] == "push_1"
    assert received[0]["body"] == body
    assert received[0]["path"] == path
    assert received[0]["client_id"] == "equihome-engine"
    assert received[0]["correlation_id"] == "corr_post_1"


async def test_body_that_is_not_json_is_a_bad_request(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    response = await http.post(
        f"{sandbox.system_url('pms')}/api/pms/portfolios/portfolio_456/recommendations",
        content=b"{not json",
        headers={**bearer(token), "Content-Type": "application/json"},
    )

    assert_guide_error(response, 400, "invalid_json")


async def test_body_breaking_the_guide_schema_lists_every_problem(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    impact = guide.PORTFOLIO_IMPACT["impact"]
    body = {
        "analysis_id": "analysis_124",
        "portfolio_id": "portfolio_456",
        "impact": {
            **impact,
            "recommendation": {**impact["recommendation"], "approve": "yes"},
            "risk_impact": {"var_change": 0.002},
        },
        "surprise": 1,
    }

    response = await http.post(
        f"{sandbox.system_url('underwriting')}/api/underwriting/loans/loan_401/portfolio-impact",
        json=body,
        headers=bearer(token),
    )

    error = assert_guide_error(response, 422, "validation_error")
    fields = {problem["field"] for problem in error["details"]["errors"]}
    assert fields == {
        "impact.recommendation.approve",
        "impact.risk_impact.concentration_risk_change",
        "impact.risk_impact.diversification_benefit",
        "surprise",
    }
    assert sandbox.received() == []


async def test_allocations_must_sum_to_one_and_name_known_regions(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    body = tls_recommendations(sandbox)
    body["recommendations"]["red_zone_allocation"] = 0.5
    body["recommendations"]["region_allocations"] = {"atlantis": 1.0}
    url = f"{sandbox.system_url('traffic-light')}/api/traffic-light/recommendations"

    unbalanced = await http.post(url, json=body, headers=bearer(token))
    body["recommendations"]["red_zone_allocation"] = 0.05
    unknown_region = await http.post(url, json=body, headers=bearer(token))

    assert_guide_error(unbalanced, 422, "validation_error")
    error = assert_guide_error(unknown_region, 422, "validation_error")
    assert error["details"]["errors"] == [
        {"field": "recommendations.region_allocations.atlantis", "message": "unknown region 'atlantis'"}
    ]


async def test_correlation_id_is_echoed_or_made_up(
    sandbox: Sandbox, http: httpx.AsyncClient, token: str
) -> None:
    url = f"{sandbox.system_url('pms')}/api/pms/portfolios/portfolio_456/metrics"

    echoed = await http.get(url, headers={**bearer(token), "X-Correlation-ID": "corr_abc"})
    made_up = await http.get(url, headers=bearer(token))

    assert echoed.headers["X-Correlation-ID"] == "corr_abc"
    assert made_up.headers["X-Correlation-ID"].startswith("corr_")


def tls_recommendations(sandbox: Sandbox) -> dict:
    """The guide's example, with the sandbox's region ids in place of the guide's placeholders."""
    first, second = list(sandbox.world.regions)[:2]
    recommendations = {
        **guide.TLS_RECOMMENDATIONS["recommendations"],
        "region_allocations": {first: 0.4, second: 0.6},
    }
    return {**guide.TLS_RECOMMENDATIONS, "recommendations": recommendations}
