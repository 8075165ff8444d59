"""Every import inside bulkgene runs downhill: a layer uses only the layers below it.

The ranks draw the pipeline's dependency order (CONTRIBUTING.md explains each layer). A unit
is a top-level module or a subpackage; imports within one unit are free. Type-only imports
(under ``if TYPE_CHECKING:``) may reach across the foundation, where they load nothing: the
error tree names the Summary it carries, and the Summary knows the exit codes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bulkgene

PACKAGE = Path(bulkgene.__file__).parent
FOUNDATION_RANK = 2
RANKS = {
    "errors": 0,
    "model": 1, "layout": 1, "processes": 1, "durable": 1, "version": 1,
    "config": 2,
    "input": 3, "ncbi": 3, "budget": 3,
    "output": 4,
    "net": 5,
    "results": 6,
    "run": 7,
    "export": 8, "facade": 8, "history": 8,
    "testing": 8,
    "cli": 9,
    "__init__": 10, "__main__": 10,
}


def _unit(module: str) -> str:
    """``bulkgene.net.client`` -> ``net``; ``bulkgene`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def _imports(tree: ast.Module) -> list[tuple[str, bool, int]]:
    """(imported module, under TYPE_CHECKING, line) for every bulkgene import in ``tree``."""
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from bulkgene import durable`` names a module; ``import X`` from the root
            # package's namespace is an import of the root itself
            names = ([node.module] if node.module != "bulkgene"
                     else [f"bulkgene.{alias.name}" if _is_module(alias.name) else "bulkgene"
                           for alias in node.names])
            found += [(name, id(node) in type_only, node.lineno) for name in names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, id(node) in type_only, node.lineno) for alias in node.names]
    return [item for item in found if item[0].split(".")[0] == "bulkgene"]


def _uphill_imports() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        importer = _unit(".".join(relative.parts).removesuffix(".__init__"))
        if relative.name == "__main__":
            importer = "__main__"
        for imported, type_only, line in _imports(ast.parse(path.read_text())):
            target = _unit(imported)
            if target == importer:
                continue
            below = RANKS[target] < RANKS[importer]
            typed_foundation = (type_only and RANKS[importer] <= FOUNDATION_RANK
                                and RANKS[target] <= FOUNDATION_RANK)
            if not (below or typed_foundation):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({importer}, rank "
                             f"{RANKS[importer]}) imports {imported} (rank {RANKS[target]})")
    return wrong


def test_every_unit_of_the_package_has_a_rank() -> None:
    units = {path.stem if path.parent == PACKAGE else path.relative_to(PACKAGE).parts[0]
             for path in PACKAGE.rglob("*.py")}
    assert units - set(RANKS) == set(), "give each new module or package a rank above"


def test_every_import_inside_bulkgene_runs_downhill() -> None:
    assert _uphill_imports() == []
