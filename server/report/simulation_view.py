"""The report of a simulation run (a ``Simulation`` resource with its SUMMARY result).

Every figure is read from the contract's ``SimulationResult``; nothing is recomputed but what a chart
needs to draw (bin centres, the change in year-end cash the yearly flows add up to). Labels and units
of the metrics come from ``catalogue``; a contract field it does not know is still shown, under its
field name, so a new metric is never silently dropped.
"""

from __future__ import annotations

import plotly.graph_objects as go
from google.protobuf.message import Message
from plotly.subplots import make_subplots

from equihome.simulation.v1 import simulation_config_pb2, simulation_pb2, simulation_result_pb2
from equihome.type.v1 import zone_pb2
from server.mapping.config import engine_to_config
from server.report import charts
from server.report.catalogue import (
    CASH_FLOWS,
    DEPRECATED,
    FLOW_COLOURS,
    METRICS,
    PART,
    RISK,
    RISK_IN_RESULT,
    SOURCE,
    USE,
    catalogue,
)
from server.report.charts import BLUE, ZONE_COLOURS, Band, Marker
from server.report.headline import headline, quantile, units_of
from server.report.page import Chart, Report, Section, Table
from server.report.units import Unit, Units, plot_scale
from simulation.config import load_config

Simulation = simulation_pb2.Simulation
Result = simulation_result_pb2.SimulationResult

NO_STRESS = engine_to_config(load_config({})).stress
ZONE_NAMES = {zone_pb2.ZONE_GREEN: "green", zone_pb2.ZONE_ORANGE: "orange", zone_pb2.ZONE_RED: "red"}
LP_COLOUR, GP_COMMITMENT_COLOUR, CARRY_COLOUR = BLUE, "#7fa7cf", "#8c5ab8"


class IncompleteResult(ValueError):
    """The simulation cannot be reported: it has no result or no effective config."""


def simulation_report(simulation: Simulation) -> Report:
    if simulation.state != Simulation.STATE_SUCCEEDED or not simulation.HasField("result"):
        state = Simulation.State.Name(simulation.state)
        raise IncompleteResult(
            f"the simulation is {state}; only a SUCCEEDED run with its result has a report"
        )
    if not simulation.HasField("effective_config"):
        raise IncompleteResult("the simulation has no effective_config; read it in the SUMMARY or FULL view")
    units = units_of(simulation)
    view = _View(simulation, units)
    return Report(
        title=simulation.display_name or "Fund simulation",
        subtitle=(
            f"Monte Carlo report: {simulation.result.metadata.paths:,} paths of the fund, money in "
            f"{units.currency}, rates annual"
        ),
        facts=view.facts(),
        highlights=headline(simulation),
        sections=(
            view.j_curve(),
            view.multiples(),
            view.returns(),
            view.risk(),
            view.split(),
            view.nav(),
            view.cash_flows(),
            view.credit(),
            view.concentration(),
        ),
        notes=view.notes(),
    )


class _View:
    def __init__(self, simulation: Simulation, units: Units):
        self.simulation = simulation
        self.result: Result = simulation.result
        self.config: simulation_config_pb2.SimulationConfig = simulation.effective_config
        self.units = units
        self.years = [fan.year for fan in self.result.fan_chart]

    # Header.

    def facts(self) -> tuple[tuple[str, str], ...]:
        simulation, metadata, config = self.simulation, self.result.metadata, self.config
        money = self.units.format
        waterfall = simulation_config_pb2.WaterfallStructure.Name(config.waterfall.structure)
        facts = [
            ("Run", simulation.name or "local run (not stored)"),
            ("Portfolio", simulation.portfolio_id or "—"),
            ("Fund size", money(config.fund.size, Unit.MONEY)),
            ("Loans in book", f"{metadata.loans_in_book:,}"),
            ("Term", f"{config.fund.term_years} years"),
            ("Waterfall", waterfall.removeprefix("WATERFALL_STRUCTURE_").lower()),
            ("Hurdle", self.units.format(config.waterfall.hurdle_rate, Unit.PERCENT)),
            ("Carry", self.units.format(config.waterfall.carry_rate, Unit.PERCENT)),
            ("Paths", f"{metadata.paths:,}" + (" (deterministic)" if metadata.deterministic else "")),
            ("Seed", str(metadata.seed)),
            ("Engine", metadata.engine_version),
            ("Run time", f"{metadata.elapsed.ToTimedelta().total_seconds():,.1f} s"),
            ("Config SHA-256", metadata.config_sha256[:12] + "…"),
        ]
        stress = _stress_text(config.stress)
        if stress:
            facts.append(("Stress scenario", stress))
        if simulation.HasField("end_time"):
            facts.append(("Finished", simulation.end_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")))
        return tuple(facts)

    # Sections.

    def j_curve(self) -> Section:
        """Cumulative LP net cash flow (distributions received − capital paid in) at year ends."""
        bands = [_band(fan.cumulative_lp_net_cash) for fan in self.result.fan_chart]
        fig = charts.figure(self.units, Unit.MONEY, x_title="Fund year")
        fig.add_hline(y=0, line={"color": "#5b6877", "width": 1})
        charts.add_fan(fig, self.units, Unit.MONEY, self.years, bands, name="Cumulative LP net cash flow")
        medians = [band.p50 for band in bands]
        trough = min(range(len(medians)), key=medians.__getitem__)
        breakeven = next((year for year, value in zip(self.years, medians, strict=True) if value >= 0), None)
        distributions = charts.figure(self.units, Unit.MONEY, x_title="Fund year")
        charts.add_fan(
            distributions,
            self.units,
            Unit.MONEY,
            self.years,
            [_band(fan.cumulative_lp_distributions) for fan in self.result.fan_chart],
            name="Cumulative LP distributions",
        )
        money = self.units.format
        return Section(
            "j-curve",
            "J-curve",
            "Capital is called before loans pay back, so the LPs' cumulative net cash flow (distributions "
            "received minus capital paid in) first falls, then recovers. On the median path the trough is "
            f"{money(medians[trough], Unit.MONEY)} at the end of year {self.years[trough]} "
            f"(P5 {money(bands[trough].p5, Unit.MONEY)}); "
            + (
                f"it turns positive in year {breakeven}."
                if breakeven is not None
                else "it does not turn positive within the term."
            ),
            (
                Chart(
                    "j-curve",
                    fig,
                    "Cumulative LP net cash flow at year ends across paths: median, "
                    "P25–P75 and P5–P95. Year 1 includes the first call at inception.",
                ),
                Chart(
                    "lp-distributions",
                    distributions,
                    "Cumulative distributions to the LPs at year ends "
                    "across paths: median, P25–P75 and P5–P95.",
                ),
            ),
        )

    def multiples(self) -> Section:
        fig = make_subplots(
            rows=1,
            cols=3,
            shared_yaxes=True,
            horizontal_spacing=0.04,
            subplot_titles=(
                "DPI (distributed / paid-in)",
                "RVPI (residual value / paid-in)",
                "TVPI (total value / paid-in)",
            ),
        )
        for col, field in enumerate(("dpi", "rvpi", "tvpi"), start=1):
            charts.add_fan(
                fig,
                self.units,
                Unit.MULTIPLE,
                self.years,
                [_band(getattr(fan, field)) for fan in self.result.fan_chart],
                name=field.upper(),
                row=1,
                col=col,
            )
        charts.style(fig, self.units, Unit.MULTIPLE, x_title="Fund year")
        fig.update_yaxes(title_text="x paid-in to date", col=1)
        fig.update_layout(showlegend=False, margin={"t": 60})
        return Section(
            "multiples",
            "DPI, RVPI and TVPI",
            "LP multiples on capital paid in to date, at each year end, across paths. DPI rises as loans "
            "exit "
            "and the fund distributes; RVPI is the LPs' share of NAV, which falls to zero as the fund winds "
            "up; TVPI = DPI + RVPI.",
            (Chart("multiples", fig, "Median line, P25–P75 (dark) and P5–P95 (light) bands."),),
        )

    def returns(self) -> Section:
        config, result, units = self.config, self.result, self.units
        hurdle, target_irr = config.waterfall.hurdle_rate, config.reporting.target_irr
        irr = result.metrics.lp_net_irr
        irr_markers = [
            Marker(hurdle, f"hurdle {units.format(hurdle, Unit.PERCENT)}", "#c8372d"),
            Marker(target_irr, f"target {units.format(target_irr, Unit.PERCENT)}", "#2e9e5b"),
            Marker(irr.mean, f"mean {units.format(irr.mean, Unit.PERCENT)}", BLUE, "dot"),
        ]
        target_multiple = config.reporting.target_multiple
        moic_markers = [
            Marker(1.0, "1.00x: capital back", "#c8372d"),
            Marker(target_multiple, f"target {units.format(target_multiple, Unit.MULTIPLE)}", "#2e9e5b"),
            Marker(
                result.metrics.lp_moic.mean,
                f"mean {units.format(result.metrics.lp_moic.mean, Unit.MULTIPLE)}",
                BLUE,
                "dot",
            ),
        ]
        return Section(
            "returns",
            "Distribution of returns",
            "How the LP outcome varies across paths, with the waterfall hurdle and the reporting targets "
            "marked, "
            "and every per-path metric summarised. Means carry their 95% confidence interval "
            "(1.96 standard errors of the Monte Carlo mean).",
            (
                self._histogram(
                    "irr-histogram",
                    "LP net IRR",
                    Unit.PERCENT,
                    result.lp_net_irr_histogram,
                    irr_markers,
                    "the hurdle, the target IRR",
                ),
                self._histogram(
                    "moic-histogram",
                    "LP MOIC",
                    Unit.MULTIPLE,
                    result.lp_moic_histogram,
                    moic_markers,
                    "1.00x, the target multiple",
                ),
                self._metrics_table(),
            ),
        )

    def risk(self) -> Section:
        risk, units = self.result.risk, self.units
        errors = risk.standard_errors if risk.HasField(RISK_IN_RESULT) else None
        rows = tuple(
            (
                label,
                units.format(getattr(risk, field), unit),
                units.format(getattr(errors, field), unit) if errors is not None else "n/a",
            )
            for field, (label, unit) in catalogue(risk, RISK, Unit.RATIO)
        )
        reporting = self.config.reporting
        return Section(
            "risk",
            "Risk",
            "Risk measures across paths of the LP outcome, each with its Monte Carlo standard error (a "
            "bootstrap of the paths). Sharpe uses the risk-free rate "
            f"{units.format(reporting.risk_free_rate, Unit.PERCENT)}, Sortino the minimum acceptable return "
            f"{units.format(reporting.min_acceptable_return, Unit.PERCENT)}. IRR VaR and CVaR are levels of "
            "the IRR (low percentiles); capital VaR and CVaR are losses, max(0, 1 − LP MOIC), as a share of "
            "LP paid-in capital: 0 means those paths get their capital back.",
            (Table(("measure", "value", "standard error"), rows),),
        )

    def split(self) -> Section:
        flows, units, metrics = self.result.cash_flows, self.units, self.result.metrics
        scale = plot_scale(Unit.MONEY)
        parts = (
            ("distributions_lp", "to the LPs", LP_COLOUR),
            ("distributions_gp_commitment", "to the GP commitment", GP_COMMITMENT_COLOUR),
            ("carried_interest", "carried interest to the GP", CARRY_COLOUR),
        )
        fig = charts.figure(units, Unit.MONEY, x_title="Fund year")
        for field, name, colour in parts:
            fig.add_trace(
                go.Bar(
                    x=[year.year for year in flows],
                    y=[getattr(year, field) * scale for year in flows],
                    name=name,
                    marker={"color": colour},
                    hovertemplate=f"year %{{x}}: {units.hover(Unit.MONEY)}<extra>{name}</extra>",
                )
            )
        fig.update_layout(barmode="relative")
        total = sum(year.distributions for year in flows)
        rows = [("Distributions", units.format(total, Unit.MONEY), _share(units, total, total))]
        for field, name, _ in parts:
            amount = sum(getattr(year, field) for year in flows)
            rows.append((name, units.format(amount, Unit.MONEY), _share(units, amount, total)))
        rows.append(
            ("GP total income (carry and fees)", units.format(metrics.gp_total_income.mean, Unit.MONEY), "")
        )
        return Section(
            "split",
            "LP/GP split of distributions",
            "Mean distributions per fund year by recipient: the LPs and the GP commitment in proportion to "
            "their commitments, and the GP's carried interest "
            f"({units.format(self.config.waterfall.carry_rate, Unit.PERCENT)} above the "
            f"{units.format(self.config.waterfall.hurdle_rate, Unit.PERCENT)} hurdle, after catch-up).",
            (
                Chart("split", fig, "Stacked: the bar height is the year's total distributions."),
                Table(("lifetime, mean per path", "amount", "share of distributions"), tuple(rows)),
            ),
        )

    def nav(self) -> Section:
        fig = charts.figure(self.units, Unit.MONEY, x_title="Fund year")
        charts.add_fan(
            fig,
            self.units,
            Unit.MONEY,
            self.years,
            [_band(fan.nav) for fan in self.result.fan_chart],
            name="NAV",
        )
        return Section(
            "nav",
            "Net asset value",
            "The fund's NAV (loans marked to model plus cash) at each year end across paths. It builds up "
            "during deployment and runs off as loans exit and the fund distributes.",
            (Chart("nav", fig, "Median line, P25–P75 (dark) and P5–P95 (light) bands."),),
        )

    def cash_flows(self) -> Section:
        flows, units = self.result.cash_flows, self.units
        scale = plot_scale(Unit.MONEY)
        lines = [
            (field, entry)
            for field, entry in catalogue(simulation_result_pb2.CashFlowYear(), CASH_FLOWS, PART)
            if entry[1] != DEPRECATED
        ]
        years = [year.year for year in flows]
        fig = charts.figure(units, Unit.MONEY, x_title="Fund year")
        for field, (label, role) in lines:
            if role not in (SOURCE, USE):
                continue
            sign = 1 if role == SOURCE else -1
            fig.add_trace(
                go.Bar(
                    x=years,
                    y=[sign * getattr(year, field) * scale for year in flows],
                    name=f"{label} ({'+' if role == SOURCE else '−'})",
                    marker={"color": FLOW_COLOURS.get(field)},
                    hovertemplate=f"year %{{x}}: {units.hover(Unit.MONEY)}<extra>{label}</extra>",
                )
            )
        changes = [
            year.cash_end - previous for year, previous in zip(flows, [0.0, *(y.cash_end for y in flows)])
        ]
        fig.add_trace(
            go.Scatter(
                x=years,
                y=[change * scale for change in changes],
                mode="markers",
                name="change in cash",
                marker={"symbol": "diamond", "size": 9, "color": "#1d2733"},
                hovertemplate=f"year %{{x}}: {units.hover(Unit.MONEY)}<extra>change in year-end cash</extra>",
            )
        )
        fig.update_layout(barmode="relative")
        table = Table(
            ("year", *(label for _, (label, _) in lines)),
            tuple(
                (str(year.year), *(units.millions(getattr(year, field)) for field, _ in lines))
                for year in flows
            ),
            caption=f"Mean across paths, {units.currency} millions. Year 1 includes month 0 (the first call "
            "and the organisation costs). Each year closes: sources − uses = change in year-end cash; the "
            "three recipients add up to the distributions.",
        )
        return Section(
            "cash-flows",
            "Cash flows by year",
            "Mean fund cash flows per year: sources of cash above the axis, uses below it, and the change in "
            "the fund's year-end cash they add up to.",
            (
                Chart(
                    "cash-flows",
                    fig,
                    "Sources (+) and uses (−) of fund cash, mean across paths; the diamonds "
                    "mark each year's change in cash.",
                ),
                table,
            ),
        )

    def credit(self) -> Section:
        units, market = self.units, self.config.market
        credit = sorted(self.result.credit, key=lambda zone: zone.zone)
        measures = (
            ("annual_default_rate", "PD (annual)"),
            ("probability_of_default", "PD (lifetime)"),
            ("loss_given_default", "LGD"),
            ("expected_loss", "Expected loss"),
        )
        fig = charts.figure(units, Unit.PERCENT, x_title="")
        for zone in credit:
            name = ZONE_NAMES.get(zone.zone, str(zone.zone))
            fig.add_trace(
                go.Bar(
                    x=[label for _, label in measures],
                    y=[getattr(zone, field) for field, _ in measures],
                    name=name,
                    marker={"color": ZONE_COLOURS.get(name, BLUE)},
                    hovertemplate=f"{name} %{{x}}: {units.hover(Unit.PERCENT)}<extra></extra>",
                )
            )
        fig.update_layout(barmode="group")
        rows = []
        for zone in credit:
            name = ZONE_NAMES.get(zone.zone, str(zone.zone))
            configured = getattr(market, name).default_hazard if name in ZONE_COLOURS else float("nan")
            rows.append(
                (
                    name,
                    units.format(zone.loan_count, Unit.COUNT),
                    units.format(zone.exposure, Unit.MONEY),
                    units.format(configured, Unit.PERCENT),
                    units.format(zone.annual_default_rate, Unit.PERCENT),
                    units.format(zone.probability_of_default, Unit.PERCENT),
                    units.format(zone.loss_given_default, Unit.PERCENT),
                    units.format(zone.expected_loss, Unit.PERCENT),
                )
            )
        table = Table(
            (
                "zone",
                "loans funded per path",
                "principal funded per path",
                "PD configured (annual)",
                "PD realised (annual)",
                "PD (lifetime)",
                "LGD",
                "expected loss",
            ),
            tuple(rows),
            caption="Means per path over the fund life, pooled across paths; LGD is n/a where nothing "
            "defaulted.",
        )
        return Section(
            "credit",
            "Credit by zone",
            "Defaults and losses per Traffic Light zone over the fund life, recycled loans included. Annual "
            "PD is defaults per loan-year on the book, to compare with the configured hazard; lifetime PD is "
            "defaulted loans over loans funded; LGD is one minus recoveries over the claim of defaulted "
            "loans; expected loss is credit losses over principal funded.",
            (Chart("credit", fig), table),
        )

    def concentration(self) -> Section:
        concentration, units = self.result.concentration, self.units
        zones = [
            ("green", concentration.zone_shares.green),
            ("orange", concentration.zone_shares.orange),
            ("red", concentration.zone_shares.red),
        ]
        fig = make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.35, 0.65],
            horizontal_spacing=0.08,
            subplot_titles=("by zone", "by region"),
        )
        fig.add_trace(
            go.Bar(
                x=[name for name, _ in zones],
                y=[share for _, share in zones],
                showlegend=False,
                marker={"color": [ZONE_COLOURS[name] for name, _ in zones]},
                hovertemplate=f"%{{x}}: {units.hover(Unit.PERCENT)}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Bar(
                x=[share.region for share in concentration.region_shares],
                y=[share.share for share in concentration.region_shares],
                showlegend=False,
                marker={"color": BLUE},
                hovertemplate=f"%{{x}}: {units.hover(Unit.PERCENT)}<extra></extra>",
            ),
            row=1,
            col=2,
        )
        charts.style(fig, units, Unit.PERCENT, x_title="")
        fig.update_yaxes(title_text="share of principal")
        table = Table(
            ("by", "HHI", "effective number"),
            (
                ("zone", f"{concentration.zone_hhi:.3f}", f"{concentration.zone_effective_n:.2f}"),
                ("region", f"{concentration.region_hhi:.3f}", f"{concentration.region_effective_n:.2f}"),
                ("loan", f"{concentration.loan_hhi:.4f}", f"{concentration.loan_effective_n:,.1f}"),
            ),
            caption=f"Herfindahl–Hirschman index of exposure shares and its inverse, at month "
            f"{concentration.as_of_month} (the end of deployment).",
        )
        return Section(
            "concentration",
            "Concentration",
            "How the initial book's principal is spread over zones, regions and loans, measured when "
            "deployment ends (the same on every path).",
            (Chart("concentration", fig), table),
        )

    def notes(self) -> tuple[str, ...]:
        convergence = self.result.convergence
        return (
            (
                f"Money is in {self.units.currency}, the fund currency; rates and IRRs are annual; multiples "
                "are on paid-in capital."
            ),
            (
                "Monte Carlo precision: the standard error of the mean LP net IRR is "
                f"{convergence.lp_net_irr_standard_error * 100:.3f} percentage points and of the mean LP "
                f"MOIC {convergence.lp_moic_standard_error:.4f}x; quadrupling the paths halves them."
            ),
            "The same config fingerprint, seed and engine version reproduce this result exactly.",
        )

    # Helpers.

    def _histogram(
        self,
        key: str,
        metric: str,
        unit: Unit,
        histogram: simulation_result_pb2.Histogram,
        markers: list[Marker],
        marked: str,
    ) -> Chart:
        figure = charts.histogram(
            self.units, unit, histogram.bin_edges, histogram.counts, x_title=metric, markers=markers
        )
        return Chart(key, figure, _nan_caption(metric, marked, histogram.nan_count))

    def _metrics_table(self) -> Table:
        metrics, units = self.result.metrics, self.units
        rows = []
        for field, (label, unit) in catalogue(metrics, METRICS, Unit.RATIO):
            summary = getattr(metrics, field)
            rows.append(
                (
                    label,
                    units.estimate(summary.mean, summary.ci95_half_width, unit),
                    *(quantile(units, summary, percentile, unit) for percentile in (5, 25, 50, 75, 95)),
                    f"{summary.nan_count:,}" if summary.nan_count else "",
                )
            )
        return Table(
            ("metric", "mean ± 95% CI", "P5", "P25", "median", "P75", "P95", "undefined paths"),
            tuple(rows),
            caption="Per-path metrics across paths. 'Undefined' counts paths where the metric has no value "
            "(e.g. an IRR without a sign change); statistics cover the others.",
        )


def _band(band: simulation_result_pb2.FanBand) -> Band:
    return Band(band.p5, band.p25, band.p50, band.p75, band.p95)


def _stress_text(stress: simulation_config_pb2.Stress) -> str:
    """What the stress changes from no stress, field by field (``price_shock red -0.3; price_shock_month
    24``); empty for no stress, which every effective config carries."""
    parts = []
    for field in stress.DESCRIPTOR.fields:
        value, neutral = getattr(stress, field.name), getattr(NO_STRESS, field.name)
        if isinstance(value, Message):
            zones = [
                f"{zone.name} {getattr(value, zone.name):g}"
                for zone in value.DESCRIPTOR.fields
                if getattr(value, zone.name) != getattr(neutral, zone.name)
            ]
            if zones:
                parts.append(f"{field.name} {', '.join(zones)}")
        elif value != neutral:
            parts.append(f"{field.name} {value:g}")
    return "; ".join(parts)


def _share(units: Units, amount: float, total: float) -> str:
    return units.format(amount / total, Unit.PERCENT) if total else "n/a"


def _nan_caption(metric: str, marked: str, nan_count: int) -> str:
    shown = (
        f"{metric} of every path"
        if not nan_count
        else (
            f"{metric} of the paths where it is defined ({nan_count:,} path(s) have none and are not shown)"
        )
    )
    return f"{shown}, with {marked} and the mean marked."
