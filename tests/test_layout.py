"""The package's layout rules, checked on the code itself (docs/architecture.md, "Layout")."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aup"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_private_name_is_imported_from_another_module() -> None:
    """A name another module needs is part of its module's interface: it has no leading underscore."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        me = _module(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aup"):
                found += [f"{me} imports {node.module}.{alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__") and node.module != me]
    assert not found, "\n".join(sorted(found))


def test_no_relative_imports() -> None:
    """Absolute imports only, so moving a module never changes what its imports mean."""
    found = [f"{_module(path)}:{node.lineno}" for path in PACKAGE.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom) and node.level]
    assert not found, found


def test_the_deploy_graph_artifact_and_shrink_packages_never_import_compressors() -> None:
    """The services under compression/torch (graph, shrink, deploy, artifact) sit below the compressors:
    they never import the pruners, the quantizers' classes, the pipeline or the factory."""
    upward = ("aup.compression.torch.pruners", "aup.compression.torch.pipeline", "aup.compression.factory",
              "aup.compression.torch.base")
    found = []
    for package in ("graph", "shrink", "deploy", "artifact"):
        for path in (PACKAGE / "compression" / "torch" / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(upward):
                    found.append(f"{_module(path)} imports {node.module}")
    assert not found, found
