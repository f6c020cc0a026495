"""What a folder given as ``--indexes`` holds: one index directory, a folder of them, or a mistake worth naming."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from phenoprint.index.artifact import MANIFEST_NAME, read_json

#: The ``artifact`` of an index manifest (``phenoprint.index.build.ARTIFACT_KIND``, spelled out so that inspecting a
#: folder does not import faiss); packs and other artifacts also write a manifest.json.
INDEX_ARTIFACT = "phenoprint.experiment_index"

FolderKind = Literal["missing", "file", "index", "root", "empty", "other"]

_BUILD_HINT = (
    "one per experiment, as scripts/build_index.py --out {root}/<EXPERIMENT> or phenoprint index build write them"
)


@dataclass(frozen=True)
class IndexFolder:
    """A folder inspected as a place to serve indexes from.

    Attributes:
        path: the folder as given.
        kind: ``index`` (it is one index directory), ``root`` (it holds index directories), ``empty`` (it exists and
            holds no index yet: a service may wait for one), or a mistake: ``missing``, ``file``, ``other`` (it holds
            something that is not an index, e.g. embedding tables).
        indexes: the index directories found: the folder itself for ``index``, its sub-folders for ``root``.
        problem: for the mistakes, what is wrong and what to pass instead (None otherwise).
    """

    path: Path
    kind: FolderKind
    indexes: tuple[Path, ...] = ()
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def is_index_dir(path: Path) -> bool:
    """Whether ``path`` is an index directory: its manifest says so (a pack's does not); hidden temporary siblings
    never count. An unreadable manifest counts, so that the service reports why it refuses it."""
    if path.name.startswith(".") or not (path / MANIFEST_NAME).is_file():
        return False
    try:
        manifest = read_json(path / MANIFEST_NAME)
    except (OSError, ValueError):
        return True
    return isinstance(manifest, dict) and manifest.get("artifact") == INDEX_ARTIFACT


def index_dirs(root: Path) -> tuple[Path, ...]:
    """The index directories directly under ``root``, by name (none when it is not a readable folder)."""
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return ()
    return tuple(p for p in children if is_index_dir(p))


def inspect_index_folder(path: str | Path) -> IndexFolder:
    """Tell what a folder given as ``--indexes`` holds, and when it is a mistake, what should have been given."""
    path = Path(path)
    if not path.exists():
        parent = path.parent
        near = f"; {parent} holds {', '.join(p.name for p in index_dirs(parent))}" if index_dirs(parent) else ""
        return IndexFolder(
            path,
            "missing",
            problem=f"{path} does not exist: pass the folder that holds the index directories, "
            f"{_BUILD_HINT.format(root='DIR')}{near}",
        )
    if not path.is_dir():
        return IndexFolder(path, "file", problem=f"{path} is a file: pass the folder of index directories")
    if is_index_dir(path):
        return IndexFolder(path, "index", (path,))
    found = index_dirs(path)
    if found:
        return IndexFolder(path, "root", found)
    try:
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        return IndexFolder(path, "other", problem=f"{path} cannot be read ({exc.strerror or exc})")
    if not entries:
        return IndexFolder(path, "empty")
    parquet = [p for p in entries if p.suffix == ".parquet"]
    nested = [p for p in entries if p.is_dir() and index_dirs(p)]
    if nested:
        problem = f"{path} holds no index directory, but {nested[0]} does: pass --indexes {nested[0]}"
    elif (path / "run.json").is_file():
        problem = f"{path} is a model run (pass it as --model), not a folder of indexes"
    elif parquet:
        problem = (
            f"{path} holds {len(parquet)} Parquet file(s) (embedding tables such as {parquet[0].name}), not index "
            f"directories: build those, {_BUILD_HINT.format(root=path)}, then pass that folder"
        )
    else:
        problem = (
            f"{path} holds no index directory (a folder with an index's {MANIFEST_NAME}), "
            f"{_BUILD_HINT.format(root=path)}"
        )
    return IndexFolder(path, "other", problem=problem)
