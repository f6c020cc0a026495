"""Service settings: ``PHENOPRINT_*`` environment variables and a TOML file, read through pydantic-settings."""

from __future__ import annotations

import difflib
import os
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from phenoprint.embedder.config import DeviceName
from phenoprint.index.config import Mode

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: A request body of 12 RxRx1 PNGs (512x512, 8-bit) is about 3 MB; the default leaves room for larger sites.
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
#: The environment variable naming a TOML settings file (``phenoprint serve --config`` names one too).
CONFIG_ENV = "PHENOPRINT_CONFIG"
#: Fields a settings file may not hold: the API key stays in the environment, out of files that get copied around.
_ENV_ONLY = frozenset({"api_key"})
#: Path fields of a settings file, read relative to the file's folder.
_PATH_FIELDS = ("model", "indexes")

_config_values: ContextVar[dict[str, Any] | None] = ContextVar("phenoprint_settings_file", default=None)


class Settings(BaseSettings):
    """What ``phenoprint serve`` needs; each field is also read from ``PHENOPRINT_<FIELD>`` (e.g. ``PHENOPRINT_MODEL``)
    and, below those, from a TOML settings file (:func:`load_settings`).

    Tests build one directly and hand it to :func:`phenoprint.api.app.create_app`, or override
    :func:`get_settings` through ``app.dependency_overrides``.
    """

    model_config = SettingsConfigDict(env_prefix="PHENOPRINT_", extra="ignore", frozen=True)

    model: Path | None = Field(default=None, description="finished run directory (`phenoprint train --out`)")
    indexes: Path | None = Field(default=None, description="folder holding one index directory per experiment")
    device: DeviceName = Field(default="auto", description="where the embedder runs")
    host: str = Field(default="127.0.0.1", description="interface to bind (0.0.0.0 exposes the service to the network)")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port")
    api_key: SecretStr | None = Field(default=None, description="when set, every data endpoint needs it in X-API-Key")
    max_upload_bytes: int = Field(default=DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="largest request body accepted")
    max_image_pixels: int = Field(
        default=4096 * 4096, ge=1, description="largest channel image accepted (width x height)"
    )
    max_sites_per_well: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="sites one /classify or /embed request may send (models of RxRx1's channels: at most its 2)",
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
    classify_mode: Mode | None = Field(
        default=None,
        description="override the classification mode of every index (default: each index's own, recorded when it "
        "was built, e.g. chosen by --mode auto on the batch's controls)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="log level of the service (phenoprint's and uvicorn's lines alike)"
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then ``PHENOPRINT_*`` variables, then the settings file :func:`load_settings` read."""
        values = _config_values.get()
        if values is None:
            return init_settings, env_settings, dotenv_settings, file_secret_settings
        from_file = InitSettingsSource(settings_cls, values)
        return init_settings, env_settings, from_file, dotenv_settings, file_secret_settings


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The fields of a TOML settings file (top-level keys named like the fields, ``model`` and ``indexes`` relative
    to the file's folder).

    Raises:
        ValueError: a missing or unreadable file, an unknown key (with the closest field), or the API key.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such settings file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: not a readable TOML file ({exc})") from exc
    fields = sorted(set(Settings.model_fields) - _ENV_ONLY)
    for key in data:
        if key in _ENV_ONLY:
            raise ValueError(f"{path}: {key} is read from the environment only (PHENOPRINT_{key.upper()}), not a file")
        if key not in Settings.model_fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{path}: unknown setting {key!r}; {hint}known: {', '.join(fields)}")
    for key in _PATH_FIELDS:
        if isinstance(data.get(key), str):
            data[key] = str(path.parent / Path(data[key]).expanduser())
    return data


def load_settings(config_file: str | Path | None = None, **values: Any) -> Settings:
    """Settings from, by precedence: ``values`` (the command line), ``PHENOPRINT_*`` variables, the TOML file
    ``config_file`` (default: the one ``$PHENOPRINT_CONFIG`` names, if any), the defaults.

    Raises:
        ValueError: the settings file is missing, unreadable, or holds an unknown key.
        pydantic.ValidationError: a value out of range.
    """
    path = config_file if config_file is not None else os.environ.get(CONFIG_ENV) or None
    token = _config_values.set(None if path is None else read_settings_file(path))
    try:
        return Settings(**values)
    finally:
        _config_values.reset(token)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment (and ``$PHENOPRINT_CONFIG``) once; override it in tests."""
    return load_settings()
