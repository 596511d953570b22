"""`iris-logreg`: multinomial logistic regression on iris."""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from training.base import Report, TrainResult
from training.iris_common import train_iris


class _Recipe:
    name = "iris-logreg"

    def train(self, report: Report) -> TrainResult:
        estimator = Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(max_iter=1000))])
        return train_iris(self.name, estimator, "StandardScaler + LogisticRegression", report)


RECIPE = _Recipe()
