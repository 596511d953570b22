"""The battery-fleet app on the real stack: a gateway over the session's Triton and BentoML (Triton runner), a fleet of
five simulated batteries uploaded as CSV, TXT, XLSX and JSON -> analyses, alerts, explanations, twin, thermal images."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from apps.battery.samples import pack_temperatures
from tests.battery import fleet
from tests.fixtures.bento import BentoFixture
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture
from training.battery_sim import FEATURE_NAMES

pytestmark = pytest.mark.slow
API = "/api/v1"
EXAMPLES = Path(__file__).resolve().parents[2] / "docs/examples/battery"


@pytest.fixture(scope="module")
def app_gw(triton: TritonFixture, bento_triton: BentoFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("battery_app")
    settings = gateway_settings(tmp, f"sqlite:///{tmp / 'gateway.db'}", triton=triton,
                                bento_host=bento_triton.settings.bento_host, bento_port=bento_triton.settings.bento_port)
    with run_gateway(settings) as gw:
        yield gw


@pytest.fixture(scope="module")
def owner(app_gw: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app_gw.url, headers={"Authorization": f"Bearer {app_gw.create_user('fleet-owner')}"},
                      timeout=120) as c:
        yield c


def _err(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    assert "Traceback" not in r.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


def _battery(c: httpx.Client, serial: str, **extra: Any) -> dict[str, Any]:
    body = {"name": f"cell {serial}", "serial": serial, "chemistry": "NMC", "nominal_capacity_ah": 3.0,
            "nominal_voltage_v": 3.6, "installed_on": "2026-01-15", **extra}
    r = c.post(f"{API}/batteries", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _poll(c: httpx.Client, url: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        r = c.get(url)
        assert r.status_code == 200, r.text
        doc = dict(r.json())
        if doc["status"] in ("done", "failed"):
            return doc
        assert time.monotonic() < deadline, f"{url} still {doc['status']}"
        time.sleep(0.1)


def _analyse(c: httpx.Client, battery_id: int, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = c.post(f"{API}/batteries/{battery_id}/analyses", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending"
    doc = _poll(c, f"{API}/analyses/{r.json()['id']}")
    assert doc["status"] == "done", doc
    return doc


@pytest.fixture(scope="module")
def uploaded(owner: httpx.Client) -> list[tuple[fleet.Cell, dict[str, Any]]]:
    """The fleet registered and uploaded, one format each: CSV, TXT, XLSX, CSV, JSON."""
    out = []
    for k, cell in enumerate(fleet.fleet()):
        b = _battery(owner, f"SN-{k:03d}", metadata={"ambient_c": cell.params.ambient_c, "site": "lab"})
        url = f"{API}/batteries/{b['id']}/data"
        if k in (0, 3):  # the walkthrough's files (README): shipped, and what the simulator makes
            shipped = (EXAMPLES / ("healthy.csv" if k == 0 else "shorted.csv")).read_bytes()
            assert shipped == fleet.csv_bytes(cell.tel), "docs/examples/battery is stale: python -m apps.battery.samples"
            r = owner.post(url, files={"file": (f"{cell.name}.csv", shipped, "text/csv")})
        elif k == 1:
            r = owner.post(url, files={"file": (f"{cell.name}.txt", fleet.txt_bytes(cell.tel), "text/plain")},
                           data={"start": fleet.iso(fleet.T0)})
        elif k == 2:
            r = owner.post(url, files={"file": (f"{cell.name}.xlsx", fleet.xlsx_bytes(cell.tel),
                                                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")})
        else:
            r = owner.post(url, json={"samples": fleet.json_samples(cell.tel)})
        assert r.status_code == 200, r.text
        rep = r.json()
        n = len(cell.tel.time_s)
        assert (rep["received"], rep["accepted"], rep["inserted"], rep["rejected_total"]) == (n, n, n, 0), rep
        assert rep["from"] == fleet.iso(fleet.T0)
        out.append((cell, b))
    return out


def test_fleet_analyses_flag_the_faulty_two_alert_once_and_explain(owner: httpx.Client, app_gw: RunningGateway,
                                                                   uploaded: list[tuple[fleet.Cell, dict[str, Any]]]) -> None:
    # idempotent re-upload: every sample is a duplicate, nothing is stored twice
    cell0, b0 = uploaded[0]
    r = owner.post(f"{API}/batteries/{b0['id']}/data", files={"file": ("again.csv", fleet.csv_bytes(cell0.tel), "text/csv")})
    assert r.status_code == 200, r.text
    assert (r.json()["inserted"], r.json()["duplicates_skipped"]) == (0, len(cell0.tel.time_s))
    # the series back, raw and as server-side bucket means
    r = owner.get(f"{API}/batteries/{b0['id']}/data", params={"every": 60})
    assert r.status_code == 200, r.text
    series = r.json()
    assert series["count"] == len(cell0.tel.time_s) and series["downsampled"] and len(series["points"]) == 30
    assert series["points"][0]["time"] == fleet.iso(fleet.T0) and series["points"][0]["n"] == 60
    assert abs(series["points"][0]["voltage"] - float(np.mean(cell0.tel.voltage_v[:60]))) < 1e-6

    verdicts = {}
    analyses = {}
    for cell, b in uploaded:
        doc = _analyse(owner, b["id"])
        analyses[cell.name] = doc
        verdicts[cell.name] = (doc["verdict"], doc["summary"].get("fault"))
        assert len(doc["windows"]) == fleet.WINDOWS and doc["summary"]["windows_skipped"] == 0
        w = doc["windows"][0]
        assert set(w["probabilities"]) >= {"normal", "internal_short", "overheating"} and isinstance(w["anomaly_score"], float)
        assert list(w["features"]) == list(FEATURE_NAMES)
    assert verdicts == {"healthy-a": ("healthy", None), "healthy-b": ("healthy", None), "healthy-c": ("healthy", None),
                        "shorted": ("fault", "internal_short"), "hot": ("fault", "overheating")}, verdicts

    # a second analysis of a faulty battery: the cool-down keeps it at one alert per rule and battery
    shorted = uploaded[3][1]
    again = _analyse(owner, shorted["id"], {"from": fleet.iso(fleet.T0), "to": fleet.T0 + 1799})
    assert again["verdict"] == "fault" and again["summary"]["alerts"] == []
    r = owner.get(f"{API}/alerts", params={"asset": f"battery:{shorted['id']}"})
    assert r.status_code == 200, r.text
    by_model = sorted(a["model"] for a in r.json()["items"])
    assert by_model == ["battery-anomaly", "battery-fault"], r.json()
    for cell, b in uploaded[:3]:
        r = owner.get(f"{API}/alerts", params={"asset": f"battery:{b['id']}"})
        assert r.json()["items"] == [], (cell.name, r.json())

    # explanations of the flagged windows: SHAP and LIME side by side, features named
    aid = analyses["shorted"]["id"]
    r = owner.get(f"{API}/analyses/{aid}/explanation")
    assert r.status_code == 200, r.text
    ex = r.json()
    assert ex["feature_names"] == list(FEATURE_NAMES) and ex["windows"]
    for method in ("shap", "lime"):
        rows = ex[method]["rows"]
        assert len(rows) == len(ex["windows"]) and rows[0]["fault"] == "internal_short"
        assert set(rows[0]["contributions"]) == set(FEATURE_NAMES)
        assert rows[0]["top_features"][0]["feature"] in FEATURE_NAMES
    assert ex["shap"]["rows"][0]["additivity_error"] < 1e-3
    t0 = time.perf_counter()
    assert owner.get(f"{API}/analyses/{aid}/explanation").json() == ex  # kept with the analysis
    assert time.perf_counter() - t0 < 1.0

    # someone else sees none of it; an admin sees it all
    with app_gw.client(app_gw.create_user("stranger")) as other:
        _err(other.get(f"{API}/batteries/{shorted['id']}"), 404, "battery_not_found")
        _err(other.get(f"{API}/analyses/{aid}"), 404, "analysis_not_found")
        _err(other.post(f"{API}/batteries/{shorted['id']}/data", json={"samples": []}), 404)
        assert other.get(f"{API}/batteries").json()["total"] == 0
    with app_gw.client(app_gw.admin_token()) as admin:
        assert admin.get(f"{API}/batteries/{shorted['id']}").status_code == 200
        assert admin.get(f"{API}/batteries").json()["total"] >= 5


def test_twin_recovers_capacity_and_r0_then_simulates(owner: httpx.Client,
                                                      uploaded: list[tuple[fleet.Cell, dict[str, Any]]]) -> None:
    cell, b = uploaded[1]  # 2.85 Ah, 34 mΩ, uploaded as TXT without SoC: the start SoC is fitted too
    r = owner.post(f"{API}/batteries/{b['id']}/twin")
    assert r.status_code == 200, r.text
    tw = r.json()
    assert abs(tw["params"]["capacity_ah"] / cell.params.capacity_ah - 1) < 0.05, tw
    assert abs(tw["params"]["r0_ohm"] / cell.params.r0_ohm - 1) < 0.05, tw
    assert "initial_soc" in tw["fit"]["fitted"] and tw["fit"]["rmse_v_mv"] < 5
    # the twin's residual is part of the next analysis: small for the battery it was fitted on
    doc = _analyse(owner, b["id"])
    assert doc["verdict"] == "healthy" and doc["windows"][0]["twin_residual_v_mv"] < 10, doc["summary"]
    r = owner.post(f"{API}/batteries/{b['id']}/twin/simulate",
                   json={"profile": {"kind": "constant", "c_rate": 1.0, "duration_s": 1800, "rest_s": 600}, "hours": 2})
    assert r.status_code == 202, r.text
    run = _poll(owner, f"{API}/batteries/{b['id']}/twin/runs/{r.json()['id']}")
    assert run["status"] == "done", run
    summary, series = run["result"]["summary"], run["result"]["series"]
    assert 0 < summary["end_soc"] < 1 and summary["ah_discharged"] > 0.5 and summary["min_voltage_v"] > 2.5
    assert len(series["time_s"]) == len(series["voltage_v"]) == summary["points"] > 100
    _err(owner.post(f"{API}/batteries/{b['id']}/twin/simulate", json={"profile": {"kind": "zigzag"}, "hours": 1}), 422,
         "invalid_profile")
    _err(owner.post(f"{API}/batteries/{b['id']}/twin/simulate", json={"profile": {"kind": "constant"}, "hours": 1000}), 422)


def test_thermal_hotspot_stored_and_alerted(owner: httpx.Client, uploaded: list[tuple[fleet.Cell, dict[str, Any]]]) -> None:
    b = uploaded[4][1]
    temps = pack_temperatures()  # 25 °C with one 6x5 hotspot at 40 °C
    assert (EXAMPLES / "pack.png").read_bytes() == fleet.png16(temps)
    temps[30, 5] = 31.0  # a single warm pixel: below min_area
    png = fleet.png16(temps)
    r = owner.post(f"{API}/batteries/{b['id']}/thermal", files={"file": ("pack.png", png, "image/png")})
    assert r.status_code == 201, r.text
    doc = r.json()
    st = doc["stats"]
    assert (st["max_c"], st["min_c"], st["delta_t_c"], st["threshold_c"]) == pytest.approx((40.0, 25.0, 15.0, 30.0))
    assert doc["hotspots"] == [{"bbox": {"x": 20, "y": 10, "width": 6, "height": 5}, "area_px": 30, "max_c": 40.0,
                                "mean_c": 40.0, "centroid": {"x": 22.5, "y": 12.0}}]
    assert st["alerts"], "ΔT 15 °C > 5 °C raises the built-in thermal alert"
    assert httpx.get(doc["image_url"]).content == png  # kept in object storage, behind a signed URL
    grid = "\n".join(",".join(f"{v:.1f}" for v in row) for row in temps[:20, :30]).encode()
    r = owner.post(f"{API}/batteries/{b['id']}/thermal", params={"threshold_c": 35},
                   files={"file": ("pack.csv", grid, "text/csv")})
    assert r.status_code == 201, r.text
    assert [h["area_px"] for h in r.json()["hotspots"]] == [30] and r.json()["stats"]["alerts"] == []  # cool-down
    r = owner.get(f"{API}/alerts", params={"asset": f"battery:{b['id']}", "model": "thermal"})
    assert len(r.json()["items"]) == 1
    assert len(owner.get(f"{API}/batteries/{b['id']}/thermal").json()["items"]) == 2
    _err(owner.post(f"{API}/batteries/{b['id']}/thermal", files={"file": ("x.png", _png8(), "image/png")}), 422,
         "not_radiometric")
    _err(owner.post(f"{API}/batteries/{b['id']}/thermal", files={"file": ("x.csv", b"1,2\n3\n", "text/csv")}), 422,
         "ragged_grid")


def _png8() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_input(owner: httpx.Client, app_gw: RunningGateway) -> None:
    with app_gw.client() as anonymous:
        for method, path in (("GET", "/batteries"), ("POST", "/batteries/1/data"), ("GET", "/analyses/1"),
                             ("POST", "/batteries/1/thermal")):
            _err(anonymous.request(method, API + path), 401)
    base = {"name": "x", "serial": "BAD-1", "nominal_capacity_ah": 3.0, "nominal_voltage_v": 3.6}
    err = _err(owner.post(f"{API}/batteries", json={**base, "nominal_capacity_ah": -1}), 422)
    assert err["details"]["errors"][0]["loc"] == ["body", "nominal_capacity_ah"]
    err = _err(owner.post(f"{API}/batteries", json={**base, "chemistry": "unobtainium"}), 422)
    assert err["details"]["errors"][0]["loc"] == ["body", "chemistry"]
    _err(owner.post(f"{API}/batteries", json={**base, "colour": "red"}), 422)
    b = _battery(owner, "BAD-1")
    _err(owner.post(f"{API}/batteries", json=base), 409, "duplicate_serial")
    url = f"{API}/batteries/{b['id']}/data"
    # partial accept: each refused row named with its reason
    rows = [{"time": "2026-12-01T00:00:00Z", "voltage": 3.7, "current": 1, "temperature": 25},
            {"time": "2026-12-01T00:00:01Z", "voltage": 3.7, "current": 1, "temperature": 200},
            {"time": "yesterday-ish", "voltage": 3.7, "current": 1, "temperature": 25},
            {"time": "2026-12-01T00:00:00Z", "voltage": 3.6, "current": 1, "temperature": 25},
            {"time": "2026-12-01T00:00:03Z", "voltage": -3.7, "current": 1, "temperature": 25},
            {"time": "2026-12-01T00:00:04Z", "V": 3.7, "current": 1, "temperature": 25}]
    r = owner.post(url, json={"samples": rows[:5]})
    assert r.status_code == 200, r.text
    rep = r.json()
    assert (rep["accepted"], rep["inserted"], rep["rejected_total"]) == (1, 1, 4)
    assert rep["rejected"] == [{"row": 2, "reason": "temperature outside -40..120 °C"}, {"row": 3, "reason": "unparseable time"},
                               {"row": 4, "reason": "duplicated time (same as row 1)"},
                               {"row": 5, "reason": "voltage must be > 0 V"}]
    _err(owner.post(url, json={"samples": rows[1:3]}), 422, "no_usable_samples")
    err = _err(owner.post(url, files={"file": ("t.csv", b"time,voltage,temperature\n0,3.7,25\n", "text/csv")}), 422,
               "missing_columns")
    assert err["details"]["missing"] == ["current"]
    _err(owner.post(url, json={"samples": [rows[0], rows[5]]}), 422, "ambiguous_columns")  # "voltage" and "V"
    _err(owner.post(url, content=b"<samples/>", headers={"content-type": "application/xml"}), 415, "unsupported_media_type")
    # 1M rows: refused with the limit, before parsing
    big = b"time,voltage,current,temperature\n" + b"1,3.7,1,25\n" * 1_000_000
    t0 = time.perf_counter()
    err = _err(owner.post(url, files={"file": ("big.csv", big, "text/csv")}), 413, "too_many_rows")
    assert err["details"]["limit"] == 200_000 and time.perf_counter() - t0 < 10
    _err(owner.get(url, params={"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}), 422, "invalid_range")
    _err(owner.get(url, params={"from": "soon"}), 422, "invalid_time")
    _err(owner.get(url, params={"evry": 60}), 422)
    _err(owner.post(f"{API}/batteries/{b['id']}/analyses", json={"from": "2030-01-01T00:00:00Z"}), 422, "no_telemetry")
    _err(owner.post(f"{API}/batteries/{b['id']}/twin"), 422, "not_enough_telemetry")
    _err(owner.get(f"{API}/batteries/{b['id']}/twin"), 404, "twin_not_found")
    r = owner.patch(f"{API}/batteries/{b['id']}", json={"name": "renamed", "metadata": {"ambient_c": 21}})
    assert r.status_code == 200 and r.json()["name"] == "renamed" and r.json()["metadata"] == {"ambient_c": 21}
    assert owner.delete(f"{API}/batteries/{b['id']}").status_code == 204
    _err(owner.get(url), 404, "battery_not_found")
