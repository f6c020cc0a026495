"""The house's import directions: index/ without torch, embedder/ without index/, the library without its CLI."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "phenoprint"
#: Modules that are the command line (they may import commands modules and print).
CLI_MODULES = {"cli.py", "__main__.py"}
#: The API modules that may import torch or the embedder's torch modules: where the model is loaded and run.
API_TORCH_MODULES = {"state.py", "commands.py"}
TORCH_MODULES = ("torch", "timm", "torchvision")
EMBEDDER_TORCH_MODULES = ("inference", "model", "train", "data", "transforms", "checkpoint", "distributed")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (top level, functions, TYPE_CHECKING blocks), as dotted names;
    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name not in CLI_MODULES and p.name != "commands.py")


def test_the_import_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "import torch.nn\nfrom phenoprint.index import build\n\ndef f():\n    from phenoprint.cli import main\n"
        "if TYPE_CHECKING:\n    import phenoprint.embedder.train\n"
    )
    assert {"torch.nn", "phenoprint.index", "phenoprint.index.build", "phenoprint.cli.main"} <= imports_of(f)
    assert "phenoprint.embedder.train" in imports_of(f)


def test_index_modules_load_without_torch_timm_or_the_embedder() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import phenoprint.index as index\n"
        "names = [m.name for m in pkgutil.walk_packages(index.__path__, 'phenoprint.index.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "loaded = [m for m in ('torch', 'timm', 'phenoprint.embedder') if m in sys.modules]\n"
        "print(json.dumps({'modules': names, 'loaded': loaded}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert len(report["modules"]) >= 15  # every module was imported, not an empty walk
    assert report["loaded"] == []


def test_embedder_never_imports_the_index() -> None:
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(n for n in imports_of(p) if n.startswith("phenoprint.index"))
        for p in (PACKAGE / "embedder").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_index_never_imports_torch_or_the_embedder() -> None:
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(
            n for n in imports_of(p) if n.split(".")[0] in TORCH_MODULES or n.startswith("phenoprint.embedder")
        )
        for p in (PACKAGE / "index").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_library_module_imports_the_cli_or_a_commands_module() -> None:
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(
            n
            for n in imports_of(p)
            if n == "phenoprint.cli" or n.startswith("phenoprint.cli.") or n.endswith("commands")
        )
        for p in library_files()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_data_imports_neither_the_embedder_nor_the_index() -> None:
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(
            n for n in imports_of(p) if n.startswith(("phenoprint.embedder", "phenoprint.index", "phenoprint.api"))
        )
        for p in (PACKAGE / "data").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_api_imports_torch_only_where_it_runs_the_model() -> None:
    def torchy(name: str) -> bool:
        parts = name.split(".")
        if parts[0] in TORCH_MODULES:
            return True
        return name.startswith("phenoprint.embedder.") and parts[2] in EMBEDDER_TORCH_MODULES

    offenders = {
        str(p.relative_to(PACKAGE)): sorted(n for n in imports_of(p) if torchy(n))
        for p in (PACKAGE / "api").rglob("*.py")
        if p.name not in API_TORCH_MODULES
    }
    # app.py names LoadedModel for typing only (TYPE_CHECKING): allowed, the model is never run there
    offenders["api/app.py"] = [n for n in offenders.get("api/app.py", []) if n != "phenoprint.embedder.inference"]
    offenders["api/app.py"] = [n for n in offenders["api/app.py"] if n != "phenoprint.embedder.inference.LoadedModel"]
    assert {k: v for k, v in offenders.items() if v} == {}
