"""Parity check: the ONNX export must reproduce the native model on the held-out set before it is published."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from mlstack.errors import ParityError
from mlstack.repository.card import Parity
from training.base import TrainResult

MAX_REPORTED_ROWS = 10


def run_onnx(onnx_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = sess.run(None, {name: x})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}


def check_parity(result: TrainResult) -> Parity:
    """Compare every native output with ONNX's; raise ParityError naming the rows that differ."""
    onnx_out = run_onnx(result.onnx_bytes, result.x_test)
    n = len(result.x_test)
    max_diff = 0.0
    agreement: float | None = None
    bad: list[dict] = []
    for key, native in result.native.items():
        if key not in onnx_out:
            raise ParityError(f"ONNX model has no output '{key}'", details={"outputs": sorted(onnx_out)})
        got = np.asarray(onnx_out[key])
        want = np.asarray(native)
        if got.size != want.size:
            raise ParityError(f"output '{key}' has shape {got.shape}, native {want.shape}")
        got = got.reshape(n, -1)
        want = want.reshape(n, -1)
        if key == "label":
            same = (got == want).all(axis=1)
            agreement = float(same.mean())
            for row in np.flatnonzero(~same)[:MAX_REPORTED_ROWS]:
                bad.append({"output": key, "row": int(row), "native": want[row].tolist(),
                            "onnx": got[row].tolist()})
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        row_diff = diff.max(axis=1)
        max_diff = max(max_diff, float(row_diff.max(initial=0.0)))
        for row in np.flatnonzero(row_diff > result.tolerance)[:MAX_REPORTED_ROWS]:
            bad.append({"output": key, "row": int(row), "max_abs_diff": float(row_diff[row])})
    parity = Parity(passed=not bad, n_rows=n, label_agreement=agreement, max_abs_diff=max_diff,
                    tolerance=result.tolerance, compared=sorted(result.native))
    if bad:
        raise ParityError(
            f"{result.name}: ONNX export differs from the native model on {len(bad)}+ rows "
            f"(tolerance {result.tolerance:g}, max abs diff {max_diff:.3g}, label agreement {agreement})",
            details={"rows": bad, "parity": parity.model_dump()},
        )
    return parity
