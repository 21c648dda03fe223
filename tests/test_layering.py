"""Imports go down only, and private names stay inside their own subpackage.

Layers, from the ground up (a module may import its own layer or a lower one, never a higher one):

0. the top-level private helpers (``chromtools._utils``, ``_docs``, ``_lazy``): no chromtools imports;
1. ``io``: files in and out;
2. ``datasets``, ``pp``, ``metrics``: data, preprocessing and scores, built on ``io``;
3. ``models``: the scvi-tools models, built on the layers above;
4. ``tl``: the tools that fit and apply models;
5. ``pl``, ``_cli``, ``_demo``: plots and the entry points, which may use everything.

Same-layer imports between subpackages are allowed (``metrics`` computes an LSI through ``ct.pp``)
as long as they use the public names. An import counts wherever it sits: at module level, inside a
function, or under ``TYPE_CHECKING``. ``chromtools/__init__.py`` names every namespace for type
checkers and is the only module exempt.

Private names (a module or name starting with ``_``) are used only inside their own subpackage: a
package's ``__init__`` re-export is the public way in. The top-level private helpers of layer 0 are
shared by the whole package, but not their own ``_``-names. Tests under ``tests/<pkg>/`` may reach
into the private modules of ``<pkg>`` (and only that one); top-level tests (``tests/test_*.py``)
may import the top-level private modules (``chromtools._demo``, ``_cli``) they test. Tutorials and
benchmarks use the public API only, as a user would.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "chromtools"

LAYERS = {
    "_utils": 0,
    "_docs": 0,
    "_lazy": 0,
    "io": 1,
    "datasets": 2,
    "pp": 2,
    "metrics": 2,
    "models": 3,
    "tl": 4,
    "pl": 5,
    "_cli": 5,
    "_demo": 5,
}
GROUND = {name for name, layer in LAYERS.items() if layer == 0}

# Violations allowed while someone fixes them: (importing file relative to src/, imported target).
# Empty: nothing may be added here without an issue that removes it.
ALLOWED: set[tuple[str, str]] = set()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """Every chromtools import in a tree: (target module, imported names, line)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "chromtools"]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if target.split(".")[0] == "chromtools":
                found.append((target, [a.name for a in node.names], node.lineno))
    return found


def _targets(target: str, names: list[str]) -> list[tuple[str, ...]]:
    """The imported objects as dotted paths below ``chromtools``; ``from chromtools import tl`` names ``tl``."""
    parts = tuple(target.split(".")[1:])
    if not names:
        return [parts]
    return [(*parts, name) for name in names]


def _private_part(path: tuple[str, ...]) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in path)


def _source_modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _module_name(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _top(parts: tuple[str, ...]) -> str:
    return parts[0] if parts else ""


def _source_violations() -> list[str]:
    problems = []
    for path in _source_modules():
        module, is_package = _module_name(path)
        rel = path.relative_to(SRC.parent).as_posix()
        if module == "chromtools":
            continue
        own = module.split(".")[1]
        own_layer = LAYERS[own]
        for target, names, line in _imports(ast.parse(path.read_text()), module, is_package):
            for obj in _targets(target, names):
                dotted = ".".join(["chromtools", *obj])
                if (rel, dotted) in ALLOWED or (rel, target) in ALLOWED:
                    continue
                other = _top(obj)
                if other.startswith("__"):  # the package's own metadata, e.g. chromtools.__version__
                    continue
                if other not in LAYERS:
                    problems.append(f"{rel}:{line} imports {dotted}, a part of chromtools with no layer")
                    continue
                if LAYERS[other] > own_layer:
                    problems.append(f"{rel}:{line} imports {dotted} from a higher layer ({other} above {own})")
                if other != own:
                    # the package (or ground module) itself may be private; what is taken from it may not
                    if _private_part(obj[1:]):
                        problems.append(f"{rel}:{line} imports the private {dotted} of another package")
    return problems


def test_imports_go_down_and_stay_public():
    problems = _source_violations()
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_allowlist_has_no_stale_entries():
    """Each allowed violation still exists; delete its entry once the import is gone."""
    seen = set()
    for path in _source_modules():
        module, is_package = _module_name(path)
        rel = path.relative_to(SRC.parent).as_posix()
        for target, names, _ in _imports(ast.parse(path.read_text()), module, is_package):
            seen.add((rel, target))
            seen.update((rel, ".".join(["chromtools", *obj])) for obj in _targets(target, names))
    stale = sorted(ALLOWED - seen)
    assert not stale, f"allowlist entries no longer needed: {stale}"


def _test_violations(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    parts = path.relative_to(ROOT / "tests").parts
    tested = parts[0] if len(parts) > 1 else None
    problems = []
    for target, names, line in _imports(ast.parse(path.read_text()), "tests", True):
        for obj in _targets(target, names):
            other = _top(obj)
            if other == tested:
                continue
            # a top-level test may import a top-level private module and its public names
            reach = obj[1:] if tested is None and other.startswith("_") else obj
            if _private_part(reach):
                problems.append(f"{rel}:{line} imports the private chromtools.{'.'.join(obj)}")
    problems += [f"{rel}:{line} {p}" for line, p in _private_attribute_nodes(ast.parse(path.read_text()), tested)]
    return problems


def _private_attribute_nodes(tree: ast.AST, tested: str | None) -> list[tuple[int, str]]:
    """``ct.models._track_data`` and the like: a private module reached through a namespace attribute."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id in {"ct", "chromtools"}
            and node.value.attr != tested
            and _private_part((node.attr,))
        ):
            found.append((node.lineno, f"uses the private {node.value.value.id}.{node.value.attr}.{node.attr}"))
    return found


# ``ct.models._track_data.bigwig_mean`` and the like: a private attribute reached through the namespaces.
_PRIVATE_ATTRIBUTE = re.compile(r"\b(?:ct|chromtools)\.(\w+)\.(_[a-z]\w*)")
_PRIVATE_FROM = re.compile(r"from\s+chromtools\.(\w+)\.(_\w+)\s+import|from\s+chromtools\.(\w+)\s+import\s+(_\w+)")
_PRIVATE_HELPER = re.compile(r"\b_quiet_lightning\b")


def _user_code_violations(text: str) -> list[str]:
    found = [f"uses the private {m.group(0)}" for m in _PRIVATE_ATTRIBUTE.finditer(text)]
    found += [f"imports the private {m.group(0)}" for m in _PRIVATE_FROM.finditer(text)]
    found += [f"calls the private {m.group(0)}" for m in _PRIVATE_HELPER.finditer(text)]
    return found


@pytest.mark.parametrize(
    "path", sorted((ROOT / "tests").rglob("test_*.py")), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_tests_reach_only_into_the_package_they_test(path):
    problems = _test_violations(path)
    assert not problems, "\n".join(problems)


def _notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "tutorials").glob("*.ipynb")), *sorted((ROOT / "benchmarks").glob("*.py"))],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_tutorials_and_benchmarks_use_the_public_api(path):
    text = _notebook_code(path) if path.suffix == ".ipynb" else path.read_text()
    problems = _user_code_violations(text)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)
