"""The job pipeline in-process (no gateway): every algorithm on the cheapest data passes the parity gate and
publishes a card with features, dataset and job; bad tables fail with a clear reason and publish nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auth_api.authn import Principal
from auth_api.core.errors import Forbidden
from auth_api.jobs.service import resolve_dataset
from mlstack.repository.layout import model_names
from training.jobs.data import DataRef, file_sha256, sample_ref
from training.jobs.run import run_job
from training.jobs.spec import JobInvalid, JobSpec

CASES = [  # (algorithm, sample, target, task, params)
    ("svm", "iris", "species", "classification", {}),
    ("knn", "iris", "species", "classification", {"n_neighbors": 3}),
    ("logistic", "iris", "species", "classification", {}),
    ("mlp", "iris", "species", "classification", {}),
    ("linear", "diabetes", "progression", "regression", {}),
    ("random_forest", "diabetes", "progression", "regression", {"n_estimators": 10}),
    ("cnn", "digits", None, "classification", {"epochs": 1, "max_rows": 300, "min_metric": 0.0}),
]


def _run(tmp: Path, spec: JobSpec, ref: DataRef) -> Any:
    return run_job(spec, ref, repo=tmp, served=f"u7-{spec.name}", job_id="job-1", owner="tester",
                   progress=lambda *_: None, use_ray=False, publish_kwargs={})


def test_every_algorithm_publishes_a_version_that_passes_parity(tmp_path: Path) -> None:
    for algorithm, sample, target, task, params in CASES:
        spec = JobSpec(dataset_id=f"sample-{sample}", target=target, task=task, algorithm=algorithm, params=params,
                       name=algorithm.replace("_", "-"))
        out = _run(tmp_path, spec, sample_ref(f"sample-{sample}"))
        assert (out.model, out.version) == (f"u7-{spec.name}", 1)
        card = json.loads((tmp_path / out.model / "1" / "model_card.json").read_text())
        assert card["parity"]["passed"] and card["job"]["id"] == "job-1" and card["created_by"] == "tester"
        assert card["task"] == task and card["dataset_ref"]["id"] == f"sample-{sample}"
        if algorithm != "cnn":
            assert [f["name"] for f in card["features"]] == card["feature_names"] and card["feature_names"]
        else:
            assert card["inputs"][0]["shape"] == [-1, 1, 8, 8] and card["labels"] == [str(i) for i in range(10)]


def test_bad_tables_fail_clearly_and_publish_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    tables = {
        "one_class": ("a,b,label\n" + "".join(f"{v:.3f},{i},yes\n" for i, v in enumerate(x)), "one_class"),
        "empty_column": ("a,b,label\n" + "".join(f"{v:.3f},,{'yes' if v > 0 else 'no'}\n" for v in x), "empty_column"),
        "too_many_categories": ("a,b,label\n" + "".join(f"{v:.3f},id{i},{'yes' if v > 0 else 'no'}\n" for i, v in enumerate(x)),
                                "too_many_categories"),
    }
    repo = tmp_path / "repo"
    for name, (text, code) in tables.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text)
        ref = DataRef(id=f"ds-{name}", kind="table", name=f"{name}.csv", format="csv", path=str(path),
                      sha256=file_sha256(str(path)))
        spec = JobSpec(dataset_id=ref.id, target="label", algorithm="random_forest", name=name.replace("_", "-"))
        with pytest.raises(JobInvalid) as err:
            _run(repo, spec, ref)
        assert err.value.code == code, (name, err.value.message)
    assert model_names(repo) == []


def test_tester_trains_on_samples_only() -> None:
    tester = Principal(kind="user", user_id=5, username="t", role="tester")
    assert resolve_dataset(None, tester, "sample-iris").name == "iris"  # type: ignore[arg-type]
    with pytest.raises(Forbidden) as err:
        resolve_dataset(None, tester, "0190e2a4-uploaded")  # type: ignore[arg-type]
    assert err.value.code == "sample_data_only" and err.value.status == 403


def test_job_rows_on_both_databases(db_url: str) -> None:
    """Migration 0009 and the conditional updates: a finished job stays finished; stale heartbeats are found."""
    from sqlmodel import Session

    from auth_api.core import db
    from auth_api.jobs import store
    from auth_api.jobs.tables import ModelShare, TrainingJob
    from auth_api.models import utcnow

    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine)
        with Session(engine) as s:
            s.add(TrainingJob(id="j1", owner_id=3, spec={"algorithm": "svm"}, dataset_id="sample-iris", model="u3-a"))
            s.add(ModelShare(name="u3-a", shared_by=3))
            s.commit()
            assert store.active_count(s, 3) == 1
        assert store.set_fields(engine, "j1", only_if=("queued",), state="running", heartbeat_at=store.ago(120))
        assert [j.id for j in store.stale(engine, store.ago(60))] == ["j1"]
        assert store.append_log(engine, "j1", ["epoch 1"], progress=0.5)
        assert store.finish(engine, "j1", "cancelled", error="cancelled by request")
        assert not store.finish(engine, "j1", "succeeded")  # the first final word stands
        assert not store.set_fields(engine, "j1", heartbeat_at=utcnow())
        with Session(engine) as s:
            job = s.get(TrainingJob, "j1")
            assert job is not None and job.state == "cancelled" and "epoch 1" in job.log and job.finished_at is not None
            assert store.active_count(s, 3) == 0
    finally:
        engine.dispose()


def test_categorical_columns_are_one_hot_inside_the_graph(tmp_path: Path) -> None:
    """Text columns become categories; records with text are mapped by the card (predict's code) and the served graph
    answers like the pipeline fitted in-process, unknown and missing categories included."""
    from auth_api.api.routes.predict import _record_rows
    from mlstack.repository.card import ModelCard
    from training.jobs.run import fit_tabular
    from training.parity import run_onnx

    rng = np.random.default_rng(1)
    colours = rng.choice(["red", "green", "blue"], size=120)
    size = rng.normal(size=120)
    label = np.where((colours == "red") | (size > 1.0), "hot", "cold")
    path = tmp_path / "cat.csv"
    lines = ["size;colour;label"] + [f"{s:.3f}".replace(".", ",") + f";{c if i % 17 else ''};{lab}"
                                      for i, (s, c, lab) in enumerate(zip(size, colours, label, strict=True))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # ';' and decimal comma, BOM
    ref = DataRef(id="ds-cat", kind="table", name="cat.csv", format="csv", path=str(path), sha256=file_sha256(str(path)))
    spec = JobSpec(dataset_id=ref.id, target="label", algorithm="logistic", name="cat")
    out = _run(tmp_path / "repo", spec, ref)
    vdir = tmp_path / "repo" / out.model / "1"
    card = ModelCard.model_validate(json.loads((vdir / "model_card.json").read_text()))
    assert card.preprocessing["categorical"] == {"colour": ["blue", "green", "red"]}
    assert {"name": "colour", "type": "category", "categories": ["blue", "green", "red"]} in card.model_dump()["features"]
    records: list[dict[str, float | str]] = [{"size": 0.1, "colour": "red"}, {"size": 0.1, "colour": "blue"},
                                             {"size": 2.0, "colour": "purple"}, {"size": -1.0, "colour": " green "}]
    rows = np.asarray(_record_rows(records, card), dtype=np.float32)
    assert rows[:, 1].tolist() == [2.0, 0.0, -1.0, 1.0]
    served = run_onnx((vdir / "model.onnx").read_bytes(), rows)
    pipe, *_ = fit_tabular(spec, ref)
    assert np.allclose(served["probabilities"], pipe.predict_proba(rows), atol=1e-5)
    assert [card.labels[i] for i in served["label"]] == ["hot", "cold", "hot", "cold"]
