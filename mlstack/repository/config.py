"""config.pbtxt in Triton's own schema (tritonclient's ``model_config_pb2``), inferred from an ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from mlstack.errors import PublishError

# The generated protobuf classes ship without type stubs; to mypy a config is Any.
ModelConfig: Any = mc.ModelConfig
ModelConfigT = Any

ONNX_TO_TRITON: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.STRING: "TYPE_STRING",
}
# Triton dtype name -> numpy dtype string (as tritonclient spells them).
TRITON_TO_NUMPY = {
    "TYPE_FP32": "float32",
    "TYPE_FP64": "float64",
    "TYPE_FP16": "float16",
    "TYPE_INT64": "int64",
    "TYPE_INT32": "int32",
    "TYPE_INT16": "int16",
    "TYPE_INT8": "int8",
    "TYPE_UINT8": "uint8",
    "TYPE_BOOL": "bool",
    "TYPE_STRING": "object",
}


def _value_info_dims(vi: onnx.ValueInfoProto) -> tuple[int, list[int]]:
    """(elem_type, dims) of a graph input/output; unknown dims are -1."""
    ttype = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in ttype.shape.dim]
    return ttype.elem_type, dims


def _tensor_spec(vi: onnx.ValueInfoProto, batching: bool, kind: str) -> dict:
    elem, dims = _value_info_dims(vi)
    if elem not in ONNX_TO_TRITON:
        raise PublishError(
            f"{kind} '{vi.name}' has an ONNX element type Triton cannot serve ({elem})",
            code="unsupported_dtype",
            details={"tensor": vi.name, "onnx_elem_type": elem},
        )
    spec: dict = {"name": vi.name, "data_type": ONNX_TO_TRITON[elem]}
    if batching:
        if not dims or dims[0] != -1:
            raise PublishError(
                f"{kind} '{vi.name}' has no dynamic batch dimension (shape {dims}); "
                "export with a dynamic first axis or publish with max_batch_size 0",
                code="no_batch_dimension",
                details={"tensor": vi.name, "shape": dims},
            )
        dims = dims[1:]
    if not dims:
        # Rank-1 [batch] tensors: Triton needs non-empty dims, so declare [1] and reshape to [].
        spec["dims"] = [1]
        spec["reshape"] = {"shape": []}
    else:
        spec["dims"] = dims
    return spec


def config_from_onnx(
    model: onnx.ModelProto,
    name: str,
    *,
    max_batch_size: int,
    instance_count: int = 1,
    instance_kind: str = "KIND_CPU",
    max_queue_delay_us: int = 0,
    label_output: str | None = None,
    response_cache: bool = False,
    warmup: bool = True,
    num_versions: int = 1,
) -> ModelConfigT:
    """Build a Triton config whose inputs/outputs are read from the graph itself."""
    batching = max_batch_size > 0
    init_names = {i.name for i in model.graph.initializer}
    inputs = [_tensor_spec(vi, batching, "input") for vi in model.graph.input if vi.name not in init_names]
    outputs = [_tensor_spec(vi, batching, "output") for vi in model.graph.output]
    if label_output is not None:
        for out in outputs:
            if out["name"] == label_output:
                out["label_filename"] = "labels.txt"
                break
        else:
            raise PublishError(f"label output '{label_output}' is not an output of the graph")
    cfg = ModelConfig(name=name, backend="onnxruntime", max_batch_size=max_batch_size)
    for spec in inputs:
        _add_tensor(cfg.input.add(), spec)
    for spec in outputs:
        _add_tensor(cfg.output.add(), spec)
    cfg.version_policy.latest.num_versions = num_versions
    if batching:
        cfg.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    group = cfg.instance_group.add()
    group.count = instance_count
    group.kind = mc.ModelInstanceGroup.Kind.Value(instance_kind)
    # Same keys as Triton's native onnxruntime backend, so the stock container honours them too.
    cfg.parameters["intra_op_thread_count"].string_value = "1"
    cfg.parameters["inter_op_thread_count"].string_value = "1"
    if response_cache:  # off unless asked: Triton 2.51 caches a backend's error as an empty success
        cfg.response_cache.enable = True
    if warmup:
        w = cfg.model_warmup.add()
        w.name = "zeros"
        w.batch_size = 1 if batching else 0
        for spec in inputs:
            inp = w.inputs[spec["name"]]
            inp.data_type = mc.DataType.Value(spec["data_type"])
            inp.dims.extend([d if d > 0 else 1 for d in spec["dims"]])
            inp.zero_data = True
    return cfg


def _add_tensor(msg, spec: dict) -> None:
    msg.name = spec["name"]
    msg.data_type = mc.DataType.Value(spec["data_type"])
    msg.dims.extend(spec["dims"])
    if "reshape" in spec:
        msg.reshape.SetInParent()
        msg.reshape.shape.extend(spec["reshape"]["shape"])
    if "label_filename" in spec:
        msg.label_filename = spec["label_filename"]


def dumps(cfg: ModelConfigT) -> str:
    """Protobuf text format, exactly what Triton parses."""
    return text_format.MessageToString(cfg)


def loads(text: str) -> ModelConfigT:
    """Parse config.pbtxt text; raises PublishError on malformed text."""
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as exc:
        raise PublishError(f"config.pbtxt does not parse: {exc}", code="invalid_config") from exc


def read_config(path: Path) -> ModelConfigT:
    return loads(path.read_text())


def signature(cfg: ModelConfigT) -> dict:
    """Inputs/outputs as plain data, used to compare a new version with the model's config."""
    return {
        "max_batch_size": cfg.max_batch_size,
        "inputs": [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input],
        "outputs": [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in cfg.output],
    }


# The gateway's prediction cache, per model (config.pbtxt ``parameters``; Triton and its backends ignore these keys).
CACHE_PARAM = "mlstack_cache"
CACHE_TTL_PARAM = "mlstack_cache_ttl_s"


def cache_policy(cfg: ModelConfigT) -> tuple[bool | None, float | None]:
    """(on, ttl seconds) of the gateway's prediction cache for this model; None where the config does not say."""
    params = cfg.parameters
    on: bool | None = None
    ttl: float | None = None
    if CACHE_PARAM in params:
        raw = params[CACHE_PARAM].string_value.strip().lower()
        on = raw in ("true", "1", "yes", "on") if raw in ("true", "1", "yes", "on", "false", "0", "no", "off") else None
    if CACHE_TTL_PARAM in params:
        try:
            ttl = float(params[CACHE_TTL_PARAM].string_value)
        except ValueError:
            ttl = None
        if ttl is not None and not ttl > 0:
            ttl = None
    return on, ttl


def set_cache_policy(cfg: ModelConfigT, on: bool | None, ttl_s: float | None = None) -> None:
    """Write (or, with None, remove) the prediction-cache parameters of a config."""
    for key, value in ((CACHE_PARAM, None if on is None else ("true" if on else "false")),
                       (CACHE_TTL_PARAM, None if ttl_s is None else f"{ttl_s:.15g}")):
        if value is None:
            if key in cfg.parameters:
                del cfg.parameters[key]
        else:
            cfg.parameters[key].string_value = value


def dtype_name(data_type: int) -> str:
    """'TYPE_FP32' -> 'FP32' (the KServe v2 datatype name)."""
    return mc.DataType.Name(data_type).removeprefix("TYPE_")


def numpy_dtype(data_type: int) -> str:
    return TRITON_TO_NUMPY[mc.DataType.Name(data_type)]
