"""Engine ``SimulationResult`` → proto ``SimulationResult``: values are copied, never recomputed.

Four reshapes, each forced by the contract: the engine's year 0 (month 0: the first call and the
organisation costs) is added to fund year 1 of the cash-flow table so its totals stay whole; per-zone
credit tallies summed over paths become per-path means; the MOIC convergence figures are the LP MOIC
summary's; IRR NaN labels become ``NanReason`` values. NaN stays NaN.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from google.protobuf import duration_pb2

from equihome.simulation.v1 import simulation_result_pb2 as pb
from equihome.type.v1 import zone_pb2
from simulation import engine
from simulation.config import SimulationConfig
from simulation.metrics import Summary
from simulation.results import RISK_SCALARS, FanChart, RiskMetrics
from simulation.results import SimulationResult as EngineResult

MONTHS_PER_YEAR = 12

NAN_REASONS: dict[str, pb.NanReason.ValueType] = {
    "no_outflow": pb.NAN_REASON_NO_OUTFLOW,
    "no_inflow": pb.NAN_REASON_NO_INFLOW,
    "no_root": pb.NAN_REASON_NO_ROOT,
    "empty": pb.NAN_REASON_OTHER,  # no non-zero flow at all; the contract has no closer reason
}
ZONES: dict[str, zone_pb2.Zone.ValueType] = {
    "green": zone_pb2.ZONE_GREEN,
    "orange": zone_pb2.ZONE_ORANGE,
    "red": zone_pb2.ZONE_RED,
}
FAN_SERIES = {  # YearlyFan field → engine fan chart
    "nav": "nav",
    "dpi": "lp_dpi",
    "rvpi": "lp_rvpi",
    "tvpi": "lp_tvpi",
    "cumulative_lp_distributions": "lp_cumulative_distributions",
    "cumulative_lp_net_cash": "lp_cumulative_net_cash",
}
YEAR_END_LINES = ("cash_end", "nav")  # balances at the year end; the other lines are flows in the year
METRICS = tuple(field.name for field in pb.MetricSummaries.DESCRIPTOR.fields)


def result_to_proto(result: EngineResult, config: SimulationConfig) -> pb.SimulationResult:
    """The whole result; ``path_detail`` is set when the run kept its per-path values."""
    message = pb.SimulationResult(
        metadata=_metadata(result, config),
        metrics=pb.MetricSummaries(
            **{name: _summary(result.metrics[name], result.irr_nan_reasons.get(name, {})) for name in METRICS}
        ),
        risk=_risk(result.risk),
        fan_chart=_fan_chart(result.fan_charts),
        lp_net_irr_histogram=_histogram(result, "lp_net_irr"),
        lp_moic_histogram=_histogram(result, "lp_moic"),
        concentration=_concentration(result, config),
        credit=[
            pb.ZoneCredit(
                zone=ZONES[zone.zone],
                loan_count=zone.loans / result.info.paths,
                exposure=zone.exposure / result.info.paths,
                probability_of_default=zone.pd_lifetime,
                loss_given_default=zone.lgd,
                expected_loss=zone.expected_loss,
                annual_default_rate=zone.pd_annual,
            )
            for zone in result.credit
        ],
        cash_flows=_cash_flows(result.cashflows, config.fund.term_years),
        convergence=pb.Convergence(
            lp_net_irr_standard_error=result.convergence.standard_error,
            lp_net_irr_ci95_half_width=result.convergence.ci95_half_width,
            lp_moic_standard_error=result.metrics["lp_moic"].standard_error,
            lp_moic_ci95_half_width=result.metrics["lp_moic"].ci95_half_width,
        ),
    )
    if result.paths is not None:
        for name in METRICS:
            getattr(message.path_detail, name).extend(result.paths[name].tolist())
    return message


def config_sha256(config: SimulationConfig) -> str:
    """Fingerprint of the effective config: SHA-256 of its canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def seconds_to_duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def _metadata(result: EngineResult, config: SimulationConfig) -> pb.RunMetadata:
    info = result.info
    return pb.RunMetadata(
        seed=info.seed,
        engine_version=info.engine_version,
        paths=info.paths,
        deterministic=info.deterministic,
        elapsed=seconds_to_duration(info.elapsed_seconds),
        chunks=info.chunks,
        workers=info.workers,
        term_months=config.term_months,
        config_sha256=config_sha256(config),
        currency=info.currency,
        loans_in_book=info.loans_in_book,
    )


def _summary(summary: Summary, nan_reasons: dict[str, int]) -> pb.MetricSummary:
    return pb.MetricSummary(
        count=int(summary.count),
        nan_count=int(summary.nan_count),
        mean=summary.mean,
        std=summary.std,
        min=summary.min,
        max=summary.max,
        quantiles=[
            pb.Quantile(percentile=float(percentile), value=float(value))
            for percentile, value in sorted(summary.quantiles.items())
        ],
        standard_error=summary.standard_error,
        ci95_half_width=summary.ci95_half_width,
        nan_reasons=[
            pb.NanReasonCount(reason=NAN_REASONS[label], count=count)
            for label, count in sorted(nan_reasons.items())
        ],
    )


def _risk(risk: RiskMetrics) -> pb.RiskMetrics:
    fields: dict[str, float] = {}
    for tail in risk.tails:
        level = round(tail.confidence * 100)
        fields |= {
            f"irr_var_{level}": tail.irr_var,
            f"irr_cvar_{level}": tail.irr_cvar,
            f"capital_var_{level}": tail.capital_var,
            f"capital_cvar_{level}": tail.capital_cvar,
        }
    message = pb.RiskMetrics(**{name: getattr(risk, name) for name in RISK_SCALARS}, **fields)
    if risk.standard_errors is not None:
        message.standard_errors.CopyFrom(_risk(risk.standard_errors))
    return message


def _band(chart: FanChart, column: int) -> pb.FanBand:
    return pb.FanBand(
        **{f"p{quantile}": float(chart.values[row, column]) for row, quantile in enumerate(chart.quantiles)}
    )


def _fan_chart(charts: dict[str, FanChart]) -> list[pb.YearlyFan]:
    """Bands at the end of fund years 1..term; the engine's column 0 is inception."""
    years = charts["nav"].years
    return [
        pb.YearlyFan(
            year=int(year), **{field: _band(charts[series], column) for field, series in FAN_SERIES.items()}
        )
        for column, year in enumerate(years)
        if year >= 1
    ]


def _histogram(result: EngineResult, metric: str) -> pb.Histogram:
    histogram = result.histograms[metric]
    return pb.Histogram(
        bin_edges=histogram.edges.tolist(),
        counts=histogram.counts.tolist(),
        nan_count=int(result.metrics[metric].nan_count),
    )


def _concentration(result: EngineResult, config: SimulationConfig) -> pb.Concentration:
    """The engine measures the initial book, which is complete at the end of the deployment period."""
    concentration = result.concentration
    return pb.Concentration(
        as_of_month=round(config.fund.deployment_period_years * MONTHS_PER_YEAR),
        zone_hhi=concentration.zone_hhi,
        zone_effective_n=concentration.zone_effective_n,
        region_hhi=concentration.region_hhi,
        region_effective_n=concentration.region_effective_n,
        loan_hhi=concentration.loan_hhi,
        loan_effective_n=concentration.loan_effective_n,
        zone_shares=zone_pb2.ZoneWeights(**concentration.zone_shares),
        region_shares=[
            pb.RegionShare(region=region, share=share)
            for region, share in concentration.region_shares.items()
        ],
    )


def _cash_flows(lines: dict[str, np.ndarray], term_years: int) -> list[pb.CashFlowYear]:
    """Mean lines per fund year; flows at inception (engine year 0) count in year 1, balances are at year end."""
    fields = [field.name for field in pb.CashFlowYear.DESCRIPTOR.fields if field.name not in ("year", "originations")]
    values = {field: np.asarray(lines[field], dtype=float).copy() for field in fields}
    values["originations"] = values["initial_originations"] + values["recycled_originations"]  # deprecated total
    fields.append("originations")
    for field in fields:
        if field not in YEAR_END_LINES:
            values[field][1] += values[field][0]
    return [pb.CashFlowYear(year=year, **{field: float(values[field][year]) for field in fields})
            for year in range(1, term_years + 1)]
