"""What a job asks for (the body of ``POST /api/v1/jobs``) and the errors a job fails with."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlstack.errors import MlstackError

Algorithm = Literal["svm", "knn", "random_forest", "linear", "logistic", "mlp", "cnn"]
ALIASES = {"rf": "random_forest", "random-forest": "random_forest", "lr": "logistic", "linreg": "linear"}
REGRESSION_ONLY = {"linear"}
CLASSIFICATION_ONLY = {"logistic", "cnn"}
MAX_TRIALS = 64


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dataset_id": "sample-iris", "target": "species", "task": "classification", "algorithm": "svm",
         "search": {"C": [0.5, 1.0, 2.0]}, "name": "iris-svm"}]})

    dataset_id: str = Field(min_length=1, max_length=64, description="An uploaded dataset's id, or `sample-<name>`.")
    target: str | None = Field(None, max_length=200, description="The column to predict (not used for image datasets).")
    task: Literal["classification", "regression"] = "classification"
    algorithm: Algorithm
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator parameters (e.g. n_estimators); "
                                   "`epochs` for cnn; `test_size`, `min_metric` for the job itself.")
    search: dict[str, list[Any]] | None = Field(None, description="Grid: parameter → candidate values; trials run in "
                                                 f"parallel on Ray (at most {MAX_TRIALS}).")
    name: str = Field(min_length=1, max_length=48, pattern=r"^[a-z0-9][a-z0-9_-]*$",
                      description="Model name; it is served as `u<your user id>-<name>`.")

    @field_validator("algorithm", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return ALIASES.get(v, v) if isinstance(v, str) else v

    def check(self) -> None:
        """Refusals knowable before any data is read (422 at submit)."""
        if self.task == "regression" and self.algorithm in CLASSIFICATION_ONLY:
            raise JobInvalid(f"algorithm '{self.algorithm}' does not do regression", code="algorithm_task_mismatch")
        if self.task == "classification" and self.algorithm in REGRESSION_ONLY:
            raise JobInvalid("algorithm 'linear' is a regressor; use 'logistic' for classification",
                             code="algorithm_task_mismatch")
        if self.algorithm != "cnn" and not self.target:
            raise JobInvalid("'target' is required for tabular datasets", code="target_required")
        if self.search:
            n = 1
            for k, vals in self.search.items():
                if not vals:
                    raise JobInvalid(f"search '{k}' has no values", code="invalid_search")
                n *= len(vals)
            if n > MAX_TRIALS:
                raise JobInvalid(f"the grid has {n} trials; at most {MAX_TRIALS}", code="invalid_search",
                                 details={"trials": n})


class JobInvalid(MlstackError):
    """The job cannot run on this data (unknown column, one-class target, all-NaN column...); nothing is published."""

    code = "job_invalid"
    status = 422


class JobCancelled(MlstackError):
    code = "job_cancelled"
    status = 409
