"""The JSON examples of the integration guide (docs: shared/reference/integration-guide.md), verbatim
except for the ``// More ...`` comments. The sandbox's payloads must have exactly these fields, plus
the extensions listed here, which docs/sandbox.md documents."""

ZONES = {"zones": {"property_id1": "green", "property_id2": "orange"}}

MARKET_RISK = {
    "market_risk": {
        "region_id1": {"risk_level": "low", "risk_score": 2.3, "appreciation_forecast": 0.05},
        "region_id2": {"risk_level": "medium", "risk_score": 5.7, "appreciation_forecast": 0.03},
    }
}

TLS_RECOMMENDATIONS = {
    "portfolio_id": "portfolio_456",
    "recommendations": {
        "green_zone_allocation": 0.7,
        "orange_zone_allocation": 0.25,
        "red_zone_allocation": 0.05,
        "region_allocations": {"region_id1": 0.4, "region_id2": 0.6},
    },
}

ZONE_CLASSIFICATION_UPDATED = {
    "event": "zone_classification_updated",
    "data": {
        "property_id": "property_id1",
        "old_zone": "green",
        "new_zone": "orange",
        "reason": "Market conditions deteriorated",
    },
}

MARKET_RISK_UPDATED = {
    "event": "market_risk_updated",
    "data": {
        "region_id": "region_id1",
        "old_risk_level": "low",
        "new_risk_level": "medium",
        "risk_score": 4.2,
        "appreciation_forecast": 0.04,
    },
}

COMPOSITION = {
    "portfolio_id": "portfolio_456",
    "loans": [
        {
            "id": "loan_1",
            "loan_amount": 250000,
            "property_value": 500000,
            "ltv": 0.5,
            "zone": "green",
            "appreciation_rate": 0.05,
            "origination_year": 0,
            "exit_year": 5,
        }
    ],
    "metrics": {
        "total_initial_value": 200000000,
        "total_loan_amount": 100000000,
        "average_ltv": 0.5,
        "weighted_appreciation_rate": 0.04,
    },
}

PERFORMANCE = {
    "portfolio_id": "portfolio_456",
    "metrics": {
        "irr": 0.12,
        "equity_multiple": 2.1,
        "roi": 1.1,
        "sharpe_ratio": 1.5,
        "sortino_ratio": 2.2,
        "var_95": 0.08,
    },
    "historical_performance": [
        {"date": "2023-01-01", "nav": 100000000, "distributions": 0, "contributions": 100000000},
        {"date": "2023-02-01", "nav": 101000000, "distributions": 0, "contributions": 0},
    ],
}

PMS_RECOMMENDATIONS = {
    "optimization_id": "optimization_123",
    "recommendations": {
        "target_allocation": {"green": 0.7, "orange": 0.25, "red": 0.05},
        "expected_metrics": {"irr": 0.14, "equity_multiple": 2.3, "roi": 1.3, "sharpe_ratio": 1.8},
        "actions": [
            {"action_type": "increase_allocation", "zone": "green", "amount": 10000000},
            {"action_type": "decrease_allocation", "zone": "orange", "amount": 5000000},
            {"action_type": "decrease_allocation", "zone": "red", "amount": 5000000},
        ],
    },
}

PORTFOLIO_UPDATED = {
    "event": "portfolio_updated",
    "data": {
        "portfolio_id": "portfolio_456",
        "update_type": "loan_added",
        "loan": {
            "id": "loan_10",
            "loan_amount": 300000,
            "property_value": 600000,
            "ltv": 0.5,
            "zone": "green",
        },
    },
}

METRICS_UPDATED = {
    "event": "metrics_updated",
    "data": {"portfolio_id": "portfolio_456", "metrics": {"irr": 0.13, "equity_multiple": 2.2, "roi": 1.2}},
}

LOAN_PARAMETERS = {
    "loan_id": "loan_1",
    "property_value": 500000,
    "requested_loan_amount": 250000,
    "requested_ltv": 0.5,
    "property_zone": "green",
    "property_region": "region_id1",
    "borrower_credit_score": 750,
    "property_type": "single_family",
}

PORTFOLIO_IMPACT = {
    "analysis_id": "analysis_123",
    "portfolio_id": "portfolio_456",
    "impact": {
        "portfolio_metrics_before": {"irr": 0.12, "equity_multiple": 2.1, "roi": 1.1, "sharpe_ratio": 1.5},
        "portfolio_metrics_after": {"irr": 0.125, "equity_multiple": 2.15, "roi": 1.15, "sharpe_ratio": 1.55},
        "risk_impact": {
            "var_change": 0.002,
            "concentration_risk_change": -0.01,
            "diversification_benefit": 0.005,
        },
        "recommendation": {
            "approve": True,
            "recommended_loan_amount": 250000,
            "recommended_ltv": 0.5,
            "confidence_score": 0.85,
        },
    },
}

LOAN_APPLICATION_SUBMITTED = {
    "event": "loan_application_submitted",
    "data": {
        "loan_id": "loan_1",
        "property_value": 500000,
        "requested_loan_amount": 250000,
        "property_zone": "green",
    },
}

LOAN_APPROVED = {
    "event": "loan_approved",
    "data": {
        "loan_id": "loan_1",
        "approved_loan_amount": 250000,
        "approved_ltv": 0.5,
        "terms": {"interest_rate": 0.05, "term": 10, "origination_fee": 7500},
    },
}

TOKEN_RESPONSE = {
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
    "token_type": "Bearer",
    "expires_in": 3600,
    "scope": "traffic-light:read pms:read",
}

ERROR = {
    "error": {
        "code": "integration_error",
        "message": "Failed to retrieve data from Traffic Light System",
        "details": {
            "service": "traffic-light",
            "endpoint": "/api/traffic-light/zones",
            "status_code": 503,
            "retry_after": 60,
        },
        "correlation_id": "corr_123456",
    }
}

# Sandbox extensions (docs/sandbox.md, "Extensions to the guide").
LOAN_EXTENSION_FIELDS = {"property_id", "region"}
FRAME_EXTENSION_FIELDS = {"id", "timestamp"}

# Each event of the guide with the system that publishes it.
EVENT_SOURCES = [
    ("traffic-light", "zone_classification_updated"),
    ("traffic-light", "market_risk_updated"),
    ("pms", "portfolio_updated"),
    ("pms", "metrics_updated"),
    ("underwriting", "loan_application_submitted"),
    ("underwriting", "loan_approved"),
]

EVENTS = {
    "zone_classification_updated": ZONE_CLASSIFICATION_UPDATED,
    "market_risk_updated": MARKET_RISK_UPDATED,
    "portfolio_updated": PORTFOLIO_UPDATED,
    "metrics_updated": METRICS_UPDATED,
    "loan_application_submitted": LOAN_APPLICATION_SUBMITTED,
    "loan_approved": LOAN_APPROVED,
}
