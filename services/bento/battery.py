"""simulate_battery's plumbing: request dicts -> the cell digital twin (training/battery_sim.py) -> telemetry + features."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ValidationError

from services.bento.errors import InvalidRecords
from training.battery_sim import FEATURE_NAMES, CellParams, LoadProfile, SimulationInputError, Telemetry, extract_features, simulate

SCORERS = ("battery-fault", "battery-anomaly")
# The window the battery models were trained on: 15 minutes at 1 s, a load then a rest.
DEFAULT_PROFILE: dict[str, Any] = {"kind": "constant", "current_a": 3.0, "duration_s": 600.0, "rest_s": 300.0}


def _invalid(field: str, exc: Exception) -> InvalidRecords:
    if isinstance(exc, ValidationError):
        errs = [{"field": f"{field}.{'.'.join(str(p) for p in e['loc'])}".rstrip("."), "message": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)]
        return InvalidRecords(f"invalid {field}: " + "; ".join(f"{e['field']}: {e['message']}" for e in errs),
                              code="invalid_simulation", details={"errors": errs})
    return InvalidRecords(f"invalid {field}: {exc}", code="invalid_simulation", details={"field": field})


def build_profile(spec: dict[str, Any] | None) -> LoadProfile:
    """Explicit ``{durations_s, currents_a}`` or a preset ``{kind: constant|pulses|drive_cycle, ...}``."""
    spec = dict(spec or DEFAULT_PROFILE)
    kind = spec.pop("kind", None)
    try:
        if kind is None:
            return LoadProfile(**spec)
        if kind == "constant":
            return LoadProfile.constant(float(spec["current_a"]), float(spec["duration_s"]), float(spec.get("rest_s", 0.0)))
        if kind == "pulses":
            return LoadProfile.pulses(float(spec["current_a"]), float(spec["on_s"]), float(spec["off_s"]),
                                      int(spec["n_pulses"]), float(spec.get("rest_s", 0.0)))
        if kind == "drive_cycle":
            return LoadProfile.drive_cycle(float(spec["duration_s"]), float(spec["mean_current_a"]),
                                           int(spec.get("seed", 0)), float(spec.get("rest_s", 0.0)))
    except KeyError as exc:
        raise InvalidRecords(f"profile of kind '{kind}' needs '{exc.args[0]}'", code="invalid_simulation",
                             details={"field": f"profile.{exc.args[0]}"}) from exc
    except (ValidationError, ValueError, TypeError) as exc:
        raise _invalid("profile", exc) from exc
    raise InvalidRecords(f"unknown profile kind '{kind}'; use constant, pulses, drive_cycle or give durations_s/currents_a",
                         code="invalid_simulation", details={"field": "profile.kind"})


def run(cell: dict[str, Any] | None, profile: dict[str, Any] | None, *, dt: float, fault: str, fault_severity: float,
        seed: int) -> tuple[Telemetry, np.ndarray]:
    """Simulate one cell; InvalidRecords (422) names the bad field."""
    try:
        params = CellParams(**(cell or {}))
    except (ValidationError, TypeError) as exc:
        raise _invalid("cell", exc) from exc
    prof = build_profile(profile)
    try:
        tel = simulate(params, prof, dt=dt, fault=fault, fault_severity=fault_severity, seed=seed)
    except SimulationInputError as exc:
        raise InvalidRecords(f"invalid {exc.field}: {exc.message}", code="invalid_simulation",
                             details={"field": exc.field}) from exc
    return tel, extract_features(tel)


def features_dict(features: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(FEATURE_NAMES, features, strict=True)}
