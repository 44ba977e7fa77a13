"""``equihome-sim impact``: JSON output and named input errors."""

from __future__ import annotations

import json

from server import impact_cli

ARGS = [
    "--amount",
    "450000",
    "--property-value",
    "600000",
    "--zone",
    "green",
    "--region",
    "sydney_east",
    "--paths",
    "100",
]


def test_json_carries_the_underwriting_fields(capsys):
    assert impact_cli.main([*ARGS, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    rec = document["recommendation"]
    assert rec["decision"] == "DECISION_COUNTER_OFFER" and rec["approve"] is True
    assert rec["recommended_loan_amount"] == 390_000  # LTV limit 0.65 × 600,000
    assert {"irr", "equity_multiple", "roi", "sharpe_ratio"} <= set(document["portfolio_metrics_before"])
    assert {"var_change", "concentration_risk_change", "diversification_benefit"} <= set(
        document["risk_impact"]
    )


def test_unknown_region_is_named(capsys):
    assert impact_cli.main([*ARGS[:-4], "--region", "atlantis"]) == 2
    assert "--region" in capsys.readouterr().err
