"""The model card (``<name>/<N>/model_card.json``): what a version is, how it was made, how good it is.

Field reference: docs/model_card.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Task = Literal["classification", "regression", "anomaly_detection"]


class TensorSchema(BaseModel):
    name: str
    datatype: str = Field(description="KServe v2 datatype, e.g. FP32, INT64.")
    shape: list[int] = Field(description="Full shape including the batch axis (-1 = variable).")


class Dataset(BaseModel):
    name: str
    source: str = Field(description="Where the data comes from (a package loader or a generator in training/).")
    n_train: int | None = None
    n_test: int | None = None


class Metric(BaseModel):
    name: str
    value: float
    threshold: float | None = None
    higher_is_better: bool = True

    @property
    def passed(self) -> bool:
        if self.threshold is None:
            return True
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold


class Parity(BaseModel):
    passed: bool
    n_rows: int
    label_agreement: float | None = Field(None, description="Share of rows whose labels agree (1.0 = all).")
    max_abs_diff: float = Field(description="Largest |onnx - native| over compared values.")
    tolerance: float
    compared: list[str] = Field(default_factory=list, description="Which outputs were compared.")


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    schema_version: int = 1
    name: str
    version: int | None = None
    task: Task
    framework: str = Field(description="Training framework and version, e.g. 'scikit-learn 1.9.1'.")
    algorithm: str
    description: str = ""
    dataset: Dataset
    feature_names: list[str] = Field(default_factory=list)
    inputs: list[TensorSchema] = Field(default_factory=list)
    outputs: list[TensorSchema] = Field(default_factory=list)
    labels: list[str] | None = None
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    headline_metric: Metric | None = None
    parity: Parity | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    created_by: str | None = None
    git_revision: str | None = None
    opset: int | None = None
    onnx_sha256: str | None = None
    files: list[str] = Field(default_factory=list, description="Extra files shipped in the version folder.")
    background: str | None = Field(None, description="Where background.npy came from: 'uploaded', 'inherited:v<N>'; "
                                   "None for a recipe's training sample.")
