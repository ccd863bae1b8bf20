"""How a handler reaches the composed services of its app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from service.identity import UNAUTHENTICATED, Caller

if TYPE_CHECKING:
    from service.app import Services


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


#: Where the authentication middleware leaves the request's caller (ASGI scope key).
CALLER_KEY = "zipedge.caller"


def caller_of(request: Request) -> Caller:
    """The request's caller; without authentication, one that may do everything."""
    found: Caller = request.scope.get(CALLER_KEY, UNAUTHENTICATED)
    return found
