"""`battery-anomaly`: an isolation forest that flags unusual lithium-ion cell telemetry, trained on healthy cells only.

It never sees a fault while training; the hold-out mixes healthy windows with all four simulated fault kinds, and the
headline metric is ROC-AUC of the anomaly score against "is faulty". ``label`` is -1 (anomaly) / 1 (normal) and
``scores`` is ``decision_function`` (lower = more anomalous; below 0 = flagged).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from sklearn.ensemble import IsolationForest
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split

from mlstack.repository.card import Dataset, Metric, ModelCard, TensorSchema
from training import battery_data
from training.base import Report, TrainResult
from training.battery_fault import TEST_SIZE, preprocessing_notes
from training.sklearn_export import OPSET, SEED, background_sample, sklearn_framework, to_onnx

# A score that ranked faults at random would give 0.5; the forest reaches 0.91-0.94 (dataset seeds 0-3, 42). The mildest capacity fades look
# like a slightly worn healthy cell, so 0.85 is the bar for a useful unsupervised screen.
THRESHOLD = 0.85
# Alarm budget: the decision threshold flags about this share of healthy training windows (a screen: a flagged
# cell gets a closer look, so recall matters more than a few false alarms; 0.05 would catch ~70% of faults, 0.1 ~80-85%).
CONTAMINATION = 0.1
# skl2onnx's IsolationForest converter slows quadratically with the tree count (200 trees: ~45 s); 50 trees of 256
# samples convert in ~2 s with about the same ROC-AUC (0.936 vs 0.937 at 200 on one dataset seed).
N_TREES = 50
# skl2onnx reproduces decision_function to ~2e-7 (DESIGN.md); 1e-4 leaves room for float32 summation order.
TOLERANCE = 1e-4


class _Recipe:
    name = "battery-anomaly"

    def train(self, report: Report) -> TrainResult:
        report(f"{self.name}: simulating {battery_data.DEFAULT_N_PER_CLASS} windows per class")
        ds = battery_data.training_set(SEED)
        x_tr, x_te, y_tr, y_te = train_test_split(ds.x, ds.y, test_size=TEST_SIZE, stratify=ds.y, random_state=SEED)
        x_fit = np.asarray(x_tr[y_tr == 0])
        algorithm = f"IsolationForest({N_TREES} trees, contamination {CONTAMINATION})"
        report(f"{self.name}: fitting {algorithm} on {len(x_fit)} healthy windows")
        iso = IsolationForest(n_estimators=N_TREES, contamination=CONTAMINATION, random_state=SEED, n_jobs=1).fit(x_fit)
        x_te = np.asarray(x_te, dtype=np.float32)
        label = iso.predict(x_te).astype(np.int64)
        scores = iso.decision_function(x_te).astype(np.float32).reshape(-1, 1)
        faulty = y_te != 0
        auc = float(roc_auc_score(faulty, -scores[:, 0]))
        flagged = label == -1
        metrics = {"roc_auc": auc, "precision": float(precision_score(faulty, flagged)),
                   "recall": float(recall_score(faulty, flagged)),
                   "false_alarm_rate": float(flagged[~faulty].mean())}
        for k, cls in enumerate(ds.classes[1:], start=1):
            metrics[f"detected_{cls}"] = float(flagged[y_te == k].mean())
        n_feat = x_te.shape[1]
        card = ModelCard(
            name=self.name, task="anomaly_detection", framework=sklearn_framework(), algorithm=algorithm,
            description="Unsupervised screen for lithium-ion cell telemetry: trained on healthy cells only, flags "
                        "windows unlike them (any fault, including ones never simulated).",
            dataset=Dataset(name="battery-twin-windows", source=battery_data.SOURCE, n_train=len(x_fit), n_test=len(x_te)),
            feature_names=list(ds.feature_names),
            inputs=[TensorSchema(name="input", datatype="FP32", shape=[-1, n_feat])],
            outputs=[TensorSchema(name="label", datatype="INT64", shape=[-1]),
                     TensorSchema(name="scores", datatype="FP32", shape=[-1, 1])],
            preprocessing={**preprocessing_notes(), "training_rows": "healthy (normal) windows of the training split only",
                           "evaluation": "hold-out of all five classes; positive = any fault"},
            metrics=metrics, headline_metric=Metric(name="roc_auc", value=auc, threshold=THRESHOLD), opset=OPSET)
        report(f"{self.name}: held-out ROC-AUC {auc:.4f}, precision {metrics['precision']:.3f}, "
               f"recall {metrics['recall']:.3f}, false alarms {metrics['false_alarm_rate']:.3f}")
        return TrainResult(name=self.name, onnx_bytes=squeeze_label(to_onnx(iso, n_feat, ["label", "scores"], zipmap=None)), card=card,
                           x_test=x_te, native={"label": label, "scores": scores}, tolerance=TOLERANCE,
                           extra_files={"background.npy": background_sample(x_fit)})


def squeeze_label(onnx_bytes: bytes) -> bytes:
    """skl2onnx emits the IsolationForest label as [N, 1]; squeeze it to [N] like every other model's ``label``."""
    model = onnx.load_from_string(onnx_bytes)
    out = next(o for o in model.graph.output if o.name == "label")
    for node in model.graph.node:
        node.output[:] = ["label_column" if o == "label" else o for o in node.output]
        node.input[:] = ["label_column" if i == "label" else i for i in node.input]
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "label_squeeze_axes"))
    model.graph.node.append(helper.make_node("Squeeze", ["label_column", "label_squeeze_axes"], ["label"], name="label_squeeze"))
    del out.type.tensor_type.shape.dim[1:]
    onnx.checker.check_model(model)
    return model.SerializeToString()


RECIPE = _Recipe()
