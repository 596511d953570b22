"""The model repository on S3 (moto_server, a real S3 HTTP API): two Triton processes serve the same bucket, a version
published into it is served by both, a promotion reaches both, and another host's mirror pulls what was published."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx

from mlstack.repository import intake, remote, serving
from mlstack.repository.publish import Candidate, publish
from mlstack.settings import Settings
from services.triton.launcher import TritonServer
from tests.fixtures.s3 import MotoServer, start_moto
from tests.fixtures.triton import require_triton, triton_settings

MODEL = "iris-logreg"


def _settings(moto: MotoServer, bucket: str, var_dir: Path, **kw: object) -> Settings:
    return Settings(repository=f"s3://{bucket}/models", var_dir=var_dir, repository_s3_endpoint_url=moto.url,
                    repository_s3_access_key_id="testing", repository_s3_secret_access_key="testing", **kw)  # type: ignore[arg-type]


def _served(t: Settings, version: int) -> bool:
    try:
        return httpx.get(f"{t.triton_http_url}/v2/models/{MODEL}/versions/{version}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(cond: object, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_two_tritons_serve_one_bucket_and_see_each_publish(trained_repo: Path, tmp_path: Path) -> None:
    require_triton()
    with start_moto() as moto:  # its own server: two Tritons polling it every second is most of its load
        _two_tritons(moto, trained_repo, tmp_path)


def _two_tritons(moto: MotoServer, trained_repo: Path, tmp_path: Path) -> None:
    bucket = "repo-" + tmp_path.name.lower().replace("_", "-")[-20:]
    moto.client().create_bucket(Bucket=bucket)
    host_a = _settings(moto, bucket, tmp_path / "a")
    assert str(host_a.repository).startswith(str(tmp_path / "a")) and host_a.repository_remote == f"s3://{bucket}/models"
    mirror = remote.open_repository(host_a)
    shutil.copytree(trained_repo / MODEL, mirror / MODEL)
    remote.push(mirror, MODEL)
    keys = {o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"models/{MODEL}/config.pbtxt" in keys and f"models/{MODEL}/1/model.onnx" in keys

    tritons = []
    for x in "12":
        base = triton_settings(Path("unused"), tmp_path / f"t{x}", triton_cache_size=0)
        s = _settings(moto, bucket, tmp_path / f"t{x}", **{k: getattr(base, k) for k in (
            "triton_host", "triton_http_port", "triton_grpc_port", "triton_metrics_port", "triton_poll_interval_s",
            "triton_exit_timeout_s", "triton_startup_timeout_s")}, triton_log_verbose=1)
        tritons.append((s, TritonServer(s)))
    assert tritons[0][1].command()[1] == f"--model-repository=s3://{moto.url.removeprefix('http://')}/{bucket}/models"
    starts = [threading.Thread(target=t.start) for _, t in tritons]
    try:
        for th in starts:
            th.start()
        for th in starts:
            th.join()
        for s, _ in tritons:
            _wait(lambda s=s: _served(s, 1), "version 1 from the bucket is served")

        data = (mirror / MODEL / "1" / "model.onnx").read_bytes()
        got = intake.prepare(mirror, MODEL, data, None)
        pub = publish(mirror, Candidate(name=MODEL, onnx_bytes=data, card=got.card, labels=got.card.labels,
                                        label_output=got.label_output, extra_files=got.extra_files))
        assert pub.version == 2
        for s, _ in tritons:
            _wait(lambda s=s: _served(s, 2) and not _served(s, 1), "both Tritons move to version 2 (latest policy)")

        serving.promote(mirror, MODEL, 1)  # a rollback reaches every Triton reading the bucket
        for s, _ in tritons:
            _wait(lambda s=s: _served(s, 1) and not _served(s, 2), "both Tritons go back to version 1")

        other = remote.open_repository(_settings(moto, bucket, tmp_path / "b"))  # another gateway host's mirror
        assert sorted(p.name for p in (other / MODEL).iterdir() if p.is_dir()) == ["1", "2", "configs"]
        assert serving.live_versions(other, MODEL) == [1]

        serving.delete_model(mirror, MODEL)
        assert moto.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        for s, _ in tritons:
            _wait(lambda s=s: not _served(s, 1), "a deleted model leaves every Triton")
        assert remote.sync(other) == [MODEL] and not (other / MODEL).exists()
    finally:
        for _, t in tritons:
            t.stop()
