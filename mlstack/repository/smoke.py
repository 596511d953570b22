"""Child side of the publish smoke run (started by sandbox.smoke_run with ``MEMORY_BYTES CPU_SECONDS`` arguments).

Runs with the candidate's private folder as cwd (``model.onnx`` + ``config.pbtxt``), limits itself before touching the
model, loads it exactly as services/triton/backend/model.py does (threads and providers from the config, loaded by
path) and runs zeros of the declared shape. Prints one JSON line: ``{"ok": true}`` or ``{"ok": false, "code", ...}``.
"""

from __future__ import annotations

import json
import resource
import sys
from typing import Any


def _limit(memory_bytes: int, cpu_seconds: int) -> None:
    # Set here rather than in a preexec_fn: preexec_fn may deadlock when the parent has threads (the gateway does),
    # and nothing of the model has been read yet.
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _param(cfg: Any, key: str, default: int) -> int:
    value = cfg.parameters[key].string_value if key in cfg.parameters else ""
    try:
        return int(value) if value else default
    except ValueError:
        return default


def _fail(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message, **details}


def run() -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from mlstack.repository import config as cfgmod

    with open("config.pbtxt") as fh:
        cfg = cfgmod.loads(fh.read())
    options = ort.SessionOptions()
    options.intra_op_num_threads = _param(cfg, "intra_op_thread_count", 1)
    options.inter_op_num_threads = _param(cfg, "inter_op_thread_count", 1)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        sess = ort.InferenceSession("model.onnx", options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return _fail("smoke_failed", "onnxruntime cannot load the model (Triton could not either)", reason=str(exc)[:2000])
    graph_outputs = {o.name for o in sess.get_outputs()}
    missing = [t.name for t in cfg.output if t.name not in graph_outputs]
    if missing:
        return _fail("smoke_failed", f"outputs {missing} of the config are not outputs of the ONNX graph")
    batching = cfg.max_batch_size > 0
    # Batch 1 is Triton's warm-up request; batch 2 shows the batch axis is really dynamic.
    for batch in ([1, 2] if batching else [0]):
        lead = [batch] if batching else []
        feeds = {}
        for t in cfg.input:
            dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            feeds[t.name] = np.zeros(lead + [d if d > 0 else 1 for d in dims], dtype=cfgmod.numpy_dtype(t.data_type))
        try:
            outs = sess.run([t.name for t in cfg.output], feeds)
        except Exception as exc:
            return _fail("smoke_failed", "smoke run on an input of the declared shape failed", reason=str(exc)[:2000],
                         input_shapes={k: list(v.shape) for k, v in feeds.items()})
        for t, out in zip(cfg.output, outs, strict=True):
            if batching and (np.ndim(out) == 0 or np.shape(out)[0] != batch):
                return _fail("no_batch_dimension", f"output '{t.name}' does not keep the batch axis (shape {list(np.shape(out))})",
                             tensor=t.name)
    return {"ok": True}


def main() -> None:
    _limit(int(sys.argv[1]), int(sys.argv[2]))
    try:
        result = run()
    except MemoryError:
        result = _fail("smoke_failed", "the model needs more memory than the smoke run allows")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
