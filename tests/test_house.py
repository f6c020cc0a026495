"""The house's size limits: no library function over 80 lines, no module over 400 lines without a reason."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "phenoprint"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400
#: How a long module's docstring says why it stays one module.
REASON = "Kept as one module although long:"


def long_functions(root: Path, over: int) -> list[str]:
    """``path:line name (n lines)`` of every function or method under ``root`` longer than ``over`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > over:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def long_modules_without_reason(root: Path, over: int) -> list[str]:
    """Modules under ``root`` longer than ``over`` lines whose docstring does not say why they stay whole."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > over and REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            found.append(str(path.relative_to(root.parent)))
    return found


def test_no_library_function_is_over_80_lines() -> None:
    assert long_functions(PACKAGE, MAX_FUNCTION_LINES) == []


def test_every_module_over_400_lines_says_why_in_its_docstring() -> None:
    assert long_modules_without_reason(PACKAGE, MAX_MODULE_LINES) == []


def test_the_checks_see_a_long_function_and_a_long_module(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(85))
    method = body.replace("    ", "        ")
    (pkg / "long.py").write_text(
        f'"""A module."""\n\n\ndef f() -> None:\n{body}\n\nclass C:\n    def m(self):\n{method}'
    )
    (pkg / "short.py").write_text('"""Short."""\n\n\ndef g() -> None:\n    pass\n')
    (pkg / "kept.py").write_text(f'"""Long.\n\n{REASON} a reason.\n"""\n' + "x = 1\n" * 500)
    assert long_functions(pkg, MAX_FUNCTION_LINES) == ["pkg/long.py:4 f (86 lines)", "pkg/long.py:93 m (86 lines)"]
    assert long_modules_without_reason(pkg, 100) == ["pkg/long.py"]
