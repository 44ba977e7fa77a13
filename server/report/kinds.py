"""The kinds of result a report can show, each with its view.

A kind names the contract message that carries the result and the field that holds it in the API's
responses (``{"simulation": {...}}`` for GetSimulation, RunSimulation and CreateSimulation), so a
response saved from grpcurl is recognised as well as the bare message. Impact analyses and
stress tests add their kind here, with their view, once their results exist in the contract's services.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from equihome.impact.v1 import impact_analysis_pb2
from equihome.optimization.v1 import optimization_service_pb2
from equihome.simulation.v1 import simulation_pb2
from equihome.study.v1 import study_pb2
from server.report.impact_view import impact_report
from server.report.optimization_view import optimization_report
from server.report.page import Report, render_html
from server.report.simulation_view import simulation_report
from server.report.stress_view import study_report


@dataclass(frozen=True)
class ResultKind:
    name: str
    message: type[Message]
    response_field: str
    view: Callable[[Any], Report]  # the report of one result of this kind, in the result's own units


KINDS: tuple[ResultKind, ...] = (
    ResultKind("simulation", simulation_pb2.Simulation, "simulation", simulation_report),
    ResultKind("optimization", optimization_service_pb2.Optimization, "optimization", optimization_report),
    ResultKind("study", study_pb2.Study, "study", study_report),
    ResultKind("impact_analysis", impact_analysis_pb2.ImpactAnalysis, "analysis", impact_report),
)


def kind_of(message: Message) -> ResultKind:
    for kind in KINDS:
        if isinstance(message, kind.message):
            return kind
    raise TypeError(f"no report view for {message.DESCRIPTOR.full_name}")


def build_report(message: Message) -> Report:
    return kind_of(message).view(message)


def write_report(message: Message, path: Path) -> Report:
    """Render the report of ``message`` into ``path`` and return what it shows."""
    report = build_report(message)
    path.write_text(render_html(report), encoding="utf-8")
    return report
