"""The engine package never imports prefect (ARCHITECTURE.md principle 1)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "reelforge"


def _modules() -> list[str]:
    names = []
    for path in sorted(ENGINE.rglob("*.py")):
        rel = path.relative_to(ENGINE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_no_prefect_import_statement_in_engine() -> None:
    offenders = []
    for path in ENGINE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for stmt in ast.walk(tree):
            names: list[str] = []
            if isinstance(stmt, ast.Import):
                names = [a.name for a in stmt.names]
            elif isinstance(stmt, ast.ImportFrom) and stmt.module:
                names = [stmt.module]
            offenders += [f"{path}:{stmt.lineno}" for n in names if n.split(".")[0] in {"prefect", "flows", "tasks"}]
    assert offenders == []


def test_importing_every_engine_module_leaves_prefect_unloaded() -> None:
    modules = _modules()
    assert "reelforge.comfy.client" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------------------------------------- layers

ROOT = ENGINE.parent
PACKAGES = {p.name for p in ENGINE.iterdir() if (p / "__init__.py").exists()}


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in a file, except those under ``if TYPE_CHECKING:`` (no runtime edge)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _unit(module: str) -> str:
    """``reelforge.comfy.client`` -> ``comfy``; ``reelforge.engine`` -> ``engine``."""
    return module.split(".")[1]


def _engine_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in ENGINE.rglob("*.py"):
        rel = path.relative_to(ENGINE).parts
        source = rel[0].removesuffix(".py")
        for _, module in _imports(path):
            if module.startswith("reelforge.") and _unit(module) != source:
                edges.setdefault(source, set()).add(_unit(module))
    return edges


def test_comfy_imports_neither_templates_nor_preview() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in (ENGINE / "comfy").rglob("*.py")
        for line, module in _imports(path)
        if module.startswith(("reelforge.templates", "reelforge.preview"))
    ]
    assert offenders == []


def test_no_engine_package_imports_one_that_imports_it_back() -> None:
    edges = _engine_edges()
    assert "preview" in edges.get("fleet", set())  # the scan sees the edges it should

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, set()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if reaches(b, a, {b}))
    assert cycles == []


def test_pure_modules_import_no_io_packages() -> None:
    pure = ["reelforge.characters", "reelforge.storage.keys", "reelforge.hashing"]
    io = ["httpx", "aiohttp", "websockets", "boto3", "botocore", "s3transfer", "prefect", "PIL", "numpy"]
    code = (
        "import importlib, sys\n"
        f"for m in {pure!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in {io!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_tasks_and_flows_import_the_engine_through_its_public_names() -> None:
    offenders = []
    for folder in ("tasks", "flows"):
        for path in (ROOT / folder).rglob("*.py"):
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[0] == "reelforge" and len(parts) > 2 and parts[1] in PACKAGES:
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offenders == []
