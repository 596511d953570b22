"""Tables (migration 0011) and API schemas of the battery-fleet app.

Telemetry times are stored as UTC epoch seconds (double precision): the key (battery_id, ts) is the same on SQLite and
PostgreSQL, range queries and bucket means are plain arithmetic.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PField
from sqlalchemy import JSON, Column, Float, ForeignKey, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from auth_api.models import utcnow

CHEMISTRIES = ("nmc", "lfp", "nca", "lco", "lmo", "lto", "lead_acid", "nimh", "other")


def _owner() -> Any:
    return Field(sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))


def _battery_fk(primary_key: bool = False) -> Any:
    return Field(sa_column=Column(Integer, ForeignKey("battery_batteries.id", ondelete="CASCADE"), nullable=False,
                                  primary_key=primary_key, index=not primary_key))


def _check_chemistry(v: str) -> str:
    v = v.strip().lower()
    if v not in CHEMISTRIES:
        raise ValueError(f"chemistry must be one of {', '.join(CHEMISTRIES)}")
    return v


# --- batteries ----------------------------------------------------------------------------------
class BatteryFields(BaseModel):
    name: str = PField(min_length=1, max_length=100)
    serial: str = PField(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    chemistry: str = PField("nmc", max_length=16, description=f"One of {', '.join(CHEMISTRIES)}.")
    nominal_capacity_ah: float = PField(gt=0, le=100_000, description="Rated capacity (Ah), > 0.")
    nominal_voltage_v: float = PField(gt=0, le=2_000, description="Rated voltage (V), > 0.")
    installed_on: date | None = None

    @field_validator("chemistry")
    @classmethod
    def _chemistry(cls, v: str) -> str:
        return _check_chemistry(v)


class BatteryCreate(BatteryFields):
    model_config = ConfigDict(extra="forbid")
    metadata: dict[str, Any] = PField(default_factory=dict, description="Free-form facts (e.g. ambient_c, site).")


class BatteryUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = PField(None, min_length=1, max_length=100)
    chemistry: str | None = PField(None, max_length=16)
    nominal_capacity_ah: float | None = PField(None, gt=0, le=100_000)
    nominal_voltage_v: float | None = PField(None, gt=0, le=2_000)
    installed_on: date | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("chemistry")
    @classmethod
    def _chemistry(cls, v: str | None) -> str | None:
        return _check_chemistry(v) if v is not None else None


class Battery(SQLModel, table=True):
    __tablename__ = "battery_batteries"
    __table_args__ = (UniqueConstraint("owner_id", "serial", name="uq_battery_owner_serial"),)
    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = _owner()
    name: str = Field(max_length=100)
    serial: str = Field(max_length=64)
    chemistry: str = Field(max_length=16)
    nominal_capacity_ah: float
    nominal_voltage_v: float
    installed_on: date | None = None
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class BatteryPublic(BatteryFields):
    id: int
    owner_id: int
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, b: Battery) -> BatteryPublic:
        return cls.model_validate({**b.model_dump(exclude={"meta"}), "metadata": b.meta})


class BatteryList(BaseModel):
    items: list[BatteryPublic]
    total: int


# --- telemetry ----------------------------------------------------------------------------------
class Sample(SQLModel, table=True):
    """One telemetry sample; (battery_id, ts) is the key: a re-uploaded sample is skipped, never duplicated."""

    __tablename__ = "battery_telemetry"
    battery_id: int = _battery_fk(primary_key=True)
    ts: float = Field(sa_column=Column(Float(precision=53), primary_key=True))
    voltage: float
    current: float
    temperature: float
    soc: float | None = None
    ambient: float | None = None


# --- analyses, twins, thermal images ------------------------------------------------------------
class Analysis(SQLModel, table=True):
    __tablename__ = "battery_analyses"
    id: int | None = Field(default=None, primary_key=True)
    battery_id: int = _battery_fk()
    owner_id: int = _owner()
    status: str = Field(default="pending", max_length=16)  # pending | running | done | failed
    from_ts: float | None = Field(default=None, sa_column=Column(Float(precision=53)))
    to_ts: float | None = Field(default=None, sa_column=Column(Float(precision=53)))
    verdict: str | None = Field(default=None, max_length=16)  # healthy | fault | anomalous | no_data
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    windows: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    explanation: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class Twin(SQLModel, table=True):
    """The fitted equivalent-circuit parameters of a battery (one per battery; a new fit replaces it)."""

    __tablename__ = "battery_twins"
    battery_id: int = _battery_fk(primary_key=True)
    params: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    fit: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    fitted_at: datetime = Field(default_factory=utcnow)


class TwinRun(SQLModel, table=True):
    __tablename__ = "battery_twin_runs"
    id: int | None = Field(default=None, primary_key=True)
    battery_id: int = _battery_fk()
    status: str = Field(default="pending", max_length=16)
    request: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class ThermalImage(SQLModel, table=True):
    __tablename__ = "battery_thermal_images"
    id: int | None = Field(default=None, primary_key=True)
    battery_id: int = _battery_fk()
    object_key: str = Field(max_length=200)
    content_type: str = Field(max_length=64)
    width: int
    height: int
    stats: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    hotspots: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
