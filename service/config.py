"""Service settings: one ``BaseSettings`` with the ``PHITUNE_`` prefix, read at entry points only.

`tuning` and `trainables` never read the environment; the API, the driver and the CLI build a
``Settings`` and pass plain values down.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
    ray_auth_mode: str = Field(
        "auto", description="token | disabled | auto (token when a Ray auth token is available)"
    )
    ray_num_cpus: int | None = Field(None, description="CPUs of a local Ray (None = all)")
    ray_dashboard: bool = Field(True, description="start the dashboard with a local Ray")
    host: str = "127.0.0.1"
    port: int = 8000
    max_trials: int = Field(200, ge=1, description="cap on num_trials per budget")
    max_budget_steps: int = Field(10_000_000, ge=1)
    max_concurrent_studies: int = Field(4, ge=1)

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'phitune.db').absolute()}"

    @property
    def datasets_path(self) -> Path:
        return (self.dataset_dir or self.data_dir / "data").absolute()

    @property
    def ray_results_path(self) -> Path:
        return (self.data_dir / "ray_results").absolute()

    @property
    def logs_path(self) -> Path:
        return (self.data_dir / "logs").absolute()


@lru_cache
def get_settings() -> Settings:
    return Settings()
