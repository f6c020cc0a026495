"""Starting and querying a local ``phenoprint serve``: what the demo, the benchmarks and the tests share.

A client of the HTTP service (it imports httpx, a runtime dependency) and a process launcher; nothing here is
imported by the service itself.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd


def port_is_free(port: int) -> bool:
    """Whether a TCP port can be bound on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(run: Path, indexes: Path, port: int, extra_args: Sequence[str] = ()) -> list[str]:
    """The argv of ``phenoprint serve`` on localhost in a child process of this Python (``[sys.executable, "-m",
    "phenoprint", "serve", …]``; ``argv[3:]`` is what a user types after ``phenoprint``)."""
    return [
        sys.executable,
        "-m",
        "phenoprint",
        "serve",
        "--model",
        str(run),
        "--indexes",
        str(indexes),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]


def start_server(
    run: Path,
    indexes: Path,
    port: int,
    log_path: Path,
    extra_args: tuple[str, ...] = (),
    timeout_s: float = 120.0,
) -> subprocess.Popen:
    """``phenoprint serve`` (with ``extra_args``) in a child process; returns once it answers /readyz with 200 and
    /healthz with this run's fingerprint (so another service that holds the port is never taken for it).

    Raises:
        RuntimeError: the server exits or is not ready within ``timeout_s`` (its log says why).
    """
    from phenoprint.embedder.checkpoint import read_run

    fingerprint = read_run(run)[1]["fingerprint"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = serve_command(run, indexes, port, extra_args)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API server exited with status {proc.returncode}; see {log_path}")
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200
            ours = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).json().get("model_fingerprint")
            if ready and ours == fingerprint:
                return proc
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"the API server was not ready within {timeout_s:.0f} s; see {log_path}")


def classify_over_http(port: int, root: Path, experiment: str, seed: int = 0) -> dict[str, Any]:
    """POST one held-out treatment well's PNGs to /classify; return the answer with the truth beside it."""
    from phenoprint.data.layout import RxRx1Layout, detect_layout, read_metadata

    meta = read_metadata(root)
    wells = meta[(meta.experiment == experiment) & (meta.well_type == "treatment")]
    row = wells.iloc[int(np.random.default_rng(seed).integers(len(wells)))]
    layout = detect_layout(root)
    if not isinstance(layout, RxRx1Layout):
        raise ValueError(f"{root}: the demo's HTTP query sends RxRx1 PNGs; this root is in the {layout.name} layout")
    files = []
    for site in sorted(
        meta[(meta.experiment == experiment) & (meta.well == row.well) & (meta.plate == row.plate)].site
    ):
        for ch in range(1, 7):
            path = layout.site_path(experiment, row.plate, row.well, site, ch)
            files.append(("files", (path.name, path.read_bytes(), "image/png")))
    data = {"experiment": experiment, "plate": str(row.plate), "well": row.well, "top_k": "5"}
    response = httpx.post(f"http://127.0.0.1:{port}/classify", data=data, files=files, timeout=60.0)
    response.raise_for_status()
    answer = response.json()
    answer["truth"] = {
        "experiment": experiment,
        "plate": int(row.plate),
        "well": row.well,
        "sirna_id": int(row.sirna_id),
        "sirna": str(row.sirna) if "sirna" in row.index and pd.notna(row.sirna) else None,
    }
    answer["image_folder"] = str(layout.site_path(experiment, row.plate, row.well, 1, 1).parent)
    answer["curl"] = (
        f"curl -s http://127.0.0.1:{port}/classify -F experiment={experiment} -F plate={row.plate} -F well={row.well} "
        "-F top_k=5 "
        + " ".join(
            f"-F files=@{layout.site_path(experiment, row.plate, row.well, name[1], name[2])}"
            for name in _site_channels(files)
        )
    )
    return answer


def _site_channels(files: list[tuple[str, tuple[str, bytes, str]]]) -> list[tuple[str, int, int]]:
    from phenoprint.data.layout import parse_image_name

    return [parse_image_name(name) for _, (name, _, _) in files]


def wait_for_interrupt(proc: subprocess.Popen) -> bool:
    """Block until the server exits or Ctrl-C; returns whether it was Ctrl-C."""
    try:
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return True
    return False


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started by :func:`start_server`: SIGINT (a clean shutdown), then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
