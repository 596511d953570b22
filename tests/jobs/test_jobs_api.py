"""Jobs through the gateway on a real local Ray and the session's Triton: train → served → predict by column names
(equal to the fitted pipeline in-process); ownership (404 for others on every path, sharing, owner delete)."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.fixtures.gateway import RunningGateway
from tests.jobs.conftest import repo_of, wait_job
from training.jobs.data import sample_ref
from training.jobs.run import fit_tabular
from training.jobs.spec import JobSpec

pytestmark = pytest.mark.slow
SPEC = {"dataset_id": "sample-iris", "target": "species", "task": "classification", "algorithm": "rf",
        "search": {"n_estimators": [10, 20], "max_depth": [2, None]}, "name": "flowers"}


def _events(c: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    out = []
    with c.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=90) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                out.append((event, json.loads(line[6:])))
                if event == "end":
                    break
    return out


def _predict_until_served(c: httpx.Client, name: str, records: list[dict], timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = c.post(f"/api/v1/predict/{name}", json={"records": records})
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.25)


def test_train_serve_predict_share_delete(jgw: RunningGateway) -> None:
    alice, bob = jgw.create_user("job_alice"), jgw.create_user("job_bob")
    admin = jgw.admin_token()
    with jgw.client(alice) as a, jgw.client(bob) as b, jgw.client(admin) as adm:
        r = a.post("/api/v1/jobs", json=SPEC)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["state"] in ("queued", "running") and job["model"].endswith("-flowers")
        name = job["model"]
        events = _events(a, job["id"])
        assert events[-1][0] == "end" and events[-1][1]["state"] == "succeeded", events[-3:]
        stages = {e[1]["stage"] for e in events if e[0] == "progress"}
        assert {"search", "done"} <= stages or "search" in stages
        done = a.get(f"/api/v1/jobs/{job['id']}").json()
        assert done["state"] == "succeeded" and done["version"] == 1 and done["progress"] == 1.0, done
        assert done["metrics"]["accuracy"] >= 0.8 and "best_params" in done["metrics"]
        assert any("trial 4/4" in ln for ln in a.get(f"/api/v1/jobs/{job['id']}?log_lines=100").json()["log_tail"])
        assert b.get(f"/api/v1/jobs/{job['id']}").status_code == 404  # other users' jobs do not exist for them
        assert [j["id"] for j in a.get("/api/v1/jobs").json()] == [job["id"]]

        card = json.loads((repo_of(jgw) / name / "1" / "model_card.json").read_text())
        assert card["job"]["id"] == job["id"] and card["dataset_ref"]["id"] == "sample-iris"
        assert card["parity"]["passed"] and [f["name"] for f in card["features"]] == card["feature_names"]

        # Raw records by column name through the gateway = the same pipeline fitted in this process.
        pipe, _, x_te, _, prep, _ = fit_tabular(JobSpec.model_validate(SPEC), sample_ref("sample-iris"))
        rows = x_te[:8]
        records = [dict(zip(prep.features, map(float, row), strict=True)) for row in rows]
        r = _predict_until_served(a, name, records)
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        want = pipe.predict_proba(rows.astype(np.float32))
        assert [p["label"] for p in got] == [prep.classes[i] for i in want.argmax(axis=1)]
        for p, w in zip(got, want, strict=True):
            assert np.allclose([p["probabilities"][k] for k in prep.classes], w, atol=1e-5)

        # Ownership: bob sees nothing, on every path, with the same 404 as a missing model.
        assert name not in [m["name"] for m in b.get("/api/v1/models").json()]
        assert name in [m["name"] for m in a.get("/api/v1/models").json()]
        assert name in [m["name"] for m in adm.get("/api/v1/models").json()]
        assert b.get(f"/api/v1/models/{name}").status_code == 404
        assert b.post(f"/api/v1/predict/{name}", json={"records": records}).json()["error"]["code"] == "model_not_found"
        v2 = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": list(map(float, rows[0]))}]}
        assert a.post(f"/v2/models/{name}/infer", json=v2).status_code == 200
        assert b.post(f"/v2/models/{name}/infer", json=v2).status_code == 404
        assert b.get(f"/v2/models/{name}").status_code == 404 and a.get(f"/v2/models/{name}").status_code == 200
        grpc = grpcclient.InferenceServerClient(url=jgw.grpc_url)
        inp = grpcclient.InferInput("input", [1, 4], "FP32")
        inp.set_data_from_numpy(rows[:1].astype(np.float32))
        assert grpc.infer(name, [inp], headers={"authorization": f"Bearer {alice}"}).as_numpy("label") is not None
        with pytest.raises(InferenceServerException, match="not found"):
            grpc.infer(name, [inp], headers={"authorization": f"Bearer {bob}"})
        with pytest.raises(InferenceServerException, match="not found"):
            grpc.get_model_metadata(name, headers={"authorization": f"Bearer {bob}"})
        assert grpc.is_model_ready(name, headers={"authorization": f"Bearer {alice}"})
        assert b.post("/api/v1/tasks/predict_records", json={"model": name, "records": records}).status_code == 404
        assert b.delete(f"/api/v1/models/{name}?confirm={name}").status_code == 404
        # A user cannot share (engineer/admin); an admin can, then bob predicts; unshared, he is out again.
        assert a.put(f"/api/v1/models/{name}/share", json={"shared": True}).status_code == 403
        assert adm.put(f"/api/v1/models/{name}/share", json={"shared": True}).json()["shared"] is True
        assert b.post(f"/api/v1/predict/{name}", json={"records": records}).status_code == 200
        assert adm.put(f"/api/v1/models/{name}/share", json={"shared": False}).status_code == 200
        assert b.post(f"/api/v1/predict/{name}", json={"records": records}).status_code == 404
        # Names in a user's namespace cannot be published by someone else.
        eng = jgw.create_user("job_eng", "engineer")
        with jgw.client(eng) as e:
            r = e.post(f"/api/v1/models/{name}/versions", files={"file": ("m.onnx", b"x", "application/octet-stream")})
            assert r.status_code == 403 and r.json()["error"]["code"] == "namespace_reserved"
        # The owner deletes her own model.
        assert a.delete(f"/api/v1/models/{name}?confirm={name}").status_code == 200
        assert not (repo_of(jgw) / name).exists()


def test_submit_refusals_and_failed_jobs(jgw: RunningGateway) -> None:
    carol = jgw.create_user("job_carol")
    with jgw.client(carol) as c:
        bad = {**SPEC, "algorithm": "linear", "search": None}
        r = c.post("/api/v1/jobs", json=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "algorithm_task_mismatch"
        r = c.post("/api/v1/jobs", json={**SPEC, "dataset_id": "sample-nope"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "dataset_not_found"
        r = c.post("/api/v1/jobs", json={**SPEC, "dataset_id": "not-mine"})
        assert r.status_code == 404
        # Known only once the data is read: the job fails with the reason and publishes nothing.
        r = c.post("/api/v1/jobs", json={**SPEC, "target": "colour", "search": None, "name": "nocol"})
        assert r.status_code == 202
        job = wait_job(c, r.json()["id"])
        assert job["state"] == "failed" and job["error_code"] == "unknown_column" and "colour" in job["error"]
        assert not (repo_of(jgw) / job["model"]).exists()
        # A metric floor the model cannot reach: not published, the job says why.
        r = c.post("/api/v1/jobs", json={**SPEC, "search": None, "name": "floor", "params": {"min_metric": 1.01}})
        job = wait_job(c, r.json()["id"])
        assert job["state"] == "failed" and job["error_code"] == "below_threshold", job
        assert not (repo_of(jgw) / job["model"]).exists()


def test_cli_submit_wait_list_logs(jgw: RunningGateway, tmp_path) -> None:
    from typer.testing import CliRunner

    from mlstack.cli import app
    from training.sample_datasets import sample_frame

    token = jgw.create_user("job_cli")
    auth = ["--url", jgw.url, "--token", token]
    csv = tmp_path / "My Flowers.csv"
    sample_frame("sample-iris").to_csv(csv, index=False)  # type: ignore[union-attr]
    runner = CliRunner()
    r = runner.invoke(app, ["jobs", "submit", str(csv), "--target", "species", "--algorithm", "knn",
                            "--params", '{"n_neighbors": 5}', "--wait", *auth])
    assert r.exit_code == 0, r.output
    assert "uploaded My Flowers.csv" in r.output and "parity ok" in r.output and "succeeded" in r.output
    assert "-my-flowers-knn v1" in r.output
    job_id = r.output.split("job ", 1)[1].split()[0]
    r = runner.invoke(app, ["jobs", "list", *auth])
    assert r.exit_code == 0 and job_id in r.output and "succeeded" in r.output
    r = runner.invoke(app, ["jobs", "logs", job_id, *auth])
    assert r.exit_code == 0 and "published" in r.output
    r = runner.invoke(app, ["jobs", "submit", "sample-iris", "--target", "nope", "--algorithm", "rf", "--wait", *auth])
    assert r.exit_code == 1 and "unknown_column" in r.output


def test_uploaded_csv_with_text_column_end_to_end(jgw: RunningGateway, tmp_path) -> None:
    """The README's walkthrough: upload a ';' CSV (BOM, decimal comma, a text column), train, predict by column name
    with the text, equal to the pipeline fitted in-process; a tester may not train on it."""
    from training.jobs.data import DataRef

    rng = np.random.default_rng(3)
    colours, size = rng.choice(["red", "green", "blue"], size=90), rng.normal(size=90)
    label = np.where((colours == "red") | (size > 1.0), "hot", "cold")
    text = "size;colour;label\n" + "".join(f"{s:.3f}".replace(".", ",") + f";{c};{lab}\n"
                                           for s, c, lab in zip(size, colours, label, strict=True))
    data = text.encode("utf-8-sig")
    user, tester = jgw.create_user("job_frank"), jgw.create_user("job_tess", "tester")
    with jgw.client(user) as c, jgw.client(tester) as t:
        ds = c.post("/api/v1/datasets", files={"file": ("temps.csv", data, "text/csv")})
        assert ds.status_code == 201, ds.text
        spec = {"dataset_id": ds.json()["id"], "target": "label", "algorithm": "logistic", "name": "temps"}
        r = t.post("/api/v1/jobs", json=spec)
        assert r.status_code == 403 and r.json()["error"]["code"] == "sample_data_only"
        assert t.post("/api/v1/jobs", json={**SPEC, "search": None, "name": "t-iris"}).status_code == 202
        job = wait_job(c, c.post("/api/v1/jobs", json=spec).json()["id"])
        assert job["state"] == "succeeded", job
        assert job["dataset_sha256"] == ds.json()["sha256"]
        records = [{"size": 0.2, "colour": "red"}, {"size": 0.2, "colour": "green"}, {"size": 1.5, "colour": "mauve"}]
        r = _predict_until_served(c, job["model"], records)
        assert r.status_code == 200, r.text
        path = tmp_path / "temps.csv"
        path.write_bytes(data)
        pipe, *_ = fit_tabular(JobSpec.model_validate(spec), DataRef(id="x", kind="table", name="temps.csv", format="csv",
                                                                      path=str(path)))
        want = pipe.predict_proba(np.array([[0.2, 2.0], [0.2, 1.0], [1.5, -1.0]], dtype=np.float32))
        got = [[p["probabilities"][k] for k in ("cold", "hot")] for p in r.json()["predictions"]]
        assert np.allclose(got, want, atol=1e-5)
        assert [p["label"] for p in r.json()["predictions"]] == ["hot", "cold", "hot"]
