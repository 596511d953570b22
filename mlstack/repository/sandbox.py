"""Guards for untrusted ONNX files: refuse external data, and smoke-run a candidate in a confined subprocess.

An ONNX tensor may name a file to read its bytes from ("external data"); loaded by onnxruntime in the publisher's
process, that reads any file the process can see (the gateway's JWT key included). Such models are refused, and the
smoke run happens in a child process whose working directory is a private folder holding only the candidate, with a
minimal environment, memory and CPU limits and a wall-clock timeout, so a case missed here still cannot read the
publisher's files by relative path nor hang or exhaust the publisher.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from mlstack.errors import PublishError
from mlstack.repository import config as cfgmod

logger = logging.getLogger(__name__)

_CODE_ROOT = Path(__file__).resolve().parents[2]
# Anything shaped like a filesystem path (absolute, relative with a separator, or Windows-style).
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\w.~-]*[/\\])+[\w.~-]*")


@dataclass(frozen=True)
class SandboxLimits:
    """Resources one smoke run may use; beyond them the candidate is refused, the publisher is unaffected."""

    timeout_s: float = 60.0
    memory_bytes: int = 4 * 1024**3
    cpu_seconds: int = 60

    @classmethod
    def from_settings(cls, settings: Any) -> SandboxLimits:
        t = settings.publish_smoke_timeout_s
        return cls(timeout_s=t, memory_bytes=settings.publish_smoke_memory_bytes, cpu_seconds=max(1, int(t)))


def sanitize(message: str, limit: int = 2000) -> str:
    """A checker/onnxruntime message safe to show a client: every path-like token becomes ``<path>``."""
    return _PATH.sub("<path>", message)[:limit]


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        yield from _attribute_tensors(attr)


def _attribute_tensors(attr: onnx.AttributeProto) -> Iterator[onnx.TensorProto]:
    if attr.HasField("t"):
        yield attr.t
    yield from attr.tensors
    sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
    for s in [*sparse, *attr.sparse_tensors]:
        yield s.values
        yield s.indices
    if attr.HasField("g"):
        yield from _graph_tensors(attr.g)
    for g in attr.graphs:
        yield from _graph_tensors(g)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of the model: initializers, attributes, subgraphs, functions and training graphs."""
    yield from _graph_tensors(model.graph)
    for fn in model.functions:
        for node in fn.node:
            yield from _node_tensors(node)
        for attr in fn.attribute_proto:
            yield from _attribute_tensors(attr)
    for info in model.training_info:
        yield from _graph_tensors(info.initialization)
        yield from _graph_tensors(info.algorithm)


def refuse_external_data(model: onnx.ModelProto) -> None:
    """PublishError ``external_data_refused`` if any tensor points at a file; the message never names the file."""
    count = sum(1 for t in all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0)
    if count:
        raise PublishError(
            "the model references external data files, which are refused; upload a self-contained ONNX file "
            "(save it with save_as_external_data=False)",
            code="external_data_refused", details={"external_tensors": count},
        )


def _child_env(folder: str) -> dict[str, str]:
    # Nothing of the publisher's environment (secrets, MLSTACK_* settings) reaches code run on the candidate's behalf.
    return {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": folder, "TMPDIR": folder, "OMP_NUM_THREADS": "1"}


def smoke_run(onnx_bytes: bytes, cfg: cfgmod.ModelConfigT, limits: SandboxLimits | None = None) -> None:
    """Load the candidate as Triton's backend will and run it on zeros, in a confined child; PublishError if that fails."""
    limits = limits or SandboxLimits()
    with tempfile.TemporaryDirectory(prefix="mlstack-smoke-") as folder:
        Path(folder, "model.onnx").write_bytes(onnx_bytes)
        Path(folder, "config.pbtxt").write_text(cfgmod.dumps(cfg))
        # -I: no PYTHON* variables, no user site, and the cwd (the candidate's folder) is not on sys.path; the code's own
        # root is put there explicitly, so this works from a source tree as well as from an installed package.
        boot = f"import sys; sys.path.insert(0, {str(_CODE_ROOT)!r}); from mlstack.repository.smoke import main; main()"
        argv = [sys.executable, "-I", "-B", "-c", boot, str(limits.memory_bytes), str(limits.cpu_seconds)]
        try:
            proc = subprocess.run(argv, cwd=folder, env=_child_env(folder), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=limits.timeout_s, start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            raise PublishError(f"the smoke run did not finish within {limits.timeout_s:g} s", code="smoke_timeout",
                               details={"timeout_s": limits.timeout_s}) from exc
    if proc.returncode != 0:
        logger.warning("smoke run exited with %s: %s", proc.returncode, sanitize(proc.stderr.decode(errors="replace"), 4000))
        raise PublishError("the smoke run crashed or exceeded its resource limits", code="smoke_failed",
                           details={"memory_bytes": limits.memory_bytes, "cpu_seconds": limits.cpu_seconds})
    try:
        result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise PublishError("the smoke run gave no result", code="smoke_failed") from exc
    if not result.get("ok"):
        details = {k: v for k, v in result.items() if k not in ("ok", "code", "message")}
        if "reason" in details:
            details["reason"] = sanitize(str(details["reason"]))
        raise PublishError(sanitize(str(result.get("message", "smoke run failed"))), code=str(result.get("code", "smoke_failed")),
                           details=details)


__all__ = ["SandboxLimits", "all_tensors", "refuse_external_data", "sanitize", "smoke_run"]
