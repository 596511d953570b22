"""`iris-knn`: k-nearest neighbours (k=5) in a scaler pipeline on iris."""

from __future__ import annotations

from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from training.base import Report, TrainResult
from training.iris_common import train_iris


class _Recipe:
    name = "iris-knn"

    def train(self, report: Report) -> TrainResult:
        estimator = Pipeline([("scale", StandardScaler()), ("knn", KNeighborsClassifier(n_neighbors=5))])
        return train_iris(self.name, estimator, "StandardScaler + KNeighborsClassifier(k=5)", report)


RECIPE = _Recipe()
