"""The baseline the benchmark compares against: the same loan model as a per-loan, per-month
Python loop (how the fund's earlier engines were written), on a small sample of paths."""

from __future__ import annotations

import math
import random

import numpy as np

from simulation.book import LoanBook
from simulation.lifecycle import ModelParams

DT = 1.0 / 12.0


def simulate_path(params: ModelParams, book: LoanBook, rng: random.Random) -> list[float]:
    """Monthly gross cash flows of one path: index paths, then each loan month by month."""
    cfg, months = params.config, params.months
    factor = np.linalg.cholesky(cfg.market.correlation.matrix()).tolist()
    log_index = [[0.0] * 3]
    for _ in range(months):
        z = [rng.gauss(0.0, 1.0) for _ in range(3)]
        shocks = [sum(factor[i][k] * z[k] for k in range(3)) for i in range(3)]
        log_index.append([
            log_index[-1][i] + (math.log1p(params.drift[i]) - 0.5 * params.vol[i] ** 2) * DT
            + params.vol[i] * math.sqrt(DT) * shocks[i] for i in range(3)])
    flows = [0.0] * (months + 1)
    beta_a, beta_d = cfg.market.exit_appreciation_sensitivity, cfg.market.default_drawdown_sensitivity
    for i in range(len(book)):
        zone, start = int(book.zone[i]), int(book.origination_month[i])
        amount, value0, rate = float(book.amount[i]), float(book.value0[i]), float(book.rate[i])
        flows[start] -= amount
        peak = log_index[start][zone]
        for month in range(start + 1, months + 1):
            level = log_index[month - 1][zone]
            peak = max(peak, level)
            age = month - start
            exit_rate = params.exit_hazard[zone] * math.exp(beta_a * (level - log_index[start][zone]))
            p_exit = 1.0 - math.exp(-exit_rate * DT) if age > params.min_hold_months else 0.0
            p_default = 1.0 - math.exp(-params.default_hazard[zone] * math.exp(-beta_d * (level - peak)) * DT)
            value = value0 * math.exp(log_index[month][zone] - log_index[start][zone])
            years = age / 12.0
            if rng.random() < p_default:
                recovery = min(amount * (1 + rate * years), value * (1 - cfg.market.foreclosure_cost))
                flows[min(month + cfg.market.foreclosure_months, months)] += recovery
                break
            if rng.random() < p_exit or age >= cfg.loans.term_months or month == months:
                gain = max(0.0, value - value0)
                flows[month] += min(amount * (1 + rate * years) + amount / value0 * gain, value)
                break
    return flows


def run(params: ModelParams, book: LoanBook, paths: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [simulate_path(params, book, rng) for _ in range(paths)]
