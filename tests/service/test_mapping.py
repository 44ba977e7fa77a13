"""The pure mapping between the contract and the engine: configs both ways, results, resource views."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from equihome.simulation.v1 import simulation_config_pb2 as config_pb2
from equihome.simulation.v1 import simulation_pb2
from equihome.simulation.v1 import simulation_result_pb2 as result_pb2
from server import errors
from server.mapping.config import config_to_engine, engine_to_config, field_path, load_engine_config
from server.mapping.result import config_sha256, result_to_proto
from server.mapping.simulation import (
    RUN_PARALLELISM,
    chunks_done,
    sequence,
    simulation_failed,
    simulation_spec,
    simulation_view,
)
from server.store import RunRecord, RunState
from simulation import engine
from simulation.config import Market, SimulationConfig, load_config
from simulation.results import SimulationResult
from tests.service.conftest import SMALL_FUND

Simulation = simulation_pb2.Simulation
BASIC, SUMMARY, FULL = (
    simulation_pb2.SIMULATION_VIEW_BASIC,
    simulation_pb2.SIMULATION_VIEW_SUMMARY,
    simulation_pb2.SIMULATION_VIEW_FULL,
)


def proto_config(data: dict[str, Any]) -> config_pb2.SimulationConfig:
    return json_format.ParseDict(data, config_pb2.SimulationConfig())


# --- Config -----------------------------------------------------------------------------------------


def test_an_empty_config_is_every_engine_default() -> None:
    assert config_to_engine(config_pb2.SimulationConfig()) == {}
    assert load_engine_config(config_pb2.SimulationConfig(), "config") == SimulationConfig()


def test_enums_become_engine_strings_and_unspecified_means_default() -> None:
    message = proto_config(
        {"fees": {"management_fee_basis": "FEE_BASIS_NAV", "expense_basis": "FEE_BASIS_UNSPECIFIED"}}
    )

    assert config_to_engine(message) == {"fees": {"management_fee_basis": "nav"}}


def test_a_zone_market_rate_changes_alone() -> None:
    config = load_engine_config(proto_config({"market": {"red": {"vol": 0.2}}}), "config")

    assert config.market.red == Market().red.model_copy(update={"vol": 0.2})
    assert config.market.green == Market().green


def test_tiered_shares_default_when_empty_and_are_taken_as_given_otherwise() -> None:
    one_tier = load_engine_config(proto_config({"loans": {"tiered": {"shares": [0.3]}}}), "config")
    with pytest.raises(errors.InvalidArgument) as mismatched:
        load_engine_config(proto_config({"loans": {"tiered": {"thresholds": [0.5]}}}), "config")

    assert config_to_engine(proto_config({"loans": {"tiered": {}}})) == {"loans": {"tiered": {}}}
    assert (one_tier.loans.tiered.thresholds, one_tier.loans.tiered.shares) == ((), (0.3,))
    assert [field for field, _ in mismatched.value.field_violations] == ["config.loans.tiered.shares"]


def test_required_scalars_are_read_even_when_zero() -> None:
    schedule = [{"fraction": 1.0}]  # year 0
    message = proto_config(
        {"fund": {"capital_call_mode": "CAPITAL_CALL_MODE_SCHEDULE", "capital_call_schedule": schedule}}
    )

    assert config_to_engine(message)["fund"]["capital_call_schedule"] == [{"year": 0.0, "fraction": 1.0}]
    assert load_engine_config(message, "config").fund.capital_call_schedule[0].year == 0.0


def test_violations_name_request_paths() -> None:
    message = proto_config({"fees": {"expense_rate": 0.9}})
    message.fund.deployment_pace = 99  # a value this server does not know
    message.book.loans.add(id="a", amount=1, property_value=2, region="sydney_north")

    with pytest.raises(errors.InvalidArgument) as invalid:
        load_engine_config(message, "simulation.config")

    assert invalid.value.reason == "CONFIG_INVALID"
    assert {field for field, _ in invalid.value.field_violations} == {
        "simulation.config.fees.expense_rate",
        "simulation.config.fund.deployment_pace",
        "simulation.config.book.loans[0].zone",
    }
    assert field_path("config", "config") == "config"  # a violation of the config as a whole


def test_the_effective_config_round_trips_over_the_wire() -> None:
    original = load_config(SMALL_FUND | {"loans": {"appreciation_share_method": "tiered"}})

    wire = config_pb2.SimulationConfig.FromString(engine_to_config(original).SerializeToString())

    assert load_config(config_to_engine(wire)) == original
    assert wire.loans.appreciation_share_method == config_pb2.SHARE_METHOD_TIERED


# --- Result -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run() -> tuple[SimulationConfig, SimulationResult]:
    """A real small run in which every path has a NaN GP IRR (no GP commitment, so no GP outflow)."""
    config = load_config(SMALL_FUND | {"fund": SMALL_FUND["fund"] | {"gp_commitment": 0.0}})
    return config, engine.run(config, keep_paths=True)


def test_metric_summaries_equal_the_engine(run: tuple[SimulationConfig, SimulationResult]) -> None:
    config, result = run
    message = result_pb2.SimulationResult.FromString(result_to_proto(result, config).SerializeToString())

    for field in result_pb2.MetricSummaries.DESCRIPTOR.fields:
        summary, expected = getattr(message.metrics, field.name), result.metrics[field.name]
        assert (summary.count, summary.nan_count) == (expected.count, expected.nan_count), field.name
        np.testing.assert_array_equal(
            [summary.mean, summary.std, summary.min, summary.max, summary.standard_error],
            [expected.mean, expected.std, expected.min, expected.max, expected.standard_error],
        )
        quantiles = {q.percentile: q.value for q in summary.quantiles}
        assert quantiles == pytest.approx(expected.quantiles, nan_ok=True)
    assert message.metadata.paths == 300 and message.metadata.config_sha256 == config_sha256(config)
    assert message.metadata.chunks == len(engine.chunks(config)) == result.info.chunks


def test_nan_stays_nan_with_its_reasons(run: tuple[SimulationConfig, SimulationResult]) -> None:
    config, result = run
    message = result_pb2.SimulationResult.FromString(result_to_proto(result, config).SerializeToString())

    gp_irr = message.metrics.gp_irr
    assert gp_irr.nan_count == 300 and math.isnan(gp_irr.mean) and math.isnan(gp_irr.max)
    reasons = {reason.reason: reason.count for reason in gp_irr.nan_reasons}
    expected = result.irr_nan_reasons["gp_irr"]
    assert reasons == {
        result_pb2.NAN_REASON_NO_OUTFLOW: expected.get("no_outflow", 0),
        result_pb2.NAN_REASON_OTHER: expected.get("empty", 0),
    }
    assert sum(reasons.values()) == 300
    # every loan funded (initial and recycled) is some zone's exposure: the zones add up to the originations
    funded_per_path = sum(result.cashflows["initial_originations"]) + sum(result.cashflows["recycled_originations"])
    assert sum(zone.exposure for zone in message.credit) == pytest.approx(funded_per_path, rel=1e-12)
    assert np.isnan(list(message.path_detail.gp_irr)).all()


def test_yearly_tables_keep_every_flow(run: tuple[SimulationConfig, SimulationResult]) -> None:
    config, result = run
    message = result_to_proto(result, config)

    years = config.fund.term_years
    assert [row.year for row in message.cash_flows] == list(range(1, years + 1))
    assert [fan.year for fan in message.fan_chart] == list(range(1, years + 1))
    contributions = [row.contributions for row in message.cash_flows]
    assert sum(contributions) == pytest.approx(result.cashflows["contributions"].sum())
    assert message.cash_flows[-1].nav == result.cashflows["nav"][-1]
    assert message.fan_chart[4].tvpi.p50 == result.fan_charts["lp_tvpi"].values[2, 5]
    assert message.credit[0].loan_count == result.credit[0].loans / 300
    assert message.risk.irr_var_99 == result.risk.tails[1].irr_var
    assert message.risk.standard_errors.sharpe == result.risk.standard_errors.sharpe > 0
    assert message.metadata.currency == "AUD"


def test_every_year_of_the_cash_flow_table_closes(run: tuple[SimulationConfig, SimulationResult]) -> None:
    """A reader can add the table up: each year's sources less uses is the change in year-end cash."""
    config, result = run
    message = result_to_proto(result, config)

    previous_cash = 0.0
    for row in message.cash_flows:
        sources = row.contributions + row.exit_proceeds + row.recoveries + row.cash_interest + row.fee_income
        uses = (row.initial_originations + row.recycled_originations + row.management_fees + row.expenses
                + row.distributions)
        assert sources - uses == pytest.approx(row.cash_end - previous_cash, abs=0.01), row.year
        recipients = row.distributions_lp + row.distributions_gp_commitment + row.carried_interest
        assert recipients == pytest.approx(row.distributions, abs=0.01), row.year
        previous_cash = row.cash_end
    assert previous_cash == pytest.approx(0.0, abs=0.01)


# --- Views ------------------------------------------------------------------------------------------


def spec_of(config: SimulationConfig) -> Simulation:
    sent = config_pb2.SimulationConfig()
    return simulation_spec(display_name="d", portfolio_id="p", config_sent=sent, config=config)


def stored(config: SimulationConfig, result: bytes | None, state: RunState, done: int) -> RunRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    spec = spec_of(config)
    return RunRecord(
        name="simulations/x", owner="alice", portfolio_id="p", state=state, progress_done=done,
        progress_total=engine.path_count(config), config=spec.SerializeToString(), result=result, error=None,
        request_id=None, request_hash=None, create_time=now, update_time=now, start_time=now,
        end_time=now + timedelta(seconds=2) if state.terminal else None,
    )  # fmt: skip


def test_views_carry_what_they_promise(run: tuple[SimulationConfig, SimulationResult]) -> None:
    config, result = run
    record = stored(config, result_to_proto(result, config).SerializeToString(), RunState.SUCCEEDED, 300)

    basic, summary, full = (simulation_view(record, view) for view in (BASIC, SUMMARY, FULL))

    assert not basic.HasField("result") and not basic.HasField("config")
    assert basic.progress.paths_completed == 300
    assert summary.HasField("effective_config") and not summary.result.HasField("path_detail")
    assert summary.expire_time.ToDatetime(UTC) == datetime(2026, 1, 8, 0, 0, 2, tzinfo=UTC)
    np.testing.assert_array_equal(full.result.path_detail.lp_net_irr, result.paths["lp_net_irr"])
    assert summary.progress.elapsed.seconds == 2 and summary.state == Simulation.STATE_SUCCEEDED


def test_the_full_view_of_a_large_run_is_refused() -> None:
    record = stored(load_config({"monte_carlo": {"paths": 25_001}}), None, RunState.RUNNING, 0)

    with pytest.raises(errors.FailedPrecondition) as refused:
        simulation_view(record, FULL)

    assert refused.value.reason == "RESULT_TOO_LARGE"
    assert simulation_view(record, SUMMARY).state == Simulation.STATE_RUNNING


def test_terminal_errors_follow_the_state() -> None:
    config = load_config({})
    failure = errors.to_status(simulation_failed("simulations/x")).SerializeToString()
    failed = simulation_view(replace(stored(config, None, RunState.FAILED, 0), error=failure), BASIC)
    cancelled = simulation_view(stored(config, None, RunState.CANCELLED, 0), BASIC)
    interrupted = simulation_view(stored(config, None, RunState.INTERRUPTED, 0), BASIC)
    succeeded = simulation_view(stored(config, None, RunState.SUCCEEDED, 0), BASIC)

    failed_info = error_details_pb2.ErrorInfo()
    assert failed.error.details[0].Unpack(failed_info)
    assert (failed.error.code, failed_info.reason) == (grpc.StatusCode.INTERNAL.value[0], "SIMULATION_FAILED")
    assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert interrupted.error.code == grpc.StatusCode.ABORTED.value[0]
    assert not succeeded.HasField("error")


@pytest.mark.parametrize("paths", [1, 49, 50, 999, 1000, 1001, 4321])
@pytest.mark.parametrize("chunk_paths", [1, 60, 333, 1000])
def test_chunks_are_counted_exactly_from_paths(paths: int, chunk_paths: int) -> None:
    config = load_config({"monte_carlo": {"paths": paths, "chunk_paths": chunk_paths}})
    spec = spec_of(config)
    done = 0
    for index, (_, size) in enumerate(engine.chunks(config, RUN_PARALLELISM)):
        assert chunks_done(spec, done) == index
        done += size
    assert chunks_done(spec, done) == spec.progress.chunks_total


def test_sequences_grow_with_the_run() -> None:
    config = load_config({"monte_carlo": {"paths": 300, "chunk_paths": 100}})
    states = [(RunState.PENDING, 0), (RunState.RUNNING, 0), (RunState.RUNNING, 100), (RunState.RUNNING, 300),
              (RunState.CANCELLED, 200)]  # fmt: skip

    numbers = [sequence(simulation_view(stored(config, None, state, done), BASIC)) for state, done in states]

    assert numbers == sorted(set(numbers))
