"""`mlstack bench jobs`: upload → served time of a training job through a real stack (Triton + gateway + local Ray),
and a 16-trial grid search on Ray (2 CPUs) against the same trials one after another in this process."""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests import servers
from mlstack.settings import Settings

SEARCH = {"C": [0.5, 1.0, 2.0, 4.0], "gamma": [0.005, 0.01, 0.02, 0.05]}  # 16 trials of an RBF SVC on digits (64 cols)


@dataclass
class Served:
    label: str
    upload_s: float | None
    job_s: float
    served_s: float
    total_s: float
    metric: str


@dataclass
class JobsReport:
    served: list[Served] = field(default_factory=list)
    ray_start_s: float = 0.0
    sequential_s: float = 0.0
    ray_s: float = 0.0
    trials: int = 0
    same_best: bool = True

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.ray_s if self.ray_s else 0.0


def _iris_csv() -> bytes:
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame["species"] = [load_iris().target_names[i] for i in frame.pop("target")]
    buf = io.StringIO()
    frame.to_csv(buf, sep=";", index=False)
    return buf.getvalue().encode("utf-8-sig")


def _digits_zip() -> bytes:
    """The 1,797 sklearn digits as 8x8 PNGs in one folder per class (what a user uploads for a CNN)."""
    import zipfile

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (img, t) in enumerate(zip(d.images, d.target, strict=True)):
            png = io.BytesIO()
            Image.fromarray(np.clip(np.round(img / 16.0 * 255.0), 0, 255).astype(np.uint8), mode="L").save(png, format="PNG")
            zf.writestr(f"digits/{t}/{i:04d}.png", png.getvalue())
    return buf.getvalue()


def _dataset(c: httpx.Client, filename: str, data: bytes, fallback: str) -> tuple[str, float | None]:
    """Upload through the datasets API; the sample when the gateway has no datasets route yet."""
    t0 = time.perf_counter()
    r = c.post("/api/v1/datasets", files={"file": (filename, data)})
    if r.status_code in (404, 405):
        return fallback, None
    if r.status_code >= 300:
        raise RuntimeError(f"upload failed: HTTP {r.status_code} {r.text[:300]}")
    return str(r.json()["id"]), time.perf_counter() - t0


def _served(c: httpx.Client, label: str, spec: dict[str, Any], upload: tuple[str, bytes] | None, fallback: str,
            probe: dict[str, Any]) -> Served:
    t0 = time.perf_counter()
    dataset_id, upload_s = _dataset(c, *upload, fallback) if upload else (fallback, None)
    r = c.post("/api/v1/jobs", json={**spec, "dataset_id": dataset_id})
    if r.status_code != 202:
        raise RuntimeError(f"submit failed: HTTP {r.status_code} {r.text[:300]}")
    job_id, t_job = r.json()["id"], time.perf_counter()
    while (job := c.get(f"/api/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
        time.sleep(0.05)
    if job["state"] != "succeeded":
        raise RuntimeError(f"{label}: job {job['state']}: {job.get('error')}")
    t_done = time.perf_counter()
    while c.post(f"/api/v1/predict/{job['model']}", json=probe).status_code != 200:
        if time.perf_counter() - t_done > 60:
            raise RuntimeError(f"{label}: {job['model']} not served 60 s after its job ended")
        time.sleep(0.05)
    end = time.perf_counter()
    name, value = next((k, v) for k, v in job["metrics"].items() if isinstance(v, float))
    return Served(label, upload_s, t_done - t_job, end - t_done, end - t0, f"{name} {value:.3f}")


def grid_speedup(report: JobsReport, progress: Callable[[str], None]) -> None:
    import numpy as np
    import ray
    from sklearn.datasets import load_digits

    from training.jobs.spec import JobSpec
    from training.jobs.tabular import estimator, quiet
    from training.jobs.trials import grid, run_trials

    quiet()
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    pipe = estimator(JobSpec(dataset_id="sample-digits", target="t", algorithm="svm", name="bench"))
    trials = grid(SEARCH)
    report.trials = len(trials)
    progress(f"grid search, {len(trials)} trials, sequential in this process")
    t0 = time.perf_counter()
    seq = run_trials(pipe, trials, x, y, True, use_ray=False)
    report.sequential_s = time.perf_counter() - t0
    progress("grid search on Ray (local, 2 CPUs)")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    report.ray_start_s = time.perf_counter() - t0
    try:
        run_trials(pipe, trials[:2], x, y, True, use_ray=True)  # warm the two workers (imports), as a running cluster is
        t0 = time.perf_counter()
        par = run_trials(pipe, trials, x, y, True, use_ray=True)
        report.ray_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
    report.same_best = int(np.argmax(seq)) == int(np.argmax(par))


def run(base: Settings, *, progress: Callable[[str], None] = print, grid_only: bool = False) -> JobsReport:
    report = JobsReport()
    if not grid_only:
        with tempfile.TemporaryDirectory(prefix="mlstack-bench-jobs-") as tmp, contextlib.ExitStack() as stack:
            repo = Path(tmp) / "repo"
            repo.mkdir()
            s = servers.bench_settings(base, repo, Path(tmp) / "var").model_copy(update={"triton_poll_interval_s": 1})
            progress("starting Triton (poll 1 s) over an empty repository")
            stack.enter_context(servers.triton(s, pin=False))
            progress("starting the gateway (jobs run on a local Ray it starts on the first job, 2 CPUs)")
            url, user, password = stack.enter_context(servers.gateway(
                s, Path(tmp) / "gateway.log", pin=False, extra_env={"MLSTACK_RAY_NUM_CPUS": "2"}))
            token = servers.login(url, user, password)
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
                iris = {"target": "species", "algorithm": "svm", "name": "bench-iris"}
                probe = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
                progress("iris/SVM, first job (starts Ray)")
                report.served.append(_served(c, "iris/SVM (cold: Ray starts)", {**iris, "name": "bench-iris-cold"},
                                             ("iris.csv", _iris_csv()), "sample-iris", probe))
                progress("iris/SVM, Ray running")
                report.served.append(_served(c, "iris/SVM", iris, ("iris.csv", _iris_csv()), "sample-iris", probe))
                progress("digits/CNN (10 epochs, 8x8)")
                report.served.append(_served(c, "digits/CNN (10 epochs)",
                                             {"algorithm": "cnn", "name": "bench-digits", "params": {"epochs": 10, "image_size": 8}},
                                             ("digits.zip", _digits_zip()), "sample-digits", {"instances": [[[[0.0] * 8] * 8]]}))
    grid_speedup(report, progress)
    return report
