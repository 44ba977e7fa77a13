"""The report of a study (a ``Study`` with its result): stress scenarios against the base with their
intervals, the DPI path, a stress-grid heatmap, and the tornado and Morris screening of a sensitivity.

Every figure is read from the contract's ``StudyResult``; nothing is recomputed.
"""

from __future__ import annotations

import plotly.graph_objects as go

from equihome.study.v1 import study_pb2 as pb
from equihome.type.v1 import guardrail_pb2
from server.report.charts import BLUE, HEIGHT
from server.report.headline import Highlight
from server.report.page import Chart, Report, Section, Table
from server.report.simulation_view import IncompleteResult

Study = pb.Study
RED, GREY = "#c8372d", "#5b6877"
SCENARIO_FIGURES = (  # (figure, label, scale, unit shown)
    (pb.STRESS_FIGURE_LP_NET_IRR, "LP net IRR", 100.0, "pp"),
    (pb.STRESS_FIGURE_LP_MOIC, "LP MOIC", 1.0, "x"),
    (pb.STRESS_FIGURE_PROB_HURDLE, "P(IRR ≥ hurdle)", 100.0, "pp"),
    (pb.STRESS_FIGURE_CAPITAL_VAR_99, "Capital VaR 99 %", 100.0, "pp"),
    (pb.STRESS_FIGURE_CAPITAL_CVAR_99, "Capital CVaR 99 %", 100.0, "pp"),
    (pb.STRESS_FIGURE_GP_CARRY, "GP carry", 1e-6, "M"),
)


def study_report(study: Study) -> Report:
    if study.state != Study.STATE_SUCCEEDED or not study.HasField("result"):
        raise IncompleteResult(f"the study is {Study.State.Name(study.state)}; only a SUCCEEDED study has a report")
    kind = study.result.WhichOneof("kind")
    if kind == "stress_test":
        return _stress_report(study, study.result.stress_test)
    if kind == "sensitivity":
        return _sensitivity_report(study, study.result.sensitivity)
    raise IncompleteResult(f"no report view for a study of kind {kind}")


def _name(enum: object, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower().replace("_", " ")  # type: ignore[attr-defined]


def _figure(scenario: pb.ScenarioResult, which: int) -> pb.FigureDelta:
    return next(f for f in scenario.figures if f.figure == which)


def _layout(fig: go.Figure, *, x_title: str, y_title: str, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(template="plotly_white", height=height, margin={"l": 70, "r": 30, "t": 40, "b": 50},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


# --- Stress tests ---------------------------------------------------------------------------------------


def _stress_report(study: Study, result: pb.StressTestResult) -> Report:
    sections = []
    if result.scenarios:
        sections += [_scenario_section(result), _dpi_section(result), _guardrail_section(result)]
    if result.HasField("grid"):
        sections.append(_grid_section(result.grid))
    highlights = []
    for scenario in result.scenarios:
        irr = _figure(scenario, pb.STRESS_FIGURE_LP_NET_IRR)
        highlights.append(Highlight(scenario.name.replace("_", " "), f"{irr.delta.value * 100:+.2f} pp LP IRR",
                                    f"95 % CI {irr.delta.ci_low * 100:+.2f} to {irr.delta.ci_high * 100:+.2f} pp; "
                                    f"{irr.stressed * 100:.2f} % vs {irr.base * 100:.2f} %"))
    return Report(
        title=study.display_name or "Stress test",
        subtitle=f"Stress test by re-simulation: {result.paths:,} paths per run on common random numbers",
        facts=(("Study", study.name or "local (not stored)"), ("Paths per run", f"{result.paths:,}"),
               ("Seed", str(result.seed)), ("Scenarios", str(len(result.scenarios))),
               ("Grid cells", str(len(result.grid.cells))), ("Engine", study.engine_version or "—")),
        highlights=tuple(highlights[:4]),
        sections=tuple(sections),
        notes=("Each change is the scenario's figure minus the base's, path by path on the same random numbers; "
               "means carry a normal 95 % interval of the paired differences, tail figures a paired bootstrap "
               "interval (docs/model.md §8d).",),
    )


def _scenario_section(result: pb.StressTestResult) -> Section:
    charts = []
    names = [s.name for s in result.scenarios]
    for index, (which, label, scale, unit) in enumerate(SCENARIO_FIGURES):
        deltas = [_figure(s, which).delta for s in result.scenarios]
        values = [d.value * scale for d in deltas]
        fig = go.Figure(go.Bar(
            x=names, y=values, marker_color=[RED if v < 0 else BLUE for v in values], name=f"Δ {label}",
            error_y={"type": "data", "symmetric": False, "array": [(d.ci_high - d.value) * scale for d in deltas],
                     "arrayminus": [(d.value - d.ci_low) * scale for d in deltas]},
            hovertemplate=f"%{{x}}: %{{y:+.3f}} {unit}<extra></extra>"))
        charts.append(Chart(f"scenario-{index}", _layout(fig, x_title="Scenario", y_title=f"Δ {label} ({unit})",
                                                          height=320), caption=f"Change of {label} with its 95 % CI"))
    rows = []
    for scenario in result.scenarios:
        for which, label, scale, unit in SCENARIO_FIGURES:
            f = _figure(scenario, which)
            rows.append((scenario.name, label, f"{f.base * scale:.3f}", f"{f.stressed * scale:.3f}",
                         f"{f.delta.value * scale:+.3f}", f"[{f.delta.ci_low * scale:+.3f}, {f.delta.ci_high * scale:+.3f}]"))
    table = Table(("Scenario", "Figure", "Base", "Stressed", "Change", "95 % CI"), tuple(rows),
                  caption="Units: IRR and probabilities in percent (changes in pp), carry in millions")
    return Section("scenarios", "Scenarios against the base",
                   "How far each scenario moves the fund, with the interval of the change.", (*charts, table))


def _dpi_section(result: pb.StressTestResult) -> Section:
    fig = go.Figure()
    base = result.scenarios[0].dpi_path
    fig.add_trace(go.Scatter(x=[y.year for y in base], y=[y.base for y in base], name="base",
                             line={"color": GREY, "width": 3}))
    for scenario in result.scenarios:
        fig.add_trace(go.Scatter(
            x=[y.year for y in scenario.dpi_path], y=[y.stressed for y in scenario.dpi_path], name=scenario.name,
            error_y={"type": "data", "symmetric": False,
                     "array": [y.delta.ci_high - y.delta.value for y in scenario.dpi_path],
                     "arrayminus": [y.delta.value - y.delta.ci_low for y in scenario.dpi_path]}))
    chart = Chart("dpi-path", _layout(fig, x_title="Fund year", y_title="Mean LP DPI"),
                  caption="Mean LP DPI at each year end; bars are the 95 % CI of the change against the base")
    return Section("dpi", "DPI path", "Distributions to paid-in, year by year, base and stressed.", (chart,))


def _guardrail_section(result: pb.StressTestResult) -> Section:
    rows = []
    for scenario in result.scenarios:
        for check in scenario.guardrails:
            rule = _name(guardrail_pb2.GuardrailRule, check.rule, "GUARDRAIL_RULE_")
            rows.append((scenario.name, rule, f"{'≤' if check.upper_limit else '≥'} {check.limit:.3f}",
                         f"{check.base:.3f}", f"{check.stressed:.3f}",
                         "BREACHED" if check.stressed_breached else "ok"))
    return Section("guardrails", "Guardrails", "Fund guardrails (domain §9.4) on the base and each scenario.",
                   (Table(("Scenario", "Rule", "Limit", "Base", "Stressed", "Stressed run"), tuple(rows),
                          numeric=False),))


def _grid_section(grid: pb.GridResult) -> Section:
    width = len(grid.y.values)
    z = [[_figure(grid.cells[i * width + j], pb.STRESS_FIGURE_LP_NET_IRR).delta.value * 100 for j in range(width)]
         for i in range(len(grid.x.values))]
    x_name = _name(pb.GridParameter, grid.x.parameter, "GRID_PARAMETER_")
    y_name = _name(pb.GridParameter, grid.y.parameter, "GRID_PARAMETER_")
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"{v:g}" for v in grid.y.values], y=[f"{v:g}" for v in grid.x.values], colorscale="RdBu",
        zmid=0, colorbar={"title": "Δ LP IRR (pp)"}, text=[[f"{v:+.2f}" for v in row] for row in z],
        texttemplate="%{text}", hovertemplate=f"{x_name} %{{y}}, {y_name} %{{x}}: %{{z:+.2f}} pp<extra></extra>"))
    chart = Chart("grid", _layout(fig, x_title=y_name, y_title=x_name),
                  caption=f"Change of mean LP net IRR against the base, {x_name} × {y_name}")
    return Section("grid", "Stress grid", "Every cell is a scenario re-simulated on the base's random numbers.",
                   (chart,))


# --- Sensitivities --------------------------------------------------------------------------------------


def _sensitivity_report(study: Study, result: pb.SensitivityResult) -> Report:
    sections = []
    metrics = list(dict.fromkeys(bar.metric for bar in result.bars))
    for metric in metrics:
        sections.append(_tornado_section(result, metric))
    if result.HasField("morris"):
        sections.append(_morris_section(result.morris))
    first = [bar for bar in result.bars if bar.metric == metrics[0]] if metrics else []
    highlights = tuple(Highlight(_name(pb.SensitivityParameter, bar.parameter, "SENSITIVITY_PARAMETER_"),
                                 f"elasticity {bar.elasticity:+.3f}",
                                 f"swing {bar.swing:.4g} of {_name(pb.SensitivityMetric, bar.metric, 'SENSITIVITY_METRIC_')}")
                       for bar in first[:4])
    return Report(
        title=study.display_name or "Sensitivities",
        subtitle=f"One-at-a-time sensitivities at ±{result.relative_change:.0%}: {result.paths:,} paths per run "
                 "on common random numbers",
        facts=(("Study", study.name or "local (not stored)"), ("Paths per run", f"{result.paths:,}"),
               ("Seed", str(result.seed)), ("Relative change", f"±{result.relative_change:.0%}"),
               ("Engine", study.engine_version or "—")),
        highlights=highlights,
        sections=tuple(sections),
        notes=("Elasticity = (ΔY / |Y|) / (ΔX / X) between the two sides; a side stops early where the config "
               "would become invalid (its change is shown). docs/model.md §8e.",),
    )


def _tornado_section(result: pb.SensitivityResult, metric: int) -> Section:
    bars = [bar for bar in result.bars if bar.metric == metric][::-1]  # largest swing on top
    metric_name = _name(pb.SensitivityMetric, metric, "SENSITIVITY_METRIC_")
    labels = [_name(pb.SensitivityParameter, bar.parameter, "SENSITIVITY_PARAMETER_") for bar in bars]
    fig = go.Figure()
    fig.add_trace(go.Bar(y=labels, x=[bar.low.delta.value for bar in bars], orientation="h", name="parameter down",
                         marker_color=RED, customdata=[f"{bar.low.change:+.1%}" for bar in bars],
                         hovertemplate="%{y} %{customdata}: %{x:+.4g}<extra></extra>"))
    fig.add_trace(go.Bar(y=labels, x=[bar.high.delta.value for bar in bars], orientation="h", name="parameter up",
                         marker_color=BLUE, customdata=[f"{bar.high.change:+.1%}" for bar in bars],
                         hovertemplate="%{y} %{customdata}: %{x:+.4g}<extra></extra>"))
    fig.update_layout(barmode="overlay")
    chart = Chart(f"tornado-{metric}", _layout(fig, x_title=f"Change of mean {metric_name}", y_title="",
                                               height=max(300, 40 * len(bars) + 120)),
                  caption=f"Tornado of mean {metric_name}: each parameter moved down and up alone")
    rows = tuple((label, f"{bar.low.change:+.1%}", f"{bar.low.delta.value:+.4g}", f"{bar.high.change:+.1%}",
                  f"{bar.high.delta.value:+.4g}", f"{bar.swing:.4g}", f"{bar.elasticity:+.3f}")
                 for label, bar in zip(labels[::-1], bars[::-1]))
    table = Table(("Parameter", "Down", "Δ down", "Up", "Δ up", "Swing", "Elasticity"), rows)
    return Section(f"tornado-{metric}", f"Tornado: {metric_name}",
                   f"Base mean {bars[0].base:.4g}; bars are the paired changes against the base.", (chart, table))


def _morris_section(morris: pb.MorrisResult) -> Section:
    effects = list(morris.effects)[::-1]
    labels = [_name(pb.SensitivityParameter, e.parameter, "SENSITIVITY_PARAMETER_") for e in effects]
    fig = go.Figure(go.Bar(y=labels, x=[e.mu_star for e in effects], orientation="h", marker_color=BLUE,
                           error_x={"type": "data", "array": [e.mu_star_ci for e in effects]}, name="μ*"))
    chart = Chart("morris", _layout(fig, x_title="μ* (mean |elementary effect|)", y_title="",
                                    height=max(300, 40 * len(effects) + 120)),
                  caption=f"Morris screening, {morris.trajectories} trajectories ({morris.runs} runs)")
    rows = tuple((label, f"{e.mu_star:.4g}", f"{e.mu_star_ci:.2g}", f"{e.mu:+.4g}", f"{e.sigma:.4g}")
                 for label, e in zip(labels[::-1], effects[::-1]))
    return Section("morris", "Morris screening", "Importance of each parameter over the whole ± range, with "
                   "interactions (σ).", (chart, Table(("Parameter", "μ*", "± 95 %", "μ", "σ"), rows)))
