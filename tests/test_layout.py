"""The floors of the harness point one way: the leaderboard engine never imports the report
(the report reads the leaderboard's records) nor training, and neither package imports
training. Read from the source with ast, so an import inside a function counts too."""

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


@pytest.mark.parametrize("package, forbidden", [
    ("leaderboard", ("harness.report", "harness.train", "harness.rerun")),
    ("report", ("harness.train", "harness.rerun")),
])
def test_a_package_imports_nothing_above_it(package, forbidden):
    wrong = sorted(f"{path.relative_to(HARNESS.parent)} imports {module}"
                   for path in sorted((HARNESS / package).glob("*.py"))
                   for module in imported_modules(path) if any(_within(module, up) for up in forbidden))
    assert not wrong, "; ".join(wrong)


def test_the_walk_sees_imports_inside_functions():
    """The check above would pass vacuously if the walk missed function-level imports."""
    source = HARNESS / "cli.py"
    assert "harness.report.publish" in imported_modules(source)


def test_no_import_cycle_within_the_leaderboard_and_the_report():
    modules = {".".join(path.relative_to(HARNESS.parent).with_suffix("").parts): path
               for package in ("leaderboard", "report") for path in sorted((HARNESS / package).glob("*.py"))}
    edges = {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}

    def cycle_from(start: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for after in sorted(edges[path[-1]]):
            if after == start:
                return path + (start,)
            if after not in path:
                found = cycle_from(start, path + (after,))
                if found:
                    return found
        return None

    cycles = [cycle for name in modules if (cycle := cycle_from(name, (name,)))]
    assert not cycles, " -> ".join(cycles[0])
