"""A recipe whose 'native' outputs disagree with its export on two rows: parity must refuse it."""

from __future__ import annotations

from training.base import Report, TrainResult
from training.iris_logreg import RECIPE as LOGREG


class _Broken:
    name = "iris-broken"

    def train(self, report: Report) -> TrainResult:
        result = LOGREG.train(report)
        result.name = result.card.name = self.name
        result.native["probabilities"][3, 0] += 0.05
        result.native["probabilities"][7, 2] -= 0.2
        return result


RECIPE = _Broken()
