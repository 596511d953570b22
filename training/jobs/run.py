"""One job end to end: load → validate → split → (grid search) → fit → held-out metrics → ONNX → the parity gate of
``mlstack train`` → publish. Raises JobInvalid / PublishError (BelowThreshold, ParityError) with the reason."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from mlstack.repository.card import Dataset, Metric, ModelCard, TensorSchema
from mlstack.repository.publish import Candidate, publish
from training.base import TrainResult, git_revision
from training.jobs import data as datamod
from training.jobs.spec import JobInvalid, JobSpec
from training.jobs.tabular import estimator, prepare, quiet
from training.jobs.trials import grid, run_trials
from training.parity import check_parity
from training.sklearn_export import background_sample, classifier_result, regressor_result

logger = logging.getLogger(__name__)
SEED = 42
Progress = Callable[[str, float, str], None]
"""(stage, fraction done 0..1, one log line)."""


@dataclass
class Outcome:
    model: str
    version: int
    metrics: dict[str, float]
    best_params: dict[str, Any]


def fit_tabular(spec: JobSpec, ref: datamod.DataRef, *, use_ray: bool = False,
                progress: Progress | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, Any, dict[str, Any]]:
    """(fitted pipeline, x_train, x_test, y_test, Prepared, best params): the native model a job exports."""
    say = progress or (lambda *_: None)
    quiet()
    frame = datamod.load_table(ref)
    say("validate", 0.1, f"loaded {len(frame)} rows x {len(frame.columns)} columns")
    prep = prepare(spec, frame)
    clf = spec.task == "classification"
    test_size = float(spec.params.get("test_size", 0.25))
    x_tr, x_te, y_tr, y_te = train_test_split(prep.x, prep.y, test_size=test_size, random_state=SEED,
                                              stratify=prep.y if clf else None)
    say("split", 0.15, f"split {len(x_tr)} train / {len(x_te)} held-out rows (seed {SEED}"
        + (", stratified)" if clf else ")"))
    if prep.categorical:
        say("validate", 0.12, "categorical: " + ", ".join(f"{k} ({len(v)})" for k, v in prep.categorical.items()))
    pipe = estimator(spec, prep)
    trials = grid(spec.search)
    best: dict[str, Any] = {}
    try:
        if len(trials) > 1:
            say("search", 0.2, f"grid search: {len(trials)} trials" + (" on Ray" if use_ray else ""))
            scores = run_trials(pipe, trials, x_tr, y_tr, clf, use_ray=use_ray,
                                on_done=lambda d, n: say("search", 0.2 + 0.5 * d / n, f"trial {d}/{n} done"))
            best = trials[int(np.argmax(scores))]
            say("search", 0.7, f"best {best} (cv score {max(scores):.4f})")
        pipe.set_params(**{f"model__{k}": v for k, v in best.items()})
        say("fit", 0.72, f"fitting {spec.algorithm} on {len(x_tr)} rows")
        pipe.fit(x_tr, y_tr)
    except ValueError as exc:  # sklearn's InvalidParameterError and friends: the user's params or grid
        raise JobInvalid(f"{spec.algorithm} refused its parameters: {str(exc)[:300]}", code="invalid_params") from exc
    return pipe, x_tr, x_te, y_te, prep, best


def _floor(spec: JobSpec, y_test: np.ndarray) -> float:
    """The metric a version must reach: the user's ``min_metric``, else the majority-class share (accuracy) or 0 (R²)."""
    if "min_metric" in spec.params:
        return float(spec.params["min_metric"])
    if spec.task == "classification":
        return float(np.bincount(y_test).max() / len(y_test))
    return 0.0


Built = tuple[TrainResult, dict[str, Any], list[dict[str, str]]]
"""(result for the parity gate, best grid params, features for the card)."""


def _tabular(spec: JobSpec, ref: datamod.DataRef, served: str, use_ray: bool, say: Progress) -> Built:
    pipe, x_tr, x_te, y_te, prep, best = fit_tabular(spec, ref, use_ray=use_ray, progress=say)
    say("evaluate", 0.8, "held-out metrics")
    ds = Dataset(name=ref.name, source=ref.id, n_train=len(x_tr), n_test=len(x_te))
    desc = f"{spec.algorithm} trained by a job on dataset {ref.id} to predict '{spec.target}'"
    algo = " + ".join(type(step).__name__ for _, step in pipe.steps)
    pre = {"categorical": prep.categorical} if prep.categorical else {}
    if spec.task == "classification":
        assert prep.classes is not None
        result = classifier_result(served, pipe, x_te, y_te, class_names=prep.classes, feature_names=prep.features,
                                   algorithm=algo, description=desc, dataset=ds, threshold=_floor(spec, y_te),
                                   preprocessing=pre)
    else:
        result = regressor_result(served, pipe, x_te, y_te, feature_names=prep.features, algorithm=algo,
                                  description=desc, dataset=ds, threshold=_floor(spec, y_te), tolerance=1e-3)
        result.card.preprocessing = pre
    if not np.isnan(x_tr).any():  # SHAP background for `explain`: rows a client could send
        result.extra_files["background.npy"] = background_sample(x_tr)
    return result, best, prep.feature_types()


def _images(spec: JobSpec, ref: datamod.DataRef, served: str, say: Progress) -> Built:
    from training.jobs import cnn

    size = int(spec.params.get("image_size", 8 if ref.sample else 16))
    imgs = datamod.load_images(ref, size)
    x, y = imgs.x, imgs.y
    if len(imgs.classes) < 2:
        raise JobInvalid("the images have one class; a classifier needs at least two", code="one_class")
    if spec.params.get("max_rows"):
        keep = np.sort(np.random.default_rng(SEED).permutation(len(x))[: int(spec.params["max_rows"])])
        x, y = x[keep], y[keep]
    say("validate", 0.1, f"{len(x)} images {x.shape[1]}x{x.shape[2]}, {len(imgs.classes)} classes")
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=float(spec.params.get("test_size", 0.25)),
                                                  random_state=SEED, stratify=y)
    except ValueError as exc:
        raise JobInvalid(f"cannot split the images: {exc}", code="too_few_rows") from exc
    epochs = int(spec.params.get("epochs", 10))
    say("fit", 0.2, f"training a CNN for {epochs} epochs on {len(x_tr)} images")
    net = cnn.fit(x_tr, y_tr, len(imgs.classes), epochs=epochs,
                  on_epoch=lambda e, loss: say("fit", 0.2 + 0.6 * e / epochs, f"epoch {e}/{epochs} loss {loss:.4f}"))
    say("evaluate", 0.8, "held-out metrics")
    proba = cnn.predict_proba(net, x_te)
    pred = proba.argmax(axis=1).astype(np.int64)
    acc = float((pred == y_te).mean())
    h, w = x.shape[1], x.shape[2]
    card = ModelCard(
        name=served, task="classification", framework=f"torch {cnn.torch.__version__}", algorithm="TinyCNN (2 conv)",
        description=f"CNN trained by a job on image dataset {ref.id}",
        dataset=Dataset(name=ref.name, source=ref.id, n_train=len(x_tr), n_test=len(x_te)),
        inputs=[TensorSchema(name="input", datatype="FP32", shape=[-1, 1, h, w])],
        outputs=[TensorSchema(name="label", datatype="INT64", shape=[-1]),
                 TensorSchema(name="probabilities", datatype="FP32", shape=[-1, len(imgs.classes)])],
        labels=imgs.classes, metrics={"accuracy": acc},
        preprocessing={"image": {"height": h, "width": w, "channels": 1, "polarity": "light_on_dark", "range": [0.0, 1.0],
                                 "scale": "pixel / 255", "resample": "area (box)"}, "layout": "NCHW"},
        headline_metric=Metric(name="accuracy", value=acc, threshold=_floor(spec, y_te)), opset=cnn.OPSET)
    result = TrainResult(name=served, onnx_bytes=cnn.export(net, h, w), card=card, x_test=x_te[:, None].astype(np.float32),
                         native={"label": pred, "probabilities": proba.astype(np.float32)},
                         labels=imgs.classes, label_output="probabilities")
    return result, {}, [{"name": "image", "type": f"image {h}x{w} grayscale"}]


def run_job(spec: JobSpec, ref: datamod.DataRef, *, repo: Path, served: str, job_id: str, owner: str,
            progress: Progress, use_ray: bool, publish_kwargs: dict[str, Any]) -> Outcome:
    """Train, gate and publish; nothing is written to the repository unless every gate passed."""
    spec.check()
    progress("load", 0.05, f"loading dataset {ref.id}")
    if ref.kind == "images":
        if spec.algorithm != "cnn":
            raise JobInvalid(f"dataset {ref.id} holds images; use algorithm 'cnn'", code="algorithm_data_mismatch")
        result, best, features = _images(spec, ref, served, progress)
    else:
        if spec.algorithm == "cnn":
            raise JobInvalid(f"dataset {ref.id} is a table; 'cnn' trains on image datasets", code="algorithm_data_mismatch")
        result, best, features = _tabular(spec, ref, served, use_ray, progress)
    hm = result.card.headline_metric
    assert hm is not None
    progress("evaluate", 0.85, f"held-out {hm.name} {hm.value:.4f} (floor {hm.threshold})")
    if not hm.passed:
        from mlstack.errors import BelowThreshold

        raise BelowThreshold(f"held-out {hm.name} {hm.value:.4f} misses its floor {hm.threshold:.4f}; not published",
                             details={"metric": hm.model_dump()})
    progress("parity", 0.9, "checking the ONNX export against the native model")
    result.card.parity = check_parity(result)
    progress("parity", 0.93, f"parity ok: {result.card.parity.n_rows} rows, max abs diff {result.card.parity.max_abs_diff:.2e}")
    card = ModelCard.model_validate({
        **result.card.model_dump(), "git_revision": git_revision(), "created_by": owner,
        "job": {"id": job_id, "algorithm": spec.algorithm, "params": spec.params, "search": spec.search, "best_params": best},
        "features": features, "dataset_ref": {"id": ref.id, "sha256": ref.sha256, "target": spec.target}})
    progress("publish", 0.95, f"publishing {served}")
    pub = publish(repo, Candidate(name=served, onnx_bytes=result.onnx_bytes, card=card, labels=result.labels,
                                  label_output=result.label_output, extra_files=result.extra_files), **publish_kwargs)
    progress("publish", 1.0, f"published {pub.name} version {pub.version}")
    return Outcome(model=pub.name, version=pub.version, metrics=dict(result.card.metrics), best_params=best)
