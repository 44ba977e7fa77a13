"""Typed reads from decoded JSON that name the offending field when the type is wrong.

``JsonObject(body, "market_risk.north_shore")`` wraps a ``dict``; ``.number("risk_score")`` returns a
float or raises ``PayloadError("market_risk.north_shore.risk_score", "expected a number, got string")``.
Unknown extra fields are simply never read, so they are tolerated. Booleans are not numbers here
(JSON ``true`` is no amount), and numbers are not strings. A member that is absent or JSON ``null`` is
"not sent": the ``optional_*`` readers return None for it, the others raise.

Upstream systems are not trusted to be reasonable: identifiers are at most ``MAX_ID_CHARS`` characters,
other strings at most ``MAX_TEXT_CHARS``, arrays at most ``MAX_ITEMS`` items (the HTTP and WebSocket
layers bound the size of the whole document).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 1000
MAX_ITEMS = 100_000


class PayloadError(ValueError):
    """A JSON payload does not have the expected shape; ``field`` is the dotted path of the problem."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class JsonObject:
    """A JSON object at ``path`` (empty for the document root)."""

    def __init__(self, value: Any, path: str = ""):
        if not isinstance(value, dict):
            raise PayloadError(path or "(body)", f"expected an object, got {json_type(value)}")
        self.value: dict[str, Any] = value
        self.path = path

    def has(self, name: str) -> bool:
        return name in self.value

    def _required(self, name: str) -> Any:
        if name not in self.value:
            raise PayloadError(_join(self.path, name), "missing")
        return self.value[name]

    def parsed(self, name: str, parse: Callable[[Any, str], T]) -> T:
        """``parse(value, path)`` of a required member, for vocabularies such as zones."""
        return parse(self._required(name), _join(self.path, name))

    def optional_parsed(self, name: str, parse: Callable[[Any, str], T]) -> T | None:
        return None if self.value.get(name) is None else self.parsed(name, parse)

    def string(self, name: str, max_chars: int = MAX_TEXT_CHARS) -> str:
        value = self._required(name)
        if not isinstance(value, str):
            raise PayloadError(_join(self.path, name), f"expected a string, got {json_type(value)}")
        if len(value) > max_chars:
            raise PayloadError(_join(self.path, name), f"longer than {max_chars} characters")
        return value

    def identifier(self, name: str) -> str:
        """A non-empty string of at most ``MAX_ID_CHARS`` characters."""
        value = self.string(name, MAX_ID_CHARS)
        if not value:
            raise PayloadError(_join(self.path, name), "must not be empty")
        return value

    def optional_identifier(self, name: str) -> str | None:
        return None if self.value.get(name) is None else self.identifier(name)

    def number(self, name: str) -> float:
        return _number(self._required(name), _join(self.path, name))

    def optional_number(self, name: str) -> float | None:
        value = self.value.get(name)
        return None if value is None else _number(value, _join(self.path, name))

    def integer(self, name: str) -> int:
        value = self._required(name)
        field = _join(self.path, name)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise PayloadError(field, f"expected an integer, got {json_type(value)}")
        return value

    def optional_integer(self, name: str) -> int | None:
        return None if self.value.get(name) is None else self.integer(name)

    def optional_string(self, name: str) -> str | None:
        return None if self.value.get(name) is None else self.string(name)

    def boolean(self, name: str) -> bool:
        value = self._required(name)
        if not isinstance(value, bool):
            raise PayloadError(_join(self.path, name), f"expected a boolean, got {json_type(value)}")
        return value

    def object(self, name: str) -> JsonObject:
        return JsonObject(self._required(name), _join(self.path, name))

    def optional_object(self, name: str) -> JsonObject | None:
        return None if self.value.get(name) is None else self.object(name)

    def array(self, name: str) -> list[tuple[Any, str]]:
        """The items of an array with their paths (``loans[3]``)."""
        value = self._required(name)
        field = _join(self.path, name)
        if not isinstance(value, list):
            raise PayloadError(field, f"expected an array, got {json_type(value)}")
        if len(value) > MAX_ITEMS:
            raise PayloadError(field, f"more than {MAX_ITEMS} items")
        return [(item, f"{field}[{index}]") for index, item in enumerate(value)]

    def optional_array(self, name: str) -> list[tuple[Any, str]]:
        """An optional array (absent or null: empty)."""
        return [] if self.value.get(name) is None else self.array(name)

    def optional_strings(self, name: str) -> list[str]:
        """An optional array of strings (absent or null: empty)."""
        strings = []
        for item, path in self.optional_array(name):
            if not isinstance(item, str):
                raise PayloadError(path, f"expected a string, got {json_type(item)}")
            strings.append(item)
        return strings

    def entries(self) -> Iterator[tuple[str, Any, str]]:
        """``(key, value, path)`` for every member, for objects used as maps keyed by id (``zones``)."""
        if len(self.value) > MAX_ITEMS:
            raise PayloadError(self.path or "(body)", f"more than {MAX_ITEMS} members")
        for key, value in self.value.items():
            if not key or len(key) > MAX_ID_CHARS:
                raise PayloadError(_join(self.path, key[:MAX_ID_CHARS]), f"keys are ids of 1 to {MAX_ID_CHARS} characters")
            yield key, value, _join(self.path, key)


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PayloadError(field, f"expected a number, got {json_type(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise PayloadError(field, "must be finite")
    return number
