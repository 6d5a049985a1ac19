"""The monitor's settings: one ``MONITOR_*`` variable each; ``.env`` is read too."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from scout.config import describe_settings_error, describe_validation_error
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

    # Alert rules and sinks (monitor/alerts/). The defaults of the two
    # confidence settings and of baseline_runs are chosen by the alarm-quality
    # simulation in monitor/alerts/simulate.py (figures in its docstring).
    quality_confidence: float = Field(
        0.90, gt=0.5, lt=1.0, description="one-sided confidence before paging"
    )
    quality_spread_runs: int = Field(
        10, ge=2, description="runs whose per-question spread gives the SE"
    )
    version_key: Literal["prompt_version", "model", "git_sha"] = "prompt_version"
    baseline_runs: int = Field(5, ge=1, description="previous version's runs")
    regression_min_runs: int = Field(
        3, ge=1, description="runs of the new version before it is compared"
    )
    regression_margin: float = Field(0.05, ge=0.0, le=1.0)
    regression_confidence: float = Field(0.95, gt=0.5, lt=1.0)
    max_tokens: int | None = Field(None, ge=1, description="tokens per pass")
    max_cost: float | None = Field(None, gt=0, description="cost per pass")
    max_p95: float | None = Field(None, gt=0, description="seconds per question")
    latency_runs: int = Field(10, ge=1, description="runs in the p95 window")
    min_success_rate: float = Field(1.0, ge=0.0, le=1.0)
    alert_cooldown: float = Field(
        86400.0, gt=0, description="seconds (or 24h, 30m) before a reminder"
    )
    webhook_timeout: float = Field(10.0, gt=0, description="seconds per attempt")
    webhook_attempts: int = Field(3, ge=1, description="tries per pass")

    @field_validator("alert_cooldown", mode="before")
    @classmethod
    def _parse_cooldown(cls, value: object) -> object:
        """Accept a duration such as 24h or 1h30m as well as seconds."""
        if isinstance(value, str) and not value.strip().replace(".", "").isdigit():
            from monitor.durations import parse_duration

            return parse_duration(value, option="MONITOR_ALERT_COOLDOWN")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        """An http(s) URL with a host, or empty (no webhook). The message leaves
        the URL out: it is a secret."""
        url = "" if value is None else value.get_secret_value().strip()
        if not url:
            return value
        try:
            parts = urlsplit(url)
            scheme, host = parts.scheme.lower(), parts.hostname
        except ValueError:  # a malformed host, such as an unclosed [
            scheme, host = "", None
        if scheme not in ("http", "https") or not host:
            raise ValueError(
                "use an http:// or https:// URL with a host (the value is not "
                "shown: it is a secret)"
            )
        return value

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
    except SettingsError as error:
        raise ConfigError(describe_settings_error(error, "MONITOR_")) from None
