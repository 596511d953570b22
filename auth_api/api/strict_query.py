"""Routers of the gateway's own API refuse query parameters their routes do not declare (422 naming them).

A misspelt or unsupported filter (``?rol=admin``, ``?model=`` where there is none) would otherwise be ignored and the
unfiltered answer taken for a filtered one.
"""

from __future__ import annotations

from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection

_known: dict[int, frozenset[str]] = {}


def _query_names(dep: Dependant) -> set[str]:
    names = {p.alias for p in dep.query_params}
    for sub in dep.dependencies:
        names |= _query_names(sub)
    return names


def declared_query(route: APIRoute) -> frozenset[str]:
    """Every query parameter ``route`` (and its dependencies) reads, by its alias."""
    names = _known.get(id(route))
    if names is None:
        names = _known[id(route)] = frozenset(_query_names(route.dependant))
    return names


async def no_unknown_query(conn: HTTPConnection) -> None:
    """Router dependency: 422 ``invalid_request`` listing each undeclared query parameter (``loc: ["query", name]``).

    Typed as an ``HTTPConnection`` so it can sit on a router that also holds WebSocket routes (it checks HTTP routes
    only: a WebSocket's refusals are messages, see ``auth_api.ws.route``)."""
    route = conn.scope.get("route")
    if not isinstance(route, APIRoute) or not conn.query_params:
        return
    unknown = sorted(set(conn.query_params.keys()) - declared_query(route))
    if unknown:
        raise RequestValidationError([
            {"type": "extra_forbidden", "loc": ("query", name), "msg": f"unknown query parameter '{name}'",
             "input": conn.query_params.get(name)} for name in unknown])
