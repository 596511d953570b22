"""Model registry: list models and versions (with Triton readiness), upload, promote, roll back, delete."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, UploadFile, status
from starlette.concurrency import run_in_threadpool

from auth_api import registry
from auth_api.authn import Principal
from auth_api.core.errors import Forbidden, UpstreamTimeout, UpstreamUnavailable
from auth_api.deps import CurrentPrincipal, EngineerPrincipal, GatewayDep, UserPrincipal
from auth_api.jobs.ownership import ensure_visible, may_manage, may_use, owner_of, shares_of
from auth_api.model_stats import model_stats
from auth_api.models import Message
from auth_api.proxy.cache import cache_of
from auth_api.proxy.cache_admin import flush_from_thread
from auth_api.state import Gateway
from mlstack.errors import MlstackError, ModelNotFound, PublishError
from mlstack.repository import intake, serving
from mlstack.repository.layout import model_names, read_card, versions
from mlstack.repository.publish import Candidate, SandboxLimits, publish
from mlstack.repository.sandbox import sanitize

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/models", tags=["models"])
NamePath = Annotated[str, Path(max_length=64)]


class ConfirmationRequired(MlstackError):
    """A destructive call without the confirmation a script passes on purpose."""

    code = "confirmation_required"
    status = 400


# Rows of an uploaded SHAP background: Kernel SHAP costs (rows x coalitions) inferences per explained record.
MAX_BACKGROUND_ROWS = 1000


async def _triton_states(gw: Gateway) -> dict[tuple[str, str], dict[str, str]] | None:
    """(name, version) -> Triton's {state, reason} from the repository index; None when Triton cannot be reached."""
    try:
        resp = await gw.upstream.request("POST", "/v2/repository/index", content=b"{}", timeout=3.0)
    except (UpstreamUnavailable, UpstreamTimeout):
        return None
    if resp.status != 200:
        return None
    return {(m.get("name", ""), str(m.get("version", ""))): {"state": m.get("state", ""), "reason": sanitize(m.get("reason", ""), 500)}
            for m in json.loads(resp.content)}


def _describe(gw: Gateway, name: str, states: dict[tuple[str, str], dict[str, str]] | None) -> dict[str, Any]:
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
        st = states.get((name, str(v)), {}) if states is not None else None
        out.append({"version": v, "live": v in live, "ready": st.get("state") == "READY" if st is not None else None,
                    "triton_state": st.get("state") if st else None, "reason": (st.get("reason") or None) if st else None,
                    "card": card})
    return {"name": name, "live_version": live[-1] if live else None, "versions": out}


@router.get("")
async def list_models(p: UserPrincipal, gw: GatewayDep) -> list[dict[str, Any]]:
    """Models in the repository you may use (public, yours, shared), their versions, the live one, Triton readiness."""
    states = await _triton_states(gw)
    shares = shares_of(gw.extras)

    def build() -> list[dict[str, Any]]:
        rows = []
        for name in model_names(gw.settings.repository):
            if not may_use(p, name, shares):
                continue
            d = _describe(gw, name, states)
            live = next((v for v in d["versions"] if v["version"] == d["live_version"]), None)
            card = live["card"] if live else None
            rows.append({"name": name, "versions": [v["version"] for v in d["versions"]], "live_version": d["live_version"],
                         "task": card.get("task") if card else None, "ready": live["ready"] if live else None})
        return rows

    return await run_in_threadpool(build)


@router.get("/{name}")
async def get_model(name: NamePath, p: UserPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """Versions with their model cards, which one is live and which are ready in Triton."""
    ensure_visible(gw.extras, p, name)
    states = await _triton_states(gw)
    return await run_in_threadpool(_describe, gw, name, states)


@router.post("/{name}/versions", status_code=status.HTTP_201_CREATED)
def upload_version(name: NamePath, p: EngineerPrincipal, gw: GatewayDep,
                   file: Annotated[UploadFile, File(description="The ONNX model.")],
                   card: Annotated[str | None, Form(description="Model card JSON (optional; missing fields are inherited "
                                                                "from the live version, see docs/model_card.md).")] = None,
                   background: Annotated[UploadFile | None, File(description="SHAP background sample for `explain`: a .npy "
                                                                         "float array [rows, features], finite, at most "
                                                                         f"{MAX_BACKGROUND_ROWS} rows.")] = None,
                   ) -> dict[str, Any]:
    """Publish a new version (same validation as `mlstack publish`); it is live at once unless a version was pinned."""
    if owner_of(name) is not None and not may_manage(p, name):  # u<id>- names belong to that user
        raise Forbidden(f"'{name}' is in another user's namespace", code="namespace_reserved")
    s = gw.settings
    data = file.file.read()
    bg = background.file.read() if background is not None else None
    try:
        got = intake.prepare(s.repository, name, data, card, background=bg, max_background_rows=MAX_BACKGROUND_ROWS,
                             created_by=p.username)
        mc = got.card
        cand = Candidate(name=name, onnx_bytes=data, card=mc, labels=mc.labels or None,
                         label_output=got.label_output, extra_files=got.extra_files)
        pub = publish(s.repository, cand, max_batch_size=s.default_max_batch_size, instance_count=s.default_instance_count,
                      max_queue_delay_us=s.default_max_queue_delay_us, sandbox=SandboxLimits.from_settings(s))
    except PublishError:
        raise
    except OSError as exc:
        # The OSError names server paths: logged here, never sent to the client.
        logger.error("writing %s failed: %s", name, exc)
        raise PublishError("could not write the version", code="write_failed", details={"errno": exc.errno}) from exc
    gw.catalog.invalidate(name)
    registry.sync(gw.engine, s.repository, name, published_by={pub.version: p.username})
    logger.info("%s published %s version %d", p.username, name, pub.version)
    return {"name": pub.name, "version": pub.version, "card": pub.card.model_dump(mode="json"), **got.summary()}


def _served(gw: Gateway, name: str, before: int | None, now: int) -> dict[str, Any]:
    gw.catalog.invalidate(name)
    flush_from_thread(gw.extras, name)  # cached answers of the old live version must not outlive it
    registry.sync(gw.engine, gw.settings.repository, name)
    return {"name": name, "live_version": now, "previous_version": before}


@router.post("/{name}/versions/{version}/promote")
def promote(name: NamePath, version: int, p: EngineerPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """Make ``version`` the one Triton serves (Triton loads it before unloading the old one)."""
    ensure_visible(gw.extras, p, name)
    before = serving.promote(gw.settings.repository, name, version)
    logger.info("%s promoted %s version %d", p.username, name, version)
    return _served(gw, name, before, version)


@router.post("/{name}/rollback")
def rollback(name: NamePath, p: EngineerPrincipal, gw: GatewayDep, to_version: int | None = None) -> dict[str, Any]:
    """Serve the previous version (the highest below the live one), or ``to_version``."""
    ensure_visible(gw.extras, p, name)
    before, now = serving.rollback(gw.settings.repository, name, to_version)
    logger.info("%s rolled %s back from %s to %d", p.username, name, before, now)
    return _served(gw, name, before, now)


@router.delete("/{name}/versions/{version}", response_model=Message)
def delete_version(name: NamePath, version: int, p: CurrentPrincipal, gw: GatewayDep) -> Message:
    """Delete a version that is not live (admins; owners of their own models)."""
    _may_delete(gw, p, name)
    serving.delete_version(gw.settings.repository, name, version)
    gw.catalog.invalidate(name)
    flush_from_thread(gw.extras, name)
    registry.sync(gw.engine, gw.settings.repository, name)
    logger.info("%s deleted %s version %d", p.username, name, version)
    return Message(message=f"deleted {name} version {version}")


@router.delete("/{name}", response_model=Message)
def delete_model(name: NamePath, p: CurrentPrincipal, gw: GatewayDep, confirm: str | None = None) -> Message:
    """Delete a whole model (every version, the live one included); ``?confirm=<name>`` is required.
    Admins delete any model; owners their own.

    Triton unloads it; history rows are kept, registry rows become ``deleted``; its version numbers are never reused.
    """
    _may_delete(gw, p, name)
    if confirm != name:
        raise ConfirmationRequired(f"deleting model '{name}' removes every version and stops serving it; "
                                   f"repeat the model name: DELETE /api/v1/models/{name}?confirm={name}",
                                   details={"model": name, "confirm": name})
    removed = serving.delete_model(gw.settings.repository, name)
    if (shares := shares_of(gw.extras)) is not None and name in shares.names and p.user_id is not None:
        shares.set(name, False, p.user_id)  # a later model of the same name starts private
    gw.catalog.invalidate(name)
    flush_from_thread(gw.extras, name)
    registry.sync(gw.engine, gw.settings.repository, name)
    logger.info("%s deleted model %s (versions %s)", p.username, name, removed)
    return Message(message=f"deleted model {name} (versions {', '.join(map(str, removed))})")


def _may_delete(gw: Gateway, p: Principal, name: str) -> None:
    """Admins delete anything; owners their own models; others get 404 for user models they cannot see, else 403."""
    if p.role == "admin" or may_manage(p, name):
        return
    ensure_visible(gw.extras, p, name)
    raise Forbidden("requires role 'admin' (or owning the model)", code="insufficient_role",
                    details={"required": "admin", "role": p.role})


@router.get("/{name}/stats")
async def stats(name: NamePath, p: EngineerPrincipal, gw: GatewayDep,
                hours: Annotated[float, Query(gt=0, le=24 * 90, description="Window, in hours back from now.")] = 24.0) -> dict[str, Any]:
    """Requests, errors, latency percentiles and cache hits of the model, from the history of every gateway."""
    ensure_visible(gw.extras, p, name)
    if not gw.catalog.versions(name):
        raise ModelNotFound(name)
    out = await gw.run_db(model_stats, name, hours)
    cache = cache_of(gw.extras)
    if cache is not None:
        on, ttl = cache.policy(name)
        out["cache"] = {"enabled": on, "ttl_s": ttl, "backend": cache.backend, "this_process": cache.counts(name)}
    return out
