"""One logging setup for every entry point (phenoprint's loggers and uvicorn's), and warnings given once per process."""

from __future__ import annotations

import logging
import threading

#: The one line format of every entry point: date and time, level, logger, message.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Level names accepted by ``--log-level`` (uvicorn's spelling, lower case).
LEVELS = ("critical", "error", "warning", "info", "debug")
#: uvicorn's loggers: they lose their own handlers and propagate to the root handler, so they share its format.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

_handler: logging.Handler | None = None  # the stderr handler setup_logging installed, replaced on a second call
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def level_from_flags(verbose: int = 0, quiet: bool = False) -> str:
    """The level name ``-v`` / ``-q`` ask for: warning with ``-q``, debug with ``-vv``, else info."""
    return "warning" if quiet else "debug" if verbose > 1 else "info"


def setup_logging(level: str | int = "info") -> None:
    """Log everything (phenoprint, uvicorn, libraries) to stderr through one handler, in one format, at one level.

    Calling it again replaces the handler and the level (``serve --log-level`` refines what ``-v``/``-q`` set).

    Raises:
        ValueError: an unknown level name.
    """
    if isinstance(level, str):
        if level.lower() not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}; got {level!r}")
        numeric = getattr(logging, level.upper())
    else:
        numeric = int(level)
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler = None
    if not root.handlers:  # a host that installed its own handlers (pytest, a notebook) keeps them
        _handler = logging.StreamHandler()
        _handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        root.addHandler(_handler)
    root.setLevel(numeric)
    logging.getLogger("phenoprint").setLevel(numeric)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(numeric)
    logging.getLogger("faiss").setLevel(max(numeric, logging.WARNING))  # its loader reports every CPU-feature probe
    for chatty in ("httpx", "httpcore"):  # a line per HTTP request a client sends: the server's log has them
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))


def warn_once(logger: logging.Logger, message: str, *args: object) -> None:
    """Log a warning the first time this logger gives this message in the process; later calls say nothing.

    For fallbacks (no GPU, no pretrained weights) that every model load would otherwise repeat.
    """
    key = (logger.name, message % args if args else message)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message, *args)
