"""The built-in sample datasets (ids ``sample-iris``, ``sample-diabetes``, ``sample-digits``, ``sample-battery``).

Generated on demand from scikit-learn's bundled data and the seeded battery simulator, never downloaded; the gateway's
dataset API lists them and training jobs read them from here, so both see the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from mlstack.tables import ImageSet

PREFIX = "sample-"
BATTERY_PER_CLASS = 40  # 5 classes x 40 windows: small, ~1 s to simulate
BATTERY_SEED = 16


@dataclass(frozen=True)
class Sample:
    id: str
    name: str
    kind: str  # table | images
    description: str
    target: str | None  # the suggested target column (tables)
    source: str  # what generates it
    rows: int


SAMPLES: dict[str, Sample] = {s.id: s for s in (
    Sample("sample-iris", "iris", "table", "150 iris flowers: 4 measurements (cm) and the species", "species",
           "sklearn.datasets.load_iris", 150),
    Sample("sample-diabetes", "diabetes", "table", "442 diabetes patients: 10 standardised baseline variables and "
           "disease progression after one year", "progression", "sklearn.datasets.load_diabetes", 442),
    Sample("sample-digits", "digits", "images", "1,797 handwritten digits, 8x8 grayscale, one class per digit", None,
           "sklearn.datasets.load_digits", 1797),
    Sample("sample-battery", "battery", "table", f"{5 * BATTERY_PER_CLASS} simulated 15-minute telemetry windows of "
           "lithium-ion cells: 20 features and the injected fault", "fault",
           f"training.battery_data.generate(n_per_class={BATTERY_PER_CLASS}, seed={BATTERY_SEED})", 5 * BATTERY_PER_CLASS),
)}


def is_sample(dataset_id: str) -> bool:
    return dataset_id.startswith(PREFIX)


@lru_cache(maxsize=8)
def _load(dataset_id: str) -> pd.DataFrame | ImageSet:
    from sklearn import datasets  # imported on first use: the gateway starts without scikit-learn's load time

    if dataset_id == "sample-iris":
        bunch = datasets.load_iris(as_frame=True)
        frame = bunch.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
        frame["species"] = pd.Categorical.from_codes(bunch.target, list(bunch.target_names)).astype(str)
        return frame
    if dataset_id == "sample-diabetes":
        bunch = datasets.load_diabetes(as_frame=True)
        return bunch.data.assign(progression=bunch.target.astype(float))
    if dataset_id == "sample-digits":
        d = datasets.load_digits()
        images = [np.clip(np.round(a / 16.0 * 255.0), 0, 255).astype(np.uint8) for a in d.images]
        return ImageSet(classes=[str(i) for i in range(10)], labels=d.target.astype(np.int64), images=images,
                        names=[f"{t}/{i:04d}.png" for i, t in enumerate(d.target)])
    if dataset_id == "sample-battery":
        from training.battery_data import generate

        b = generate(n_per_class=BATTERY_PER_CLASS, seed=BATTERY_SEED)
        frame = pd.DataFrame(np.asarray(b.x, dtype=np.float64), columns=list(b.feature_names))
        frame["fault"] = np.asarray(b.classes)[b.y]
        return frame
    raise KeyError(dataset_id)


def sample_frame(dataset_id: str) -> pd.DataFrame | ImageSet:
    """A fresh copy of the sample (a DataFrame for tables, an ImageSet for digits); KeyError for an unknown id."""
    if dataset_id not in SAMPLES:
        raise KeyError(dataset_id)
    got = _load(dataset_id)
    if isinstance(got, pd.DataFrame):
        return got.copy()
    return ImageSet(classes=list(got.classes), labels=got.labels.copy(), images=list(got.images), names=list(got.names))
