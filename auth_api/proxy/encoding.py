"""Request bodies sent with ``Content-Encoding: gzip|deflate``, inflated with a bound so they can be checked.

The gateway validates the plain bytes and forwards those (no encoding header): Triton never inflates anything the
gateway has not seen, and a decompression bomb stops at the body limit instead of in Triton's memory.
"""

from __future__ import annotations

import zlib

from auth_api.core.limits import body_too_large_message
from mlstack.errors import MlstackError

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class InflatedTooLarge(MlstackError):
    code = "body_too_large"
    status = 413


class BadEncoding(MlstackError):
    code = "invalid_encoding"
    status = 400


class UnsupportedEncoding(MlstackError):
    code = "unsupported_content_encoding"
    status = 415


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The decoded body; 413 past ``limit`` decoded bytes, 415 for an encoding other than gzip/deflate/identity."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    wbits = _WBITS.get(enc)
    if wbits is None:
        raise UnsupportedEncoding(f"Content-Encoding '{enc[:32]}' is not supported; use gzip or deflate",
                                  details={"supported": ["gzip", "deflate"]})
    try:
        return _inflate(body, wbits, limit)
    except zlib.error:
        if enc != "deflate":
            raise BadEncoding(f"the body is not valid {enc} data") from None
    try:  # "deflate" in the wild is sometimes raw DEFLATE without the zlib header
        return _inflate(body, -zlib.MAX_WBITS, limit)
    except zlib.error:
        raise BadEncoding("the body is not valid deflate data") from None


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(body, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise InflatedTooLarge(f"decompressed {body_too_large_message(limit)}", details={"max_bytes": limit})
    if not d.eof or d.unused_data:
        raise zlib.error("truncated stream or trailing bytes")
    return out
