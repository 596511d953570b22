"""explain against a real `bentoml serve`: SHAP contributions + base value equal the served model's output."""

from __future__ import annotations

import numpy as np
import pytest

from mlstack.repository.layout import read_card
from tests.fixtures.bento import BentoFixture


def _records(bento: BentoFixture, model: str, x: np.ndarray) -> list[dict[str, float]]:
    names = read_card(bento.repository, model, 1).feature_names
    return [{n: float(v) for n, v in zip(names, row, strict=True)} for row in x]


def _rows(bento: BentoFixture, model: str, n: int) -> np.ndarray:
    bg = np.load(bento.repository / model / "1" / "background.npy")
    # Rows that are not background rows themselves: nudged copies.
    return bg[:n] * np.float32(1.03)


@pytest.mark.parametrize(("model", "output_key"), [
    ("battery-fault", "probabilities"),   # forest classifier, 20 features (sampled coalitions)
    ("diabetes-rf", "value"),             # forest regressor, 10 features (every coalition)
    ("diabetes-linear", "value"),         # linear model
    ("iris-logreg", "probabilities"),     # linear classifier
])
def test_contributions_plus_base_equal_model_output(bento: BentoFixture, model: str, output_key: str) -> None:
    recs = _records(bento, model, _rows(bento, model, 2))
    resp = bento.post("explain", {"model": model, "records": recs})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    pred = bento.post("predict_records", {"model": model, "records": recs}).json()["results"]
    assert body["method"] == "shap.KernelExplainer" and len(body["explanations"]) == 2
    for exp, p in zip(body["explanations"], pred, strict=True):
        assert set(exp["contributions"]) == set(body["feature_names"])
        total = exp["base_value"] + sum(exp["contributions"].values())
        model_output = p["value"] if output_key == "value" else p["probabilities"][p["label"]]
        assert abs(total - model_output) <= 1e-3, (model, total, model_output)
        assert abs(exp["output_value"] - model_output) <= 1e-5
        assert exp["prediction"] == p


def test_linear_contributions_follow_the_coefficients(bento: BentoFixture) -> None:
    """For a linear model Shapley values are w_j * (x_j - mean background_j): the biggest move comes from the feature
    whose change moves the output most."""
    model = "diabetes-linear"
    bg = np.load(bento.repository / model / "1" / "background.npy")
    x = bg.mean(axis=0, keepdims=True).astype(np.float32)
    x[0, 2] += 0.05  # bmi up
    body = bento.post("explain", {"model": model, "records": _records(bento, model, x)}).json()
    contrib = body["explanations"][0]["contributions"]
    names = body["feature_names"]
    assert max(contrib, key=lambda k: abs(contrib[k])) == names[2]
    assert all(abs(contrib[n]) < 1e-3 for i, n in enumerate(names) if i != 2)


def test_explain_a_chosen_class(bento: BentoFixture) -> None:
    recs = _records(bento, "iris-rf", _rows(bento, "iris-rf", 1))
    body = bento.post("explain", {"model": "iris-rf", "records": recs, "target": "virginica"}).json()
    assert "virginica" in body["explanations"][0]["explained_output"]
    bad = bento.post("explain", {"model": "iris-rf", "records": recs, "target": "rose"})
    assert bad.status_code == 422 and "rose" in bad.json()["error"]["message"]


def test_explain_refuses_image_models_and_too_many_records(bento: BentoFixture) -> None:
    assert bento.post("explain", {"model": "digits-cnn", "records": [{"a": 1}]}).status_code == 422
    recs = _records(bento, "iris-rf", np.ones((21, 4), dtype=np.float32))
    resp = bento.post("explain", {"model": "iris-rf", "records": recs})
    assert resp.status_code == 422 and resp.json()["error"]["details"]["limit"] == 20
