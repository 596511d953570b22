"""Python-based Triton backend named ``onnxruntime``: runs ``<model>/<version>/model.onnx`` with onnxruntime.

Installed as ``<backend-dir>/onnxruntime/model.py`` so models declaring ``backend: "onnxruntime"`` run here
when the native C++ backend is absent (the pytriton wheel's tritonserver); the stock container uses its own.
Everything (tensor names, dtypes, shapes, threads) comes from the model config, nothing is hard-coded.
All requests of one ``execute`` call run as one onnxruntime batch; each request gets its own response, and a
bad request gets its own error without failing its neighbours. Top-k classification (``class_count``) is
applied by Triton's core from the full output and its ``label_filename``, so it needs nothing here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# Triton config dtype -> numpy dtype.
_NUMPY = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16, "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8, "TYPE_INT16": np.int16, "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64, "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


class BadRequest(Exception):
    """A request the model cannot run; answered with INVALID_ARG (HTTP 400) for that request only."""


@dataclass
class Spec:
    """One input/output as the ONNX graph sees it (reshape applied), batch axis excluded."""

    name: str
    dtype: type
    shape: list[int]


def _int(value: object) -> int:
    return int(value)  # Triton's JSON gives int64 fields as strings


def _spec(tensor: dict) -> Spec:
    # Triton's core applies reshape: inputs arrive, and outputs must leave, in the reshape shape.
    reshape = tensor.get("reshape")
    shape = reshape.get("shape", []) if reshape is not None else tensor.get("dims", [])
    return Spec(tensor["name"], _NUMPY[tensor["data_type"]], [_int(d) for d in shape])


def _param(config: dict, key: str, default: int) -> int:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    try:
        return int(value) if value != "" else default
    except ValueError:
        return default


def _model_file(args: dict, config: dict) -> str:
    filename = config.get("default_model_filename") or "model.onnx"
    base = args["model_repository"]  # the model's own folder; some releases pass the repository root
    version = args["model_version"]
    path = os.path.join(base, version, filename)
    if not os.path.exists(path):
        path = os.path.join(base, args["model_name"], version, filename)
    return path


def _error(message: str, code: int | None = None) -> pb_utils.InferenceResponse:
    code = pb_utils.TritonError.INVALID_ARG if code is None else code
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


class TritonPythonModel:
    """One instance per Triton model instance; holds one onnxruntime session."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.batching = _int(config.get("max_batch_size", 0)) > 0
        self.inputs = [_spec(t) for t in config.get("input", [])]
        self.outputs = [_spec(t) for t in config.get("output", [])]

        options = ort.SessionOptions()
        # Default 1/1 so that several instances on a small box don't oversubscribe its cores.
        options.intra_op_num_threads = _param(config, "intra_op_thread_count", 1)
        options.inter_op_num_threads = _param(config, "inter_op_thread_count", 1)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers: list = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            device = int(args.get("model_instance_device_id", "0") or 0)
            providers = [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(_model_file(args, config), options, providers=providers)
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing = [o.name for o in self.outputs if o.name not in graph_outputs]
        if missing:
            raise pb_utils.TritonModelException(f"outputs {missing} of config.pbtxt are not outputs of the ONNX graph")
        self.output_names = [o.name for o in self.outputs]
        self.provider = self.session.get_providers()[0]

    # ---- validation -----------------------------------------------------------------
    def _read(self, request) -> tuple[dict[str, np.ndarray], int]:
        """The request's feeds (model dtypes) and its row count; raises BadRequest naming the problem."""
        feeds: dict[str, np.ndarray] = {}
        rows = -1
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                raise BadRequest(f"input '{spec.name}' is missing")
            arr = tensor.as_numpy()
            expected = len(spec.shape) + (1 if self.batching else 0)
            if arr.ndim != expected:
                raise BadRequest(f"input '{spec.name}' has shape {list(arr.shape)}, expected rank {expected}")
            fixed = arr.shape[1:] if self.batching else arr.shape
            for got, want in zip(fixed, spec.shape, strict=True):
                if want > 0 and got != want:
                    raise BadRequest(f"input '{spec.name}' has shape {list(arr.shape)}, expected {spec.shape} per row")
            if arr.dtype != spec.dtype and spec.dtype is not np.object_:
                raise BadRequest(f"input '{spec.name}' has dtype {arr.dtype}, expected {np.dtype(spec.dtype).name}")
            if arr.dtype.kind == "f":
                if np.isnan(arr).any():
                    raise BadRequest(f"input '{spec.name}' contains NaN")
                if np.isinf(arr).any():
                    raise BadRequest(f"input '{spec.name}' contains infinity")
            if self.batching:
                if rows not in (-1, arr.shape[0]):
                    raise BadRequest(f"input '{spec.name}' has {arr.shape[0]} rows, other inputs have {rows}")
                rows = arr.shape[0]
            feeds[spec.name] = arr
        return feeds, max(rows, 1)

    # ---- inference ------------------------------------------------------------------
    def _run(self, feeds: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
        outs = self.session.run(self.output_names, feeds)
        result = []
        for spec, arr in zip(self.outputs, outs, strict=True):
            arr = np.asarray(arr)
            # Shape the graph gives back must match what config.pbtxt declares (reshape applied);
            # Triton's core then maps reshape -> dims (e.g. a rank-1 label [N] -> [N, 1]).
            want = ([rows] if self.batching else []) + spec.shape
            if list(arr.shape) != want and -1 not in want and arr.size == int(np.prod(want)):
                arr = arr.reshape(want)
            if spec.dtype is not np.object_ and arr.dtype != spec.dtype:
                arr = arr.astype(spec.dtype)
            result.append(arr)
        return result

    def _respond(self, request, outs: list[np.ndarray]) -> pb_utils.InferenceResponse:
        wanted = set(request.requested_output_names() or self.output_names)
        tensors = [pb_utils.Tensor(name, arr) for name, arr in zip(self.output_names, outs, strict=True) if name in wanted]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _run_one(self, request, feeds: dict[str, np.ndarray], rows: int) -> pb_utils.InferenceResponse:
        try:
            return self._respond(request, self._run(feeds, rows))
        except Exception as exc:  # onnxruntime rejected this request's data
            return _error(f"model '{self.name}' failed on this request: {exc}")

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        good: list[tuple[int, dict[str, np.ndarray], int]] = []
        for i, request in enumerate(requests):
            try:
                feeds, rows = self._read(request)
            except BadRequest as exc:
                responses[i] = _error(str(exc))
                continue
            good.append((i, feeds, rows))

        if len(good) == 1 or not self.batching:
            for i, feeds, rows in good:
                responses[i] = self._run_one(requests[i], feeds, rows)
            return responses

        # Requests with equal per-row shapes are concatenated into one onnxruntime run.
        groups: dict[tuple, list[tuple[int, dict[str, np.ndarray], int]]] = {}
        for item in good:
            key = tuple(item[1][s.name].shape[1:] for s in self.inputs)
            groups.setdefault(key, []).append(item)
        for group in groups.values():
            if len(group) == 1:
                i, feeds, rows = group[0]
                responses[i] = self._run_one(requests[i], feeds, rows)
                continue
            total = sum(rows for _, _, rows in group)
            batch = {s.name: np.concatenate([feeds[s.name] for _, feeds, _ in group]) for s in self.inputs}
            try:
                outs = self._run(batch, total)
            except Exception:
                # One request poisoned the batch: run each alone so only the culprit errors.
                for i, feeds, rows in group:
                    responses[i] = self._run_one(requests[i], feeds, rows)
                continue
            start = 0
            for i, _, rows in group:
                responses[i] = self._respond(requests[i], [o[start:start + rows] for o in outs])
                start += rows
        return responses

    def finalize(self) -> None:
        self.session = None
