"""The package's shape as a maintainer relies on it: no import cycles between modules or
between folders, a definitions module that does nothing at import, no private Dagster tags,
nothing outside the repository."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "clevertap_assets"
TESTS = Path(__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(source: str, package: str) -> list[str]:
    """Every module, or module attribute, the source imports, at module level or inside a
    function, relative imports resolved against `package`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def imports_of(path: Path) -> set[str]:
    """Every project module a file imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return set(imported_names(path.read_text(encoding="utf-8"), package)) & set(MODULES)


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as the list of modules along it, or None (depth-first, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def folder_of(module: str) -> str:
    """A module's folder under the package (`clevertap_assets.source`), or the module itself
    for one at the top (`clevertap_assets.settings`)."""
    return ".".join(module.split(".")[:2])


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which folders each folder imports: a cycle here is two folders that each need the
    other, even when no single module cycle joins them."""
    folders: dict[str, set[str]] = {}
    for module, imported in graph.items():
        folders.setdefault(folder_of(module), set()).update(map(folder_of, imported))
    return {folder: imported - {folder} for folder, imported in folders.items()}


def closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(GRAPH[node])
    return seen


def imported_test_modules(source: str, package: str) -> list[str]:
    """The test modules (`test_*`, `conftest`) that code in `package` imports, relative
    imports resolved: shared helpers belong in helper modules (harness.py and its kind)."""
    return [
        c
        for c in imported_names(source, package)
        if c.startswith("clevertap_assets_tests.")
        and (c.rsplit(".", 1)[-1].startswith("test_") or c.endswith(".conftest"))
    ]


def test_the_test_import_finder_finds_each_form():
    package = "clevertap_assets_tests.automation"
    assert imported_test_modules("from clevertap_assets_tests.a.test_b import f", package) == [
        "clevertap_assets_tests.a.test_b"
    ]
    assert imported_test_modules("from clevertap_assets_tests.a import test_b", package) == [
        "clevertap_assets_tests.a.test_b"
    ]
    assert imported_test_modules("def f():\n    from .test_b import g", package) == [
        "clevertap_assets_tests.automation.test_b"
    ]
    assert imported_test_modules("from ..assets.test_c import h", package) == [
        "clevertap_assets_tests.assets.test_c"
    ]
    assert imported_test_modules("import clevertap_assets_tests.conftest", package) == [
        "clevertap_assets_tests.conftest"
    ]
    assert imported_test_modules("from clevertap_assets_tests.harness import x", package) == []


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")), ids=str
)
def test_no_test_module_imports_another_test_module(path):
    """A helper kept in a test module is hard to find and ties that file's edits to its
    importers; a test or fixture imported with it is collected a second time."""
    file = TESTS / path
    package = ".".join(["clevertap_assets_tests", *file.relative_to(TESTS).parent.parts])
    assert imported_test_modules(file.read_text(encoding="utf-8"), package) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_packages_modules():
    assert find_cycle(GRAPH) is None


def test_the_folder_graph_joins_modules_by_folder():
    graph = {
        "clevertap_assets.a.x": {"clevertap_assets.b.y"},
        "clevertap_assets.b.y": {"clevertap_assets.a.z"},
        "clevertap_assets.a.z": {"clevertap_assets.top"},
        "clevertap_assets.top": set(),
    }
    assert find_cycle(graph) is None
    assert folder_graph(graph) == {
        "clevertap_assets.a": {"clevertap_assets.b", "clevertap_assets.top"},
        "clevertap_assets.b": {"clevertap_assets.a"},
        "clevertap_assets.top": set(),
    }
    assert find_cycle(folder_graph(graph)) == [
        "clevertap_assets.a",
        "clevertap_assets.b",
        "clevertap_assets.a",
    ]


def test_the_folder_graph_has_every_folder_and_top_level_module():
    """A folder or module the graph left out could import both ways unseen."""
    entries = {
        f"clevertap_assets.{entry.stem}"
        for entry in PACKAGE.iterdir()
        if (entry.suffix == ".py" and entry.stem != "__init__")
        or (entry.is_dir() and any(entry.rglob("*.py")))
    }
    assert set(folder_graph(GRAPH)) == entries | {"clevertap_assets"}


def test_a_relative_import_counts_as_the_module_it_names():
    source = "from ..batch import spool\nfrom .client import x"
    assert imported_names(source, "clevertap_assets.source") == [
        "clevertap_assets.batch",
        "clevertap_assets.batch.spool",
        "clevertap_assets.source.client",
        "clevertap_assets.source.client.x",
    ]


def test_dependencies_run_one_way_between_the_packages_folders():
    """`source` may use `batch` or `batch` use `source`, not both: a folder is read, tested
    and moved with only the folders below it."""
    assert find_cycle(folder_graph(GRAPH)) is None


def environment_reads(source: str) -> list[int]:
    """The lines that read the environment (`os.environ`, `os.getenv`); setting a variable
    for processes started later (the demo's) is not reading."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for a in node.names if a.name in ("environ", "getenv")]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv")
        ):
            parent = parents.get(node)
            written = isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store)
            if not written:
                lines.append(node.lineno)
    return sorted(lines)


def test_the_environment_finder_tells_reads_from_writes():
    source = (
        "import os\nos.environ['A'] = '1'\nb = os.environ.get('B')\nc = os.getenv('C')\n"
        "from os import environ"
    )
    assert environment_reads(source) == [3, 4, 5]


ENVIRONMENT_READERS = {"clevertap_assets.settings", "clevertap_assets.emulator.config"}
"""Besides every folder's `settings` module: the emulator's own configuration."""


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_settings_modules_read_the_environment(name):
    """A variable read anywhere else is a setting nobody finds with the others, and escapes
    their one clear error."""
    if name in ENVIRONMENT_READERS or name.endswith(".settings"):
        return
    assert environment_reads(MODULES[name].read_text(encoding="utf-8")) == []


def test_the_definitions_never_import_the_emulator():
    reached = closure("clevertap_assets.definitions")
    assert not {m for m in reached if m.startswith("clevertap_assets.emulator")}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_dagster_tags_and_no_path_outside_the_repository(name):
    text = MODULES[name].read_text(encoding="utf-8")
    assert "dagster._core.storage.tags" not in text
    assert "/work/" not in text and "shared/clevertap-api" not in text


def test_importing_the_definitions_reads_nothing(tmp_path):
    """From another directory, with an empty environment: no settings, no events CSV."""
    result = subprocess.run(
        [sys.executable, "-c", "import clevertap_assets.definitions"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_the_read_path_imports_nothing_of_dagster():
    """`batch.export` (CleverTap pages to a deduplicated batch) is a library: the assets are
    glue over it, and it runs wherever polars and DuckDB do."""
    code = (
        "import sys, clevertap_assets.batch.export; "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('dagster')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
