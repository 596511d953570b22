"""The datasets API over a real gateway (SQLite and PostgreSQL): upload -> schema, list/get/delete, ownership 404s,
the tester role, samples, limits, quota, and nothing half-written when an upload is refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
from PIL import Image
from sqlalchemy import func
from sqlmodel import Session, select

from auth_api import stored_inputs
from auth_api.datasets.models import Dataset
from auth_api.storage_gc import gc
from auth_api.storage_models import StoredObject
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway

KIB = 1024
URL = "/api/v1/datasets"


def _flowers() -> bytes:
    rng = np.random.default_rng(0)
    lines = ["sepal;petal;colour;species"]
    for i in range(30):
        sp = ("setosa", "versicolor", "virginica")[i % 3]
        petal = "" if i == 4 else f"{1.0 + i % 3 + rng.random():.2f}".replace(".", ",")
        lines.append(f"{4.5 + rng.random():.2f}".replace(".", ",") + f";{petal};{'red' if i % 2 else 'blue'};{sp}")
    return ("\ufeff" + "\n".join(lines) + "\n").encode()


def _xlsx() -> bytes:
    wb = openpyxl.Workbook()
    wb.active.append(["ignored"])
    ws = wb.create_sheet("data")
    ws.append(["x", "y"])
    for i in range(5):
        ws.append([i, i * 0.5])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _images() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls, value in (("dark", 90), ("light", 250)):
            for i in range(2):
                a = np.zeros((12, 12), np.uint8)
                a[3:9, 3:9] = value - i
                img = io.BytesIO()
                Image.fromarray(a).save(img, "PNG")
                zf.writestr(f"shapes/{cls}/{i}.png", img.getvalue())
    return buf.getvalue()


def _state(gw: RunningGateway) -> tuple[int, int, list[Path]]:
    with Session(gw.state.engine) as db:
        rows = db.exec(select(func.count()).select_from(Dataset)).one()
        objects = db.exec(select(func.count()).select_from(StoredObject)).one()
    return rows, objects, sorted(p for p in (gw.settings.var_dir / "objects").rglob("*") if p.is_file())


def _err(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["error"]
    assert body["code"] == code, body
    return body


def test_datasets_api(tmp_path: Path, db_url: str) -> None:
    settings = gateway_settings(tmp_path, db_url, dataset_max_bytes=64 * KIB, dataset_quota_bytes=24 * KIB,
                                gateway_max_body_bytes=32 * KIB)  # uploads alone may send more (64 KiB + framing)
    with run_gateway(settings) as gw:
        alice, bob, tess = gw.create_user("alice"), gw.create_user("bobby"), gw.create_user("tess", "tester")
        with gw.client(alice) as c:
            r = c.post(URL, files={"file": ("flowers.csv", _flowers(), "text/csv")}, data={"name": "my flowers"})
            assert r.status_code == 201, r.text
            ds = r.json()
            assert ds["name"] == "my flowers" and ds["format"] == "csv" and ds["kind"] == "table" and ds["rows"] == 30
            assert ds["owner"] == "alice" and ds["separator"] == ";" and len(ds["sha256"]) == 64 and ds["size"] > 0
            cols = {col["name"]: col for col in ds["columns"]}
            assert [cols[n]["dtype"] for n in ("sepal", "petal", "colour", "species")] == ["float", "float", "categorical",
                                                                                           "categorical"]
            assert cols["petal"]["missing"] == 1 and cols["sepal"]["missing"] == 0
            assert ds["targets"][0] == {"column": "species", "task": "classification", "why": "3 distinct values"}
            assert any(t["column"] == "sepal" and t["task"] == "regression" for t in ds["targets"])
            assert ds["balance"]["species"] == {"setosa": 10, "versicolor": 10, "virginica": 10}
            assert len(ds["preview"]) == 10 and ds["preview"][4]["petal"] is None  # NaN -> null
            book = c.post(URL, params={"sheet": "data"}, files={"file": ("book.xlsx", _xlsx())})
            assert book.status_code == 201 and book.json()["sheet"] == "data" and book.json()["rows"] == 5, book.text
            pics = c.post(URL, files={"file": ("shapes.zip", _images(), "application/zip")}).json()
            assert pics["kind"] == "images" and pics["classes"] == ["dark", "light"] and pics["balance"]["class"] == {
                "dark": 2, "light": 2} and pics["rows"] == 4
            listed = c.get(URL).json()
            assert [d["id"] for d in listed[:4]] == ["sample-iris", "sample-diabetes", "sample-digits", "sample-battery"]
            assert [d["id"] for d in listed[4:]] == [pics["id"], book.json()["id"], ds["id"]]  # newest first
            assert c.get(f"{URL}/{ds['id']}").json() == ds

            before = _state(gw)  # refused uploads leave no row, no object record and no file
            _err(c.post(URL, files={"file": ("r.csv", b"a,b\n1,2\n1,2,3\n")}), 422, "table_unreadable")
            _err(c.post(URL, params={"sheet": "nope"}, files={"file": ("b.xlsx", _xlsx())}), 422, "table_unreadable")
            big = _err(c.post(URL, files={"file": ("big.csv", b"a\n" + b"1\n" * (40 * KIB))}), 413, "table_too_large")
            assert big["details"]["what"] == "bytes"
            assert big["details"]["limit"] == 64 * KIB
            _err(c.post(URL, files={"file": ("huge.csv", b"a\n" + b"1\n" * (80 * KIB))}), 413, "body_too_large")
            quota = _err(c.post(URL, files={"file": ("more.csv", b"a\n" + b"7\n" * (12 * KIB))}), 413, "quota_exceeded")
            assert quota["details"] == {"quota": 24 * KIB, "used": ds["size"] + book.json()["size"] + pics["size"],
                                        "size": 2 + 2 * 12 * KIB}
            assert _state(gw) == before
            assert c.post(URL, files={"file": ("again.csv", _flowers())}).status_code == 201  # same bytes: no new quota

        with gw.client(bob) as c:  # someone else's datasets do not exist for bob
            _err(c.get(f"{URL}/{ds['id']}"), 404, "dataset_not_found")
            _err(c.delete(f"{URL}/{ds['id']}"), 404, "dataset_not_found")
            assert [d["id"] for d in c.get(URL).json()] == ["sample-iris", "sample-diabetes", "sample-digits", "sample-battery"]
            _err(c.get(URL, params={"owner": 2}), 403, "insufficient_role")

        with gw.client(tess) as c:  # a tester reads the samples, uploads nothing
            _err(c.post(URL, files={"file": ("t.csv", b"a,b\n1,2\n")}), 403, "sample_data_only")
            assert len(c.get(URL).json()) == 4
            iris = c.get(f"{URL}/sample-iris").json()
            assert iris["rows"] == 150 and iris["sample"] and iris["targets"][0]["column"] == "species"
            assert iris["balance"]["species"] == {"setosa": 50, "versicolor": 50, "virginica": 50}
            battery = c.get(f"{URL}/sample-battery").json()
            assert battery["rows"] == 200 and battery["targets"][0] == {"column": "fault", "task": "classification",
                                                                         "why": "5 distinct values"}
            digits = c.get(f"{URL}/sample-digits").json()
            assert digits["kind"] == "images" and digits["classes"] == [str(i) for i in range(10)]
            _err(c.delete(f"{URL}/sample-iris"), 403, "sample_read_only")
            _err(c.get(f"{URL}/sample-nope"), 404, "dataset_not_found")

        with gw.client(gw.admin_token()) as c:  # admins see and delete everyone's
            assert {d["id"] for d in c.get(URL, params={"owner": 2}).json()} >= {ds["id"], pics["id"]}
            assert ds["id"] in {d["id"] for d in c.get(URL).json()}
            assert c.delete(f"{URL}/{pics['id']}").status_code == 200
        with gw.client(alice) as c:
            _err(c.get(f"{URL}/{pics['id']}"), 404, "dataset_not_found")
            assert c.delete(f"{URL}/{ds['id']}").status_code == 200
            assert c.get(f"{URL}/{ds['id']}").status_code == 404
        rows, objects, files = _state(gw)
        assert rows == 2 and objects == len(files) == 2  # the xlsx and the flowers copy; the ZIP's file is gone
        gc(gw.state.engine, stored_inputs.open_store(gw.state).storage, older_than_s=0, grace_s=0)
        assert _state(gw) == (rows, objects, files)  # storage gc keeps what a dataset refers to
        with gw.client(gw.admin_token()) as c:  # a deleted account's datasets go with its files
            assert c.delete("/api/v1/users/2").status_code == 200
        assert _state(gw) == (0, 0, [])
