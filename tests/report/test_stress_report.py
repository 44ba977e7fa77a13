"""The study report: stress scenarios, grid heatmap and tornado read as the result has them, from the file
``equihome-sim stress --json`` writes (the CLI's output round-trips through the report's reader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from equihome.study.v1 import study_pb2 as pb
from server.report.kinds import build_report, write_report
from server.report.simulation_view import IncompleteResult
from server.report.sources import read_file
from server.stress_cli import main as stress_main

SMALL_FUND = {"fund": {"size": 5_000_000, "deployment_target_fraction": 0.8},
              "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000},
              "monte_carlo": {"paths": 100, "chunk_paths": 100}}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("study")
    config = folder / "fund.json"
    config.write_text(json.dumps(SMALL_FUND))
    stress, tornado = folder / "stress.json", folder / "tornado.json"
    assert stress_main([str(config), "--preset", "mild_recession", "--preset", "financial_crisis",
                        "--grid", "price_shock=0,-0.3", "default_multiplier=1,2,4", "--json", str(stress)]) == 0
    assert stress_main([str(config), "--tornado", "interest_rate", "management_fee", "--metric", "lp_net_irr",
                        "--json", str(tornado)]) == 0
    return {"stress": stress, "tornado": tornado}


def test_the_stress_report_shows_each_scenario_change_and_the_grid(files: dict[str, Path]) -> None:
    study = read_file(files["stress"])
    assert isinstance(study, pb.Study)
    result = study.result.stress_test
    report = build_report(study)
    assert {s.key for s in report.sections} == {"scenarios", "dpi", "guardrails", "grid"}
    crisis = result.scenarios[1]
    irr = next(f for f in crisis.figures if f.figure == pb.STRESS_FIGURE_LP_NET_IRR)
    assert report.highlights[1].value == f"{irr.delta.value * 100:+.2f} pp LP IRR"
    heatmap = next(c for c in report.charts() if c.key == "grid").figure.data[0]
    assert list(heatmap.y) == ["0", "-0.3"] and list(heatmap.x) == ["1", "2", "4"]
    cell = result.grid.cells[1 * 3 + 2]  # price shock -0.3, default multiplier 4
    cell_irr = next(f for f in cell.figures if f.figure == pb.STRESS_FIGURE_LP_NET_IRR)
    assert heatmap.z[1][2] == pytest.approx(cell_irr.delta.value * 100)
    assert heatmap.z[0][0] == 0.0  # the neutral corner is the base itself
    bars = next(c for c in report.charts() if c.key == "scenario-0").figure.data[0]
    assert list(bars.x) == ["mild_recession", "financial_crisis"]
    assert bars.error_y.array[1] == pytest.approx((irr.delta.ci_high - irr.delta.value) * 100)


def test_the_tornado_report_orders_bars_by_swing(files: dict[str, Path]) -> None:
    study = read_file(files["tornado"])
    report = build_report(study)
    bars = study.result.sensitivity.bars
    assert bars[0].swing >= bars[1].swing
    chart = report.charts()[0].figure
    top = chart.data[1]  # "parameter up", drawn bottom to top: the largest swing last
    assert list(top.x)[::-1] == [bar.high.delta.value for bar in bars]


def test_a_study_without_result_has_no_report(tmp_path: Path) -> None:
    with pytest.raises(IncompleteResult):
        write_report(pb.Study(state=pb.Study.STATE_RUNNING), tmp_path / "x.html")


def test_the_report_file_is_written_and_offline(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "stress.html"
    write_report(read_file(files["stress"]), out)
    page = out.read_text()
    assert "financial_crisis" in page and "<script src" not in page
    assert "default-src 'none'" in page  # the page's CSP forbids any fetch
