"""The uploaded file of a request body: the first file part of a multipart form, else the body itself."""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header


def upload_of(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """(bytes, declared content type) of the upload in ``body``; the part's file name is never looked at."""
    mime, params = parse_options_header(content_type or "")
    if mime != b"multipart/form-data" or not params.get(b"boundary"):
        return body, content_type or None
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    field = bytearray()
    value = bytearray()

    def begin() -> None:
        parts.append(({}, bytearray()))

    def header_field(data: bytes, start: int, end: int) -> None:
        field.extend(data[start:end])

    def header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def header_end() -> None:
        parts[-1][0][bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    parser = MultipartParser(params[b"boundary"], {"on_part_begin": begin, "on_header_field": header_field,
                                                   "on_header_value": header_value, "on_header_end": header_end,
                                                   "on_part_data": data})
    parser.write(body)
    parser.finalize()
    for headers, payload in parts:
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        if b"filename" in disp:
            declared = headers.get(b"content-type")
            return bytes(payload), declared.decode("latin-1") if declared else None
    return body, content_type or None
