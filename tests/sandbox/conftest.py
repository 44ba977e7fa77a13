"""Fixtures for the sandbox tests.

Every async test here runs in one event loop per module, so a module whose tests leave the world
alone may share one sandbox (``shared_sandbox``) while the others get a fresh sandbox per test.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from adapters.sandbox import Sandbox, SandboxConfig, running_sandbox

# Clocks stopped (tests make events happen with sandbox.emit) and every optional field present, so shapes
# compare exactly with the guide's examples; test_extensions.py covers omissions and extensions.
QUIET = SandboxConfig(events_per_second=0, omit_optional_fields=0)
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents and inspect.iscoroutinefunction(getattr(item, "obj", None)):
            item.add_marker(pytest.mark.asyncio(loop_scope="module"), append=False)


@pytest_asyncio.fixture(loop_scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    """A fresh sandbox for one test."""
    async with running_sandbox(QUIET) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_sandbox() -> AsyncIterator[Sandbox]:
    """One sandbox for a whole module of tests that neither set faults nor change the world."""
    async with running_sandbox(QUIET) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def token(http: httpx.AsyncClient, sandbox: Sandbox) -> str:
    """A token with all six scopes from ``sandbox`` (which a module may bind to ``shared_sandbox``)."""
    response = await http.post(
        sandbox.token_url,
        data={"grant_type": "client_credentials"},
        auth=(sandbox.config.clients[0].client_id, sandbox.config.clients[0].client_secret),
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]
