"""How a handler reaches the composed services of its app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

if TYPE_CHECKING:
    from service.app import Services


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
