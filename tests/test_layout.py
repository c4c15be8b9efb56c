"""The floors of the harness point one way (../shared/STYLE.md, "Layout that shows the pipeline"):
pixels at the bottom, then the network, the zoo of variants, the artefacts that leave a process,
data, training, codecs, the leaderboard and report, reruns; no module imports a floor above its
own, no import cycle, and no import of the harness hides inside a function (cli.py's, which keep
start-up fast, excepted). Read from the source with ast, so an import inside a function counts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (relative imports resolved)."""
    package = ".".join(path.relative_to(HARNESS.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.update(f"{base}.{alias.name}" for alias in node.names)
            found.add(base)
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# Bottom to top. The shared helpers (errors, atomic writes, hashing, locks, Ray connection, the
# paper's constants) are the floor under pixels; eval/leaderboard/report are one floor above codecs.
FLOORS = (
    ("errors", "atomic", "hashing", "slug", "configs", "kernels", "process_memory", "lock", "provenance", "raycluster", "paper",
     "precisions"),
    ("pixels",),
    ("wavelets",),
    ("model",),
    ("zoo",),
    ("artefacts",),
    ("data",),
    ("train",),
    ("codecs",),
    ("eval", "leaderboard", "report"),
    ("rerun",),
    ("cli", "flags", "__main__"),
)


def _modules() -> dict[str, Path]:
    return {".".join(path.relative_to(HARNESS.parent).with_suffix("").parts).removesuffix(".__init__"): path
            for path in sorted(HARNESS.rglob("*.py"))}


def _floor(module: str) -> int | None:
    """The floor of a module of the harness; None for the package itself (``harness.__version__``)."""
    top = module.split(".")[1] if module.count(".") else ""
    return next((level for level, names in enumerate(FLOORS) if top in names), None)


def _imported_harness_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the harness ``path`` imports: ``from harness.model import exact`` is the
    module harness.model.exact, ``from harness.model import WeConvene`` the package harness.model."""
    name = ".".join(path.relative_to(HARNESS.parent).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names)
    return {module for module in found if module in modules} - {name}


def test_every_package_has_a_floor():
    unplaced = sorted(m for m in _modules() if m != "harness" and _floor(m) is None)
    assert not unplaced, f"add to FLOORS: {', '.join(unplaced)}"


def test_no_module_imports_a_floor_above_its_own():
    modules = _modules()
    wrong = sorted(f"{name} imports {other}" for name, path in modules.items() if name != "harness"
                   for other in _imported_harness_modules(path, modules)
                   if other != "harness" and _floor(other) > _floor(name))
    assert not wrong, "; ".join(wrong)


@pytest.mark.parametrize("package, forbidden", [
    ("model", ("harness.zoo", "harness.artefacts", "harness.data", "harness.train", "harness.codecs", "harness.eval",
               "harness.leaderboard", "harness.report", "harness.rerun")),
    ("zoo", ("harness.artefacts", "harness.data", "harness.train", "harness.codecs", "harness.eval",
             "harness.leaderboard", "harness.report", "harness.rerun")),
    # the report reads the leaderboard's records, never the reverse
    ("leaderboard", ("harness.report", "harness.train", "harness.rerun")),
    ("report", ("harness.train", "harness.rerun")),
])
def test_a_package_imports_nothing_above_it(package, forbidden):
    wrong = sorted(f"{path.relative_to(HARNESS.parent)} imports {module}"
                   for path in sorted((HARNESS / package).rglob("*.py"))
                   for module in imported_modules(path) if any(_within(module, up) for up in forbidden))
    assert not wrong, "; ".join(wrong)


def test_pixels_import_nothing_of_the_harness_but_its_errors():
    wrong = sorted(f"{path.relative_to(HARNESS.parent)} imports {module}"
                   for path in sorted((HARNESS / "pixels").rglob("*.py"))
                   for module in imported_modules(path)
                   if _within(module, "harness") and not _within(module, "harness.pixels")
                   and not _within(module, "harness.errors"))
    assert not wrong, "; ".join(wrong)


def test_no_import_of_the_harness_inside_a_function():
    """An import in a function hides an arrow (or a cycle) from the module's head; cli.py's keep
    each command's start-up to the modules it needs."""
    wrong = []
    for path in sorted(HARNESS.rglob("*.py")):
        if path == HARNESS / "cli.py":
            continue
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(function):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else
                         ["(relative)"] if isinstance(node, ast.ImportFrom) else [])
                if any(name == "(relative)" or _within(name, "harness") for name in names):
                    wrong.append(f"{path.relative_to(HARNESS.parent)}:{node.lineno}")
    assert not wrong, "imports of the harness inside functions: " + ", ".join(sorted(set(wrong)))


def test_no_private_name_is_imported_across_modules():
    wrong = sorted(f"{path.relative_to(HARNESS.parent)}:{node.lineno} imports {alias.name}"
                   for path in sorted(HARNESS.rglob("*.py"))
                   for node in ast.walk(ast.parse(path.read_text(), str(path)))
                   if isinstance(node, ast.ImportFrom) and (node.level or _within(node.module or "", "harness"))
                   for alias in node.names if alias.name.startswith("_") and alias.name != "__version__")
    assert not wrong, "; ".join(wrong)


def test_the_walk_sees_imports_inside_functions():
    """The check above would pass vacuously if the walk missed function-level imports."""
    source = HARNESS / "cli.py"
    assert "harness.report.publish" in imported_modules(source)


def test_no_import_cycle():
    modules = _modules()
    edges = {name: _imported_harness_modules(path, modules) for name, path in modules.items()}

    def cycle_from(start: str, path: tuple[str, ...], seen: set[str]) -> tuple[str, ...] | None:
        for after in sorted(edges[path[-1]]):
            if after == start:
                return path + (start,)
            if after not in seen:
                seen.add(after)
                found = cycle_from(start, path + (after,), seen)
                if found:
                    return found
        return None

    cycles = [cycle for name in modules if (cycle := cycle_from(name, (name,), {name}))]
    assert not cycles, " -> ".join(cycles[0])
