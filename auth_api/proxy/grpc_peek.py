"""The model name of a serialized ``inference.ModelInferRequest`` without parsing the tensors after it."""

from __future__ import annotations

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
