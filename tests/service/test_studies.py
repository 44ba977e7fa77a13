"""StudyService end to end: the real server on 127.0.0.1:0, spawned job workers, a SQLite file, dev tokens.

Numbers are checked against independent engine runs in this process (the engine is deterministic given
the seed, whatever the chunking), never against the service's own output.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, json_format

from equihome.events.v1 import event_pb2, event_service_pb2
from equihome.events.v1.event_service_pb2_grpc import EventServiceStub
from equihome.optimization.v1 import optimization_service_pb2 as optimization_pb
from equihome.simulation.v1 import simulation_config_pb2
from equihome.study.v1 import study_pb2 as pb
from equihome.study.v1 import study_service_pb2 as service_pb2
from equihome.study.v1.study_service_pb2_grpc import StudyServiceStub
from server.auth import ADMIN_SCOPE, SCOPES, issue_dev_token
from server.settings import Settings
from simulation import engine, scenarios
from simulation.config import load_config

from .conftest import SMALL_FUND, bearer, refusal, start_app

Study = pb.Study
PATHS = 200


def fund_config(paths: int = PATHS) -> Any:
    data = {**SMALL_FUND, "monte_carlo": {"paths": paths, "chunk_paths": 100}}
    return json_format.ParseDict(data, simulation_config_pb2.SimulationConfig())


def engine_config(paths: int = PATHS) -> Any:
    return load_config({**SMALL_FUND, "monte_carlo": {"paths": paths, "chunk_paths": 100}})


def crash_stress(shock: float = -0.25) -> Any:
    return json_format.ParseDict({"price_shock": {"green": shock, "orange": shock, "red": shock},
                                  "price_shock_month": 12}, simulation_config_pb2.Stress())


@dataclass
class Caller:
    stub: StudyServiceStub
    data_dir: Path
    subject: str = "alice"
    events: EventServiceStub | None = None

    def auth(self, *scopes: str) -> tuple[tuple[str, str], ...]:
        """A dev token of this subject with ``scopes`` (default: every scope but admin)."""
        default = [scope for scope in SCOPES if scope != ADMIN_SCOPE]
        return bearer(issue_dev_token(self.data_dir, scopes or default, subject=self.subject))

    def as_(self, subject: str) -> Caller:
        return Caller(self.stub, self.data_dir, subject, self.events)

    async def create(self, spec: pb.StudySpec, **fields: Any) -> Study:
        request = service_pb2.CreateStudyRequest(study=Study(spec=spec, display_name="t"), **fields)
        return (await self.stub.CreateStudy(request, metadata=self.auth())).study

    async def until_end(self, name: str) -> list[service_pb2.WatchStudyResponse]:
        request = service_pb2.WatchStudyRequest(name=name, min_update_interval=duration_pb2.Duration(nanos=100_000_000))
        return [m async for m in self.stub.WatchStudy(request, metadata=self.auth())]


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[Caller]:
    settings = Settings(port=0, metrics_enabled=False, data_dir=tmp_path / "data", grace_period_s=1.0,
                        max_concurrent_runs=2, max_queued_runs=2)
    app = await start_app(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Caller(StudyServiceStub(channel), settings.data_dir, events=EventServiceStub(channel))
    finally:
        await app.shutdown(grace=0)


def figure(scenario: pb.ScenarioResult, which: int) -> pb.FigureDelta:
    return next(f for f in scenario.figures if f.figure == which)


async def test_a_unary_stress_test_matches_two_independent_engine_runs(caller: Caller) -> None:
    custom = pb.Scenario(name="crash", description="prices -25 % at month 12", stress=crash_stress())
    spec = pb.StressTestSpec(config=fund_config(), presets=["severe_recession"], scenarios=[custom])
    result = (await caller.stub.RunStressTest(service_pb2.RunStressTestRequest(spec=spec), metadata=caller.auth(),
                                              timeout=60)).result
    assert [s.name for s in result.scenarios] == ["severe_recession", "crash"]
    assert result.paths == PATHS and result.seed == engine_config().monte_carlo.seed

    base = engine.run(engine_config(), keep_paths=True)
    stresses = [scenarios.PRESETS["severe_recession"].stress,
                load_config({"stress": json_format.MessageToDict(crash_stress(), preserving_proto_field_name=True)}).stress]
    for scenario, stress in zip(result.scenarios, stresses):
        stressed = engine.run(scenarios.stressed_config(engine_config(), stress), keep_paths=True)
        irr = figure(scenario, pb.STRESS_FIGURE_LP_NET_IRR)
        expected = stressed.metrics["lp_net_irr"].mean - base.metrics["lp_net_irr"].mean
        assert irr.delta.value == pytest.approx(expected, abs=1e-12)
        assert irr.delta.ci_low < irr.delta.value < irr.delta.ci_high < 0
        var = figure(scenario, pb.STRESS_FIGURE_CAPITAL_VAR_99)
        assert var.stressed == pytest.approx(stressed.risk.tails[1].capital_var, abs=1e-12)
        assert len(scenario.dpi_path) == 11 and len(scenario.guardrails) == 5
        assert len(scenario.figures) == len(pb.StressFigure.DESCRIPTOR.values) - 1
    assert result.scenarios[1].stress.price_shock.red == pytest.approx(-0.25)
    assert result.scenarios[1].stress.default_multiplier.red == 1.0  # unset parts of the stress keep defaults


async def test_a_study_job_runs_with_progress_and_belongs_to_its_owner(caller: Caller) -> None:
    grid = pb.StressGrid(x=pb.GridAxis(parameter=pb.GRID_PARAMETER_PRICE_SHOCK, values=[0.0, -0.3]),
                         y=pb.GridAxis(parameter=pb.GRID_PARAMETER_DEFAULT_MULTIPLIER, values=[1.0, 3.0]))
    spec = pb.StudySpec(stress_test=pb.StressTestSpec(config=fund_config(), presets=["mild_recession"], grid=grid))
    created = await caller.create(spec)
    assert created.state == Study.STATE_PENDING and created.owner == "alice"
    assert (created.progress.runs_total, created.progress.paths_total) == (6, 6 * PATHS)

    messages = await caller.until_end(created.name)
    sequences = [m.sequence for m in messages]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    final = messages[-1].study
    assert final.state == Study.STATE_SUCCEEDED and final.progress.paths_completed == 6 * PATHS
    result = final.result.stress_test
    assert [s.name for s in result.scenarios] == ["mild_recession"]
    assert len(result.grid.cells) == 4
    corner = figure(result.grid.cells[0], pb.STRESS_FIGURE_LP_NET_IRR)
    assert corner.delta.value == 0.0  # no shock and a multiplier of 1: the base itself
    worst = figure(result.grid.cells[3], pb.STRESS_FIGURE_LP_NET_IRR)
    assert worst.stressed < corner.stressed

    got = (await caller.stub.GetStudy(service_pb2.GetStudyRequest(name=created.name), metadata=caller.auth())).study
    assert got.result == final.result and got.expire_time.seconds > got.end_time.seconds
    listed = await caller.stub.ListStudies(service_pb2.ListStudiesRequest(), metadata=caller.auth())
    assert [s.name for s in listed.studies] == [created.name] and not listed.studies[0].HasField("result")

    bob = caller.as_("bob")
    details = await refusal(bob.stub.GetStudy(service_pb2.GetStudyRequest(name=created.name), metadata=bob.auth()))
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "STUDY_NOT_FOUND")
    details = await refusal(bob.stub.CancelStudy(service_pb2.CancelStudyRequest(name=created.name), metadata=bob.auth()))
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert not (await bob.stub.ListStudies(service_pb2.ListStudiesRequest(), metadata=bob.auth())).studies


async def test_request_ids_make_creates_idempotent_per_owner(caller: Caller) -> None:
    spec = pb.StudySpec(stress_test=pb.StressTestSpec(config=fund_config(100), presets=["mild_recession"]))
    key = str(uuid.uuid4())
    first = await caller.create(spec, request_id=key)
    again = await caller.create(spec, request_id=key)
    assert again.name == first.name
    other = await caller.as_("bob").create(spec, request_id=key)  # another owner's key space
    assert other.name != first.name
    changed = pb.StudySpec(stress_test=pb.StressTestSpec(config=fund_config(100), presets=["financial_crisis"]))
    details = await refusal(caller.stub.CreateStudy(
        service_pb2.CreateStudyRequest(study=Study(spec=changed), request_id=key), metadata=caller.auth()))
    assert details.reason == "REQUEST_ID_REUSED"
    await caller.until_end(first.name)
    await caller.as_("bob").until_end(other.name)


async def test_a_running_study_can_be_cancelled(caller: Caller) -> None:
    spec = pb.StudySpec(sensitivity=pb.SensitivitySpec(config=fund_config(20_000)))
    created = await caller.create(spec)
    call = caller.stub.WatchStudy(service_pb2.WatchStudyRequest(name=created.name), metadata=caller.auth())
    async for message in call:
        if message.study.progress.paths_completed > 0:
            break
    call.cancel()
    cancelled = (await caller.stub.CancelStudy(service_pb2.CancelStudyRequest(name=created.name),
                                               metadata=caller.auth())).study
    assert cancelled.state == Study.STATE_CANCELLED and cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert 0 < cancelled.progress.paths_completed < cancelled.progress.paths_total


async def test_an_optimization_study_recommends_a_mix_whose_resimulation_is_an_independent_engine_run(
        caller: Caller) -> None:
    request = optimization_pb.OptimizeAllocationRequest(base_config=fund_config(), frontier_points=20)
    created = await caller.create(pb.StudySpec(optimization=request))
    final = (await caller.until_end(created.name))[-1].study
    assert final.state == Study.STATE_SUCCEEDED, final.error
    recommendation = final.result.optimization.optimization.recommendation
    weights = recommendation.target_allocation
    assert math.isclose(weights.green + weights.orange + weights.red, 1.0, abs_tol=1e-9)
    bounds = {"green": (0.30, 0.80), "orange": (0.10, 0.50), "red": (0.00, 0.30)}  # the documented defaults
    for zone, (low, high) in bounds.items():
        assert low - 1e-7 <= getattr(weights, zone) <= high + 1e-7
    data = {**SMALL_FUND, "monte_carlo": {"paths": PATHS, "chunk_paths": 100},
            "book": {"generated": {"zone_allocation": {"green": weights.green, "orange": weights.orange,
                                                       "red": weights.red}}}}
    independent = engine.run(load_config(data)).metrics["lp_net_irr"].mean
    assert math.isclose(recommendation.expected_metrics.irr, independent, rel_tol=1e-12, abs_tol=1e-15)


async def test_an_optimization_study_names_what_it_refuses_and_fails_the_precondition_it_cannot_meet(
        caller: Caller) -> None:
    live = optimization_pb.OptimizeAllocationRequest(portfolio_id="portfolio_456", base_config=fund_config())
    details = await refusal(caller.stub.CreateStudy(
        service_pb2.CreateStudyRequest(study=Study(spec=pb.StudySpec(optimization=live))), metadata=caller.auth()))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details.bad_request.field_violations] == ["study.spec.optimization.portfolio_id"]
    bad = optimization_pb.OptimizeAllocationRequest(base_config=fund_config(), frontier_points=1)
    details = await refusal(caller.stub.CreateStudy(
        service_pb2.CreateStudyRequest(study=Study(spec=pb.StudySpec(optimization=bad))), metadata=caller.auth()))
    assert [v.field for v in details.bad_request.field_violations] == ["study.spec.optimization.frontier_points"]
    impossible = optimization_pb.OptimizeAllocationRequest(base_config=fund_config(), min_prob_hurdle=0.99)
    created = await caller.create(pb.StudySpec(optimization=impossible))
    final = (await caller.until_end(created.name))[-1].study
    assert final.state == Study.STATE_FAILED
    assert final.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "No allocation satisfies" in final.error.message


@pytest.mark.parametrize("spec, field", [
    (pb.StressTestSpec(presets=["apocalypse"]), "study.spec.stress_test.presets[0]"),
    (pb.StressTestSpec(scenarios=[pb.Scenario(name="x", stress=crash_stress(-2.0))]),
     "study.spec.stress_test.scenarios[0].stress.price_shock.green"),
    (pb.StressTestSpec(scenarios=[pb.Scenario(name="x")]), "study.spec.stress_test.scenarios[0].stress"),
    (pb.StressTestSpec(grid=pb.StressGrid(x=pb.GridAxis(parameter=pb.GRID_PARAMETER_PRICE_SHOCK, values=[0.0]),
                                          y=pb.GridAxis(parameter=pb.GRID_PARAMETER_PRICE_SHOCK, values=[0.1]))),
     "study.spec.stress_test.grid.y.parameter"),
    (pb.StressTestSpec(grid=pb.StressGrid(x=pb.GridAxis(parameter=pb.GRID_PARAMETER_PRICE_SHOCK, values=[-3.0]),
                                          y=pb.GridAxis(parameter=pb.GRID_PARAMETER_DRIFT_SHIFT, values=[0.0]))),
     "study.spec.stress_test.grid.x.values[0]"),
    (pb.StressTestSpec(), "study.spec.stress_test.presets"),
    (pb.SensitivitySpec(relative_change=1.5), "study.spec.sensitivity.relative_change"),
    (pb.SensitivitySpec(parameters=[pb.SENSITIVITY_PARAMETER_LTV, pb.SENSITIVITY_PARAMETER_LTV]),
     "study.spec.sensitivity.parameters"),
    (pb.SensitivitySpec(morris_budget_runs=5), "study.spec.sensitivity.morris_budget_runs"),
])
async def test_bad_specs_name_the_field(caller: Caller, spec: Any, field: str) -> None:
    kind = "stress_test" if isinstance(spec, pb.StressTestSpec) else "sensitivity"
    if not spec.HasField("config"):
        spec.config.CopyFrom(fund_config(100))
    request = service_pb2.CreateStudyRequest(study=Study(spec=pb.StudySpec(**{kind: spec})))
    details = await refusal(caller.stub.CreateStudy(request, metadata=caller.auth()))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [v.field for v in details.bad_request.field_violations], details.bad_request


async def test_the_unary_calls_refuse_large_studies_and_point_to_create_study(caller: Caller) -> None:
    spec = pb.SensitivitySpec(config=fund_config(20_000))  # 21 runs x 20,000 paths
    details = await refusal(caller.stub.RunSensitivity(service_pb2.RunSensitivityRequest(spec=spec),
                                                       metadata=caller.auth()))
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RUN_TOO_LARGE")
    assert "CreateStudy" in details.message
    assert details.bad_request.field_violations[0].field == "spec.config.monte_carlo.paths"


async def test_a_study_beyond_the_work_limit_is_refused_before_it_runs(caller: Caller) -> None:
    spec = pb.StudySpec(sensitivity=pb.SensitivitySpec(config=fund_config(1_000_000), morris_budget_runs=400))
    details = await refusal(caller.stub.CreateStudy(service_pb2.CreateStudyRequest(study=Study(spec=spec)),
                                                    metadata=caller.auth()))
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RUN_TOO_COSTLY")
    listed = await caller.stub.ListStudies(service_pb2.ListStudiesRequest(), metadata=caller.auth())
    assert not listed.studies


async def test_a_unary_sensitivity_reports_signs_known_by_construction(caller: Caller) -> None:
    spec = pb.SensitivitySpec(config=fund_config(), parameters=[pb.SENSITIVITY_PARAMETER_MANAGEMENT_FEE,
                                                                 pb.SENSITIVITY_PARAMETER_INTEREST_RATE],
                              metrics=[pb.SENSITIVITY_METRIC_LP_NET_IRR])
    result = (await caller.stub.RunSensitivity(service_pb2.RunSensitivityRequest(spec=spec), metadata=caller.auth(),
                                               timeout=60)).result
    bars = {bar.parameter: bar for bar in result.bars}
    assert bars[pb.SENSITIVITY_PARAMETER_MANAGEMENT_FEE].elasticity < 0
    assert bars[pb.SENSITIVITY_PARAMETER_INTEREST_RATE].elasticity > 0
    assert result.relative_change == pytest.approx(0.2) and not result.HasField("morris")
    assert all(math.isfinite(bar.swing) for bar in result.bars)


async def test_studies_need_the_study_scopes(caller: Caller) -> None:
    spec = pb.StressTestSpec(config=fund_config(100), presets=["mild_recession"])
    details = await refusal(caller.stub.RunStressTest(service_pb2.RunStressTestRequest(spec=spec),
                                                      metadata=caller.auth("study:read")))
    assert details.code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_finished_study_is_published_to_its_owner_only(caller: Caller) -> None:
    request = event_service_pb2.SubscribeEventsRequest(event_types=[event_pb2.EVENT_TYPE_STUDY_COMPLETED],
                                                       heartbeat_interval=duration_pb2.Duration(seconds=1))
    mine = caller.events.SubscribeEvents(request, metadata=caller.auth())
    bobs = caller.events.SubscribeEvents(request, metadata=caller.as_("bob").auth())
    for stream in (mine, bobs):
        assert (await asyncio.wait_for(stream.read(), timeout=30)).event.HasField("heartbeat")  # live
    created = await caller.create(pb.StudySpec(stress_test=pb.StressTestSpec(config=fund_config(100),
                                                                             presets=["mild_recession"])))

    async def next_study_event(stream):
        while (response := await stream.read()) is not grpc.aio.EOF:
            if response.event.HasField("study_completed"):
                return response.event.study_completed
        raise AssertionError("the stream ended")

    completed = await asyncio.wait_for(next_study_event(mine), timeout=60)
    final = (await caller.stub.GetStudy(service_pb2.GetStudyRequest(name=created.name), metadata=caller.auth())).study
    assert (completed.name, completed.kind, completed.state, completed.owner) == (
        created.name, "stress_test", Study.STATE_SUCCEEDED, "alice")
    assert completed.end_time == final.end_time
    with pytest.raises(asyncio.TimeoutError):  # bob hears heartbeats only
        await asyncio.wait_for(next_study_event(bobs), timeout=2)
    mine.cancel()
    bobs.cancel()


def test_the_contract_enums_name_exactly_the_engine_choices() -> None:
    from equihome.type.v1 import guardrail_pb2
    from server.mapping import study as mapping
    from simulation import sensitivity

    assert set(mapping.SENSITIVITY_PARAMETERS.values()) == set(sensitivity.PARAMETERS)
    assert set(mapping.SENSITIVITY_METRICS.values()) == set(sensitivity.METRICS)
    assert set(mapping.GRID_PARAMETERS.values()) == set(scenarios.GRID_AXES)
    assert set(mapping.STRESS_FIGURES) == set(scenarios.FIGURE_NAMES)
    for rail in scenarios.GUARDRAILS:
        guardrail_pb2.GuardrailRule.Value(f"GUARDRAIL_RULE_{rail.rule.upper()}")  # raises if the rule is unknown
