"""Plotly figures the views share: fan charts over fund years, histograms from bin counts, bar charts.

Every helper takes values in the contract's units and plots them scaled by ``plot_scale`` (money in
millions) with the axis and hover formats of ``Units``, so a figure never shows a bare number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from server.report.units import Unit, Units, plot_scale

HEIGHT = 420
BLUE = "#1f5f9e"
ZONE_COLOURS = {"green": "#2e9e5b", "orange": "#e8891c", "red": "#c8372d"}
FAN_PERCENTILES = ("p5", "p25", "p50", "p75", "p95")


@dataclass(frozen=True)
class Band:
    """Percentiles of a quantity across paths at one point of time, in the quantity's unit."""

    p5: float
    p25: float
    p50: float
    p75: float
    p95: float


@dataclass(frozen=True)
class Marker:
    """A vertical reference line on a histogram (a hurdle, a target, the mean)."""

    value: float
    label: str
    colour: str
    dash: str = "dash"


def figure(units: Units, y_unit: Unit, *, x_title: str, height: int = HEIGHT) -> go.Figure:
    fig = go.Figure()
    style(fig, units, y_unit, x_title=x_title, height=height)
    return fig


def style(fig: go.Figure, units: Units, y_unit: Unit, *, x_title: str, height: int = HEIGHT) -> None:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 70, "r": 30, "t": 40, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        hoverlabel={"namelength": -1},
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(**units.axis(y_unit))


def add_fan(
    fig: go.Figure,
    units: Units,
    unit: Unit,
    x: Sequence[float],
    bands: Sequence[Band],
    *,
    name: str,
    colour: str = BLUE,
    row: int | None = None,
    col: int | None = None,
) -> None:
    """The P5–P95 and P25–P75 ranges as shaded areas and the median as a line; the hover of the median
    lists all five percentiles."""
    scale = plot_scale(unit)
    series = {key: [getattr(band, key) * scale for band in bands] for key in FAN_PERCENTILES}
    where = {"row": row, "col": col} if row is not None else {}
    xs = list(x)
    for low, high, opacity, label in (("p5", "p95", 0.15, "P5–P95"), ("p25", "p75", 0.3, "P25–P75")):
        fig.add_trace(
            go.Scatter(
                x=xs + xs[::-1],
                y=series[high] + series[low][::-1],
                fill="toself",
                fillcolor=_rgba(colour, opacity),
                line={"width": 0},
                hoverinfo="skip",
                name=f"{name} {label}",
                legendgroup=name,
                showlegend=row is None or row == 1 and col in (None, 1),
            ),
            **where,
        )
    rows = [
        "<br>".join(
            f"{key.upper()} {units.hover(unit, f'customdata[{i}]')}" for i, key in enumerate(FAN_PERCENTILES)
        )
    ]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=series["p50"],
            customdata=list(zip(*(series[key] for key in FAN_PERCENTILES), strict=True)),
            mode="lines+markers",
            line={"color": colour, "width": 2},
            marker={"size": 5},
            name=f"{name} median",
            legendgroup=name,
            hovertemplate=f"{name}, year %{{x}}<br>{rows[0]}<extra></extra>",
            showlegend=row is None or row == 1 and col in (None, 1),
        ),
        **where,
    )


def histogram(
    units: Units,
    unit: Unit,
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    x_title: str,
    markers: Sequence[Marker] = (),
) -> go.Figure:
    """Bars of paths per bin (bin edges in the metric's unit) with reference lines."""
    scale = plot_scale(unit)
    total = sum(counts) or 1
    lows, highs = [e * scale for e in edges[:-1]], [e * scale for e in edges[1:]]
    fig = figure(units, Unit.COUNT, x_title=x_title)
    fig.add_trace(
        go.Bar(
            x=[(low + high) / 2 for low, high in zip(lows, highs, strict=True)],
            y=list(counts),
            width=[high - low for low, high in zip(lows, highs, strict=True)],
            customdata=[
                (low, high, count / total) for low, high, count in zip(lows, highs, counts, strict=True)
            ],
            marker={"color": _rgba(BLUE, 0.7), "line": {"color": BLUE, "width": 0.5}},
            name="paths",
            hovertemplate=(
                f"{units.hover(unit, 'customdata[0]')} to {units.hover(unit, 'customdata[1]')}"
                "<br>%{y:,} paths (%{customdata[2]:.1%})<extra></extra>"
            ),
            showlegend=False,
        )
    )
    for marker in markers:
        fig.add_vline(
            x=marker.value * scale,
            line={"color": marker.colour, "dash": marker.dash, "width": 2},
            annotation={"text": marker.label, "font": {"color": marker.colour}, "textangle": -90},
            annotation_position="top right",
        )
    fig.update_xaxes(**units.axis(unit))
    fig.update_yaxes(title_text="paths", tickformat=",d")
    fig.update_layout(bargap=0)
    return fig


def _rgba(colour: str, alpha: float) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"
