"""Service settings: one ``BaseSettings`` with the ``PHITUNE_`` prefix, read at entry points only.

`tuning` and `trainables` never read the environment; the API, the driver and the CLI build a
``Settings`` and pass plain values down.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PHITUNE_", extra="ignore")

    data_dir: Path = Field(Path(".phitune"), description="store, Ray results and driver logs")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file under data_dir"
    )
    dataset_dir: Path | None = Field(
        None, description="where datasets that are not system packages live (default data_dir/data)"
    )
    ray_address: str | None = Field(None, description="Ray cluster to run on; None = local Ray")
    ray_dashboard_address: str | None = Field(
        None, description="http://host:8265 of the cluster's dashboard/Jobs API (ray-job runner)"
    )
    ray_job_python: str | None = Field(
        None, description="python on the cluster for the ray-job runner (default: ours)"
    )
    ray_auth_mode: str = Field(
        "auto", description="token | disabled | auto (token when a Ray auth token is available)"
    )
    ray_num_cpus: int | None = Field(None, description="CPUs of a local Ray (None = all)")
    ray_dashboard: bool = Field(True, description="start the dashboard with a local Ray")
    optuna_in_store: bool = Field(
        True, description="keep each budget's Optuna study in the store's database "
        "(optuna-dashboard <database_url> opens it)")
    host: str = Field("127.0.0.1", description="bind address; loopback unless a token is set")
    port: int = 8000
    # security ------------------------------------------------------------------------------
    api_token: SecretStr | None = Field(
        None, description="bearer token for mutating routes (PHITUNE_API_TOKEN)"
    )
    api_token_file: Path | None = Field(
        None, description="file holding the token (a mounted secret); wins over api_token"
    )
    read_auth: bool | None = Field(
        None, description="require the token on GET routes too (probes stay open); default: "
        "yes whenever a token is set, PHITUNE_READ_AUTH=false opens reads explicitly (error "
        "details about files are then hidden from token-less readers)"
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="Host header values accepted when no token is set (the loopback mode): a "
        "web page on a DNS-rebinding domain cannot reach the open API through a browser",
    )
    data_roots: str | None = Field(
        None, description="folders a spec's data paths (dataset_kwargs root/path ...) must "
        "lie in, separated by ':' like PATH (default: the dataset dir)"
    )
    max_model_params: int = Field(
        100_000_000, ge=1, description="largest model (parameters) a spec may name, counted "
        "at submit time without allocating it"
    )
    trial_memory_mb: float = Field(
        4096, ge=0, description="memory each trial reserves on Ray and may use (CPU: enforced "
        "in the trial, which fails alone past it); 0 = no reservation or limit"
    )
    max_request_bytes: int = Field(
        1_048_576, ge=1024, description="request bodies above this are refused with 413"
    )
    # per-request caps ------------------------------------------------------------------------
    max_trials: int = Field(200, ge=1, description="cap on num_trials per budget")
    max_budget_steps: int = Field(10_000_000, ge=1)
    max_budget_epochs: float = Field(10_000, gt=0)
    max_concurrent_trials: int = Field(64, ge=1, description="cap on max_concurrent_trials")
    max_concurrent_studies: int = Field(
        4, ge=1, description="studies (and, separately, curvature jobs) running at once; more "
        "wait queued and start in submission order")
    max_queued_studies: int = Field(
        100, ge=0, description="jobs waiting for a slot; a submit beyond it gets 429")
    # lifecycle ---------------------------------------------------------------------------------
    runner: Literal["local", "ray-job"] = Field(
        "local", description="local: one driver process per study; ray-job: a Ray Job each"
    )
    cancel_grace_s: float = Field(
        5.0, ge=0, description="SIGTERM → SIGKILL delay when cancelling a local driver"
    )
    max_launches: int = Field(
        3, ge=1, description="driver launches per study before reconcile marks it failed"
    )
    reconcile_interval_s: float = Field(
        30.0, ge=0, description="how often the API relaunches dead drivers (0: at startup only)"
    )
    queue_poll_s: float = Field(
        2.0, gt=0, description="how often the API starts queued jobs when slots free up"
    )
    local_ray: Literal["shared", "per-study"] = Field(
        "shared", description="without PHITUNE_RAY_ADDRESS: `phitune serve` starts (or attaches "
        "to) one local Ray head for every driver (one dashboard), or each driver starts its own")
    ray_head_port: int = Field(6380, ge=1, le=65535, description="GCS port of the shared head")
    ray_head_dashboard_port: int = Field(
        8265, ge=1, le=65535, description="dashboard (and Jobs API) port of the shared head")
    tune_checkpoint_s: float = Field(
        1.0, gt=0, description="Tune experiment-state save period of a driver (resume window)"
    )
    # agent mode (trainer: external) --------------------------------------------------------------
    lease_ttl_s: float = Field(
        60.0, gt=0, le=86_400, description="an agent's lease on an external trial lasts this "
        "long after its claim or last heartbeat (agents heartbeat every third of it); past it "
        "the trial is offered again and the old lease's report is refused (409)")
    external_poll_s: float = Field(
        1.0, gt=0, le=60, description="how often a driver's proxy trial reads the store for "
        "its agent's result")
    # library mode (trainer: library) ------------------------------------------------------------
    library_heartbeat_timeout_s: float = Field(
        120.0, gt=0, le=86_400, description="a library study whose process sent no heartbeat "
        "(nor trial record) for this long is failed by reconcile (every "
        "PHITUNE_RECONCILE_INTERVAL_S): its process was killed or lost. The process "
        "heartbeats every heartbeat_s (tune_schedule's argument, 30 s by default); keep this "
        "several times that")
    # experiment trackers (optional extras, off by default) --------------------------------------
    mlflow_tracking_uri: str | None = Field(
        None, description="log every trial to MLflow at this tracking URI (file:/path, "
        "http://host:5000 ...); needs phitune[mlflow]")
    mlflow_experiment: str | None = Field(
        None, description="MLflow experiment of every study (default: phitune-<study id>)")
    wandb_project: str | None = Field(
        None, description="log every trial to this W&B project, grouped by study; needs "
        "phitune[wandb] (and WANDB_API_KEY unless offline)")
    wandb_mode: Literal["online", "offline"] = Field(
        "online", description="offline: W&B runs are written into each trial's directory "
        "without network (`wandb sync` uploads them later)")

    def check_trackers(self) -> None:
        """A tracker configured without its package is a startup error naming the setting,
        not a study that fails later."""
        import importlib

        for setting, value, module in (("PHITUNE_MLFLOW_TRACKING_URI", self.mlflow_tracking_uri,
                                        "mlflow"),
                                       ("PHITUNE_WANDB_PROJECT", self.wandb_project, "wandb")):
            if not value:
                continue
            try:
                importlib.import_module(module)
            except ImportError:
                raise ValueError(f"{setting} is set but {module} is not installed: "
                                 f"pip install 'phitune[{module}]'") from None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'phitune.db').absolute()}"

    def resolved_api_token(self) -> str | None:
        """The API token, read from ``api_token_file`` when set (so a Kubernetes/compose secret
        can be mounted as a file). An empty or unreadable file is a startup error, not an
        open API."""
        if self.api_token_file is not None:
            try:
                token = self.api_token_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"api_token_file {self.api_token_file}: {exc.strerror}") from exc
            if not token:
                raise ValueError(f"api_token_file {self.api_token_file} is empty")
            return token
        if self.api_token is not None:
            token = self.api_token.get_secret_value().strip()
            if not token:
                raise ValueError("PHITUNE_API_TOKEN is set but empty")
            return token
        return None

    def check_exposure(self) -> str | None:
        """Refuse to serve an unauthenticated API on a non-loopback address: submitting a
        study starts processes on the cluster. Returns the token (None on loopback without
        one, which is the single-user development mode)."""
        token = self.resolved_api_token()
        if token is None and not _is_loopback(self.host):
            raise ValueError(
                f"host={self.host!r} is not loopback and no API token is configured; set "
                "PHITUNE_API_TOKEN or PHITUNE_API_TOKEN_FILE (or bind to 127.0.0.1)"
            )
        return token

    @property
    def datasets_path(self) -> Path:
        return (self.dataset_dir or self.data_dir / "data").absolute()

    @property
    def data_root_paths(self) -> tuple[str, ...]:
        """Where spec paths may point (``data_roots``, else the dataset dir), absolute."""
        parts = [p for p in (self.data_roots or "").split(os.pathsep) if p.strip()]
        return tuple(str(Path(p).absolute()) for p in parts) or (str(self.datasets_path),)

    @property
    def reads_need_token(self) -> bool:
        """GET routes need the token when one is set, unless ``read_auth`` is explicitly off."""
        return self.read_auth is not False

    @property
    def ray_results_path(self) -> Path:
        return (self.data_dir / "ray_results").absolute()

    @property
    def logs_path(self) -> Path:
        return (self.data_dir / "logs").absolute()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
