"""A servicer for a service whose methods are not built yet: every call ends UNIMPLEMENTED.

It goes through the normal error model, so the caller gets an ``ErrorInfo`` (reason ``NOT_IMPLEMENTED``,
``metadata.method``) and a message naming the capability still to come. Registering it keeps the
server's surface whole: reflection lists the service, health reports it, and auth checks its scopes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from server import errors


Handler = Callable[[Any, grpc.aio.ServicerContext], Coroutine[Any, Any, NoReturn]]


class NotImplementedYet(errors.ServiceError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED"


class UnimplementedServicer:
    """Answers every method of ``service`` with UNIMPLEMENTED; ``capability`` says what is missing."""

    def __init__(self, service: ServiceDescriptor, capability: str):
        self._service = service
        self._capability = capability

    def __getattr__(self, method: str) -> Handler:
        if method not in self._service.methods_by_name:
            raise AttributeError(method)
        full_name = f"{self._service.full_name}/{method}"
        message = f"{full_name} is not implemented yet: {self._capability}."

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> NoReturn:
            raise NotImplementedYet(message, metadata={"method": full_name, "capability": self._capability})

        return refuse
