"""What a gRPC ``ModelInferRequest`` declares and sends, for ``tensors.check`` (parsed with tritonclient's protobufs)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from auth_api.proxy.tensors import Sent, TensorRejected, binary_elements, shm_elements

_CONTENTS = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents", "fp32_contents",
             "fp64_contents", "bytes_contents")


def parse(raw: bytes) -> Any:
    """The request message; TensorRejected if the bytes are not one."""
    try:
        return service_pb2.ModelInferRequest.FromString(raw)
    except DecodeError as exc:
        raise TensorRejected("the request is not a ModelInferRequest", code="invalid_request") from exc


def sent_inputs(req: Any) -> list[Sent]:
    """Per input: name, datatype, shape, elements sent (typed contents, raw_input_contents bytes, or shared memory)."""
    raws = req.raw_input_contents
    used = 0
    out = []
    for inp in req.inputs:
        name, datatype = inp.name[:64], inp.datatype
        params = inp.parameters
        elements: int | None
        if "shared_memory_region" in params:
            size = params["shared_memory_byte_size"].int64_param if "shared_memory_byte_size" in params else None
            elements = shm_elements(size, datatype, name)
        elif inp.HasField("contents"):
            elements = sum(len(getattr(inp.contents, f)) for f in _CONTENTS)
        elif used < len(raws):  # Triton's rule: raw contents belong, in order, to the inputs with no other data
            chunk = raws[used]
            used += 1
            elements = binary_elements(datatype, chunk, name)
        else:
            raise TensorRejected(f"input '{name}' has no data", code="invalid_request", details={"input": name})
        out.append(Sent(inp.name, datatype, list(inp.shape), elements))
    if used != len(raws):
        raise TensorRejected(f"{len(raws) - used} raw_input_contents entries belong to no input", code="invalid_request")
    return out
