"""`digits-cnn`: a small PyTorch CNN on the 8x8 digits, exported with a dynamic batch axis (NCHW input)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import nn

from training.base import Report, TrainResult
from training.digits_common import SEED, digits_result, split

EPOCHS = 30
OPSET = 17


class DigitsCNN(nn.Module):
    """conv(16) → conv(32) → pool → dense(64) → 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Exported(nn.Module):
    """What goes into ONNX: label (argmax) and probabilities (softmax), per the naming convention."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        proba = torch.softmax(self.net(x), dim=1)
        return torch.argmax(proba, dim=1), proba


def export(net: nn.Module) -> bytes:
    # dynamo=False: the default dynamo exporter needs onnxscript; the classic exporter handles dynamic_axes.
    buf = io.BytesIO()
    sink: Any = buf  # torch's stubs say path-only; the exporter accepts any binary file object
    torch.onnx.export(Exported(net).eval(), (torch.zeros(1, 1, 8, 8),), sink, input_names=["input"],
                      output_names=["label", "probabilities"], opset_version=OPSET, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "label": {0: "batch"}, "probabilities": {0: "batch"}})
    return buf.getvalue()


class _Recipe:
    name = "digits-cnn"

    def train(self, report: Report) -> TrainResult:
        torch.manual_seed(SEED)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(2)
        x_tr, x_te, y_tr, y_te = split()
        xt, yt = torch.from_numpy(x_tr[:, None]), torch.from_numpy(y_tr)
        net = DigitsCNN()
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        gen = torch.Generator().manual_seed(SEED)
        for epoch in range(1, EPOCHS + 1):
            net.train()
            perm = torch.randperm(len(xt), generator=gen)
            total = 0.0
            for i in range(0, len(xt), 64):
                idx = perm[i:i + 64]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            if epoch % 5 == 0 or epoch == 1:
                report(f"digits-cnn: epoch {epoch}/{EPOCHS} loss {total / len(xt):.4f}")
        net.eval()
        x_test = x_te[:, None].astype(np.float32)
        with torch.no_grad():
            proba = torch.softmax(net(torch.from_numpy(x_test)), dim=1).numpy()
        result = digits_result(self.name, export(net), x_test, y_te, proba, layout="NCHW [batch, 1, 8, 8]",
                               framework=f"pytorch {torch.__version__}", algorithm="CNN (2 conv + 2 dense layers)",
                               n_train=len(x_tr), opset=OPSET)
        report(f"digits-cnn: held-out accuracy {result.card.metrics['accuracy']:.4f}")
        return result


RECIPE = _Recipe()
