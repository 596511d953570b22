"""predict_records against a real `bentoml serve`: every tabular task, and records that do not fit the card."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris

from mlstack.repository.layout import read_card
from tests.fixtures.bento import BentoFixture

IRIS_NAMES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


def _records(bento: BentoFixture, model: str, x: np.ndarray) -> list[dict[str, float]]:
    names = read_card(bento.repository, model, 1).feature_names
    return [{n: float(v) for n, v in zip(names, row, strict=True)} for row in x]


@pytest.mark.parametrize("model", ["iris-rf", "iris-logreg", "iris-svm", "iris-knn"])
def test_iris_classifiers_name_the_species(bento: BentoFixture, model: str) -> None:
    data = load_iris()
    idx = np.arange(0, 150, 7)
    resp = bento.post("predict_records", {"model": model, "records": _records(bento, model, data.data[idx])})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == model and body["version"] == 1 and body["task"] == "classification"
    labels = [r["label"] for r in body["results"]]
    truth = [str(data.target_names[t]) for t in data.target[idx]]
    # every iris model scores 0.89-0.93 held out (training/iris_common.py); 22 rows of the whole set here
    assert np.mean([a == b for a, b in zip(labels, truth, strict=True)]) >= 0.8
    for r in body["results"]:
        assert set(r["probabilities"]) == {"setosa", "versicolor", "virginica"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)


@pytest.mark.parametrize("model", ["diabetes-linear", "diabetes-rf"])
def test_regressors_return_values(bento: BentoFixture, model: str) -> None:
    bg = np.load(bento.repository / model / "1" / "background.npy")
    resp = bento.post("predict_records", {"model": model, "records": _records(bento, model, bg[:5])})
    assert resp.status_code == 200, resp.text
    values = [r["value"] for r in resp.json()["results"]]
    assert len(values) == 5 and all(25 <= v <= 350 for v in values)  # diabetes progression scores


def test_anomaly_detector_scores(bento: BentoFixture) -> None:
    bg = np.load(bento.repository / "battery-fault" / "1" / "background.npy")
    resp = bento.post("predict_records", {"model": "battery-anomaly", "records": _records(bento, "battery-anomaly", bg[:4])})
    assert resp.status_code == 200, resp.text
    for r in resp.json()["results"]:
        assert r["label"] in (-1, 1) and r["anomaly"] == (r["label"] == -1) and isinstance(r["score"], float)


def _err(resp, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    return err


def test_unknown_and_missing_features_are_named(bento: BentoFixture) -> None:
    rec = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width": 0.2, "colour": 1}
    err = _err(bento.post("predict_records", {"model": "iris-rf", "records": [rec]}), 422, "invalid_records")
    assert "petal_width" in err["message"] and "colour" in err["message"] and "petal_width_cm" in err["message"]
    assert err["details"]["unknown"] == ["colour", "petal_width"]
    assert err["details"]["missing"] == ["petal_width_cm"]


def test_non_numeric_feature_is_422(bento: BentoFixture) -> None:
    rec = dict.fromkeys(IRIS_NAMES, 1.0) | {"petal_width_cm": "wide"}
    err = _err(bento.post("predict_records", {"model": "iris-rf", "records": [rec]}), 422, "invalid_records")
    assert "petal_width_cm" in err["message"]


def test_malformed_requests(bento: BentoFixture) -> None:
    _err(bento.post("predict_records", {"model": "iris-rf"}), 400, "invalid_request")
    _err(bento.post("predict_records", {"model": "iris-rf", "records": []}), 422, "invalid_records")
    _err(bento.post("predict_records", {"model": "nope", "records": [dict.fromkeys(IRIS_NAMES, 1.0)]}), 404, "model_not_found")
    _err(bento.post("predict_records", {"model": "iris-rf", "version": 7, "records": [dict.fromkeys(IRIS_NAMES, 1.0)]}),
         404, "model_not_found")
    _err(bento.post("predict_records", {"model": "digits-cnn", "records": [{"a": 1}]}), 422, "unsupported_model")


def test_models_and_health(bento: BentoFixture) -> None:
    models = {m["name"]: m for m in bento.post("models").json()["models"]}
    assert {"digits-cnn", "digits-keras", "iris-rf", "battery-fault", "battery-anomaly"} <= set(models)
    assert models["digits-cnn"]["image"] and not models["iris-rf"]["image"]
    assert models["iris-rf"]["feature_names"] == IRIS_NAMES and models["iris-rf"]["explainable"]
    health = bento.post("health")
    assert health.status_code == 200 and health.json()["runner"] == "local" and health.json()["runner_ready"]
