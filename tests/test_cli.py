"""The console entry point: verbs, help, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from phenoprint.cli import build_parser, main


def test_every_verb_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Every verb of every commands module is listed with its one-line help, and its own --help explains every
    option (a verb registered without help, or an option without help text, fails)."""
    import argparse
    import importlib

    from phenoprint.cli import COMMAND_MODULES

    commands = [cmd for name in COMMAND_MODULES for cmd in importlib.import_module(name).COMMANDS]
    assert len(commands) >= 9
    parser = build_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--help"])
    assert info.value.code == 0
    listing = " ".join(capsys.readouterr().out.split())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for cmd in commands:
        assert cmd.help, cmd.name
        assert " ".join(cmd.help.split())[:40] in listing, cmd.name
        verb = sub.choices[cmd.name]
        undocumented = [a.dest for a in verb._actions if a.option_strings and not a.help and a.dest != "help"]
        assert undocumented == [], cmd.name
        with pytest.raises(SystemExit) as info:
            parser.parse_args([cmd.name, "--help"])
        assert info.value.code == 0
        assert (cmd.description or cmd.help).split()[0] in capsys.readouterr().out


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


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_help_lists_the_verbs_in_the_order_a_user_runs_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    order = ["synth", "preview", "pack", "train", "embed", "evaluate", "build-index", "index", "serve"]
    positions = [out.index(f"\n    {verb} ") for verb in order]
    assert positions == sorted(positions)
    assert "Start with `make demo`" in out


def test_no_help_shows_a_default_of_none_or_on_required_options() -> None:
    parser = build_parser()
    seen = 0
    for name, sub in _subparsers(parser):
        texts = [sub.format_help()] + [s.format_help() for _, s in _subparsers(sub)]
        for text in texts:
            seen += 1
            assert "(default: None)" not in text, name
            assert "(default: False)" not in text, name
    assert seen >= 10
    train_help = dict(_subparsers(parser))["train"].format_help()
    assert "(default: 20)" not in train_help  # defaults shown are the real ones
    assert "(default: resnet18)" in train_help


def test_options_are_not_taken_by_prefix_and_typos_get_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epoch", "2"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "phenoprint train: error: unrecognized arguments: --epoch 2 (--epoch: did you mean --epochs?)" in err
    with pytest.raises(SystemExit):
        main(["trian"])
    assert "did you mean 'train'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--embeddings", "x", "--center", "tvm"])
    assert "did you mean 'tvn'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index", "biuld"])
    assert "did you mean 'build'?" in capsys.readouterr().err


@pytest.mark.slow
def test_every_script_refuses_an_abbreviated_option() -> None:
    """`--hel` would be taken for `--help` (exit 0) with argparse's default prefix matching."""
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    scripts = sorted((PROJECT_ROOT / "scripts").glob("*.py"))
    assert len(scripts) >= 8
    for script in scripts:
        out = subprocess.run([sys.executable, str(script), "--hel"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, (script.name, out.stdout[-300:], out.stderr[-300:])
        assert "error:" in out.stderr, script.name
        assert "show this help message" not in out.stdout, script.name


def test_one_log_format_with_timestamps_for_every_logger() -> None:
    """uvicorn's loggers go through the same handler as phenoprint's (run in a fresh process: pytest owns the root
    handler here)."""
    import re
    import subprocess
    import sys

    code = (
        "import logging; from phenoprint.logs import setup_logging; setup_logging('warning'); "
        "logging.getLogger('uvicorn.error').warning('from uvicorn'); logging.getLogger('uvicorn.access').info('no'); "
        "logging.getLogger('phenoprint.x').warning('from phenoprint'); logging.getLogger('phenoprint.x').info('no')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    lines = out.stderr.strip().splitlines()
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d WARNING "
    assert len(lines) == 2, lines
    assert re.match(stamp + r"uvicorn\.error: from uvicorn$", lines[0])
    assert re.match(stamp + r"phenoprint\.x: from phenoprint$", lines[1])


def test_a_fallback_is_warned_once_per_process(monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import torch

    from phenoprint.embedder.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="phenoprint"):
        for _ in range(7):
            assert resolve_device("auto").type == "cpu"
    assert [r.getMessage() for r in caplog.records].count(
        "no CUDA device available: running on the CPU (slow beyond small images and models)"
    ) == 1
