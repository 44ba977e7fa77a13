"""A simulation job's own events for the event stream: progress while it runs, the headline when it ends."""

from __future__ import annotations

from equihome.events.v1 import event_pb2
from equihome.simulation.v1 import simulation_pb2
from equihome.type.v1 import metrics_pb2


def simulation_progressed(simulation: simulation_pb2.Simulation) -> event_pb2.SimulationProgressed:
    return event_pb2.SimulationProgressed(
        name=simulation.name, portfolio_id=simulation.portfolio_id, state=simulation.state,
        progress=simulation.progress, owner=simulation.owner,
    )


def simulation_completed(simulation: simulation_pb2.Simulation) -> event_pb2.SimulationCompleted:
    """``simulation`` in a view with its result (SUMMARY); metrics only when it SUCCEEDED."""
    event = event_pb2.SimulationCompleted(
        name=simulation.name, portfolio_id=simulation.portfolio_id, state=simulation.state,
        end_time=simulation.end_time, owner=simulation.owner,
    )
    if simulation.HasField("error"):
        event.error.CopyFrom(simulation.error)
    if simulation.state == simulation_pb2.Simulation.STATE_SUCCEEDED:
        event.metrics.CopyFrom(headline_metrics(simulation))
    return event


def headline_metrics(simulation: simulation_pb2.Simulation) -> metrics_pb2.PortfolioMetrics:
    """Means of the LP net figures and the across-path risk measures of a finished run."""
    metrics, risk = simulation.result.metrics, simulation.result.risk
    return metrics_pb2.PortfolioMetrics(
        irr=metrics.lp_net_irr.mean, equity_multiple=metrics.lp_moic.mean, roi=metrics.lp_roi.mean,
        sharpe_ratio=risk.sharpe, sortino_ratio=risk.sortino, var_95=risk.capital_var_95,
        var_99=risk.capital_var_99, cvar_95=risk.capital_cvar_95, cvar_99=risk.capital_cvar_99,
        volatility=risk.volatility, prob_hurdle=risk.prob_hurdle,
    )
