"""The built-in sample datasets as the API shows them (generated on first use, profiled once per process)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from auth_api.datasets.models import DatasetPublic, DatasetSummary
from auth_api.datasets.profile import profile_of
from mlstack.tables import ImageSet
from training.sample_datasets import SAMPLES, is_sample, sample_frame

__all__ = ["SAMPLES", "is_sample", "sample_frame", "sample_public", "sample_sha256", "sample_summaries"]


def sample_summaries() -> list[DatasetSummary]:
    """Every sample, without generating any (a listing stays cheap)."""
    return [DatasetSummary(id=s.id, name=s.name, kind=s.kind, format="sample", size=None, sha256=None, rows=s.rows,
                           sample=True, description=s.description) for s in SAMPLES.values()]


@lru_cache(maxsize=8)
def _profiled(dataset_id: str) -> tuple[str, int, dict[str, Any]]:
    data = sample_frame(dataset_id)
    return _digest(data), len(data), profile_of(data)


def _digest(data: pd.DataFrame | ImageSet) -> str:
    """sha256 of the sample's canonical bytes (CSV of the frame; the images and labels), stable across processes."""
    h = hashlib.sha256()
    if isinstance(data, ImageSet):
        h.update(np.ascontiguousarray(data.labels).tobytes())
        for a in data.images:
            h.update(np.ascontiguousarray(a).tobytes())
    else:
        h.update(data.to_csv(index=False, float_format="%.17g").encode())
    return h.hexdigest()


def sample_sha256(dataset_id: str) -> str:
    return _profiled(dataset_id)[0]


def sample_public(dataset_id: str) -> DatasetPublic:
    """A sample with its schema; KeyError for an unknown id."""
    s = SAMPLES[dataset_id]
    sha, rows, prof = _profiled(dataset_id)
    return DatasetPublic(id=s.id, name=s.name, kind=s.kind, format="sample", size=None, sha256=sha, rows=rows, sample=True,
                         description=s.description, **prof)
