"""``equihome-sim optimize`` on a config file: tables on stdout, the Optimization as JSON, refusals named."""

from __future__ import annotations

import json
from pathlib import Path

from server.optimize_cli import main

SMALL = {
    "fund": {"size": 5_000_000, "deployment_target_fraction": 0.8},
    "fees": {"fixed_expenses": 10_000, "organisation_costs": 20_000},
    "monte_carlo": {"paths": 200},
}


def test_a_config_file_is_optimised_here_and_written_as_json(tmp_path: Path, capsys) -> None:
    config, out = tmp_path / "fund.json", tmp_path / "optimization.json"
    config.write_text(json.dumps(SMALL))
    assert main([str(config), "--frontier-points", "5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "efficient frontier" in printed and "re-simulated" in printed
    written = json.loads(out.read_text())
    target = written["recommendation"]["targetAllocation"]
    assert abs(sum(target.get(zone, 0.0) for zone in ("green", "orange", "red")) - 1.0) < 1e-9
    assert len(written["frontier"]) == 5 and written["paths"] == "200"


def test_bad_options_and_configs_are_refused_with_the_field_named(tmp_path: Path, capsys) -> None:
    config = tmp_path / "fund.json"
    config.write_text(json.dumps(SMALL))
    assert main([str(config), "--max-zone-hhi", "0.1"]) == 2
    assert "max_zone_hhi" in capsys.readouterr().err
    config.write_text(json.dumps({"fees": {"management_fee_rate": 0.5}}))
    assert main([str(config)]) == 2
    assert "fees.management_fee_rate" in capsys.readouterr().err
