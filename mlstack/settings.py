"""One settings object for every tier, read from ``MLSTACK_*`` environment variables (and ``.env``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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
    default_version_policy_latest: int = Field(
        1, ge=1, description="version_policy `latest { num_versions: N }` for newly published models: Triton serves the N newest."
    )

    # --- gateway / BentoML (used by later tiers) ---------------------------------
    gateway_host: str = Field("127.0.0.1", description="Gateway bind address.")
    gateway_http_port: int = Field(8080, description="Gateway HTTP port.")
    gateway_grpc_port: int = Field(8081, description="Gateway gRPC port.")
    bento_port: int = Field(3000, description="BentoML task service port.")
    bento_host: str = Field("127.0.0.1", description="BentoML task service bind address (clients connect here too).")
    bento_runner: Literal["triton", "local"] = Field(
        "triton", description="Tensor runner of the BentoML service: triton (gRPC to Triton) or local (in-process onnxruntime)."
    )
    bento_runner_timeout_s: float = Field(10.0, gt=0, description="Per-request timeout of a runner call to Triton (seconds).")
    bento_max_image_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Largest image classify_image accepts (bytes); larger -> 413.")
    bento_max_image_pixels: int = Field(
        40_000_000, gt=0, description="Largest decoded image (width x height) classify_image accepts; larger -> 400 (decompression bomb)."
    )
    bento_explain_nsamples: int = Field(
        1024, ge=16, description="Coalitions KernelExplainer evaluates per explained row (all of them when 2^features is fewer)."
    )
    bento_startup_timeout_s: float = Field(120.0, gt=0, description="How long the launcher waits for the BentoML service's /readyz.")
    # --- monitoring ------------------------------------------------------------------
    prometheus_port: int = Field(9090, description="Port of the local Prometheus started by `mlstack up --with-prometheus`.")
    grafana_port: int = Field(3001, description="Grafana port (compose deployment).")
    prometheus_scrape_interval_s: float = Field(5.0, gt=0, description="Scrape interval of the local Prometheus (seconds).")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite file under var_dir.")
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 key for gateway JWTs (MLSTACK_JWT_SECRET); generated into var_dir/jwt.key (0600) when unset."
    )
    admin_username: str = Field("admin", description="Username of the admin account created on the gateway's first start.")
    admin_password: SecretStr | None = Field(
        None, description="Password for the first admin (MLSTACK_ADMIN_PASSWORD); a random one is logged once when unset."
    )
    gateway_allow_registration: bool = Field(True, description="Allow self-registration (POST /api/v1/auth/register).")
    gateway_allow_anonymous: bool = Field(False, description="Allow inference without credentials.")
    gateway_access_token_ttl_s: int = Field(900, gt=0, description="Access token lifetime in seconds.")
    gateway_refresh_token_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="Refresh token lifetime in seconds.")
    gateway_max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Largest accepted request body (bytes); larger -> 413.")
    gateway_rate_limit_rps: float = Field(
        5000.0, ge=0, description="Token-bucket refill rate per user or API key (requests/s); 0 disables rate limiting."
    )
    gateway_rate_limit_burst: int = Field(10000, ge=1, description="Token-bucket capacity per user or API key.")
    gateway_cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins (JSON list).")
    gateway_history_queue_size: int = Field(10000, ge=1, description="Bound of the history writer queue (full = backpressure).")
    gateway_history_batch_size: int = Field(500, ge=1, description="Most history rows inserted per batch.")
    gateway_history_flush_interval_s: float = Field(0.2, gt=0, description="Longest a history row waits before it is written.")
    gateway_upstream_connect_timeout_s: float = Field(1.0, gt=0, description="Connect timeout to Triton (Triton down -> 503 fast).")
    gateway_upstream_timeout_s: float = Field(30.0, gt=0, description="Read timeout for upstream inference calls.")
    gateway_upstream_pool_size: int = Field(256, ge=1, description="Max pooled connections to each upstream.")
    gateway_bento_timeout_s: float = Field(
        120.0, gt=0, description="Total timeout of a task call forwarded to the BentoML service (explain can take seconds).")

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
