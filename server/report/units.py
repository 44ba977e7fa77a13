"""How the report writes numbers: every value carries its unit, money its currency.

One ``Unit`` per kind of quantity of the contract (docs/api.md, Units): decimals shown as percentages,
multiples with an ``x``, money in the fund currency scaled to k/M/B, years, plain ratios and counts.
The same unit also gives the Plotly axis format, so a chart's ticks and its hover read like the tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

MILLION = 1e6


class Unit(Enum):
    PERCENT = "percent"  # a decimal: 0.0721 is 7.21%
    MULTIPLE = "multiple"  # x of paid-in
    MONEY = "money"  # fund currency
    YEARS = "years"
    RATIO = "ratio"  # dimensionless
    COUNT = "count"


@dataclass(frozen=True)
class Units:
    """Formats values for one report; ``currency`` is the fund's (the engine has no currency field)."""

    currency: str

    def format(self, value: float, unit: Unit, *, signed: bool = False) -> str:
        if value is None or not math.isfinite(value):
            return "n/a"
        sign = "+" if signed and value > 0 else ""
        if unit is Unit.PERCENT:
            return f"{sign}{value * 100:,.2f}%"
        if unit is Unit.MULTIPLE:
            return f"{sign}{value:,.2f}x"
        if unit is Unit.MONEY:
            return f"{self.currency} {sign}{_scaled(value)}"
        if unit is Unit.YEARS:
            return f"{sign}{value:,.2f} years"
        if unit is Unit.COUNT:
            return f"{sign}{value:,.0f}" if float(value).is_integer() else f"{sign}{value:,.1f}"
        return f"{sign}{value:,.2f}"

    def millions(self, value: float) -> str:
        """Money in millions of the currency, for tables whose header names the unit."""
        return f"{value / MILLION:,.2f}" if math.isfinite(value) else "n/a"

    def estimate(self, mean: float, half_width: float, unit: Unit) -> str:
        """A mean with the half-width of its 95% confidence interval to two significant digits:
        ``7.21% ± 0.11%``, ``1.62x ± 0.0023x``."""
        if not math.isfinite(half_width):
            return self.format(mean, unit)
        if unit is Unit.PERCENT:
            half = f"{half_width * 100:.2g}%"
        elif unit is Unit.MONEY:
            half = _scaled(half_width)
        else:
            half = f"{half_width:.2g}" + {Unit.MULTIPLE: "x", Unit.YEARS: " years"}.get(unit, "")
        return f"{self.format(mean, unit)} ± {half}"

    def axis(self, unit: Unit) -> dict[str, Any]:
        """Plotly axis settings for values plotted with ``plot_scale(unit)``."""
        if unit is Unit.PERCENT:
            return {"tickformat": ".1%", "hoverformat": ".2%"}
        if unit is Unit.MULTIPLE:
            return {"tickformat": ".2f", "ticksuffix": "x", "hoverformat": ".3f"}
        if unit is Unit.MONEY:
            return {
                "tickformat": ",.1f",
                "ticksuffix": "M",
                "hoverformat": ",.2f",
                "title": {"text": f"{self.currency} millions"},
            }
        if unit is Unit.YEARS:
            return {"tickformat": ".1f", "ticksuffix": " y"}
        return {"tickformat": ",.2f"}

    def hover(self, unit: Unit, field: str = "y") -> str:
        """A Plotly hover-template fragment showing ``%{field}`` (already plot-scaled) with its unit."""
        if unit is Unit.PERCENT:
            return f"%{{{field}:.2%}}"
        if unit is Unit.MULTIPLE:
            return f"%{{{field}:.3f}}x"
        if unit is Unit.MONEY:
            return f"{self.currency} %{{{field}:,.2f}}M"
        if unit is Unit.YEARS:
            return f"%{{{field}:.1f}} years"
        return f"%{{{field}:,.2f}}"


def plot_scale(unit: Unit) -> float:
    """Money is plotted in millions of the currency; every other unit as it is."""
    return 1 / MILLION if unit is Unit.MONEY else 1.0


def _scaled(value: float) -> str:
    magnitude = abs(value)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= size:
            return f"{value / size:,.2f}{suffix}"
    return f"{value:,.0f}"
