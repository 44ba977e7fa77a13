"""Live books for the simulation service: a PMS portfolio from the mirror, as an engine config.

A portfolio the mirror holds is used as it is, with its freshness recorded in the run's snapshot (a
portfolio the PMS cannot confirm right now is still simulated, marked stale). One the mirror has never
loaded is read now (and tracked from then on); that needs integrations on. The mapping itself is
``server.mapping.live_book``.
"""

from __future__ import annotations

from adapters.errors import UpstreamError
from equihome.simulation.v1 import simulation_config_pb2
from server.errors import FailedPrecondition, InvalidArgument
from server.integration.errors import service_error
from server.integration.mirror import Mirror, now_us
from server.integration.sync import MirrorSync
from server.mapping.config import config_to_engine
from server.mapping.live_book import LiveBook, live_book_config

MAX_PORTFOLIO_ID_CHARS = 128


class LiveBooks:
    def __init__(self, mirror: Mirror, sync: MirrorSync | None):
        self._mirror = mirror
        self._sync = sync

    async def config(
        self, portfolio_id: str, sent: simulation_config_pb2.SimulationConfig, request_path: str, field: str
    ) -> LiveBook:
        """The live book of ``portfolio_id`` with the rest of ``sent`` (a request's config at
        ``request_path``; ``field`` is where the request names the portfolio)."""
        if len(portfolio_id) > MAX_PORTFOLIO_ID_CHARS or "/" in portfolio_id:
            raise InvalidArgument(
                "portfolio_id is not a PMS portfolio id.",
                [(field, f"at most {MAX_PORTFOLIO_ID_CHARS} characters, no '/'")],
                reason="FIELD_INVALID",
            )
        book = await self._mirror.book(portfolio_id)
        if book is None:
            if self._sync is None:
                raise FailedPrecondition(
                    f"Portfolio {portfolio_id} is not in the mirror and integrations are off, so its live book "
                    "cannot be read.",
                    reason="LIVE_BOOK_UNAVAILABLE",
                    metadata={"portfolio_id": portfolio_id},
                )
            try:
                await self._sync.load_portfolio(portfolio_id)
            except UpstreamError as error:
                raise service_error(error, portfolio_id) from None
            book = await self._mirror.book(portfolio_id)
            if book is None:
                raise FailedPrecondition(
                    f"Portfolio {portfolio_id} could not be loaded into the mirror; see the last reconciliation.",
                    reason="LIVE_BOOK_UNAVAILABLE",
                    metadata={"portfolio_id": portfolio_id},
                )
        return live_book_config(config_to_engine(sent), book, request_path=request_path, as_of_us=now_us())
