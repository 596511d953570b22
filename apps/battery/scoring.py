"""Score feature rows with the served ``battery-fault`` and ``battery-anomaly`` models through Triton (the gateway's
upstream client, KServe v2 JSON), in batches no larger than the models' ``max_batch_size``."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from auth_api.core.errors import InvalidInput
from auth_api.state import Gateway
from mlstack.errors import MlstackError, ModelNotFound

FAULT_MODEL = "battery-fault"
ANOMALY_MODEL = "battery-anomaly"


@dataclass
class Scored:
    outputs: dict[str, np.ndarray]
    version: str | None
    labels: list[str] | None


async def infer(gw: Gateway, model: str, x: np.ndarray) -> Scored:
    """All rows of ``x`` through Triton (chunked); outputs concatenated in row order."""
    spec = gw.catalog.spec(model)
    chunk = spec.max_batch_size if spec.max_batch_size > 0 else 64
    in_name = next(iter(spec.inputs), "input")
    parts: dict[str, list[np.ndarray]] = {}
    version: str | None = None
    for start in range(0, len(x), chunk):
        rows = np.ascontiguousarray(x[start:start + chunk], dtype=np.float32)
        payload = json.dumps({"inputs": [{"name": in_name, "shape": list(rows.shape), "datatype": "FP32",
                                          "data": rows.reshape(-1).tolist()}]}).encode()
        up = await gw.upstream.request("POST", f"/v2/models/{model}/infer", payload, {"content-type": "application/json"})
        gw.metrics.upstream_latency.labels("rest", model).observe(up.elapsed_s)
        doc = json.loads(up.content) if up.content else {}
        if up.status == 404:
            raise ModelNotFound(model)
        if up.status != 200:
            msg = str(doc.get("error") if isinstance(doc, dict) else "") or "inference failed"
            if 400 <= up.status < 500:
                raise InvalidInput(msg, code="inference_rejected", details={"model": model, "upstream_status": up.status})
            err = MlstackError(msg, code="inference_failed", details={"model": model, "upstream_status": up.status})
            err.status = 502
            raise err
        version = str(doc.get("model_version") or "") or version
        for o in doc.get("outputs", []):
            dtype = np.int64 if o["datatype"].startswith("INT") else np.float32
            parts.setdefault(o["name"], []).append(np.asarray(o["data"], dtype=dtype).reshape(o["shape"]))
    outputs = {k: np.concatenate(v) for k, v in parts.items()}
    labels = gw.catalog.labels(model, version)
    return Scored(outputs=outputs, version=version, labels=labels)
