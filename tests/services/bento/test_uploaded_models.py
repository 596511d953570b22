"""Models uploaded with an exporter's own tensor names (skl2onnx: input ``X``, outputs ``output_label``/
``output_probability``/``variable``) work in every BentoML task; explanations say where their background came from;
``method: "lime"`` runs LIME; a wrong multipart field is a 400 naming ``image``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlstack.repository import intake
from mlstack.repository.publish import Candidate, publish
from mlstack.settings import Settings
from tests.fixtures.bento import BentoFixture, _start
from tests.fixtures.triton import free_ports
from tests.services.bento.helpers import render_digit

IRIS_FEATURES = ["sl", "sw", "pl", "pw"]
IRIS_LABELS = ["setosa", "versicolor", "virginica"]


def _skl2onnx(model: object, n: int) -> bytes:
    """Exported with skl2onnx's defaults: input X, outputs output_label/output_probability (or variable)."""
    onx = convert_sklearn(model, initial_types=[("X", FloatTensorType([None, n]))],
                          options={id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None,
                          target_opset=17)
    return onx.SerializeToString()


def _put(repo: Path, name: str, data: bytes, card: dict | None, background: np.ndarray | None = None) -> int:
    bg = None
    if background is not None:
        buf = io.BytesIO()
        np.save(buf, background)
        bg = buf.getvalue()
    got = intake.prepare(repo, name, data, json.dumps(card) if card else None, background=bg)
    cand = Candidate(name=name, onnx_bytes=data, card=got.card, labels=got.card.labels, label_output=got.label_output,
                     extra_files=got.extra_files)
    return publish(repo, cand, max_batch_size=64, version_policy_latest=2).version


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoFixture]:
    base = tmp_path_factory.mktemp("bento_uploaded")
    repo = base / "model_repository"
    x, y = load_iris(return_X_y=True)
    iris = _skl2onnx(LogisticRegression(max_iter=500).fit(x, y), 4)
    _put(repo, "up-iris", iris, {"task": "classification", "feature_names": IRIS_FEATURES, "labels": IRIS_LABELS},
         background=x[::15].astype(np.float32))
    _put(repo, "up-iris", iris, None)  # v2: no card, no background -> both inherited from v1
    dx, dy = load_diabetes(return_X_y=True)
    _put(repo, "up-diabetes", _skl2onnx(LinearRegression().fit(dx, dy), 10),
         {"task": "regression", "feature_names": [f"f{i}" for i in range(10)]})
    (port,) = free_ports(1)
    settings = Settings(repository=repo, var_dir=base / "var", bento_host="127.0.0.1", bento_port=port,
                        bento_runner="local", bento_startup_timeout_s=180.0, bento_explain_nsamples=256)
    server = _start(settings, repo)
    try:
        yield BentoFixture(server=server, settings=settings, repository=repo)
    finally:
        server.stop()


def _iris_records(n: int = 2) -> list[dict[str, float]]:
    x, _ = load_iris(return_X_y=True)
    return [dict(zip(IRIS_FEATURES, map(float, row), strict=True)) for row in x[[0, 100]][:n]]


def test_predict_records_uses_the_models_own_tensor_names(uploaded: BentoFixture) -> None:
    r = uploaded.post("predict_records", {"model": "up-iris", "records": _iris_records()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 2 and [row["label"] for row in body["results"]] == ["setosa", "virginica"]
    assert abs(sum(body["results"][0]["probabilities"].values()) - 1) < 1e-4
    rec = {f"f{i}": 0.01 for i in range(10)}
    r = uploaded.post("predict_records", {"model": "up-diabetes", "records": [rec]})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["results"][0]["value"], float)


def test_explain_says_which_background(uploaded: BentoFixture) -> None:
    r = uploaded.post("explain", {"model": "up-iris", "version": 1, "records": _iris_records(1)})
    assert r.status_code == 200, r.text
    assert r.json()["background"] == "uploaded" and r.json()["background_rows"] == 10
    r = uploaded.post("explain", {"model": "up-iris", "records": _iris_records(1)})
    assert r.status_code == 200 and r.json()["background"] == "derived:inherited:v1", r.text
    r = uploaded.post("explain", {"model": "up-diabetes", "records": [{f"f{i}": 0.02 for i in range(10)}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["background"] == "derived:zeros"
    row = body["explanations"][0]
    assert row["additivity_error"] < 1e-3 and set(row["contributions"]) == {f"f{i}" for i in range(10)}


def test_explain_with_lime_runs_lime_and_unknown_methods_are_refused(uploaded: BentoFixture) -> None:
    r = uploaded.post("explain", {"model": "up-diabetes", "method": "lime", "records": [{f"f{i}": 0.02 for i in range(10)}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "lime.LimeTabularExplainer"
    row = body["explanations"][0]
    assert set(row["contributions"]) == {f"f{i}" for i in range(10)} and "fit_r2" in row and "base_value" not in row
    # A linear model is its own best local surrogate.
    assert row["fit_r2"] > 0.99 and abs(row["local_prediction"] - row["output_value"]) < 1.0
    r = uploaded.post("explain", {"model": "up-iris", "method": "anchors", "records": _iris_records(1)})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "unsupported_method" and err["details"]["field"] == "method"
    assert err["details"]["supported"] == ["shap", "lime"]


def test_classify_image_with_the_wrong_field_names_image(bento: BentoFixture) -> None:
    digit = render_digit(np.eye(8, dtype=np.float32))
    r = bento.post("classify_image", files={"file": ("digit.png", digit, "image/png")})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["details"]["field"] == "image" and "'image'" in err["message"]
    r = bento.post("classify_image", files={"model": (None, "digits-cnn")})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "image", r.text
    r = bento.post("classify_image", files={"image": ("digit.png", digit, "image/png")})
    assert r.status_code == 200, r.text
