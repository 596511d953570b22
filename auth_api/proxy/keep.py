"""What the v2 HTTP, gRPC and REST predict paths keep of a prediction (``storage_keep`` / ``storage_keep_by``).

The route names are the history's protocols: ``http`` (v2 HTTP), ``grpc`` (unary and streamed), ``rest``
(``/api/v1/predict``); a model's entry wins over its route's, as in ``stored_inputs.keep_mode``. ``none`` journals a
bare row (id, model, version, status, timings: no input hash or shape, no outputs), as the task routes do;
``summary`` and ``input`` keep the summary. These paths carry tensors, not uploads, so ``input`` keeps no object: a
store per call would put a write on the hot path, and the summary already holds the input's sha256.
Resolved once per route: a call pays one dict lookup.
"""

from __future__ import annotations

from typing import Any

from mlstack.settings import Settings

EXTRAS_KEY = "keep_modes"
_VERSION = b'"model_version":"'


class RouteKeep:
    """The keep mode of one route for every model."""

    __slots__ = ("by_model", "default")

    def __init__(self, settings: Settings, route: str):
        by = settings.storage_keep_by
        self.default: str = by.get(route) or settings.storage_keep
        self.by_model: dict[str, str] = dict(by)  # a model's entry first (a route's name is no model's)

    def bare(self, model: str) -> bool:
        """Whether a success of ``model`` keeps a bare row (mode ``none``)."""
        return self.by_model.get(model, self.default) == "none"


def keep_of(gw: Any, route: str) -> RouteKeep:
    """The gateway's ``RouteKeep`` of ``route`` (resolved on first use; settings do not change while it runs)."""
    keeps: dict[str, RouteKeep] = gw.extras.setdefault(EXTRAS_KEY, {})
    keep = keeps.get(route)
    if keep is None:
        keep = keeps[route] = RouteKeep(gw.settings, route)
    return keep


def http_version(content: bytes) -> str | None:
    """``model_version`` of a v2 JSON answer, read off its head (Triton writes it before the outputs)."""
    i = content.find(_VERSION, 0, 512)
    if i < 0:
        return None
    start = i + len(_VERSION)
    end = content.find(b'"', start, start + 17)
    if end < 0:
        return None
    return content[start:end].decode("utf-8", errors="replace") or None
