"""The launcher: argv from settings, fast failures that name their cause, pid-file stop with no orphans."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from services.triton.launcher import TritonServer, TritonStartError, pid_file, running_pid, stop_from_pidfile
from tests.fixtures.triton import require_triton, triton_settings


def _small_repo(trained_repo: Path, tmp_path: Path, name: str = "iris-logreg") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(trained_repo / name, repo / name)
    return repo


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    members.append(int(entry.name))
            except OSError:
                continue
    return members


def test_command_follows_settings(tmp_path: Path) -> None:
    require_triton()
    s = triton_settings(tmp_path / "repo", tmp_path / "var", triton_model_control_mode="explicit", triton_cache_size=0,
                        triton_log_verbose=1, triton_exit_timeout_s=7)
    argv = TritonServer(s).command()
    assert argv[0].endswith("/tritonserver")
    for flag in (f"--http-port={s.triton_http_port}", f"--grpc-port={s.triton_grpc_port}", f"--metrics-port={s.triton_metrics_port}",
                 "--model-control-mode=explicit", "--load-model=*", "--exit-timeout-secs=7", "--log-verbose=1",
                 "--strict-readiness=false", "--exit-on-error=false", "--allow-metrics=true"):
        assert flag in argv
    assert not any(a.startswith("--cache-config") or a.startswith("--repository-poll-secs") for a in argv)
    backends = Path(next(a for a in argv if a.startswith("--backend-directory=")).split("=", 1)[1])
    assert (backends / "onnxruntime" / "model.py").is_file()
    assert {p.name for p in (backends / "python").iterdir()} >= {"libtriton_python.so", "triton_python_backend_utils.py",
                                                                 "triton_python_backend_stub"}
    poll = TritonServer(triton_settings(tmp_path / "repo", tmp_path / "var", triton_poll_interval_s=3, triton_cache_size=1024)).command()
    assert "--repository-poll-secs=3" in poll and "--cache-config=local,size=1024" in poll and "--model-control-mode=poll" in poll


def test_occupied_port_fails_fast_naming_the_port(trained_repo: Path, tmp_path: Path) -> None:
    require_triton()
    s = triton_settings(_small_repo(trained_repo, tmp_path), tmp_path / "var")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", s.triton_grpc_port))
        holder.listen()
        started = time.monotonic()
        with pytest.raises(TritonStartError) as err:
            TritonServer(s).start(timeout=60)
    assert time.monotonic() - started < 5
    assert f"gRPC port 127.0.0.1:{s.triton_grpc_port} is already in use" in err.value.message


@pytest.mark.slow
def test_a_model_that_fails_to_load_is_reported_not_fatal(trained_repo: Path, tmp_path: Path) -> None:
    require_triton()
    repo = _small_repo(trained_repo, tmp_path)
    (repo / "iris-logreg" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    s = triton_settings(repo, tmp_path / "var")
    server = TritonServer(s)
    server.start(timeout=90)
    try:
        failed = server.failed_models()
        assert [(m["name"], m["version"]) for m in failed] == [("iris-logreg", "1")]
        assert "Protobuf" in failed[0]["reason"] or "protobuf" in failed[0]["reason"]
        assert server.is_running()
    finally:
        server.stop()
    assert not pid_file(s).exists()


def test_missing_repository_is_named(tmp_path: Path) -> None:
    s = triton_settings(tmp_path / "nope", tmp_path / "var")
    with pytest.raises(TritonStartError, match="does not exist"):
        TritonServer(s).start()


@pytest.mark.slow
def test_explicit_mode_serves_and_stop_from_pidfile_leaves_no_orphans(trained_repo: Path, tmp_path: Path) -> None:
    require_triton()
    s = triton_settings(_small_repo(trained_repo, tmp_path), tmp_path / "var", triton_model_control_mode="explicit")
    server = TritonServer(s)
    server.start(timeout=90)
    try:
        state = server.health()
        assert state["ready"] and [(m["name"], m["version"], m["state"]) for m in state["models"]] == [("iris-logreg", "1", "READY")]
        pid = running_pid(s)
        assert pid == server.process.pid  # type: ignore[union-attr]
        assert len(_group_members(pid)) >= 2, "expected tritonserver and its Python backend stubs"
        # what `mlstack down` does from another shell: only the pid file is shared
        assert stop_from_pidfile(s) is True
        server.process.wait(timeout=5)  # type: ignore[union-attr]
        assert _group_members(pid) == []
        assert not pid_file(s).exists()
        assert server.health()["live"] is False
    finally:
        server.stop()


def test_stale_pid_file_is_refused(tmp_path: Path) -> None:
    s = triton_settings(tmp_path / "repo", tmp_path / "var")
    pid_file(s).parent.mkdir(parents=True)
    pid_file(s).write_text(f"{os.getpid()}\n")  # alive, but not a tritonserver
    assert running_pid(s) is None
    assert stop_from_pidfile(s) is False
    assert not pid_file(s).exists()
    assert os.getpid() > 0  # and we are still here
