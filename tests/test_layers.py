"""The import graph of `boltzformer`, read from its sources (ast; nothing is imported):
every import points to the same layer or a lower one, and no modules import each other in
a cycle. Imports inside functions count too (they cannot hide a cycle or an upward import).

    4 commands   cli.py, __main__.py, commands/: argument parsing only
    3 apps       apps/: the web app, demo, study, benchmarks, throughput
    2 library    train/, evaluation/, inference/, baselines/ (the U-Net trainer), and the
                 package's public names (__init__)
    1 data/io    data/
    0 modeling   modeling/ (with the loss and the release's weights), baselines/unet.py

The experiment scripts of benchmarks/ sit above the package, beside the commands: they call
what a Python user calls (the library and the apps, never a command module), and every
`boltzformer` module and name they import exists, so that moving a function breaks a test
here rather than a script months later.
"""

from __future__ import annotations

import ast
import pkgutil
from collections.abc import Iterator
from pathlib import Path

LAYERS = ("modeling", "data/io", "library", "apps", "commands")
ROOT = Path(__file__).resolve().parents[1] / "src" / "boltzformer"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def layer(module: str) -> int:
    """The layer of a module (dotted name), 0 (modeling) to 4 (commands)."""
    def under(package: str) -> bool:
        return module == package or module.startswith(package + ".")

    if under("boltzformer.apps"):
        return 3
    if under("boltzformer.commands") or module in ("boltzformer.cli", "boltzformer.__main__"):
        return 4
    if under("boltzformer.modeling") or module == "boltzformer.baselines.unet":
        return 0
    if under("boltzformer.data"):
        return 1
    return 2


def modules(path: Path = ROOT, prefix: str = "boltzformer") -> Iterator[tuple[str, Path, bool]]:
    """(dotted name, source file, is a package) of the package and every module under it."""
    if prefix == "boltzformer":
        yield prefix, path / "__init__.py", True
    for info in pkgutil.iter_modules([str(path)]):
        name = f"{prefix}.{info.name}"
        if info.ispkg:
            yield name, path / info.name / "__init__.py", True
            yield from modules(path / info.name, name)
        else:
            yield name, path / f"{info.name}.py", False


def imports(name: str, source: Path, is_package: bool, known: set[str]) -> set[str]:
    """The `boltzformer` modules that module `name` imports, anywhere in its source:
    `from P import m` is module P.m when that exists, else P; relative imports resolved."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m == "boltzformer" or m.startswith("boltzformer.")}


def import_graph() -> dict[str, set[str]]:
    found = list(modules())
    known = {name for name, _, _ in found}
    packages = {name for name, _, pkg in found if pkg and name != "boltzformer"}
    return {name: with_packages(imports(name, path, pkg, known), packages, name) - {name}
            for name, path, pkg in found}


def with_packages(imported: set[str], packages: set[str], importer: str = "") -> set[str]:
    """`imported` and the packages above each module in it (not the root, nor the
    importer's own packages, which are already running): importing
    boltzformer.train.run_dir from elsewhere runs boltzformer/train/__init__.py first, so
    what that imports is imported too, and a cycle through it is a cycle at run time."""
    parents = {m.rsplit(".", k)[0] for m in imported for k in range(1, m.count("."))}
    own = {importer.rsplit(".", k)[0] for k in range(0, importer.count("."))}
    return imported | (parents & packages) - own


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer, as 'importer (layer) -> imported (layer)'."""
    return sorted(
        f"{a} ({LAYERS[layer(a)]}) -> {b} ({LAYERS[layer(b)]})"
        for a, targets in graph.items() for b in targets if layer(b) > layer(a)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_every_module_is_read_and_placed():
    graph = import_graph()
    assert len(graph) > 50 and "boltzformer.modeling.boltzformer" in graph
    assert "boltzformer.apps.web" in graph and "boltzformer.data.inputs" in graph
    assert {"boltzformer.modeling.config"} <= graph["boltzformer.modeling.boltzformer"]
    assert "boltzformer.data.medio" in graph["boltzformer.data.inputs"]  # relative import
    assert {layer(m) for m in graph} == set(range(len(LAYERS)))


def test_layers_import_only_downward():
    assert upward(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checks_catch_what_they_are_for():
    graph = {
        "boltzformer.data.medio": {"boltzformer.inference.predictor"},  # data/io -> library
        "boltzformer.evaluation.evaluate": {"boltzformer.evaluation.grounding"},
        "boltzformer.evaluation.grounding": {"boltzformer.evaluation.plots"},
        "boltzformer.evaluation.plots": {"boltzformer.evaluation.evaluate"},
    }
    assert upward(graph) == [
        "boltzformer.data.medio (data/io) -> boltzformer.inference.predictor (library)"]
    assert cycles(graph) == [["boltzformer.evaluation.evaluate",
                              "boltzformer.evaluation.grounding",
                              "boltzformer.evaluation.plots"]]


def defined_names(source: Path) -> set[str]:
    """The names a module's top level binds: functions, classes, assignments, imports."""
    names: set[str] = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def script_problems(script: Path, found: dict[str, tuple[Path, bool]]) -> list[str]:
    """What is wrong with one script's `boltzformer` imports: a command module imported, or a
    module or name that does not exist."""
    problems = []
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            wanted = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            wanted = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for module, name in wanted:
            if module != "boltzformer" and not module.startswith("boltzformer."):
                continue
            where = f"{script.name}: {module}" + (f".{name}" if name else "")
            if module not in found:
                problems.append(f"{where}: no such module")
            elif layer(module) == len(LAYERS) - 1:
                problems.append(f"{where}: a command module (call the library or apps)")
            elif name and f"{module}.{name}" not in found and \
                    name not in defined_names(found[module][0]):
                problems.append(f"{where}: no such name")
    return problems


def test_benchmark_scripts_import_what_exists_below_the_commands():
    found = {name: (path, pkg) for name, path, pkg in modules()}
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert len(scripts) >= 15
    assert [p for s in scripts for p in script_problems(s, found)] == []


def test_the_script_check_catches_what_it_is_for(tmp_path):
    found = {name: (path, pkg) for name, path, pkg in modules()}
    script = tmp_path / "bad.py"
    script.write_text(
        "from boltzformer.evaluation.evaluate import evaluate, no_such_function\n"
        "from boltzformer.commands.bench import run\n"
        "import boltzformer.no_such_module\n"
        "from boltzformer.data import BiomedParseDataset\n"  # a package's re-export: fine
    )
    assert script_problems(script, found) == [
        "bad.py: boltzformer.evaluation.evaluate.no_such_function: no such name",
        "bad.py: boltzformer.commands.bench.run: a command module (call the library or apps)",
        "bad.py: boltzformer.no_such_module: no such module",
    ]


def test_an_import_counts_the_packages_it_runs():
    """Importing a.b.c runs a.b's __init__: a cycle through a package's public names is
    caught (the trainer imports evaluation, whose __init__ must not import the trainer)."""
    packages = {"boltzformer.train", "boltzformer.evaluation"}
    assert with_packages({"boltzformer.train.run_dir"}, packages) == {
        "boltzformer.train.run_dir", "boltzformer.train"}
    graph = {
        "boltzformer.train": {"boltzformer.train.trainer"},
        "boltzformer.train.trainer": with_packages({"boltzformer.evaluation.evaluate"},
                                                   packages),
        "boltzformer.evaluation": with_packages({"boltzformer.train.run_dir"}, packages),
    }
    assert ["boltzformer.evaluation", "boltzformer.train", "boltzformer.train.trainer"] in \
        cycles(graph)
