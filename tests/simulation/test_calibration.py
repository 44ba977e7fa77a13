"""The configured rates hold in the simulated fund: default PDs and the median voluntary exit.

The market links defaults to price drawdowns and exits to appreciation; both links only move events
between paths. These checks compare what the simulated loans do with what the config says, on the
default market, where the links are strong enough to matter (domain §1.4, §1.5).
"""

from __future__ import annotations

import numpy as np

from simulation import engine, lifecycle
from simulation.config import load_config

ZONE_PD = {"green": 0.005, "orange": 0.0125, "red": 0.02}


def test_realised_annual_pd_per_zone_matches_the_configured_hazard():
    """Defaults per loan-year on the book, by zone, on the default fund (1,000 paths, seed 3)."""
    result = engine.run(load_config({"monte_carlo": {"paths": 1000, "seed": 3}}))
    for credit in result.credit:
        assert abs(credit.pd_annual / ZONE_PD[credit.zone] - 1.0) < 0.15, (credit.zone, credit.pd_annual)


def test_realised_median_voluntary_exit_is_the_configured_exit_year():
    """Without defaults, recycling or maturity in the way, half of the loans have left by the 84th month
    after origination (avg_exit_year 7) in every zone, on 2,000 stochastic market paths."""
    config = load_config({
        "fund": {"term_years": 30, "reinvestment_period_years": 0},
        "loans": {"term_months": 360},
        "market": {zone: {"drift": drift, "vol": vol, "default_hazard": 0.0, "recovery_haircut": 0.9}
                   for zone, drift, vol in (("green", 0.055, 0.075), ("orange", 0.044, 0.09),
                                            ("red", 0.037, 0.105))},
        "monte_carlo": {"paths": 2000, "seed": 5},
    })
    params = lifecycle.ModelParams.from_config(config)
    _, outcomes = lifecycle.run_lifecycles(params, engine.book_for(config), 0, 2000)
    initial = outcomes[0]
    age = initial.event_month - initial.loans.origination
    for zone in range(3):
        share_gone = np.mean(age[initial.loans.zone == zone] <= 84)
        assert abs(share_gone - 0.5) < 0.02, (zone, share_gone)
