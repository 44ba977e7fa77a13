"""Everything the sandbox's servers share: the world and how it moves, faults, tokens, event streams."""

from __future__ import annotations

from functools import partial

from adapters.sandbox.broadcast import CLOSE_TRY_AGAIN_LATER, Broadcaster
from adapters.sandbox.clock import EventClock
from adapters.sandbox.config import SandboxConfig
from adapters.sandbox.dynamics import WorldDynamics
from adapters.sandbox.faults import FaultBoard, FaultSettings
from adapters.sandbox.frames import EventFrame
from adapters.sandbox.omissions import Omissions
from adapters.sandbox.received import ReceivedLog
from adapters.sandbox.synthetic import generate_world
from adapters.sandbox.systems import System
from adapters.sandbox.tokens import TokenAuthority
from adapters.sandbox.views import Views


class SandboxState:
    def __init__(self, config: SandboxConfig):
        self.config = config
        self.world = generate_world(config)
        self.omissions = Omissions(config.omit_optional_fields, config.seed)
        self.views = Views(self.omissions, loan_links=config.extensions.loan_links)
        self.dynamics = WorldDynamics(self.world, config.seed, self.views)
        self.faults = FaultBoard(config.faults, config.seed)
        self.tokens = TokenAuthority(config)
        self.received = ReceivedLog()
        extensions = config.extensions
        self.broadcasters = {
            system: Broadcaster(
                system,
                system.channels(per_event=extensions.per_event_channels),
                config.ws_send_queue_size,
                frame_ids=extensions.frame_ids,
            )
            for system in System
        }
        self.clocks = {
            system: EventClock(system.value, config.events_per_second, partial(self.emit, system))
            for system in System
        }
        self.faults.on_change(self._apply_to_open_sockets)

    def emit(self, system: System, event: str | None = None) -> EventFrame | None:
        """Make one change in ``system``'s part of the world and publish its event.

        ``event`` picks the kind (one of the system's event types); None picks one at random. Returns
        None when the world has nothing to change that way (e.g. no application awaits approval).
        Raises ValueError for an event type the system does not publish.
        """
        if event is None:
            happened = self.dynamics.happen_somehow(system)
        elif event in system.events:
            data = self.dynamics.happen(event)
            happened = None if data is None else (event, data)
        else:
            raise ValueError(f"{system.value} publishes {sorted(system.events)}, not {event!r}")
        if happened is None:
            return None
        event, data = happened
        return self.broadcasters[system].publish(event, self.omissions.event(event, data))

    def _apply_to_open_sockets(self, settings: FaultSettings) -> None:
        """An outage closes a system's sockets; any other change wakes them to re-read their knobs."""
        for system, broadcaster in self.broadcasters.items():
            if settings.for_system(system).outage:
                broadcaster.close_all(CLOSE_TRY_AGAIN_LATER, f"{system.value} is unavailable (outage)")
            else:
                broadcaster.wake_all()
