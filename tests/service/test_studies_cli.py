"""``equihome-sim stress``: scenarios from files and presets, readable tables, protobuf JSON, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from equihome.study.v1 import study_pb2 as pb
from server.stress_cli import main as stress_main
from simulation import engine
from simulation.config import load_config

SMALL_FUND = {"fund": {"size": 5_000_000, "deployment_target_fraction": 0.8},
              "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000},
              "monte_carlo": {"paths": 100, "chunk_paths": 100}}
CRASH = {"price_shock": {"green": -0.3, "orange": -0.3, "red": -0.3}, "price_shock_month": 12}


def test_a_custom_scenario_file_runs_against_the_base_and_matches_two_engine_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, scenario, out = tmp_path / "fund.json", tmp_path / "crash.json", tmp_path / "study.json"
    config.write_text(json.dumps(SMALL_FUND))
    scenario.write_text(json.dumps({"name": "crash", "description": "-30 % at month 12", "stress": CRASH}))
    assert stress_main([str(config), "--scenario", str(scenario), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "crash" in table and "Δ LP IRR" in table and "mild_recession" not in table  # presets only by default
    study = json_format.ParseDict(json.loads(out.read_text())["study"], pb.Study())
    (result,) = study.result.stress_test.scenarios
    irr = next(f for f in result.figures if f.figure == pb.STRESS_FIGURE_LP_NET_IRR)
    base = engine.run(load_config(SMALL_FUND))
    stressed = engine.run(load_config({**SMALL_FUND, "stress": CRASH}))
    assert irr.delta.value == pytest.approx(stressed.metrics["lp_net_irr"].mean - base.metrics["lp_net_irr"].mean,
                                            abs=1e-12)
    assert study.spec.stress_test.scenarios[0].stress.price_shock.red == pytest.approx(-0.3)


@pytest.mark.parametrize("arguments, message", [
    (["--grid", "price_shock=0,-0.1", "price_shock=0,-0.2"], "different parameters"),
    (["--grid", "zone_mix=0,1", "price_shock=0"], "unknown grid axis"),
    (["--tornado", "nonsense"], "parameters"),
    (["--paths", "0"], "monte_carlo.paths"),
])
def test_bad_requests_exit_2_and_say_why(tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str],
                                         message: str) -> None:
    config = tmp_path / "fund.json"
    config.write_text(json.dumps(SMALL_FUND))
    assert stress_main([str(config), *arguments]) == 2
    assert message in capsys.readouterr().err
