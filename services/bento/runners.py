"""Tensor runners: the one interface the task service calls for tensor work, backed by Triton or by onnxruntime.

``TritonRunner`` talks KServe v2 gRPC to Triton over one shared ``tritonclient.grpc.aio`` channel; ``LocalRunner``
runs the repository's ONNX files in-process (where Triton cannot run). Both return outputs shaped as Triton
returns them (``batch + config dims``), so callers and tests see identical tensors from either.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlstack.errors import ModelNotFound
from mlstack.grpc_targets import channel_target
from mlstack.repository import config as cfgmod
from mlstack.repository.layout import versions
from mlstack.settings import Settings
from services.bento.errors import BadRequest, RunnerTimeout, RunnerUnavailable

logger = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
# Rows sent per call in flight at once when a big request is split at the model's max_batch_size.
CHUNK_CONCURRENCY = 4
# tritonclient's own default (2**31 - 1): tensors as big as Triton accepts.
MAX_GRPC_MESSAGE = 2**31 - 1


class Runner(Protocol):
    """Runs one model (a version, or the one Triton would pick) on named input tensors."""

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], version: int | None = None) -> Tensors: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


def loaded_versions(cfg: Any, available: list[int]) -> list[int]:
    """The versions Triton's ``version_policy`` loads out of ``available`` (ascending)."""
    policy = cfg.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return available
    if kind == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in available if v in wanted]
    n = policy.latest.num_versions if kind == "latest" else 1
    return available[-max(n, 1):]


def _split(inputs: Mapping[str, np.ndarray], max_batch: int) -> list[dict[str, np.ndarray]]:
    """Split a batch along axis 0 into chunks of at most ``max_batch`` rows (Triton refuses bigger ones)."""
    n = len(next(iter(inputs.values())))
    if max_batch <= 0 or n <= max_batch:
        return [dict(inputs)]
    return [{k: v[i:i + max_batch] for k, v in inputs.items()} for i in range(0, n, max_batch)]


def _join(parts: list[Tensors]) -> Tensors:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


class LocalRunner:
    """onnxruntime sessions loaded from the repository: same versions Triton would serve, same output shapes."""

    def __init__(self, repository: Path, threads: int = 1) -> None:
        self.repository = Path(repository)
        self.threads = threads
        self._sessions: dict[tuple[str, int, float], Any] = {}
        self._lock = threading.Lock()

    def config(self, model: str) -> Any:
        path = self.repository / model / "config.pbtxt"
        if not path.is_file():
            raise ModelNotFound(model)
        return cfgmod.read_config(path)

    def resolve(self, model: str, version: int | None) -> tuple[Any, int]:
        """(config, version) for a request: the highest loaded version unless one is asked for."""
        cfg = self.config(model)
        loaded = loaded_versions(cfg, versions(self.repository, model))
        if not loaded or (version is not None and version not in loaded):
            raise ModelNotFound(model, version)
        return cfg, version if version is not None else loaded[-1]

    def _session(self, model: str, version: int) -> Any:
        import onnxruntime as ort

        path = self.repository / model / str(version) / "model.onnx"
        try:
            key = (model, version, path.stat().st_mtime)
        except FileNotFoundError as exc:
            raise ModelNotFound(model, version) from exc
        with self._lock:
            sess = self._sessions.get(key)
            if sess is None:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                self._sessions = {k: s for k, s in self._sessions.items() if k[:2] != key[:2]}
                self._sessions[key] = sess
                logger.info("local runner loaded %s version %d", model, version)
        return sess

    def infer_sync(self, model: str, inputs: Mapping[str, np.ndarray], version: int | None = None) -> Tensors:
        cfg, version = self.resolve(model, version)
        declared = {t.name: t for t in cfg.input}
        if set(inputs) != set(declared):
            raise BadRequest(f"model '{model}' takes inputs {sorted(declared)}, got {sorted(inputs)}",
                             details={"model": model, "expected": sorted(declared), "got": sorted(inputs)})
        feeds = {k: np.ascontiguousarray(v, dtype=cfgmod.numpy_dtype(declared[k].data_type)) for k, v in inputs.items()}
        sess = self._session(model, version)
        try:
            outs = sess.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own (Fail, InvalidArgument) for bad shapes
            raise BadRequest(f"model '{model}' rejected the input: {str(exc)[:300]}", details={"model": model}) from exc
        names = [o.name for o in sess.get_outputs()]
        by_name = dict(zip(names, outs, strict=True))
        batch = [len(next(iter(feeds.values())))] if cfg.max_batch_size > 0 else []
        # Triton returns outputs in the config's dims (a reshape{} output of [N] comes back as [N, 1]).
        return {t.name: np.asarray(by_name[t.name]).reshape(batch + list(t.dims)) for t in cfg.output if t.name in by_name}

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], version: int | None = None) -> Tensors:
        return await asyncio.to_thread(self.infer_sync, model, inputs, version)

    async def ready(self) -> bool:
        return self.repository.is_dir()

    async def close(self) -> None:
        self._sessions.clear()


class TritonRunner:
    """KServe v2 gRPC to Triton (one replica or several, balanced) over one shared aio channel, with a per-request timeout."""

    def __init__(self, targets: str | list[str], timeout_s: float = 10.0) -> None:
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.url = ",".join(self.targets)
        self.timeout_s = timeout_s
        self._client: Any = None
        self._max_batch: dict[str, int] = {}

    def _get_client(self) -> Any:
        # aio channels bind to the running event loop: create on first use, inside it.
        if self._client is None:
            import tritonclient.grpc.aio as grpcclient

            target, lb_opts = channel_target(self.targets)
            opts = [("grpc.max_send_message_length", MAX_GRPC_MESSAGE), ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE)]
            self._client = grpcclient.InferenceServerClient(target, channel_args=opts + lb_opts)
        return self._client

    def _map_error(self, exc: Exception, model: str, version: int | None) -> Exception:
        status = str(getattr(exc, "status", lambda: "")() or "")
        msg = str(getattr(exc, "message", lambda: str(exc))() or exc)
        if "DEADLINE_EXCEEDED" in status or "Deadline" in msg:
            return RunnerTimeout(f"Triton did not answer for '{model}' within {self.timeout_s:g} s",
                                 details={"model": model, "timeout_s": self.timeout_s})
        if "UNAVAILABLE" in status:
            return RunnerUnavailable(f"Triton at {self.url} is unavailable: {msg[:300]}", details={"url": self.url})
        if "NOT_FOUND" in status or "unknown model" in msg or "not found" in msg or "is not ready" in msg:
            return ModelNotFound(model, version)
        return BadRequest(f"Triton refused the request for '{model}': {msg[:300]}", details={"model": model})

    async def _max_batch_size(self, model: str, version: int | None) -> int:
        if model not in self._max_batch:
            try:
                cfg = await self._get_client().get_model_config(model, as_json=True, client_timeout=self.timeout_s)
            except Exception as exc:
                raise self._map_error(exc, model, version) from exc
            self._max_batch[model] = int(cfg["config"].get("max_batch_size", 0))
        return self._max_batch[model]

    async def _infer_once(self, model: str, inputs: Mapping[str, np.ndarray], version: int | None) -> Tensors:
        import tritonclient.grpc.aio as grpcclient
        from tritonclient.utils import np_to_triton_dtype

        req = []
        for name, arr in inputs.items():
            arr = np.ascontiguousarray(arr)
            inp = grpcclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            inp.set_data_from_numpy(arr)
            req.append(inp)
        try:
            res = await self._get_client().infer(model, req, model_version=str(version or ""),
                                                 client_timeout=self.timeout_s)
        except Exception as exc:
            raise self._map_error(exc, model, version) from exc
        return {o.name: res.as_numpy(o.name) for o in res.get_response().outputs}

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], version: int | None = None) -> Tensors:
        chunks = _split(inputs, await self._max_batch_size(model, version))
        sem = asyncio.Semaphore(CHUNK_CONCURRENCY)

        async def one(chunk: Mapping[str, np.ndarray]) -> Tensors:
            async with sem:
                return await self._infer_once(model, chunk, version)

        return _join(list(await asyncio.gather(*(one(c) for c in chunks))))

    async def ready(self) -> bool:
        try:
            return bool(await self._get_client().is_server_ready(client_timeout=self.timeout_s))
        except Exception:  # unreachable, refused, timed out: all mean "not ready"
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def make_runner(settings: Settings) -> Runner:
    """The runner ``settings.bento_runner`` names."""
    if settings.bento_runner == "local":
        return LocalRunner(Path(settings.repository))
    return TritonRunner(settings.triton_grpc_targets, settings.bento_runner_timeout_s)
