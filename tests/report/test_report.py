"""The report's content: numbers as the result has them, in their units, every contract field shown, and
a page that cannot reach the network or run a script smuggled in through a name."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from equihome.simulation.v1 import simulation_pb2, simulation_result_pb2
from equihome.simulation.v1 import simulation_service_pb2 as service_pb2
from server.mapping.engine_json import EngineJsonError, engine_document, engine_result
from server.mapping.result import result_to_proto
from server.report import catalogue
from server.report.kinds import build_report, write_report
from server.report.page import Table, render_html
from server.report.simulation_view import IncompleteResult
from server.report.sources import SourceError, read_file
from server.report.units import Unit, Units
from server.report_cli import main as report_main
from simulation.config import load_config
from simulation.engine import run

AUD = Units("AUD")
Simulation = simulation_pb2.Simulation


def test_units_write_every_kind_of_number_with_its_unit() -> None:
    assert AUD.format(0.0721, Unit.PERCENT) == "7.21%"
    assert AUD.format(1.6225, Unit.MULTIPLE) == "1.62x"
    assert AUD.format(12_345_678, Unit.MONEY) == "AUD 12.35M"
    assert AUD.format(-4_081_000, Unit.MONEY) == "AUD -4.08M"
    assert AUD.format(950, Unit.MONEY) == "AUD 950"
    assert AUD.format(2_500_000_000, Unit.MONEY) == "AUD 2.50B"
    assert AUD.format(9.7455, Unit.YEARS) == "9.75 years"
    assert AUD.format(442.0, Unit.COUNT) == "442"
    assert AUD.format(math.nan, Unit.PERCENT) == "n/a"
    assert AUD.estimate(0.0721, 0.00109, Unit.PERCENT) == "7.21% ± 0.11%"
    assert AUD.estimate(1.6225, 0.00231, Unit.MULTIPLE) == "1.62x ± 0.0023x"
    assert AUD.estimate(5_440_000, 474_120, Unit.MONEY) == "AUD 5.44M ± 474.12k"
    assert Units("EUR").format(1e6, Unit.MONEY) == "EUR 1.00M"


def test_the_engine_json_maps_to_the_same_contract_result_as_the_run_itself(
    engine_json: dict[str, Any],
) -> None:
    """simulate --json → engine result → proto equals what the server would send for the same run."""
    config = load_config(engine_json["config"])
    direct = result_to_proto(run(config), config)
    result, read_config = engine_result(engine_json)
    from_file = result_to_proto(result, read_config)
    direct.metadata.ClearField("elapsed")
    from_file.metadata.ClearField("elapsed")
    assert from_file.SerializeToString(deterministic=True) == direct.SerializeToString(deterministic=True)


def test_an_engine_json_without_its_config_or_a_field_is_refused_with_the_field_named(
    engine_json: dict[str, Any],
) -> None:
    without_config = {key: value for key, value in engine_json.items() if key != "config"}
    with pytest.raises(EngineJsonError, match="config"):
        engine_result(without_config)
    broken = copy.deepcopy(engine_json)
    del broken["info"]["seed"]
    with pytest.raises(EngineJsonError, match=r"result\.info\.seed is missing"):
        engine_result(broken)
    broken = copy.deepcopy(engine_json)
    broken["risk"]["sharpe"] = "high"
    with pytest.raises(EngineJsonError, match=r"result\.risk\.sharpe: expected float"):
        engine_result(broken)


def test_the_report_shows_the_results_numbers_in_their_units(result_file: Path) -> None:
    simulation = read_file(result_file)
    html = render_html(build_report(simulation))
    result, config = simulation.result, simulation.effective_config
    text = _visible_text(html)
    irr = result.metrics.lp_net_irr
    assert f"{irr.mean * 100:.2f}% ± {irr.ci95_half_width * 100:.2g}%" in text
    assert f"{result.risk.prob_hurdle * 100:.2f}%" in text
    assert f"hurdle {config.waterfall.hurdle_rate * 100:.2f}%" in html  # the marker on the IRR histogram
    # The carry share of distributions, from the primitive yearly flows.
    carry = sum(year.carried_interest for year in result.cash_flows)
    paid = sum(year.distributions for year in result.cash_flows)
    assert f"{carry / paid * 100:.2f}%" in text
    # The J-curve's trough: the lowest median of the cumulative LP net cash flow, and its year.
    trough = min(result.fan_chart, key=lambda fan: fan.cumulative_lp_net_cash.p50)
    assert (
        f"the trough is AUD {trough.cumulative_lp_net_cash.p50 / 1e6:,.2f}M at the end of year {trough.year}"
    ) in text
    # Money in the yearly table is in millions, as its caption says.
    first = result.cash_flows[0]
    assert f"<td>{first.contributions / 1e6:,.2f}</td>" in html
    assert "AUD millions" in text


def test_every_contract_field_has_a_label_and_a_unit() -> None:
    """A metric, risk measure or cash-flow line added to the contract must be named in the report."""
    catalogues = {
        simulation_result_pb2.MetricSummaries: catalogue.METRICS,
        simulation_result_pb2.RiskMetrics: catalogue.RISK,
        simulation_result_pb2.CashFlowYear: catalogue.CASH_FLOWS,
    }
    for message, labels in catalogues.items():
        fields = {field.name for field in message.DESCRIPTOR.fields} - set(catalogue.NOT_FIGURES)
        assert fields == set(labels), message.DESCRIPTOR.name


def test_the_simulation_view_has_at_least_six_charts_each_with_data(result_file: Path) -> None:
    report = build_report(read_file(result_file))
    charts = report.charts()
    assert len(charts) >= 6
    assert len({chart.key for chart in charts}) == len(charts)
    for chart in charts:
        assert chart.figure.data, chart.key
    keys = {chart.key for chart in charts}
    assert {"j-curve", "multiples", "irr-histogram", "moic-histogram", "split", "nav", "credit"} <= keys
    tables = [block for section in report.sections for block in section.blocks if isinstance(block, Table)]
    assert all(len(row) == len(table.columns) for table in tables for row in table.rows)


def test_the_page_loads_nothing_and_escapes_names(result_file: Path, tmp_path: Path) -> None:
    simulation = read_file(result_file)
    hostile = '</script><script>alert("x")</script><img src="http://example.com/x.png">'
    simulation.display_name = hostile
    simulation.portfolio_id = hostile
    simulation.result.concentration.region_shares[0].region = hostile
    html = render_html(build_report(simulation))
    assert hostile not in html
    assert "<script>alert" not in html and "<img" not in html
    assert not re.search(
        r"""<(script|img|link|iframe)[^>]+(src|href)\s*=\s*["']?(https?:)?//""", html, re.IGNORECASE
    )
    assert "default-src 'none'" in html  # the page's CSP forbids any fetch


def test_a_result_saved_from_the_api_reads_like_the_engine_json(result_file: Path, tmp_path: Path) -> None:
    simulation = read_file(result_file)
    simulation.name = "simulations/0b6f0a39-6f8e-4a43-a3a4-2b1b8e1f4e55"
    response = service_pb2.GetSimulationResponse(simulation=simulation)
    saved = tmp_path / "get_simulation.json"
    saved.write_text(json_format.MessageToJson(response))
    assert read_file(saved) == simulation
    bare = tmp_path / "simulation.json"
    bare.write_text(json_format.MessageToJson(simulation))
    assert read_file(bare) == simulation


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read"),
        ("[1, 2]", "not a result object"),
        ('{"simulation": {"state": "STATE_NOPE"}}', "neither the output of"),
    ],
)
def test_a_file_that_is_not_a_result_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "input.json"
    path.write_text(content)
    with pytest.raises(SourceError, match=message):
        read_file(path)


def test_only_a_succeeded_run_with_its_config_has_a_report(result_file: Path) -> None:
    simulation = read_file(result_file)
    running = Simulation(name="simulations/x", state=Simulation.STATE_RUNNING)
    with pytest.raises(IncompleteResult, match="STATE_RUNNING"):
        build_report(running)
    simulation.ClearField("effective_config")
    with pytest.raises(IncompleteResult, match="SUMMARY"):
        build_report(simulation)


def test_the_report_command_writes_one_file(result_file: Path, tmp_path: Path, capsys: Any) -> None:
    assert report_main([str(result_file)]) == 0
    output = result_file.with_suffix(".html")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([result_file.name, output.name])
    assert "report written to" in capsys.readouterr().out
    assert report_main([str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_money_is_in_the_funds_currency(engine_json: dict[str, Any], tmp_path: Path) -> None:
    config = load_config(
        copy.deepcopy(engine_json["config"]) | {"fund": engine_json["config"]["fund"] | {"currency": "EUR"}}
    )
    path = tmp_path / "euro_fund.json"
    path.write_text(json.dumps(engine_document(run(config), config)))
    text = _visible_text(render_html(build_report(read_file(path))))
    assert "money in EUR" in text and "EUR millions" in text and "AUD" not in text


def test_write_report_returns_what_it_wrote(result_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.html"
    report = write_report(read_file(result_file), output)
    html = output.read_text()
    assert all(f'id="chart-{chart.key}"' in html for chart in report.charts())
    assert html.count('<figure class="chart"') == len(report.charts())


def _visible_text(html: str) -> str:
    body = html.split("</head>", 1)[1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def test_result_json_fixture_is_plain_json(engine_json: dict[str, Any]) -> None:
    json.dumps(engine_json, allow_nan=False)  # NaN is written as null, so any JSON reader can read it


def test_a_stressed_run_says_what_the_stress_is(result_file: Path) -> None:
    simulation = read_file(result_file)
    assert "Stress scenario" not in _visible_text(render_html(build_report(simulation)))
    simulation.effective_config.stress.price_shock.red = -0.3
    simulation.effective_config.stress.price_shock_month = 24
    simulation.effective_config.stress.default_multiplier.orange = 2.0
    text = _visible_text(render_html(build_report(simulation)))
    assert "Stress scenario price_shock red -0.3; price_shock_month 24; default_multiplier orange 2" in text
