"""Image jobs: a tiny PyTorch CNN on [N, H, W] grayscale images, exported like training/digits_cnn.py (NCHW input,
``label`` + ``probabilities`` outputs, classic exporter with a dynamic batch axis)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from training.digits_cnn import Exported

SEED = 42
OPSET = 17


class TinyCNN(nn.Module):
    """conv(8) → pool → conv(16) → global average pool → C logits: works for any image size ≥ 4×4."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int, lr: float = 5e-3,
        on_epoch: Callable[[int, float], None] | None = None) -> nn.Module:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    xt, yt = torch.from_numpy(x[:, None].astype(np.float32)), torch.from_numpy(y)
    net = TinyCNN(n_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if on_epoch:
            on_epoch(epoch, total / len(xt))
    return net.eval()


def predict_proba(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x[:, None].astype(np.float32))), dim=1).numpy()


def export(net: nn.Module, height: int, width: int) -> bytes:
    buf = io.BytesIO()
    sink: Any = buf
    torch.onnx.export(Exported(net).eval(), (torch.zeros(1, 1, height, width),), sink, input_names=["input"],
                      output_names=["label", "probabilities"], opset_version=OPSET, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "label": {0: "batch"}, "probabilities": {0: "batch"}})
    return buf.getvalue()
