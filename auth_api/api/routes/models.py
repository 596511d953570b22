"""Model registry: list models and versions (with Triton readiness), upload, promote, roll back, delete."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, UploadFile, status
from starlette.concurrency import run_in_threadpool

from auth_api import registry
from auth_api.core.errors import InvalidInput, UpstreamTimeout, UpstreamUnavailable
from auth_api.deps import AdminPrincipal, EngineerPrincipal, GatewayDep, UserPrincipal
from auth_api.models import Message
from auth_api.state import Gateway
from mlstack.errors import ModelNotFound, PublishError
from mlstack.repository import serving
from mlstack.repository.card import Dataset, ModelCard
from mlstack.repository.layout import model_names, read_card, versions
from mlstack.repository.publish import Candidate, publish

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/models", tags=["models"])
NamePath = Annotated[str, Path(max_length=64)]


async def _triton_states(gw: Gateway) -> dict[tuple[str, str], str] | None:
    """(name, version) -> Triton state from the repository index; None when Triton cannot be reached."""
    try:
        resp = await gw.upstream.request("POST", "/v2/repository/index", content=b"{}", timeout=3.0)
    except (UpstreamUnavailable, UpstreamTimeout):
        return None
    if resp.status != 200:
        return None
    return {(m.get("name", ""), str(m.get("version", ""))): m.get("state", "") for m in json.loads(resp.content)}


def _describe(gw: Gateway, name: str, states: dict[tuple[str, str], str] | None) -> dict[str, Any]:
    repo = gw.settings.repository
    vs = versions(repo, name)
    if not vs:
        raise ModelNotFound(name)
    live = serving.live_versions(repo, name)
    out = []
    for v in vs:
        try:
            card: dict[str, Any] | None = read_card(repo, name, v).model_dump(mode="json")
        except (ModelNotFound, ValueError):
            card = None
        out.append({"version": v, "live": v in live, "ready": (states.get((name, str(v))) == "READY") if states is not None else None,
                    "card": card})
    return {"name": name, "live_version": live[-1] if live else None, "versions": out}


@router.get("")
async def list_models(_: UserPrincipal, gw: GatewayDep) -> list[dict[str, Any]]:
    """Models in the repository, their versions, the live one and whether Triton has it ready."""
    states = await _triton_states(gw)

    def build() -> list[dict[str, Any]]:
        rows = []
        for name in model_names(gw.settings.repository):
            d = _describe(gw, name, states)
            live = next((v for v in d["versions"] if v["version"] == d["live_version"]), None)
            card = live["card"] if live else None
            rows.append({"name": name, "versions": [v["version"] for v in d["versions"]], "live_version": d["live_version"],
                         "task": card.get("task") if card else None, "ready": live["ready"] if live else None})
        return rows

    return await run_in_threadpool(build)


@router.get("/{name}")
async def get_model(name: NamePath, _: UserPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """Versions with their model cards, which one is live and which are ready in Triton."""
    states = await _triton_states(gw)
    return await run_in_threadpool(_describe, gw, name, states)


@router.post("/{name}/versions", status_code=status.HTTP_201_CREATED)
def upload_version(name: NamePath, p: EngineerPrincipal, gw: GatewayDep,
                   file: Annotated[UploadFile, File(description="The ONNX model.")],
                   card: Annotated[str | None, Form(description="Model card JSON (optional).")] = None) -> dict[str, Any]:
    """Publish a new version (same validation as `mlstack publish`); it is live at once unless a version was pinned."""
    s = gw.settings
    try:
        mc = (ModelCard.model_validate_json(card) if card else
              ModelCard(name=name, task="regression", framework="external", algorithm="unknown",
                        dataset=Dataset(name="unknown", source="external")))
    except ValueError as exc:
        raise InvalidInput("card is not a valid model card", code="invalid_card", details={"reason": str(exc)[:2000]}) from exc
    mc.created_by = p.username
    data = file.file.read()
    cand = Candidate(name=name, onnx_bytes=data, card=mc, labels=mc.labels or None,
                     label_output="probabilities" if mc.labels else None)
    try:
        pub = publish(s.repository, cand, max_batch_size=s.default_max_batch_size, instance_count=s.default_instance_count,
                      max_queue_delay_us=s.default_max_queue_delay_us)
    except PublishError:
        raise
    except OSError as exc:
        raise PublishError(f"could not write the version: {exc}", code="write_failed") from exc
    gw.catalog.invalidate(name)
    registry.sync(gw.engine, s.repository, name, published_by={pub.version: p.username})
    logger.info("%s published %s version %d", p.username, name, pub.version)
    return {"name": pub.name, "version": pub.version, "card": pub.card.model_dump(mode="json")}


def _served(gw: Gateway, name: str, before: int | None, now: int) -> dict[str, Any]:
    gw.catalog.invalidate(name)
    registry.sync(gw.engine, gw.settings.repository, name)
    return {"name": name, "live_version": now, "previous_version": before}


@router.post("/{name}/versions/{version}/promote")
def promote(name: NamePath, version: int, p: EngineerPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """Make ``version`` the one Triton serves (Triton loads it before unloading the old one)."""
    before = serving.promote(gw.settings.repository, name, version)
    logger.info("%s promoted %s version %d", p.username, name, version)
    return _served(gw, name, before, version)


@router.post("/{name}/rollback")
def rollback(name: NamePath, p: EngineerPrincipal, gw: GatewayDep, to_version: int | None = None) -> dict[str, Any]:
    """Serve the previous version (the highest below the live one), or ``to_version``."""
    before, now = serving.rollback(gw.settings.repository, name, to_version)
    logger.info("%s rolled %s back from %s to %d", p.username, name, before, now)
    return _served(gw, name, before, now)


@router.delete("/{name}/versions/{version}", response_model=Message)
def delete_version(name: NamePath, version: int, p: AdminPrincipal, gw: GatewayDep) -> Message:
    """Delete a version that is not live."""
    serving.delete_version(gw.settings.repository, name, version)
    gw.catalog.invalidate(name)
    registry.sync(gw.engine, gw.settings.repository, name)
    logger.info("%s deleted %s version %d", p.username, name, version)
    return Message(message=f"deleted {name} version {version}")
