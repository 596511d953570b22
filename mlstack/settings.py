"""One settings object for every tier, read from ``MLSTACK_*`` environment variables (and ``.env``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Stack configuration. Secrets have no fixed defaults: they come from the environment or are generated."""

    model_config = SettingsConfigDict(env_prefix="MLSTACK_", env_file=".env", extra="ignore")

    # --- paths -------------------------------------------------------------
    repository: Path = Field(Path("model_repository"), description="Triton model repository folder.")
    var_dir: Path = Field(Path("var"), description="Runtime state: databases, keys, logs, pid files, bench reports.")

    # --- Triton ------------------------------------------------------------
    triton_host: str = Field("127.0.0.1", description="Address Triton binds to and clients connect to.")
    triton_http_port: int = Field(8000, description="Triton HTTP/REST (KServe v2) port.")
    triton_grpc_port: int = Field(8001, description="Triton gRPC (KServe v2) port.")
    triton_metrics_port: int = Field(8002, description="Triton Prometheus metrics port.")
    triton_model_control_mode: Literal["poll", "explicit", "none"] = Field(
        "poll", description="poll: hot-load new versions; explicit: load/unload via the repository API."
    )
    triton_poll_interval_s: int = Field(2, ge=1, description="Seconds between repository polls in poll mode.")
    triton_cache_size: int = Field(
        64 * 1024 * 1024, ge=0, description="Response cache size in bytes (0 disables the cache)."
    )
    triton_exit_timeout_s: int = Field(10, ge=0, description="Seconds Triton waits for in-flight requests on exit.")
    triton_log_verbose: int = Field(0, ge=0, description="Triton --log-verbose level.")
    triton_startup_timeout_s: float = Field(120.0, gt=0, description="How long `mlstack up` waits for readiness.")

    # --- serving defaults written into config.pbtxt ----------------------------
    default_max_batch_size: int = Field(64, ge=0, description="max_batch_size for newly published models.")
    default_max_queue_delay_us: int = Field(500, ge=0, description="Dynamic batcher max queue delay (µs).")
    default_instance_count: int = Field(2, ge=1, description="Model instances per model (instance_group count).")

    # --- gateway / BentoML (used by later tiers) ---------------------------------
    gateway_host: str = Field("127.0.0.1", description="Gateway bind address.")
    gateway_http_port: int = Field(8080, description="Gateway HTTP port.")
    gateway_grpc_port: int = Field(8081, description="Gateway gRPC port.")
    bento_port: int = Field(3000, description="BentoML task service port.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite file under var_dir.")

    @property
    def triton_http_url(self) -> str:
        """Base URL of Triton's HTTP endpoint."""
        return f"http://{self.triton_host}:{self.triton_http_port}"

    @property
    def triton_grpc_url(self) -> str:
        """host:port of Triton's gRPC endpoint."""
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_metrics_url(self) -> str:
        """URL of Triton's Prometheus metrics."""
        return f"http://{self.triton_host}:{self.triton_metrics_port}/metrics"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests build their own ``Settings(...)``."""
    return Settings()
