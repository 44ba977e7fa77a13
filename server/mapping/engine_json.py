"""The JSON that ``equihome-sim simulate --json`` writes → the engine ``SimulationResult`` and its config.

``SimulationResult.to_dict`` flattens the result's dataclasses to plain JSON (NaN becomes ``null``, arrays
become lists, percentile keys become strings). ``engine_result`` walks the dataclasses' type hints to undo
exactly that, so it follows the engine's result whatever fields it gains; ``result_to_proto`` then gives
the contract's ``SimulationResult``, the one shape every reader (the report included) works from.
The file also carries the effective config under ``"config"``, which the proto mapping needs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import numpy as np

from simulation.config import ConfigError, SimulationConfig, load_config
from simulation.results import SimulationResult

CONFIG_KEY = "config"


class EngineJsonError(ValueError):
    """The document is not a result written by ``simulate --json``; the message names the field."""


def engine_document(result: SimulationResult, config: SimulationConfig) -> dict[str, Any]:
    """What ``simulate --json`` writes: the result, plus the effective config that produced it."""
    return result.to_dict() | {CONFIG_KEY: config.model_dump(mode="json")}


def engine_result(data: dict[str, Any]) -> tuple[SimulationResult, SimulationConfig]:
    """The result and config of an ``engine_document``; ``EngineJsonError`` names what is missing."""
    if CONFIG_KEY not in data:
        raise EngineJsonError(
            "the result has no 'config' (written by an older equihome-sim); run simulate --json again"
        )
    try:
        config = load_config(data[CONFIG_KEY])
    except ConfigError as error:
        field, message = error.violations[0]
        raise EngineJsonError(f"config.{field}: {message}") from None
    return _decode(SimulationResult, data, "result"), config


def _decode(hint: Any, value: Any, path: str) -> Any:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        (hint,) = [argument for argument in arguments if argument is not type(None)]
        return _decode(hint, value, path)
    if dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value, path)
    if origin is dict:
        key_hint, value_hint = arguments
        _expect(value, dict, path)
        return {
            _scalar(key_hint, key, path): _decode(value_hint, item, f"{path}.{key}")
            for key, item in value.items()
        }
    if origin is tuple:
        _expect(value, list, path)
        return tuple(_decode(arguments[0], item, f"{path}[{index}]") for index, item in enumerate(value))
    if hint is np.ndarray:
        _expect(value, list, path)
        return np.array(_none_to_nan(value))
    return _scalar(hint, value, path)


def _decode_dataclass(cls: Any, value: Any, path: str) -> Any:
    _expect(value, dict, path)
    hints = typing.get_type_hints(cls)
    fields = {}
    for field in dataclasses.fields(cls):
        if field.name not in value:
            if field.default is not dataclasses.MISSING:
                continue
            raise EngineJsonError(f"{path}.{field.name} is missing (written by another engine version?)")
        fields[field.name] = _decode(hints[field.name], value[field.name], f"{path}.{field.name}")
    return cls(**fields)


def _scalar(hint: Any, value: Any, path: str) -> Any:
    """A JSON scalar (or a dict key, which JSON makes a string) as ``hint``; a ``null`` float is NaN."""
    try:
        if hint is float:
            return math.nan if value is None else float(value)
        if hint is int:
            return int(value)
        if hint is bool:
            _expect(value, bool, path)
            return value
        if hint is str:
            _expect(value, str, path)
            return value
    except (TypeError, ValueError):
        raise EngineJsonError(f"{path}: expected {hint.__name__}, got {value!r}") from None
    raise EngineJsonError(f"{path}: cannot read a value of type {hint!r}")


def _expect(value: Any, kind: type, path: str) -> None:
    if not isinstance(value, kind):
        raise EngineJsonError(f"{path}: expected a JSON {kind.__name__}, got {type(value).__name__}")


def _none_to_nan(value: Any) -> Any:
    if isinstance(value, list):
        return [_none_to_nan(item) for item in value]
    return math.nan if value is None else value
