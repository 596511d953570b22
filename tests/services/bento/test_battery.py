"""simulate_battery against a real `bentoml serve`: physically sane telemetry, scored by the battery models."""

from __future__ import annotations

import numpy as np

from tests.fixtures.bento import BentoFixture
from training.battery_sim import FEATURE_NAMES


def test_discharge_is_physically_sane(bento: BentoFixture) -> None:
    resp = bento.post("simulate_battery", {"profile": {"kind": "constant", "current_a": 3.0, "duration_s": 600, "rest_s": 300},
                                           "seed": 1})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    tel = {k: np.asarray(v) for k, v in body["telemetry"].items() if isinstance(v, list)}
    v_cutoff, v_max = 3.0, 4.2
    assert tel["true_voltage_v"].min() >= v_cutoff - 1e-6 and tel["true_voltage_v"].max() <= v_max + 1e-6
    load = tel["current_a"] > 0
    soc = tel["soc"][load]
    assert np.all(np.diff(soc) < 0) and soc[0] > soc[-1]  # SoC falls under discharge
    assert np.all(np.diff(tel["time_s"]) > 0)
    assert set(body["features"]) == set(FEATURE_NAMES)
    scores = body["scores"]
    assert scores["battery-fault"]["label"] in ("normal", "internal_short", "capacity_fade", "sensor_drift", "overheating")
    assert abs(sum(scores["battery-fault"]["probabilities"].values()) - 1) < 1e-4
    assert scores["battery-anomaly"]["label"] in (-1, 1) and isinstance(scores["battery-anomaly"]["score"], float)


def test_temperature_rises_with_current(bento: BentoFixture) -> None:
    def peak_rise(current: float) -> float:
        body = bento.post("simulate_battery", {"profile": {"durations_s": [600.0], "currents_a": [current]},
                                               "score": False}).json()
        return max(body["telemetry"]["true_temperature_c"]) - body["telemetry"]["ambient_c"]

    low, high = peak_rise(1.0), peak_rise(6.0)
    assert 0 <= low < high


def test_severe_internal_short_is_flagged(bento: BentoFixture) -> None:
    body = bento.post("simulate_battery", {"fault": "internal_short", "fault_severity": 1.0, "seed": 3}).json()
    assert body["telemetry"]["fault"] == "internal_short"
    fault = body["scores"]["battery-fault"]
    assert fault["label"] != "normal" or body["scores"]["battery-anomaly"]["anomaly"]


def test_bad_simulation_input_is_422(bento: BentoFixture) -> None:
    bad = bento.post("simulate_battery", {"profile": {"durations_s": [10.0, 5.0], "currents_a": [1.0]}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_simulation"
    assert "differ in length" in bad.json()["error"]["message"]
    bad = bento.post("simulate_battery", {"fault": "gremlins"})
    assert bad.status_code == 422 and "fault" in bad.json()["error"]["message"]
    bad = bento.post("simulate_battery", {"cell": {"capacity_ah": -1}})
    assert bad.status_code == 422 and "capacity_ah" in bad.json()["error"]["message"]
