"""classify_image end to end against a real `bentoml serve`: held-out digits as PNG/JPEG uploads, bad uploads."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.bento import BentoFixture
from tests.services.bento.helpers import png, render_digit
from training.digits_common import split


def _classify(bento: BentoFixture, data: bytes, name: str = "digit.png", **fields: str) -> dict:
    resp = bento.post("classify_image", files={"image": (name, data, "image/png")}, data=fields)
    assert resp.status_code == 200, f"{resp.text}\n--- task service log ---\n{bento.log_tail()}"
    return resp.json()


@pytest.mark.parametrize("model", ["digits-cnn", "digits-keras"])
def test_held_out_digits_are_classified_end_to_end(bento: BentoFixture, model: str) -> None:
    _, x_te, _, y_te = split()
    # Every third image dark ink on light paper, sizes 32..96 px, every fifth a JPEG: what users upload.
    uploads = [render_digit(x, scale=4 + 4 * (i % 3), invert=i % 3 == 1, fmt="JPEG" if i % 5 == 0 else "PNG")
               for i, x in enumerate(x_te)]
    with ThreadPoolExecutor(8) as pool:  # concurrent requests exercise the adaptive batcher
        bodies = list(pool.map(lambda d: _classify(bento, d, model=model), uploads))
    pred = np.array([int(b["predictions"][0]["label"]) for b in bodies])
    accuracy = float((pred == y_te).mean())
    assert accuracy >= 0.95, f"{model}: accuracy {accuracy:.3f} on {len(y_te)} held-out digits"
    inverted = np.arange(len(y_te)) % 3 == 1
    assert (pred[inverted] == y_te[inverted]).mean() >= 0.95
    first = bodies[0]
    assert first["model"] == model and first["version"] == 1
    probs = [p["probability"] for p in first["predictions"]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 3


def test_default_model_and_top_k(bento: BentoFixture) -> None:
    _, x_te, _, y_te = split()
    body = _classify(bento, render_digit(x_te[0]), top_k="10")
    assert body["model"] == "digits-cnn"
    assert sorted(p["label"] for p in body["predictions"]) == [str(d) for d in range(10)]
    assert abs(sum(p["probability"] for p in body["predictions"]) - 1.0) < 1e-4
    assert body["predictions"][0]["label"] == str(y_te[0])


def _error(bento: BentoFixture, data: bytes, status: int, code: str | None = None, **fields: str) -> dict:
    resp = bento.post("classify_image", files={"image": ("upload.png", data, "image/png")}, data=fields)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["message"] and "Traceback" not in resp.text
    if code:
        assert err["code"] == code, err
    return err


def test_non_image_is_400(bento: BentoFixture) -> None:
    err = _error(bento, b"name,value\nfoo,1\n" * 10, 400, "not_an_image")
    assert "not an image" in err["message"]


def test_truncated_png_is_400(bento: BentoFixture) -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8))
    data = png(noisy)
    err = _error(bento, data[: len(data) // 2], 400, "corrupt_image")
    assert "truncated" in err["message"] or "decoded" in err["message"]


def test_decompression_bomb_is_400(bento: BentoFixture) -> None:
    # 8000 x 8000 = 64 Mpx of zeros compresses to a few KB; the service refuses it before decoding.
    bomb = png(Image.new("1", (8000, 8000)))
    assert len(bomb) < 200_000
    err = _error(bento, bomb, 400, "decompression_bomb")
    assert "pixels" in err["message"]


def test_oversized_upload_is_413(bento: BentoFixture) -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(11 * 1024 * 1024)
    err = _error(bento, big, 413, "image_too_large")
    assert str(bento.settings.bento_max_image_bytes) in err["message"]


def test_blank_image_is_400(bento: BentoFixture) -> None:
    _error(bento, png(Image.new("L", (64, 64), 255)), 400, "blank_image")


def test_missing_image_field_is_400_json(bento: BentoFixture) -> None:
    resp = bento.post("classify_image", files={"other": ("x.png", b"abc", "image/png")})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_request"


def test_unknown_and_non_image_models(bento: BentoFixture) -> None:
    _, x_te, _, _ = split()
    data = render_digit(x_te[0])
    _error(bento, data, 404, "model_not_found", model="no-such-model")
    _error(bento, data, 422, "unsupported_model", model="iris-rf")
    _error(bento, data, 400, "invalid_request", top_k="0")


def test_rgba_photo_like_upload(bento: BentoFixture) -> None:
    """Dark ink on a transparent background with a grey-ish paper tone still reads as the digit."""
    _, x_te, _, y_te = split()
    i = 5
    ink = Image.open(io.BytesIO(render_digit(x_te[i], scale=10, invert=True))).convert("L")
    rgba = Image.merge("RGBA", (ink, ink, ink, Image.new("L", ink.size, 255)))
    body = _classify(bento, png(rgba))
    assert body["predictions"][0]["label"] == str(y_te[i])
