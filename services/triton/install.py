"""Where the nvidia-pytriton wheel keeps tritonserver, and the backend directory and environment it needs here.

The wheel ships the server, its Python backend and per-Python stubs. Our Python-based ``onnxruntime``
backend lives in ``<backend-dir>/onnxruntime/model.py``; ``<backend-dir>/python/`` holds the Python backend
with the stub of the running interpreter (see DESIGN.md, decision 3).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlstack.errors import MlstackError

MODEL_PY = Path(__file__).resolve().parent / "backend" / "model.py"
INSTALL_HINT = "install with `make install` (nvidia-pytriton)"


class TritonNotInstalled(MlstackError):
    """The tritonserver binary of the nvidia-pytriton wheel is not there."""

    code = "triton_not_installed"
    status = 503


@dataclass(frozen=True)
class TritonDist:
    """Paths inside the installed nvidia-pytriton wheel."""

    root: Path  # site-packages/pytriton/tritonserver
    libs: Path  # site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    @property
    def stub(self) -> Path:
        return self.root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"

    @property
    def cache_dir(self) -> Path:
        return self.root / "caches"


def find_dist() -> TritonDist:
    """Locate the wheel's server; TritonNotInstalled (with the install hint) when any piece is missing."""
    try:
        import pytriton
    except ImportError as exc:
        raise TritonNotInstalled(f"tritonserver not found: {INSTALL_HINT}") from exc
    site = Path(pytriton.__file__).resolve().parent.parent
    dist = TritonDist(root=site / "pytriton" / "tritonserver", libs=site / "nvidia_pytriton.libs")
    needed = [dist.binary, dist.python_backend / "libtriton_python.so",
              dist.python_backend / "triton_python_backend_utils.py", dist.stub, dist.cache_dir / "local"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise TritonNotInstalled(f"tritonserver is incomplete (missing {', '.join(missing)}): {INSTALL_HINT}",
                                 details={"missing": missing})
    return dist


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _install_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically unless it is already identical (safe with concurrent launchers)."""
    if dst.exists() and dst.stat().st_size == src.stat().st_size and _digest(dst) == _digest(src):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def backend_dir(var_dir: Path, dist: TritonDist) -> Path:
    """Assemble (idempotently) ``<var_dir>/triton/backends`` for ``--backend-directory``."""
    root = Path(var_dir).resolve() / "triton" / "backends"
    _install_file(MODEL_PY, root / "onnxruntime" / "model.py")
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _install_file(dist.python_backend / name, root / "python" / name)
    _install_file(dist.stub, root / "python" / "triton_python_backend_stub")
    return root


def server_env(dist: TritonDist, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its Python stubs.

    The stub must load this interpreter's libpython (else the system's older one is picked) and ignores
    PYTHONPATH: with the venv's ``bin/`` first on PATH it finds the venv's site-packages.
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ld = [p for p in (libdir, str(dist.libs), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = ":".join(ld)
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = venv_bin + (":" + env["PATH"] if env.get("PATH") else "")
    env.pop("PYTHONHOME", None)
    return env
