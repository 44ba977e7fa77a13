"""A report as data (sections of charts and tables) and its rendering into one self-contained HTML file.

Views build a ``Report``; ``render_html`` turns it into a page that needs nothing but a browser: Plotly's
JavaScript is inlined once (from the installed ``plotly`` package, no CDN), every chart is a Plotly
figure given as JSON, styles are inline, and no font, image or script is fetched. Text from the result
(names, regions) is escaped by the template; chart data is JSON that Plotly escapes for ``<script>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version

import jinja2
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from server.report.headline import Highlight

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png"}}


@dataclass(frozen=True)
class Chart:
    """One Plotly figure; ``key`` is unique within the report and names its element (``chart-<key>``)."""

    key: str
    figure: go.Figure
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """Rows of already formatted cells; every column but the first is right-aligned when ``numeric``."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    numeric: bool = True


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    intro: str
    blocks: tuple[Chart | Table, ...]


@dataclass(frozen=True)
class Report:
    title: str
    subtitle: str
    facts: tuple[tuple[str, str], ...]  # (label, value) about the run, shown under the title
    highlights: tuple[Highlight, ...]
    sections: tuple[Section, ...]
    notes: tuple[str, ...] = field(default=())

    def charts(self) -> list[Chart]:
        return [block for section in self.sections for block in section.blocks if isinstance(block, Chart)]


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("server.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(report: Report) -> str:
    keys = [chart.key for chart in report.charts()]
    if len(set(keys)) != len(keys):
        raise ValueError(f"chart keys repeat: {keys}")
    template = _TEMPLATES.get_template("report.html.j2")
    return template.render(
        report=report,
        chart_html={chart.key: _chart_html(chart) for chart in report.charts()},
        is_chart=lambda block: isinstance(block, Chart),
        plotly_js=get_plotlyjs(),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        tool_version=version("equihome-sim"),
    )


def _chart_html(chart: Chart) -> str:
    return chart.figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=f"chart-{chart.key}",
        config=PLOTLY_CONFIG,
        default_width="100%",
        default_height=f"{chart.figure.layout.height or 420}px",
    )
