"""Pick the lines of a tritonserver log that say why it failed (its error lines, else anything error-like)."""

from __future__ import annotations

import re
from pathlib import Path

from mlstack.process import read_log

# Triton's glog-style prefix: severity letter, MMDD, time, thread, file:line]
_GLOG = re.compile(r"^([IWE])\d{4} [\d:.]+\s+\d+ [^\]]+\] ?(.*)$")
_ERRORISH = re.compile(r"error|failed|exception|already in use|no such file|not found", re.IGNORECASE)
# Printed on every start of a CPU-only box; never the cause.
_NOISE = ("CudaDriverHelper has not been initialized", "Unable to allocate pinned system memory")


def _clean(message: str) -> str:
    # Python tracebacks arrive as one line with escaped newlines; keep the first line of each.
    return message.strip().strip('"').split("\\n")[0].strip()


def cause_from_log(path: Path, max_lines: int = 4, max_chars: int = 1200, offset: int = 0) -> str:
    """The most telling lines of the log written since ``offset`` (Triton's error lines first, else error-like lines, else
    its tail)."""
    try:
        lines = read_log(Path(path), offset).splitlines()
    except OSError:
        return f"no server log at {path}"
    errors: list[str] = []
    other: list[str] = []
    for line in lines:
        if any(noise in line for noise in _NOISE):
            continue
        m = _GLOG.match(line)
        if m:
            if m.group(1) == "E":
                errors.append(_clean(m.group(2)))
        elif line.startswith("error:"):
            errors.append(_clean(line))
        elif _ERRORISH.search(line) and not line.startswith("|"):
            other.append(_clean(line))
    picked = errors or other or [ln.strip() for ln in lines[-max_lines:] if ln.strip()] or ["the server log is empty"]
    text = "; ".join(list(dict.fromkeys(p for p in picked if p))[-max_lines:])
    return text if len(text) <= max_chars else "..." + text[-max_chars:]
