"""The package's layout is its architecture: checked from the source alone (ast; nothing is imported or run),
except the last check, which starts the CLI.

Three layers. The building blocks (``models/``, ``data/``, ``attacks/``, ``train/``, ``tasks/``, ``vlm/``,
``metrics/``, ``results/``, ``leaderboard/`` and the small shared modules at the root) know nothing of the
layers above; the jobs (``jobs/``) compose them into whole runs; the CLI (``cli/``) parses, calls a job and
renders. So:

* no module outside ``cli/`` imports ``simclip_bench.cli``; the one exception is ``__main__``, whose only
  job is to start the CLI for ``python -m simclip_bench``;
* no building block imports ``simclip_bench.jobs``;
* no two modules import each other, directly or around a longer loop;
* no arrow runs back up: every area has a rank (:data:`RANKS`, lowest first), and a module imports only
  from its own area or from areas of a lower rank (the building blocks are ordered too: a VLM is built
  from models, data and metrics, the tasks attack VLMs, training evaluates with the zero-shot task);
* no library module is longer than :data:`MAX_MODULE_LINES` lines;
* ``simclip ls`` and every ``--help`` import none of the heavy libraries (:data:`HEAVY`), so they answer at
  once; checked from the modules loaded, not from a timing.

Every import is an edge: at module level or inside a function, under ``if TYPE_CHECKING:`` or not. A lazy
import defers a dependency, it does not remove it. An edge goes to the module the import names: ``from
simclip_bench.x import y`` to ``simclip_bench.x.y`` when that is a module, else to ``simclip_bench.x``. The
parent packages Python runs on the way (their ``__init__``) are not edges unless named.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "simclip_bench"
SOURCE_ROOT = Path(__file__).resolve().parents[1]
CLI = f"{PACKAGE}.cli"
JOBS = f"{PACKAGE}.jobs"
CLI_ENTRY_POINTS = {f"{PACKAGE}.__main__"}
MAX_MODULE_LINES = 350
# Areas from the bottom up. An area is a sub-package, a root module named in ROOT_AREAS, or "": the package's
# __init__ and the small shared modules at its root. A module may import its own area and any area of a lower
# rank, never one of its rank or above.
ROOT_AREAS = {"runs", "__main__"}
RANKS: dict[str, int] = {
    "": 0,  # errors, grid, progress, devices, provenance, lr_schedule, multiple_choice
    "models": 1, "data": 1, "attacks": 1, "metrics": 1,
    "memory": 1,  # the batch that halves on out-of-memory: used by every batched loop above
    "runs": 2,  # run directories: named by the encoder file of models/
    "results": 3,  # the result store and model cards: rows about models, data and attacks, cards of runs
    "vlm": 4,  # VLMs: a language model around an encoder of models/, identified as results/ names them
    "tasks": 5,  # zero-shot, captioning, VQA: attacks on models and VLMs, stored as results/ rows
    "train": 6,  # fine-tuning, which probes with the zero-shot task
    "leaderboard": 7,  # renders results/
    "plan": 7,  # the cost plan (--dry-run): budgets of attacks and training counted on the architectures below
    "jobs": 8,  # whole runs of everything below
    "cli": 9,
    "__main__": 10,  # python -m simclip_bench: starts the CLI
}
# The libraries whose import takes seconds; ``simclip ls`` and ``--help`` must not need them.
HEAVY = ("torch", "torchvision", "open_clip", "transformers", "pandas", "matplotlib")


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


def area_of(module: str) -> str:
    """``simclip_bench.models.spec`` -> ``models``; ``simclip_bench.runs`` -> ``runs`` (:data:`ROOT_AREAS`);
    ``simclip_bench.errors`` and the package itself -> ``""`` (the shared modules)."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANKS):  # a sub-package's module or __init__, ROOT_AREAS
        return parts[1]
    return ""


def upward_imports(graph: dict[str, dict[str, int]], ranks: dict[str, int] = RANKS) -> list[str]:
    """Every import of another area whose rank is not lower than the importer's (an unranked area counts as
    the top: it may import everything, and nothing may import it, until it is given a rank)."""
    top = max(ranks.values()) + 1
    found = []
    for module, edges in sorted(graph.items()):
        here = area_of(module)
        for target, line in sorted(edges.items()):
            there = area_of(target)
            if there != here and ranks.get(there, top) >= ranks.get(here, top):
                found.append(f"{module} (rank {ranks.get(here, top)}) imports {target} (rank "
                             f"{ranks.get(there, top)}), line {line}")
    return found


def long_modules(root: Path, package: str = PACKAGE, limit: int = MAX_MODULE_LINES) -> list[str]:
    return [f"{path.relative_to(root)}: {n} lines" for path in sorted((root / package).rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > limit]


def cli_probes() -> list[list[str]]:
    """``simclip`` alone, ``--help`` of the CLI and of every command, and ``ls`` of every kind."""
    from simclip_bench.jobs.listing import KINDS

    return [[], ["--help"], *([name, "--help"] for name in registered_commands()), *(["ls", k] for k in KINDS)]


def registered_commands() -> list[str]:
    """The names of the CLI's commands, read from its sources: ``@app.command(name=...)`` or the function name."""
    names = []
    for path in sorted((SOURCE_ROOT / PACKAGE / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "command":
                    named = [k.value.value for k in deco.keywords if k.arg == "name"]
                    names.append(named[0] if named else node.name.replace("_", "-"))
    return names


_PROBE = """
import contextlib, io, json, sys
heavy, probes = set(sys.argv[1].split(",")), json.loads(sys.argv[2])
from simclip_bench.cli import app
found = {}
for args in probes:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            app(args, prog_name="simclip")
        except SystemExit:
            pass
    loaded = sorted(heavy & {name.split(".")[0] for name in sys.modules})
    if loaded:  # later probes would inherit these modules: stop at the first command that loaded them
        found[" ".join(["simclip", *args])] = loaded
        break
print(json.dumps(found))
"""


def heavy_imports_of(probes: list[list[str]], heavy: tuple[str, ...] = HEAVY) -> dict[str, list[str]]:
    """Run the CLI on each argument list in turn, in one fresh interpreter; the first that loaded a heavy
    library, with those libraries (empty: none did)."""
    done = subprocess.run([sys.executable, "-c", _PROBE, ",".join(heavy), json.dumps(probes)], cwd=SOURCE_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    assert root_modules == ["__init__", "__main__", "devices", "errors", "grid", "lr_schedule", "multiple_choice",
                            "progress", "provenance", "runs"]


def test_no_arrow_runs_back_up(graph):
    found = upward_imports(graph)
    assert not found, "imports of an area of the same or a higher rank (see RANKS):\n" + "\n".join(found)


def test_every_area_has_a_rank(graph):
    assert sorted({area_of(m) for m in graph} - set(RANKS)) == []


def test_no_library_module_is_longer_than_350_lines():
    found = long_modules(SOURCE_ROOT)
    assert not found, f"modules over {MAX_MODULE_LINES} lines (split them by concern):\n" + "\n".join(found)


def test_ls_and_every_help_import_no_heavy_library():
    found = heavy_imports_of(cli_probes())
    assert found == {}, f"these commands imported {', '.join(HEAVY)}-class libraries: {found}"


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


def test_the_checker_sees_an_arrow_back_up_or_sideways_and_lets_arrows_run_down(tmp_path):
    graph = _package(tmp_path, {
        "train/schedule.py": "X = 1\n",
        "vlm/tiny_train.py": "from simclip_bench.train.schedule import X\n",  # up: vlm is below train
        "models/spec.py": "def f():\n    from simclip_bench.data import shapes\n",  # sideways: same rank
        "data/shapes.py": "from simclip_bench.errors import UserError\n",  # down, to the shared modules
        "errors.py": "class UserError(Exception): ...\n",
        "train/loop.py": "from simclip_bench.vlm.tiny_train import X\nfrom simclip_bench.train import schedule\n"})
    assert upward_imports(graph) == [
        "simclip_bench.models.spec (rank 1) imports simclip_bench.data.shapes (rank 1), line 2",
        "simclip_bench.vlm.tiny_train (rank 4) imports simclip_bench.train.schedule (rank 6), line 1"]


def test_the_checker_counts_the_lines_of_every_module(tmp_path):
    _package(tmp_path, {"models/big.py": "x = 1\n" * (MAX_MODULE_LINES + 1), "models/ok.py": "x = 1\n" * 350})
    assert long_modules(tmp_path) == [f"simclip_bench/models/big.py: {MAX_MODULE_LINES + 1} lines"]


def test_the_probe_sees_a_heavy_import():
    assert heavy_imports_of([["ls", "attacks"], ["--help"]], heavy=("rich", "no_such_library")) == {
        "simclip ls attacks": ["rich"]}
