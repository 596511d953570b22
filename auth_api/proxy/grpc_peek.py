"""Facts read off serialized inference messages without parsing their tensors: a request's model name, an answer's
version and whether it has outputs."""

from __future__ import annotations

from tritonclient.grpc import service_pb2

_MODEL_NAME_TAG = 0x0A  # field 1 (model_name), wire type 2 (length-delimited)
_MAX_NAME = 255


def infer_model_name(request: bytes) -> str:
    """``model_name`` when it leads the message (protobuf writers emit fields in number order; tritonclient always
    sets it), else ''. Reading one varint and a slice costs nothing next to a full parse of a large request."""
    if len(request) < 2 or request[0] != _MODEL_NAME_TAG:
        return ""
    length, shift, pos = 0, 0, 1
    while pos < len(request) and shift <= 14:
        byte = request[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    else:
        return ""
    if length > _MAX_NAME or pos + length > len(request):
        return ""
    return request[pos:pos + length].decode("utf-8", errors="replace")



# ModelInferResponse: 2 model_version, 5 outputs; ModelStreamInferResponse: 2 infer_response.
_VERSION_FIELD, _OUTPUTS_FIELD, _STREAM_INFER_FIELD = 2, 5, 2


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]  # IndexError past the end: the caller parses instead
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _field(msg: bytes, number: int) -> bytes | None:
    """The bytes of the first length-delimited top-level field ``number``, None when absent; walks the fields before it
    (a few small ones in an answer: name, version, id, parameters) instead of parsing the tensors after it."""
    pos, end = 0, len(msg)
    while pos < end:
        tag, pos = _varint(msg, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            length, pos = _varint(msg, pos)
            if field == number:
                if pos + length > end:
                    raise ValueError("truncated field")
                return msg[pos:pos + length]
            pos += length
        elif wire == 0:
            _, pos = _varint(msg, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")
    return None


def infer_response_has_outputs(resp: bytes) -> bool:
    """Whether a serialized ``ModelInferResponse`` carries at least one output (Triton's response cache can answer OK
    with none)."""
    try:
        return _field(resp, _OUTPUTS_FIELD) is not None
    except (IndexError, ValueError):
        return len(service_pb2.ModelInferResponse.FromString(resp).outputs) > 0


def answered_version(resp: bytes, streamed: bool = False) -> str | None:
    """``model_version`` of a serialized ``ModelInferResponse`` (or of a ``ModelStreamInferResponse``'s answer)."""
    try:
        inner = _field(resp, _STREAM_INFER_FIELD) if streamed else resp
        version = _field(inner, _VERSION_FIELD) if inner is not None else None
        if version is None:
            return None
        return version.decode("utf-8", errors="replace")[:16] or None
    except (IndexError, ValueError):
        msg = (service_pb2.ModelStreamInferResponse.FromString(resp).infer_response if streamed
               else service_pb2.ModelInferResponse.FromString(resp))
        return msg.model_version[:16] or None
