"""One real service (as the service tests start it) shared by the end-to-end runs of the remote commands:
each start pays for the warm job workers, and the commands only add jobs to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from server.settings import Settings
from tests.service.conftest import Service, running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    settings = Settings(
        port=0, metrics_enabled=False, data_dir=tmp_path_factory.mktemp("remote") / "data", grace_period_s=1.0,
        max_concurrent_runs=2, max_queued_runs=4,
    )  # fmt: skip
    async with running(settings) as shared:
        yield shared
