"""Where a job's data comes from: a built-in sample (training.sample_datasets) or an uploaded file (read with
mlstack.tables, the one table reader), read in one place inside the Ray worker.

The gateway resolves a dataset id to a ``DataRef`` (format, sha256, where the bytes are) with the caller's rights.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlstack.tables import ImageSet, read_dataset
from training.jobs.spec import JobInvalid
from training.sample_datasets import SAMPLES, sample_frame

LEGACY_PREFIX = "sample:"  # `sample:iris` is accepted as `sample-iris`


@dataclass(frozen=True)
class DataRef:
    """A dataset as the job sees it: ``kind`` table | images; samples have neither ``path`` nor ``object_key``."""

    id: str
    kind: str
    name: str
    format: str = "sample"
    path: str | None = None
    object_key: str | None = None
    sha256: str | None = None
    sheet: str | None = None

    @property
    def sample(self) -> bool:
        return self.id in SAMPLES


@dataclass
class Images:
    """float32 [N, H, W] in [0, 1], class index per image, class names."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]


def canonical_id(dataset_id: str) -> str:
    return "sample-" + dataset_id.removeprefix(LEGACY_PREFIX) if dataset_id.startswith(LEGACY_PREFIX) else dataset_id


def sample_ref(dataset_id: str) -> DataRef:
    s = SAMPLES.get(canonical_id(dataset_id))
    if s is None:
        raise JobInvalid(f"no sample dataset '{dataset_id}'; known: {', '.join(SAMPLES)}", code="dataset_not_found")
    return DataRef(id=s.id, kind=s.kind, name=s.name, sha256=None)


def _read(ref: DataRef) -> pd.DataFrame | ImageSet:
    if ref.sample:
        return sample_frame(ref.id)
    if ref.path is not None:
        data = Path(ref.path).read_bytes()
    elif ref.object_key is not None:
        from mlstack.settings import get_settings
        from mlstack.storage import open_storage

        store = open_storage(get_settings())
        try:
            data = store.get(ref.object_key)
        finally:
            store.close()
    else:
        raise JobInvalid(f"dataset {ref.id} has no stored file", code="dataset_not_found")
    return read_dataset(data, ref.format, filename=ref.name, sheet=ref.sheet)


def load_table(ref: DataRef) -> pd.DataFrame:
    got = _read(ref)
    if not isinstance(got, pd.DataFrame):
        raise JobInvalid(f"dataset {ref.id} holds images; use algorithm 'cnn'", code="algorithm_data_mismatch")
    return got


def load_images(ref: DataRef, size: int | None) -> Images:
    got = _read(ref)
    if isinstance(got, pd.DataFrame):
        raise JobInvalid(f"dataset {ref.id} is a table; 'cnn' trains on image datasets", code="algorithm_data_mismatch")
    if not got.images:
        raise JobInvalid("the ZIP holds no images in class folders", code="no_images")
    side = size or max(max(im.shape) for im in got.images[:1])
    return Images(got.to_array(side, side).astype(np.float32), np.asarray(got.labels, dtype=np.int64), list(got.classes))


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
