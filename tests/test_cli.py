"""The console entry point: verbs, help, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from phenoprint.cli import build_parser, main


def test_every_verb_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--help"])
    assert info.value.code == 0
    assert "preview" in capsys.readouterr().out


def test_preview_writes_pngs(rxrx1_root: Path, tmp_path: Path) -> None:
    assert (
        main(["-q", "preview", str(rxrx1_root), "--out", str(tmp_path), "--experiment", "RPE-01", "--limit", "2"]) == 0
    )
    assert len(list(tmp_path.glob("RPE-01_*.png"))) == 2


def test_errors_become_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "phenoprint preview: error:" in err
    assert "metadata.csv" in err
    assert not (tmp_path / "o").exists()
