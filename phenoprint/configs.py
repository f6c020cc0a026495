"""The one JSON codec of the typed config dataclasses (synthetic data, training, index) saved next to artifacts."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypeVar

C = TypeVar("C")


def config_to_json(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass: nested configs become dicts, tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_json(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a config dataclass from :func:`config_to_json` output, refusing unknown keys.

    Nested config fields (a dataclass, or a tuple of them) are rebuilt from their dicts and lists become tuples,
    as the field types say; the dataclass's own ``__post_init__`` then validates the values.

    Raises:
        ValueError: a key the dataclass does not have (a config from a newer or other program).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _decode(hints.get(name), value) for name, value in data.items()})


def _decode(tp: Any, value: Any) -> Any:
    """``value`` read back as type ``tp``: a nested config from its dict, a tuple (of configs) from its list."""
    if isinstance(value, dict) and isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return config_from_json(tp, value)
    if isinstance(value, list):
        args = typing.get_args(tp) if typing.get_origin(tp) is tuple else ()
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(_decode(item, v) for v in value)
    return value
