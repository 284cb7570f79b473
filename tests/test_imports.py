"""The package's import structure (docs/architecture.md): every module imports on its own, npgpt's import
graph (entry points, function-level imports and package __init__s included) has no cycle and no import that
runs up a floor, only the registry names a family, layers import nothing of the models, and the functional
cores import no threads."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "npgpt"


def module_names(entry_points: bool = False) -> list[str]:
    """Every npgpt module; the `__main__` entry points only with entry_points (importing one runs a command)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__" and not entry_points:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def module_path(name: str) -> Path:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"


def imports_of(name: str) -> set[str]:
    """The npgpt modules `name` imports anywhere in its source: at the top, inside functions, and under
    `if __name__ == "__main__":` too (a command that runs a module imports what it names): for `from X import y`,
    X.y when that is a module, else X.  Standard-library and third-party modules are kept by their top name."""
    path = module_path(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known = set(module_names(entry_points=True))
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name if alias.name.startswith("npgpt") else alias.name.split(".")[0]
                       for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("npgpt"):
                out.add(target.split(".")[0])
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return out


def npgpt_graph() -> dict[str, set[str]]:
    """module -> the npgpt modules it imports, entry points and package __init__s included."""
    names = module_names(entry_points=True)
    return {n: {m for m in imports_of(n) if m in names and m != n} for n in names}


# The floors of docs/architecture.md, bottom first: a module imports only from lower floors, or from its own
# package (where the graph must still have no cycle).  Packages on one floor (the families) never import each
# other.  A module's floor is that of its longest listed prefix.
FLOORS: list[tuple[str, ...]] = [
    ("npgpt._checks", "npgpt._version", "npgpt._argparse"),
    ("npgpt.layers",),
    ("npgpt.gradcheck", "npgpt.io", "npgpt.sampling"),
    ("npgpt.runtime",),
    ("npgpt.optim", "npgpt.tokenizers"),
    ("npgpt.gpt2", "npgpt.llama"),
    ("npgpt.families",),
    ("npgpt.training",),
    ("npgpt.oracle",),
    ("npgpt.cli",),
    ("npgpt", "npgpt.__main__"),
]


def place(name: str) -> tuple[int, str]:
    """(floor, the listed prefix) of a module."""
    best = max((p for floor in FLOORS for p in floor if name == p or name.startswith(p + ".")), key=len)
    return next(i for i, floor in enumerate(FLOORS) if best in floor), best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every edge that goes up a floor, or across to another package of the same floor."""
    bad = []
    for a, targets in graph.items():
        fa, pa = place(a)
        for b in sorted(targets):
            fb, pb = place(b)
            if fb > fa or (fb == fa and pb != pa):
                bad.append(f"{a} -> {b}")
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        for m in graph[n] - seen:
            seen.add(m)
            todo.append(m)
    return seen


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_import_graph_has_no_cycle():
    graph = npgpt_graph()
    assert "npgpt.gpt2.core" in graph and "npgpt.layers.linear" in graph["npgpt.layers.mlp"]  # the graph is real
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_runs_up_a_floor():
    graph = npgpt_graph()
    assert set(graph) == set(module_names(entry_points=True))  # every module has a floor
    for name in graph:
        place(name)
    bad = upward_imports(graph)
    assert not bad, "imports that run up (or across) a floor: " + ", ".join(bad)


def test_the_floor_checker_finds_an_upward_import():
    assert upward_imports({"npgpt.layers.linear": {"npgpt.gpt2.core"}, "npgpt.gpt2.core": set()}) == \
        ["npgpt.layers.linear -> npgpt.gpt2.core"]
    assert upward_imports({"npgpt.llama.core": {"npgpt.gpt2.core"}, "npgpt.gpt2.core": set()}) == \
        ["npgpt.llama.core -> npgpt.gpt2.core"]  # two families on one floor
    assert upward_imports({"npgpt.cli.main": {"npgpt.training.loop"}, "npgpt.training.loop": set()}) == []


def test_only_the_registry_names_a_family():
    """Outside a family's own package, only the registry (families.py), the package root and the oracle's
    per-family case files import a family's modules; everything else asks npgpt.families."""
    families = ("npgpt.gpt2", "npgpt.llama")
    allowed = ("npgpt", "npgpt.families", "npgpt.oracle.gpt2_cases", "npgpt.oracle.llama_cases",
               "npgpt.oracle.decoder_cases")
    graph = npgpt_graph()
    for name, targets in graph.items():
        own = next((f for f in families if name == f or name.startswith(f + ".")), None)
        named = {m for m in targets if any(m == f or m.startswith(f + ".") for f in families if f != own)}
        if name not in allowed:
            assert not named, f"{name} imports {sorted(named)}: ask npgpt.families instead"


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """Each module is imported first, with no npgpt module loaded before it (numpy and scipy stay loaded:
    only npgpt's own order can break an import)."""
    script = (
        "import importlib, json, sys, traceback\n"
        "failed = {}\n"
        f"for name in {module_names()!r}:\n"
        "    for m in [m for m in sys.modules if m == 'npgpt' or m.startswith('npgpt.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed[name] = traceback.format_exc(limit=3)\n"
        "print(json.dumps(failed))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{k}:\n{v}" for k, v in failed.items())


def test_layers_import_nothing_of_the_models():
    graph = npgpt_graph()
    allowed = {"npgpt._checks"}
    for name in graph:
        if name.startswith("npgpt.layers"):
            bad = {m for m in graph[name] if not m.startswith("npgpt.layers") and m not in allowed}
            assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("core", ["npgpt.gpt2.core", "npgpt.llama.core"])
def test_the_functional_core_imports_no_threads_or_buffers(core):
    graph = npgpt_graph()
    reached = reachable(graph, core) | {core}
    fast = {m for m in graph if m.startswith("npgpt.runtime")} | {"npgpt.gpt2.model", "npgpt.optim"}
    assert not reached & fast, f"{core} reaches {sorted(reached & fast)}"
    thread_modules = {"threading", "concurrent", "multiprocessing", "subprocess", "mmap", "ctypes"}
    for name in reached:
        used = imports_of(name) & thread_modules
        assert not used, f"{name} (imported by {core}) imports {sorted(used)}"


def test_tokenizers_import_nothing_of_the_models():
    graph = npgpt_graph()
    for name in graph:
        if name.startswith("npgpt.tokenizers"):
            bad = {m for m in reachable(graph, name)
                   if m.startswith(("npgpt.gpt2.core", "npgpt.gpt2.model", "npgpt.llama", "npgpt.layers"))}
            assert not bad, f"{name} reaches {sorted(bad)}"


def test_module_list_matches_the_package():
    names = module_names()
    assert "npgpt" in names and "npgpt.oracle.registry" in names and "npgpt.__main__" not in names
    assert "npgpt.__main__" in module_names(entry_points=True)
    assert json.dumps(names)  # plain strings, as the subprocess script needs
