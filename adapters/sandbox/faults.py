"""Fault knobs: the settings in force per target, changeable at runtime, and the dice that apply them.

Targets are the three systems (``traffic-light``, ``pms``, ``underwriting``) and ``auth`` (the token
endpoint). Every target has the HTTP knobs; systems add token rejection and WebSocket knobs, ``auth``
adds the token-issuing knobs. All random decisions come from one generator seeded from the sandbox
seed, so a run with the same seed and the same request order injects the same faults.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.sandbox.systems import AUTH_TARGET, System


class MalformedKind(StrEnum):
    INVALID_JSON = "invalid_json"
    WRONG_TYPES = "wrong_types"
    MIXED = "mixed"


class _Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpFaults(_Knobs):
    """Knobs every target has."""

    latency_ms: float = Field(0.0, ge=0, description="added to every request before it is answered")
    latency_jitter_ms: float = Field(0.0, ge=0, description="uniform +/- spread around latency_ms")
    error_rate: float = Field(0.0, ge=0, le=1, description="fraction of requests answered 500")
    outage: bool = Field(False, description="answer everything 503 with retry_after")
    outage_retry_after: int = Field(30, ge=0, description="seconds, in Retry-After and the error details")
    rate_limit_per_second: float = Field(0.0, ge=0, description="token-bucket refill rate; 0 = unlimited")
    rate_limit_burst: int = Field(1, ge=1, description="token-bucket capacity")


class SystemFaults(HttpFaults):
    """Knobs of one external system."""

    reject_all_tokens: bool = Field(False, description="answer 401 even to valid tokens")
    ws_drop_after_events: int | None = Field(None, ge=1, description="close each socket after N events")
    ws_drop_every_seconds: float | None = Field(None, gt=0, description="close each socket after N seconds")
    ws_silent: bool = Field(False, description="open sockets stay up (pings answered) but get no event frames")
    malformed_frame_rate: float = Field(0.0, ge=0, le=1, description="fraction of event frames corrupted")
    malformed_frame_kind: MalformedKind = MalformedKind.MIXED


class TokenFaults(HttpFaults):
    """Knobs of the token endpoint."""

    issue_expired_tokens: bool = Field(False, description="tokens whose exp is already in the past")
    sign_with_wrong_key: bool = Field(False, description="tokens signed by a key absent from the JWKS")


class FaultSettings(_Knobs):
    """All targets' knobs; JSON keys are the target names (``traffic-light``, ``pms``, ...)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    traffic_light: SystemFaults = Field(default_factory=SystemFaults, alias=System.TRAFFIC_LIGHT.value)
    pms: SystemFaults = Field(default_factory=SystemFaults, alias=System.PMS.value)
    underwriting: SystemFaults = Field(default_factory=SystemFaults, alias=System.UNDERWRITING.value)
    auth: TokenFaults = Field(default_factory=TokenFaults, alias=AUTH_TARGET)

    def for_system(self, system: System) -> SystemFaults:
        return {
            System.TRAFFIC_LIGHT: self.traffic_light,
            System.PMS: self.pms,
            System.UNDERWRITING: self.underwriting,
        }[system]

    def for_target(self, target: str) -> HttpFaults:
        return self.auth if target == AUTH_TARGET else self.for_system(System(target))

    def merged(self, patch: Mapping[str, Any]) -> FaultSettings:
        """These settings with ``patch`` laid over them, field by field; raises pydantic.ValidationError."""
        current = self.model_dump(mode="json")
        combined = dict(current)
        for target, knobs in patch.items():
            if isinstance(knobs, Mapping) and target in current:
                combined[target] = {**current[target], **knobs}
            else:
                combined[target] = knobs
        return FaultSettings.model_validate(combined)

    def everywhere(self, knobs: Mapping[str, Any]) -> FaultSettings:
        """These settings with ``knobs`` applied to all three systems."""
        return self.merged({system.value: knobs for system in System})


@dataclass
class _TokenBucket:
    rate: float
    capacity: int
    tokens: float
    updated_at: float

    def take(self, now: float) -> float:
        """Take one token; returns 0 when admitted, else the seconds until a token is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated_at) * self.rate)
        self.updated_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class FaultBoard:
    """The fault settings in force; listeners hear about every change."""

    def __init__(self, settings: FaultSettings, seed: int):
        self._settings = settings
        self._rng = random.Random(f"faults:{seed}")
        self._buckets: dict[str, _TokenBucket] = {}
        self._listeners: list[Callable[[FaultSettings], None]] = []

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def on_change(self, listener: Callable[[FaultSettings], None]) -> None:
        self._listeners.append(listener)

    def replace(self, settings: FaultSettings) -> FaultSettings:
        self._settings = settings
        self._buckets.clear()
        for listener in self._listeners:
            listener(settings)
        return settings

    def update(self, patch: Mapping[str, Any]) -> FaultSettings:
        return self.replace(self._settings.merged(patch))

    def reset(self) -> FaultSettings:
        return self.replace(FaultSettings())

    def latency_seconds(self, knobs: HttpFaults) -> float:
        if knobs.latency_ms == 0 and knobs.latency_jitter_ms == 0:
            return 0.0
        jitter = self._rng.uniform(-knobs.latency_jitter_ms, knobs.latency_jitter_ms)
        return max(0.0, knobs.latency_ms + jitter) / 1000

    def rolls(self, probability: float) -> bool:
        """True with the given probability (never for 0, always for 1)."""
        return probability > 0 and self._rng.random() < probability

    def choose(self, options: tuple[MalformedKind, ...]) -> MalformedKind:
        return self._rng.choice(options)

    def rate_limit_retry_after(self, target: str, knobs: HttpFaults) -> int | None:
        """Whole seconds to wait when ``target``'s rate limit refuses this request, else None."""
        if knobs.rate_limit_per_second == 0:
            return None
        now = time.monotonic()
        bucket = self._buckets.get(target)
        if bucket is None:
            rate, capacity = knobs.rate_limit_per_second, knobs.rate_limit_burst
            bucket = self._buckets[target] = _TokenBucket(rate, capacity, capacity, now)
        wait = bucket.take(now)
        return None if wait == 0 else max(1, math.ceil(wait))
