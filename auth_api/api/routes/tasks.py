"""``POST /api/v1/tasks/{task}``: task-level APIs (images, records, explanations, battery twin) via the BentoML service.

Bodies go to the service unchanged (multipart for ``classify_image``, JSON otherwise) and its answers, errors included,
come back unchanged (a success gains ``prediction_id``). Every call leaves a history row, summarised by the history
ingester (``task_summaries``): a success
with its outputs, a failure with its status and error code.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from auth_api import stored_inputs
from auth_api.authn import Principal
from auth_api.core.errors import NotFound
from auth_api.deps import GatewayDep, InferencePrincipal
from auth_api.jobs.ownership import ensure_visible, task_model
from auth_api.journal import new_prediction_id
from auth_api.proxy.bento import get_client
from auth_api.proxy.records import HEADER, base_record, failure_record, journal
from auth_api.state import Gateway
from mlstack.errors import MlstackError

router = APIRouter(prefix="/tasks", tags=["tasks"])

TASKS = ("classify_image", "predict_records", "explain", "simulate_battery")
SIMULATOR = "battery-simulator"  # the history's model for an unscored simulation

_JSON_BODY = {"schema": {"type": "object"}, "examples": {
    "predict_records": {"summary": "predict_records", "value": {"model": "iris-rf", "records": [
        {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}]}},
    "explain": {"summary": "explain", "value": {"model": "diabetes-rf", "records": [{"age": 0.03, "sex": 0.05, "bmi": 0.06,
                                                                                    "bp": 0.02, "s1": -0.04, "s2": -0.03,
                                                                                    "s3": -0.04, "s4": 0.0, "s5": 0.02,
                                                                                    "s6": -0.02}]}},
    "simulate_battery": {"summary": "simulate_battery", "value": {"profile": {"kind": "constant", "current_a": 3.0,
                                                                              "duration_s": 600, "rest_s": 300}}},
}}
_OPENAPI: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary", "description": "PNG or JPEG, at most 10 MiB (classify_image)"},
        "model": {"type": "string", "default": "digits-cnn"}, "top_k": {"type": "integer", "default": 3}}}},
    "application/json": _JSON_BODY}}}


@router.post("/{task}", openapi_extra=_OPENAPI, responses={200: {"content": {"application/json": {}}}})
async def run_task(task: str, request: Request, p: InferencePrincipal, gw: GatewayDep) -> Response:
    """Run a task on the BentoML service: ``classify_image`` (multipart), ``predict_records``, ``explain``,
    ``simulate_battery`` (JSON). See services/bento/README.md for each body and answer."""
    start = time.perf_counter()
    if task not in TASKS:
        raise NotFound(f"unknown task '{task[:64]}'; known tasks: {', '.join(TASKS)}", code="task_not_found",
                       details={"task": task[:64], "tasks": list(TASKS)})
    body = await request.body()
    pid = new_prediction_id()  # minted once the caller is known and the body read
    ctype = request.headers.get("content-type") or ("application/octet-stream" if task == "classify_image" else "application/json")
    if (named := task_model(body, ctype)) is not None:
        ensure_visible(gw.extras, p, named)  # another user's model answers as a missing one
    # Metrics label the call with its model (bounded: 'other' unless the repository holds it) before it can fail, so a
    # failed task counts for that model too; a success relabels it with the model and version that answered.
    request.state.model = named or (SIMULATOR if task == "simulate_battery" else task)
    try:
        up = await get_client(gw.extras).post(task, body, ctype)
    except MlstackError as exc:  # task service down or timing out: the caller's failed prediction all the same
        pid = _record_failure(gw, pid, p, request, task, body, ctype, int(exc.status), str(exc.code), start, 0.0)
        if exc.status == 503:  # the service restarting or shutting down: a client should come back shortly
            return JSONResponse(exc.to_body(), status_code=503, headers={"Retry-After": "1", HEADER: pid})
        return JSONResponse(exc.to_body(), status_code=exc.status, headers={HEADER: pid})
    if up.status != 200:  # errors pass through as the service wrote them; history records status and code only
        gw.metrics.upstream_latency.labels("task", request.state.model).observe(up.elapsed_s)
        pid = _record_failure(gw, pid, p, request, task, body, ctype, up.status, _error_code(up.content, up.status), start,
                              up.elapsed_s)
        return Response(up.content, status_code=up.status, headers={**up.headers, HEADER: pid})
    try:
        doc: Any = json.loads(up.content)
    except ValueError:
        doc = None
    model, version = _identity(task, doc)
    gw.metrics.upstream_latency.labels("task", model).observe(up.elapsed_s)
    request.state.model, request.state.version = model, version or ""
    rec = base_record(p, model=model, version=version, protocol=f"task:{task}", status=200,
                      total_s=time.perf_counter() - start, upstream_s=up.elapsed_s,
                      client_ip=request.client.host if request.client else None)
    keep = stored_inputs.keep_mode(gw.settings, task, model)
    journal(gw.journal, pid, rec, None if keep == "none" else ("task", task, body, ctype, up.content))
    if keep == "input":  # stored after the answer is computed, off its path; the row learns of it once stored
        stored_inputs.capture(gw, pid, p.user_id, body, ctype)
    return Response(_with_id(up.content, pid) if isinstance(doc, dict) else up.content, status_code=200,
                    headers={**up.headers, HEADER: pid})


def _with_id(content: bytes, pid: str) -> bytes:
    """The service's JSON object with ``prediction_id`` first (spliced: the answer is not parsed and dumped again)."""
    head, _, rest = content.partition(b"{")
    sep = b"" if rest.lstrip().startswith(b"}") else b","
    return head + b'{"prediction_id":"' + pid.encode() + b'"' + sep + rest


def _record_failure(gw: Gateway, pid: str, p: Principal, request: Request, task: str, body: bytes, ctype: str, status: int,
                    code: str, start: float, upstream_s: float) -> str:
    rec = failure_record(p, model=SIMULATOR if task == "simulate_battery" else task, version=None, protocol=f"task:{task}",
                         status=status, code=code, total_s=time.perf_counter() - start, upstream_s=upstream_s,
                         client_ip=request.client.host if request.client else None)
    journal(gw.journal, pid, rec, ("task_failure", body, ctype))
    return pid


def _error_code(content: bytes, status: int) -> str:
    """The ``error.code`` of the service's answer (the project's error shape), else one derived from the status."""
    try:
        err = json.loads(content).get("error")
    except (ValueError, AttributeError):
        err = None
    code = err.get("code") if isinstance(err, dict) else None
    return str(code) if code else ("task_rejected" if status < 500 else "task_failed")


def _identity(task: str, doc: Any) -> tuple[str, str | None]:
    """The model and version a successful answer came from (a simulation is attributed to its fault classifier)."""
    if not isinstance(doc, dict):
        return (SIMULATOR if task == "simulate_battery" else task), None
    if task == "simulate_battery":
        fault = (doc.get("scores") or {}).get("battery-fault")
        if isinstance(fault, dict) and fault.get("version") is not None:
            return "battery-fault", str(fault["version"])
        return SIMULATOR, None
    version = doc.get("version")
    return str(doc.get("model") or task)[:64], (str(version)[:16] if version is not None else None)
