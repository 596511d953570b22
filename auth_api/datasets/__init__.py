"""Datasets: uploaded tables and image ZIPs (owned, kept in object storage) and the built-in samples.

Training jobs resolve a dataset id with ``lookup`` (ownership checked) and read it with ``load_dataset_frame``.
"""

from __future__ import annotations

from auth_api.datasets.service import DatasetRef, load_dataset_frame, lookup

__all__ = ["DatasetRef", "load_dataset_frame", "lookup"]
