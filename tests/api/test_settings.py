"""Settings come from PHENOPRINT_* variables, once per process; the key never shows in a repr."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from phenoprint.api.settings import Settings, get_settings


def test_environment_variables_with_the_prefix_fill_the_fields(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PHENOPRINT_MODEL", str(tmp_path / "run"))
    monkeypatch.setenv("PHENOPRINT_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("PHENOPRINT_API_KEY", "s3cret")
    monkeypatch.setenv("PHENOPRINT_RXRX1", "/elsewhere")  # other phenoprint variables are not settings
    settings = Settings()
    assert settings.model == tmp_path / "run"
    assert settings.max_upload_bytes == 1234
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.host == "127.0.0.1"  # loopback unless told otherwise
    assert Settings(max_upload_bytes=9).max_upload_bytes == 9  # arguments win over the environment


def test_bad_values_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("PHENOPRINT_PORT", "99999")
    with pytest.raises(ValidationError, match="port"):
        Settings()


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_api_key_is_refused(monkeypatch, key: str) -> None:
    monkeypatch.setenv("PHENOPRINT_API_KEY", key)
    with pytest.raises(ValidationError, match="PHENOPRINT_API_KEY is empty"):
        Settings()
    with pytest.raises(ValidationError, match="PHENOPRINT_API_KEY is empty"):
        Settings(api_key=key)


def test_get_settings_reads_the_environment_once(monkeypatch) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("PHENOPRINT_TTA", "2")
        first = get_settings()
        monkeypatch.setenv("PHENOPRINT_TTA", "3")
        assert get_settings() is first
        assert first.tta == 2
    finally:
        get_settings.cache_clear()
