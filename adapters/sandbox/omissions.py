"""Optional fields the sandbox sometimes leaves out, as a system following the guide may.

The guide shows every field in its examples but does not promise them all. The sandbox treats as
optional the fields below (never an id, a zone or the event type) and leaves each out with probability
``rate``: afresh for every event, and for REST items by a stable draw per item and field, so one property
or loan keeps lacking the same field from one read to the next. The draws come from the sandbox seed.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

# Dotted paths of the optional fields, per event type and per REST item kind.
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "zone_classification_updated": ("old_zone", "reason"),
    "market_risk_updated": ("old_risk_level", "appreciation_forecast"),
    "portfolio_updated": ("loan.ltv",),
    "metrics_updated": ("metrics.roi",),
    "loan_application_submitted": (),
    "loan_approved": ("approved_ltv", "terms.origination_fee"),
    "market_risk": ("appreciation_forecast",),
    "composition_loan": ("ltv", "appreciation_rate"),
    "performance": ("historical_performance", "metrics.sortino_ratio", "metrics.var_95"),
    "loan_parameters": ("requested_ltv", "borrower_credit_score", "property_type"),
}


class Omissions:
    def __init__(self, rate: float, seed: int):
        self.rate = rate
        self._seed = seed
        self._rng = random.Random(f"omissions:{seed}")

    def event(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` of a new ``event`` with each optional field left out with probability ``rate``."""
        return _without(data, [path for path in OPTIONAL_FIELDS[event] if self._rolls()])

    def item(self, kind: str, item_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """A REST item (market risk of a region, a composition loan, ...) without the optional fields
        this item lacks."""
        return _without(data, [path for path in OPTIONAL_FIELDS[kind] if self._lacks(kind, item_id, path)])

    def _rolls(self) -> bool:
        return self.rate > 0 and self._rng.random() < self.rate

    def _lacks(self, kind: str, item_id: str, path: str) -> bool:
        digest = hashlib.sha256(f"{self._seed}/{kind}/{item_id}/{path}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.rate


def _without(data: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    if not paths:
        return data
    copy = {name: dict(value) if isinstance(value, dict) else value for name, value in data.items()}
    for path in paths:
        *parents, leaf = path.split(".")
        target = copy
        for parent in parents:
            target = target[parent]
        target.pop(leaf, None)
    return copy
