"""Command-line verbs of ``phenoprint.api``: ``serve``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from phenoprint.cli import Command

if TYPE_CHECKING:
    from phenoprint.api.settings import Settings
from phenoprint.embedder.config import DEVICES
from phenoprint.index.config import MODES

log = logging.getLogger(__name__)


def _add_serve(p: argparse.ArgumentParser) -> None:
    """The serve options: where the model, indexes and socket are, then the limits."""
    # Each option is a Settings field of the same name; its default lives there (read from its PHENOPRINT_* variable
    # or the settings file), so an option left out is absent from the namespace and the variable applies.
    unset = argparse.SUPPRESS
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help='TOML settings file: top-level keys named like these options with underscores (model = "runs/r1", '
        'indexes = "indexes", port = 8000, log_level = "info", …), paths relative to the file; options '
        "and PHENOPRINT_* variables win over it (env PHENOPRINT_CONFIG)",
    )
    p.add_argument("--model", type=Path, default=unset, help="finished run directory (env PHENOPRINT_MODEL)")
    p.add_argument(
        "--indexes",
        type=Path,
        default=unset,
        help="folder with one index directory per experiment, as scripts/build_index.py --out DIR/<EXPERIMENT> "
        "writes them (new and replaced ones are picked up while serving), or one index directory to serve it "
        "alone (env PHENOPRINT_INDEXES)",
    )
    p.add_argument(
        "--predictions",
        type=Path,
        default=unset,
        help="`phenoprint predict --out` file, or a folder of them, shown by the UI and GET "
        "/experiments/{experiment}/predictions (default: *.parquet files and <EXPERIMENT>/predictions.parquet "
        "in --indexes); rescanned with the indexes (env PHENOPRINT_PREDICTIONS)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=unset,
        help="data root (RxRx1 layout) of the served experiments' images, read-only, for the UI's well "
        "composites; clients name wells, never paths (env PHENOPRINT_DATA)",
    )
    p.add_argument(
        "--host",
        default=unset,
        help="interface to bind; 0.0.0.0 exposes the service to the network (env PHENOPRINT_HOST; default 127.0.0.1)",
    )
    p.add_argument("--port", type=int, default=unset, help="TCP port (env PHENOPRINT_PORT; default 8000)")
    p.add_argument(
        "--device",
        choices=DEVICES,
        default=unset,
        help="where the embedder runs (env PHENOPRINT_DEVICE; default auto)",
    )
    _add_serve_limits(p)


def _add_serve_limits(p: argparse.ArgumentParser) -> None:
    """The serve options that bound and tune the work (request sizes, batching, rescans, threads, TTA, logs)."""
    unset = argparse.SUPPRESS
    p.add_argument(
        "--max-upload-bytes",
        type=int,
        default=unset,
        help="largest request body; larger ones get 413 (env PHENOPRINT_MAX_UPLOAD_BYTES; default 32 MiB)",
    )
    p.add_argument(
        "--max-batch-wells",
        type=int,
        default=unset,
        help="wells of concurrent requests embedded in one forward pass at most (env PHENOPRINT_MAX_BATCH_WELLS; "
        "default 16)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=unset,
        help="how long a forming batch waits for requests still decoding their images (env PHENOPRINT_BATCH_WAIT_MS; "
        "default 2)",
    )
    p.add_argument(
        "--reload-interval-s",
        type=float,
        default=unset,
        help="seconds between scans of --indexes for new, replaced or removed indexes; 0 never rescans "
        "(env PHENOPRINT_RELOAD_INTERVAL_S; default 5)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=unset,
        help="CPU threads of a forward pass; set it to a container's CPU quota, whose host may show more cores "
        "(env PHENOPRINT_TORCH_THREADS; default: torch's, one per visible core)",
    )
    p.add_argument(
        "--tta",
        type=int,
        default=unset,
        help="dihedral transforms averaged per site, 1-8 (env PHENOPRINT_TTA; default: each index's own, as "
        "onboarding embedded its wells)",
    )
    p.add_argument(
        "--classify-mode",
        choices=MODES,
        default=unset,
        help="weighted kNN vote or nearest centroid (env PHENOPRINT_CLASSIFY_MODE; default centroid)",
    )
    p.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default=unset,
        help="log level of the whole service, phenoprint's lines and uvicorn's (env PHENOPRINT_LOG_LEVEL; default: "
        "info, or what -q / -v before the verb ask for)",
    )


def _run_serve(args: argparse.Namespace) -> int:
    """Check the configuration, the index folder and the port, then run uvicorn on the app (which loads the model
    and indexes as it starts)."""
    from pydantic import ValidationError

    from phenoprint.api.settings import Settings, load_settings
    from phenoprint.logs import level_from_flags, setup_logging

    try:
        settings = load_settings(args.config, **{k: v for k, v in vars(args).items() if k in Settings.model_fields})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"phenoprint serve: error: invalid settings ({problems})", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"phenoprint serve: error: {exc}", file=sys.stderr)
        return 2
    missing = [
        f"--{name} (or PHENOPRINT_{name.upper()})" for name in ("model", "indexes") if getattr(settings, name) is None
    ]
    if missing:
        print(f"phenoprint serve: error: nothing to serve: pass {' and '.join(missing)}", file=sys.stderr)
        return 2
    # one level for phenoprint's and uvicorn's lines: --log-level, else -q/-v, else the variable or file, else info
    level: str = settings.log_level
    if "log_level" not in vars(args) and (args.quiet or args.verbose):
        level = level_from_flags(args.verbose, args.quiet)
    setup_logging(level)

    from phenoprint.embedder.checkpoint import read_run
    from phenoprint.embedder.distributed import resolve_device
    from phenoprint.embedder.inference import load_model

    assert settings.model is not None
    assert settings.indexes is not None
    read_run(settings.model)  # a bad run directory is a one-line CheckpointError here, not a startup traceback
    problem = folder_problem(settings) or port_problem(settings.host, settings.port)
    if problem is not None:
        print(f"phenoprint serve: error: {problem}", file=sys.stderr)
        return 2
    try:
        resolve_device(settings.device)
    except ValueError as exc:
        print(f"phenoprint serve: error: {exc}", file=sys.stderr)
        return 2
    # loaded before uvicorn starts: a bad run directory is a one-line CheckpointError, not a lifespan traceback
    model = load_model(settings.model, settings.device)
    if settings.api_key is None and not _is_loopback(settings.host):
        log.warning(
            "serving on %s without an API key: anyone who can reach port %d can use the service "
            "(set PHENOPRINT_API_KEY to require X-API-Key)",
            settings.host,
            settings.port,
        )
    import uvicorn

    from phenoprint.api.app import create_app

    log.info("plate viewer at http://%s:%d/ui/ (API docs at /docs)", _url_host(settings.host), settings.port)
    uvicorn.run(
        create_app(settings, model=model),
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn's lines go through phenoprint's handler: one format, with timestamps
        log_level=level,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def folder_problem(settings: Settings) -> str | None:
    """Why the index folder, the data root or the predictions path cannot be served (checked before the model and
    indexes are loaded), or None."""
    from phenoprint.data.layout import detect_layout
    from phenoprint.errors import LayoutError
    from phenoprint.index.folders import inspect_index_folder

    assert settings.indexes is not None
    folder = inspect_index_folder(settings.indexes)
    if folder.problem is not None:
        return folder.problem
    if settings.data is not None:
        try:
            detect_layout(settings.data)
        except LayoutError as exc:
            return f"--data: {exc}"
    if settings.predictions is not None and not settings.predictions.exists():
        return (
            f"--predictions {settings.predictions}: no such file or folder (give what `phenoprint predict --out` "
            "wrote, or the folder holding it)"
        )
    return None


def port_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not bind ``host:port`` (checked before the model and indexes are loaded), or None.

    The probe binds like uvicorn does (``SO_REUSEADDR``), so a port left in TIME_WAIT by a stopped server is free.
    """
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve --host {host!r} ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use (another phenoprint serve, or another service); "
                    "stop it, or pass --port with a free port"
                )
            return f"cannot listen on {host}:{port} ({exc.strerror or exc})"
    return None


def _url_host(host: str) -> str:
    """The host part of a URL to the service (an IPv6 address in brackets; 0.0.0.0 is reached at 127.0.0.1)."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


COMMANDS: list[Command] = [
    Command(
        "serve",
        "serve the model and the per-experiment indexes over HTTP (FastAPI + uvicorn)",
        _add_serve,
        _run_serve,
        description="Run the HTTP service: POST /classify, /embed, /preview; GET /experiments, /sirnas/{id}, "
        "/healthz, /readyz, /metrics (OpenAPI at /docs), and a plate viewer of the indexes and their predictions "
        "at /ui/. Every option defaults from its PHENOPRINT_* environment "
        "variable; PHENOPRINT_API_KEY (environment only, never a command-line argument) makes the data endpoints "
        "require the X-API-Key header. Binds 127.0.0.1 unless told otherwise.",
    ),
]
