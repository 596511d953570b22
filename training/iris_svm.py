"""`iris-svm`: SVC with probability estimates in a scaler pipeline on iris."""

from __future__ import annotations

import warnings

from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from training.base import Report, TrainResult
from training.iris_common import train_iris
from training.sklearn_export import SEED


class _Recipe:
    name = "iris-svm"

    def train(self, report: Report) -> TrainResult:
        # SVC(probability=True) is deprecated in sklearn 1.9 (removal in 1.11) but is what skl2onnx converts to
        # label + probabilities exactly; constraints.txt pins 1.9.
        warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
        estimator = Pipeline([("scale", StandardScaler()), ("svc", SVC(probability=True, random_state=SEED))])
        return train_iris(self.name, estimator, "StandardScaler + SVC (RBF, Platt-scaled probabilities)", report)


RECIPE = _Recipe()
