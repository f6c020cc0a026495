"""Service settings: ``PHENOPRINT_*`` environment variables read once per process through pydantic-settings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: A request body of 12 RxRx1 PNGs (512x512, 8-bit) is about 3 MB; the default leaves room for larger sites.
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024


class Settings(BaseSettings):
    """What ``phenoprint serve`` needs; each field is also read from ``PHENOPRINT_<FIELD>`` (e.g. ``PHENOPRINT_MODEL``).

    Tests build one directly and hand it to :func:`phenoprint.api.app.create_app`, or override
    :func:`get_settings` through ``app.dependency_overrides``.
    """

    model_config = SettingsConfigDict(env_prefix="PHENOPRINT_", extra="ignore", frozen=True)

    model: Path | None = Field(default=None, description="finished run directory (`phenoprint train --out`)")
    indexes: Path | None = Field(default=None, description="folder holding one index directory per experiment")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="where the embedder runs")
    host: str = Field(default="127.0.0.1", description="interface to bind (0.0.0.0 exposes the service to the network)")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port")
    api_key: SecretStr | None = Field(default=None, description="when set, every data endpoint needs it in X-API-Key")
    max_upload_bytes: int = Field(default=DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="largest request body accepted")
    max_image_pixels: int = Field(
        default=4096 * 4096, ge=1, description="largest channel image accepted (width x height)"
    )
    max_batch_wells: int = Field(default=16, ge=1, le=1024, description="wells embedded in one forward pass at most")
    batch_wait_ms: float = Field(
        default=2.0, ge=0, le=1000, description="how long a micro-batch waits for requests already being decoded"
    )
    reload_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="seconds between scans of the index folder for new or replaced indexes (0: never)",
    )
    torch_threads: int | None = Field(
        default=None, ge=1, le=1024, description="CPU threads of a forward pass (None: torch's default, one per core)"
    )
    tta: int | None = Field(
        default=None,
        ge=1,
        le=8,
        description="dihedral transforms averaged per site at inference; unset: each index's own, as onboarding "
        "embedded its wells (queries must be embedded the way the index was)",
    )
    classify_mode: Literal["knn", "centroid"] = Field(
        default="centroid",
        description="kNN vote or nearest centroid (the default: more accurate in every evaluation of BENCHMARKS.md)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="uvicorn log level"
    )

    @field_validator("api_key")
    @classmethod
    def _key_not_empty(cls, key: SecretStr | None) -> SecretStr | None:
        """An empty key would turn the check on with '' as the key, which an empty X-API-Key header matches."""
        if key is not None and not key.get_secret_value().strip():
            raise ValueError(
                "PHENOPRINT_API_KEY is empty: set a non-empty key to require X-API-Key, or unset the variable to serve "
                "without one"
            )
        return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once (override it in tests, not the environment)."""
    return Settings()
