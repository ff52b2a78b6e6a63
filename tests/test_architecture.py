"""The package's layout is its architecture: checked from the source alone (ast; nothing is imported or run).

Three layers. The building blocks (``models/``, ``data/``, ``attacks/``, ``train/``, ``tasks/``, ``vlm/``,
``metrics/``, ``results/``, ``leaderboard/`` and the small shared modules at the root) know nothing of the
layers above; the jobs (``jobs/``) compose them into whole runs; the CLI (``cli/``) parses, calls a job and
renders. So:

* no module outside ``cli/`` imports ``simclip_bench.cli``; the one exception is ``__main__``, whose only
  job is to start the CLI for ``python -m simclip_bench``;
* no building block imports ``simclip_bench.jobs``;
* no two modules import each other, directly or around a longer loop.

Every import is an edge: at module level or inside a function, under ``if TYPE_CHECKING:`` or not. A lazy
import defers a dependency, it does not remove it. An edge goes to the module the import names: ``from
simclip_bench.x import y`` to ``simclip_bench.x.y`` when that is a module, else to ``simclip_bench.x``. The
parent packages Python runs on the way (their ``__init__``) are not edges unless named.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "simclip_bench"
SOURCE_ROOT = Path(__file__).resolve().parents[1]
CLI = f"{PACKAGE}.cli"
JOBS = f"{PACKAGE}.jobs"
CLI_ENTRY_POINTS = {f"{PACKAGE}.__main__"}


def module_files(root: Path, package: str = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package ``__init__``), for every ``.py`` under the package."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def imported_names(path: Path, module: str, is_package: bool, package: str = PACKAGE) -> list[tuple[str, int]]:
    """Every name of ``package`` that ``path`` imports, with its line: absolute and relative, at any depth,
    plus ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name."""
    here = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from a import b``: the module ``a.b`` when b is a submodule, else ``a`` (see import_graph)
            found += [(f"{source}.{alias.name}" if alias.name != "*" else source, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.args[0].value, node.lineno))
    return [(name, line) for name, line in found if _within(name, package)]


def import_graph(root: Path = SOURCE_ROOT, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line importing it}; see the module docstring for what is an edge."""
    modules = module_files(root, package)
    graph: dict[str, dict[str, int]] = {}
    for module, (path, is_package) in modules.items():
        edges: dict[str, int] = {}
        for name, line in imported_names(path, module, is_package, package):
            while name and name not in modules:  # ``from a.b import some_function``: the module a.b
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def cli_imports_outside_cli(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{module} imports {target} (line {line})" for module, edges in sorted(graph.items())
            for target, line in sorted(edges.items())
            if _within(target, CLI) and not _within(module, CLI) and module not in CLI_ENTRY_POINTS]


def jobs_imported_by_building_blocks(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{module} imports {target} (line {line})" for module, edges in sorted(graph.items())
            for target, line in sorted(edges.items())
            if _within(target, JOBS) and not (_within(module, JOBS) or _within(module, CLI)
                                             or module in CLI_ENTRY_POINTS)]


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One loop ``[a, b, ..., a]`` per group of modules that import each other (Tarjan's components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # recursive: the package is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_loop_through(group, graph) for group in groups]


def _loop_through(group: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A shortest import loop from the group's first module back to itself (breadth-first)."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w in members and w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    return group  # not reached: a component of more than one module always has a loop


def _describe(loop: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(loop, loop[1:], strict=False)) + f" -> {loop[-1]}"


# ------------------------------------------------------------------------------------------- the package


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_no_module_outside_the_cli_imports_the_cli(graph):
    found = cli_imports_outside_cli(graph)
    assert not found, "library code must not import the CLI:\n" + "\n".join(found)


def test_no_building_block_imports_a_job(graph):
    found = jobs_imported_by_building_blocks(graph)
    assert not found, "building blocks must not import jobs/:\n" + "\n".join(found)


def test_the_package_has_no_import_cycle(graph):
    found = [_describe(loop, graph) for loop in import_cycles(graph)]
    assert not found, "import cycles:\n" + "\n".join(found)


def test_the_package_root_holds_only_the_small_shared_modules():
    root_modules = sorted(p.stem for p in (SOURCE_ROOT / PACKAGE).glob("*.py"))
    assert root_modules == ["__init__", "__main__", "devices", "eps", "errors", "grid", "progress", "provenance",
                            "runs"]


# ----------------------------------------------------------------------- the checker, on a made-up package


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, dict[str, int]]:
    for name, text in {"__init__.py": "", "cli/__init__.py": "", "cli/app.py": "console = None\n",
                       "jobs/__init__.py": "", **files}.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    return import_graph(tmp_path)


@pytest.mark.parametrize("text", [
    "from simclip_bench.cli.app import console\n",
    "import simclip_bench.cli.app as app\n",
    "from simclip_bench import cli\n",
    "from ..cli import app\n",
    "from ..cli.app import console\n",
    "def later():\n    from simclip_bench.cli.app import console\n    return console\n",
    "import importlib\nAPP = importlib.import_module('simclip_bench.cli.app')\n",
])
def test_the_checker_sees_every_form_of_importing_the_cli(tmp_path, text):
    graph = _package(tmp_path, {"models/loader.py": text})
    assert [line.split(" imports ")[0] for line in cli_imports_outside_cli(graph)] == ["simclip_bench.models.loader"]


def test_the_checker_lets_the_cli_and_the_entry_point_import_the_cli(tmp_path):
    graph = _package(tmp_path, {"__main__.py": "from simclip_bench.cli import app\n",
                                "cli/eval_cmd.py": "from simclip_bench.cli.app import console\n"})
    assert cli_imports_outside_cli(graph) == []


def test_the_checker_sees_a_building_block_importing_a_job(tmp_path):
    graph = _package(tmp_path, {"jobs/bench.py": "SUITES = {}\n",
                                "results/store.py": "def f():\n    from simclip_bench.jobs.bench import SUITES\n"})
    assert jobs_imported_by_building_blocks(graph) == ["simclip_bench.results.store imports simclip_bench.jobs.bench "
                                                       "(line 2)"]


def test_the_checker_finds_a_cycle_through_a_lazy_import(tmp_path):
    graph = _package(tmp_path, {
        "vlm/load.py": "from simclip_bench.vlm.base import Base\n\ndef load():\n    from .llava import load_llava\n",
        "vlm/base.py": "class Base: ...\n",
        "vlm/llava.py": "def load_llava():\n    from simclip_bench.vlm.load import NATIVE\n"})
    assert import_cycles(graph) == [["simclip_bench.vlm.llava", "simclip_bench.vlm.load", "simclip_bench.vlm.llava"]]


def test_the_checker_finds_a_longer_loop_and_no_loop_in_a_chain(tmp_path):
    chain = {"a.py": "import simclip_bench.b\n", "b.py": "from simclip_bench import c\n", "c.py": "X = 1\n"}
    assert import_cycles(_package(tmp_path / "chain", chain)) == []
    loop = {**chain, "c.py": "def f():\n    from . import a\n"}
    assert import_cycles(_package(tmp_path / "loop", loop)) == [
        ["simclip_bench.a", "simclip_bench.b", "simclip_bench.c", "simclip_bench.a"]]


def test_importing_a_name_from_a_package_init_is_an_edge_to_the_package(tmp_path):
    graph = _package(tmp_path, {
        "leaderboard/__init__.py": "from simclip_bench.leaderboard.render import render_leaderboard\n",
        "leaderboard/render.py": "def render_leaderboard(): ...\n",
        "jobs/bench.py": "from simclip_bench.leaderboard import render_leaderboard\n"})
    assert graph["simclip_bench.jobs.bench"] == {"simclip_bench.leaderboard": 1}
    assert graph["simclip_bench.leaderboard"] == {"simclip_bench.leaderboard.render": 1}
