#!/usr/bin/env python
"""Attack phenoprint as a hostile client and a crashing machine would, and count what gets through.

Builds its own artifacts in a temporary folder (the ``tiny`` synthetic preset, a small resnet10t trained on its
training experiments, the held-out experiments onboarded from their controls) and starts a real ``phenoprint
serve`` on them. Then, in one run:

* **schemathesis** on every operation of the live server's OpenAPI schema, ``--examples`` cases per operation and
  generation mode (positive, and negative for operations with inputs; an operation without inputs has one case,
  sent ``--examples`` times): cases, 5xx answers, other contract failures;
* a **bad-upload corpus** (chunk-order PNGs, decompression bombs, truncated and malformed PNGs, bad names and
  parts, malformed multipart, over-size bodies, an unauthenticated upload to a keyed server): 5xx, connection
  errors, and answers that are not the clear 4xx expected (wrong status, or a message that does not name the file
  or part, or that leaks internals);
* the server's **memory peak** (RSS high-water mark, reset before each request through ``/proc/PID/clear_refs``)
  for every corpus request, against the peak for one well of 12 PNGs at the allowed size (``max_image_pixels``);
* **tampered index folders** (files swapped, statistics of the wrong shape or non-finite, entries of the wrong
  type, manifests edited) loaded by the service's own registry and model checks: tamperings accepted;
* **tampered model folders** (another run's weights, NaN weights, damaged JSON …) loaded by ``load_model`` and by
  ``phenoprint serve``: tamperings accepted, and refusals that are not one clear line with exit status 2;
* **SIGKILL** of ``scripts/build_index.py``, ``phenoprint train`` (fresh and extending a finished run),
  ``phenoprint pack --workers 2`` (through :func:`phenoprint.data.pack.pack` with small chunks) and ``phenoprint
  embed`` at random moments, each followed by a rerun: artifacts corrupt after the kill, reruns that fail or whose
  result differs from an uninterrupted run, and temporary files left after the rerun.

Writes one JSON file (and a log beside it); exits 1 when any count that should be 0 is not.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from phenoprint import launch
from phenoprint.cli import ArgumentParser
from phenoprint.launch import free_port

log = logging.getLogger("attack_service")

Parts = list[tuple[str, tuple[str, bytes, str]]]
#: Words in an answer that mean the client was shown internals instead of what to send.
UNCLEAR = ("BytesIO", "Expected UploadFile", "Invalid multipart data", "There was an error parsing", "Traceback")
#: Hidden names a writer uses while writing (what a kill can leave behind).
TEMPORARY = re.compile(r"^\..+(\.tmp|\.tmp-\w+|\.old-\w+)$|^\.step-\d{8}\.\w+$")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)  # the project's parser: no prefix matching
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/attack_service.json"), help="JSON result file")
    p.add_argument("--work", type=Path, default=None, help="folder for the artifacts (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the training runs and the kill moments")
    p.add_argument("--image-size", type=int, default=256, help="side of the synthetic channel PNGs, in pixels")
    p.add_argument("--model-size", type=int, default=32, help="input side of the model (images are resized to it)")
    p.add_argument("--examples", type=int, default=200, help="schemathesis cases per operation and generation mode")
    p.add_argument("--kills", type=int, default=5, help="SIGKILLs per job (build_index, train, pack, embed)")
    p.add_argument("--max-image-pixels", type=int, default=4096 * 4096, help="the server's PHENOPRINT_MAX_IMAGE_PIXELS")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("schemathesis", "corpus", "index", "model", "kills"),
        help="leave out a part of the attack (repeatable)",
    )
    return p.parse_args(argv)


# -- fixture ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fixture:
    """What the attack runs on."""

    data: Path  # the synthetic data root
    run: Path  # a finished training run
    reference: Path  # embeddings of the training experiments
    indexes: Path  # one index per held-out experiment
    adapted: str  # the held-out experiment onboarded with batch-norm adaptation (its index has producer.npz)
    plain: str  # the other held-out experiment, onboarded without
    train_args: tuple[str, ...]  # `phenoprint train` options that made a run like `run`


def build_fixture(work: Path, seed: int, image_size: int, model_size: int) -> Fixture:
    """Synthesize the tiny preset, train on its training experiments, onboard the held-out ones from their controls."""
    from phenoprint.data.source import PngSource
    from phenoprint.data.synth import preset_config, synthesize
    from phenoprint.embedder.export import export_embeddings, select_wells
    from phenoprint.embedder.inference import load_model
    from phenoprint.index.config import IndexConfig
    from phenoprint.onboard import onboard_experiment

    data = work / "data"
    synthesize(preset_config("tiny", seed=seed, image_size=image_size), data, workers=2, progress=False)  # resumable
    source = PngSource(data)
    meta = source.metadata
    held_out = sorted(meta.loc[meta.dataset == "test", "experiment"].unique())
    train_exps = tuple(sorted(set(meta.experiment) - set(held_out)))
    classes = int(meta.sirna_id.max()) + 1
    # the CLI's own options, so that the kill jobs can resume and extend this very run
    train_args = (
        "--data", str(data), "--backbone", "resnet10t", "--embedding-dim", "32", "--num-classes", str(classes),
        "--image-size", str(model_size), "--epochs", "8", "--max-steps", "16", "--batch-size", "16", "--workers", "0",
        "--device", "cpu", "--holdout", ",".join(held_out), "--checkpoint-every", "2", "--val-every", "1000",
        "--seed", str(seed),
    )  # fmt: skip
    run = work / "run"
    if not (run / "run.json").is_file():  # a --work folder of an earlier attack is reused
        cmd = [sys.executable, "-m", "phenoprint", "-q", "train", *train_args, "--out", str(run)]
        with open(work / "train.log", "ab") as fh:
            subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, timeout=1800)
    model = load_model(run, "cpu")
    reference = work / "reference.parquet"
    export_embeddings(model, source, reference, wells=select_wells(meta, train_exps), progress=False)
    indexes = work / "indexes"
    adapted, plain = held_out[0], held_out[1]
    onboard_experiment(
        model,
        source,
        adapted,
        reference,
        indexes / adapted,
        IndexConfig(center="tvn", mode="centroid"),
        bn_adapt=True,
        progress=False,
    )
    onboard_experiment(
        model, source, plain, reference, indexes / plain, IndexConfig(center="center", mode="centroid"), progress=False
    )
    return Fixture(data, run, reference, indexes, adapted, plain, train_args)


# -- the server -------------------------------------------------------------------------------------------------------


def serve_command(run: Path, indexes: Path, port: int) -> list[str]:
    return launch.serve_command(run, indexes, port, ("--device", "cpu", "--log-level", "warning"))


def start_server(
    run: Path, indexes: Path, log_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """``phenoprint serve`` in a child process; returns it and its base URL once /readyz answers 200."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PHENOPRINT_")}
    environment.update(env or {})
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(serve_command(run, indexes, port), stdout=fh, stderr=subprocess.STDOUT, env=environment)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"phenoprint serve exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)  # another process starting
    proc.kill()
    raise RuntimeError(f"phenoprint serve was not ready within 300 s; see {log_path}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PeakRss:
    """The peak resident memory of a process between :meth:`reset` and :meth:`read` (Linux: VmHWM, reset by writing
    5 to /proc/PID/clear_refs)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status(self, field: str) -> float:
        text = Path(f"/proc/{self.pid}/status").read_text()
        m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        assert m is not None, f"no {field} in /proc/{self.pid}/status"
        return int(m.group(1)) / 1024

    def reset(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def current_mb(self) -> float:
        return self._status("VmRSS")

    def read_mb(self) -> float:
        return self._status("VmHWM")


# -- schemathesis -----------------------------------------------------------------------------------------------------


def run_schemathesis(base: str, examples: int, seed: int) -> dict[str, Any]:
    """Every operation, ``examples`` cases per generation mode; counts cases, 5xx and other check failures."""
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    per_operation: dict[str, dict[str, Any]] = {}
    failures: list[str] = []

    def send(case: Any, stats: dict[str, Any], name: str) -> None:
        stats["cases"] += 1
        try:
            response = case.call(timeout=120)
        except Exception as exc:  # a dropped connection is as bad as a 5xx
            stats["server_errors"] += 1
            failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            return
        code = str(response.status_code)
        stats["statuses"][code] = stats["statuses"].get(code, 0) + 1
        if response.status_code >= 500:
            stats["server_errors"] += 1
            failures.append(f"{name}: {response.status_code} {response.text[:200]}")
        try:
            case.validate_response(response, excluded_checks=[positive_data_acceptance])
        except Exception as exc:  # schemathesis raises a group of the checks that failed
            stats["check_failures"] += 1
            failures.append(f"{name}: {str(exc)[:300]}")

    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        stats = per_operation.setdefault(name, {"cases": 0, "server_errors": 0, "check_failures": 0, "statuses": {}})
        has_inputs = bool(list(operation.iter_parameters())) or operation.body
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_inputs else [GenerationMode.POSITIVE]
        for mode in modes:
            try:
                seen = _draw(operation, mode, examples, seed, lambda c, stats=stats, name=name: send(c, stats, name))
            except Unsatisfiable:  # e.g. a free-text path parameter: no request violates its schema
                stats.setdefault("modes_without_cases", []).append(mode.value)
                continue
            if not has_inputs:  # one distinct case: sent as many times as the others get cases
                for _ in range(examples - len(seen)):
                    send(seen[0], stats, name)
    total = {k: sum(s[k] for s in per_operation.values()) for k in ("cases", "server_errors", "check_failures")}
    return {**total, "operations": per_operation, "first_failures": failures[:20]}


def _draw(operation: Any, mode: Any, examples: int, seed: int, send: Callable[[Any], None]) -> list[Any]:
    """Draw up to ``examples`` cases of one operation in one generation mode (seeded), sending each; returns them."""
    from hypothesis import HealthCheck, given
    from hypothesis import seed as hypothesis_seed
    from hypothesis import settings as hypothesis_settings

    seen: list[Any] = []

    @hypothesis_seed(seed)
    @given(case=operation.as_strategy(mode))
    @hypothesis_settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def draw(case: Any) -> None:
        seen.append(case)
        send(case)

    draw()
    return seen


# -- crafted PNGs -----------------------------------------------------------------------------------------------------

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def ihdr(width: int, height: int, bit_depth: int = 8, color_type: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))


def png(plane: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(plane).save(buffer, format="PNG")
    return buffer.getvalue()


def zero_stream(width: int, height: int) -> bytes:
    """The zlib stream of an all-black 8-bit grayscale image (filter byte + zeros per row), compressed as it goes."""
    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    out = [z.compress(row) for _ in range(height)]
    out.append(z.flush())
    return b"".join(out)


def bomb(width: int, height: int, *, before: bytes = b"", after_header: bytes = b"", stream: bytes | None = None):
    """A valid PNG of a black width x height image: tiny on the wire, huge once decoded."""
    data = zero_stream(width, height) if stream is None else stream
    return SIGNATURE + before + ihdr(width, height) + after_header + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def with_chunks(data: bytes, before: bytes = b"", after_header: bytes = b"") -> bytes:
    return data[:8] + before + data[8:33] + after_header + data[33:]


# -- the bad-upload corpus --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One request of the corpus and what a clear answer to it is."""

    name: str
    path: str
    expect: tuple[int, ...]  # statuses that are a right answer
    words: tuple[str, ...] = ()  # what the message must say (the file or part it is about, what to send)
    parts: Parts | None = None
    data: dict[str, str] | None = None
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] | None = None
    raw: bytes | None = None  # sent as is on a socket: a request head and the start of its body


def well_files(data_root: Path, experiment: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The 12 release-named PNGs of the first treatment well of an experiment."""
    from phenoprint.data.layout import CHANNELS, detect_layout, read_metadata

    layout = detect_layout(data_root)
    meta = read_metadata(data_root)
    row = meta[(meta.experiment == experiment) & (meta.well_type == "treatment")].iloc[0]
    files = []
    for site in (1, 2):
        for c in CHANNELS:
            path = layout.site_path(experiment, int(row.plate), str(row.well), site, c)
            files.append((path.name, path.read_bytes()))
    return str(row.well), files


def as_parts(files: list[tuple[str, bytes]]) -> Parts:
    return [("files", (name, data, "image/png")) for name, data in files]


def replaced(files: list[tuple[str, bytes]], i: int, data: bytes | None = None, name: str | None = None):
    out = list(files)
    out[i] = (name or out[i][0], out[i][1] if data is None else data)
    return out


def allowed_well(max_pixels: int) -> list[tuple[str, bytes]]:
    """12 PNGs of one well, each at the allowed size (a gradient: small on the wire, full size once decoded)."""
    side = math.isqrt(max_pixels)
    plane = (np.add.outer(np.arange(side), np.arange(side)) % 256).astype(np.uint8)
    data = png(plane)
    return [(f"B02_s{s}_w{c}.png", data) for s in (1, 2) for c in range(1, 7)]


def corpus(well: str, files: list[tuple[str, bytes]], experiment: str, max_pixels: int) -> list[Case]:
    """The bad uploads, each sent to /classify (and the file-level ones to /embed and /preview as well)."""
    first = files[0][0]
    side = int(struct.unpack(">I", files[0][1][16:20])[0])  # the well's own size: only the fault differs
    big = int(math.isqrt(max_pixels) * 2.2)  # declared side over the limit
    stream9k = zero_stream(9000, 9000)
    comment = chunk(b"tEXt", b"Comment\x00hello")
    header_only = SIGNATURE + ihdr(side, side)
    rgb = png(np.zeros((side, side, 3), dtype=np.uint8))
    sixteen = png(np.zeros((side, side), dtype=np.uint16))
    garbage = SIGNATURE + ihdr(side, side) + chunk(b"IDAT", b"\x01" * 500) + chunk(b"IEND", b"")
    past_the_end = SIGNATURE + ihdr(side, side) + struct.pack(">I", 2**31) + b"IDAT"
    planes = {
        "chunk before IHDR, declaring 9000x9000": (bomb(9000, 9000, before=comment, stream=stream9k), ("IHDR",)),
        "small IHDR then a 9000x9000 one": (bomb(9000, 9000, before=ihdr(64, 64), stream=stream9k), ("IHDR",)),
        "chunk before IHDR of a normal image": (with_chunks(files[0][1], before=comment), ("IHDR",)),
        "second IHDR of the same size": (with_chunks(files[0][1], after_header=files[0][1][8:33]), ("header",)),
        "decompression bomb 9000x9000": (bomb(9000, 9000, stream=stream9k), ("pixel limit",)),
        "decompression bomb 20000x20000 (PIL's own bomb error)": (bomb(20000, 20000), ("pixels",)),
        f"declared {big}x{big}, just over the limit": (bomb(big, big), ("pixel limit",)),
        "65535x1 strip": (bomb(65535, 1), ("pixels",)),
        "signature only": (SIGNATURE, ("signature",)),
        "header only": (header_only, ("image data",)),
        "zero width": (bomb(0, 64), ("0x64",)),
        "zero height": (bomb(64, 0), ("64x0",)),
        "1x1 image": (png(np.full((1, 1), 7, np.uint8)), ("at least 8x8",)),
        "7x7 image": (png(np.full((7, 7), 7, np.uint8)), ("at least 8x8",)),
        "truncated in its image data": (files[0][1][: len(files[0][1]) // 2], ("truncated",)),
        "bad CRC in IHDR": (files[0][1][:29] + b"\0\0\0\0" + files[0][1][33:], ("corrupt",)),
        "garbage image data": (garbage, ("corrupt",)),
        "chunk length past the end": (past_the_end, ("truncated",)),
        "2000 chunks before the image data": (with_chunks(files[0][1], after_header=comment * 2000), ("chunks",)),
        "RGB PNG": (rgb, ("mode 'RGB'",)),
        "16-bit PNG": (sixteen, ("grayscale",)),
        "empty file": (b"", ("empty",)),
    }
    cases: list[Case] = []
    for label, (plane, words) in planes.items():
        for path in ("/classify", "/embed", "/preview"):
            parts = as_parts(replaced(files, 0, plane))
            if path == "/preview":
                parts = parts[:6]
            cases.append(Case(f"{label} {path}", path, (422,), (first, *words), parts, {"experiment": experiment}))
    every_file_bomb = [(n, bomb(9000, 9000, stream=stream9k)) for n, _ in files]
    every_file_hidden = [(n, bomb(9000, 9000, before=comment, stream=stream9k)) for n, _ in files]
    cases += [
        Case("12 x 9000x9000 behind a chunk before IHDR (the 46 s, +3 GB request)", "/classify", (422,),
             (first, "IHDR"), as_parts(every_file_hidden), {"experiment": experiment}),
        Case("12 x 9000x9000 declared (0.95 MB body)", "/classify", (422,), (first, "pixel limit"),
             as_parts(every_file_bomb), {"experiment": experiment}),
        Case("not a PNG (JPEG bytes)", "/classify", (415,), (first, "not a PNG"),
             as_parts(replaced(files, 0, b"\xff\xd8\xff\xe0" + b"\0" * 100)), {"experiment": experiment}),
        Case("a text part without a file name", "/classify", (422,), ("part 1", "file name", "-F files=@"),
             as_parts(files), {"experiment": experiment, "files": "not a file"}),
        Case("a 5,000-character file name", "/classify", (400, 422), ("file name", "B02_s1_w1.png"),
             as_parts(replaced(files, 0, name="x" * 5000 + "_s1_w1.png")), {"experiment": experiment}),
        Case("a 300-character file name", "/classify", (422,), ("300", "characters"),
             as_parts(replaced(files, 0, name="x" * 290 + "_s1_w1.png")), {"experiment": experiment}),
        Case("a file name without site and channel", "/classify", (422,), ("photo.png", "B02_s1_w1.png"),
             as_parts(replaced(files, 0, name="photo.png")), {"experiment": experiment}),
        Case("channel w7", "/classify", (422,), ("w7",), as_parts(replaced(files, 0, name=f"{well}_s1_w7.png")),
             {"experiment": experiment}),
        Case("site 3", "/classify", (422,), ("s3",), as_parts(replaced(files, 0, name=f"{well}_s3_w1.png")),
             {"experiment": experiment}),
        Case("a channel missing", "/classify", (422,), ("w6 missing",), as_parts(files[:5]),
             {"experiment": experiment}),
        Case("a channel twice", "/classify", (422,), ("sent twice",), as_parts(replaced(files, 1, name=first)),
             {"experiment": experiment}),
        Case("13 files", "/classify", (422,), ("13 files",), as_parts([*files, files[0]]), {"experiment": experiment}),
        Case("files of two wells", "/classify", (422,), ("one well per request",),
             as_parts(replaced(files, 7, name="P24_s2_w2.png")), {"experiment": experiment}),
        Case("channels of different sizes", "/classify", (422,), ("differs from",),
             as_parts(replaced(files, 3, png(np.zeros((40, 40), np.uint8)))), {"experiment": experiment}),
        Case("sites of different sizes", "/classify", (422,), ("both sites",),
             as_parts(files[:6] + [(n, png(np.zeros((40, 40), np.uint8))) for n, _ in files[6:]]),
             {"experiment": experiment}),
        Case("no files", "/classify", (422,), ("no files were sent",), None, {"experiment": experiment}),
        Case("unknown experiment", "/classify", (404,), ("unknown experiment", "NOPE-01"), as_parts(files),
             {"experiment": "NOPE-01"}),
        Case("top_k 0", "/classify", (422,), ("top_k",), as_parts(files), {"experiment": experiment, "top_k": "0"}),
        Case("plate text", "/classify", (422,), ("plate",), as_parts(files), {"experiment": experiment, "plate": "x"}),
        Case("not multipart (JSON)", "/classify", (422,), ("files",), None, None, b'{"experiment": "x"}',
             {"content-type": "application/json"}),
        Case("multipart without a boundary", "/classify", (400, 422), ("boundary",), None, None, b"--x\r\n",
             {"content-type": "multipart/form-data"}),
        Case("truncated multipart body", "/classify", (400, 422), ("files",), None, None,
             b'--x\r\nContent-Disposition: form-data; name="files"; filename="B02_s1_w1.png"\r\n\r\n\x89PNG',
             {"content-type": "multipart/form-data; boundary=x"}),
        Case("Content-Length over the limit (64 MiB declared)", "/classify", (413,), ("limit",), raw=(
             b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
             b"Content-Length: 67108864\r\n\r\n" + b"\0" * 65536)),
        Case("chunked body over the limit", "/embed", (413,), ("limit",), None, None, _endless_body,
             {"content-type": "multipart/form-data; boundary=x"}),
    ]  # fmt: skip
    return cases


def _endless_body() -> Iterator[bytes]:
    yield b'--x\r\nContent-Disposition: form-data; name="files"; filename="B02_s1_w1.png"\r\n\r\n\x89PNG'
    for _ in range(40):  # 40 MiB, over the 32 MiB default
        yield b"\0" * (1 << 20)


def send_case(client: httpx.Client, case: Case) -> tuple[int | None, str]:
    """Send one case; (status, body), or (None, what went wrong) when no answer came."""
    try:
        if case.raw is not None:
            return _send_raw(str(client.base_url), case.raw)
        if case.content is not None:
            body = case.content() if callable(case.content) else case.content
            r = client.post(case.path, content=body, headers=case.headers)
        else:
            r = client.post(case.path, files=case.parts, data=case.data)
    except (httpx.HTTPError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return r.status_code, r.text


def _send_raw(base: str, request: bytes) -> tuple[int | None, str]:
    """Send bytes on a fresh connection and read the answer the server gives without waiting for the rest."""
    host, port = base.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.find(b"\r\n\r\n") + 4 + _length(answer):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return None, f"no HTTP answer ({answer[:100]!r})"
    return int(head.split(b" ", 2)[1]), body.decode(errors="replace")


def _length(answer: bytes) -> int:
    m = re.search(rb"(?im)^content-length:\s*(\d+)", answer)
    return int(m.group(1)) if m else 0


def clear(case: Case, status: int | None, text: str) -> bool:
    """The answer is the expected 4xx, says what the case needs it to say, and leaks nothing."""
    if status not in case.expect:
        return False
    try:
        detail = json.loads(text)["detail"]
    except (ValueError, KeyError, TypeError):
        return False
    message = json.dumps(detail)
    return all(w in message for w in case.words) and not any(u in message for u in UNCLEAR)


def run_corpus(base: str, pid: int, fixture: Fixture, max_pixels: int) -> dict[str, Any]:
    """Send every corpus case, then the allowed-size well, each with the server's memory peak: the highest RSS
    during the request, and its increase over the RSS the request started from."""
    well, files = well_files(fixture.data, fixture.plain)
    cases = corpus(well, files, fixture.plain, max_pixels)
    rss = PeakRss(pid)
    results = []

    def measured(send: Callable[[], tuple[int | None, str]]) -> tuple[int | None, str, float, float]:
        rss.reset()
        start = rss.current_mb()
        status, text = send()
        peak = rss.read_mb()
        return status, text, round(peak, 1), round(peak - start, 1)

    with httpx.Client(base_url=base, timeout=300) as client:
        assert client.post("/classify", files=as_parts(files), data={"experiment": fixture.plain}).status_code == 200
        idle = rss.current_mb()
        for case in cases:
            status, text, peak, increase = measured(lambda case=case: send_case(client, case))
            ok = clear(case, status, text)
            results.append({"case": case.name, "status": status, "clear": ok, "peak_rss_mb": peak,
                            "increase_mb": increase, **({} if ok else {"answer": ascii(text[:400])})})  # fmt: skip
            if not ok:
                log.warning("unclear answer to %s: %s %s", case.name, status, ascii(text[:300]))
        allowed = as_parts(allowed_well(max_pixels))
        runs = []
        for _ in range(2):  # the first may include one-time allocations; the smaller peak is reported
            runs.append(measured(lambda: send_case(client, Case("allowed", "/classify", (200,), (), allowed,
                                                                 {"experiment": fixture.plain}))))  # fmt: skip
            if runs[-1][0] != 200:
                raise RuntimeError(f"the allowed-size well was refused: {runs[-1][0]} {runs[-1][1][:300]}")
    server_errors = [r for r in results if r["status"] is None or r["status"] >= 500]
    worst = max(results, key=lambda r: r["peak_rss_mb"])
    worst_increase = max(results, key=lambda r: r["increase_mb"])
    _, _, allowed_peak, allowed_increase = min(runs, key=lambda r: r[2])
    return {
        "requests": len(results),
        "server_errors_or_resets": len(server_errors),
        "not_clear": sum(not r["clear"] for r in results),
        "memory": {
            "idle_rss_mb": round(idle, 1),
            "allowed_well": {
                "pixels_per_png": max_pixels,
                "pngs": 12,
                "peak_rss_mb": allowed_peak,
                "increase_mb": allowed_increase,
            },
            "worst_bad_upload_by_peak": {"case": worst["case"], "peak_rss_mb": worst["peak_rss_mb"]},
            "worst_bad_upload_by_increase": {
                "case": worst_increase["case"],
                "increase_mb": worst_increase["increase_mb"],
            },
            "ratio_of_peaks": round(worst["peak_rss_mb"] / allowed_peak, 3),
            "ratio_of_increases": round(worst_increase["increase_mb"] / max(allowed_increase, 1e-9), 3),
        },
        "cases": results,
    }


def run_auth_checks(fixture: Fixture, work: Path) -> dict[str, Any]:
    """An empty key refused at startup (exit 2); with a key, a 21 MB unauthenticated upload answered 401 before its
    body is sent."""
    out: dict[str, Any] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHENOPRINT_")}
    started = time.perf_counter()
    proc = subprocess.Popen(
        serve_command(fixture.run, fixture.indexes, free_port()),
        env={**env, "PHENOPRINT_API_KEY": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # it started serving with an empty key
        proc.kill()
        _, stderr = proc.communicate()
    out["empty_key"] = {
        "exit_status": proc.returncode,
        "stderr_last_line": (stderr.strip().splitlines() or [""])[-1][:300],
        "seconds": round(time.perf_counter() - started, 1),
        "refused_clearly": proc.returncode == 2 and "Traceback" not in stderr,
    }
    proc, base = start_server(fixture.run, fixture.indexes, work / "serve-keyed.log", {"PHENOPRINT_API_KEY": "s3cret"})
    try:
        host, port = base.removeprefix("http://").split(":")
        size = 21 * 1024 * 1024
        head = (
            f"POST /classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {size}\r\n\r\n"
        ).encode()
        sent = 0
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(head + b"\0" * 65536)
            sent = 65536
            s.settimeout(5)
            try:
                answer = s.recv(4096).decode(errors="replace")
            except TimeoutError:
                answer = ""
        status = int(answer.split(" ", 2)[1]) if answer.startswith("HTTP/1.1 ") else None
        out["unauthenticated_21mb_upload"] = {
            "status": status,
            "body_bytes_sent_before_the_answer": sent,
            "answered_before_the_body": status == 401,
        }
    finally:
        stop(proc)
    return out


# -- tampered index folders -------------------------------------------------------------------------------------------


def rehash(folder: Path) -> None:
    """Make the manifest describe the files as they are: a consistent folder a buggy writer could have produced."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    from phenoprint.index.storage import file_record

    manifest["files"] = {name: file_record(folder / name) for name in manifest["files"]}
    path.write_text(json.dumps(manifest))


def _edit_manifest(folder: Path, edit: Callable[[dict], None]) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _edit_centering(folder: Path, edit: Callable[[Any], Any]) -> None:
    from phenoprint.index.centering import load_centering, save_centering

    save_centering(folder / "centering.npz", edit(load_centering(folder / "centering.npz")))


def _stats(stats: dict, **fields: Any) -> dict:
    return {k: dataclasses.replace(v, **fields) for k, v in stats.items()}


def _edit_entries(folder: Path, edit: Callable[[Any], Any]) -> None:
    import pandas as pd

    edit(pd.read_parquet(folder / "entries.parquet")).to_parquet(folder / "entries.parquet", index=False)


def _write_vectors(folder: Path, vectors: np.ndarray) -> None:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(index, str(folder / "index.faiss"))


def _vectors(folder: Path) -> np.ndarray:
    import faiss

    index = faiss.read_index(str(folder / "index.faiss"))
    return index.reconstruct_n(0, index.ntotal)


def _edit_producer(folder: Path, edit: Callable[[dict], None]) -> None:
    with np.load(folder / "producer.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    edit(arrays)
    np.savez(folder / "producer.npz", **arrays)


def _first_bn(arrays: dict) -> str:
    return sorted(k for k in arrays if k.endswith(".running_mean"))[0]


def _random_unit(n: int, d: int) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def index_tamperings(other: Path) -> dict[str, tuple[Callable[[Path], None], bool]]:
    """name → (tamper the folder in place, whether to rehash the manifest afterwards). ``other`` is another
    experiment's index folder."""

    def nan_at(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a.flat[0] = np.nan
        return a

    return {
        # files swapped after the save, the manifest as it was
        "index.faiss from another experiment": (lambda f: shutil.copy(other / "index.faiss", f / "index.faiss"), False),
        "centering.npz from another experiment": (
            lambda f: shutil.copy(other / "centering.npz", f / "centering.npz"), False),
        "random vectors of the right count": (lambda f: _write_vectors(f, _random_unit(*_vectors(f).shape)), False),
        "shuffled entry rows": (lambda f: _edit_entries(f, lambda e: e.sample(frac=1.0, random_state=1)), False),
        "one siRNA label changed": (
            lambda f: _edit_entries(f, lambda e: e.assign(sirna_id=e.sirna_id.where(e.index != 0, 9999))), False),
        "NaN centering mean (file swapped)": (lambda f: _edit_centering(f, lambda s: _stats(
            s, mean=nan_at(next(iter(s.values())).mean))), False),
        "BN statistics scaled": (lambda f: _edit_producer(f, lambda a: a.update(
            {k: v * 2 for k, v in a.items()})), False),
        "index.faiss truncated": (lambda f: (f / "index.faiss").write_bytes((f / "index.faiss").read_bytes()[:100]),
                                  False),
        "plate_groups.json edited": (lambda f: (f / "plate_groups.json").write_text(
            (f / "plate_groups.json").read_text().replace("1", "2", 3)), False),
        # consistent folders (manifest rehashed): only the checks of the contents can refuse them
        "centering scale of the wrong length": (lambda f: _edit_centering(f, lambda s: _stats(
            s, scale=np.ones(5))), True),
        "TVN gains of the wrong length": (lambda f: _edit_centering(f, lambda s: _stats(s, gains=np.ones(2))), True),
        "TVN components of the wrong shape": (lambda f: _edit_centering(f, lambda s: _stats(
            s, components=np.ones((3, 3)))), True),
        "renamed centering key": (lambda f: _edit_centering(f, lambda s: {"RENAMED": next(iter(s.values()))}), True),
        "extra centering key": (lambda f: _edit_centering(f, lambda s: {**s, "EXTRA": next(iter(s.values()))}), True),
        "centering method unlike the manifest's": (lambda f: _edit_centering(f, lambda s: _stats(
            s, method="center_scale")), True),
        "NaN centering mean": (lambda f: _edit_centering(f, lambda s: _stats(
            s, mean=nan_at(next(iter(s.values())).mean))), True),
        "infinite whitening gain": (lambda f: _edit_centering(f, lambda s: _stats(s, isotropic=math.inf)), True),
        "zero scale": (lambda f: _edit_centering(f, lambda s: _stats(
            s, scale=np.zeros_like(next(iter(s.values())).scale))), True),
        "text siRNA ids": (lambda f: _edit_entries(f, lambda e: e.assign(sirna_id="siRNA-" + e.sirna_id.astype(str))),
                           True),
        "float plates": (lambda f: _edit_entries(f, lambda e: e.assign(plate=e.plate.astype(float) + 0.5)), True),
        "unknown entry kind": (lambda f: _edit_entries(f, lambda e: e.assign(kind="mystery")), True),
        "entries with a column missing": (lambda f: _edit_entries(f, lambda e: e.drop(columns=["well_type"])), True),
        "fewer entry rows than vectors": (lambda f: _edit_entries(f, lambda e: e.iloc[:-1]), True),
        "NaN vector": (lambda f: _write_vectors(f, nan_at(_vectors(f))), True),
        "BN statistics of a wrong shape": (lambda f: _edit_producer(f, lambda a: a.__setitem__(
            _first_bn(a), np.zeros(3, np.float32))), True),
        "an extra BN tensor": (lambda f: _edit_producer(f, lambda a: a.__setitem__(
            "extra.bn.running_mean", np.zeros(4, np.float32))), True),
        "a missing BN tensor": (lambda f: _edit_producer(f, lambda a: a.pop(_first_bn(a))), True),
        "NaN BN statistics": (lambda f: _edit_producer(f, lambda a: a.__setitem__(
            _first_bn(a), nan_at(a[_first_bn(a)]))), True),
        # manifests edited (the manifest holds the hashes, not its own)
        "manifest dim changed": (lambda f: _edit_manifest(f, lambda m: m.update(dim=m["dim"] + 1)), False),
        "manifest fingerprint changed": (lambda f: _edit_manifest(f, lambda m: m.update(fingerprint="0" * 64)), False),
        "manifest experiment renamed": (lambda f: _edit_manifest(f, lambda m: m.update(experiment="OTHER-01")), False),
        "manifest format version 1": (lambda f: _edit_manifest(f, lambda m: m.update(format_version=1)), False),
        "manifest tta 9": (lambda f: _edit_manifest(f, lambda m: m["producer"].update(tta=9)), False),
        "manifest open-set threshold NaN": (
            lambda f: _edit_manifest(f, lambda m: m["open_set"].update(threshold=math.nan)), False),
        "manifest without a required file": (lambda f: _edit_manifest(f, lambda m: m["files"].pop("centering.npz")),
                                             False),
        "manifest with old-style sizes": (lambda f: _edit_manifest(f, lambda m: m.update(
            files={k: v["bytes"] for k, v in m["files"].items()})), False),
        "manifest not JSON": (lambda f: (f / "manifest.json").write_text("{not json"), False),
        "manifest a JSON list": (lambda f: (f / "manifest.json").write_text("[1, 2]"), False),
        "index.faiss missing": (lambda f: (f / "index.faiss").unlink(), False),
    }  # fmt: skip


def run_index_tampering(fixture: Fixture, work: Path) -> dict[str, Any]:
    """Each tampering of the adapted index, loaded by the service's registry beside the untouched other index."""
    from phenoprint.api.metrics import ServiceMetrics
    from phenoprint.api.settings import Settings
    from phenoprint.api.state import start_service

    root = work / "tampered-indexes"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(fixture.indexes, root)
    service = start_service(
        Settings(model=fixture.run, indexes=root, device="cpu", reload_interval_s=0), ServiceMetrics()
    )
    tamperings = index_tamperings(fixture.indexes / fixture.plain)
    results = []
    # a folder dropped into the index that the manifest does not list is ignored: accepted, and right to be
    benign = {"an unlisted file dropped in": lambda f: (f / "notes.txt").write_text("hello")}
    for name, (tamper, consistent) in [*tamperings.items(), *((k, (v, False)) for k, v in benign.items())]:
        target = root / fixture.adapted
        shutil.rmtree(target)
        shutil.copytree(fixture.indexes / fixture.adapted, target)
        try:
            tamper(target)
            if consistent:
                rehash(target)
        except Exception as exc:  # a tampering that cannot be applied is a bug of this script
            results.append({"tampering": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        try:
            report = service.refresh_indexes()
            raised = None
        except Exception as exc:  # the scan itself must never fail
            report, raised = None, f"{type(exc).__name__}: {exc}"
        served = service.registry.snapshot()
        accepted = report is not None and fixture.adapted in report.loaded  # this version (the folder is new)
        reason = service.registry.refused.get(fixture.adapted)
        results.append({
            "tampering": name,
            "rehashed": consistent,
            "accepted": accepted,
            "should_be_accepted": name in benign,
            "other_index_still_served": fixture.plain in served,
            "scan_raised": raised,
            "reason": None if reason is None else reason[:300],
        })  # fmt: skip
    wrong = [r for r in results if r.get("accepted") and not r.get("should_be_accepted")]
    return {
        "tampered_folders": len(results),
        "accepted_but_wrong": len(wrong),
        "benign_refused": sum(1 for r in results if r.get("should_be_accepted") and not r.get("accepted")),
        "other_index_lost": sum(1 for r in results if not r.get("other_index_still_served", True)),
        "scans_that_raised": sum(1 for r in results if r.get("scan_raised")),
        "script_errors": sum(1 for r in results if "error" in r),
        "cases": results,
    }


# -- tampered model folders -------------------------------------------------------------------------------------------


def _edit_weights(run: Path, edit: Callable[[dict], None]) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(run / "model.safetensors"))
    edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(run / "model.safetensors"))


def _conv(tensors: dict) -> str:
    return sorted(k for k, t in tensors.items() if t.ndim == 4)[0]


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _another_run(run: Path) -> None:
    """Weights of another training run of the same architecture (another initialization)."""
    import torch

    from phenoprint.embedder.checkpoint import read_run
    from phenoprint.embedder.model import Embedder

    config, _ = read_run(run)
    torch.manual_seed(12345)
    other = Embedder(dataclasses.replace(config.model, pretrained=False))
    _edit_weights(run, lambda t: t.update({k: v.detach().clone() for k, v in other.state_dict().items()}))


def model_tamperings() -> dict[str, Callable[[Path], None]]:
    def poison(value: float) -> Callable[[dict], None]:
        return lambda t: t[_conv(t)].view(-1).__setitem__(0, value)

    return {
        "another run's weights, same architecture": _another_run,
        "weights nudged by 1e-3": lambda r: _edit_weights(r, lambda t: t[_conv(t)].add_(1e-3)),
        "NaN weight": lambda r: _edit_weights(r, poison(math.nan)),
        "infinite weight": lambda r: _edit_weights(r, poison(math.inf)),
        "weights saved as float16": lambda r: _edit_weights(r, lambda t: t.update({k: v.half() for k, v in t.items()
                                                                                    if v.is_floating_point()})),
        "an extra tensor": lambda r: _edit_weights(r, lambda t: t.__setitem__("extra.weight", t[_conv(t)].clone())),
        "a missing tensor": lambda r: _edit_weights(r, lambda t: t.pop(_conv(t))),
        "a tensor of another shape": lambda r: _edit_weights(r, lambda t: t.__setitem__(_conv(t), t[_conv(t)][:1])),
        "model.safetensors truncated": lambda r: (r / "model.safetensors").write_bytes(
            (r / "model.safetensors").read_bytes()[:1000]),
        "model.safetensors garbage": lambda r: (r / "model.safetensors").write_bytes(b"\0" * 1000),
        "model.safetensors missing": lambda r: (r / "model.safetensors").unlink(),
        "run.json not JSON": lambda r: (r / "run.json").write_text("{not json"),
        "run.json a JSON list": lambda r: (r / "run.json").write_text("[1, 2]"),
        "run.json without a fingerprint": lambda r: _edit_json(r / "run.json", lambda d: d.pop("fingerprint")),
        "run.json with another fingerprint": lambda r: _edit_json(r / "run.json", lambda d: d.update(
            fingerprint="0" * 64)),
        "run.json format 99": lambda r: _edit_json(r / "run.json", lambda d: d.update(format_version=99)),
        "run.json missing": lambda r: (r / "run.json").unlink(),
        "run.json NaN channel statistics": lambda r: _edit_json(r / "run.json", lambda d: d.update(
            channel_stats={"X-01": [[math.nan] * 6, [1.0] * 6]})),
        "config.json not JSON": lambda r: (r / "config.json").write_text("{not json"),
        "config.json image size changed": lambda r: _edit_json(r / "config.json", lambda d: d.update(
            image_size=d["image_size"] * 2)),
        "config.json embedding dim changed": lambda r: _edit_json(r / "config.json", lambda d: d["model"].update(
            embedding_dim=64)),
    }  # fmt: skip


def _serves(proc: subprocess.Popen, port: int, timeout_s: float) -> bool:
    """Whether a starting ``phenoprint serve`` answers /healthz before it exits (or ``timeout_s`` passes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # another process starting
    return proc.poll() is None


def run_model_tampering(fixture: Fixture, work: Path) -> dict[str, Any]:
    """Each tampering of the run folder: loaded in-process by load_model, then served by ``phenoprint serve``."""
    from phenoprint.embedder.inference import load_model

    results = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHENOPRINT_")}
    for name, tamper in model_tamperings().items():
        run = work / "tampered-run"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(fixture.run, run)
        try:
            tamper(run)
        except Exception as exc:
            results.append({"tampering": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        try:
            load_model(run, "cpu")
            accepted, reason = True, None
        except Exception as exc:
            accepted, reason = False, f"{type(exc).__name__}: {exc}"
        port = free_port()
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(serve_command(run, fixture.indexes, port), env=env, stdout=subprocess.DEVNULL,
                                    stderr=err, text=True)  # fmt: skip
            if _serves(proc, port, timeout_s=120):  # it started with the tampered model: stop it
                proc.kill()
            proc.wait()
            err.seek(0)
            stderr = err.read()
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        one_line = (
            proc.returncode == 2
            and "Traceback" not in stderr
            and bool(lines)
            and lines[-1].startswith("phenoprint serve: error: ")
        )
        results.append({
            "tampering": name,
            "accepted": accepted,
            "reason": None if reason is None else reason[:300],
            "serve_exit_status": proc.returncode,
            "serve_refused_in_one_clear_line": one_line,
            **({} if one_line else {"serve_stderr_tail": stderr[-600:]}),
        })  # fmt: skip
    return {
        "tampered_folders": len(results),
        "accepted_but_wrong": sum(1 for r in results if r.get("accepted")),
        "serve_not_one_clear_line": sum(1 for r in results if not r.get("serve_refused_in_one_clear_line", True)),
        "script_errors": sum(1 for r in results if "error" in r),
        "cases": results,
    }


# -- SIGKILL and rerun ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    """A command to kill and rerun, and how to judge what it leaves."""

    name: str
    command: Callable[[Path], list[str]]  # the command writing into one output folder
    prepare: Callable[[Path], None]  # set the output folder up as before the command (e.g. an older artifact)
    check: Callable[[Path], str | None]  # None when what is under the final names is valid, else why not
    compare: Callable[[Path, Path], str | None]  # None when a rerun's result equals the uninterrupted one
    progress: Callable[[Path], float | None] = lambda out: None  # fraction of the work kept after a kill


def run_child(cmd: list[str], log_path: Path, kill_after: float | None = None) -> tuple[int | None, float]:
    """Run a command in its own process group; SIGKILL the whole group after ``kill_after`` seconds (None: wait)."""
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHENOPRINT_")}
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            proc.wait(timeout=kill_after if kill_after is not None else 1800)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                raise
            os.killpg(proc.pid, signal.SIGKILL)  # the machine "crashes": the job and every worker it started
            proc.wait()
            return None, time.perf_counter() - started
    return proc.returncode, time.perf_counter() - started


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if TEMPORARY.match(p.name))


def run_kills(fixture: Fixture, work: Path, kills: int, seed: int) -> dict[str, Any]:
    jobs = kill_jobs(fixture, work)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for job in jobs:
        base = work / f"kill-{job.name}"
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        reference = base / "reference"
        reference.mkdir()
        job.prepare(reference)
        status, seconds = run_child(job.command(reference), base / "reference.log")
        if status != 0 or job.check(reference) is not None:
            raise RuntimeError(f"{job.name}: the uninterrupted run failed ({status}); see {base / 'reference.log'}")
        records = []
        for k in range(kills):
            out_dir = base / f"killed-{k}"
            out_dir.mkdir()
            job.prepare(out_dir)
            moment = float(rng.uniform(0.15, 0.97))
            status, _ = run_child(job.command(out_dir), base / f"killed-{k}.log", kill_after=moment * seconds)
            record: dict[str, Any] = {"kill_at_fraction_of_a_full_run": round(moment, 3), "killed": status is None}
            record["corrupt_after_kill"] = job.check(out_dir)
            record["work_kept_after_kill"] = job.progress(out_dir)
            status, _ = run_child(job.command(out_dir), base / f"rerun-{k}.log")
            record["rerun_status"] = status
            problem = None if status == 0 else f"the rerun exited with {status}"
            problem = problem or job.check(out_dir) or job.compare(out_dir, reference)
            record["unresumable"] = problem
            record["leftovers_after_rerun"] = leftovers(out_dir)
            records.append(record)
            log.info("%s kill %d at %.2f of a run: %s", job.name, k + 1, moment, record)
        out[job.name] = {
            "uninterrupted_seconds": round(seconds, 1),
            "kills": sum(r["killed"] for r in records),
            "finished_before_the_kill": sum(not r["killed"] for r in records),
            "corrupt": sum(r["corrupt_after_kill"] is not None for r in records),
            "unresumable": sum(r["unresumable"] is not None for r in records),
            "with_leftovers": sum(bool(r["leftovers_after_rerun"]) for r in records),
            "runs": records,
        }
    return out


def kill_jobs(fixture: Fixture, work: Path) -> list[Job]:  # noqa: C901 (one scenario per job, in order)
    from phenoprint.data.pack import PackSource
    from phenoprint.data.table import read_embeddings
    from phenoprint.embedder.checkpoint import fingerprint
    from phenoprint.embedder.inference import load_model
    from phenoprint.errors import PhenoprintError
    from phenoprint.index.experiment import ExperimentIndex

    model = load_model(fixture.run, "cpu")
    py = sys.executable
    scripts = Path(__file__).resolve().parent

    def nothing(out: Path) -> None:
        return None

    # train: a fresh run, --resume after the kill
    def train_cmd(out: Path) -> list[str]:
        resume = ["--resume"] if (out / "run" / "checkpoints").exists() else []
        return [py, "-m", "phenoprint", "-q", "train", *fixture.train_args, "--out", str(out / "run"), *resume]

    def run_check(out: Path) -> str | None:
        if not (out / "run" / "run.json").exists():
            return None  # unfinished: --resume finishes it
        try:
            loaded = load_model(out / "run", "cpu")
        except PhenoprintError as exc:
            return f"a finished run that does not load: {exc}"
        actual = fingerprint(loaded.config, loaded.embedder)  # checked here too: what run.json says of the weights
        return None if actual == loaded.fingerprint else "run.json's fingerprint is not that of the weights beside it"

    def run_compare(out: Path, ref: Path) -> str | None:
        a, b = load_model(out / "run", "cpu").fingerprint, load_model(ref / "run", "cpu").fingerprint
        return None if a == b else f"fingerprint {a[:12]}… differs from the uninterrupted run's {b[:12]}…"

    # train, extending a finished run with more steps (the case that paired new weights with an old fingerprint)
    def extend_prepare(out: Path) -> None:
        shutil.copytree(fixture.run, out / "run")

    def extend_cmd(out: Path) -> list[str]:
        return [py, "-m", "phenoprint", "-q", "train", *fixture.train_args, "--max-steps", "40",
                "--out", str(out / "run"), "--resume"]  # fmt: skip

    # build_index: replaces an existing index of the experiment
    target = fixture.plain

    def index_prepare(out: Path) -> None:
        shutil.copytree(fixture.indexes / target, out / "indexes" / target)

    def index_cmd(out: Path) -> list[str]:
        return [py, str(scripts / "build_index.py"), "--model", str(fixture.run), "--data", str(fixture.data),
                "--experiment", target, "--out", str(out / "indexes" / target), "--reference", str(fixture.reference),
                "--center", "tvn", "--bn-adapt", "--tta", "4", "--queries-out", str(out / "queries.parquet"),
                "--device", "cpu"]  # fmt: skip

    def index_check(out: Path) -> str | None:
        folder = out / "indexes" / target
        try:
            ExperimentIndex.load(folder, model.fingerprint, model.embedding_dim)
        except PhenoprintError as exc:
            return f"the index under its final name does not load: {exc}"
        if (out / "queries.parquet").exists():
            try:
                read_embeddings(out / "queries.parquet")
            except PhenoprintError as exc:
                return f"the queries table does not load: {exc}"
        return None

    def index_compare(out: Path, ref: Path) -> str | None:
        a = ExperimentIndex.load(out / "indexes" / target)
        b = ExperimentIndex.load(ref / "indexes" / target)
        if not a.entries.equals(b.entries) or not np.allclose(a.vectors, b.vectors, atol=1e-5):
            return "the rebuilt index differs from the uninterrupted one"
        qa, qb = read_embeddings(out / "queries.parquet"), read_embeddings(ref / "queries.parquet")
        return None if np.allclose(qa.features, qb.features, atol=1e-5) else "the queries table differs"

    # pack: two worker processes, small chunks so that progress is recorded often
    def pack_cmd(out: Path) -> list[str]:
        code = ("import sys; from phenoprint.data.pack import pack; "
                "r = pack(sys.argv[1], sys.argv[2], workers=2, chunk=8, progress=False); "
                "print('n_resumed', r.n_resumed, 'n_decoded', r.n_decoded)")  # fmt: skip
        return [py, "-c", code, str(fixture.data), str(out / "pack")]

    def pack_check(out: Path) -> str | None:
        if not (out / "pack" / "manifest.json").exists():
            return None  # incomplete: a rerun resumes it
        try:
            PackSource(out / "pack")
        except PhenoprintError as exc:
            return f"a complete pack that does not load: {exc}"
        return None

    def pack_progress(out: Path) -> float | None:
        done = out / "pack" / "done.npy"
        if (out / "pack" / "manifest.json").exists():
            return 1.0
        return float(np.load(done).mean()) if done.exists() else 0.0

    def pack_compare(out: Path, ref: Path) -> str | None:
        a, b = PackSource(out / "pack"), PackSource(ref / "pack")
        same = np.array_equal(a.images, b.images) and a.index.equals(b.index)
        return None if same else "the resumed pack's pixels or rows differ from the uninterrupted pack's"

    # embed
    def embed_cmd(out: Path) -> list[str]:
        return [py, "-m", "phenoprint", "-q", "embed", "--model", str(fixture.run), "--data", str(fixture.data),
                "--out", str(out / "emb.parquet"), "--tta", "8", "--device", "cpu"]  # fmt: skip

    def embed_check(out: Path) -> str | None:
        if not (out / "emb.parquet").exists():
            return None
        try:
            read_embeddings(out / "emb.parquet")
        except PhenoprintError as exc:
            return f"the table under its final name does not load: {exc}"
        return None

    def embed_compare(out: Path, ref: Path) -> str | None:
        a, b = read_embeddings(out / "emb.parquet"), read_embeddings(ref / "emb.parquet")
        same = a.meta.equals(b.meta) and np.allclose(a.features, b.features, atol=1e-6)
        return None if same else "the rerun's table differs"

    return [
        Job("build_index", index_cmd, index_prepare, index_check, index_compare),
        Job("train", train_cmd, nothing, run_check, run_compare),
        Job("train_extend", extend_cmd, extend_prepare, run_check, run_compare),
        Job("pack", pack_cmd, nothing, pack_check, pack_compare, pack_progress),
        Job("embed", embed_cmd, nothing, embed_check, embed_compare),
    ]


# -- the run ----------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import schemathesis
    import torch

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "schemathesis": schemathesis.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_attack(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "script": "attack_service",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "setup": {"preset": "tiny", "image_size": args.image_size, "model_input": args.model_size,
                  "examples_per_operation_and_mode": args.examples, "kills_per_job": args.kills,
                  "max_image_pixels": args.max_image_pixels, "seed": args.seed},
    }  # fmt: skip
    log.info("building the fixture in %s", work)
    fixture = build_fixture(work, args.seed, args.image_size, args.model_size)
    result["fixture_seconds"] = round(time.perf_counter() - started, 1)
    if not {"schemathesis", "corpus"} <= set(args.skip):
        env = {"PHENOPRINT_MAX_IMAGE_PIXELS": str(args.max_image_pixels)}
        proc, base = start_server(fixture.run, fixture.indexes, work / "serve.log", env)
        try:
            if "schemathesis" not in args.skip:
                log.info("schemathesis on %s", base)
                result["schemathesis"] = run_schemathesis(base, args.examples, args.seed)
            if "corpus" not in args.skip:
                log.info("the bad-upload corpus")
                result["bad_uploads"] = run_corpus(base, proc.pid, fixture, args.max_image_pixels)
        finally:
            stop(proc)
        if "corpus" not in args.skip:
            result["auth"] = run_auth_checks(fixture, work)
    if "index" not in args.skip:
        log.info("tampered index folders")
        result["tampered_indexes"] = run_index_tampering(fixture, work)
    if "model" not in args.skip:
        log.info("tampered model folders")
        result["tampered_models"] = run_model_tampering(fixture, work)
    if "kills" not in args.skip:
        log.info("SIGKILL and rerun, %d per job", args.kills)
        result["kills"] = run_kills(fixture, work, args.kills, args.seed)
    result["summary"] = summarize(result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return redact(
        result, {str(work): "<work>", sys.prefix: "<venv>", str(Path(__file__).resolve().parents[1]): "<repo>"}
    )


def redact(result: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The result with this machine's folders (in refusal messages and logs) replaced by placeholders."""
    text = json.dumps(result)
    for path, placeholder in sorted(names.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(json.dumps(path)[1:-1], placeholder)
    return json.loads(text)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The counts of the issue's "Done when", and whether each meets its goal."""
    s: dict[str, Any] = {}
    if "schemathesis" in result:
        st = result["schemathesis"]
        s["schemathesis_cases"] = st["cases"]
        s["schemathesis_5xx"] = st["server_errors"]
        s["schemathesis_check_failures"] = st["check_failures"]
    if "bad_uploads" in result:
        bu = result["bad_uploads"]
        s["bad_upload_requests"] = bu["requests"]
        s["bad_upload_5xx_or_resets"] = bu["server_errors_or_resets"]
        s["bad_upload_not_clear"] = bu["not_clear"]
        memory = bu["memory"]
        s["memory_peak_worst_upload_mb"] = memory["worst_bad_upload_by_peak"]["peak_rss_mb"]
        s["memory_peak_allowed_well_mb"] = memory["allowed_well"]["peak_rss_mb"]
        s["memory_ratio_worst_upload_over_allowed_well"] = memory["ratio_of_peaks"]
        s["memory_increase_worst_upload_mb"] = memory["worst_bad_upload_by_increase"]["increase_mb"]
        s["memory_increase_allowed_well_mb"] = memory["allowed_well"]["increase_mb"]
        s["memory_increase_ratio"] = memory["ratio_of_increases"]
    if "auth" in result:
        s["empty_key_refused"] = result["auth"]["empty_key"]["refused_clearly"]
        upload = result["auth"]["unauthenticated_21mb_upload"]
        s["unauthenticated_upload_refused_before_body"] = upload["answered_before_the_body"]
    if "tampered_indexes" in result:
        ti = result["tampered_indexes"]
        s["tampered_index_folders"] = ti["tampered_folders"]
        s["tampered_index_accepted_but_wrong"] = ti["accepted_but_wrong"]
        s["tampered_index_other_index_lost"] = ti["other_index_lost"] + ti["scans_that_raised"]
    if "tampered_models" in result:
        tm = result["tampered_models"]
        s["tampered_model_folders"] = tm["tampered_folders"]
        s["tampered_model_accepted_but_wrong"] = tm["accepted_but_wrong"]
        s["model_refusals_not_one_clear_line"] = tm["serve_not_one_clear_line"]
    if "kills" in result:
        jobs = list(result["kills"].values())
        s["kills"] = sum(j["kills"] for j in jobs)
        s["kills_corrupt"] = sum(j["corrupt"] for j in jobs)
        s["kills_unresumable"] = sum(j["unresumable"] for j in jobs)
        s["kills_with_leftovers"] = sum(j["with_leftovers"] for j in jobs)
    zero = (
        "schemathesis_5xx",
        "bad_upload_5xx_or_resets",
        "bad_upload_not_clear",
        "tampered_index_accepted_but_wrong",
        "tampered_index_other_index_lost",
        "tampered_model_accepted_but_wrong",
        "model_refusals_not_one_clear_line",
        "kills_corrupt",
        "kills_unresumable",
        "kills_with_leftovers",
    )
    goals = {f"{name}_is_0": s[name] == 0 for name in zero if name in s}
    if "memory_ratio_worst_upload_over_allowed_well" in s:
        goals["memory_ratio_at_most_2"] = s["memory_ratio_worst_upload_over_allowed_well"] <= 2
    for name in ("empty_key_refused", "unauthenticated_upload_refused_before_body"):
        if name in s:
            goals[name] = bool(s[name])
    s["goals"] = goals
    s["all_goals_met"] = all(goals.values())
    return s


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.out.with_suffix(".log"), mode="w")],
    )
    for noisy in ("httpx", "multipart", "python_multipart", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("phenoprint").setLevel(logging.ERROR)  # the refusals the attack provokes are expected
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        result = run_attack(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="attack_service-") as tmp:
            result = run_attack(args, Path(tmp))
    from phenoprint.atomic import write_json_atomic

    write_json_atomic(result, args.out)
    log.info("wrote %s:\n%s", args.out, json.dumps(result["summary"], indent=2))
    return 0 if result["summary"]["all_goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
