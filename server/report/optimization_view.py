"""The report of an allocation optimisation (an ``Optimization``): the efficient frontier with the
recommendation, the current book and the key points marked; the allocation before and after with the
actions; the recommendation's surrogate and re-simulated figures and their gap; the binding constraints.
Every figure is read from the contract's message."""

from __future__ import annotations

import plotly.graph_objects as go

from equihome.optimization.v1 import allocation_pb2
from equihome.optimization.v1 import optimization_service_pb2 as service_pb2
from server.report import charts
from server.report.charts import BLUE, ZONE_COLOURS
from server.report.headline import Highlight
from server.report.page import Chart, Report, Section, Table
from server.report.units import Unit, Units

Optimization = service_pb2.Optimization
ZONES = ("green", "orange", "red")
FIGURES = (
    ("expected_return", "mean LP net IRR", Unit.PERCENT),
    ("volatility", "volatility", Unit.PERCENT),
    ("sharpe_ratio", "Sharpe ratio", Unit.RATIO),
    ("capital_cvar_95", "capital CVaR 95 %", Unit.PERCENT),
    ("prob_hurdle", "P(LP IRR ≥ hurdle)", Unit.PERCENT),
    ("expected_moic", "mean LP MOIC", Unit.MULTIPLE),
)


class IncompleteOptimization(ValueError):
    """The optimisation has no recommendation or no frontier to report."""


def optimization_report(optimization: Optimization) -> Report:
    if not optimization.HasField("recommended") or not optimization.frontier:
        raise IncompleteOptimization(
            "the optimisation has no recommendation or frontier; read it with "
            "GetOptimization or OptimizeAllocation"
        )
    units = Units(optimization.currency or "AUD")
    objective = allocation_pb2.Objective.Name(optimization.objective).removeprefix("OBJECTIVE_").lower()
    return Report(
        title="Zone allocation optimisation",
        subtitle=f"objective {objective.replace('_', ' ')}, {optimization.paths:,} paths, LP net figures, rates annual",
        facts=_facts(optimization, units, objective),
        highlights=_highlights(optimization, units),
        sections=(
            _frontier(optimization, units),
            _allocation(optimization, units),
            _figures(optimization, units),
            _binding(optimization),
        ),
        notes=(
            "Surrogate: the portfolio's return on each path is the weighted sum of the single-zone sub-funds' "
            "returns on that path (common random numbers). Re-simulated: the whole fund model run again at "
            "the recommended weights. Gap = re-simulated − surrogate.",
        ),
    )


def _facts(optimization: Optimization, units: Units, objective: str) -> tuple[tuple[str, str], ...]:
    facts = [
        ("optimisation", optimization.optimization_id or "(not stored)"),
        ("objective", objective),
        ("paths", f"{optimization.paths:,}"),
        ("seed", str(optimization.seed)),
        ("engine", optimization.engine_version),
        ("investable capital", units.format(optimization.investable_capital, Unit.MONEY)),
        ("elapsed", f"{optimization.elapsed.ToTimedelta().total_seconds():.1f} s"),
    ]
    if optimization.portfolio_id:
        facts.insert(1, ("portfolio", optimization.portfolio_id))
    return tuple(facts)


def _highlights(optimization: Optimization, units: Units) -> tuple[Highlight, ...]:
    point = optimization.recommended
    weights = " / ".join(units.format(getattr(point.weights, zone), Unit.PERCENT) for zone in ZONES)
    figures = point.resimulated if point.HasField("resimulated") else point.surrogate
    gap = (
        f"surrogate {units.format(point.surrogate.expected_return, Unit.PERCENT)}, gap "
        f"{units.format(point.gap.expected_return, Unit.PERCENT)}"
        if point.HasField("gap")
        else "surrogate"
    )
    return (
        Highlight(
            "recommended green / orange / red", weights, f"{len(optimization.recommendation.actions)} actions"
        ),
        Highlight("mean LP net IRR (re-simulated)", units.format(figures.expected_return, Unit.PERCENT), gap),
        Highlight(
            "Sharpe ratio",
            units.format(figures.sharpe_ratio, Unit.RATIO),
            f"current book {units.format(optimization.current.surrogate.sharpe_ratio, Unit.RATIO)} (surrogate)",
        ),
        Highlight(
            "capital CVaR 95 %",
            units.format(figures.capital_cvar_95, Unit.PERCENT),
            "mean share of LP capital lost on the worst 5 % of paths",
        ),
    )


def _frontier(optimization: Optimization, units: Units) -> Section:
    fig = charts.figure(units, Unit.PERCENT, x_title="volatility of the LP net IRR (surrogate)")
    fig.update_xaxes(**units.axis(Unit.PERCENT))
    frontier = optimization.frontier
    fig.add_trace(
        go.Scatter(
            x=[p.surrogate.volatility for p in frontier],
            y=[p.surrogate.expected_return for p in frontier],
            mode="lines+markers",
            name="efficient frontier",
            line={"color": BLUE},
            customdata=[[getattr(p.weights, zone) for zone in ZONES] for p in frontier],
            hovertemplate="green %{customdata[0]:.1%} · orange %{customdata[1]:.1%} · red %{customdata[2]:.1%}"
            "<br>mean %{y:.2%} · volatility %{x:.2%}<extra></extra>",
        )
    )
    marked = (
        ("recommendation", optimization.recommended, "star", "#111111", 16),
        ("current book", optimization.current, "circle-open", "#666666", 12),
        ("maximum Sharpe", optimization.max_sharpe, "diamond", ZONE_COLOURS["orange"], 11),
        ("minimum risk", optimization.min_risk, "square", ZONE_COLOURS["green"], 10),
    )
    for name, point, symbol, colour, size in marked:
        if not point.HasField("surrogate"):
            continue  # no maximum-Sharpe point where no mix beats the risk-free rate
        fig.add_trace(
            go.Scatter(
                x=[point.surrogate.volatility],
                y=[point.surrogate.expected_return],
                mode="markers",
                name=name,
                marker={"symbol": symbol, "color": colour, "size": size},
                hovertemplate=f"{name}<br>mean %{{y:.2%}} · volatility %{{x:.2%}}<extra></extra>",
            )
        )
    rows = tuple(
        (
            str(i + 1),
            *(units.format(getattr(p.weights, zone), Unit.PERCENT) for zone in ZONES),
            units.format(p.surrogate.expected_return, Unit.PERCENT),
            units.format(p.surrogate.volatility, Unit.PERCENT),
            units.format(p.surrogate.sharpe_ratio, Unit.RATIO),
            units.format(p.surrogate.capital_cvar_95, Unit.PERCENT),
            units.format(p.surrogate.prob_hurdle, Unit.PERCENT),
        )
        for i, p in enumerate(frontier)
    )
    table = Table(
        ("point", "green", "orange", "red", "mean IRR", "volatility", "Sharpe", "CVaR 95 %", "P(hurdle)"),
        rows,
        caption="the frontier's points, ascending risk",
    )
    return Section(
        "frontier",
        "Efficient frontier",
        "Minimum volatility for each mean LP net IRR the bounds and limits allow, with the "
        "recommendation and the current book marked.",
        (Chart("frontier", fig), table),
    )


def _allocation(optimization: Optimization, units: Units) -> Section:
    current, target = optimization.current.weights, optimization.recommended.weights
    fig = charts.figure(units, Unit.PERCENT, x_title="zone")
    for name, weights, opacity in (("current", current, 0.45), ("recommended", target, 1.0)):
        fig.add_trace(
            go.Bar(
                x=list(ZONES),
                y=[getattr(weights, zone) for zone in ZONES],
                name=name,
                marker={"color": [ZONE_COLOURS[zone] for zone in ZONES], "opacity": opacity},
                hovertemplate=f"{name} %{{x}}: %{{y:.1%}}<extra></extra>",
            )
        )
    fig.update_layout(barmode="group")
    rows = []
    moves = {
        ZONES[a.zone - 1]: (
            a.amount if a.action_type == allocation_pb2.ACTION_TYPE_INCREASE_ALLOCATION else -a.amount
        )
        for a in optimization.recommendation.actions
    }
    for zone in ZONES:
        before, after = getattr(current, zone), getattr(target, zone)
        move = moves.get(zone, 0.0)
        action = "increase" if move > 0 else "decrease" if move < 0 else "none"
        rows.append(
            (
                zone,
                units.format(before, Unit.PERCENT),
                units.format(after, Unit.PERCENT),
                action,
                units.format(abs(move), Unit.MONEY),
            )
        )
    table = Table(
        ("zone", "current", "recommended", "action", "amount"),
        tuple(rows),
        caption=f"actions on an investable capital of "
        f"{units.format(optimization.investable_capital, Unit.MONEY)}",
    )
    return Section(
        "allocation",
        "Allocation before and after",
        "Zone weights of the current book and the recommendation, and the moves between them.",
        (Chart("allocation", fig), table),
    )


def _figures(optimization: Optimization, units: Units) -> Section:
    point, current = optimization.recommended, optimization.current
    resimulated = point.HasField("resimulated")
    columns = (
        "figure",
        "current (surrogate)",
        "recommended (surrogate)",
        *(("recommended (re-simulated)", "gap") if resimulated else ()),
    )
    rows = []
    for field, label, unit in FIGURES:
        cells = [getattr(current.surrogate, field), getattr(point.surrogate, field)]
        if resimulated:
            cells += [getattr(point.resimulated, field), getattr(point.gap, field)]
        rows.append((label, *(units.format(value, unit) for value in cells)))
    return Section(
        "figures",
        "Surrogate and re-simulation",
        "The recommendation on the sub-fund paths and through the whole fund model (fees, carry "
        "and the waterfall are not linear in the weights).",
        (Table(columns, tuple(rows)),),
    )


def _binding(optimization: Optimization) -> Section:
    rows = tuple(
        (item.name, f"{item.value:.4f}", f"{item.limit:.4f}") for item in optimization.binding_constraints
    )
    table = Table(
        ("constraint", "value", "limit"),
        rows or (("none", "", ""),),
        caption="constraints at their limit at the recommendation",
    )
    return Section("binding", "Binding constraints", "What stops the optimiser from going further.", (table,))
