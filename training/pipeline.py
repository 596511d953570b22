"""train → evaluate → export → parity → publish, for one recipe."""

from __future__ import annotations

import logging
from pathlib import Path

from mlstack.errors import BelowThreshold
from mlstack.repository.publish import Candidate, Published, publish
from mlstack.settings import Settings
from training.base import Report, git_revision
from training.parity import check_parity
from training.registry import get_recipe

logger = logging.getLogger(__name__)


def train_and_publish(name: str, repo: Path, settings: Settings, report: Report) -> Published:
    """Train recipe ``name`` and publish it as a new version.

    Refuses without writing anything when the held-out metric misses its threshold (BelowThreshold), the
    export disagrees with the native model (ParityError) or the repository refuses the version (PublishError).
    """
    recipe = get_recipe(name)
    result = recipe.train(report)
    hm = result.card.headline_metric
    if hm is not None and not hm.passed:
        raise BelowThreshold(f"{name}: held-out {hm.name} {hm.value:.4f} misses its threshold {hm.threshold}; not published",
                             details={"metric": hm.model_dump()})
    result.card.parity = check_parity(result)
    report(f"parity ok: {result.card.parity.n_rows} rows, max abs diff {result.card.parity.max_abs_diff:.2e}")
    result.card.git_revision = git_revision()
    result.card.created_by = "mlstack train"
    cand = Candidate(name=result.name, onnx_bytes=result.onnx_bytes, card=result.card, labels=result.labels,
                     label_output=result.label_output, extra_files=result.extra_files)
    return publish(repo, cand, max_batch_size=settings.default_max_batch_size,
                   instance_count=settings.default_instance_count,
                   max_queue_delay_us=settings.default_max_queue_delay_us,
                   version_policy_latest=settings.default_version_policy_latest)
