"""Scout's settings, prompt version and illustrative model prices.

Every setting is one environment variable under the ``SCOUT_`` prefix (a ``.env``
file in the working directory is read too). ``NVIDIA_API_KEY`` is accepted as the
key when ``SCOUT_API_KEY`` is not set, since NVIDIA NIM is the default endpoint,
and ``TAVILY_API_KEY`` likewise when ``SCOUT_TAVILY_API_KEY`` is not set.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from scout.errors import ConfigError

# Bump whenever any text under scout/prompts/ changes: scout/prompts/versions.json
# records the hash of every version and tests/scout/test_prompts.py fails on an
# edit that has no new version.
PROMPT_VERSION = "v1"

OFFLINE_MODEL_NAME = "offline/extractive-1"

# Usage rows of calls to a source rather than a model (the searcher's queries)
# name the source with this prefix, so every node that ran shows in the cost table.
SOURCE_CALL_PREFIX = "source:"

# Illustrative prices in US dollars per million tokens (input, output). They are
# not quotes from any provider: set SCOUT_MODEL_PRICES to your contract's figures.
MODEL_PRICES: dict[str, tuple[float, float]] = {
    "nvidia/nemotron-3-nano-30b-a3b": (0.06, 0.24),
    "meta/llama-3.3-70b-instruct": (0.60, 0.60),
    "openai/gpt-oss-120b": (0.15, 0.60),
    OFFLINE_MODEL_NAME: (0.0, 0.0),
}

DEFAULT_BASE_URL = "https://integrate.api.nvidia.com/v1"
DEFAULT_MODEL = "nvidia/nemotron-3-nano-30b-a3b"
DEFAULT_TAVILY_URL = "https://api.tavily.com/search"
DEFAULT_USER_AGENT = "scout-monitor/0.1 (Scout research agent; web reader)"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scout"


class ScoutSettings(BaseSettings):
    """The agent's configuration, read from ``SCOUT_*`` variables and ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="SCOUT_", env_file=".env", extra="ignore", populate_by_name=True
    )

    backend: Literal["auto", "chat", "offline"] = "auto"
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    api_key: SecretStr | None = None
    timeout: float = Field(60.0, gt=0, description="seconds per model call")
    max_retries: int = Field(3, ge=0)
    rate_limit_rpm: float = Field(40.0, gt=0)
    json_mode: bool = Field(True, description="endpoint honours response_format")
    stream: bool = False
    stream_usage: bool = Field(True, description="endpoint supports include_usage")
    max_tokens: int = Field(1024, gt=0, description="completion cap per call")

    corpus_dir: Path | None = None
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    sources: Literal["local", "web", "snapshot"] = "local"

    max_worker_turns: int = Field(8, ge=1)
    max_pages: int = Field(6, ge=1)
    recursion_limit: int = Field(60, ge=5)
    usage_log: Path = Path("runs/last_run.jsonl")
    model_prices: dict[str, tuple[float, float]] = Field(default_factory=dict)

    # The web source (SCOUT_SOURCES=web) and source snapshots.
    web_search: Literal["auto", "searxng", "tavily"] = Field(
        "auto", description="search API; auto: SearXNG if its URL is set, else Tavily"
    )
    searxng_url: str | None = Field(None, description="SearXNG instance (JSON API)")
    tavily_api_key: SecretStr | None = None
    tavily_url: str = DEFAULT_TAVILY_URL
    fetch_timeout: float = Field(15.0, gt=0, description="seconds per page fetch")
    max_page_bytes: int = Field(5_000_000, gt=0, description="page size cap")
    user_agent: str = DEFAULT_USER_AGENT
    snapshot_id: int | None = Field(
        None, ge=1, description="snapshot to replay; default the newest"
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _fall_back_to_nvidia_key(cls, value: object) -> object:
        if value in (None, ""):
            return os.environ.get("NVIDIA_API_KEY") or None
        return value

    @field_validator("tavily_api_key", mode="before")
    @classmethod
    def _fall_back_to_tavily_key(cls, value: object) -> object:
        if value in (None, ""):
            return os.environ.get("TAVILY_API_KEY") or None
        return value

    @property
    def uses_offline_model(self) -> bool:
        if self.backend == "offline":
            return True
        return self.backend == "auto" and self.api_key is None

    @property
    def model_name(self) -> str:
        """The model as configured, as every run and usage row records it."""
        return OFFLINE_MODEL_NAME if self.uses_offline_model else self.model

    def price_of(self, model: str) -> tuple[float, float] | None:
        """Illustrative (input, output) dollars per million tokens, if known.
        A source call (``source:<name>``, a search) uses no tokens and is free."""
        if model.startswith(SOURCE_CALL_PREFIX):
            return (0.0, 0.0)
        prices = {**MODEL_PRICES, **self.model_prices}
        return prices.get(model)


def describe_validation_error(error: ValidationError, prefix: str) -> str:
    """One line naming each bad setting by its environment variable."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "?"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{prefix}{field.upper()}: {message}")
    return "invalid setting " + "; ".join(problems)


def describe_settings_error(error: SettingsError, prefix: str) -> str:
    """One line for a value that could not even be parsed (a JSON setting that is
    not JSON); the value itself is not repeated, it may hold a secret."""
    found = re.search(r'field "([a-z_]+)"', str(error))
    name = f"{prefix}{found.group(1).upper()}" if found else f"a {prefix}* variable"
    return f"invalid setting {name}: it is not valid JSON"


@lru_cache(maxsize=1)
def get_settings() -> ScoutSettings:
    """The process's settings; a bad value raises :class:`ConfigError`."""
    try:
        return ScoutSettings()
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, "SCOUT_")) from None
    except SettingsError as error:
        raise ConfigError(describe_settings_error(error, "SCOUT_")) from None
