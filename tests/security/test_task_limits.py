"""Attack suite: the task tier's documented limits hold and its costs are bounded.

10,000 records (the documented limit) are answered; a 100 MiB chunked model upload is a 413; a huge image under the
pixel limit is answered or refused without seconds of decode CPU.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from services.bento.records import MAX_RECORDS
from tests.fixtures.bento import BentoFixture
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture
from tests.services.bento.helpers import render_digit

IRIS = ("sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm")


def _records(n: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    rows = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4))
    return [dict(zip(IRIS, map(float, r), strict=True)) for r in rows]


@pytest.fixture(scope="module")
def task_gateway(triton: TritonFixture, bento_triton: BentoFixture,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    tmp = tmp_path_factory.mktemp("task_gateway")
    s = gateway_settings(tmp, f"sqlite:///{tmp / 'gateway.db'}", triton=triton,
                         bento_host=bento_triton.settings.bento_host, bento_port=bento_triton.settings.bento_port)
    with run_gateway(s) as gw:
        yield gw, gw.create_user("engineer1", role="engineer")


@pytest.mark.parametrize("n", [1_700, MAX_RECORDS])
def test_predict_records_up_to_the_documented_limit(bento_triton: BentoFixture, n: int) -> None:
    recs = _records(n)
    r = bento_triton.post("predict_records", {"model": "iris-logreg", "records": recs})
    assert r.status_code == 200, r.text[:500]
    results = r.json()["results"]
    assert len(results) == n and all(res["label"] in ("setosa", "versicolor", "virginica") for res in results)
    # Same answers as one record at a time (the big path must not reorder or mix rows).
    for i in (0, n // 2, n - 1):
        one = bento_triton.post("predict_records", {"model": "iris-logreg", "records": [recs[i]]}).json()["results"][0]
        assert one["label"] == results[i]["label"]
        assert one["probabilities"] == pytest.approx(results[i]["probabilities"], abs=1e-6)


def test_one_record_over_the_limit_is_422(bento_triton: BentoFixture) -> None:
    r = bento_triton.post("predict_records", {"model": "iris-logreg", "records": _records(MAX_RECORDS + 1)})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_records"


def test_predict_records_limit_through_the_gateway(task_gateway) -> None:
    gw, token = task_gateway
    with gw.client(token) as c:
        r = c.post("/api/v1/tasks/predict_records", json={"model": "iris-logreg", "records": _records(MAX_RECORDS)}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    assert len(r.json()["results"]) == MAX_RECORDS


def test_booleans_are_refused_by_predict_records_as_by_predict(task_gateway) -> None:
    # One rule for JSON booleans on both tabular routes: a feature that is true/false is refused, never read as 1/0.
    gw, token = task_gateway
    record = dict(_records(1)[0], petal_width_cm=True)
    with gw.client(token) as c:
        tasks = c.post("/api/v1/tasks/predict_records", json={"model": "iris-logreg", "records": [_records(1)[0], record]})
        predict = c.post("/api/v1/predict/iris-logreg", json={"records": [record]})
    assert tasks.status_code == 422 and predict.status_code == 422, (tasks.text, predict.text)
    assert tasks.json()["error"]["details"] == {"record": 1, "invalid": ["petal_width_cm"]}
    assert "petal_width_cm" in predict.json()["error"]["message"]


def test_chunked_100_mib_model_upload_is_413(task_gateway, tmp_path: Path) -> None:
    gw, token = task_gateway

    def body() -> Iterator[bytes]:
        # No Content-Length: the client streams, as `curl -H 'Transfer-Encoding: chunked' -F file=@big.onnx` does.
        yield (b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.onnx"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        chunk = b"\0" * (1 << 20)
        for _ in range(100):
            yield chunk
        yield b"\r\n--B--\r\n"

    with gw.client(token) as c:
        try:
            r = c.post("/api/v1/models/big/versions", content=body(), headers={"content-type": "multipart/form-data; boundary=B"})
        except httpx.WriteError:
            pytest.fail("the gateway closed the connection instead of answering 413")
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "body_too_large"
    assert not (gw.settings.repository / "big").exists()


def _server_cpu(bento: BentoFixture) -> float:
    """CPU seconds used so far by the BentoML server and all its workers."""
    assert bento.server.process is not None
    root = psutil.Process(bento.server.process.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
    return buf.getvalue()


def _big_digit(side: int, mode: str) -> Image.Image:
    """A large photo-like '1': a dark vertical stroke on light paper."""
    img = Image.new(mode, (side, side), "white")
    stroke = Image.new(mode, (side // 10, side * 6 // 10), "black")
    img.paste(stroke, (side * 45 // 100, side * 2 // 10))
    return img


@pytest.mark.parametrize("fmt,mode", [("PNG", "RGB"), ("PNG", "L"), ("JPEG", "RGB")])
def test_huge_image_under_the_pixel_limit_costs_well_under_a_second(bento_triton: BentoFixture, fmt: str, mode: str) -> None:
    data = _encode(_big_digit(6300, mode), fmt)
    assert bento_triton.settings.bento_max_image_pixels > 6300 * 6300 and len(data) < bento_triton.settings.bento_max_image_bytes
    bento_triton.post("classify_image", files={"image": ("warm.png", _encode(_big_digit(64, "L"), "PNG"), "image/png")})
    before = _server_cpu(bento_triton)
    started = time.monotonic()
    r = bento_triton.post("classify_image", files={"image": (f"big.{fmt.lower()}", data, f"image/{fmt.lower()}")})
    cpu, wall = _server_cpu(bento_triton) - before, time.monotonic() - started
    assert r.status_code in (200, 413, 422), r.text
    if r.status_code != 200:
        err = r.json()["error"]
        assert err["code"] == "image_too_large" and "pixels" in err["message"]
    # Side by side in this run (shared machines are noisy): what a plain full decode of the same bytes costs here.
    t0 = time.process_time()
    with Image.open(io.BytesIO(data)) as full:
        full.load()
        full.convert("L")
    full_decode = time.process_time() - t0
    assert cpu < 0.5 * full_decode + 0.2, (cpu, full_decode, wall)


def test_large_jpeg_photos_are_still_classified(bento_triton: BentoFixture) -> None:
    # Phone-camera sized JPEGs are decoded at a reduced scale, not refused, and read like the small image.
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in (0, 7):
        pixels = digits.images[i] / 16.0
        small = render_digit(pixels, scale=8)
        big = render_digit(pixels, scale=500, invert=True, fmt="JPEG")  # 4000 x 4000, dark ink on paper
        answers = [bento_triton.post("classify_image", files={"image": (f"d.{ext}", data, f"image/{ext}")})
                   for ext, data in (("png", small), ("jpeg", big))]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert answers[1].json()["predictions"][0]["label"] == answers[0].json()["predictions"][0]["label"]
