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
class _Style:
    """How one unit is written. ``number`` is a format spec that Python and Plotly (d3-format) read alike,
    so tables, hovers and axes agree; money is the exception, written by ``Units`` itself."""

    number: str
    suffix: str = ""
    tick: str = ""


STYLES = {
    Unit.PERCENT: _Style(".2%", tick=".1%"),
    Unit.MULTIPLE: _Style(",.2f", "x", tick=".2f"),
    Unit.YEARS: _Style(",.2f", " years", tick=".1f"),
    Unit.RATIO: _Style(",.2f", tick=",.2f"),
    Unit.COUNT: _Style(",.0f", tick=",d"),
    Unit.MONEY: _Style(",.2f", "M", tick=",.1f"),  # in millions (``plot_scale``) on charts
}


@dataclass(frozen=True)
class Units:
    """Formats values for one report in the fund's ``currency`` (ISO 4217, e.g. AUD)."""

    currency: str

    def format(self, value: float, unit: Unit) -> str:
        if value is None or not math.isfinite(value):
            return "n/a"
        if unit is Unit.MONEY:
            return f"{self.currency} {_scaled(value)}"
        if unit is Unit.COUNT and not float(value).is_integer():
            return f"{value:,.1f}"
        style = STYLES[unit]
        return f"{value:{style.number}}{style.suffix}"

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
            half = f"{half_width:.2g}{STYLES[unit].suffix}"
        return f"{self.format(mean, unit)} ± {half}"

    def axis(self, unit: Unit) -> dict[str, Any]:
        """Plotly axis settings for values plotted with ``plot_scale(unit)``."""
        style = STYLES[unit]
        settings: dict[str, Any] = {
            "tickformat": style.tick,
            "ticksuffix": style.suffix,
            "hoverformat": style.number,
        }
        if unit is Unit.MONEY:
            settings["title"] = {"text": f"{self.currency} millions"}
        return settings

    def hover(self, unit: Unit, field: str = "y") -> str:
        """A Plotly hover-template fragment showing ``%{field}`` (already plot-scaled) with its unit."""
        style = STYLES[unit]
        prefix = f"{self.currency} " if unit is Unit.MONEY else ""
        return f"{prefix}%{{{field}:{style.number}}}{style.suffix}"


def plot_scale(unit: Unit) -> float:
    """Money is plotted in millions of the currency; every other unit as it is."""
    return 1 / MILLION if unit is Unit.MONEY else 1.0


def _scaled(value: float) -> str:
    magnitude = abs(value)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= size:
            return f"{value / size:,.2f}{suffix}"
    return f"{value:,.0f}"
