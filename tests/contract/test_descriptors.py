"""Contract checks on the generated descriptors of ``protos/equihome/**``.

They enforce what ``buf lint`` cannot: the AIP rules we adopted (field_behavior everywhere a request can
reach, pagination, typed payloads, documented fields), the exact service surface, and that the proto
``SimulationConfig`` mirrors the pydantic ``simulation.config.SimulationConfig`` field by field.
"""

from __future__ import annotations

import importlib
import importlib.resources
import pkgutil
import re
import types
import typing
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import pytest
from google.api import field_behavior_pb2, resource_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor
from pydantic import BaseModel

import equihome
from simulation import config as pyconfig

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos"
DOCS = ROOT / "docs" / "api.md"

# Flower-style guard: a new or removed proto file (or service/RPC) must be a deliberate change here.
EXPECTED_PROTO_FILES = 21
EXPECTED_SERVICES: dict[str, set[str]] = {
    "equihome.simulation.v1.SimulationService": {
        "CreateSimulation",
        "GetSimulation",
        "ListSimulations",
        "CancelSimulation",
        "WatchSimulation",
        "RunSimulation",
    },
    "equihome.impact.v1.ImpactAnalysisService": {"AnalyzeLoanImpact"},
    "equihome.optimization.v1.OptimizationService": {"OptimizeAllocation", "GetOptimization", "SendRecommendations"},
    "equihome.events.v1.EventService": {"SubscribeEvents"},
    "equihome.study.v1.StudyService": {
        "CreateStudy",
        "GetStudy",
        "ListStudies",
        "CancelStudy",
        "WatchStudy",
        "RunStressTest",
        "RunSensitivity",
    },
    "equihome.integration.v1.IntegrationService": {
        "GetIntegration",
        "ListIntegrations",
        "GetZoneClassifications",
        "GetMarketRisk",
        "GetPortfolioComposition",
        "GetPortfolioMetrics",
        "GetLoanParameters",
        "ListPushes",
        "RetryPush",
    },
}
SERVER_STREAMING = {"WatchSimulation", "SubscribeEvents", "WatchStudy"}
SCOPES = {
    "simulation:read",
    "simulation:write",
    "impact:write",
    "optimization:read",
    "optimization:write",
    "study:read",
    "study:write",
    "events:read",
    "integration:read",
    "integration:write",
}
UNTYPED = {
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
    "google.protobuf.Empty",
}
FB = field_behavior_pb2.FieldBehavior


# --------------------------------------------------------------------------------------------- loading


def _generated_files() -> list[FileDescriptor]:
    files = []
    for info in pkgutil.walk_packages(equihome.__path__, prefix="equihome."):
        if info.name.endswith("_pb2"):
            files.append(importlib.import_module(info.name).DESCRIPTOR)
    return sorted(files, key=lambda f: f.name)


FILES = _generated_files()


def _messages(container: FileDescriptor | Descriptor) -> Iterator[Descriptor]:
    if isinstance(container, FileDescriptor):
        children = list(container.message_types_by_name.values())
    else:
        children = list(container.nested_types)
    for message in children:
        yield message
        yield from _messages(message)


def _enums() -> Iterator[EnumDescriptor]:
    for file in FILES:
        yield from file.enum_types_by_name.values()
        for message in _messages(file):
            yield from message.enum_types


ALL_MESSAGES = [m for f in FILES for m in _messages(f)]
METHODS = [(s, m) for f in FILES for s in f.services_by_name.values() for m in s.methods]


def _behaviors(field: FieldDescriptor) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _snake_upper(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


# --------------------------------------------------------------------------------------------- surface


def test_every_proto_file_is_generated_and_counted() -> None:
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "equihome").rglob("*.proto"))
    assert len(sources) == EXPECTED_PROTO_FILES, sources
    assert [f.name for f in FILES] == sources, "generated code is stale: run `make proto`"


def test_directory_matches_package() -> None:
    for file in FILES:
        assert file.package.replace(".", "/") == str(Path(file.name).parent), file.name
        assert re.fullmatch(r"equihome\.[a-z_]+\.v\d+", file.package), file.package


def test_expected_services_and_rpcs() -> None:
    found = {
        s.full_name: {m.name for m in s.methods} for f in FILES for s in f.services_by_name.values()
    }
    assert found == EXPECTED_SERVICES


def test_streaming_shape() -> None:
    for service, method in METHODS:
        proto = descriptor_pb2.MethodDescriptorProto()
        method.CopyToProto(proto)
        assert not proto.client_streaming, method.full_name
        assert proto.server_streaming == (method.name in SERVER_STREAMING), method.full_name


def test_every_rpc_has_its_own_request_and_response() -> None:
    seen: set[str] = set()
    for service, method in METHODS:
        package = service.file.package
        request, response = method.input_type, method.output_type
        assert request.full_name == f"{package}.{method.name}Request", method.full_name
        assert response.full_name == f"{package}.{method.name}Response", method.full_name
        assert request.full_name not in seen and response.full_name not in seen
        seen |= {request.full_name, response.full_name}


def test_no_untyped_payloads() -> None:
    for message in ALL_MESSAGES:
        for field in message.fields:
            if field.message_type is not None:
                assert field.message_type.full_name not in UNTYPED, field.full_name
    for _, method in METHODS:
        assert method.input_type.full_name not in UNTYPED
        assert method.output_type.full_name not in UNTYPED


def test_enum_zero_values_are_unspecified() -> None:
    enums = list(_enums())
    assert len(enums) > 20
    for enum in enums:
        prefix = _snake_upper(enum.name)
        zero = enum.values[0]
        assert zero.number == 0 and zero.name == f"{prefix}_UNSPECIFIED", enum.full_name
        for value in enum.values:
            assert value.name.startswith(prefix + "_"), value.name


# --------------------------------------------------------------------------------------------- AIP rules


def _request_reachable_fields() -> Iterator[tuple[str, FieldDescriptor]]:
    """Every field a caller can set: request fields, and recursively the fields of the messages they hold,
    except below OUTPUT_ONLY fields (ignored on input) and inside google.* types."""
    seen: set[str] = set()
    stack = [m.input_type for _, m in METHODS]
    while stack:
        message = stack.pop()
        if message.full_name in seen or not message.full_name.startswith("equihome."):
            continue
        seen.add(message.full_name)
        for field in message.fields:
            yield message.full_name, field
            if field.message_type is not None and FB.OUTPUT_ONLY not in _behaviors(field):
                if not field.message_type.GetOptions().map_entry:
                    stack.append(field.message_type)


def test_every_request_field_has_field_behavior() -> None:
    fields = list(_request_reachable_fields())
    assert len(fields) > 150  # the whole SimulationConfig tree is reachable
    missing = [f.full_name for _, f in fields if not _behaviors(f)]
    assert missing == []


def test_top_level_request_fields_are_never_output_only() -> None:
    for _, method in METHODS:
        for field in method.input_type.fields:
            assert FB.OUTPUT_ONLY not in _behaviors(field), field.full_name


def test_resources_mark_name_and_output_fields() -> None:
    resources = [m for m in ALL_MESSAGES if m.GetOptions().HasExtension(resource_pb2.resource)]
    assert {m.full_name for m in resources} == {
        "equihome.simulation.v1.Simulation",
        "equihome.integration.v1.Integration",
        "equihome.integration.v1.Push",
        "equihome.study.v1.Study",
    }
    for message in resources:
        assert _behaviors(message.fields_by_name["name"]) == [FB.IDENTIFIER]
        for field in message.fields:
            assert _behaviors(field), field.full_name
    simulation = next(m for m in resources if m.name == "Simulation")
    output_only = {f.name for f in simulation.fields if FB.OUTPUT_ONLY in _behaviors(f)}
    assert output_only == {
        "effective_config",
        "state",
        "progress",
        "result",
        "error",
        "seed",
        "engine_version",
        "create_time",
        "start_time",
        "end_time",
        "expire_time",
        "book_snapshot",
        "owner",
    }
    states = [v.name for v in simulation.enum_types_by_name["State"].values]
    assert states == [
        "STATE_UNSPECIFIED",
        "STATE_PENDING",
        "STATE_RUNNING",
        "STATE_SUCCEEDED",
        "STATE_FAILED",
        "STATE_CANCELLED",
        "STATE_INTERRUPTED",
    ]


def test_list_rpcs_paginate() -> None:
    lists = [m for _, m in METHODS if m.name.startswith("List")]
    assert {m.name for m in lists} == {"ListSimulations", "ListIntegrations", "ListPushes", "ListStudies"}
    for method in lists:
        request, response = method.input_type.fields_by_name, method.output_type.fields_by_name
        assert request["page_size"].type == FieldDescriptor.TYPE_INT32, method.name
        assert request["page_token"].type == FieldDescriptor.TYPE_STRING, method.name
        assert response["next_page_token"].type == FieldDescriptor.TYPE_STRING, method.name
        resources = [f for f in response.values() if f.is_repeated and f.message_type is not None]
        assert len(resources) == 1, method.name


def test_creates_and_side_effects_take_request_id() -> None:
    for name in ("CreateSimulation", "AnalyzeLoanImpact", "CreateStudy"):
        method = next(m for _, m in METHODS if m.name == name)
        field = method.input_type.fields_by_name["request_id"]
        assert field.type == FieldDescriptor.TYPE_STRING
        assert _behaviors(field) == [FB.OPTIONAL]
    # SendRecommendations is keyed by the stored optimisation it sends: a repeat queues nothing new.
    send = next(m for _, m in METHODS if m.name == "SendRecommendations")
    assert _behaviors(send.input_type.fields_by_name["optimization_id"]) == [FB.REQUIRED]


def test_read_throughs_report_freshness() -> None:
    read_throughs = [
        m
        for s, m in METHODS
        if s.name == "IntegrationService" and m.name.startswith("Get") and m.name != "GetIntegration"
    ]
    assert len(read_throughs) == 5
    for method in read_throughs:
        freshness = method.output_type.fields_by_name["freshness"].message_type
        assert {"stale", "data_age"} <= set(freshness.fields_by_name), method.name
        assert "require_fresh" in method.input_type.fields_by_name, method.name


# --------------------------------------------------------------------------------------------- documentation


@pytest.fixture(scope="module")
def source_files(tmp_path_factory: pytest.TempPathFactory) -> list[descriptor_pb2.FileDescriptorProto]:
    """The protos compiled again with source info (the generated modules carry no comments)."""
    from grpc_tools import protoc  # dev dependency, like buf

    out = tmp_path_factory.mktemp("descriptors") / "set.binpb"
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    sources = sorted(str(p) for p in (PROTO_DIR / "equihome").rglob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", "--include_source_info", f"-o{out}", *sources]
    assert protoc.main(args) == 0
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(descriptor_set.file)


def test_every_element_has_a_leading_comment(source_files: list[descriptor_pb2.FileDescriptorProto]) -> None:
    """Messages, fields, enums, enum values, services and RPCs all carry a doc comment."""
    undocumented = []
    for file in source_files:
        documented = {
            tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()
        }

        def check(path: tuple[int, ...], what: str) -> None:
            if path not in documented:
                undocumented.append(f"{file.name}: {what}")

        def walk_message(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str) -> None:
            name = f"{prefix}{message.name}"
            check(path, name)
            for i, field in enumerate(message.field):
                check((*path, 2, i), f"{name}.{field.name}")
            for i, nested in enumerate(message.nested_type):
                if not nested.options.map_entry:
                    walk_message(nested, (*path, 3, i), f"{name}.")
            for i, enum in enumerate(message.enum_type):
                walk_enum(enum, (*path, 4, i), f"{name}.")

        def walk_enum(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str) -> None:
            check(path, f"{prefix}{enum.name}")
            for i, value in enumerate(enum.value):
                check((*path, 2, i), f"{prefix}{enum.name}.{value.name}")

        for i, message in enumerate(file.message_type):
            walk_message(message, (4, i), "")
        for i, enum in enumerate(file.enum_type):
            walk_enum(enum, (5, i), "")
        for i, service in enumerate(file.service):
            check((6, i), service.name)
            for j, method in enumerate(service.method):
                check((6, i, 2, j), f"{service.name}.{method.name}")
    assert undocumented == []


def test_docs_give_every_rpc_a_scope() -> None:
    text = DOCS.read_text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    for _, method in METHODS:
        row = next((r for r in rows if f"`{method.name}`" in r), None)
        assert row is not None, f"docs/api.md has no table row for {method.name}"
        assert any(scope in row for scope in SCOPES), row
    assert '`domain = "equihome.simulation.v1"`' in text


def test_error_reasons_are_valid_and_documented() -> None:
    from equihome.type.v1 import error_reason_pb2

    text = DOCS.read_text()
    for value in error_reason_pb2.ErrorReason.DESCRIPTOR.values[1:]:
        reason = value.name.removeprefix("ERROR_REASON_")
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+[A-Z0-9]", reason) and len(reason) <= 63, reason
        assert f"`{reason}`" in text, f"docs/api.md does not list error reason {reason}"


# --------------------------------------------------------------------------------------------- typed payloads


def test_event_payload_cases_match_event_types() -> None:
    from equihome.events.v1 import event_pb2

    cases = {f.name.upper() for f in event_pb2.Event.DESCRIPTOR.oneofs_by_name["payload"].fields}
    types_ = {v.name.removeprefix("EVENT_TYPE_") for v in event_pb2.EventType.DESCRIPTOR.values[1:]}
    assert cases == types_
    assert len(cases) == 12


def test_path_detail_mirrors_metric_summaries() -> None:
    from equihome.simulation.v1 import simulation_result_pb2 as r

    summaries = {(f.name, f.number) for f in r.MetricSummaries.DESCRIPTOR.fields}
    detail = {(f.name, f.number) for f in r.PathDetail.DESCRIPTOR.fields}
    assert summaries == detail
    assert all(f.message_type.name == "MetricSummary" for f in r.MetricSummaries.DESCRIPTOR.fields)
    for field in r.PathDetail.DESCRIPTOR.fields:
        assert field.is_repeated and field.type == FieldDescriptor.TYPE_DOUBLE, field.name


# --------------------------------------------------------------------------------------------- config mirror

# ZoneMarket's rates are required in the engine model, but the proto merges each unset rate over that zone's
# default (documented on the message), so a caller can change one rate.
MERGED_OVER_ZONE_DEFAULTS = {
    "ZoneMarket.drift",
    "ZoneMarket.vol",
    "ZoneMarket.default_hazard",
    "ZoneMarket.recovery_haircut",
}
SCALAR_TYPES: dict[object, set[int]] = {
    bool: {FieldDescriptor.TYPE_BOOL},
    int: {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
    },
    float: {FieldDescriptor.TYPE_DOUBLE},
    str: {FieldDescriptor.TYPE_STRING},
}


def _unwrap(annotation: object) -> tuple[object, bool, bool]:
    """(inner type, optional, repeated) of a pydantic annotation, Annotated layers stripped."""
    optional = repeated = False
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            assert len(rest) == 1, annotation
            optional, annotation = True, rest[0]
        elif origin is tuple:
            assert len(args) == 2 and args[1] is Ellipsis, annotation
            repeated, annotation = True, args[0]
        else:
            return annotation, optional, repeated


def _compare(model: type[BaseModel], message: Descriptor, path: str, problems: list[str]) -> None:
    py_fields = model.model_fields
    proto_fields = message.fields_by_name
    for name in sorted(set(py_fields) ^ set(proto_fields)):
        side = "proto" if name in py_fields else "pydantic"
        problems.append(f"{path}.{name}: missing in {side}")
    for name in sorted(set(py_fields) & set(proto_fields)):
        info, field = py_fields[name], proto_fields[name]
        where = f"{path}.{name}"
        inner, optional, repeated = _unwrap(info.annotation)
        if field.is_repeated != repeated:
            problems.append(f"{where}: repeated mismatch")
        behaviors = _behaviors(field)
        key = f"{message.name}.{name}"
        if info.is_required() and key not in MERGED_OVER_ZONE_DEFAULTS:
            if FB.REQUIRED not in behaviors:
                problems.append(f"{where}: required in the engine, not REQUIRED in proto")
        elif FB.REQUIRED in behaviors:
            problems.append(f"{where}: REQUIRED in proto but has an engine default")
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            if field.message_type is None:
                problems.append(f"{where}: expected a message")
                continue
            _compare(inner, field.message_type, where, problems)
        elif isinstance(inner, type) and issubclass(inner, StrEnum):
            if field.enum_type is None:
                problems.append(f"{where}: expected an enum")
                continue
            prefix = _snake_upper(field.enum_type.name) + "_"
            proto_values = {v.name.removeprefix(prefix).lower() for v in field.enum_type.values[1:]}
            engine_values = {e.value for e in inner}
            if proto_values != engine_values:
                problems.append(f"{where}: enum values {sorted(proto_values)} != {sorted(engine_values)}")
        else:
            expected = SCALAR_TYPES.get(inner)
            if expected is None or field.type not in expected:
                problems.append(f"{where}: type {inner} vs proto type {field.type}")
            # A scalar with an engine default (or None) must have presence so "unset" means "default".
            if not repeated and not info.is_required() and not field.has_presence:
                problems.append(f"{where}: scalar with a default must be `optional` in proto")


def test_simulation_config_mirrors_pydantic_model() -> None:
    from equihome.simulation.v1 import simulation_config_pb2

    problems: list[str] = []
    root = simulation_config_pb2.SimulationConfig.DESCRIPTOR
    _compare(pyconfig.SimulationConfig, root, "config", problems)
    assert problems == []


def test_mirror_check_detects_drift() -> None:
    """The mirror walk must fail on a field the proto lacks, a type mismatch and a missing section."""
    from equihome.simulation.v1 import simulation_config_pb2

    class Drifted(pyconfig._Model):
        size: float = 1.0
        term_years: str = "x"
        brand_new: int = 0

    problems: list[str] = []
    _compare(Drifted, simulation_config_pb2.FundTerms.DESCRIPTOR, "fund", problems)
    assert any("brand_new: missing in proto" in p for p in problems)
    assert any("term_years: type" in p for p in problems)
    assert any("deployment_pace: missing in pydantic" in p for p in problems)


def test_zone_enum_matches_engine_zones() -> None:
    from equihome.type.v1 import zone_pb2

    values = [v.name.removeprefix("ZONE_").lower() for v in zone_pb2.Zone.DESCRIPTOR.values[1:]]
    assert tuple(values) == pyconfig.ZONES


@pytest.mark.parametrize("section", list(pyconfig.SimulationConfig.model_fields))
def test_config_sections_are_optional_messages(section: str) -> None:
    from equihome.simulation.v1 import simulation_config_pb2

    field = simulation_config_pb2.SimulationConfig.DESCRIPTOR.fields_by_name[section]
    assert field.message_type is not None and _behaviors(field) == [FB.OPTIONAL]


def test_engine_config_round_trips_through_proto() -> None:
    """A full engine config (every default, plus an explicit loan and a call schedule) survives
    engine -> proto -> wire -> engine through the server mapping, which renames enum values only."""
    from equihome.simulation.v1 import simulation_config_pb2
    from server.mapping.config import config_to_engine, engine_to_config

    original = pyconfig.load_config(
        {
            "fund": {
                "capital_call_mode": "schedule",
                "capital_call_schedule": [{"year": 0, "fraction": 0.5}, {"year": 1.5, "fraction": 0.5}],
            },
            "book": {
                "loans": [
                    {
                        "id": "loan_1",
                        "amount": 250_000,
                        "property_value": 500_000,
                        "zone": "orange",
                        "region": "sydney_east",
                        "interest_rate": 0.06,
                        "planned_exit_month": 60,
                    }
                ]
            },
            "market": {"red": {"drift": 0.03, "vol": 0.12, "default_hazard": 0.03, "recovery_haircut": 0.7}},
            "monte_carlo": {"seed": 2**62, "paths": 10},
        }
    )
    wire = engine_to_config(original).SerializeToString()
    message = simulation_config_pb2.SimulationConfig.FromString(wire)

    assert message.book.loans[0].zone == 2  # ZONE_ORANGE
    assert message.book.loans[0].HasField("interest_rate")
    assert not message.book.loans[0].HasField("appreciation_share")
    assert message.fund.capital_call_schedule[0].year == 0  # REQUIRED, no presence: zero is a value
    assert pyconfig.load_config(config_to_engine(message)) == original


def _field_comments(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    """Leading comment of every top-level message field, keyed by the field's full name."""
    comments = {}
    for file in files:
        by_path = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        for i, message in enumerate(file.message_type):
            for j, field in enumerate(message.field):
                comments[f"{file.package}.{message.name}.{field.name}"] = by_path.get((4, i, 2, j), "")
    return comments


_DEFAULT = re.compile(r'Default (-?[\d,]*\d(?:\.\d+)?|true|false|[A-Z][A-Z_]*\b|"[^"]*")')


def _check_defaults(
    model: type[BaseModel], message: Descriptor, comments: dict[str, str], problems: list[str]
) -> None:
    for name, info in model.model_fields.items():
        field = message.fields_by_name[name]
        comment = " ".join(comments[field.full_name].split())
        inner, _, repeated = _unwrap(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            if not repeated:
                _check_defaults(inner, field.message_type, comments, problems)
            continue
        if info.is_required() or repeated:
            continue
        default = info.default
        if default is None:
            if "Unset" not in comment:
                problems.append(f"{field.full_name}: default None, comment does not say what unset means")
            continue
        match = _DEFAULT.search(comment)
        if match is None:
            problems.append(f"{field.full_name}: comment quotes no default ({default!r})")
            continue
        quoted = match.group(1)
        if isinstance(default, StrEnum):
            ok = quoted == default.name
        elif isinstance(default, bool):
            ok = quoted == str(default).lower()
        elif isinstance(default, str):
            ok = quoted == f'"{default}"'
        else:
            ok = float(quoted.replace(",", "")) == float(default)
        if not ok:
            problems.append(f"{field.full_name}: comment says default {quoted}, the engine uses {default!r}")


def test_config_comments_quote_the_engine_defaults(
    source_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    from equihome.simulation.v1 import simulation_config_pb2

    problems: list[str] = []
    comments = _field_comments(source_files)
    root = simulation_config_pb2.SimulationConfig.DESCRIPTOR
    _check_defaults(pyconfig.SimulationConfig, root, comments, problems)
    assert problems == []
