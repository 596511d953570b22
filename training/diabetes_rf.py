"""`diabetes-rf`: random-forest regression on the diabetes dataset."""

from __future__ import annotations

from sklearn.ensemble import RandomForestRegressor

from training.base import Report, TrainResult
from training.diabetes_common import train_diabetes
from training.sklearn_export import SEED


class _Recipe:
    name = "diabetes-rf"

    def train(self, report: Report) -> TrainResult:
        reg = RandomForestRegressor(n_estimators=200, max_depth=8, min_samples_leaf=3, random_state=SEED, n_jobs=2)
        # Tree thresholds are stored as float32 in ONNX; sums of 200 leaf values in float32 differ from sklearn's
        # float64 by ~1e-5 relative on targets around 150, hence an absolute tolerance of 1e-3.
        return train_diabetes(self.name, reg, "RandomForestRegressor (200 trees, depth 8)", 0.35, report, tolerance=1e-3)


RECIPE = _Recipe()
