"""Locust: image classification on the BentoML task service (``--host http://127.0.0.1:3000``), a digit PNG per request."""

from __future__ import annotations

import io
import os

import numpy as np
from locust import HttpUser, constant, task
from PIL import Image

IMAGE_MODEL = os.environ.get("MLSTACK_BENCH_IMAGE_MODEL", "digits-cnn")


def digit_png(seed: int) -> bytes:
    """An 8x8-ish grey digit-like image (the service resizes and normalises any size)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


IMAGES = [digit_png(i) for i in range(32)]


class BentoImageUser(HttpUser):
    """Uploads a PNG to ``/classify_image`` and checks the top-3 answer."""

    wait_time = constant(0)

    @task
    def classify(self) -> None:
        png = IMAGES[np.random.randint(len(IMAGES))]
        with self.client.post("/classify_image", files={"image": ("digit.png", png, "image/png")},
                              data={"model": IMAGE_MODEL, "top_k": "3"}, name="classify_image", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            preds = resp.json().get("predictions")
            if not isinstance(preds, list) or len(preds) != 3:
                resp.failure(f"expected 3 predictions, got {resp.text[:200]}")


if __name__ == "__main__":
    from locust import run_single_user

    BentoImageUser.host = "http://127.0.0.1:3000"
    run_single_user(BentoImageUser)
