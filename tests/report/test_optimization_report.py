"""The report of an optimisation: the frontier with the recommendation marked, the allocation before and
after with the actions, and the surrogate and re-simulated figures, read from a saved GetOptimization."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from google.protobuf import json_format

from equihome.optimization.v1 import optimization_service_pb2 as pb
from server.mapping.optimization import optimization_proto
from server.report.kinds import build_report, kind_of
from server.report.optimization_view import IncompleteOptimization
from server.report.page import render_html
from server.report.sources import read_file
from server.report.units import Unit, Units
from simulation.config import load_config
from simulation.optimize.run import optimize
from simulation.optimize.spec import Request
from tests.service.conftest import SMALL_FUND


@pytest.fixture(scope="module")
def optimization() -> pb.Optimization:
    data = copy.deepcopy(SMALL_FUND)
    data["monte_carlo"]["paths"] = 200
    config = load_config(data)
    message = optimization_proto(
        optimize(config, Request(frontier_points=8)), config, engine_version="test", elapsed_seconds=1.5
    )
    message.optimization_id = "optimization_" + "a" * 32
    return message


def visible_text(html: str) -> str:
    body = re.sub(r"<script.*?</script>", " ", html, flags=re.DOTALL)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def test_a_saved_get_optimization_response_is_reported(tmp_path: Path, optimization: pb.Optimization) -> None:
    path = tmp_path / "optimization.json"
    path.write_text(json.dumps({"optimization": json_format.MessageToDict(optimization)}))
    message = read_file(path)
    assert kind_of(message).name == "optimization" and message == optimization
    report = build_report(message)
    html = render_html(report)
    text = visible_text(html)
    target = optimization.recommended.weights
    assert f"{target.green * 100:.2f}% / {target.orange * 100:.2f}% / {target.red * 100:.2f}%" in text
    resimulated, gap = optimization.recommended.resimulated, optimization.recommended.gap
    assert (
        f"{resimulated.expected_return * 100:.2f}%" in text
        and f"gap {gap.expected_return * 100:.2f}%" in text
    )
    assert optimization.recommendation.actions
    for action in optimization.recommendation.actions:
        assert Units("AUD").format(action.amount, Unit.MONEY) in text
    frontier_chart = next(chart for chart in report.charts() if chart.key == "frontier")
    names = [trace.name for trace in frontier_chart.figure.data]
    assert names == ["efficient frontier", "recommendation", "current book", "maximum Sharpe", "minimum risk"]
    assert len(frontier_chart.figure.data[0].x) == len(optimization.frontier) == 8
    star = frontier_chart.figure.data[1]
    assert (star.x[0], star.y[0]) == (
        optimization.recommended.surrogate.volatility,
        optimization.recommended.surrogate.expected_return,
    )
    allocation = next(chart for chart in report.charts() if chart.key == "allocation")
    current = optimization.current.weights
    assert list(allocation.figure.data[0].y) == [current.green, current.orange, current.red]
    assert list(allocation.figure.data[1].y) == [target.green, target.orange, target.red]


def test_an_optimisation_without_its_result_is_refused(optimization: pb.Optimization) -> None:
    with pytest.raises(IncompleteOptimization):
        build_report(pb.Optimization(optimization_id=optimization.optimization_id))
