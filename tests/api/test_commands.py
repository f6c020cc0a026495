"""``phenoprint serve``: a cheap import, clear refusals, and one real uvicorn process queried over HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from phenoprint.cli import main
from tests.api.conftest import TARGET, Artifacts, b02_parts


def test_importing_the_verbs_stays_cheap() -> None:
    code = (
        "import sys, phenoprint.api.commands; "
        "print(sorted(m for m in ('torch', 'faiss', 'fastapi', 'uvicorn', 'pydantic_settings') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def clean_env(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("PHENOPRINT_") and name != "PHENOPRINT_RXRX1":
            monkeypatch.delenv(name)


def test_serve_without_a_model_says_what_to_pass(clean_env, capsys) -> None:
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "--model (or PHENOPRINT_MODEL) and --indexes (or PHENOPRINT_INDEXES)" in err


def test_serve_refuses_a_bad_run_and_bad_settings(clean_env, monkeypatch, capsys, tmp_path: Path) -> None:
    assert main(["serve", "--model", str(tmp_path), "--indexes", str(tmp_path)]) == 2
    assert "not a finished phenoprint run" in capsys.readouterr().err
    monkeypatch.setenv("PHENOPRINT_MAX_BATCH_WELLS", "0")
    assert main(["serve", "--model", str(tmp_path), "--indexes", str(tmp_path)]) == 2
    assert "invalid settings (max_batch_wells" in capsys.readouterr().err


@pytest.fixture
def tampered_run(artifacts: Artifacts, tmp_path: Path) -> Path:
    """The service's run with weights that no longer fit its config (one tensor of another shape)."""
    import shutil

    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(artifacts.run, run)
    tensors = load_file(str(run / "model.safetensors"))
    name = sorted(k for k, t in tensors.items() if t.ndim == 4)[0]
    tensors[name] = tensors[name][:1].contiguous()
    save_file(tensors, str(run / "model.safetensors"))
    return run


def test_serve_refuses_a_bad_model_folder_in_one_line_and_shows_the_traceback_with_v(
    clean_env, capsys, tampered_run: Path, artifacts: Artifacts
) -> None:
    """Such a folder used to pass the run.json check, then fail in uvicorn's lifespan: a traceback and exit code 3."""
    argv = ["serve", "--model", str(tampered_run), "--indexes", str(artifacts.indexes), "--port", str(_free_port())]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("phenoprint serve: error: ")
    assert "model.safetensors: weights do not fit the configured model" in err
    assert main(["-v", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("phenoprint serve: error: ")


def test_serve_refuses_an_empty_api_key_at_startup(clean_env, monkeypatch, capsys, artifacts: Artifacts) -> None:
    """An empty PHENOPRINT_API_KEY used to turn the check on with '' as the key: an empty header was accepted."""
    monkeypatch.setenv("PHENOPRINT_API_KEY", "")
    argv = ["serve", "--model", str(artifacts.run), "--indexes", str(artifacts.indexes), "--port", str(_free_port())]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "invalid settings (api_key" in err
    assert "PHENOPRINT_API_KEY is empty" in err


def test_serve_refuses_a_missing_or_wrong_index_folder_before_loading(
    artifacts: Artifacts, clean_env, capsys, tmp_path: Path
) -> None:
    run = str(artifacts.run)
    assert main(["serve", "--model", run, "--indexes", str(tmp_path / "nope")]) == 2
    assert f"error: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "reference.parquet").write_bytes(b"PAR1")
    assert main(["serve", "--model", run, "--indexes", str(tmp_path / "tables")]) == 2
    err = capsys.readouterr().err
    assert "holds 1 Parquet file(s)" in err
    assert "scripts/build_index.py --out" in err


def test_serve_checks_the_port_before_loading_anything(artifacts: Artifacts, clean_env, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.perf_counter()
        argv = ["serve", "--model", str(artifacts.run), "--indexes", str(artifacts.indexes), "--port", str(port)]
        assert main(argv) == 2
        seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert f"error: port {port} on 127.0.0.1 is already in use" in err
    assert "pass --port" in err
    assert seconds < 5  # refused before the model and the indexes are loaded


def test_a_settings_file_configures_serve_below_options_and_variables(
    artifacts: Artifacts, clean_env, monkeypatch, capsys, tmp_path: Path
) -> None:
    from phenoprint.api.settings import load_settings

    config = tmp_path / "conf" / "serve.toml"
    config.parent.mkdir()
    (tmp_path / "conf" / "indexes").symlink_to(artifacts.indexes, target_is_directory=True)
    config.write_text(f'model = "{artifacts.run}"\nindexes = "indexes"\nport = 9001\nmax_batch_wells = 4\n')
    settings = load_settings(config)
    assert settings.indexes == config.parent / "indexes"  # relative to the file
    assert (settings.port, settings.max_batch_wells) == (9001, 4)
    monkeypatch.setenv("PHENOPRINT_PORT", "9002")
    assert load_settings(config).port == 9002  # a variable wins over the file
    assert load_settings(config, port=9003).port == 9003  # and an option over both
    monkeypatch.setenv("PHENOPRINT_CONFIG", str(config))
    assert load_settings().max_batch_wells == 4  # the file named by the environment
    config.write_text("prot = 9000\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "unknown setting 'prot'; did you mean 'port'?" in capsys.readouterr().err
    config.write_text('api_key = "s3cret"\n')
    assert main(["serve", "--config", str(config)]) == 2
    assert "api_key is read from the environment only" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such settings file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["serve", "--log-level", "warning"], "warning"),
        (["-q", "serve"], "warning"),
        (["-vv", "serve"], "debug"),
        (["serve"], "info"),
    ],
)
def test_one_log_level_for_phenoprint_and_uvicorn(
    artifacts: Artifacts, clean_env, monkeypatch, argv: list[str], level: str
) -> None:
    """`serve --log-level` used to reach only uvicorn and `-q` only phenoprint; now either sets both, and uvicorn
    keeps no handler of its own (its lines go through phenoprint's, with timestamps)."""
    import logging

    import uvicorn

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    where = ["--model", str(artifacts.run), "--indexes", str(artifacts.indexes), "--port", str(_free_port())]
    assert main([*argv, *where]) == 0
    assert seen["log_level"] == level
    assert seen["log_config"] is None
    numeric = getattr(logging, level.upper())
    for name in ("phenoprint", "uvicorn", "uvicorn.error", "uvicorn.access"):
        assert logging.getLogger(name).getEffectiveLevel() == numeric, name
    assert not logging.getLogger("uvicorn.error").handlers
    assert logging.getLogger("uvicorn.access").propagate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(artifacts: Artifacts, clean_env, tmp_path: Path):
    """``phenoprint serve`` in its own process on a free localhost port; yields its base URL."""
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "PHENOPRINT_MAX_UPLOAD_BYTES": "100000"}
    cmd = [
        sys.executable,
        "-m",
        "phenoprint",
        "serve",
        "--model",
        str(artifacts.run),
        "--indexes",
        str(artifacts.indexes),
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "info",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"phenoprint serve exited with {proc.returncode}: {(tmp_path / 'serve.log').read_text()}"
                )
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("phenoprint serve did not become ready in 120 s")
            time.sleep(0.2)  # waiting for another process to start
        yield base, proc, tmp_path / "serve.log"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.mark.slow
def test_a_real_server_classifies_over_http_and_stops_cleanly(server, artifacts: Artifacts, client) -> None:
    base, proc, log = server
    files = b02_parts(artifacts.source)
    with httpx.Client(base_url=base, timeout=60) as http:
        r = http.post("/classify", files=files, data={"experiment": TARGET, "top_k": "3"})
        assert r.status_code == 200, r.text
        in_process = client.post("/classify", files=files, data={"experiment": TARGET, "top_k": "3"}).json()
        assert [p["sirna_id"] for p in r.json()["predictions"]] == [p["sirna_id"] for p in in_process["predictions"]]
        assert r.headers.get("server") is None

        big = [("files", (f"B02_s1_w{c}.png", b"\x89PNG" + b"\0" * 30_000, "image/png")) for c in range(1, 7)]
        r = http.post("/classify", files=big, data={"experiment": TARGET})
        assert r.status_code == 413
        assert "the limit is 100,000 bytes" in r.json()["detail"]

        head = b'--x\r\nContent-Disposition: form-data; name="files"; filename="B02_s1_w1.png"\r\n\r\n'
        body = head + b"\x89PNG" + b"\0" * 200_000 + b"\r\n--x--\r\n"  # valid multipart, over the limit

        def chunks():
            yield from (body[i : i + 10_000] for i in range(0, len(body), 10_000))

        r = http.post("/embed", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413
        health = http.get("/healthz").json()
        assert health["indexes"] == 2
        assert health["model_fingerprint"] == in_process["model_fingerprint"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    lines = log.read_text().splitlines()
    assert any(line.endswith("INFO uvicorn.error: Application shutdown complete.") for line in lines)
    # phenoprint's lines and uvicorn's share one format, with date and time (uvicorn's own has none)
    stamped = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
    logged = [line for line in lines if "uvicorn" in line or "phenoprint" in line]
    assert logged
    assert all(stamped.match(line) for line in logged), logged
    assert any(" uvicorn.access: " in line for line in lines)
    assert any(" phenoprint.api.state: " in line for line in lines)


def test_serve_refuses_a_missing_predictions_path_or_a_data_root_without_metadata(
    artifacts: Artifacts, clean_env, capsys, tmp_path: Path
) -> None:
    argv = ["serve", "--model", str(artifacts.run), "--indexes", str(artifacts.indexes)]
    assert main([*argv, "--predictions", str(tmp_path / "nope.parquet")]) == 2
    assert "--predictions" in capsys.readouterr().err
    assert main([*argv, "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--data" in err
    assert "no RxRx1 metadata" in err
