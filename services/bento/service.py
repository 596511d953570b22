"""The BentoML task service: classify images, score and explain records, simulate a battery cell.

Python pre/post-processing lives here; tensor work goes to ``TensorWorker`` (Triton or onnxruntime runner).
Run: ``bentoml serve services.bento.service:TaskService`` (env ``MLSTACK_*``). Errors are always
``{"error": {"code", "message", "details"}}`` with the right status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import bentoml
import httpx
import numpy as np

from mlstack.errors import MlstackError
from mlstack.settings import get_settings
from services.bento import battery, explain, images
from services.bento import records as recmod
from services.bento.catalog import Catalog, Resolved
from services.bento.errors import BadRequest, ImageTooLarge, InvalidRecords, RunnerTimeout, RunnerUnavailable, UnsupportedModel
from services.bento.http_errors import ErrorShapeMiddleware, JsonFieldGuard, MultipartFieldGuard, guard
from services.bento.worker import ROW_BATCH_SIZE, TensorWorker

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_MODEL = "digits-cnn"
# Form fields of the multipart APIs, the file field first (anything else is refused with a 400 naming it).
MULTIPART_FIELDS = {"/classify_image": ("image", "model", "top_k", "version")}
# explain's ``method`` -> the explainer named in the answer.
EXPLAIN_METHODS = {"shap": "shap.KernelExplainer", "lime": "lime.LimeTabularExplainer"}
# Transport failures of a call to the worker that are safe to send again once: the worker's server closing an idle
# keep-alive connection, and BentoML 1.4's internal client replacing its session while calls still use the old one
# ("Connector is closed", RuntimeError "Connection closed"). Inference is idempotent.
RETRYABLE = (aiohttp.ClientConnectionError, httpx.TransportError)
RETRY_AFTER_S = 1


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE) or (isinstance(exc, RuntimeError) and "closed" in str(exc).lower())


def _unavailable(exc: BaseException) -> RunnerUnavailable:
    logger.warning("worker unreachable after a retry: %s: %s", type(exc).__name__, exc)
    return RunnerUnavailable("the tensor worker is unavailable (restarting or shutting down); retry shortly",
                             details={"reason": type(exc).__name__, "retry_after_s": RETRY_AFTER_S})


def _retry_sync(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        if not _transient(exc):
            raise
        logger.info("worker call failed in transport (%s); retrying once", type(exc).__name__)
    try:
        return call()
    except Exception as exc:
        if _transient(exc):
            raise _unavailable(exc) from exc
        raise


async def _retry_async(call: Callable[[], Awaitable[Any]], deadline_s: float) -> Any:
    """One retry on a transport failure or a call past ``deadline_s``; a second failure is a 503 (transport) or a
    504 (deadline), never a 500 and never BentoML's own 120 s traffic timeout.

    The deadline guards against a call that never answers (seen once in CI: a classify_image burst got BentoML's
    "Not able to process the request in 120 seconds"; a fresh call goes out on a fresh pooled connection).
    """
    try:
        return await asyncio.wait_for(call(), deadline_s)
    except TimeoutError:
        logger.warning("worker call got no answer in %g s; sending it once more", deadline_s)
    except Exception as exc:
        if not _transient(exc):
            raise
        logger.info("worker call failed in transport (%s); retrying once", type(exc).__name__)
    try:
        return await asyncio.wait_for(call(), deadline_s)
    except TimeoutError as exc:
        raise RunnerTimeout(f"the tensor worker did not answer within {deadline_s:g} s (twice)",
                            details={"timeout_s": deadline_s, "attempts": 2}) from exc
    except Exception as exc:
        if _transient(exc):
            raise _unavailable(exc) from exc
        raise


def _raise_if_error(res: dict[str, Any]) -> None:
    if "error" in res:
        err = res["error"]
        exc = MlstackError(err["message"], details=err.get("details"), code=err["code"])
        exc.status = int(res.get("status", 500))
        raise exc


@bentoml.service(name="mlstack-tasks", workers=1, threads=2, traffic={"timeout": 120})
class TaskService:
    """Task-level APIs for product apps; see services/bento/README.md."""

    worker = bentoml.depends(TensorWorker)

    def __init__(self) -> None:
        self.settings = get_settings()
        self.catalog = Catalog(Path(self.settings.repository))

    # ---- tensor calls -------------------------------------------------------------------
    async def _infer_rows(self, model: Resolved, samples: np.ndarray) -> dict[str, np.ndarray]:
        if len(samples) > ROW_BATCH_SIZE:
            # One array per row would make BentoML list every buffer's length in one HTTP header, past aiohttp's
            # 8,190-byte line limit from ~1,700 rows; a big request is already a batch: send it as one tensor.
            return await self._infer_batch(model, samples)
        rows = [{"model": model.name, "version": model.version, "inputs": {model.input_name: s}} for s in samples]
        res = await _retry_async(lambda: self.worker.to_async.infer_rows(rows), self.settings.bento_worker_call_timeout_s)
        for r in res:
            _raise_if_error(r)
        return model.by_role({k: np.stack([r["outputs"][k] for r in res]) for k in res[0]["outputs"]})

    async def _infer_batch(self, model: Resolved, x: np.ndarray) -> dict[str, np.ndarray]:
        res = await _retry_async(lambda: self.worker.to_async.infer(model=model.name, inputs={model.input_name: x},
                                                                    version=model.version),
                                 self.settings.bento_worker_call_timeout_s)
        _raise_if_error(res)
        return model.by_role({k: np.asarray(v) for k, v in res["outputs"].items()})

    def _infer_sync(self, model: Resolved, x: np.ndarray) -> dict[str, np.ndarray]:
        res = _retry_sync(lambda: self.worker.to_sync.infer(model=model.name, inputs={model.input_name: x},
                                                             version=model.version))
        _raise_if_error(res)
        return model.by_role({k: np.asarray(v) for k, v in res["outputs"].items()})

    # ---- APIs -----------------------------------------------------------------------------
    @bentoml.api
    @guard
    async def classify_image(self, image: Path, model: str = DEFAULT_IMAGE_MODEL, top_k: int = 3,
                             version: int | None = None) -> dict[str, Any]:
        """Multipart ``image`` (PNG/JPEG, any size, either polarity) -> the digit, most probable first.

        A missing or misnamed file field is refused by ``MultipartFieldGuard`` before BentoML parses the form.
        """
        size = Path(image).stat().st_size
        limit = self.settings.bento_max_image_bytes
        if size > limit:  # checked before reading: an oversized upload is never loaded into memory
            raise ImageTooLarge(f"image is {size} bytes; the limit is {limit} bytes", details={"bytes": size, "limit": limit})
        resolved = self.catalog.resolve(model, version)
        spec = images.image_spec(resolved.card)
        labels = resolved.card.labels or []
        if not 1 <= top_k <= max(len(labels), 1):
            raise BadRequest(f"top_k must be between 1 and {len(labels)}", details={"top_k": top_k})
        img = images.decode(Path(image).read_bytes(), max_bytes=limit, max_pixels=self.settings.bento_max_image_pixels,
                            max_decode_pixels=self.settings.bento_max_decode_pixels)
        tensor = images.to_tensor(images.normalise(img, spec), resolved.card)
        outs = await self._infer_rows(resolved, tensor[None])
        proba = outs["probabilities"][0]
        order = np.argsort(-proba, kind="stable")[:top_k]
        return {"model": resolved.name, "version": resolved.version,
                "predictions": [{"label": labels[i] if i < len(labels) else str(i), "probability": float(proba[i])}
                                for i in order]}

    @bentoml.api
    @guard
    async def predict_records(self, model: str, records: list[Any], version: int | None = None) -> dict[str, Any]:
        """Records keyed by feature name -> one result per record (class + probabilities, value, or anomaly score)."""
        resolved = self.catalog.resolve(model, version)
        x = records_matrix(records, resolved)
        outs = await self._infer_rows(resolved, x)
        return {"model": resolved.name, "version": resolved.version, "task": resolved.card.task,
                "results": recmod.results(resolved.card, outs)}

    @bentoml.api
    @guard
    def explain(self, model: str, records: list[Any], version: int | None = None, target: str | None = None,
                method: str = "shap") -> dict[str, Any]:
        """Per-record attributions: Kernel SHAP (contributions + base value = the output) or LIME (local linear weights)."""
        if method not in EXPLAIN_METHODS:
            raise InvalidRecords(f"unknown method '{method[:32]}'; supported: {', '.join(EXPLAIN_METHODS)}",
                                 code="unsupported_method", details={"field": "method", "supported": list(EXPLAIN_METHODS)})
        resolved = self.catalog.resolve(model, version)
        x = records_matrix(records, resolved)
        if len(x) > explain.MAX_EXPLAIN_RECORDS:
            raise InvalidRecords(f"{len(x)} records; explain takes at most {explain.MAX_EXPLAIN_RECORDS} per request",
                                 details={"limit": explain.MAX_EXPLAIN_RECORDS})
        background, source = explain.load_background(resolved.path, resolved.card)

        def predict(z: np.ndarray) -> dict[str, np.ndarray]:
            return self._infer_sync(resolved, z)

        outs = predict(x)
        targets = [explain.target_for(resolved.card, outs, i, target) for i in range(len(x))]
        run = explain.explain_rows_lime if method == "lime" else explain.explain_rows
        rows = run(predict, resolved.card, x, background, nsamples=self.settings.bento_explain_nsamples, targets=targets)
        preds = recmod.results(resolved.card, outs)
        for row, pred in zip(rows, preds, strict=True):
            row["prediction"] = pred
        return {"model": resolved.name, "version": resolved.version, "task": resolved.card.task,
                "method": EXPLAIN_METHODS[method], "feature_names": resolved.card.feature_names,
                "background": source, "background_rows": len(background), "explanations": rows}

    @bentoml.api
    @guard
    async def simulate_battery(self, profile: dict[str, Any] | None = None, cell: dict[str, Any] | None = None,
                               dt: float = 1.0, fault: str = "normal", fault_severity: float = 0.5, seed: int = 0,
                               score: bool = True) -> dict[str, Any]:
        """Run the cell digital twin through a load profile; optionally score it with battery-fault/-anomaly."""
        tel, feats = battery.run(cell, profile, dt=dt, fault=fault, fault_severity=fault_severity, seed=seed)
        out: dict[str, Any] = {"telemetry": tel.to_dict(), "features": battery.features_dict(feats), "scores": {}}
        if score:
            for name in battery.SCORERS:
                try:
                    resolved = self.catalog.resolve(name)
                    x = records_matrix([battery.features_dict(feats)], resolved)
                    result = recmod.results(resolved.card, await self._infer_rows(resolved, x))[0]
                    out["scores"][name] = {"version": resolved.version, **result}
                except MlstackError as exc:
                    out["scores"][name] = exc.to_body()
        return out

    @bentoml.api
    @guard
    def models(self) -> dict[str, Any]:
        """Models this service can use, with the version it serves and what each task needs."""
        return {"models": self.catalog.listing()}

    @bentoml.api
    @guard
    async def health(self) -> dict[str, Any]:
        """Runner reachability and how many models the repository serves."""
        worker = await self.worker.to_async.ready()
        n = len(self.catalog.listing())
        body = {"status": "ok" if worker["ready"] else "degraded", "runner": worker["runner"],
                "runner_ready": worker["ready"], "models": n}
        if not worker["ready"]:
            raise RunnerUnavailable("the runner is not ready", details=body)
        return body


TaskService.add_asgi_middleware(ErrorShapeMiddleware)  # type: ignore[attr-defined]  # bentoml's decorator hides it from mypy
TaskService.add_asgi_middleware(MultipartFieldGuard, fields=MULTIPART_FIELDS)  # type: ignore[attr-defined]
# Each API's JSON body may carry only its parameters (the input model BentoML derived from the signature).
TaskService.add_asgi_middleware(JsonFieldGuard, fields={  # type: ignore[attr-defined]
    api.route: frozenset(api.input_spec.model_fields) for api in TaskService.apis.values()})  # type: ignore[attr-defined]


def records_matrix(recs: list[Any], resolved: Resolved) -> np.ndarray:
    if resolved.card.task not in ("classification", "regression", "anomaly_detection"):
        raise UnsupportedModel(f"model '{resolved.name}' has task {resolved.card.task}")
    return recmod.to_matrix(recs, resolved.card)
