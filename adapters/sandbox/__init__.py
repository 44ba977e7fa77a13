"""A runnable sandbox of the three external systems (Traffic Light, PMS, Underwriting) and their
OAuth 2.0 token endpoint, serving a coherent synthetic world with fault knobs. See docs/sandbox.md."""

from adapters.sandbox.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, ClientRegistration, SandboxConfig
from adapters.sandbox.faults import FaultSettings, MalformedKind, SystemFaults, TokenFaults
from adapters.sandbox.runtime import Sandbox, run_sandbox, running_sandbox
from adapters.sandbox.systems import System

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "ClientRegistration",
    "FaultSettings",
    "MalformedKind",
    "Sandbox",
    "SandboxConfig",
    "System",
    "SystemFaults",
    "TokenFaults",
    "run_sandbox",
    "running_sandbox",
]
