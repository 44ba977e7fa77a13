"""The sandbox's configuration: world size and seed, event rate, OAuth clients, initial faults, and the
extensions to the guide (all off by default: the sandbox speaks the guide exactly unless asked)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.sandbox.faults import FaultSettings
from adapters.sandbox.systems import ALL_SCOPES

DEMO_CLIENT_ID = "equihome-engine"
DEMO_CLIENT_SECRET = "sandbox-secret"


class ClientRegistration(BaseModel):
    """An OAuth client allowed to use the client-credentials grant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    scopes: tuple[str, ...] = ALL_SCOPES

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(scopes) - set(ALL_SCOPES))
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; expected some of {list(ALL_SCOPES)}")
        return scopes


DEMO_CLIENT = ClientRegistration(client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)


class Extensions(BaseModel):
    """What the sandbox can add beyond the integration guide. Each is off by default, so an adapter that
    works against the default sandbox does not depend on anything the guide does not promise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_ids: bool = Field(False, description="event frames carry `id` (per system) and `timestamp`")
    subscription_acks: bool = Field(
        False, description="answer subscribe/unsubscribe with `subscribed`/`unsubscribed`, bad messages with `error`"
    )
    per_event_channels: bool = Field(
        False, description="one channel per event type (and `*`) instead of one guide-style channel per system"
    )
    unknown_ids: bool = Field(False, description="list unknown ids in `unknown_properties` / `unknown_regions`")
    loan_links: bool = Field(False, description="portfolio loans carry `property_id` and `region`")
    post_receipts: bool = Field(False, description="answer accepted POSTs 202 {id, status, received_at}")


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 7
    portfolio_id: str = Field("portfolio_456", min_length=1)
    loan_count: int = Field(400, ge=1, le=100_000, description="active loans in the portfolio at start")
    application_count: int = Field(40, ge=0, le=100_000, description="loan applications pending at start")
    events_per_second: float = Field(1.0, ge=0, description="per system; 0 stops the clock")
    split_ports: bool = Field(False, description="serve auth+admin and each system on its own port")
    clients: tuple[ClientRegistration, ...] = Field((DEMO_CLIENT,), min_length=1)
    token_lifetime_seconds: int = Field(3600, gt=0)
    issuer: str = "urn:equihome:sandbox"
    ws_send_queue_size: int = Field(1000, ge=1, description="frames buffered per socket before it is dropped")
    max_batch_size: int = Field(1000, ge=1, description="most ids accepted in one zones/market-risk query")
    omit_optional_fields: float = Field(
        0.1, ge=0, le=1, description="share of optional fields left out of events and REST items"
    )
    extensions: Extensions = Field(default_factory=Extensions)
    faults: FaultSettings = Field(default_factory=FaultSettings)

    @classmethod
    def from_json_file(cls, path: Path) -> SandboxConfig:
        return cls.model_validate_json(path.read_text())
