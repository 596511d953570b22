"""Name -> recipe. Imports are lazy so training an sklearn model never loads TensorFlow."""

from __future__ import annotations

import importlib

from mlstack.errors import MlstackError
from training.base import Recipe

RECIPES: dict[str, str] = {
    "iris-svm": "training.iris_svm",
    "iris-knn": "training.iris_knn",
    "iris-rf": "training.iris_rf",
    "iris-logreg": "training.iris_logreg",
    "diabetes-linear": "training.diabetes_linear",
    "diabetes-rf": "training.diabetes_rf",
    "digits-cnn": "training.digits_cnn",
    "digits-keras": "training.digits_keras",
    "battery-fault": "training.battery_fault",
    "battery-anomaly": "training.battery_anomaly",
}


class UnknownRecipe(MlstackError):
    code = "unknown_recipe"
    status = 404


def get_recipe(name: str) -> Recipe:
    """Each recipe module exposes ``RECIPE``."""
    if name not in RECIPES:
        raise UnknownRecipe(f"no recipe named {name!r}; known: {', '.join(RECIPES)}")
    return importlib.import_module(RECIPES[name]).RECIPE
