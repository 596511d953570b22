"""`iris-rf`: random forest on iris."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier

from training.base import Report, TrainResult
from training.iris_common import train_iris
from training.sklearn_export import SEED


class _Recipe:
    name = "iris-rf"

    def train(self, report: Report) -> TrainResult:
        estimator = RandomForestClassifier(n_estimators=100, max_depth=6, random_state=SEED, n_jobs=1)
        return train_iris(self.name, estimator, "RandomForestClassifier(100 trees, depth 6)", report)


RECIPE = _Recipe()
