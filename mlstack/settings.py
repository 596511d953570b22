"""One settings object for every tier, read from ``MLSTACK_*`` environment variables (and ``.env``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Stack configuration. Secrets have no fixed defaults: they come from the environment or are generated."""

    model_config = SettingsConfigDict(env_prefix="MLSTACK_", env_file=".env", extra="ignore")

    # --- paths -------------------------------------------------------------
    repository: Path = Field(
        Path("model_repository"), description="Triton model repository: a folder, or s3://bucket/prefix (then this becomes "
        "the local mirror under var_dir, repository_remote the bucket, and Triton serves the bucket directly).")
    repository_remote: str = Field("", description="s3://bucket/prefix the repository lives in (set from an s3:// repository).")
    repository_s3_endpoint_url: str | None = Field(None, description="S3 endpoint of the repository bucket (MinIO, moto); unset = AWS.")
    repository_s3_region: str = Field("us-east-1", description="Region of the repository bucket.")
    repository_s3_access_key_id: str | None = Field(None, description="Access key for the repository bucket; unset = boto3's chain.")
    repository_s3_secret_access_key: SecretStr | None = Field(None, description="Secret key for the repository bucket.")
    repository_sync_interval_s: float = Field(
        2.0, gt=0, description="How often a gateway pulls an s3:// repository into its mirror (new versions' cards, labels).")
    var_dir: Path = Field(Path("var"), description="Runtime state: databases, keys, logs, pid files, bench reports.")

    # --- Triton ------------------------------------------------------------
    triton_host: str = Field("127.0.0.1", description="Address Triton binds to and clients connect to.")
    triton_http_port: int = Field(8000, description="Triton HTTP/REST (KServe v2) port.")
    triton_grpc_port: int = Field(8001, description="Triton gRPC (KServe v2) port.")
    triton_metrics_port: int = Field(8002, description="Triton Prometheus metrics port.")
    triton_urls: str = Field(
        "", description="Comma-separated HTTP base URLs of several Triton replicas (e.g. http://t1:8000,http://t2:8000); "
        "the gateway balances across them. Empty: the one Triton at triton_host:triton_http_port."
    )
    triton_grpc_urls: str = Field(
        "", description="Comma-separated host:port gRPC endpoints of the same replicas, in the same order. Empty: "
        "the one at triton_host:triton_grpc_port."
    )
    triton_model_control_mode: Literal["poll", "explicit", "none"] = Field(
        "poll", description="poll: hot-load new versions; explicit: load/unload via the repository API."
    )
    triton_poll_interval_s: int = Field(2, ge=1, description="Seconds between repository polls in poll mode.")
    triton_cache_size: int = Field(
        0, ge=0, description="Triton's response cache size in bytes (0: off). Off by default: Triton 2.51 caches a backend's "
        "error as an empty success; the gateway's prediction cache (gateway_prediction_cache) is the safe one."
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
    publish_smoke_timeout_s: float = Field(
        60.0, gt=0, description="Wall-clock (and CPU) seconds a candidate's sandboxed smoke run may take before it is refused.")
    publish_smoke_memory_bytes: int = Field(
        4 * 1024**3, ge=256 * 1024**2, description="Address-space limit of the sandboxed smoke run (bytes); bigger models need more.")

    # --- gateway / BentoML (used by later tiers) ---------------------------------
    gateway_host: str = Field("127.0.0.1", description="Gateway bind address.")
    gateway_http_port: int = Field(8080, description="Gateway HTTP port.")
    gateway_grpc_port: int = Field(8081, description="Gateway gRPC port.")
    ingester_metrics_port: int = Field(
        8082, ge=0, description="Prometheus port of the external history ingester (`python -m auth_api.ingester`); 0 = none.")
    bento_port: int = Field(3000, description="BentoML task service port.")
    bento_host: str = Field("127.0.0.1", description="BentoML task service bind address (clients connect here too).")
    bento_runner: Literal["triton", "local"] = Field(
        "triton", description="Tensor runner of the BentoML service: triton (gRPC to Triton) or local (in-process onnxruntime)."
    )
    bento_runner_timeout_s: float = Field(10.0, gt=0, description="Per-request timeout of a runner call to Triton (seconds).")
    bento_worker_call_timeout_s: float = Field(
        45.0, gt=0, description="Deadline of one task-service call to its tensor worker (seconds); a call past it is sent once "
        "more, then answered 504. Two attempts stay under the service's 120 s traffic timeout."
    )
    bento_max_image_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Largest image classify_image accepts (bytes); larger -> 413.")
    bento_max_image_pixels: int = Field(
        40_000_000, gt=0, description="Largest decoded image (width x height) classify_image accepts; larger -> 400 (decompression bomb)."
    )
    bento_max_decode_pixels: int = Field(
        16_000_000, gt=0, description="Largest non-JPEG image (width x height) classify_image decodes in full; larger -> 413. "
        "JPEGs are decoded at a reduced scale up to bento_max_image_pixels.")
    bento_explain_nsamples: int = Field(
        1024, ge=16, description="Coalitions KernelExplainer evaluates per explained row (all of them when 2^features is fewer)."
    )
    bento_startup_timeout_s: float = Field(120.0, gt=0, description="How long the launcher waits for the BentoML service's /readyz.")
    # --- monitoring ------------------------------------------------------------------
    prometheus_port: int = Field(9090, description="Port of the local Prometheus started by `mlstack up --with-prometheus`.")
    grafana_port: int = Field(3001, description="Grafana port (compose deployment).")
    prometheus_scrape_interval_s: float = Field(5.0, gt=0, description="Scrape interval of the local Prometheus (seconds).")
    # --- supervisor (`mlstack up`, mlstack/supervisor.py, docs/scaling.md) -------------------------
    supervisor_metrics_port: int = Field(
        8083, ge=0, description="Port of the supervisor's /metrics (mlstack_tier_restarts_total{tier}); 0 = not served.")
    supervisor_backoff_s: float = Field(1.0, gt=0, description="Wait before restarting a tier that died (s); doubles per restart in a row.")
    supervisor_backoff_max_s: float = Field(30.0, gt=0, description="Longest wait before a restart (s).")
    supervisor_restart_budget: int = Field(
        5, ge=0, description="Restarts of one replica allowed within supervisor_restart_window_s; one more failure stops the stack.")
    supervisor_restart_window_s: float = Field(600.0, gt=0, description="Window of the restart budget (s).")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite file under var_dir.")
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 key for gateway JWTs (MLSTACK_JWT_SECRET); generated into var_dir/jwt.key (0600) when unset."
    )
    admin_username: str = Field("admin", description="Username of the admin account created on the gateway's first start.")
    admin_password: SecretStr | None = Field(
        None, description="Password for the first admin (MLSTACK_ADMIN_PASSWORD); a random one is logged once when unset."
    )
    gateway_forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are trusted (JSON list of IPs or CIDRs, '*' = any). "
                    "Empty (the default): those headers are ignored and the client address is the TCP peer's, so nobody can "
                    "pick the IP that per-IP login throttles and anonymous rate limits see.")
    gateway_allow_registration: bool = Field(True, description="Allow self-registration (POST /api/v1/auth/register).")
    gateway_allow_anonymous: bool = Field(False, description="Allow inference without credentials.")
    gateway_metrics_token: SecretStr | None = Field(
        None, description="When set (MLSTACK_GATEWAY_METRICS_TOKEN), GET /metrics requires 'Authorization: Bearer <token>' "
                          "(401 otherwise); `mlstack up --with-prometheus` passes it to Prometheus. Unset or empty: /metrics is open."
    )
    gateway_access_token_ttl_s: int = Field(900, gt=0, description="Access token lifetime in seconds.")
    gateway_refresh_token_ttl_s: int = Field(7 * 24 * 3600, gt=0, description="Refresh token lifetime in seconds.")
    gateway_password_hash_workers: int = Field(
        1, ge=1, description="Password hashes/verifies (argon2, one thread and ~0.2 s CPU each) running at once on this host: "
                             "every gateway process sharing var_dir takes the same slots (flock on var_dir/password-hashing-*.lock); "
                             "logins beyond it queue.")
    gateway_login_lockout_max_s: float = Field(900.0, gt=0, description="Longest login lockout (s).")
    gateway_login_lockout_base_s: float = Field(1.0, gt=0, description="First login lockout (s); doubles with each further failure.")
    gateway_login_failure_window_s: float = Field(900.0, gt=0, description="A login failure run is forgotten after this quiet time (s).")
    gateway_login_ip_max_failures: int = Field(
        20, ge=1, description="Failed logins per client IP before 429 (higher than per account: NAT and proxies share IPs).")
    gateway_login_max_failures: int = Field(5, ge=1, description="Failed logins per account before 429 with Retry-After.")
    gateway_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1,
        description="Gateway processes serving one HTTP (and gRPC) port via SO_REUSEPORT (python -m auth_api); default: CPU count.")
    gateway_account_cache_ttl_s: float = Field(
        1.0, ge=0, description="How long a gateway process trusts its cached copy of an account's role/active state (s).")
    gateway_max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Largest accepted request body (bytes); larger -> 413.")
    gateway_max_tensor_elements: int = Field(
        16 * 1024 * 1024, gt=0, description="Most tensor elements (all inputs together) one inference request may declare; "
                                            "more -> 400 before Triton (64 RGB images of 224x224 are ~9.6M)."
    )
    gateway_rate_limit_rps: float = Field(
        5000.0, ge=0, description="Token-bucket refill rate per user or API key (requests/s); 0 disables rate limiting."
    )
    gateway_rate_limit_burst: int = Field(10000, ge=1, description="Token-bucket capacity per user or API key.")
    gateway_cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins (JSON list).")
    gateway_history_queue_size: int = Field(10000, ge=1, description="Unused since the journal (kept so old .env files load).")
    gateway_history_batch_size: int = Field(500, ge=1, description="Most history rows the ingester inserts per transaction.")
    gateway_history_flush_interval_s: float = Field(
        0.2, gt=0, description="How often an idle history ingester looks for new journal records (s); it is also woken on demand.")
    gateway_ingester: Literal["embedded", "external"] = Field(
        "embedded", description="Who turns the history journal into rows: a thread of the gateway (embedded) or the "
        "`python -m auth_api.ingester` process (external; `mlstack up` sets it and supervises the process).")
    gateway_journal_segment_bytes: int = Field(
        64 * 1024 * 1024, ge=4096, description="A gateway's history journal segment rotates past this size (bytes).")
    gateway_journal_fsync_interval_s: float = Field(
        0.0, ge=0, description="fsync the history journal this often (s); 0 = never (survives a process crash, not a power loss).")
    gateway_history_read_wait_s: float = Field(
        3.0, ge=0, description="Longest GET /api/v1/history/{id} waits for a recent prediction still being ingested (s).")
    gateway_upstream_connect_timeout_s: float = Field(1.0, gt=0, description="Connect timeout to Triton (Triton down -> 503 fast).")
    gateway_upstream_timeout_s: float = Field(30.0, gt=0, description="Read timeout for upstream inference calls.")
    gateway_upstream_pool_size: int = Field(256, ge=1, description="Max pooled connections to each upstream.")
    gateway_upstream_health_interval_s: float = Field(
        1.0, gt=0, description="Seconds between /v2/health/ready checks of each Triton replica when there are several; a "
        "replica that fails one is taken out of the balance until a check passes again."
    )
    gateway_prediction_cache: bool = Field(
        False, description="Cache whole successful v2 answers for every model; a model's config.pbtxt parameters "
        "mlstack_cache (\"true\"/\"false\") and mlstack_cache_ttl_s override this per model.")
    gateway_prediction_cache_ttl_s: float = Field(300.0, gt=0, description="Default lifetime of a cached prediction (s).")
    gateway_prediction_cache_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Size of the in-process prediction cache (bytes of cached answers; LRU beyond).")
    gateway_prediction_cache_max_entry_bytes: int = Field(
        1024 * 1024, ge=1, description="Answers larger than this (bytes) are never cached.")
    redis_url: str | None = Field(
        None, description="Redis URL (MLSTACK_REDIS_URL) for state shared by every gateway process (rate limits, login throttles, "
        "revocations, the prediction cache, open WebSockets per user); "
        "unset: per process. Redis unreachable degrades to no shared state, never to failed requests.")
    smtp_url: SecretStr | None = Field(
        None, description="Where the gateway sends mail (MLSTACK_SMTP_URL): smtp://[user:password@]host[:port] (STARTTLS when the "
        "server offers it; ?starttls=required to insist), smtps://... (TLS from the first byte). Unset: messages are written "
        "to var_dir/outbox/*.eml and their subject and recipient logged.")
    smtp_ca_file: Path | None = Field(None, description="CA bundle (PEM) trusted for the SMTP server's certificate besides the system's.")
    smtp_timeout_s: float = Field(10.0, gt=0, description="Timeout of one SMTP conversation (s).")
    mail_from: str = Field("mlstack <noreply@localhost>", description="From: address of the gateway's mail.")
    mail_retry_base_s: float = Field(2.0, gt=0, description="First retry delay of an undelivered message (s); doubles per failure.")
    mail_retry_max_s: float = Field(300.0, gt=0, description="Longest delay between delivery attempts of one message (s).")
    mail_poll_interval_s: float = Field(1.0, gt=0, description="How often the outbox sender looks for due messages (s).")
    require_email_verification: bool = Field(
        True, description="Accounts whose email is unverified cannot log in (403 email_not_verified) until they enter the mailed code.")
    gateway_bento_timeout_s: float = Field(
        120.0, gt=0, description="Total timeout of a task call forwarded to the BentoML service (explain can take seconds).")
    gateway_ws_max_in_flight: int = Field(2, ge=1, le=64, description="Frames of one WebSocket being predicted at once; one more "
                                          "waits, and a newer frame replaces the waiting one, which is dropped (the latest frame wins).")
    gateway_ws_max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest WebSocket message; larger -> close 1009.")
    gateway_ws_max_connections_per_user: int = Field(
        8, ge=1, description="Open WebSockets per user (or client IP when anonymous); more -> close 1008. Counted for every "
        "gateway process together in Redis when redis_url is set; without Redis (or while it is down) each process counts "
        "its own, so gateway_workers processes allow up to gateway_workers x this.")
    gateway_ws_idle_timeout_s: float = Field(60.0, gt=0, description="A WebSocket with no client message for this long is closed (1001).")
    gateway_ws_auth_timeout_s: float = Field(
        5.0, gt=0, description="Time a WebSocket has to send its auth message when it came without credentials.")
    gateway_ws_send_queue: int = Field(
        64, ge=4, description="Answers queued for a WebSocket client; a client that lets it fill is closed (1008).")
    gateway_ws_decode_workers: int = Field(2, ge=1, description="Threads decoding WebSocket image frames (the event loop never decodes).")

    # --- alerts (auth_api/alerts, docs/alerts.md) --------------------------------------------------
    alert_webhook_allow_private: bool = Field(
        False, description="Let alert webhooks reach loopback/private/link-local/reserved addresses (tests, a trusted LAN).")
    alert_webhook_timeout_s: float = Field(5.0, gt=0, description="Timeout of one webhook delivery (connect + answer, s).")
    alert_webhook_retry_base_s: float = Field(2.0, gt=0, description="First retry delay of a failed webhook delivery (s); doubles.")
    alert_webhook_retry_max_s: float = Field(300.0, gt=0, description="Longest delay between attempts of one webhook delivery (s).")
    alert_webhook_max_attempts: int = Field(10, ge=1, description="Attempts of one webhook delivery before it is given up.")
    alert_poll_interval_s: float = Field(1.0, gt=0, description="How often the webhook sender looks for due deliveries (s).")

    # --- object storage (stored inputs, signed downloads) ---------------------------------------
    storage_url: str = Field(
        "", description="Where blobs live: empty = files under var_dir/objects; s3://bucket/prefix = any S3-compatible store.")
    storage_s3_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, Ceph, moto_server); unset = AWS.")
    storage_s3_region: str = Field("us-east-1", description="S3 region (presigned URLs are signed for it).")
    storage_s3_access_key_id: str | None = Field(None, description="S3 access key; unset = boto3's usual credential chain.")
    storage_s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key (with storage_s3_access_key_id).")
    storage_timeout_s: float = Field(5.0, gt=0, description="Connect/read timeout of one storage call (a dead store fails fast).")
    storage_url_expiry_s: int = Field(900, ge=1, le=7 * 86400, description="Lifetime of a signed download URL (s).")
    storage_signing_key: SecretStr | None = Field(
        None, description="HMAC key of the file backend's download URLs; generated into var_dir/storage-signing.key (0600) when unset.")
    storage_keep: Literal["none", "summary", "input"] = Field(
        "summary", description="What a prediction keeps: none (bare row), summary (outputs, input hash), input (summary + the upload).")
    storage_keep_by: dict[str, Literal["none", "summary", "input"]] = Field(
        default_factory=dict, description='Per model or route, e.g. {"classify_image": "input"}; a model name wins over its route. '
        'Routes: task names, "ws", and "http" (v2), "grpc", "rest" (/api/v1/predict), where "input" keeps the summary only.')
    storage_pending_max_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Most upload bytes a gateway process holds while their stores are queued or "
        "running; an input beyond it is not kept (history says not_kept, reason backlog), the prediction still succeeds.")

    # --- datasets (H1) ---
    dataset_max_bytes: int = Field(50 * 1024**2, gt=0, description="Largest dataset upload (bytes); larger -> 413. "
                                   "POST /api/v1/datasets alone accepts bodies this big (plus multipart framing).")
    dataset_max_rows: int = Field(1_000_000, gt=0, description="Most rows of an uploaded table; more -> 413.")
    dataset_max_columns: int = Field(500, gt=0, description="Most columns of an uploaded table; more -> 413.")
    dataset_max_decompressed_bytes: int = Field(
        200 * 1024**2, gt=0, description="Most bytes an XLSX or image ZIP may decompress to (declared and read); more -> 413.")
    dataset_max_images: int = Field(20_000, gt=0, description="Most images in an image ZIP; more -> 413.")
    dataset_quota_bytes: int = Field(500 * 1024**2, ge=0, description="Dataset storage per user (bytes); beyond -> 413 quota_exceeded.")

    # --- training jobs (H2) ---
    ray_address: str | None = Field(
        None, description="An existing Ray cluster for training jobs (ray://host:10001 or host:6379); unset: a local "
                          "instance started on the first job, sized to the machine.")
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray instance (default: all of the machine's).")
    jobs_max_concurrent_per_user: int = Field(2, ge=1, description="Queued + running jobs one user may have (429 job_quota).")
    jobs_max_models_per_user: int = Field(20, ge=1, description="Models one user may own (429 model_quota).")
    jobs_heartbeat_timeout_s: float = Field(
        60.0, gt=0, description="A running job whose worker has not written for this long is failed as lost.")

    @model_validator(mode="before")
    @classmethod
    def _s3_repository(cls, data: Any) -> Any:
        return _remote_repository(data)

    @property
    def triton_http_url(self) -> str:
        """Base URL of Triton's HTTP endpoint."""
        return f"http://{self.triton_host}:{self.triton_http_port}"

    @property
    def triton_grpc_url(self) -> str:
        """host:port of Triton's gRPC endpoint."""
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_http_urls(self) -> list[str]:
        """Every Triton replica's HTTP base URL (one unless ``triton_urls`` lists several)."""
        urls = [u.strip().rstrip("/") for u in self.triton_urls.split(",") if u.strip()]
        return urls or [self.triton_http_url]

    @property
    def triton_grpc_targets(self) -> list[str]:
        """Every Triton replica's gRPC host:port (one unless ``triton_grpc_urls`` lists several)."""
        urls = [u.strip().removeprefix("grpc://") for u in self.triton_grpc_urls.split(",") if u.strip()]
        return urls or [self.triton_grpc_url]

    @property
    def triton_metrics_url(self) -> str:
        """URL of Triton's Prometheus metrics."""
        return f"http://{self.triton_host}:{self.triton_metrics_port}/metrics"


def _remote_repository(data: Any) -> Any:
    """``repository=s3://bucket/prefix`` → ``repository_remote`` = that, ``repository`` = its mirror under var_dir."""
    if not isinstance(data, dict):
        return data
    repo = data.get("repository")
    if isinstance(repo, str) and repo.startswith("s3://"):
        data = dict(data)
        data["repository_remote"] = repo.rstrip("/")
        bucket_prefix = repo.removeprefix("s3://").strip("/").replace("/", "__")
        data["repository"] = Path(data.get("var_dir") or "var") / "repository-mirror" / bucket_prefix
    return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests build their own ``Settings(...)``."""
    return Settings()
