"""The lithium-ion cell twin behaves physically, is deterministic, and both battery recipes train, pass parity and publish."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from mlstack.repository.config import read_config
from mlstack.repository.layout import versions
from mlstack.settings import Settings
from training import battery_data
from training.battery_sim import (
    FAULT_KINDS,
    FEATURE_NAMES,
    CellParams,
    LoadProfile,
    SimulationInputError,
    Telemetry,
    extract_features,
    ocv,
    parse,
    simulate,
)
from training.parity import check_parity
from training.pipeline import train_and_publish
from training.registry import get_recipe

CELL = CellParams(initial_soc=0.9)
# a 15-minute window like the training windows: 1C pulses, then a rest
WINDOW = LoadProfile.pulses(3.0, on_s=60, off_s=30, n_pulses=6, rest_s=360)


def _run(fault: str = "normal", severity: float = 0.7, profile: LoadProfile = WINDOW, cell: CellParams = CELL,
         seed: int = 3) -> Telemetry:
    return simulate(cell, profile, fault=fault, fault_severity=severity, seed=seed)


def test_discharge_lowers_soc_and_voltage_by_coulomb_counting() -> None:
    tel = _run(profile=LoadProfile.constant(3.0, 600))
    assert tel.soc[-1] == pytest.approx(0.9 - 3.0 * 600 / 3600 / 3.0, abs=1e-3)
    assert np.all(np.diff(tel.soc) <= 0)
    assert tel.true_voltage_v[-1] < tel.true_voltage_v[0] - 0.05
    # the load pulls the terminal voltage below the open-circuit voltage from the first sample
    assert tel.true_voltage_v[0] < ocv(np.array([0.9]))[0] - 3.0 * 0.02


def test_rest_relaxes_voltage_back_up_towards_ocv() -> None:
    tel = _run(profile=LoadProfile.constant(6.0, 300, rest_s=900))
    rest = tel.current_a == 0
    first_rest = int(np.argmax(rest))
    v = tel.true_voltage_v
    assert v[first_rest] > v[first_rest - 1]  # the IR drop vanishes at once
    assert np.all(np.diff(v[first_rest:]) >= -1e-9)  # then the RC pair relaxes it upward
    assert v[-1] - v[first_rest] > 0.02
    assert v[-1] == pytest.approx(ocv(tel.soc[-1:])[0], abs=0.003)


def test_internal_short_heats_and_drains_the_cell_at_zero_load() -> None:
    idle = LoadProfile.constant(0.0, 1800)
    healthy, shorted = _run(profile=idle), _run("internal_short", profile=idle)
    assert healthy.soc[-1] == pytest.approx(0.9) and shorted.soc[-1] < 0.9 - 0.05
    assert healthy.true_temperature_c.max() == pytest.approx(25.0, abs=0.01)
    assert shorted.true_temperature_c[-1] > 25.0 + 3.0
    assert shorted.true_voltage_v[-1] < healthy.true_voltage_v[-1]


def test_capacity_fade_ends_a_full_discharge_earlier() -> None:
    full = CellParams(initial_soc=1.0)
    drain = LoadProfile.constant(3.0, 4 * 3600)
    fresh, aged = _run(cell=full, profile=drain), _run("capacity_fade", severity=0.5, cell=full, profile=drain)
    assert fresh.cutoff_reached and aged.cutoff_reached
    assert len(aged.time_s) < 0.85 * len(fresh.time_s)
    assert len(fresh.time_s) > 0.9 * 3600  # ~1 h at 1C for a healthy 3 Ah cell


def test_overheating_runs_hotter_than_a_healthy_cell_under_the_same_load() -> None:
    healthy, hot = _run(), _run("overheating", severity=0.5)
    assert hot.true_temperature_c.max() > healthy.true_temperature_c.max() + 5.0
    np.testing.assert_array_equal(hot.current_a, healthy.current_a)


def test_sensor_drift_changes_measured_not_true_values() -> None:
    healthy, drifting = _run(), _run("sensor_drift", severity=1.0)
    np.testing.assert_array_equal(drifting.true_voltage_v, healthy.true_voltage_v)
    np.testing.assert_array_equal(drifting.true_temperature_c, healthy.true_temperature_c)
    v_err = drifting.voltage_v - drifting.true_voltage_v
    t_err = drifting.temperature_c - drifting.true_temperature_c
    assert abs(v_err[-1]) > 0.07 and abs(t_err[-1]) > 7.0  # 6 mV/min and 0.6 °C/min over 15 min
    assert abs(v_err[0]) < 0.005 and abs(t_err[0]) < 0.3


def test_cutoff_voltage_stops_the_run_without_negative_soc() -> None:
    tel = _run(cell=CellParams(initial_soc=0.2, v_cutoff=3.2), profile=LoadProfile.constant(9.0, 3600))
    assert tel.cutoff_reached
    assert len(tel.time_s) < 3600
    assert tel.voltage_v[-1] < 3.2 + 0.005 and np.all(tel.true_voltage_v[:-1] >= 3.2)
    assert tel.soc.min() >= 0.0


@pytest.mark.parametrize(("call", "field"), [
    (lambda: CellParams(capacity_ah=-1.0), "capacity_ah"),
    (lambda: CellParams(initial_soc=1.5), "initial_soc"),
    (lambda: CellParams.model_validate({"r0_ohm": 0.03, "colour": "red"}), "colour"),
    (lambda: LoadProfile(durations_s=[10, 10], currents_a=[1.0]), "durations_s"),
    (lambda: LoadProfile(durations_s=[10], currents_a=[float("nan")]), "currents_a"),
    (lambda: simulate(CELL, WINDOW, dt=0), "dt"),
    (lambda: simulate(CELL, WINDOW, fault="meltdown"), "fault"),
    (lambda: simulate(CELL, WINDOW, fault="internal_short", fault_severity=2.0), "fault_severity"),
    (lambda: simulate(CELL, LoadProfile.constant(1.0, 1e7), dt=1.0), "dt"),
])
def test_invalid_input_raises_a_value_error_naming_the_field(call, field: str) -> None:
    with pytest.raises(ValueError, match=field) as err:
        call()
    if isinstance(err.value, SimulationInputError):
        assert err.value.field == field


def test_parse_maps_every_validation_problem_to_one_error_naming_the_field() -> None:
    with pytest.raises(SimulationInputError) as err:
        parse(CellParams, {"capacity_ah": 3.0, "h_a_w_per_k": -0.1})
    assert err.value.field == "h_a_w_per_k" and err.value.status == 422
    body = err.value.to_body()["error"]
    assert body["code"] == "invalid_simulation_input" and body["details"]["field"] == "h_a_w_per_k"
    with pytest.raises(SimulationInputError, match="currents_a"):
        parse(LoadProfile, {"durations_s": [1.0]})
    assert parse(LoadProfile, {"durations_s": [60], "currents_a": [2.0]}).duration_s == 60


def test_same_seed_gives_identical_telemetry_and_another_seed_other_noise() -> None:
    a, b, c = _run("sensor_drift", seed=11), _run("sensor_drift", seed=11), _run("sensor_drift", seed=12)
    for name in ("time_s", "current_a", "voltage_v", "temperature_c", "soc"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.voltage_v, c.voltage_v)
    drive = LoadProfile.drive_cycle(600, 1.5, seed=5)
    assert drive == LoadProfile.drive_cycle(600, 1.5, seed=5) != LoadProfile.drive_cycle(600, 1.5, seed=6)
    assert min(drive.currents_a) < 0 < max(drive.currents_a)  # regenerative braking charges the cell


def test_features_are_named_finite_and_estimate_the_internal_resistance() -> None:
    feats = dict(zip(FEATURE_NAMES, extract_features(_run()), strict=True))
    assert len(feats) == len(FEATURE_NAMES)
    assert all(np.isfinite(v) for v in feats.values())
    assert feats["r_step_mohm"] == pytest.approx(30.0, rel=0.1)  # R0 = 30 mΩ at 25 °C
    assert feats["rest_relax_mv"] > 0 and feats["t_max_rise_c"] > 0
    aged = dict(zip(FEATURE_NAMES, extract_features(_run("capacity_fade", severity=0.5)), strict=True))
    assert aged["r_step_mohm"] > 1.5 * feats["r_step_mohm"]


def test_dataset_is_deterministic_balanced_and_finite() -> None:
    a, b = battery_data.generate(20, seed=4), battery_data.generate(20, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x.shape == (20 * len(FAULT_KINDS), len(FEATURE_NAMES)) and a.x.dtype == np.float32
    assert np.bincount(a.y).tolist() == [20] * len(FAULT_KINDS)
    assert np.isfinite(a.x).all()
    assert not np.array_equal(a.x, battery_data.generate(20, seed=5).x)


@pytest.fixture(scope="module")
def battery_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("battery") / "model_repository"
    settings = Settings(repository=repo)
    for name in ("battery-fault", "battery-anomaly"):
        train_and_publish(name, repo, settings, report=lambda _line: None)
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("name", ["battery-fault", "battery-anomaly"])
def test_recipe_meets_threshold_and_passes_parity(name: str) -> None:
    result = get_recipe(name).train(lambda _line: None)
    hm = result.card.headline_metric
    assert hm is not None and hm.passed, f"{name}: {hm}"
    parity = check_parity(result)
    assert parity.passed and parity.label_agreement == 1.0 and parity.max_abs_diff <= result.tolerance
    background = result.extra_files["background.npy"]
    assert len(background) > 50 * len(FEATURE_NAMES) * 4


@pytest.mark.slow
def test_fault_model_is_published_in_triton_layout(battery_repo: Path) -> None:
    mdir = battery_repo / "battery-fault"
    assert versions(battery_repo, "battery-fault") == [1]
    cfg = read_config(mdir / "config.pbtxt")
    assert cfg.backend == "onnxruntime" and [t.name for t in cfg.input] == ["input"]
    assert list(cfg.input[0].dims) == [len(FEATURE_NAMES)]
    outs = {t.name: t for t in cfg.output}
    assert list(outs["probabilities"].dims) == [len(FAULT_KINDS)] and outs["probabilities"].label_filename == "labels.txt"
    assert mc.DataType.Name(outs["label"].data_type) == "TYPE_INT64"
    assert mc.DataType.Name(outs["probabilities"].data_type) == "TYPE_FP32"
    assert (mdir / "labels.txt").read_text().split() == list(FAULT_KINDS)
    assert (mdir / "1" / "background.npy").is_file()


@pytest.mark.slow
def test_anomaly_model_is_published_with_label_and_scores(battery_repo: Path) -> None:
    cfg = read_config(battery_repo / "battery-anomaly" / "config.pbtxt")
    outs = {t.name: t for t in cfg.output}
    assert set(outs) == {"label", "scores"}
    assert list(outs["scores"].dims) == [1] and mc.DataType.Name(outs["scores"].data_type) == "TYPE_FP32"
    assert list(outs["label"].dims) == [1] and list(outs["label"].reshape.shape) == []  # rank-1 [N] label
    assert not (battery_repo / "battery-anomaly" / "labels.txt").exists()


@pytest.mark.slow
def test_published_models_diagnose_fresh_twin_telemetry(battery_repo: Path) -> None:
    """The digital twin -> features -> the published ONNX files: each fault, unseen seed, named and flagged."""
    rows = np.stack([extract_features(_run(kind, severity=0.8, seed=100 + k)) for k, kind in enumerate(FAULT_KINDS)])
    fault = ort.InferenceSession(str(battery_repo / "battery-fault" / "1" / "model.onnx"))
    label, proba = fault.run(["label", "probabilities"], {"input": rows})
    assert [FAULT_KINDS[i] for i in label] == list(FAULT_KINDS)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    anomaly = ort.InferenceSession(str(battery_repo / "battery-anomaly" / "1" / "model.onnx"))
    flags, scores = anomaly.run(["label", "scores"], {"input": rows})
    assert flags.shape == (len(FAULT_KINDS),) and scores.shape == (len(FAULT_KINDS), 1)
    assert scores[0, 0] > scores[1:, 0].min()  # the healthy cell is not the most anomalous one
    assert flags[0] == 1 and (flags[1:] == -1).sum() >= 3
