"""The baseline: one plain FastAPI + onnxruntime process serving one model, as the original projects did.

It speaks the same KServe v2 JSON subset as Triton for one model (so the very same Locust load runs against both):
``python -m loadtests.baseline --model-dir model_repository/iris-logreg/1 --port 8090``. Its Locust file is
``baseline_rest.py`` (kept apart: importing locust monkey-patches the process with gevent, which uvicorn must not get).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

_DTYPES = {"tensor(float)": ("FP32", np.float32), "tensor(int64)": ("INT64", np.int64), "tensor(double)": ("FP64", np.float64)}


def create_app(model_dir: Path, name: str | None = None) -> FastAPI:
    """A FastAPI app answering ``POST /v2/models/{name}/infer`` from ``model_dir/model.onnx`` with one onnxruntime session."""
    model_dir = Path(model_dir)
    name = name or model_dir.resolve().parent.name
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    outputs = [(o.name, _DTYPES.get(o.type, ("FP32", np.float32))[0]) for o in session.get_outputs()]
    app = FastAPI(title=f"baseline {name}")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post(f"/v2/models/{name}/infer", response_model=None)
    async def infer(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = await request.json()
            spec = body["inputs"][0]
            x = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return error(400, f"bad request: {exc}")
        try:
            results = session.run(None, {input_name: x})
        except Exception as exc:  # onnxruntime's own errors (shape, dtype) are the client's fault here
            return error(400, f"inference failed: {exc}")
        return {"model_name": name, "model_version": model_dir.name,
                "outputs": [{"name": n, "datatype": dt, "shape": list(np.shape(r)), "data": np.asarray(r).ravel().tolist()}
                            for (n, dt), r in zip(outputs, results, strict=True)]}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="A version folder holding model.onnx.")
    parser.add_argument("--name", default=None, help="Model name in the URL (default: the parent folder's name).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(create_app(args.model_dir, args.name), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
