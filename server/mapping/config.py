"""Proto ``SimulationConfig`` ⇄ engine config, by walking descriptors: both trees use the same field names.

Proto → engine leaves out whatever the caller left unset, so the engine default applies: optional scalars
and sections without presence, ``_UNSPECIFIED`` enums and empty repeated fields. Enum values become the
engine's lower-case strings (``FEE_BASIS_NAV`` → ``"nav"``). Two documented merge rules finish the walk: a
``ZoneMarket`` takes that zone's default for each unset rate, and a ``TieredShare`` with either list set
is taken as given. Engine → proto walks ``model_dump`` the other way, for ``effective_config``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from equihome.simulation.v1 import simulation_config_pb2 as pb
from server.errors import InvalidArgument
from simulation.config import ZONES, ConfigError, Market, SimulationConfig, load_config

EngineData = dict[str, Any]

ROOT_VIOLATION_PATH = "config"  # what the engine names a violation of the config as a whole


def config_to_engine(message: pb.SimulationConfig) -> EngineData:
    """The engine's input mapping for ``message``; validate it with ``simulation.config.load_config``."""
    return _to_engine(message)


def engine_to_config(config: SimulationConfig) -> pb.SimulationConfig:
    """``config`` with every value, defaults included, as a proto ``SimulationConfig``."""
    message = pb.SimulationConfig()
    _fill(message, config.model_dump(mode="json"))
    return message


def load_engine_config(message: pb.SimulationConfig, request_path: str) -> SimulationConfig:
    """The validated engine config; ``InvalidArgument`` (CONFIG_INVALID) names the fields under
    ``request_path``."""
    try:
        return load_config(config_to_engine(message))
    except ConfigError as error:
        raise invalid_config(error, request_path) from None


def invalid_config(error: ConfigError, request_path: str) -> InvalidArgument:
    """``error`` as INVALID_ARGUMENT, one field violation per problem (``config.fees.expense_rate``)."""
    violations = [(field_path(request_path, path), message) for path, message in error.violations]
    return InvalidArgument(
        "The simulation config is invalid; the field violations list every problem.",
        violations,
        reason="CONFIG_INVALID",
    )


def field_path(request_path: str, engine_path: str) -> str:
    """An engine path (``book.loans.0.zone``) as a request field path
    (``simulation.config.book.loans[0].zone``)."""
    if engine_path == ROOT_VIOLATION_PATH:
        return request_path
    path = request_path
    for part in engine_path.split("."):
        path += f"[{part}]" if part.isdigit() else f".{part}"
    return path


# --- Proto → engine --------------------------------------------------------------------------------


def _to_engine(message: Message) -> EngineData:
    data: EngineData = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            if value:
                data[field.name] = [_engine_value(field, item) for item in value]
        elif _is_set(message, field):
            data[field.name] = _engine_value(field, value)
    merge = _MERGE_RULES.get(message.DESCRIPTOR.full_name)
    return merge(data) if merge is not None else data


def _is_set(message: Message, field: FieldDescriptor) -> bool:
    if field.has_presence:
        return message.HasField(field.name)
    if field.enum_type is not None:
        return getattr(message, field.name) != 0
    return True  # REQUIRED scalars have no presence: their zero is a value (CallScheduleEntry.year = 0)


def _engine_value(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        return _to_engine(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        # A number this server does not know goes through as is: the engine refuses it, naming the field.
        return value if known is None else known.name.removeprefix(_enum_prefix(field.enum_type)).lower()
    return value


def _zone_markets_over_defaults(market: EngineData) -> EngineData:
    """Each unset rate of a zone takes that zone's default, so a caller can change one rate alone."""
    for zone in ZONES:
        if zone in market:
            market[zone] = {**Market.model_fields[zone].default.model_dump(), **market[zone]}
    return market


def _tiers_as_given(tiered: EngineData) -> EngineData:
    """Both lists empty: the default tiers. Otherwise both lists are the caller's, even an empty one."""
    if tiered:
        tiered.setdefault("thresholds", [])
        tiered.setdefault("shares", [])
    return tiered


_MERGE_RULES: dict[str, Callable[[EngineData], EngineData]] = {
    pb.Market.DESCRIPTOR.full_name: _zone_markets_over_defaults,
    pb.TieredShare.DESCRIPTOR.full_name: _tiers_as_given,
}


# --- Engine → proto --------------------------------------------------------------------------------


def _fill(message: Message, data: EngineData) -> None:
    for name, value in data.items():
        if value is None:
            continue  # an engine "unset" (e.g. a loan without its own interest rate) stays unset
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if field.message_type is not None and field.is_repeated:
            for item in value:
                _fill(target.add(), item)
        elif field.message_type is not None:
            target.SetInParent()
            _fill(target, value)
        elif field.is_repeated:
            target.extend(_proto_value(field, item) for item in value)
        else:
            setattr(message, name, _proto_value(field, value))


def _proto_value(field: FieldDescriptor, value: Any) -> Any:
    if field.enum_type is not None:
        return field.enum_type.values_by_name[_enum_prefix(field.enum_type) + value.upper()].number
    return value


def _enum_prefix(enum: EnumDescriptor) -> str:
    """``FEE_BASIS_`` for ``FeeBasis``: its zero value is ``FEE_BASIS_UNSPECIFIED``."""
    return enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
