"""The monitor's settings: one ``MONITOR_*`` variable each; ``.env`` is read too."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from scout.config import describe_validation_error
from scout.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GOLDEN_FILE = REPO_ROOT / "golden" / "questions.toml"


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MONITOR_", env_file=".env", extra="ignore"
    )

    home: Path = Field(Path("var"), description="data folder")
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL; default a SQLite file under home"
    )
    golden_file: Path = DEFAULT_GOLDEN_FILE
    subset_size: int = Field(5, ge=1)
    threshold: float = Field(0.70, ge=0.0, le=1.0)
    concurrency: int = Field(5, ge=1)
    question_timeout: float = Field(600.0, gt=0, description="seconds per question")
    judge: Literal["auto", "offline", "llm"] = "auto"
    judge_model: str | None = None
    rolling_window: int = Field(3, ge=1)
    webhook_url: SecretStr | None = None
    graph: str = Field(
        "scout.graph:build_graph",
        description="module:function that builds the graph to watch",
    )

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.home / 'monitor.db'}"


@lru_cache(maxsize=1)
def get_monitor_settings() -> MonitorSettings:
    """The process's settings; a bad value raises :class:`ConfigError`."""
    try:
        return MonitorSettings()
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, "MONITOR_")) from None
